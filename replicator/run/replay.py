"""Replay: move a stopped group's positions back so its next run reads those events again.

Both stores move, Kafka's committed offsets first, then the target-stored
checkpoints (which the daemon reads its positions from), so Kafka's offset is
never ahead of the target's (oracle O). Refused while the group has live
members: they would keep reading from where they are and commit over it.
What a replay then writes is decided by the ordering guard as in any run:
on a current target every replayed event is older than or equal to its stored
version (a no-op; deletes stay deleted); a target that is behind (restored
from a backup) converges.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

from replicator.config import Settings
from replicator.core.decode import AvroDecoder, DecodeError, JsonDecoder
from replicator.core.errors import ConfigError, Fatal
from replicator.core.model import ChangeEvent, KafkaRef, Partition
from replicator.core.replay import Move, Probe, ReplayRefused, check_offsets, first_at_lsn, plan_moves
from replicator.kafka.clients import Metadata, new_consumer
from replicator.run.assembly import decoder, source_topics, spec_topics, target_topics
from replicator.target.store import ControlStore

READ_TIMEOUT_S = 30.0  # one event read for the LSN search


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    group: str
    earliest: bool = False
    offsets: Mapping[Partition, int] | None = None  # --to-offset, per partition
    moment: datetime | None = None  # --to-timestamp
    lsn: int | None = None  # --to-lsn
    tables: tuple[str, ...] = ()  # source or target tables (schema.table); empty: every mapped table
    dry_run: bool = False


def replay_topics(settings: Settings, tables: tuple[str, ...]) -> list[str]:
    """The mapped topics, or those feeding the named tables: source or target tables of the spec,
    as `reload --table` takes them (an unknown name is an error)."""
    if not tables:
        return spec_topics(settings)
    by_name: dict[str, set[str]] = {s: {topic} for s, topic in source_topics(settings).items()}
    for target, topic in target_topics(settings):
        by_name.setdefault(target, set()).add(topic)
    unknown = [t for t in tables if t not in by_name]
    if unknown:
        raise ConfigError(
            f"--tables: {', '.join(unknown)} is not a source or target table of the spec"
            f" (its source tables: {', '.join(sorted(source_topics(settings)))})"
        )
    return sorted(set().union(*(by_name[t] for t in tables)))


def also_fed(settings: Settings, tables: tuple[str, ...]) -> list[str]:
    """The target tables `replay --tables` did not name that the rewound topics feed too (a topic
    feeds every rule reading its source table): they read those events again as well, which the
    ordering guard makes no-ops on a current target. A named source table names its targets."""
    if not tables:
        return []
    topics = set(replay_topics(settings, tables))
    named = {topic for source, topic in source_topics(settings).items() if source in tables}
    fed = target_topics(settings)
    return sorted({t for t, topic in fed if topic in topics - named and t not in tables})


def replay(settings: Settings, request: ReplayRequest) -> list[Move]:
    """Plan the moves and, unless a dry run, apply them; returns the moves."""
    topics = replay_topics(settings, request.tables)
    with Metadata(settings.kafka) as metadata, ControlStore.open(settings) as store:
        store.require()
        partitions = metadata.partitions(topics)
        marks = {p: metadata.watermarks(p) for p in partitions}
        stored = store.checkpoints(request.group, partitions)
        if request.earliest:
            wanted = {p: marks[p][0] for p in partitions}
        elif request.moment is not None:
            # A partition not yet past the moment stays where it is (never moved forward).
            at = metadata.offsets_at(topics, request.moment)
            wanted = {p: min(o, stored.get(p, o)) for p, o in at.items()}
        elif request.lsn is not None:
            at = offsets_at_lsn(settings, marks, request.lsn)
            wanted = {p: min(o, stored.get(p, o)) for p, o in at.items()}
        else:
            wanted = dict(request.offsets or {})
            try:
                check_offsets(wanted, marks)  # before the dry run returns: it refuses alike
            except ReplayRefused as exc:
                raise Fatal(f"replay refused: {exc}") from exc
        try:
            moves = plan_moves(wanted, stored, marks)
        except ReplayRefused as exc:
            raise Fatal(f"replay refused: {exc}") from exc
        if request.dry_run:
            return moves
        members = metadata.group_member_instances(request.group)
        if members:
            raise Fatal(live_members_refusal(request.group, members, settings.kafka.session_timeout_ms))
        changed = {m.partition: m.to for m in moves if m.stored != m.to}
        commit_kafka(settings, request.group, changed)
        store.set_checkpoints(request.group, changed, "replay-" + time.strftime("%Y%m%dT%H%M%S"))
    return moves


def refusal_now(settings: Settings, group: str) -> str | None:
    """Why a replay of `group` would be refused at this moment (live members), or None: what a
    dry run adds, so it does not succeed where the replay a second later cannot."""
    with Metadata(settings.kafka) as metadata:
        members = metadata.group_member_instances(group)
    return live_members_refusal(group, members, settings.kafka.session_timeout_ms) if members else None


def live_members_refusal(group: str, instances: list[str | None], session_timeout_ms: int) -> str:
    """Why a replay is refused while `group` has members (their instance ids, None: dynamic)."""
    line = (
        f"replay refused: consumer group {group} has {len(instances)} live member(s); stop its"
        " `replicator run` processes first (they would go on from their own positions)"
    )
    static = sorted(i for i in instances if i is not None)
    if static:
        line += (
            f". Static members ({', '.join(static)}: REPLICATOR_KAFKA__INSTANCE_ID) stay in the group"
            " after their process stopped, even cleanly, until their session timeout"
            f" (REPLICATOR_KAFKA__SESSION_TIMEOUT_MS, {session_timeout_ms / 1000:g} s): once their"
            " processes are stopped, run replay again after that"
        )
    return line


def commit_kafka(settings: Settings, group: str, positions: Mapping[Partition, int]) -> None:
    """Commit `group`'s offsets in Kafka (the group has no members: a plain commit is accepted)."""
    if not positions:
        return
    consumer = new_consumer(settings.kafka, group)
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(positions.items())], asynchronous=False
        )
    except KafkaException as exc:
        raise Fatal(f"kafka: committing the replay positions of group {group}: {exc.args[0]}") from exc
    finally:
        consumer.close()


