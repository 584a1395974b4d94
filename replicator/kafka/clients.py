"""Kafka clients (I/O edge): the one factory every consumer comes from, and the metadata helper.

Invariant: every client the package builds starts from
`KafkaSettings.consumer_config()`, so TLS/SASL options and the SASL secret
reach all of them (there is no second hand-built configuration to forget
one in). `Metadata` answers the questions commands ask of Kafka: partition
counts, watermarks, end offsets, offsets at a time, a group's committed
offsets. Its clients log through one `FirstAnswer` (`kafka.logs`): when the brokers do not
answer, the command's error is one line with librdkafka's reason and the fix, and librdkafka's own
lines are not printed beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from replicator.config import KafkaSettings
from replicator.core.errors import Transient
from replicator.core.model import Partition
from replicator.kafka.logs import KAFKA_LOGGER, FirstAnswer, fix_for

METADATA_TIMEOUT_S = 10.0


def consumer_conf(kafka: KafkaSettings, group_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    conf = {**kafka.consumer_config(), "logger": KAFKA_LOGGER}  # librdkafka's lines become our events
    if group_id:
        conf["group.id"] = group_id
    conf.update(overrides)
    return conf


# Consumer-only properties that an admin client would warn about.
_CONSUMER_ONLY = frozenset(
    {
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "isolation.level",
        "auto.offset.reset",
        "session.timeout.ms",
        "max.poll.interval.ms",
        "group.instance.id",
    }
)


def new_consumer(kafka: KafkaSettings, group_id: str | None = None, **overrides: Any) -> Consumer:
    """A consumer from the settings (`overrides` are librdkafka properties)."""
    return Consumer(consumer_conf(kafka, group_id, **overrides))


def new_admin(kafka: KafkaSettings, **overrides: Any) -> AdminClient:
    """An admin client from the settings (the consumer's properties an admin client takes)."""
    conf = consumer_conf(kafka, **overrides)
    return AdminClient({k: v for k, v in conf.items() if k not in _CONSUMER_ONLY})


def described_partition_counts(admin: AdminClient, topics: Iterable[str]) -> dict[str, int]:
    """Partitions per topic, for the `topics` that exist: one request naming only them (the
    metadata of every topic of a shared cluster costs the caller's thread ~70 ms per thousand
    topics). Raises KafkaException (or TimeoutError) when the brokers do not answer."""
    names = sorted(set(topics))
    if not names:
        return {}
    found = admin.describe_topics(TopicCollection(names), request_timeout=METADATA_TIMEOUT_S)
    counts: dict[str, int] = {}
    for name, future in found.items():
        try:
            counts[name] = len(future.result(timeout=METADATA_TIMEOUT_S * 2).partitions)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue  # not created yet
            raise
    return counts


class Metadata:
    """Read-only questions to the brokers, through one consumer built from the settings."""

    def __init__(self, kafka: KafkaSettings, group_id: str | None = None) -> None:
        self._kafka = kafka
        self._lines = FirstAnswer(hold="debug" not in kafka.options)
        self._consumer = new_consumer(kafka, group_id or f"{kafka.group_id}-metadata", logger=self._lines)

    def __enter__(self) -> Metadata:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()
        self._lines.closed()

    def _unanswered(self, exc: KafkaException) -> Transient:
        """The brokers did not answer: one line with librdkafka's reason (from the lines it logged
        meanwhile, dropped from now on) and the fix."""
        error = exc.args[0] if exc.args else exc
        what = error.str() if isinstance(error, KafkaError) else str(error)
        self._consumer.poll(0)  # serves the lines librdkafka queued meanwhile (it subscribes to nothing)
        said = self._lines.failed()
        why = f" ({said[0]})" if said else ""
        fix = next((f for f in map(fix_for, said) if f), "check REPLICATOR_KAFKA__BOOTSTRAP_SERVERS")
        return Transient(f"kafka at {self._kafka.bootstrap_servers}: {what}{why}; fix: {fix}")

    def _topics(self) -> dict[str, Any]:
        try:
            metadata = self._consumer.list_topics(timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            raise self._unanswered(exc) from exc
        self._lines.answered()
        return {name: t for name, t in metadata.topics.items() if t.error is None}

    def partition_counts(self, topics: Iterable[str]) -> dict[str, int]:
        """Partitions per topic, for the topics that exist."""
        found = self._topics()
        return {t: len(found[t].partitions) for t in topics if t in found}

    def topics_under(self, prefix: str) -> list[str]:
        """The topics whose names start with `prefix` followed by a dot (a connector's topic.prefix)."""
        return sorted(t for t in self._topics() if t.startswith(f"{prefix}."))

    def partitions(self, topics: Iterable[str]) -> list[Partition]:
        found = self._topics()
        return [(t, p) for t in sorted(set(topics)) if t in found for p in sorted(found[t].partitions)]

    def watermarks(self, partition: Partition) -> tuple[int, int]:
        """(log start, end) offsets of one partition."""
        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(*partition), timeout=METADATA_TIMEOUT_S, cached=False
        )
        return int(low), int(high)

    def end_offsets(self, topics: Iterable[str]) -> dict[Partition, int]:
        return {p: self.watermarks(p)[1] for p in self.partitions(topics)}

    def offsets_at(self, topics: Iterable[str], moment: datetime) -> dict[Partition, int]:
        """Per partition, the first offset at or after `moment` (the end when there is none)."""
        millis = int(moment.timestamp() * 1000)
        wanted = [TopicPartition(t, p, millis) for t, p in self.partitions(topics)]
        out: dict[Partition, int] = {}
        for tp in self._consumer.offsets_for_times(wanted, timeout=METADATA_TIMEOUT_S):
            key = (tp.topic, tp.partition)
            out[key] = tp.offset if tp.offset >= 0 else self.watermarks(key)[1]
        return out

    def committed(self, group: str, partitions: list[Partition]) -> dict[Partition, int]:
        """Kafka's committed offsets of `group` (partitions without one are left out)."""
        if not partitions:
            return {}
        consumer = new_consumer(self._kafka, group, logger=self._lines)
        try:
            found = consumer.committed(
                [TopicPartition(t, p) for t, p in partitions], timeout=METADATA_TIMEOUT_S
            )
        finally:
            consumer.close()
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def group_members(self, group: str) -> int:
        """How many consumers are members of `group` right now (0: none is running)."""
        return len(self.group_member_instances(group))

    def group_member_instances(self, group: str) -> list[str | None]:
        """The static instance id (`group.instance.id`) of each member of `group` right now, None
        for a dynamic member. A static member that stopped cleanly stays until its session timeout."""
        return [instance for instance, _ in self.group_assignment(group)]

    def group_assignment(self, group: str) -> list[tuple[str | None, list[Partition]]]:
        """Each member of `group` right now: its static instance id (None: a dynamic member) and
        the partitions assigned to it. A static member whose process ended (halted, stopped,
        killed) keeps its partitions until its session timeout."""
        admin = new_admin(self._kafka, logger=self._lines)  # held until the future resolves
        try:
            found = admin.describe_consumer_groups([group], request_timeout=METADATA_TIMEOUT_S)
            members = found[group].result(timeout=METADATA_TIMEOUT_S * 2).members
            self._lines.answered()
            return [
                (
                    m.group_instance_id or None,
                    [
                        (tp.topic, tp.partition)
                        for tp in (m.assignment.topic_partitions if m.assignment else [])
                    ],
                )
                for m in members
            ]
        except (KafkaException, TimeoutError) as exc:
            why = exc.args[0] if exc.args else f"no answer in {METADATA_TIMEOUT_S * 2}s"
            raise Transient(f"kafka: cannot describe consumer group {group}: {why}") from exc
