"""The consumer side of Kafka (I/O edge): subscribe, position partitions, poll records, commit.

Invariants:
- Offsets are never auto-committed or auto-stored, and Kafka's reset policy
  is `error`: where a partition starts is always decided by the caller's
  `on_assign` (from the target-stored offsets), never by Kafka.
- An exception raised by `on_assign` / `on_revoke` is re-raised from the
  next `poll`, and the records of that poll are dropped (none was handed out).
- Every assignment starts with its partitions fetching, except those `to_pause`
  names: a pause never carries over from an earlier assignment (librdkafka
  would keep it).
- A member without an assignment `rejoin_timeout_s` after it subscribed or
  lost its partitions (no rebalance completed: librdkafka can stay stuck
  after a broker restart) closes its consumer and joins with a new one;
  `rejoin` does the same on request (every partition is assigned again,
  through `on_assign`, positioned from the target).
- A record error that Kafka calls fatal, an offset out of range or an
  authorization failure becomes `Fatal` (never skipped silently), and so
  does librdkafka's fatal consumer error (`_FATAL`, e.g. fenced by another
  member with the same group.instance.id: it arrives as a record error whose
  `fatal()` is false); other errors go to `on_error` and polling goes on
  (librdkafka retries).
- `partition_counts` asks through a second handle (an admin client, naming
  only the mapped topics), never the member's: it is called from
  `on_assign`, inside the member's `consume`, and confluent-kafka's
  `list_topics` on the member's own handle there clears the handle's call
  state, so the next callback of that same `consume` (a librdkafka log line
  routed to our logger) aborts the process (`CallState_get: Assertion 'cs !=
  NULL' failed`, SIGABRT).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition

from replicator.config import KafkaSettings
from replicator.core.errors import Fatal, Transient
from replicator.core.model import KafkaRef, Partition, Record, new_tuple
from replicator.kafka.clients import METADATA_TIMEOUT_S, described_partition_counts, new_admin, new_consumer

StartAt = int | Literal["earliest", "latest"]
OnAssign = Callable[[list[Partition]], Mapping[Partition, StartAt]]
ToPause = Callable[[list[Partition]], list[Partition]]  # of newly assigned partitions, those to pause
OnRevoke = Callable[[list[Partition]], None]
OnError = Callable[[str, bool], None]  # (message, retriable)

_FATAL_CODES = {
    KafkaError._AUTO_OFFSET_RESET,
    KafkaError.OFFSET_OUT_OF_RANGE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
}


def _parts(tps: list[TopicPartition]) -> list[Partition]:
    return [(tp.topic, tp.partition) for tp in tps]


class Fenced(Fatal):
    """Kafka fenced this static member: a newer one joined with its `group.instance.id` (its
    replacement after a restart, or a second process configured with the same id)."""


class KafkaSource:
    """One group member reading `topics`; positions come from the caller, never from Kafka."""

    def __init__(
        self, kafka: KafkaSettings, group_id: str, on_error: OnError, said_missing: Iterable[str] = ()
    ) -> None:
        """`said_missing`: topics the caller already said do not exist (not said again here)."""
        member = {"group.instance.id": kafka.instance_id} if kafka.instance_id else {}
        self._instance_id = kafka.instance_id
        self._missing: set[str] = set(said_missing)  # subscribed topics said not to exist (said once)
        self._new_consumer: Callable[[], Any] = lambda: new_consumer(
            kafka, group_id, **{"auto.offset.reset": "error", **member}
        )
        self._consumer = self._new_consumer()
        self._on_error = on_error
        self._pending: BaseException | None = None
        self._rejoin_timeout_s = kafka.rejoin_timeout_s
        self._subscription: tuple[list[str], OnAssign, OnRevoke, ToPause | None] | None = None
        self._joining_since: float | None = None  # set while no rebalance has completed
        # metadata questions asked from inside a rebalance callback (see the module); no group
        self._new_side: Callable[[], Any] = lambda: new_admin(kafka)
        self._side: Any = None

    def subscribe(
        self, topics: list[str], on_assign: OnAssign, on_revoke: OnRevoke, to_pause: ToPause | None = None
    ) -> None:
        self._subscription = (topics, on_assign, on_revoke, to_pause)
        self._subscribe()

    def _subscribe(self) -> None:
        assert self._subscription is not None
        topics, on_assign, on_revoke, to_pause = self._subscription

        def assign(consumer: Any, tps: list[TopicPartition]) -> None:
            self._joining_since = None
            try:
                starts = on_assign(_parts(tps))
            except Exception as exc:
                self._pending = self._pending or exc
                starts = {}
            for tp in tps:
                start = starts.get((tp.topic, tp.partition))
                if start == "earliest":
                    tp.offset = OFFSET_BEGINNING
                elif start == "latest":
                    tp.offset = OFFSET_END
                elif isinstance(start, int):
                    tp.offset = start
            consumer.assign(tps)
            paused = to_pause(_parts(tps)) if to_pause is not None else []
            # librdkafka keeps a partition's pause across unassign/assign: a pause of an earlier
            # assignment (a table stopped by a schema change) must not outlive it.
            kept = set(paused)
            consumer.resume([tp for tp in tps if (tp.topic, tp.partition) not in kept])
            if paused:
                consumer.pause([TopicPartition(t, p) for t, p in paused])

        def revoke(consumer: Any, tps: list[TopicPartition]) -> None:
            try:
                on_revoke(_parts(tps))
            except Exception as exc:
                self._pending = self._pending or exc
            consumer.unassign()

        def lost(consumer: Any, tps: list[TopicPartition]) -> None:
            self._joining_since = time.monotonic()
            revoke(consumer, tps)

        self._joining_since = time.monotonic()
        self._consumer.subscribe(topics, on_assign=assign, on_revoke=revoke, on_lost=lost)

    def _rejoin_if_stuck(self) -> None:
        since = self._joining_since
        if since is None or time.monotonic() - since < self._rejoin_timeout_s:
            return
        self._on_error(
            f"no group assignment {time.monotonic() - since:.0f} s after joining or losing it;"
            " closing the consumer and joining again with a new one",
            True,
        )
        self.rejoin()

    def rejoin(self) -> None:
        """Close the consumer (its partitions are revoked through `on_revoke`) and join the group
        again with a new one: every partition it gets is positioned by `on_assign` afresh, and no
        pause carries over."""
        with contextlib.suppress(KafkaException, RuntimeError):  # the old consumer goes either way
            self._consumer.close()
        self._consumer = self._new_consumer()
        self._subscribe()

    def partition_counts(self, topics: list[str]) -> dict[str, int]:
        """Partitions per topic as the brokers report them now (topics that exist); `Transient`
        when they do not answer."""
        try:
            if self._side is None:
                self._side = self._new_side()
            return described_partition_counts(self._side, topics)
        except (KafkaException, TimeoutError) as exc:
            why = exc.args[0] if exc.args else f"no answer in {METADATA_TIMEOUT_S * 2}s"
            raise Transient(f"kafka: reading the topics' partition counts: {why}") from exc

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        self._rejoin_if_stuck()
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            raise pending
        out: list[Record] = []
        append = out.append
        for msg in messages:
            err = msg.error()
            if err is None:
                # Headers are not read: nothing downstream needs them, and reading them costs a copy.
                ref = new_tuple(KafkaRef, (msg.topic() or "", msg.partition() or 0, msg.offset() or 0))
                append(new_tuple(Record, (ref, msg.key(), msg.value(), ())))
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.code() == KafkaError._FATAL:  # the consumer is unusable from here on
                fenced = "group.instance.id" in err.str()  # another member joined with this one's id
                raise (Fenced if fenced else Fatal)(f"kafka: {err.str()}{self._fatal_fix(err)}")
            elif err.code() in _FATAL_CODES or err.fatal():
                raise Fatal(
                    f"kafka: {err.str()} on {msg.topic()}[{msg.partition()}]; fix: set this group's "
                    "row in replicator.checkpoint to a valid offset (never skipped silently)"
                )
            elif err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                self._missing_topic(msg.topic() or "")
            else:
                self._on_error(err.str(), bool(err.retriable()))
        return out

    def _missing_topic(self, topic: str) -> None:
        """A subscribed topic that does not exist yet (the signal table's, before its first row;
        a table's, before the snapshot reaches it): said once, read once it exists."""
        if topic not in self._missing:
            self._missing.add(topic)
            self._on_error(f"topic {topic} does not exist yet: subscribed, it is read once it exists", True)

    def _fatal_fix(self, err: KafkaError) -> str:
        if "group.instance.id" in err.str():  # fenced: another member joined with this one's id
            return (
                f"; another member joined with this one's instance id {self._instance_id!r}: this"
                " process's replacement, started while it still ran (nothing to fix), or a second"
                " process configured with the same id (fix: give each process its own"
                " REPLICATOR_KAFKA__INSTANCE_ID); this process stops"
            )
        return ""

    def pause(self, partitions: list[Partition]) -> None:
        """Stop fetching these partitions (their position is kept)."""
        if partitions:
            self._consumer.pause([TopicPartition(t, p) for t, p in partitions])

    def resume(self, partitions: list[Partition]) -> None:
        if partitions:
            self._consumer.resume([TopicPartition(t, p) for t, p in partitions])

    def watermarks(self, partition: Partition, cached: bool = False) -> tuple[int, int]:
        """The partition's log start and end offsets; a failed lookup is `Transient` unless Kafka
        calls it fatal (a leader moving after a broker restart is retried, not a crash).
        `cached`: the end offset the last fetch response carried, without asking the broker (an
        uncached lookup queues behind the connection's long-polling fetch: up to fetch.wait.max.ms
        per partition); -1001 where nothing was fetched yet."""
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(*partition), timeout=METADATA_TIMEOUT_S, cached=cached
            )
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.fatal():
                raise Fatal(
                    f"kafka: {err.str()} reading the offsets of {partition[0]}[{partition[1]}]"
                ) from exc
            raise Transient(f"kafka: reading the offsets of {partition[0]}[{partition[1]}]: {err}") from exc
        return int(low), int(high)

    def positions(self, partitions: list[Partition]) -> dict[Partition, int]:
        """The next offset each partition will be read from (-1 while unknown)."""
        found = self._consumer.position([TopicPartition(t, p) for t, p in partitions])
        return {(tp.topic, tp.partition): int(tp.offset) for tp in found}

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit next offsets to Kafka (synchronous); a failure only delays lag reporting."""
        if not offsets:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())], asynchronous=False
            )
        except KafkaException as exc:
            self._on_error(f"offset commit failed: {exc.args[0]}", True)

    def close(self) -> None:
        self._side = None  # an admin client has no close: it goes with its last reference
        self._consumer.close()
