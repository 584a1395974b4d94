"""The consumer loop: Kafka records -> decode -> bounded batch -> map -> sink -> commit.

Invariants:
- A batch's Kafka offsets are committed only after the sink's transaction
  (which also stored them in the target) returned; Kafka's committed offsets
  are never ahead of the target (invariant 1).
- On (re)assignment every partition is positioned from the target-stored
  offsets; without one, `auto_offset_reset` decides (`error` halts). A stored
  offset below the log start is a retention gap: halt, never skip.
- A rebalance discards the batch being accumulated (nothing of it was
  applied); the new assignment re-reads from the target-stored offsets.
- A batch is bounded by events, bytes and milliseconds (invariant 4), and is
  mapped (`core.intents.prepare`) before the sink's transaction starts.
- Fetch and apply overlap: while one batch is applied (in the `apply`
  thread), the next is read, decoded and mapped. At most one batch is in
  flight and one accumulating; batches are applied one after the other, in
  order, and a rebalance or a stop first waits for the batch in flight (its
  Kafka offsets are committed while its partitions are still assigned).
- Transient sink errors retry the same batch with backoff, forever, logging
  each attempt; a `Fatal` stops the run and keeps its cause.
- A partition whose event no longer matches the spec (`core.schema_change`,
  judged by `verdict` before the batch is mapped) is cut in front of that
  event, paused, and anything fetched of it later is dropped: its checkpoint
  stays at that event until the partition is assigned again and the event is
  judged again. A stopped partition counts as caught up.
- A topic whose partition count in Kafka is not the recorded one
  (`run.partition_watch`, asked at every assignment and every few seconds)
  stops the same way, all its assigned partitions where they stand: at an
  assignment they are never fetched; while running, what the batch in hand
  holds of them is dropped (not applied: their checkpoints stay where the
  batch in flight leaves them) and they are paused. The stops are stored
  with the next batch (an empty one if need be). A topic accepted since
  (`replicator partitions accept`) makes the instance join the group
  again: every partition is assigned and positioned from the target anew,
  with the writer's layouts read again (see `core.layout`).

The loop builds no client: it is given a `Source` (Kafka) and a `Sink` (the
target writer or the shadow), so it unit-tests with fakes of both.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

from replicator import failpoints
from replicator.config import BatchSettings
from replicator.core.decode import Decoded, DecodeError, NotTableData, Tombstone
from replicator.core.errors import Fatal, Transient
from replicator.core.intents import PreparedBatch, key_text, other_table_fix, other_tables, prepare
from replicator.core.layout import RULE as PARTITIONS_RULE
from replicator.core.layout import Change, without
from replicator.core.mapping.plan import Plan
from replicator.core.model import (
    Batch,
    BatchResult,
    ChangeEvent,
    Failure,
    KafkaRef,
    Partition,
    Record,
    TableRef,
)
from replicator.core.schema_change import SourceNow, Stop, Verdict, cut
from replicator.core.switch import point as switch_point
from replicator.kafka.consumer import OnAssign, OnRevoke, StartAt, ToPause
from replicator.run.observer import LoopObserver, NullObserver
from replicator.run.partition_watch import PartitionWatch
from replicator.runlog import RunLog

Headers = tuple[tuple[str, bytes | None], ...]


class Source(Protocol):
    def subscribe(
        self, topics: list[str], on_assign: OnAssign, on_revoke: OnRevoke, to_pause: ToPause | None = None
    ) -> None: ...
    def pause(self, partitions: list[Partition]) -> None: ...
    def resume(self, partitions: list[Partition]) -> None: ...
    def rejoin(self) -> None: ...
    def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...
    def watermarks(self, partition: Partition, cached: bool = False) -> tuple[int, int]: ...
    def positions(self, partitions: list[Partition]) -> dict[Partition, int]: ...
    def commit(self, offsets: Mapping[Partition, int]) -> None: ...
    def close(self) -> None: ...


class Sink(Protocol):
    def on_assign(self, partitions: list[Partition]) -> dict[Partition, int]:
        """The target-stored next offsets of newly assigned partitions."""
        ...

    def on_revoke(self, partitions: list[Partition]) -> None: ...
    def retry_due(self) -> bool:
        """Held rows wait for a retry although no new record arrived (an empty batch retries them)."""
        ...

    def apply(self, batch: PreparedBatch) -> BatchResult: ...
    def close(self) -> None: ...


class Decoder(Protocol):
    def decode(
        self, ref: KafkaRef, key: bytes | None, value: bytes | None, headers: Headers = ()
    ) -> Decoded: ...
    def key_row(self, ref: KafkaRef, key: bytes | None) -> dict[str, Any] | None: ...


def undecodable(dec: Decoder, record: Record, exc: DecodeError) -> Failure:
    """The error record of a record that cannot be decoded, naming its row by the source key's
    values when the key alone can be read (the target key needs the value; an error record keyed
    `-` could not be found by its row)."""
    row = dec.key_row(record.ref, record.key)
    return Failure(
        ref=record.ref,
        rule_id="decode",
        message=exc.message,
        raw_key=record.key,
        raw_value=record.value,
        key=None if row is None else key_text(tuple(row.values())),
    )


@dataclass(frozen=True, slots=True)
class LoopOptions:
    limits: BatchSettings
    auto_offset_reset: Literal["earliest", "latest", "error"] = "earliest"
    stop_when_caught_up: bool = False
    # No subscribed topic existed at the start: with stop_when_caught_up, no assignment is caught up.
    nothing_to_read: bool = False
    # A range's upper bound per partition (exclusive); a bounded run stops there.
    stop_at: Mapping[Partition, int] = field(default_factory=dict)
    # The source's signal table and its topic: consumed beside the mapped topics, never mapped;
    # the drain fences on it are stored with the batch that read them.
    signal_table: TableRef | None = None
    signal_topic: str | None = None
    # The source catalog read at the start: events older than it map as the spec fixed for a source
    # schema change means (`core.schema_change.older`: a partition that lagged behind the change).
    source_now: SourceNow | None = None


@dataclass(slots=True)
class Totals:
    batches: int = 0
    events: int = 0
    applied: Counter[str] = field(default_factory=Counter)
    skipped_older: int = 0
    unordered: int = 0
    errors: int = 0
    truncated_notes: int = 0
    not_table_data: int = 0
    tombstones: int = 0
    released: int = 0  # held events applied or superseded
    # row changes put on hold during the run (newly held; a retry still held is not counted again),
    # by target table: not how many are held at its end (a shadow run's `held_at_end`)
    held_during_run: Counter[str] = field(default_factory=Counter)

    def add(self, batch: PreparedBatch, result: BatchResult) -> None:
        self.batches += 1
        self.events += batch.events
        self.applied.update(result.applied)
        self.skipped_older += result.skipped_older
        self.unordered += result.unordered
        self.errors += len(result.errors)
        self.truncated_notes += result.truncated_notes
        self.released += result.released
        self.held_during_run.update(result.held_by_table)
        self.not_table_data += batch.counts["not_table_data"]
        self.tombstones += batch.counts["tombstone"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "events": self.events,
            "applied": dict(sorted(self.applied.items())),
            "skipped_older": self.skipped_older,
            "unordered": self.unordered,
            "error_records": self.errors,
            "truncation_reports": self.truncated_notes,
            "tombstones": self.tombstones,
            "not_table_data": self.not_table_data,
            "held_released": self.released,
            "held_during_run": dict(sorted(self.held_during_run.items())),
        }


POLL_RECORDS = 1000
POLL_TIMEOUT_S = 0.1
END_OFFSETS_EVERY_S = 5.0  # how often end offsets are re-read for an observer that wants them


class ConsumerLoop:
    def __init__(
        self,
        source: Source,
        sink: Sink,
        decoder: Decoder,
        plan: Plan,
        log: RunLog,
        options: LoopOptions,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        observer: LoopObserver | None = None,
        verdict: Verdict | None = None,
        watch: PartitionWatch | None = None,
    ) -> None:
        self.source = source
        self.verdict = verdict  # None: no schema-change check (every event goes to the mapping)
        self.watch = watch  # None: partition counts are not compared while running
        self.sink = sink
        self.decoder = decoder
        self.plan = plan
        self.log = log
        self.options = options
        self.clock = clock
        self.sleep = sleep
        self.observer: LoopObserver = observer or NullObserver()
        self._ends_read: float | None = None  # when end offsets were last read for the observer
        self.totals = Totals()
        self.stopping = False
        self.batch = Batch()
        self.batch_started: float | None = None
        # Where a bounded run ends: `stop_at`, else the end offsets seen at assignment.
        self.end_offsets: dict[Partition, int] = dict(options.stop_at)
        self.start_offsets: dict[Partition, int] = {}  # where each partition was positioned
        self.assigned: set[Partition] = set()
        self.paused: set[Partition] = set()
        self.stopped: dict[Partition, Stop] = {}  # stopped by a schema change until assigned again
        self._other_tables: set[str] = set()  # unread source tables on read topics, said once
        # topics whose partition-count stop a revoke dropped: `resumed` if assigned and not stopped again
        self._count_stops_dropped: set[str] = set()
        self._unsaved: list[Stop] = []  # partition-count stops not yet stored (go with the next batch)
        self._next: dict[
            Partition, int
        ] = {}  # per partition, the next offset once the batches handed over commit
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apply")
        self._inflight: tuple[PreparedBatch, Future[tuple[BatchResult, float]]] | None = None

    # ---------------------------------------------------------------- rebalance
    def _on_assign(self, partitions: list[Partition]) -> dict[Partition, StartAt]:
        self._settle()  # positions come from the target: the batch in flight first
        self._discard_batch()
        self.assigned = set(partitions)
        for p in partitions:  # read again from its checkpoint: its stopping event is judged again
            self.stopped.pop(p, None)
        stored = self._with_retry(lambda: self.sink.on_assign(partitions), "read checkpoints")
        starts: dict[Partition, StartAt] = {}
        highs: dict[Partition, int] = {}
        begins: dict[Partition, int] = {}  # the observer's next offsets: stored, else where it starts
        for p in partitions:
            low, high = self._with_retry(partial(self.source.watermarks, p), "read watermarks")
            highs[p] = high
            begins[p] = stored.get(p, high if self.options.auto_offset_reset == "latest" else low)
            self.end_offsets.setdefault(p, high)
            if p in stored:
                if stored[p] < low:
                    raise Fatal(
                        f"retention gap on {p[0]}[{p[1]}]: the target-stored offset {stored[p]} is "
                        f"below the log start {low}; events were deleted before they were applied. "
                        "Re-snapshot the table (an incremental snapshot through the signal table), or "
                        "set this group's row in replicator.checkpoint to an offset you accept"
                    )
                starts[p] = stored[p]
                self.start_offsets[p] = stored[p]
            elif self.options.auto_offset_reset == "error":
                raise Fatal(
                    f"no stored position for {p[0]}[{p[1]}] and auto_offset_reset=error;"
                    " fix: set REPLICATOR_KAFKA__AUTO_OFFSET_RESET=earliest (or latest)"
                )
            else:
                starts[p] = self.options.auto_offset_reset
        self._next.update(begins)
        if self.watch is not None:  # before anything of them is read
            watch = self.watch
            mapped = set(self.plan.topics)
            watched = self._with_retry(
                lambda: watch.check({t for t, _ in partitions if t in mapped}, partitions, force=True),
                "compare partition counts",
            )
            if watched is not None:
                self._halt(watched.changed, {p: begins[p] for p in partitions})
        resumed = {t for t, _ in partitions if t in self._count_stops_dropped} - {p[0] for p in self.stopped}
        self._count_stops_dropped.clear()
        if resumed:  # accepted by another instance (its rejoin gave us the topic again)
            self._log_resumed(resumed)
        self.observer.assigned(partitions, begins)
        self.observer.end_offsets(highs)
        self._ends_read = self.clock()
        self.log.event("assigned", partitions=",".join(f"{t}[{p}]" for t, p in sorted(partitions)) or "-")
        return starts

    def _to_pause(self, partitions: list[Partition]) -> list[Partition]:
        """Newly assigned partitions to leave paused (the test-only pause failpoint)."""
        held = failpoints.paused_topics()
        paused = [p for p in partitions if p[0] in held]
        self.paused.update(paused)
        return sorted({*paused, *(p for p in partitions if p in self.stopped)})

    def _release_paused(self) -> None:
        if self.paused and not failpoints.paused_topics():
            self.source.resume(sorted(self.paused - set(self.stopped)))
            self.paused.clear()

    def _on_revoke(self, partitions: list[Partition]) -> None:
        self._settle()  # its offsets are committed while the partitions are still ours
        self._discard_batch()
        self.assigned -= set(partitions)
        self.paused -= set(partitions)
        for p in partitions:
            stop = self.stopped.pop(p, None)
            if stop is not None and stop.rule_id == PARTITIONS_RULE:
                self._count_stops_dropped.add(p[0])
        self._unsaved = [s for s in self._unsaved if s.partition in self.assigned]
        self.sink.on_revoke(partitions)
        self.observer.revoked(partitions)

    def _discard_batch(self) -> None:
        self.batch = Batch()
        self.batch_started = None

    # ---------------------------------------------------------------- loop
    def request_stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> Totals:
        """Consume until stopped (or caught up); raises Fatal with the first reason."""
        topics = [*self.plan.topics, *([self.options.signal_topic] if self.options.signal_topic else [])]
        self.source.subscribe(topics, self._on_assign, self._on_revoke, self._to_pause)
        limits = self.options.limits
        try:
            while not self.stopping:
                self.observer.turned()
                self._refresh_end_offsets()
                self._check_partitions()
                self._release_paused()
                for record in self.source.poll(min(POLL_RECORDS, limits.max_events), POLL_TIMEOUT_S):
                    self._take(record)
                    switch_point()  # the apply thread gets the lock between records (core.switch)
                if self._batch_full() or (self._batch_due() and self.batch):
                    self._flush()
                elif not self.batch and (self._unsaved or self.sink.retry_due()):
                    self._flush()  # nothing new to read: store the stops, retry the held rows on their own
                elif self._inflight is not None and self._inflight[1].done():
                    self._settle()  # an applied batch is committed to Kafka and logged, not left waiting
                if self.options.stop_when_caught_up and self._caught_up():
                    break
            if self.batch:
                self._flush()  # the batch in hand on a clean stop; the drained range ends here
            self._settle()
        finally:
            try:
                self._worker.shutdown(wait=True)
                self.source.close()
            finally:
                self.sink.close()
        return self.totals

    def _refresh_end_offsets(self) -> None:
        """The assigned partitions' end offsets for the observer, at most every few seconds."""
        if not self.observer.wants_end_offsets or not self.assigned:
            return
        now = self.clock()
        if self._ends_read is not None and now - self._ends_read < END_OFFSETS_EVERY_S:
            return
        self._ends_read = now
        try:  # cached: the loop never waits on the broker for a gauge
            ends = {p: self.source.watermarks(p, cached=True)[1] for p in sorted(self.assigned)}
        except Exception as exc:  # only the lag gauges wait for the next refresh
            self.log.event("warning", message=f"could not read end offsets: {exc}")
            return
        self.observer.end_offsets({p: end for p, end in ends.items() if end >= 0})

    def _check_partitions(self) -> None:
        """Stop the topics whose partition count changed; rejoin when one was accepted since."""
        if self.watch is None or not self.assigned:
            return
        mapped = set(self.plan.topics)
        stopped = {s.ref.topic for s in self.stopped.values() if s.rule_id == PARTITIONS_RULE}
        try:
            watched = self.watch.check(
                {t for t, _ in self.assigned if t in mapped}, sorted(self.assigned), stopped
            )
        except Transient as exc:  # compared again at the next check
            self.log.event("warning", message=f"could not compare partition counts: {exc}")
            return
        if watched is None:
            return
        if watched.changed:
            parts = [p for p in self.assigned if p[0] in watched.changed and p not in self.stopped]
            self.batch = without(self.batch, parts)
            if not self.batch:
                self.batch_started = None
            stops = self._halt(watched.changed, {p: self._next.get(p, -1) for p in parts})
            self.source.pause(sorted(s.partition for s in stops))
        if watched.lifted:
            self._log_resumed(watched.lifted)
            self._settle()
            self._discard_batch()
            for p in [p for p, stop in self.stopped.items() if stop.ref.topic in watched.lifted]:
                del self.stopped[p]  # said above: the rejoin's revoke does not say it again
            self.source.rejoin()

    def _log_resumed(self, topics: Collection[str]) -> None:
        self.log.event(
            "resumed",
            topics=",".join(sorted(topics)),
            message="partition count accepted: the topics are read again from their checkpoints",
        )

    def _halt(self, changed: Mapping[str, Change], at: Mapping[Partition, int]) -> list[Stop]:
        """Stop every partition in `at` of a changed topic (not stopped already); one line per topic."""
        made: list[Stop] = []
        for topic, change in sorted(changed.items()):
            parts = {p: o for p, o in at.items() if p[0] == topic and p not in self.stopped}
            if not parts:
                continue
            stops = change.stops(self.plan.tables_for_topic(topic), parts)
            for stop in stops:
                self.stopped[stop.partition] = stop
            self.log.event(
                "stopped",
                table=",".join(str(t) for t in stops[0].targets),
                partitions=",".join(str(p) for _, p in sorted(parts)),
                line=f"{', '.join(str(t) for t in stops[0].targets)} stopped ({PARTITIONS_RULE}):"
                f" {change.reason()}; fix: {stops[0].fix}",
            )
            made += stops
        self._unsaved += made
        return made

    def _take(self, record: Record) -> None:
        ref = record.ref
        partition = (ref.topic, ref.partition)
        limit = self.options.stop_at.get(partition)
        if limit is not None and ref.offset >= limit:
            return  # beyond the requested range: not part of this run
        if partition in self.stopped:
            return  # fetched before the pause took: read again from the checkpoint once assigned again
        if self.batch_started is None:
            self.batch_started = self.clock()
        batch = self.batch
        batch.next_offsets[partition] = ref.offset + 1
        batch.size_bytes += len(record.key or b"") + len(record.value or b"")
        try:
            try:
                decoded = self.decoder.decode(ref, record.key, record.value, record.headers)
            except Transient:  # e.g. the schema registry is down: wait for it, never skip
                decoded = self._with_retry(
                    lambda: self.decoder.decode(ref, record.key, record.value, record.headers), "decode"
                )
        except DecodeError as exc:
            batch.failures.append(undecodable(self.decoder, record, exc))
            return
        if isinstance(decoded, ChangeEvent):
            batch.events.append(decoded)
        elif isinstance(decoded, Tombstone):
            batch.counts["tombstone"] += 1
        elif isinstance(decoded, NotTableData):
            batch.counts["not_table_data"] += 1

    def _batch_full(self) -> bool:
        b, limits = self.batch, self.options.limits
        return b.size >= limits.max_events or b.size_bytes >= limits.max_bytes

    def _batch_due(self) -> bool:
        started = self.batch_started
        return started is not None and (self.clock() - started) * 1000 >= self.options.limits.max_ms

    def _caught_up(self) -> bool:
        if not self.assigned:
            return self.options.nothing_to_read
        for p, offset in self.source.positions(sorted(self.assigned)).items():
            if p in self.stopped:
                continue  # nothing more of it is applied in this run
            end = self.end_offsets.get(p, 0)
            # Nothing consumed yet from a partition: its position is where we put it.
            position = offset if offset >= 0 else self.start_offsets.get(p, -1)
            if end > 0 and position < end:
                return False
        return True

    def _flush(self) -> None:
        """Map the batch in hand (while the previous one is still being applied), then hand it over."""
        batch = self.batch
        self._discard_batch()
        stops: tuple[Stop, ...] = ()
        if self.verdict is not None:
            batch, stops = cut(batch, self.verdict)
            self._stop(stops)
        stops = (*self._unsaved, *stops)  # partition-count stops go with this batch
        self._unsaved = []
        self._next.update(batch.next_offsets)
        prepared = prepare(batch, self.plan, self.options.signal_table, stops, self.options.source_now)
        self._warn_other_tables(prepared)
        self._settle()
        failpoints.hit("stop_before_apply")
        future = self._worker.submit(self._timed_apply, prepared)
        self._inflight = (prepared, future)

    def _warn_other_tables(self, prepared: PreparedBatch) -> None:
        """Once per source table: its events arrive on a topic the spec reads for other tables, and
        no rule reads it (`core.intents.to_intents`), so they are not applied."""
        for table in other_tables(prepared.counts):
            if table not in self._other_tables:
                self._other_tables.add(table)
                self.log.event(
                    "warning",
                    message=f"events of source table {table} arrive on a topic the spec reads for other"
                    " tables (Debezium gives tables whose names differ only in characters it makes `_`"
                    " one topic; a routing transform merges topics) and no rule reads it: they are not"
                    f" applied; fix: {other_table_fix(table)}",
                )

    def _stop(self, stops: tuple[Stop, ...]) -> None:
        """Pause the partitions stopped by a schema change (their records fetched later are dropped)."""
        for stop in stops:
            self.stopped[stop.partition] = stop
            self.log.event("stopped", table=",".join(str(t) for t in stop.targets), line=stop.line())
        if stops:
            self.source.pause(sorted(s.partition for s in stops))

    def _timed_apply(self, prepared: PreparedBatch) -> tuple[BatchResult, float]:
        started = self.clock()
        result = self._with_retry(lambda: self.sink.apply(prepared), "apply batch")
        return result, self.clock() - started

    def _settle(self) -> None:
        """Wait for the batch in flight; then commit its Kafka offsets (after the target's commit)."""
        if self._inflight is None:
            return
        prepared, future = self._inflight
        self._inflight = None
        waiting = self.clock()
        result, apply_s = future.result()  # a Fatal of the apply thread is raised here
        waited_s = self.clock() - waiting
        failpoints.hit("after_target_commit")
        self.source.commit({p: o for p, o in prepared.next_offsets.items() if p in self.assigned})
        self.totals.add(prepared, result)
        self.observer.applied(prepared, result, apply_s)
        self.log.event(
            "batch",
            events=prepared.events,
            applied=dict(sorted(result.applied.items())),
            skipped_older=result.skipped_older,
            errors=len(result.errors),
            new_error_records=result.new_error_records,  # the others were reported before (a replay)
            held=result.held,
            released=result.released,
            tombstones=prepared.counts["tombstone"],
            apply_ms=round(apply_s * 1000),
            waited_ms=round(waited_s * 1000),  # how long reading stood still for this batch's apply
        )

    def _with_retry(self, action: Callable[[], Any], what: str) -> Any:
        delay = 0.5
        attempt = 0
        while True:
            try:
                return action()
            except Transient as exc:
                attempt += 1
                self.log.event("retry", what=what, attempt=attempt, error=str(exc), wait_s=delay)
                self.observer.retried(what, str(exc))
                if self.stopping and attempt > 3:
                    raise Fatal(f"{what}: still failing at shutdown: {exc}") from exc
                self.sleep(delay)  # backoff between attempts against a failing target
                delay = min(delay * 2, 10.0)
