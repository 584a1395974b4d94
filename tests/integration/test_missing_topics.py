"""A run whose topics Kafka does not have (a wrong topic_prefix, the connector's topics deleted).

`run --stop-when-caught-up` used to wait forever when none of its topics existed: with no topic
under the spec's prefix it now fails at once with one line naming the prefix and the fix; with
other topics under the prefix (the mapped tables are empty: Debezium creates a table's topic
with its first event) it counts them as caught up and ends. The daemon waits, saying what for.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.integration.pipeline import SPEC, daemon, env_for, fresh_target, run_cli, wait_until
from tests.integration.stack import Stack


def prefixed_spec(tmp_path: Path, prefix: str, capture: bool = False) -> Path:
    """The demo spec under another topic prefix; no capture block (no connector feeds it) unless
    `capture` (its signal table then has a topic under the prefix, which nothing creates)."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["topic_prefix"] = prefix
    if not capture:
        spec.pop("capture", None)
    path = tmp_path / "prefixed.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def setup(stack: Stack, tmp_path: Path, name: str, capture: bool = False) -> tuple[str, dict[str, str]]:
    prefix = f"cli9{name}{uuid.uuid4().hex[:8]}"
    spec = prefixed_spec(tmp_path, prefix, capture)
    env = env_for(stack, fresh_target(name), prefix, REPLICATOR_MAPPING=str(spec))
    return prefix, env


def test_run_to_the_end_without_any_topic_under_the_prefix_fails_with_the_fix(
    stack: Stack, tmp_path: Path
) -> None:
    prefix, env = setup(stack, tmp_path, "notopic")
    done = run_cli(env, "run", "--stop-when-caught-up", timeout=180)  # it waited forever before
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"replicator: error: no topic under the topic prefix '{prefix}' exists in Kafka"
    ), last
    assert "make the spec's topic_prefix (or the rule's topic:) match the connector's topic.prefix" in last
    assert "`replicator connectors status`" in last


def test_run_to_the_end_counts_mapped_tables_without_topics_as_caught_up(
    stack: Stack, tmp_path: Path
) -> None:
    prefix, env = setup(stack, tmp_path, "emptytables")
    other = f"{prefix}.shop.unmapped"
    admin = AdminClient({"bootstrap.servers": stack.kafka})
    admin.create_topics([NewTopic(other, num_partitions=1, replication_factor=1)])[other].result(30)
    try:
        done = run_cli(env, "run", "--stop-when-caught-up", "--json", timeout=180)
    finally:
        admin.delete_topics([other])
    assert done.returncode == 0, done.stderr
    assert '"events": 0' in done.stdout, done.stdout
    topics = ", ".join(f"{prefix}.shop.{t}" for t in ("customers", "order_lines", "orders", "products"))
    said = f"4 mapped topics do not exist in Kafka at {stack.kafka}: {topics}; their tables shop.customers,"
    said += " shop.order_lines, shop.orders, shop.products have nothing to read and count as caught up"
    assert said in done.stderr, done.stderr
    assert "does not exist yet" not in done.stderr  # one line for all, not again per topic by the consumer


def test_the_daemon_waits_for_the_connector_and_says_so(stack: Stack, tmp_path: Path) -> None:
    prefix, env = setup(stack, tmp_path, "waiting")
    log = tmp_path / "d.log"
    with daemon(env, log) as proc:
        wait_until(lambda: "waits for the connector to create its topics" in log.read_text(), 120, "the line")
        assert proc.poll() is None
    text = log.read_text()
    assert f"no topic under the topic prefix '{prefix}' exists in Kafka at {stack.kafka} yet" in text
    assert "shop.products wait for them (the run reads each once it exists)" in text
    assert "does not exist yet" not in text  # one line for all, not again per topic by the consumer


def test_a_signal_topic_not_created_yet_is_no_error(stack: Stack, tmp_path: Path) -> None:
    """The signal table's topic exists only once the first drain writes a fence row: a daemon
    started before that logged a kafka_error about it at every start (trial 17)."""
    prefix, env = setup(stack, tmp_path, "nosignal", capture=True)
    mapped = f"{prefix}.shop.products"
    admin = AdminClient({"bootstrap.servers": stack.kafka})
    admin.create_topics([NewTopic(mapped, num_partitions=1, replication_factor=1)])[mapped].result(30)
    log = tmp_path / "d.log"
    try:
        with daemon(env, log) as proc:
            # assigned: the consumer has the metadata of every topic it subscribed to by then
            wait_until(
                lambda: f"{mapped}[0]" in log.read_text() and "assigned" in log.read_text(), 120, "assigned"
            )
            assert proc.poll() is None
    finally:
        admin.delete_topics([mapped])
    text = log.read_text()
    assert f"{prefix}.shop.debezium_signal" not in text, text
    assert "kafka_error" not in text, text
