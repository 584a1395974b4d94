"""Partition layouts: a topic's partition count, its changes, and the order across them. Pure.

Kafka's producer puts a key on `hash(key) % partitions`, so a key lives on
one partition as long as its topic's count stays; per-key order is Kafka
order there (`core.ordering`). A change of the count moves keys to other
partitions, where offsets say nothing about which event came first.

While running (`run.partition_watch`) every instance compares the count
Kafka shows with the count recorded in the target (`topic_partitions`). A
difference is a `Change`: every partition of that topic stops where it
stands (a `core.schema_change.Stop` with rule `partitions`, shown and
cleared like a schema stop), other topics flow. The recorded count is one
row in the target and Kafka's count is the cluster's, so every instance of
the group, after any rebalance, reaches the same decision: nothing of the
topic is applied between the change and its acceptance but what an
instance applied before its next check (at most `CHECK_EVERY_S`, and never
a partition the change created: an instance that is assigned one checks
before it reads it).

`replicator partitions accept` (the supported way on) restarts the capture
connector, so every record from then on is produced with the new count,
and only then records a `Layout`: the new count and, per partition that
existed before, the end offset read after the restart (`starts`). Every
record of a topic therefore belongs to one layout *epoch*: a record of
epoch `i` was appended after every record of an earlier epoch, by a
producer that used the later count. The epoch of a record is known from
its partition and offset alone (`Layouts.epoch`), so every instance orders
two events of one key on different partitions the same way:
- both carry a source position: the positions decide (as before);
- otherwise the later epoch is newer. A record is produced after the
  source committed what it carries (streaming) or after it read it
  (snapshot and incremental-snapshot rows), so a record appended later
  reflects a state at least as new, for records of one connector; this is
  the same guarantee Kafka order gives inside a partition. Debezium's
  redeliveries after a restart can cross the boundary, but they are
  streaming events with positions.
- same epoch, another partition, a position missing: undecided (not
  applied, an error record; see `core.ordering`). With one count per epoch
  this happens only to records produced between the count change and the
  accept's restart on a producer that had already refreshed its metadata
  (librdkafka and the Java producer refresh every few minutes), and a
  reload after the accept lands in the later epoch and wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from replicator.core.mapping.plan import TablePlan
from replicator.core.model import Batch, KafkaRef, Partition, TableRef
from replicator.core.schema_change import Stop

RULE: Final = "partitions"  # the rule id of a stop made by a partition count change
CHECK_EVERY_S: Final = 5.0  # how often a running instance compares the counts


class Layout(NamedTuple):
    """One accepted change of a topic's partition count: epoch `epoch` starts here."""

    epoch: int  # 1, 2, ... in the order accepted
    before: int  # partitions before the change
    partitions: int  # partitions after it
    starts: tuple[int, ...]  # per partition that existed before: the first offset of this layout

    def covers(self, partition: int, offset: int) -> bool:
        """Was the record at `partition`/`offset` appended in this layout (or a later one)?"""
        return partition >= self.before or offset >= self.starts[partition]


@dataclass(frozen=True, slots=True)
class Layouts:
    """Every topic's accepted layouts, oldest first (a topic without any is in epoch 0)."""

    by_topic: Mapping[str, tuple[Layout, ...]] = field(default_factory=dict)

    def epoch(self, topic: str, partition: int, offset: int) -> int:
        """The layout epoch a record was appended in. Monotone: a later layout has at least as many
        partitions before it and starts no earlier on each, so the newest layout covering the
        record is found first."""
        for layout in reversed(self.by_topic.get(topic, ())):
            if layout.covers(partition, offset):
                return layout.epoch
        return 0

    def __bool__(self) -> bool:
        return bool(self.by_topic)


NO_LAYOUTS: Final = Layouts()


def next_layout(current: Sequence[Layout], before: int, partitions: int, ends: Mapping[int, int]) -> Layout:
    """The layout an accept records: `ends` are the end offsets of the partitions that existed
    before, read after the capture connector restarted with the new count."""
    missing = [p for p in range(before) if p not in ends]
    if missing:
        raise ValueError(f"end offsets missing for partitions {missing}")
    epoch = (current[-1].epoch if current else 0) + 1
    return Layout(epoch, before, partitions, tuple(ends[p] for p in range(before)))


@dataclass(frozen=True, slots=True)
class Change:
    """A topic whose partition count in Kafka is not the one recorded in the target."""

    topic: str
    recorded: int
    found: int

    @property
    def grown(self) -> bool:
        return self.found > self.recorded

    def reason(self) -> str:
        """One line: what changed and why it stops the topic."""
        if self.grown:
            return (
                f"topic {self.topic} has {self.found} partitions, {self.recorded} recorded: keys moved"
                " partitions, so offsets no longer order their events"
            )
        return (
            f"topic {self.topic} has {self.found} partitions, {self.recorded} recorded: it was deleted and"
            " created again, its offsets start over"
        )

    def fix(self, sources: Iterable[TableRef]) -> str:
        """One line: the way on (runbook step 10)."""
        tables = " ".join(f"--table {s}" for s in sorted(set(sources)))
        if self.grown:
            return (
                f"`replicator partitions accept --topic {self.topic} --yes` (the instances resume the topic),"
                f" then `replicator reload {tables}` and `replicator verify`"
            )
        return (
            f"stop `replicator run` and re-snapshot {tables.replace('--table ', '')} into an empty target"
            " (the stored offsets belong to the topic that was deleted)"
        )

    def stops(self, tables: Sequence[TablePlan], at: Mapping[Partition, int]) -> list[Stop]:
        """One stop per partition in `at` (where it stands: its next offset), naming every target
        table the topic feeds."""
        sources = [t.source for t in tables]
        reason, fix = self.reason(), self.fix(sources)
        return [
            Stop(
                ref=KafkaRef(topic, partition, offset),
                source=sources[0] if sources else TableRef("?", "?"),
                targets=tuple(t.target for t in tables),
                rule_id=RULE,
                reason=reason,
                fix=fix,
                shape=None,
            )
            for (topic, partition), offset in sorted(at.items())
        ]


def changes(found: Mapping[str, int], recorded: Mapping[str, int]) -> dict[str, Change]:
    """The topics whose count in Kafka (`found`) differs from the recorded one (a topic recorded
    nowhere is not a change: its first count is recorded)."""
    return {
        t: Change(t, recorded[t], n) for t, n in sorted(found.items()) if t in recorded and recorded[t] != n
    }


def without(batch: Batch, partitions: Iterable[Partition]) -> Batch:
    """The batch without anything of `partitions` (events, decode failures, next offsets): they
    stopped before it was applied, so their checkpoints stay where the previous batch left them."""
    gone = set(partitions)
    if not gone & set(batch.next_offsets):
        return batch
    return Batch(
        events=[e for e in batch.events if (e.ref.topic, e.ref.partition) not in gone],
        failures=[f for f in batch.failures if (f.ref.topic, f.ref.partition) not in gone],
        next_offsets={p: o for p, o in batch.next_offsets.items() if p not in gone},
        counts=batch.counts,
        size_bytes=batch.size_bytes,
    )
