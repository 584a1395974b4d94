"""`replicator replay` on the real stack, through the CLI as a user runs it.

Proves: replay is refused while the group has a live member; a `--to-offset` past its
partition's end, or of a partition that does not exist, is refused in one line, by a dry run
alike; `--dry-run` shows every partition's move (stored position -> log start) and changes
neither store; a replay of one table moves only its partitions, Kafka's committed offsets and
the target-stored ones alike; the next run converges a target that is behind (one table emptied
with its versions, as a restore from before those rows would leave it: every row back, field by
field); a replay of everything on a current target then applies nothing (every batch
`applied=-`) and deletes stay deleted (target == mapped source).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from replicator.connect.client import ConnectClient
from replicator.core.decode import DecodeError, JsonDecoder
from replicator.core.lsn import parse_lsn
from replicator.core.model import ChangeEvent, KafkaRef
from replicator.core.replay import Probe
from tests.integration.pipeline import (
    CONNECTOR,
    TOPICS,
    assert_converged_equal,
    converge,
    daemon,
    env_for,
    fresh_target,
    kafka_committed,
    run_cli,
    stored_offsets,
    wait_until,
    workload,
)
from tests.integration.stack import Stack, one_row


def log_starts(stack: Stack) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": stack.kafka, "group.id": "log-starts"})
    try:
        md = consumer.list_topics(timeout=10)
        return {
            (t, p): int(consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[0])
            for t in TOPICS
            for p in md.topics[t].partitions
        }
    finally:
        consumer.close()


def mapped(offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    return {k: v for k, v in offsets.items() if k[0] in TOPICS}


def batch_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "event=batch " in line]


def test_replay_converges_a_target_behind_and_is_a_noop_on_a_current_one(
    stack: Stack, tmp_path: Path
) -> None:
    dbname = fresh_target("replay")
    group = f"replay-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group)
    with daemon(env, tmp_path / "first.log"):
        wait_until(lambda: stored_offsets(stack, dbname, group), 120, "the first checkpoints")
        converge(stack, dbname, group, timeout_s=180)
        refused = run_cli(env, "replay", "--to-earliest")
        assert refused.returncode != 0, refused.stdout
        assert "live member" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
        # trial 5: a dry run succeeded here and the replay a second later was refused
        live_dry = run_cli(env, "replay", "--to-earliest", "--dry-run")
        assert live_dry.returncode == 0, live_dry.stderr
        assert "note: the replay itself would be refused now: consumer group" in live_dry.stdout
    stored = mapped(stored_offsets(stack, dbname, group))
    committed = mapped(kafka_committed(stack, group, TOPICS))
    starts = log_starts(stack)

    dry = run_cli(env, "replay", "--to-earliest", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["refused_now"] is None  # the group has no member any more
    moves = {(m["topic"], m["partition"]): m for m in json.loads(dry.stdout)["moves"]}
    assert set(moves) == set(starts)
    for p, m in moves.items():
        assert (m["stored"], m["to"], m["events"]) == (stored[p], starts[p], stored[p] - starts[p]), p
    assert mapped(stored_offsets(stack, dbname, group)) == stored, "a dry run changed the target"
    assert mapped(kafka_committed(stack, group, TOPICS)) == committed, "a dry run changed Kafka"

    # The target falls behind on one table: its rows and their versions are gone.
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        expected = conn.execute("SELECT * FROM crm.customer_pii ORDER BY 1").fetchall()
        assert expected, "the demo has customers"
        conn.execute("DELETE FROM crm.customer_pii")
        conn.execute("DELETE FROM replicator.row_version WHERE target_table LIKE %s", ("%customer_pii",))

    moved = run_cli(env, "replay", "--to-earliest", "--tables", "crm.customer_pii")
    assert moved.returncode == 0, moved.stderr
    # its topic (demo.shop.customers) feeds crm.customer too, which reads the events again as well
    assert "note: the same topics also feed crm.customer: they read these events again too" in moved.stdout
    customers = {p for p in starts if p[0] == "demo.shop.customers"}
    after = mapped(stored_offsets(stack, dbname, group))
    kafka_after = mapped(kafka_committed(stack, group, TOPICS))
    for p in starts:
        want = starts[p] if p in customers else stored[p]
        assert after[p] == want, (p, after[p], want)
        assert kafka_after.get(p, want) == want, (p, kafka_after.get(p), want)
    assert all(kafka_after[p] == starts[p] for p in customers), "Kafka's offsets did not move with the target"

    caught_up = run_cli(env, "run", "--stop-when-caught-up")
    assert caught_up.returncode == 0, caught_up.stderr[-3000:]
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        assert conn.execute("SELECT * FROM crm.customer_pii ORDER BY 1").fetchall() == expected
    assert_converged_equal(stack, dbname)

    again = run_cli(env, "replay", "--to-earliest")
    assert again.returncode == 0, again.stderr
    noop = run_cli(env, "run", "--stop-when-caught-up")
    assert noop.returncode == 0, noop.stderr[-3000:]
    lines = batch_lines(noop.stderr)
    assert lines, noop.stderr[-2000:]
    assert all(" applied=- " in line for line in lines), [
        line for line in lines if " applied=- " not in line
    ][:3]
    assert_converged_equal(stack, dbname)
    assert mapped(stored_offsets(stack, dbname, group)) == stored


def test_an_offset_or_partition_that_does_not_exist_is_refused_in_one_line_dry_run_or_not(
    stack: Stack,
) -> None:
    """Trial 7: `--to-offset trial7.app.documents:0:99999` (end 504) became `504 -> 504 (0
    events)`. Past the end, or a partition the topic lacks: one line naming it and the fix, the
    dry run as the replay; nothing committed for the group."""
    group = f"replay-refuse-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, fresh_target("refuse"), group)
    assert run_cli(env, "init").returncode == 0  # a fresh machine's demo target has no control schema
    consumer = Consumer({"bootstrap.servers": stack.kafka, "group.id": group})
    try:
        _, end = consumer.get_watermark_offsets(TopicPartition("demo.shop.orders", 0), timeout=10)
        partitions = sorted(consumer.list_topics(timeout=10).topics["demo.shop.orders"].partitions)
    finally:
        consumer.close()
    past, missing = end + 99999, max(partitions) + 1
    for dry in (["--dry-run"], []):
        refused = run_cli(env, "replay", "--to-offset", f"demo.shop.orders:0:{past}", *dry)
        assert refused.returncode != 0, refused.stdout
        (line,) = refused.stderr.strip().splitlines()
        found = re.search(r"offset (\d+) is past the end offset (\d+) of demo\.shop\.orders\[0\]", line)
        assert found and int(found[1]) == past and int(found[2]) >= end, line
        assert f"--to-offset must be at most {found[2]}" in line, line
        absent = run_cli(env, "replay", "--to-offset", f"demo.shop.orders:{missing}:0", *dry)
        assert absent.returncode != 0, absent.stdout
        (line,) = absent.stderr.strip().splitlines()
        assert f"topic demo.shop.orders has no partition {missing} (its partitions: " in line, line
    assert kafka_committed(stack, group, TOPICS) == {}


@dataclass(frozen=True)
class Logged:
    """An event read back from Kafka: where it sits in the source and when Kafka stamped it."""

    probe: Probe
    timestamp_ms: int


def topic_events(stack: Stack, ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], list[Logged]]:
    """Every event of each partition up to `ends`."""
    decoder = JsonDecoder()
    consumer = Consumer(
        {"bootstrap.servers": stack.kafka, "group.id": "lsn-reader", "enable.auto.commit": False}
    )
    out: dict[tuple[str, int], list[Logged]] = {p: [] for p in ends}
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for (t, p) in ends])
        left = {p for p, end in ends.items() if end > 0}
        wait_until(
            lambda: _read_into(consumer, decoder, out, ends, left), 120, "the topics read to their ends"
        )
    finally:
        consumer.close()
    return out


def _read_into(
    consumer: Consumer,
    decoder: JsonDecoder,
    out: dict[tuple[str, int], list[Logged]],
    ends: dict[tuple[str, int], int],
    left: set[tuple[str, int]],
) -> bool:
    for msg in consumer.consume(500, 1.0):
        assert msg.error() is None, msg.error()
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        p = (topic, partition)
        if offset >= ends[p]:
            left.discard(p)
            continue
        try:
            event: object = decoder.decode(KafkaRef(topic, partition, offset), msg.key(), msg.value())
        except DecodeError:  # e.g. a timestamp past year 9999 another test wrote: no position to read
            event = None
        if isinstance(event, ChangeEvent) and event.position is not None:
            probe = Probe(offset, event.position.commit_lsn, event.position.lsn)
        else:
            probe = Probe(offset, None, event.lsn if isinstance(event, ChangeEvent) else None)
        out[p].append(Logged(probe, msg.timestamp()[1]))
        if offset + 1 >= ends[p]:
            left.discard(p)
    return not left


@pytest.mark.parametrize("to", ["lsn", "timestamp"])
def test_replay_to_a_point_between_two_bursts(stack: Stack, tmp_path: Path, to: str) -> None:
    """Two bursts of the workload; between them the source's WAL position, and the time once
    Connect has flushed the first burst. `--to-lsn` moves every partition to its first event of
    the second burst (or at most one transaction earlier), `--to-timestamp` to its first event
    Kafka stamped at or after the time; neither skips anything of the second burst (checked
    against every event read back from Kafka). On a current target the replay applies nothing;
    a target that lost a row of the second burst gets it back."""
    dbname = fresh_target(f"replay_{to}")
    group = f"replay-{to}-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group)
    workload(3, rate=40, seed=31)
    with psycopg.connect(stack.source_admin()) as conn:
        (lsn_text,) = one_row(conn.execute("SELECT pg_current_wal_lsn()::text"))
    lsn = parse_lsn(lsn_text)
    connect = ConnectClient(stack.connect_url)
    wait_until(lambda: connect.flushed_lsn(CONNECTOR) >= lsn, 120, "Connect to flush the first burst")
    moment = datetime.now(UTC)
    workload(3, rate=40, seed=32)
    with daemon(env, tmp_path / "daemon.log"):
        wait_until(lambda: stored_offsets(stack, dbname, group), 120, "the first checkpoints")
        ends = converge(stack, dbname, group, timeout_s=180)
    point = ["--to-lsn", lsn_text] if to == "lsn" else ["--to-timestamp", moment.isoformat()]

    dry = run_cli(env, "replay", *point, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    moves = {(m["topic"], m["partition"]): m["to"] for m in json.loads(dry.stdout)["moves"]}
    events = topic_events(stack, {p: e for p, e in ends.items() if p[0] in TOPICS})
    assert set(moves) == set(events)
    moment_ms = int(moment.timestamp() * 1000)
    for p, start in moves.items():
        before = [e for e in events[p] if e.probe.offset < start]
        after = [e for e in events[p] if e.probe.offset >= start]
        assert all(e.probe.lsn is None or e.probe.lsn < lsn for e in before), (p, start)  # none of burst 2
        if to == "lsn":
            early = [e.probe for e in after if e.probe.lsn is not None and e.probe.lsn < lsn]
            assert len({e.seq0 for e in early}) <= 1, (p, start, early[:5])  # at most one transaction more
        else:
            assert all(e.timestamp_ms < moment_ms for e in before), (p, start)
            assert not after or after[0].timestamp_ms >= moment_ms, (p, start)

    # A point past every checkpoint: nothing to read again, and the output says why (trial 17).
    later = run_cli(env, "replay", "--to-timestamp", datetime.now(UTC).isoformat(), "--dry-run")
    assert later.returncode == 0, later.stderr
    assert "note: every partition's target checkpoint is at or past that point" in later.stdout
    assert "note: every partition's" not in dry.stdout  # the point between the bursts moves them

    # On a current target the replay is a no-op.
    assert run_cli(env, "replay", *point).returncode == 0
    noop = run_cli(env, "run", "--stop-when-caught-up")
    assert noop.returncode == 0, noop.stderr[-3000:]
    lines = batch_lines(noop.stderr)
    assert lines and all(" applied=- " in line for line in lines), [
        line for line in lines if " applied=- " not in line
    ][:3]

    # A row the second burst inserted is lost from the target, with its version.
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        (order_id,) = one_row(conn.execute('SELECT max(order_id) FROM sales."order"'))
        expected = conn.execute('SELECT * FROM sales."order" WHERE order_id = %s', (order_id,)).fetchall()
        conn.execute('DELETE FROM sales."order" WHERE order_id = %s', (order_id,))
        conn.execute(
            "DELETE FROM replicator.row_version WHERE target_table = 'sales.order' AND key = %s",
            (f"[{order_id}]",),
        )
    moved = run_cli(env, "replay", *point)
    assert moved.returncode == 0, moved.stderr
    assert mapped(stored_offsets(stack, dbname, group)) == {p: min(o, ends[p]) for p, o in moves.items()}
    caught_up = run_cli(env, "run", "--stop-when-caught-up")
    assert caught_up.returncode == 0, caught_up.stderr[-3000:]
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        assert (
            conn.execute('SELECT * FROM sales."order" WHERE order_id = %s', (order_id,)).fetchall()
            == expected
        )
    assert_converged_equal(stack, dbname)
