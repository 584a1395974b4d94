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
   the row is superseded by then, never wrongly reported. A parent whose
   stored version says present, though the target refused the row for its
   lack, left the target without an event of its own (a target ON DELETE
   CASCADE from its own parent, a truncate, by hand): nothing says when the
   source lost it, so the row is not judged at all (`against_parent`) until
   the parent's own events move its version (its delete: judged as above; it
   comes back: applied). Trials 10 and 10b: a card (a comment) created with
   its board (its card) was judged at its own insert once a cascade had taken
   the parent, and became an error record though its own delete was coming.
5. A held parent's partition moves past it (the held row is persisted and the
   checkpoint passes it), so coverage alone would call it absent: a row waits,
   unjudged, while the group holds an event for the parent row it awaits
   (`Hold.awaits`; for any row of that table when the key is not known). Per
   row, not per table: two tables each holding rows for other rows of the
   other were never judged (trial 9), and `drain` never ended. A held event
   counts for every target row it would write, not only the one refused
   (`target.holds.HeldRow.also`): one source row split into two tables (a
   user: account + profile), held for its profile, still writes its account,
   so a child awaiting that account waits too. A row never waits for its own held events: a
   row refused by a unique value, awaiting any row of its own table, was itself such a row, and
   waited for good (trial 18).
