"""The shipped connector config keeps the database password out of Kafka Connect.

On a second, throw-away stack whose connector role has a sentinel password (`deploy/local/stack
up` writes it to the worker's secrets file, `deploy/demo/demo.py setup` gives it to the role),
`replicator connectors apply` of `connectors/` gets the connector RUNNING and streaming the
snapshot (so the worker resolved the `${file:...}` reference to the right password), while
Connect's REST API (connector config, task configs), every record of its internal topics
(`_connect-configs`, `_connect-offsets`, `_connect-status`) and the worker's logs never contain
the sentinel. The secrets file is 0600 in a 0700 directory.

Control: the same config with the password inlined from the environment, applied to the same
worker, puts the sentinel into the REST config and the config topic, and the same scan finds it
there; so the clean result above is not a scan that cannot see. And `deploy/local/stack up`
accepts a running worker started with the same configuration and refuses one whose
configuration lacks the provider (one line with the fix).
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from tests.integration.throwaway import REPO, ThrowawayStack

INTERNAL_TOPICS = ("_connect-configs", "_connect-offsets", "_connect-status")
PORTS = {  # the throw-away stack's ports (the shared stack uses 55432.. and 58083..)
    "STACK_SOURCE_PG_PORT": 54432,
    "STACK_TARGET_PG_PORT": 54433,
    "STACK_KAFKA_PORT": 63092,
    "STACK_KAFKA_CONTROLLER_PORT": 63093,
    "STACK_CONNECT_PORT": 63083,
    "STACK_REGISTRY_PORT": 63081,
    "STACK_REGISTRY_MANAGEMENT_PORT": 63091,
}


def run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def rest(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        body: bytes = r.read()
    return body.decode("utf-8")


def topic_records(bootstrap: str, topic: str, timeout_s: float = 60) -> list[bytes]:
    """Every record (key and value bytes) of `topic`, from the log start to the end seen now."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"secrets-scan-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends: dict[int, int] = {}
        assignment = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        records: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, f"reading {topic}: {msg.error()}"
            records.append((msg.key() or b"") + b"\0" + (msg.value() or b""))
            partition, offset = msg.partition(), msg.offset()
            if partition is not None and offset is not None and offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
        assert not ends, f"{topic}: did not reach the end offsets {ends} within {timeout_s}s"
        return records
    finally:
        consumer.close()


def first_snapshot_record(bootstrap: str, topic: str, timeout_s: float = 120) -> bytes:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"secrets-read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            value = msg.value() if msg is not None and msg.error() is None else None
            if value:
                return value
        raise AssertionError(f"no record on {topic} within {timeout_s}s: the connector is not streaming")
    finally:
        consumer.close()


def leaks(sentinel: str, connect_url: str, connector: str, bootstrap: str) -> dict[str, Any]:
    """Where the sentinel shows up: REST config and task configs, records of the internal topics."""
    needle = sentinel.encode()
    config = rest(f"{connect_url}/connectors/{connector}/config")
    tasks = rest(f"{connect_url}/connectors/{connector}/tasks")
    records = {t: topic_records(bootstrap, t) for t in INTERNAL_TOPICS}
    return {
        "rest_config": sentinel in config,
        "rest_tasks": sentinel in tasks,
        "config": json.loads(config),
        "records": {t: len(r) for t, r in records.items()},
        "topics": {t: sum(needle in r for r in rs) for t, rs in records.items()},
        "configs_with_password": sum(b"database.password" in r for r in records["_connect-configs"]),
    }


def test_shipped_connector_keeps_the_password_out_of_connect(tmp_path: Path) -> None:
    sentinel = f"sentinel-pw-{uuid.uuid4().hex}"
    stack = ThrowawayStack.create("secrets", PORTS, extra={"CDC_DEBEZIUM_PASSWORD": sentinel})
    try:
        stack.up()
        again = stack.cmd("up")  # the same worker configuration: nothing to restart
        assert again.returncode == 0 and "connect already up" in again.stderr, again.stderr[-2000:]
        exports = stack.exports()
        env = {**stack.env, **exports, "PYTHONPATH": str(REPO)}
        secrets = Path(exports["CDC_CONNECT_SECRETS"])
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
        assert stat.S_IMODE(secrets.parent.stat().st_mode) == 0o700
        assert f"debezium.password={sentinel}" in secrets.read_text(), "the sentinel is the password in use"

        setup = run([sys.executable, str(REPO / "deploy/demo/demo.py"), "setup", "--customers", "20"], env)
        assert setup.returncode == 0, setup.stderr[-2000:]
        applied = run([sys.executable, "-m", "replicator", "connectors", "apply", "--dir", "connectors"], env)
        assert applied.returncode == 0, applied.stderr[-2000:]
        assert "demo-postgres: created; connector RUNNING, tasks RUNNING" in applied.stdout
        assert sentinel not in applied.stdout + applied.stderr
        bootstrap, connect_url = (
            exports["REPLICATOR_KAFKA__BOOTSTRAP_SERVERS"],
            exports["REPLICATOR_CONNECT__URL"],
        )
        assert b'"payload"' in first_snapshot_record(bootstrap, "demo.shop.customers")

        found = leaks(sentinel, connect_url, "demo-postgres", bootstrap)
        assert found["rest_config"] is False and found["rest_tasks"] is False, "the REST API shows the secret"
        counts = {k: v for k, v in found.items() if k != "config"}
        assert found["configs_with_password"] >= 2, counts  # the connector's and its task's config
        assert found["topics"] == dict.fromkeys(INTERNAL_TOPICS, 0), f"the secret is in records: {counts}"
        assert found["config"]["database.password"] == f"${{file:{secrets}:debezium.password}}"
        logs = list((stack.state / "logs").glob("connect*"))
        assert logs, "the worker writes logs"
        assert not [p.name for p in logs if sentinel in p.read_text(errors="replace")]

        # Control: the password inlined from the environment is seen by the same scan.
        inline = json.loads((REPO / "connectors" / "demo-postgres.json").read_text())
        inline["config"]["database.password"] = "${CDC_DEBEZIUM_PASSWORD}"
        control_dir = tmp_path / "inline"
        control_dir.mkdir()
        (control_dir / "inline.json").write_text(json.dumps(inline))
        control_env = {
            **env,
            "CDC_CONNECTOR_NAME": "inline-postgres",
            "CDC_SLOT_NAME": "cdc_inline",
            "CDC_TOPIC_PREFIX": "inline",
        }
        control = run(
            [sys.executable, "-m", "replicator", "connectors", "apply", "--dir", str(control_dir)],
            control_env,
        )
        assert control.returncode == 0, control.stderr[-2000:]
        seen = leaks(sentinel, connect_url, "inline-postgres", bootstrap)
        assert seen["rest_config"] is True
        assert seen["topics"]["_connect-configs"] >= 1, seen["topics"]

        # A worker started before the provider was configured is refused by `up`, with the fix.
        conf = stack.state / "conf" / "connect.properties"
        conf.write_text("".join(x for x in conf.read_text().splitlines(True) if "config.providers" not in x))
        stale = stack.cmd("up")
        assert stale.returncode == 1
        assert "out-of-date worker configuration (changed: config.providers" in stale.stderr
        assert "down && " in stale.stderr
    finally:
        down = stack.down()
    assert down.returncode == 0, down.stderr[-2000:]
