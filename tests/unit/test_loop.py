"""The consumer loop against fakes of its two edges (a Kafka `Source`, a target `Sink`).

Each test names the loop invariant it proves: commit after the sink, positions
from the target, retention gaps halt, bounded batches, a rebalance discards
the batch in hand, transient sink errors retry the same batch, ranges end at
`stop_at`, decode failures become error records.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from io import StringIO
from typing import Literal

import pytest

from replicator.config import BatchSettings
from replicator.core.decode import JsonDecoder
from replicator.core.errors import Fatal, Transient
from replicator.core.intents import PreparedBatch
from replicator.core.mapping import Plan, catalog_from_dict, compile_spec, load_spec_text
from replicator.core.model import BatchResult, ChangeEvent, Failure, KafkaRef, Partition, Record, TableRef
from replicator.core.schema_change import Stop
from replicator.kafka.consumer import OnAssign, OnRevoke, StartAt, ToPause
from replicator.run.loop import ConsumerLoop, LoopOptions
from replicator.runlog import RunLog
from tests.unit.decode.builders import Table, create, int64, string

TOPIC = "t.src.items"
SPEC = """
version: 1
topic_prefix: t
tables:
  - id: items
    source: src.items
    target: dst.items
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns: {id: {from: id}, name: {from: name}}
"""


def plan() -> Plan:
    catalog = catalog_from_dict(
        {"dst.items": {"columns": {"id": "bigint not null", "name": "text"}, "pk": ["id"]}}
    )
    return compile_spec(load_spec_text(SPEC, "items.yaml"), catalog)


ITEMS = Table([int64("id", optional=False), string("name")], prefix="t", schema="src", name="items")


def record(offset: int, partition: int = 0, value: bytes | None = None) -> Record:
    """A Debezium create of row `offset` at that Kafka offset (or a record with the given bytes)."""
    built = create(ITEMS, {"id": offset, "name": f"n{offset}"}, lsn=1000 + offset, commit_lsn=900 + offset)
    return Record(KafkaRef(TOPIC, partition, offset), built.key, built.value if value is None else value)


class FakeSource:
    """Kafka as the loop sees it: assigns its partitions on subscribe, hands out queued records."""

    def __init__(self, records: list[Record], watermarks: Mapping[Partition, tuple[int, int]]) -> None:
        self.queue = list(records)
        self.records = list(records)  # the log, read again from the starts after a rejoin
        self.marks = dict(watermarks)
        self.starts: dict[Partition, StartAt] = {}
        self.committed: list[dict[Partition, int]] = []
        self.events: list[str] = []
        self.on_revoke: OnRevoke | None = None
        self.on_assign: OnAssign | None = None
        self.to_pause: ToPause | None = None
        self.paused_at_assign: list[list[Partition]] = []
        self.closed = False

    def subscribe(
        self, topics: list[str], on_assign: OnAssign, on_revoke: OnRevoke, to_pause: ToPause | None = None
    ) -> None:
        self.on_assign, self.on_revoke, self.to_pause = on_assign, on_revoke, to_pause
        self._assign()

    def _assign(self) -> None:
        assert self.on_assign is not None
        self.starts = dict(self.on_assign(sorted(self.marks)))
        if self.to_pause is not None:
            self.paused_at_assign.append(self.to_pause(sorted(self.marks)))

    def rejoin(self) -> None:
        """A new consumer: everything revoked, then assigned again (the group's partitions now)."""
        self.events.append("rejoin")
        assert self.on_revoke is not None
        self.on_revoke(sorted(self.marks))
        self._assign()

        def start(p: Partition) -> int:
            at = self.starts.get(p, "earliest")
            return at if isinstance(at, int) else self.marks[p][0] if at == "earliest" else self.marks[p][1]

        self.queue = [r for r in self.records if r.ref.offset >= start((r.ref.topic, r.ref.partition))]

    def pause(self, partitions: list[Partition]) -> None:
        self.events.append("pause")

    def resume(self, partitions: list[Partition]) -> None:
        self.events.append("resume")

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out, self.queue = self.queue[:max_records], self.queue[max_records:]
        return out

    def watermarks(self, partition: Partition, cached: bool = False) -> tuple[int, int]:
        return self.marks[partition]

    def positions(self, partitions: list[Partition]) -> dict[Partition, int]:
        consumed = {p: -1 for p in partitions}
        for p in partitions:
            start = self.starts.get(p)
            consumed[p] = start if isinstance(start, int) else -1
        if not self.queue:  # everything handed out: positions are at the end
            consumed = {p: self.marks[p][1] for p in partitions}
        return consumed

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        self.events.append("commit")
        self.committed.append(dict(offsets))

    def close(self) -> None:
        self.closed = True


class FakeSink:
    """The target as the loop sees it: stored offsets, and an apply that may fail transiently."""

    def __init__(
        self, source: FakeSource, stored: Mapping[Partition, int], transient_failures: int = 0
    ) -> None:
        self.source = source
        self.stored = dict(stored)
        self.failures_left = transient_failures
        self.applied: list[PreparedBatch] = []
        self.attempts: list[PreparedBatch] = []
        self.closed = False

    def on_assign(self, partitions: list[Partition]) -> dict[Partition, int]:
        return {p: o for p, o in self.stored.items() if p in partitions}

    def on_revoke(self, partitions: list[Partition]) -> None:
        self.revoked = list(partitions)

    def retry_due(self) -> bool:
        return False

    def apply(self, batch: PreparedBatch) -> BatchResult:
        self.attempts.append(batch)
        if self.failures_left:
            self.failures_left -= 1
            raise Transient("target unreachable")
        self.source.events.append("apply")
        self.applied.append(batch)
        self.stored.update(batch.next_offsets)
        return BatchResult()

    def close(self) -> None:
        self.closed = True


def make_loop(
    source: FakeSource,
    sink: FakeSink,
    sleeps: list[float] | None = None,
    limits: BatchSettings | None = None,
    auto_offset_reset: Literal["earliest", "latest", "error"] = "earliest",
    stop_at: Mapping[Partition, int] | None = None,
    stop_when_caught_up: bool = True,
    log: RunLog | None = None,
) -> ConsumerLoop:
    options = LoopOptions(
        limits=limits or BatchSettings(max_events=1000, max_ms=1),
        auto_offset_reset=auto_offset_reset,
        stop_when_caught_up=stop_when_caught_up,
        stop_at=stop_at or {},
    )
    return ConsumerLoop(
        source,
        sink,
        JsonDecoder(),
        plan(),
        log or RunLog("test", stream=StringIO()),
        options,
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
    )


def test_kafka_commit_follows_the_sink_and_positions_come_from_the_target() -> None:
    source = FakeSource([record(5), record(6)], {(TOPIC, 0): (0, 7)})
    sink = FakeSink(source, {(TOPIC, 0): 5})
    make_loop(source, sink).run()
    assert source.starts == {(TOPIC, 0): 5}  # the target-stored offset, not Kafka's
    assert source.events == ["apply", "commit"]
    assert source.committed == [{(TOPIC, 0): 7}]
    assert [i.key for i in sink.applied[0].by_table[plan().tables[0].target]] == [(5,), (6,)]
    assert source.closed and sink.closed


def test_the_batch_line_tells_new_error_records_from_those_reported_before() -> None:
    """A replayed batch fails again for events whose records are open already: `errors` counts
    the batch's failures, `new_error_records` what the target stored anew (`store_errors`)."""

    class Replayed(FakeSink):
        def apply(self, batch: PreparedBatch) -> BatchResult:
            super().apply(batch)
            known = [Failure(KafkaRef(TOPIC, 0, offset), "r", "refused", b"k", b"v") for offset in (5, 6)]
            return BatchResult(errors=known, new_error_records=1)

    source = FakeSource([record(5), record(6)], {(TOPIC, 0): (0, 7)})
    out = StringIO()
    make_loop(source, Replayed(source, {(TOPIC, 0): 5}), log=RunLog("test", fmt="json", stream=out)).run()
    batches = [json.loads(line) for line in out.getvalue().splitlines() if '"batch"' in line]
    assert [(b["errors"], b["new_error_records"]) for b in batches] == [(2, 1)]


def test_an_unread_table_on_a_read_topic_is_said_once_and_not_applied() -> None:
    """Trial 14: Debezium gives `"it ems"` and `items` one topic; no rule reads the first, so its
    events are not applied, and the loop says so once, naming the table and the fix."""
    spaced = Table([int64("id", optional=False), string("name")], prefix="t", schema="src", name="it ems")
    others = [create(spaced, {"id": n, "name": "x"}, lsn=2000 + n, commit_lsn=1900 + n) for n in (7, 8)]
    records = [
        record(5),
        *(Record(KafkaRef(TOPIC, 0, o), b.key, b.value) for o, b in zip((6, 7), others, strict=True)),
    ]
    source = FakeSource(records, {(TOPIC, 0): (0, 8)})
    sink, out = FakeSink(source, {}), StringIO()
    make_loop(source, sink, log=RunLog("test", fmt="json", stream=out)).run()
    assert [[i.key for i in b.by_table[TableRef("dst", "items")]] for b in sink.applied] == [[(5,)]]
    warnings = [json.loads(line)["message"] for line in out.getvalue().splitlines() if '"warning"' in line]
    assert [w for w in warnings if "src.it ems" in w] == [
        "events of source table src.it ems arrive on a topic the spec reads for other tables (Debezium"
        " gives tables whose names differ only in characters it makes `_` one topic; a routing transform"
        " merges topics) and no rule reads it: they are not applied; fix: add a rule for src.it ems to the"
        " spec to replicate it, or drop it from the connector's table.include.list (and the publication)"
        " to stop capturing it"
    ]
    assert source.committed[-1] == {(TOPIC, 0): 8}  # read past them: not replicated, by the spec


def test_without_a_stored_offset_the_reset_policy_decides_and_error_halts() -> None:
    source = FakeSource([], {(TOPIC, 0): (0, 0)})
    make_loop(source, FakeSink(source, {})).run()
    assert source.starts == {(TOPIC, 0): "earliest"}
    source = FakeSource([], {(TOPIC, 0): (0, 0)})
    with pytest.raises(Fatal, match="auto_offset_reset=error"):
        make_loop(source, FakeSink(source, {}), auto_offset_reset="error").run()


def test_a_stored_offset_below_the_log_start_is_a_retention_gap_and_halts() -> None:
    source = FakeSource([record(50)], {(TOPIC, 0): (40, 51)})
    sink = FakeSink(source, {(TOPIC, 0): 10})
    with pytest.raises(Fatal, match="retention gap"):
        make_loop(source, sink).run()
    assert sink.applied == [] and source.committed == []


def test_batches_are_bounded_by_max_events() -> None:
    source = FakeSource([record(i) for i in range(25)], {(TOPIC, 0): (0, 25)})
    sink = FakeSink(source, {})
    make_loop(source, sink, limits=BatchSettings(max_events=10, max_ms=60_000)).run()
    assert [b.events for b in sink.applied] == [10, 10, 5]
    assert source.committed[-1] == {(TOPIC, 0): 25}


def test_a_transient_sink_error_retries_the_same_batch_before_any_commit() -> None:
    source = FakeSource([record(0), record(1)], {(TOPIC, 0): (0, 2)})
    sink = FakeSink(source, {}, transient_failures=2)
    sleeps: list[float] = []
    make_loop(source, sink, sleeps).run()
    assert len(sink.attempts) == 3 and sink.attempts[0] is sink.attempts[2]  # the same prepared batch
    assert sleeps == [0.5, 1.0]  # growing backoff
    assert source.events == ["apply", "commit"]


def test_a_rebalance_discards_the_batch_in_hand() -> None:
    source = FakeSource([record(0), record(1)], {(TOPIC, 0): (0, 2)})
    sink = FakeSink(source, {})
    loop = make_loop(source, sink, limits=BatchSettings(max_events=1000, max_ms=60_000))
    loop.source.subscribe([TOPIC], loop._on_assign, loop._on_revoke)
    for r in source.poll(10, 0):
        loop._take(r)
    assert loop.batch.size == 2
    assert source.on_revoke is not None
    source.on_revoke([(TOPIC, 0)])
    assert not loop.batch and loop.assigned == set() and sink.revoked == [(TOPIC, 0)]


def test_a_range_ends_at_stop_at() -> None:
    source = FakeSource([record(i) for i in range(6)], {(TOPIC, 0): (0, 6)})
    sink = FakeSink(source, {})
    make_loop(source, sink, stop_at={(TOPIC, 0): 4}).run()
    keys = [i.key for b in sink.applied for i in b.by_table[plan().tables[0].target]]
    assert keys == [(0,), (1,), (2,), (3,)]
    assert source.committed[-1] == {(TOPIC, 0): 4}


def test_an_undecodable_record_becomes_a_failure_not_a_drop() -> None:
    """It names the row by its key when the key alone decodes (trial 5: every such record was
    keyed `-`, so `errors list --key` could not find it); no key text when the key is bad too."""
    bad_key = Record(KafkaRef(TOPIC, 0, 2), b"\xff", b"{not json")
    source = FakeSource([record(0), record(1, value=b"{not json"), bad_key], {(TOPIC, 0): (0, 3)})
    sink = FakeSink(source, {})
    make_loop(source, sink).run()
    first, second = sink.applied[0].failures
    assert (first.ref.offset, first.rule_id, first.raw_value, first.key) == (1, "decode", b"{not json", "[1]")
    assert (second.ref.offset, second.key) == (2, None)
    assert sink.applied[0].next_offsets == {(TOPIC, 0): 3}


class SlowSink(FakeSink):
    """Applies in the loop's apply thread, slowly; records overlap and thread names."""

    def __init__(self, source: FakeSource) -> None:
        super().__init__(source, {})
        self.active = 0
        self.most_active = 0
        self.threads: set[str] = set()
        self.read_meanwhile: list[int] = []  # records the loop fetched while each batch was applied

    def apply(self, batch: PreparedBatch) -> BatchResult:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.threads.add(threading.current_thread().name)
        before = len(self.source.queue)
        # a target round trip (long the first time), so the next batch is fetched and mapped meanwhile
        time.sleep(0.3 if not self.read_meanwhile else 0.02)
        self.read_meanwhile.append(before - len(self.source.queue))
        try:
            return super().apply(batch)
        finally:
            self.active -= 1


def test_apply_overlaps_fetching_but_batches_stay_one_at_a_time_in_order() -> None:
    source = FakeSource([record(i) for i in range(40)], {(TOPIC, 0): (0, 40)})
    sink = SlowSink(source)
    make_loop(source, sink, limits=BatchSettings(max_events=10, max_ms=60_000)).run()
    assert sink.most_active == 1  # never two batches in flight
    assert sink.read_meanwhile[0] == 10  # the next batch was read while the first was applied
    assert all(name.startswith("apply") for name in sink.threads)
    assert source.committed == [{(TOPIC, 0): 10}, {(TOPIC, 0): 20}, {(TOPIC, 0): 30}, {(TOPIC, 0): 40}]
    assert source.events == ["apply", "commit"] * 4  # each commit after its own batch's apply


class IdleAfterQueue(FakeSource):
    """After its records, polls return nothing (a quiet topic) until the loop committed or gave up;
    `committed_while_running` says whether the commit came before the loop was stopped."""

    loop: ConsumerLoop | None = None
    committed_while_running = False
    started = 0.0

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out = super().poll(max_records, timeout_s)
        if not out and self.loop is not None:
            if self.committed:
                self.committed_while_running = True
                self.loop.request_stop()
            elif time.monotonic() - self.started > 10:
                self.loop.request_stop()
            time.sleep(0.001)  # the fake's poll timeout
        return out


def test_an_applied_batch_is_committed_without_waiting_for_the_next_batch() -> None:
    source = IdleAfterQueue([record(0), record(1)], {(TOPIC, 0): (0, 2)})
    sink = FakeSink(source, {})
    loop = make_loop(source, sink, stop_when_caught_up=False)
    source.loop, source.started = loop, time.monotonic()
    loop.run()
    assert source.committed_while_running
    assert source.committed == [{(TOPIC, 0): 2}]


def test_a_schema_change_stops_its_partition_in_front_of_the_event_and_drops_what_follows() -> None:
    """`core.schema_change`: the partition's checkpoint stays at the first event that does not
    match, it is paused, records of it fetched later are dropped, the others flow; a bounded run
    ends with it stopped."""
    p0, p1 = (TOPIC, 0), (TOPIC, 1)
    records = [record(i) for i in range(6)] + [record(i, partition=1) for i in range(3)]
    source = FakeSource(records, {p0: (0, 6), p1: (0, 3)})
    sink = FakeSink(source, {})

    def verdict(e: ChangeEvent) -> Stop | None:
        if (e.ref.partition, e.ref.offset) != (0, 3):
            return None
        return Stop(
            e.ref, e.table, (TableRef("dst", "items"),), "items.on_schema_change", "changed", "fix", None
        )

    loop = make_loop(source, sink, limits=BatchSettings(max_events=2, max_ms=1))
    loop.verdict = verdict
    loop.run()
    applied = [
        (i.event.ref.partition, i.event.ref.offset)
        for b in sink.applied
        for t in b.by_table.values()
        for i in t
    ]
    assert sorted(applied) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]  # nothing of p0 from offset 3
    stopping = [b for b in sink.applied if b.stops]
    assert len(stopping) == 1 and stopping[0].next_offsets[p0] == 3
    assert [s.ref.offset for s in stopping[0].stops] == [3]
    assert max(c[p0] for c in source.committed if p0 in c) == 3  # Kafka never ahead of the stop either
    assert sink.stored[p0] == 3 and sink.stored[p1] == 3
    assert "pause" in source.events and loop.stopped[p0].rule_id == "items.on_schema_change"


def test_totals_name_the_rows_held_during_the_run_apart_from_those_held_at_its_end() -> None:
    """The run's totals (its end line, a shadow summary's `totals`) count the row changes put on
    hold during the run as `held_during_run`, per table: named `held`, beside a shadow run's
    `held_at_end`, it read as the rows still held."""
    from collections import Counter

    from replicator.run.loop import Totals

    totals = Totals()
    batch = PreparedBatch(by_table={}, failures=(), next_offsets={}, counts=Counter(), events=2)
    totals.add(batch, BatchResult(held=2, held_by_table=Counter({"s.orders": 2})))
    totals.add(batch, BatchResult(held=2, held_by_table=Counter({"s.items": 1})))  # one still held
    said = totals.as_dict()
    assert said["held_during_run"] == {"s.items": 1, "s.orders": 2} and "held" not in said
    line = StringIO()
    RunLog("r", stream=line).event("end", **said)
    assert line.getvalue().endswith(" held_released=0 held_during_run=s.items:1,s.orders:2\n")
