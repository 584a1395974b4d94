"""Harness for daemon tests: fresh target databases, the real CLI, convergence, the oracle.

Convergence is exact, not a sleep: `replicator.run.drain` (a fence row in the
signal table, Connect's committed source offset past its LSN, then the
target-stored checkpoints at the end offsets).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from psycopg import sql

from replicator.config import HoldSettings, TargetSettings, load_settings
from replicator.core.intents import Intent, prepare, to_intents
from replicator.core.mapping import compile_spec, load_spec
from replicator.core.mapping.plan import Plan
from replicator.core.model import Batch, BatchResult, ChangeEvent, Failure, KafkaRef, Record, TableRef
from replicator.core.verify import TableDiff
from replicator.pg.catalog import read_catalog
from replicator.run.drain import drain
from replicator.run.verify import verify
from replicator.target import control
from replicator.target.live import LiveTables
from replicator.target.writer import BatchWriter, Marks
from tests.integration.stack import Stack

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo" / "demo.py"
SPEC = REPO / "mappings" / "demo.yaml"
CONNECTOR = os.environ.get("CDC_CONNECTOR_NAME", "demo-postgres")
TOPICS = [f"demo.shop.{t}" for t in ("customers", "products", "orders", "order_lines")]
CONTROL = "replicator"
# Target databases this test session made (`fresh_target`); conftest drops them at its end.
MADE_TARGETS: list[str] = []


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)  # polling interval while the condition is checked


def fresh_target(name: str) -> str:
    dbname = f"t_{name}_{uuid.uuid4().hex[:6]}"
    subprocess.run(
        [sys.executable, str(DEMO), "target", "--dbname", dbname, "--reset"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    MADE_TARGETS.append(dbname)
    return dbname


def empty_target(stack: Stack, dbname: str) -> None:
    """An empty target database owned by the replicator role (dropped when the session ends)."""
    with psycopg.connect(stack.target_admin("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER replicator").format(sql.Identifier(dbname)))
    MADE_TARGETS.append(dbname)


def env_for(stack: Stack, dbname: str, group: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REPLICATOR_TARGET__DBNAME": dbname,
        "REPLICATOR_KAFKA__GROUP_ID": group,
        "REPLICATOR_MAPPING": str(SPEC),
        "REPLICATOR_BATCH__MAX_MS": "200",
        **extra,
    }


def run_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def daemon(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`replicator run` in the background; on exit SIGTERM and expect a clean exit 0."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", *args], env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("daemon did not exit within 60s of SIGTERM") from None


# Broker errors of a leader being elected or moved, which librdkafka does not flag retriable.
_LEADER_MOVING = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)


def end_offsets(stack: Stack, topics: list[str]) -> dict[tuple[str, int], int]:
    """End offsets per partition; a retriable lookup error (a topic created a moment ago has
    no leader yet) is retried for up to 60 s."""
    consumer = Consumer({"bootstrap.servers": stack.kafka, "group.id": "end-offsets"})
    deadline = time.monotonic() + 60

    def high(tp: TopicPartition) -> int:
        while True:
            try:
                return int(consumer.get_watermark_offsets(tp, timeout=10)[1])
            except KafkaException as exc:
                error = exc.args[0]  # NOT_LEADER_FOR_PARTITION once failed the FK test in CI
                if not (error.retriable() or error.code() in _LEADER_MOVING) or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)  # backoff between lookups while the leader is elected

    try:
        md = consumer.list_topics(timeout=10)
        return {(t, p): high(TopicPartition(t, p)) for t in topics for p in md.topics[t].partitions}
    finally:
        consumer.close()


def stored_offsets(stack: Stack, dbname: str, group: str) -> dict[tuple[str, int], int]:
    try:
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            rows = conn.execute(
                "SELECT topic, partition, next_offset FROM replicator.checkpoint WHERE group_id = %s",
                (group,),
            ).fetchall()
    except psycopg.errors.UndefinedTable:
        return {}
    return {(t, p): o for t, p, o in rows}


def kafka_committed(stack: Stack, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": stack.kafka, "group.id": group})
    try:
        md = consumer.list_topics(timeout=10)
        tps = [TopicPartition(t, p) for t in topics for p in md.topics[t].partitions]
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in consumer.committed(tps, timeout=10)
            if tp.offset >= 0
        }
    finally:
        consumer.close()


def converge(stack: Stack, dbname: str, group: str, timeout_s: float = 120) -> dict[tuple[str, int], int]:
    """Wait until everything the source committed so far is applied to the target (`replicator drain`)."""
    settings = load_settings(None)
    settings.target.dbname = dbname
    done = drain(settings, TOPICS, CONNECTOR, "shop.debezium_signal", timeout_s, group=group)
    return done.end_offsets


def writer_target(stack: Stack, dbname: str) -> TargetSettings:
    """A test target as the `replicator` role, with its control schema ensured as that role (what
    `replicator run` does at its start, before it opens a writer: the writer does not)."""
    target = TargetSettings(
        host=stack.target_host,
        port=stack.target_port,
        dbname=dbname,
        user="replicator",
        password="replicator",
    )
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        control.ensure(conn, CONTROL)
    return target


def live_writer(stack: Stack, dbname: str, plan: Plan, group: str, run_id: str) -> BatchWriter:
    """The live batch writer on a test target, as the `replicator` role."""
    target = writer_target(stack, dbname)
    return BatchWriter(target, LiveTables(plan, CONTROL, group, run_id), CONTROL, group, run_id)


class HandFed:
    """The live batch writer on a test target, fed hand-built events. It can retry held events: its
    remap maps a held record back to the event it was (every event applied is remembered)."""

    def __init__(
        self,
        stack: Stack,
        dbname: str,
        plan: Plan,
        group: str,
        holding: HoldSettings | None = None,
        partition_counts: Mapping[str, int] | None = None,
        marks: Marks = tuple,
        may_hold: bool = True,
    ) -> None:
        """`partition_counts` and `marks`: what the writer judges held rows by (without the
        counts, no held row is ever judged); `may_hold` False: refused rows are error records at
        once, as for `errors retry`."""
        self.plan = plan
        self.events: dict[KafkaRef, ChangeEvent] = {}
        run_id = f"run-{uuid.uuid4().hex[:6]}"
        self.writer = BatchWriter(
            writer_target(stack, dbname),
            LiveTables(plan, CONTROL, group, run_id),
            CONTROL,
            group,
            run_id,
            remap=self.remap,
            marks=marks,
            partition_counts=partition_counts,
            holding=holding,
            may_hold=may_hold,
        )

    def remap(self, records: Sequence[Record]) -> tuple[Mapping[TableRef, list[Intent]], list[Failure]]:
        mapped = to_intents([self.events[r.ref] for r in records], self.plan)
        return mapped.by_table, mapped.failures

    def apply(self, *events: ChangeEvent) -> BatchResult:
        """One batch of `events` (each partition's next offset after its last); no error records."""
        for e in events:
            self.events[e.ref] = e
        nexts = {(e.ref.topic, e.ref.partition): e.ref.offset + 1 for e in events}
        result = self.writer.apply(prepare(Batch(events=list(events), next_offsets=nexts), self.plan))
        assert result.errors == [], result.errors
        return result

    def close(self) -> None:
        self.writer.close()


def demo_plan(stack: Stack, dbname: str) -> Plan:
    spec = load_spec(SPEC)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        catalog = read_catalog(conn, sorted({t.target.schema for t in spec.tables}))
    return compile_spec(spec, catalog)


def verify_demo(stack: Stack, dbname: str) -> list[TableDiff]:
    return verify(demo_plan(stack, dbname), stack.source_admin(), stack.target_admin(dbname), CONTROL)


def assert_converged_equal(stack: Stack, dbname: str, accept_errors: bool = True) -> list[TableDiff]:
    """Target == mapped source; the demo's deliberate bad rows (error records) are accepted unless
    told otherwise, held rows never are."""
    diffs = verify_demo(stack, dbname)
    bad = [d for d in diffs if not d.clean(accept_errors)]
    detail = "; ".join(
        d.summary() + f" first: missing={d.missing[:3]} extra={d.extra[:3]} mismatched={d.mismatched[:3]}"
        f" placeholders={d.placeholders[:3]} held={d.held[:3]}"
        for d in bad
    )
    assert not bad, detail
    assert all(d.expected > 0 for d in diffs), [d.summary() for d in diffs]
    return diffs


def workload(seconds: float, rate: float = 100, seed: int = 1) -> str:
    done = subprocess.run(
        [
            sys.executable,
            str(DEMO),
            "workload",
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--seed",
            str(seed),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    return done.stdout


def drop_slot(stack: Stack, slot: str) -> None:
    """Drop a test connector's slot once its task let go of it (a kept slot pins WAL)."""

    def dropped() -> bool:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is None:
                return True
            if row[0]:
                return False
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return True

    wait_until(dropped, 60, f"slot {slot} to be released")
