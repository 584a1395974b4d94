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

from confluent_kafka import KafkaException, TopicPartition

from replicator.config import Settings
from replicator.core.errors import ConfigError, Fatal
from replicator.core.model import Partition
from replicator.core.replay import Move, ReplayRefused, plan_moves
from replicator.kafka.clients import Metadata, new_consumer
from replicator.run.assembly import source_topics, spec_topics
from replicator.target.store import ControlStore


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    group: str
    earliest: bool = False
    offsets: Mapping[Partition, int] | None = None  # --to-offset, per partition
    moment: datetime | None = None  # --to-timestamp
    tables: tuple[str, ...] = ()  # source tables (schema.table); empty: every mapped table
    dry_run: bool = False


def replay_topics(settings: Settings, tables: tuple[str, ...]) -> list[str]:
    """The mapped topics, or those of the named source tables (an unknown name is an error)."""
    if not tables:
        return spec_topics(settings)
    by_source = source_topics(settings)
    unknown = [t for t in tables if t not in by_source]
    if unknown:
        raise ConfigError(
            f"--tables: {', '.join(unknown)} is not a source table of the spec"
            f" (its tables: {', '.join(sorted(by_source))})"
        )
    return sorted({by_source[t] for t in tables})


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
        else:
            wanted = dict(request.offsets or {})
            unknown = sorted(set(wanted) - set(partitions))
            if unknown:
                raise ConfigError(
                    "--to-offset: " + ", ".join(f"{t}[{p}]" for t, p in unknown) + " is not a partition"
                    f" of the replayed topics ({', '.join(topics)})"
                )
        try:
            moves = plan_moves(wanted, stored, marks)
        except ReplayRefused as exc:
            raise Fatal(f"replay refused: {exc}") from exc
        if request.dry_run:
            return moves
        members = metadata.group_members(request.group)
        if members:
            raise Fatal(
                f"replay refused: consumer group {request.group} has {members} live member(s); stop its"
                " `replicator run` processes first (they would go on from their own positions)"
            )
        changed = {m.partition: m.to for m in moves if m.stored != m.to}
        commit_kafka(settings, request.group, changed)
        store.set_checkpoints(request.group, changed, "replay-" + time.strftime("%Y%m%dT%H%M%S"))
    return moves


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
