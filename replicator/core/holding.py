"""Holding rows back until what they depend on is applied: when is a held row a real error? Pure.

Why: Kafka orders events per partition only. A child row's topic can run
minutes ahead of its parent's (catch-up, restarts, instances owning
different partitions), and two rows swapping a unique value can sit on two
partitions. A constraint violation caused by that lag (23503, 23505) must not
turn a valid source row into an error record: the row is *held* (persisted
in the control schema in the same transaction that moves the checkpoint past
it, so nothing held is lost on kill -9) and retried as the tables it depends
on advance. It becomes an error record only when the source itself could not
have had it: every partition that feeds the table it waits for (and its own
partition) has applied everything the source committed up to the row's
judgement point, and the row still does not fit.

The argument. Let `seq0(E)` be the first element of Debezium's
`source.sequence` of a streaming event E: the commit LSN of the transaction
processed before E's. Commit LSNs of delivered transactions strictly increase
in delivery order, and a partition holds its events in delivery order. So:

1. If a partition q has applied a streaming event E, every transaction that
   committed at or before `seq0(E)` is applied in q. `Progress.commit_lsn` is
   the highest such `seq0` per partition, stored with the checkpoint (shared
   by every instance of the group).
2. Kafka Connect commits a source offset only after every earlier record is
   acknowledged. If its committed offset has `lsn_commit = L` (the commit LSN
   of the last flushed transaction, or of the one before the flushed record),
   every transaction committed at or before L is in Kafka, at offsets below
   the end offsets read afterwards. A `CaptureMark` is such an (L, end
   offsets) pair; a partition whose applied next offset reached the mark's
   end offset has applied everything committed at or before L. Heartbeats
   keep L moving when tables are idle, so idle partitions are covered too.
3. A held streaming row H of transaction T_H is judged at `J = seq0(H)`: a
   partition covered through any c > J is covered through commit(T_H),
   because the first commit after `seq0(H)` in delivery order is T_H's own.
   A snapshot row is judged at its snapshot's LSN (streaming starts after
   it). An incremental-snapshot row is judged at the stream position its
   chunk was emitted at (`ChangeEvent.lsn`, from its `source.sequence`):
   Debezium emits a chunk when its stream reaches the window's close, which
   it writes to the WAL after reading the chunk, so every transaction that
   committed before the read (the parent the row saw) committed at or before
   that position. One without it (another Debezium) is judged at its own
   partition's coverage when it was held, a lower bound only, and so only by
   marks read after that.
4. A row waiting for a parent that the target shows deleted at a later
   position is judged there instead (`J = max(J, seq0 of that delete)`):
   with the source's FKs, the child's own delete precedes the parent's, so
   the row is superseded by then, never wrongly reported.
5. A held parent's partition moves past it (the held row is persisted and the
   checkpoint passes it), so coverage alone would call it absent: a row waits,
   unjudged, while the group holds an event for the parent row it awaits
   (`Hold.awaits`; for any row of that table when the key is not known). Per
   row, not per table: two tables each holding rows for other rows of the
   other were never judged (trial 9), and `drain` never ended.

Hence `due_for_error` is true only when the source, at J, had no such parent
(or the spec rejected or filtered it), i.e. never because of lag; with N
instances and rebalances it holds because progress lives in the target and
marks are facts about Connect and Kafka, not about an instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from replicator.core.model import ChangeEvent, Partition, TableRef


@dataclass(frozen=True, slots=True)
class Progress:
    """What a partition has applied, from the target-stored checkpoint."""

    next_offset: int
    commit_lsn: int  # highest seq0 applied (0: none)


@dataclass(frozen=True, slots=True)
class CaptureMark:
    """Connect's committed `lsn_commit`, and each partition's end offset read right after it."""

    lsn_commit: int
    ends: Mapping[Partition, int]
    taken_at: float


def covered_through(partition: Partition, progress: Progress | None, marks: Iterable[CaptureMark]) -> int:
    """The commit LSN c such that every transaction committed at or before c is applied in `partition`."""
    best = progress.commit_lsn if progress is not None else 0
    applied = progress.next_offset if progress is not None else 0
    for mark in marks:
        if applied >= mark.ends.get(partition, 0):
            best = max(best, mark.lsn_commit)
    return best


def judgement_lsn(event: ChangeEvent, own_coverage: int) -> int:
    """The commit LSN a held row is judged at (see the module's argument, point 3)."""
    if event.position is not None:
        return event.position.commit_lsn
    if event.lsn is not None:  # a snapshot: its start LSN; an incremental one: where it was emitted
        return event.lsn
    return own_coverage  # incremental snapshot: where its own partition stood when it was held


@dataclass(frozen=True, slots=True)
class Hold:
    """A row held back: what it waits for, from when, and where it is judged."""

    ref_partition: Partition
    blocked_by: TableRef
    judged_at: int  # commit LSN (`judgement_lsn`, raised by point 4)
    held_at: float  # wall clock of the first hold (marks must be newer for position-less rows)
    positioned: bool  # False for incremental-snapshot rows
    # The key text (`core.intents.key_text`) of the parent row a child waits for, when its foreign
    # key references the parent's key: the row is retried as soon as a batch writes that key.
    awaits: str | None = None


def due_for_error(
    hold: Hold,
    feeders: Iterable[Partition],
    progress: Mapping[Partition, Progress],
    marks: Iterable[CaptureMark],
) -> bool:
    """True when every partition feeding `hold.blocked_by`, and the row's own, is covered past
    `hold.judged_at`: the dependency is truly absent, not late."""
    usable = [m for m in marks if hold.positioned or m.taken_at > hold.held_at]
    for q in {*feeders, hold.ref_partition}:
        applied = progress.get(q)
        if not hold.positioned and applied is not None:
            # A row without a position is judged at a lower bound of when the source was read for
            # it (point 3): applied positions past that bound do not prove its parent was applied
            # (trial 8: incremental-snapshot rows held in a fresh target's first batch, judged at 0,
            # became error records once the lagging parent partitions applied any streaming event).
            # Only marks read after it was held do: its parent's event was in Kafka by then.
            applied = Progress(applied.next_offset, 0)
        if covered_through(q, applied, usable) <= hold.judged_at:
            return False
    return True