6. Point 5 is judged against what the group holds *after* the batch's own
   settlements (`settle`, a fixpoint), not before: once the last held event
   that would write a row R becomes an error record in this batch (or is
   applied, or superseded), nothing held is left to write R, and a row
   awaiting R is judged by coverage like any other, in the same batch.
   Before, it waited one retry backoff per FK level (a filtered-out root:
   accounts -> projects -> tasks -> comments; a cutover's drain of 67-70 s).
   Sound, because:
   - the held events are counted per row before the writes; the ones this
     batch retries are locked by it, so a count that this batch's own
     settlements bring to zero means none is left. A held event for R outside
     the batch (another member's, over the retry limit) is counted and not
     subtracted: R stays held. An event held for R by another member after
     that read moved its partition's checkpoint with it, after the progress
     read with it, so coverage does not pass that event (points 1-3), as for
     the batch's own new events, which are not counted (as before).
   - the awaiting row keeps its own coverage check, point 5 alone does not
     suffice: a later event for R still unapplied in R's partition (an update
     giving R a parent that exists, R inserted again) may write R before the
     row's judgement point J; coverage of every partition feeding R's table
     past J says every event committed by J is applied, held (counted) or an
     error record, exactly as for a parent that was never held. An error
     record leaves R unwritten, as a filtered-out parent does.
   - monotone: a row only turns from held to error record, which can only
     empty more rows, so it ends; each refused row is looked at again at most
     once per row, table or group whose count reaches zero: linear in the
     batch's refused rows, whatever the size of the held set.
   A batch that retries a held row adopts the held rows awaiting it (bounded
   by the retry limit), so a chain is judged together. One it had no room
   for, or one awaiting a row of an error record made by this batch that is
   still not covered (its parent refused for good in this batch: the parent's
   partition is past it only with this batch's checkpoint), is due at the
   next retry, not after its backoff (`target.holds.HoldStore.hasten`).

7. A parent's delete that a target ON DELETE CASCADE key (on its key) would carry into rows of
   mapped tables is refused by the writer itself, as NO ACTION would refuse it
   (`target.writer.BatchWriter._cascade_waits`), until every table the cascade reaches is covered
   through J: a child moved away before the delete in the source must not be taken. Covered, the
   delete is applied (the rows its cascade then takes are those the source's took), so this
   refusal is held and never an error record. The parents it would delete are locked (as the
   DELETE locks them) and their children looked for again: a child another instance is inserting
   holds its parent FOR KEY SHARE, so it is committed, and seen, first, or it waits and then finds
   its parent deleted (trial 10b: the cascade took a card inserted meanwhile, unchecked, and its
   version kept saying present).
   A batch retrying a held delete that waits for a child table adopts the deletes held for the
   parent table above it (`target.holds.HoldStore`): a cascade held level by level lands in one
   batch.

Hence `due_for_error` is true only when the source, at J, had no such parent
(or the spec rejected or filtered it), i.e. never because of lag; with N
instances and rebalances it holds because progress lives in the target and
marks are facts about Connect and Kafka, not about an instance.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from replicator.core.model import ChangeEvent, Partition, TableRef
from replicator.core.ordering import Version


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


def against_parent(hold: Hold, parent: Version | None) -> Hold | None:
    """Point 4: `hold` judged against the stored version of the parent row it awaits (None: no
    version, or one not written yet). Returns None when it may not be judged at all: the version
    says the parent is in the target, yet the target refused the row for its lack."""
    if parent is None:
        return hold
    if not parent.deleted:
        return None
    if parent.position is None:
        return hold
    return replace(hold, judged_at=max(hold.judged_at, parent.position.commit_lsn))


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


# A target row: (table, key text). Key None: a row whose key is not known (any row of the table);
# table `ANY_TABLE`: any row of any table.
Row = tuple[str, str | None]
ANY_TABLE = "*.*"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A row a batch's writes refused, as `settle` sees it."""

    events: tuple[Hashable, ...]  # the events folded into the row
    waits_for: Row | None  # the row it waits for (None: it cannot be held: an error record)
    covered: bool  # `due_for_error` with its feeders known: an error record unless it waits for a held row


def _matches(written: Row, awaited: Row) -> bool:
    """Whether a written row is (or may be) the row `awaited` stands for (`Row`'s wildcards)."""
    table, key = awaited
    if table == ANY_TABLE:
        return True
    if written[0] != table:
        return False
    return key is None or written[1] in (key, None)


def settle(
    refusals: Sequence[Refusal],
    held: Mapping[Row, int],
    writes: Mapping[Any, Iterable[Row]],
    retried: Iterable[Hashable],
) -> list[bool]:
    """Which refused rows become error records (True) and which are held (point 6: a fixpoint).

    `held`: the group's held events per target row, read before the writes; `retried`: the held
    events this batch retried (counted in `held`; those in no refused row leave the held set now);
    `writes`: the target rows of each event of `refusals` and of `retried` (a retried event's as
    stored, so that it is subtracted as it was counted). Events of `refusals` held before are
    among `retried`. New events of the batch are not counted, as in `held` (read before it): a row
    awaiting one of their rows is not covered past that event, which its partition has not applied
    (point 3), so it waits regardless."""
    count: Counter[Row] = Counter({r: n for r, n in held.items() if n > 0})
    tables: Counter[str] = Counter()
    for (table, _), n in count.items():
        tables[table] += n
    total = sum(count.values())
    error = [r.waits_for is None for r in refusals]
    live: Counter[Hashable] = Counter()  # per event: its refused rows still held
    for r, e in zip(refusals, error, strict=True):
        for ref in dict.fromkeys(r.events):
            live[ref] += 0 if e else 1
    before = set(retried)
    by_key: defaultdict[Row, list[int]] = defaultdict(list)  # waiters per awaited row (key known)
    by_table: defaultdict[str, list[int]] = defaultdict(list)  # waiters for any row of a table
    anything: list[int] = []  # waiters for any row at all
    for n, r in enumerate(refusals):
        if error[n] or not r.covered or r.waits_for is None:
            continue
        table, key = r.waits_for
        if table == ANY_TABLE:
            anything.append(n)
        elif key is None:
            by_table[table].append(n)
        else:
            by_key[r.waits_for].append(n)
    keyed: defaultdict[str, list[int]] = defaultdict(list)  # waiters per table of a known key
    for (table, _), waiting in by_key.items():
        keyed[table] += waiting
    # A row never waits for itself: its own held events (counted in `held` while it stays held)
    # are left out of what it waits for. Trial 18: a row refused by a unique constraint against
    # a row that never changes waited for "any row of its table", its own held event among them,
    # for good. `mine[n]`: refusal n's own counted writes of the rows it waits for.
    mine = [0] * len(refusals)
    for n, r in enumerate(refusals):
        if r.waits_for is not None:
            mine[n] = sum(
                _matches(row, r.waits_for)
                for ref in dict.fromkeys(r.events)
                if ref in before
                for row in dict.fromkeys(writes.get(ref, ()))
            )
    # wake a waiter once a count is down to its own share (0 for almost every row)
    slack_key = {row: max(mine[n] for n in waiting) for row, waiting in by_key.items()}
    slack_keyed = {table: max(mine[n] for n in waiting) for table, waiting in keyed.items()}
    slack_table = {table: max(mine[n] for n in waiting) for table, waiting in by_table.items()}
    slack_any = max((mine[n] for n in anything), default=0)
    queue: list[int] = []

    def waits(n: int, row: Row) -> bool:
        table, key = row
        if table == ANY_TABLE:
            return total - mine[n] > 0
        if key is None:
            return tables[table] - mine[n] > 0
        return count[row] + count[(table, None)] - mine[n] > 0

    def move(ref: Hashable) -> None:
        """A held event of this batch leaves the held set: wake the rows it emptied."""
        nonlocal total
        for row in dict.fromkeys(writes.get(ref, ())):
            table, key = row
            count[row] -= 1
            tables[table] -= 1
            total -= 1
            if key is not None and count[row] <= slack_key.get(row, 0):
                queue.extend(by_key.get(row, ()))
            if key is None and count[row] <= slack_keyed.get(table, 0):
                queue.extend(keyed.get(table, ()))
            if tables[table] <= slack_table.get(table, 0):
                queue.extend(by_table.get(table, ()))
            if total <= slack_any:
                queue.extend(anything)

    for ref in before:
        if not live[ref]:
            move(ref)  # applied, superseded, an error record: no longer held
    queue.extend(n for n, r in enumerate(refusals) if not error[n] and r.covered)
    while queue:
        n = queue.pop()
        r = refusals[n]
        if error[n] or not r.covered or r.waits_for is None or waits(n, r.waits_for):
            continue
        error[n] = True
        for ref in dict.fromkeys(r.events):
            live[ref] -= 1
            if live[ref] == 0 and ref in before:
                move(ref)
    return error
