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

`replicator partitions accept` (the supported way on) records a `Layout`
with two offsets per partition that existed before:
- `changed`: where the group's checkpoint stood (the stopped partitions
  stand where the change was seen; a group lagging behind stands earlier);
- `starts`: the end offset read after the accept stopped and resumed the
  capture connector, i.e. after its producer was closed and a new one,
  which reads the new count before its first record, took over.
The producer switches to the new count at some moment between the change
and that restart (when its metadata refreshes: seconds or minutes). So per
partition, a record before `changed` was produced with the old count
(unless the producer switched before the change was seen: the few seconds
of the check interval), a record from `starts` on (or on a partition the
change created) with the new one, and one in between (the *transition*)
with either. That gives every record a *rank* from its partition and
offset alone (`Layouts.rank`): 2i for layout i settled, 2i-1 for its
transition, so every instance orders two events of one key on different
partitions of a topic the same way:
- both carry a source position: the positions decide (as before);
- otherwise the higher rank is newer. Records of one key on two partitions
  were produced with two counts, the old one first; a record before the
  transition precedes it, and one after it follows every record of the
  transition (the capture's producer appends a record after the source
  committed what it carries, or read it: snapshot rows; so appended later
  means a state at least as new, the guarantee Kafka order gives inside a
  partition). Debezium's redeliveries after a restart can cross these
  boundaries, but they are streaming events with positions.
- same rank, another partition, a position missing: undecided (not
  applied, an error record; `core.ordering`). That takes a snapshot row in
  the transition (a snapshot running while the count changed), or a
  producer that switched before the change was seen; the reload that
  follows an accept is produced after `starts`, so its rows outrank every
  earlier record and repair the rows.
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
    """One accepted change of a topic's partition count (see the module)."""

    epoch: int  # 1, 2, ... in the order accepted
    before: int  # partitions before the change
    partitions: int  # partitions after it
    starts: tuple[int, ...]  # per partition that existed before: from here on, the new count only
    changed: tuple[int, ...]  # per partition that existed before: the transition starts here

    def rank(self, partition: int, offset: int) -> int | None:
        """2 * epoch for a record of this layout, one less in its transition, None before it."""
        if partition >= self.before or offset >= self.starts[partition]:
            return 2 * self.epoch
        if offset >= self.changed[partition]:
            return 2 * self.epoch - 1
        return None


@dataclass(frozen=True, slots=True)
class Layouts:
    """Every topic's accepted layouts, oldest first (a topic without any has rank 0 throughout)."""

    by_topic: Mapping[str, tuple[Layout, ...]] = field(default_factory=dict)

    def rank(self, topic: str, partition: int, offset: int) -> int:
        """Where a record stands among its topic's layouts (see the module). The newest layout that
        places the record decides: each layout's transition starts no earlier than the one before
        settled (`next_layout`) and a partition it creates was new to none before, so the regions
        nest."""
        for layout in reversed(self.by_topic.get(topic, ())):
            found = layout.rank(partition, offset)
            if found is not None:
                return found
        return 0

    def __bool__(self) -> bool:
        return bool(self.by_topic)


NO_LAYOUTS: Final = Layouts()


def next_layout(
    current: Sequence[Layout],
    before: int,
    partitions: int,
    ends: Mapping[int, int],
    standing: Mapping[int, int],
) -> Layout:
    """The layout an accept records. `ends`: the end offsets of the partitions that existed before,
    read after the capture connector restarted with the new count; `standing`: where the group's
    checkpoints stood on them. The transition is kept within [the previous layout's start, end]."""
    missing = [p for p in range(before) if p not in ends or p not in standing]
    if missing:
        raise ValueError(f"offsets missing for partitions {missing}")
    last = current[-1] if current else None
    settled = [last.starts[p] if last is not None and p < last.before else 0 for p in range(before)]
    epoch = (last.epoch if last is not None else 0) + 1
    return Layout(
        epoch,
        before,
        partitions,
        tuple(ends[p] for p in range(before)),
        tuple(min(ends[p], max(standing[p], settled[p])) for p in range(before)),
    )


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
