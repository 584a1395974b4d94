"""The consumer loop (I/O edge): Kafka -> decode -> bounded batch -> sink -> commit.

Invariants:
- Offsets are never auto-committed or auto-stored. A batch's Kafka offsets are
  committed only after the sink's transaction (which also stored them in the
  target) returned; Kafka's committed offsets are never ahead of the target.
- On (re)assignment every partition is positioned from the target-stored
  offsets; without one, `auto_offset_reset` decides (`error` halts). A stored
  offset below the log start is a retention gap: halt, never skip.
- A rebalance discards the batch being accumulated (nothing of it was
  applied); the new assignment re-reads from the target-stored offsets.
- A batch is bounded by events, bytes and milliseconds (invariant 4).
- Transient sink errors retry the same batch with backoff, forever, logging
  each attempt; fatal errors stop the run with a one-line reason.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from replicator import failpoints
from replicator.batching import Failure
from replicator.config import Settings
from replicator.decode import DecodeError, NotTableData, Tombstone
from replicator.failures import Fatal, Transient
from replicator.model import ChangeEvent, KafkaRef
from replicator.runlog import RunLog
from replicator.writer import Batch, BatchResult

Partition = tuple[str, int]


class Sink(Protocol):
    def stored_offsets(self, partitions: list[Partition]) -> dict[Partition, int]: ...
    def apply(self, batch: Batch) -> BatchResult: ...
    def close(self) -> None: ...


class Decoder(Protocol):
    def decode(self, ref: KafkaRef, key: bytes | None, value: bytes | None, headers: Any = None) -> Any: ...


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

    def add(self, batch: Batch, result: BatchResult) -> None:
        self.batches += 1
        self.events += len(batch.events) + len(batch.failures)
        self.applied.update(result.applied)
        self.skipped_older += result.skipped_older
        self.unordered += result.unordered
        self.errors += len(result.errors)
        self.truncated_notes += result.truncated_notes
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
        }


_FATAL_KAFKA = {
    KafkaError._AUTO_OFFSET_RESET,
    KafkaError.OFFSET_OUT_OF_RANGE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
}


class ConsumerLoop:
    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        sink: Sink,
        decoder: Decoder,
        log: RunLog,
        group_id: str | None = None,
        on_error: Literal["record", "halt"] = "record",
        clock: Callable[[], float] = time.monotonic,
        stop_at: Mapping[Partition, int] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.sink = sink
        self.decoder = decoder
        self.log = log
        self.on_error = on_error
        self.clock = clock
        conf = settings.kafka.consumer_config()
        if group_id:
            conf["group.id"] = group_id
        # Positions come from the target; Kafka's reset only matters when we ask for it.
        conf["auto.offset.reset"] = "error"
        self.consumer = Consumer(conf)
        self.totals = Totals()
        self.stopping = False
        self.fatal: str | None = None
        self.batch = Batch()
        self.batch_started: float | None = None
        # Where a bounded run ends: the end offsets seen at assignment, or `stop_at`
        # (a range's upper bound, exclusive) when given.
        self.end_offsets: dict[Partition, int] = dict(stop_at or {})
        self.stop_at = dict(stop_at or {})
        self.start_offsets: dict[Partition, int] = {}  # where each partition was positioned
        self.assigned: set[Partition] = set()

    # ---------------------------------------------------------------- rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        wanted = [(p.topic, p.partition) for p in partitions]
        try:
            stored = self._with_retry(lambda: self.sink.stored_offsets(wanted), "read checkpoints")
            for p in partitions:
                key = (p.topic, p.partition)
                low, high = consumer.get_watermark_offsets(p, timeout=10, cached=False)
                self.end_offsets.setdefault(key, high)
                if key in stored:
                    if stored[key] < low:
                        raise Fatal(
                            f"retention gap on {p.topic}[{p.partition}]: the target-stored offset "
                            f"{stored[key]} is below the log start {low}; events were deleted "
                            "before they were applied. Re-snapshot the table (an incremental "
                            "snapshot through the signal table), or set this group's row in "
                            "replicator.checkpoint to an offset you accept"
                        )
                    p.offset = stored[key]
                    self.start_offsets[key] = stored[key]
                elif self.settings.kafka.auto_offset_reset == "earliest":
                    p.offset = OFFSET_BEGINNING
                elif self.settings.kafka.auto_offset_reset == "latest":
                    p.offset = OFFSET_END
                else:
                    raise Fatal(
                        f"no stored position for {p.topic}[{p.partition}] and auto_offset_reset=error;"
                        " fix: set REPLICATOR_KAFKA__AUTO_OFFSET_RESET=earliest (or latest)"
                    )
        except Fatal as exc:
            self.fatal = str(exc)
            self.stopping = True
        self._discard_batch()
        self.assigned = set(wanted)
        consumer.assign(partitions)
        self.log.event("assigned", partitions=",".join(f"{t}[{p}]" for t, p in sorted(wanted)) or "-")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._discard_batch()
        self.assigned -= {(p.topic, p.partition) for p in partitions}
        consumer.unassign()

    def _discard_batch(self) -> None:
        self.batch = Batch()
        self.batch_started = None

    # ---------------------------------------------------------------- loop
    def request_stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self, stop_when_caught_up: bool = False) -> Totals:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        limits = self.settings.batch
        try:
            while not self.stopping:
                messages = self.consumer.consume(num_messages=min(1000, limits.max_events), timeout=0.1)
                for msg in messages:
                    self._take(msg)
                if self._batch_full() or (self._batch_due() and self._batch_nonempty()):
                    self._flush()
                if stop_when_caught_up and self._caught_up():
                    if self._batch_nonempty():
                        self._flush()  # the drained range ends here, whatever the time bound
                    break
            if self.fatal is None and self._batch_nonempty():
                self._flush()  # finish the batch in hand on a clean stop
        except Fatal as exc:
            self.fatal = self.fatal or str(exc)  # the first reason is the real one
        finally:
            try:
                self.consumer.close()
            finally:
                self.sink.close()
        if self.fatal:
            raise Fatal(self.fatal)
        return self.totals

    def _take(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return
            if err.code() in _FATAL_KAFKA or err.fatal():
                raise Fatal(
                    f"kafka: {err.str()} on {msg.topic()}[{msg.partition()}]; fix: set this group's "
                    "row in replicator.checkpoint to a valid offset (never skipped silently)"
                )
            self.log.event("kafka_error", error=err.str(), retriable=err.retriable())
            return
        if self.batch_started is None:
            self.batch_started = self.clock()
        ref = KafkaRef(msg.topic(), msg.partition(), msg.offset())
        limit = self.stop_at.get((ref.topic, ref.partition))
        if limit is not None and ref.offset >= limit:
            return  # beyond the requested range: not part of this run
        key, value = msg.key(), msg.value()
        self.batch.next_offsets[(ref.topic, ref.partition)] = ref.offset + 1
        self.batch.size_bytes += len(key or b"") + len(value or b"")
        try:
            decoded = self.decoder.decode(ref, key, value, msg.headers())
        except DecodeError as exc:
            self.batch.failures.append(
                Failure(ref=ref, rule_id="decode", message=exc.message, raw_key=key, raw_value=value)
            )
            return
        if isinstance(decoded, ChangeEvent):
            self.batch.events.append(decoded)
        elif isinstance(decoded, Tombstone):
            self.batch.counts["tombstone"] += 1
        elif isinstance(decoded, NotTableData):
            self.batch.counts["not_table_data"] += 1

    def _batch_nonempty(self) -> bool:
        return bool(self.batch.next_offsets)

    def _batch_full(self) -> bool:
        b, limits = self.batch, self.settings.batch
        return len(b.events) + len(b.failures) >= limits.max_events or b.size_bytes >= limits.max_bytes

    def _batch_due(self) -> bool:
        started = self.batch_started
        return started is not None and (self.clock() - started) * 1000 >= self.settings.batch.max_ms

    def _caught_up(self) -> bool:
        if not self.assigned:
            return False
        positions = self.consumer.position([TopicPartition(t, p) for t, p in sorted(self.assigned)])
        for tp in positions:
            key = (tp.topic, tp.partition)
            end = self.end_offsets.get(key, 0)
            # Nothing consumed yet from a partition: its position is where we put it.
            position = tp.offset if tp.offset >= 0 else self.start_offsets.get(key, -1)
            if end > 0 and position < end:
                return False
        return True

    def _flush(self) -> None:
        batch = self.batch
        self._discard_batch()
        if self.on_error == "halt" and batch.failures:
            first = batch.failures[0]
            raise Fatal(f"{first.ref}: {first.rule_id}: {first.message} (--on-error=halt; cursor kept)")
        failpoints.hit("stop_before_apply")
        result = self._with_retry(lambda: self.sink.apply(batch), "apply batch")
        failpoints.hit("after_target_commit")
        self._commit_kafka(batch)
        self.totals.add(batch, result)
        by_op: Counter[str] = Counter(result.applied)
        self.log.event(
            "batch",
            events=len(batch.events) + len(batch.failures),
            applied=dict(sorted(by_op.items())),
            skipped_older=result.skipped_older,
            errors=len(result.errors),
            tombstones=batch.counts["tombstone"],
        )

    def _commit_kafka(self, batch: Batch) -> None:
        offsets = [
            TopicPartition(t, p, o)
            for (t, p), o in sorted(batch.next_offsets.items())
            if (t, p) in self.assigned
        ]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The target holds the truth; a failed Kafka commit only delays lag reporting.
            self.log.event("kafka_commit_failed", error=str(exc.args[0]))

    def _with_retry(self, action: Callable[[], Any], what: str) -> Any:
        delay = 0.5
        attempt = 0
        while True:
            try:
                return action()
            except Transient as exc:
                attempt += 1
                self.log.event("retry", what=what, attempt=attempt, error=str(exc), wait_s=delay)
                if self.stopping and attempt > 3:
                    raise Fatal(f"{what}: still failing at shutdown: {exc}") from exc
                time.sleep(delay)  # backoff between attempts against a failing target
                delay = min(delay * 2, 10.0)