def offsets_at_lsn(
    settings: Settings, marks: Mapping[Partition, tuple[int, int]], lsn: int
) -> dict[Partition, int]:
    """Per partition, the first offset of a transaction that committed at or after `lsn`
    (`core.replay.first_at_lsn`, reading single events from Kafka)."""
    # assigns, never joins; a fetch returns as soon as it has data
    consumer = new_consumer(
        settings.kafka, f"replicator-replay-lsn-{time.time_ns()}", **{"fetch.wait.max.ms": 10}
    )
    try:
        out: dict[Partition, int] = {}
        for p, (low, high) in sorted(marks.items()):
            read = _EventReader(consumer, p, low, high, decoder(settings), READ_TIMEOUT_S)
            try:
                out[p] = first_at_lsn(low, high, lsn, read)
            except ReplayRefused as exc:
                raise Fatal(f"replay refused: {p[0]}[{p[1]}]: {exc}") from exc
        return out
    finally:
        consumer.close()


class _EventReader:
    """The first event at or after an offset of one partition, as a `Probe`. A miss fetches a window
    around the offset in one go (the search steps back over a transaction one event at a time, and
    skips forward over position-less ones), and everything fetched is kept."""

    WINDOW = 64  # events before the asked offset fetched with it
    BATCH = 256  # events asked of the consumer at a time

    def __init__(
        self,
        consumer: Consumer,
        partition: Partition,
        low: int,
        high: int,
        decode: JsonDecoder | AvroDecoder,
        timeout_s: float,
    ) -> None:
        self._consumer, self._partition, self._low, self._high = consumer, partition, low, high
        self._decode, self._timeout_s = decode, timeout_s
        self._seen: dict[int, Probe] = {}

    def __call__(self, offset: int) -> Probe | None:
        if offset >= self._high:
            return None
        if offset not in self._seen:
            self._fetch(offset)
        found = self._seen.get(offset)
        if found is None:  # a gap in the log (compaction, aborted transactions): the next event
            later = [o for o in self._seen if offset < o < self._high]
            found = self._seen[min(later)] if later else None
        return found

    def _fetch(self, offset: int) -> None:
        topic, partition = self._partition
        start = max(self._low, offset - self.WINDOW)
        self._consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + self._timeout_s
        reached = -1  # the last offset this fetch read: everything from `start` to it is cached
        # as many as the log still has from `start`: consume returns once it has them (it waits
        # for a full batch otherwise)
        wanted = max(1, min(self.BATCH, self._high - start))
        while time.monotonic() < deadline:
            for msg in self._consumer.consume(wanted, 0.2):
                if msg.error() is not None:
                    raise Fatal(f"kafka: reading {topic}[{partition}] at offset {offset}: {msg.error()}")
                at = msg.offset()
                if at is not None and (msg.topic(), msg.partition()) == self._partition:  # not a leftover
                    self._seen[at] = self._probe(KafkaRef(topic, partition, at), msg.key(), msg.value())
                    reached = max(reached, at)
            if reached >= offset or reached >= self._high - 1:
                return
        raise Fatal(
            f"kafka: no event of {topic}[{partition}] at offset {offset} within {self._timeout_s:.0f}s;"
            " is the broker reachable? (REPLICATOR_KAFKA__BOOTSTRAP_SERVERS)"
        )

    def _probe(self, ref: KafkaRef, key: bytes | None, value: bytes | None) -> Probe:
        try:
            event = self._decode.decode(ref, key, value)
        except DecodeError:
            return Probe(ref.offset, None, None)  # not an event with a position
        if not isinstance(event, ChangeEvent):
            return Probe(ref.offset, None, None)
        if event.position is not None:
            return Probe(ref.offset, event.position.commit_lsn, event.position.lsn)
        return Probe(ref.offset, None, event.lsn)  # a snapshot row: its snapshot's LSN
