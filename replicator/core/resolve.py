"""Resolve a table's intents against the versions its target rows reflect. Pure.

Per target key, in Kafka order, fold the intents against the stored version
(`ordering.compare`): older events are no-ops; the last newer one wins (the
reduction buffer); an event that cannot be ordered against the key's version
(`Verdict.UNDECIDED`) is neither: it is set aside (`undecided`) for the
writer to turn into an error record, and the key's version does not move.
An upsert whose unchanged-TOAST columns are UNAVAILABLE takes those values
from an earlier accepted upsert of the same key in the batch when there is
one; otherwise the columns stay UNAVAILABLE and the writer leaves them
untouched, unless the key's version before it is a delete (`stale`): the
row was deleted or left the filter since the target's values were its own
(its delete held, soft or ignored leaves them there), so those values are
not the row's and the writer refuses it rather than keep them (trial 9).
A truncate is a barrier: `split_at_truncates` cuts a table's intents into
segments resolved and written in order.

A source TRUNCATE arrives on one partition of its topic (its key is null),
while the rows it removed, and rows written after it, sit on all of them.
The newest applied truncate of a table is its *barrier*: an event that the
source committed before it (`truncated_before`) is older than the target
row can be, whatever partition it comes from and whenever it is applied, so
a lagging partition cannot bring back what the truncate removed. (The
writer's truncate itself spares rows written after it: `written_after`.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from replicator.core.intents import Intent, Key, Kind, unavailable_columns
from replicator.core.layout import NO_LAYOUTS, Layouts
from replicator.core.mapping.plan import TablePlan
from replicator.core.model import UNAVAILABLE
from replicator.core.ordering import Verdict, Version, compare


@dataclass(slots=True)
class TableWrites:
    """Stage-2 result for one table: the final intent per key and the versions to store."""

    table: TablePlan
    final: dict[Key, Intent] = field(default_factory=dict)
    versions: dict[Key, Version] = field(default_factory=dict)
    # Per key, the intents folded into its final one, in Kafka order (held back together).
    contributors: dict[Key, list[Intent]] = field(default_factory=dict)
    older: list[Intent] = field(default_factory=list)  # no-ops: at or before the stored version
    skipped_older: int = 0
    unordered: int = 0
    # Intents not ordered against the version they met (another partition of the same layout,
    # a source position missing), with that version: not applied, error records.
    undecided: list[tuple[Intent, Version | None]] = field(default_factory=list)
    # Key texts the writer locked that had no stored version (its placeholder rows); set by the writer.
    unversioned: frozenset[str] = frozenset()
    # Keys whose final upsert lacks unchanged-TOAST values and follows a delete of the row (its
    # version's, in the batch or stored): the target's values of those columns are not the row's.
    stale: set[Key] = field(default_factory=set)

    def by_kind(self, kind: Kind) -> list[Intent]:
        return [i for i in self.final.values() if i.kind is kind]

    def upsert_groups(self) -> dict[tuple[frozenset[str], frozenset[str]], list[Intent]]:
        """Upserts grouped by their sets of UNAVAILABLE columns and of columns their events predate
        (`Intent.absent`) (usually one group, both empty)."""
        groups: dict[tuple[frozenset[str], frozenset[str]], list[Intent]] = {}
        for intent in self.by_kind(Kind.UPSERT):
            groups.setdefault((intent.unavailable, intent.absent), []).append(intent)
        return groups


def split_at_truncates(intents: Sequence[Intent]) -> list[list[Intent]]:
    """Segments separated by truncates; each truncate is a segment of its own."""
    segments: list[list[Intent]] = [[]]
    for intent in intents:
        if intent.kind is Kind.TRUNCATE:
            segments.append([intent])
            segments.append([])
        else:
            segments[-1].append(intent)
    return [s for s in segments if s]


def truncated_before(intent: Intent, barrier: Version | None) -> bool:
    """Did the source commit `intent`'s event before the truncate `barrier`? Positions order
    events across partitions; a snapshot row is judged by its snapshot's LSN (before the
    truncate's transaction began); a row without either (an incremental snapshot's, read from the
    live table) is never before it."""
    if barrier is None or barrier.position is None:
        return False
    mine = intent.event.position
    if mine is not None:
        return mine <= barrier.position
    snapshot_lsn = intent.event.lsn
    return snapshot_lsn is not None and snapshot_lsn <= barrier.position.commit_lsn


def resolve(
    table: TablePlan,
    intents: Sequence[Intent],
    stored: Mapping[Key, Version],
    layouts: Layouts = NO_LAYOUTS,
    barrier: Version | None = None,
) -> TableWrites:
    """Apply the ordering rule and the reduction buffer to one segment (no truncates); events the
    source committed before the table's truncate `barrier` are older than any row."""
    writes = TableWrites(table)
    for intent in intents:
        current = writes.versions.get(intent.key, stored.get(intent.key))
        verdict = compare(intent.version, current, layouts)
        if verdict is not Verdict.OLDER and truncated_before(intent, barrier):
            verdict = Verdict.OLDER
        if verdict is Verdict.OLDER:
            writes.skipped_older += 1
            writes.older.append(intent)
            continue
        if verdict is Verdict.UNDECIDED:
            writes.undecided.append((intent, current))
            continue
        if verdict is Verdict.UNORDERED:
            writes.unordered += 1
        previous = writes.final.get(intent.key)
        if intent.kind is Kind.IGNORE and previous is not None:
            # A delete the spec ignores leaves the row as this batch's earlier events made it
            # (as it would if they had come in an earlier batch); only the version advances.
            writes.versions[intent.key] = intent.version
            writes.contributors.setdefault(intent.key, []).append(intent)
            continue
        if intent.unavailable and intent.kind is Kind.UPSERT and current is not None and current.deleted:
            writes.stale.add(intent.key)  # never completed from an upsert before that delete
        else:
            writes.stale.discard(intent.key)
            intent = completed(intent, previous)
        writes.final[intent.key] = intent
        writes.versions[intent.key] = intent.version
        writes.contributors.setdefault(intent.key, []).append(intent)
    return writes


def completed(intent: Intent, previous: Intent | None) -> Intent:
    """`intent` with its UNAVAILABLE (unchanged-TOAST) columns taken from `previous`, an earlier
    upsert of the same key, when both are upserts; otherwise `intent` as it is."""
    missing = intent.unavailable
    if not missing or intent.kind is not Kind.UPSERT or previous is None or previous.kind is not Kind.UPSERT:
        return intent
    merged = dict(intent.values)
    for column in missing:
        merged[column] = previous.values.get(column, UNAVAILABLE)
    return intent._replace(values=merged, unavailable=unavailable_columns(merged))


def final_versions(
    intents: Sequence[Intent], stored: Mapping[Key, Version], layouts: Layouts = NO_LAYOUTS
) -> dict[Key, Version]:
    """The version each key ends with after `intents` (what `resolve` stores), without building
    the writes: the cheap fold the writer claims new keys with."""
    out: dict[Key, Version] = {}
    for intent in intents:
        key = intent.key
        current = out.get(key)
        if current is None:
            current = stored.get(key)
        if compare(intent.version, current, layouts) in (Verdict.NEWER, Verdict.UNORDERED):
            out[key] = intent.version
    return out
