"""Source schema changes: when an event's columns stop matching the spec, stop its table. Pure.

Logical decoding carries no DDL: after `ALTER TABLE ... ADD / DROP / RENAME
COLUMN` or `ALTER COLUMN ... TYPE` the later events of the table simply carry
another row schema. Every event brings its `SourceShape` (the row struct's
columns, Connect types and nullability, one object per schema); `judge`
compares it with what a table rule reads and names, under the table's
`on_schema_change` policy:

- `stop` (default): a column the rule reads is missing (dropped, renamed), or
  a column it does not name appears (added, renamed; only under
  `unmapped_source_columns: fail`): the event is not applied and its partition
  stops in front of it;
- `ignore_new_columns`: a new *nullable* column the rule does not name is
  ignored (the row maps without it); a new NOT NULL column, or a read column
  missing, still stops;
- `record`: no check (the behaviour before per-table state): such events fail
  their rules and become error records.
A retyped read column is a *schema-change event* the run layer re-checks
against the live catalog (`run.schema_guard`); when the spec no longer checks
there, it is a stop too (`Drift.retyped`).

The invariant: the checkpoint of a stopped partition never passes the first
event that did not match. The argument:
1. `cut` takes, per partition, the first event of a batch judged to stop, and
   removes it and everything after it in that partition from the batch
   (events, decode failures, the commit LSN and event time they would carry
   into the checkpoint); the partition's next offset becomes that event's
   offset. The batch's transaction stores exactly that next offset with its
   rows, and the stop (`Stop`) beside it, in one commit.
2. The loop pauses the partition and drops whatever was already fetched of it.
   Nothing of it is applied until the partition is assigned again: then it is
   read from the target-stored checkpoint, i.e. from the stopping event, and
   judged again by whichever instance owns it now (after a restart, a
   rebalance, another instance of the group). The judgement of a column-set
   change depends on the event and the plan only, so every instance with the
   same spec stops at the same offset; an instance with a fixed spec applies
   it and everything after it, in Kafka order, through the guarded apply (so
   the events held in Kafka all land: nothing lost, no mass error records).
3. A type verdict also reads the live catalog; it can only make a partition
   stop (never make an event pass that a column-set judgement stops), so
   point 1 holds for it too.
4. FK children of a stopped table stay *held*, never errored: a held row is
   an error only when every partition feeding its parent's table is covered
   past the row's judgement point (`core.holding`), and a stopped partition
   neither advances its next offset past the stopping event nor its applied
   commit LSN past the events before it; Connect's marks never cover it
   either, because its end offset lies beyond its applied offset.
5. One source event writes all its target tables or none, and a topic
   partition carries one source table, so a stop holds every target table
   fed by that source table (`Stop.targets`); other topics keep flowing.

Events older than a change, mapped by the spec fixed for it (`older`): rows
held before the change and error records retried after it carry the columns
the table had when they were written. `SourceNow` is the source catalog read
after the WAL position `lsn` (the position is read first, the catalog in a
later statement, so every DDL committed before it is visible). An event whose
change LSN is below `lsn` was written under a column set the catalog's is a
successor of: DDL on a table waits for the writers of its rows to commit, so
any DDL the event reflects committed before the event's change, hence before
`lsn`. So, against that catalog:
- a column the event carries and the table no longer has was dropped (or
  renamed) after the event: a spec that no longer names it is what the
  operator decided, and the column is ignored (not `<id>.unmapped`);
- a column the rule reads that the event lacks and the table has now was
  added after the event: the row had no such value then, so the event writes
  the row without it (`Older.added`: an update leaves the target's value, an
  insert gets the target column's DEFAULT, as the source's existing rows got
  the source's). Not when the event also carries a column the table lost
  that the spec does not list in `ignore_source_columns` (a RENAME looks
  exactly so, and its value would be dropped silently; listing the column is
  the operator's word that it was dropped), nor for a column the key or the
  filter reads (those stay errors).
An event at or after `lsn` (or without an LSN) gets none of this: a column
the catalog does not know may be newer than the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from replicator.core.mapping.plan import TablePlan
from replicator.core.model import Batch, ChangeEvent, KafkaRef, Op, Partition, SourceShape, TableRef


@dataclass(frozen=True, slots=True)
class Drift:
    """How an event's source columns differ from what a table rule expects, when that stops it."""

    rule_id: str  # "<table id>.on_schema_change"
    source: TableRef
    target: TableRef
    missing: tuple[str, ...] = ()  # read by the rule, absent from the event (dropped or renamed)
    added: tuple[str, ...] = ()  # in the event, named nowhere in the rule (new or renamed)
    retyped: tuple[str, ...] = ()  # read columns whose new type the live check refuses
    problem: str = ""  # the live check's first error for a retyped column
    spec: str = ""  # the spec file to fix
    remedy: str = ""  # the fix, when it is not in the spec (e.g. the live catalog could not be read)

    @property
    def reason(self) -> str:
        """One line: what changed in the source."""
        parts = []
        if self.missing:
            parts.append(f"{_names(self.missing)} read by the spec {_is(self.missing)} not in the event")
        if self.added:
            parts.append(f"{_names(self.added)} {_is(self.added)} new to the spec")
        if self.retyped and self.remedy:
            parts.append(f"{_names(self.retyped)} changed type, not judged: {self.problem}")
        elif self.retyped:
            parts.append(f"{_names(self.retyped)} no longer {_fit(self.retyped)} the spec ({self.problem})")
        if self.missing and self.added:
            tail = " (renamed or dropped)"
        elif self.missing:
            tail = f" (dropped or renamed, or the event is older than {_them_it(self.missing)})"
        else:
            tail = ""
        return f"source {self.source} changed: " + "; ".join(parts) + tail

    @property
    def fix(self) -> str:
        """One line: what to change, then how to go on."""
        if self.remedy:
            return self.remedy
        steps = []
        if self.missing and self.added:
            steps.append(
                f"read the columns {self.source} has now instead of {', '.join(self.missing)} (if"
                f" {self.source} has {', '.join(self.missing)} now and dropped {', '.join(self.added)},"
                f" not renamed {_them(self.added)}: list {', '.join(self.added)} in"
                " ignore_source_columns, and events older than both map without"
                f" {', '.join(self.missing)})"
            )
        elif self.missing:
            steps.append(
                f"if {self.source} has {', '.join(self.missing)} now, the event was written before"
                f" {_them_it(self.missing)} existed (a replay cannot skip it: it only moves back):"
                f" list {', '.join(self.missing)} in ignore_source_columns instead of reading"
                f" {_them(self.missing)} until `replicator drain` succeeds (the table is past the ALTER),"
                f" then read {_them(self.missing)} again, restart `replicator run` and reload the table"
                f" (replicator reload --table {self.source}); else read the columns {self.source} has now"
                f" instead of {', '.join(self.missing)}"
            )
        if self.added:
            steps.append(
                f"map {', '.join(self.added)} or list {_them(self.added)} in ignore_source_columns"
                " (or on_schema_change: ignore_new_columns for nullable ones)"
            )
        if self.retyped:
            steps.append(f"make the rules reading {', '.join(self.retyped)} fit their new type")
        return (
            f"{' and '.join(steps)} in table {self.rule_id.rsplit('.', 1)[0]} of {self.spec or 'the spec'}"
            " (`replicator mapping check` shows it), then restart `replicator run`: the held events are"
            " applied"
        )


def _names(columns: Sequence[str]) -> str:
    return ("column " if len(columns) == 1 else "columns ") + ", ".join(columns)


def _is(columns: Sequence[str]) -> str:
    return "is" if len(columns) == 1 else "are"


def _fit(columns: Sequence[str]) -> str:
    return "fits" if len(columns) == 1 else "fit"


def _them_it(columns: Sequence[str]) -> str:
    return "that column" if len(columns) == 1 else "those columns"


def _them(columns: Sequence[str]) -> str:
    return "it" if len(columns) == 1 else "them"


def judge(table: TablePlan, shape: SourceShape, spec: str = "") -> Drift | None:
    """The column-set drift of `shape` against `table` that stops it (None: it matches, or the
    policy is `record`, or all that is new are nullable columns `ignore_new_columns` ignores).
    `spec` is the spec file the fix names."""
    policy = table.schema_change.kind
    if policy == "record":
        return None
    names = shape.names
    missing = tuple(sorted(c for c in table.read_by if c not in names))
    added: tuple[str, ...] = ()
    if table.unmapped == "fail":
        known = table.known_source_columns
        new = sorted(c for c in names if c not in known)
        if policy == "ignore_new_columns":
            new = [c for c in new if not _nullable(shape, c)]
        added = tuple(new)
    if not missing and not added:
        return None
    return Drift(table.schema_change.rule_id, table.source, table.target, missing, added, spec=spec)


@dataclass(frozen=True, slots=True)
class SourceNow:
    """The mapped source tables' column names as the live catalog had them after the source's WAL
    position `lsn` (read before the catalog: see the module)."""

    lsn: int
    columns: Mapping[TableRef, frozenset[str]]


class Older(NamedTuple):
    """What the catalog read after an event says its row lacks or carries that the table changed
    since (see the module)."""

    gone: frozenset[str]  # in the event, not in the table now: dropped (or renamed) since
    added: frozenset[str]  # read by the rule, not in the event, in the table now: added since


def older(
    table: TablePlan, event: ChangeEvent, row: Mapping[str, Any], now: SourceNow | None
) -> Older | None:
    """How `row` (of `event`, an insert, update or read) predates the source table's columns now,
    or None: it does not, or that cannot be known (no catalog, the event not older than it)."""
    if now is None or event.lsn is None or event.lsn >= now.lsn:
        return None
    columns = now.columns.get(table.source)
    if columns is None or (columns.issuperset(row) and row.keys() >= table.read_by.keys()):
        return None  # the common case, per event of a backlog older than the run: two C-level checks
    gone = frozenset(c for c in row if c not in columns)
    added: frozenset[str] = frozenset()
    # A column gone beside one added may be a RENAME (its value is not the default), unless the
    # spec lists it in ignore_source_columns: the operator's word that it was dropped.
    if all(c in table.known_source_columns and c not in table.read_by for c in gone):
        keyed = set(table.key_sources)
        added = frozenset(
            c
            for c, readers in table.read_by.items()
            if c not in row and c in columns and c not in keyed and table.filter_rule_id not in readers
        )
    if not gone and not added:
        return None
    return Older(gone, added)


def ignored_columns(table: TablePlan, shape: SourceShape | None) -> frozenset[str]:
    """The new columns of `shape` that `ignore_new_columns` lets a row carry unmapped."""
    if shape is None or table.schema_change.kind != "ignore_new_columns":
        return frozenset()
    return frozenset(c for c in shape.names if c not in table.known_source_columns and _nullable(shape, c))


def _nullable(shape: SourceShape, name: str) -> bool:
    column = shape.column(name)
    return column is not None and column.optional


def retyped(baseline: SourceShape, shape: SourceShape, columns: Iterable[str]) -> tuple[str, ...]:
    """The `columns` present in both shapes whose declared type differs."""
    out = []
    for name in sorted(set(columns)):
        before, now = baseline.column(name), shape.column(name)
        if before is not None and now is not None and before.type != now.type:
            out.append(name)
    return tuple(out)


def checked_columns(tables: Iterable[TablePlan]) -> frozenset[str]:
    """The source columns whose type matters: read by a table whose policy checks."""
    return frozenset(c for t in tables if t.schema_change.kind != "record" for c in t.read_by)


@dataclass(frozen=True, slots=True)
class Stop:
    """A partition stopped in front of the first event that did not match (see the module's argument)."""

    ref: KafkaRef  # the stopping event: the partition's checkpoint stays at its offset
    source: TableRef
    targets: tuple[TableRef, ...]  # every target table the topic feeds: all of them stop
    rule_id: str
    reason: str
    fix: str
    shape: SourceShape | None

    @property
    def partition(self) -> Partition:
        return (self.ref.topic, self.ref.partition)

    def line(self) -> str:
        """The one line a person reads (log, status)."""
        tables = ", ".join(str(t) for t in self.targets)
        return f"{tables} stopped at {self.ref} ({self.rule_id}): {self.reason}; fix: {self.fix}"


Verdict = Callable[[ChangeEvent], Stop | None]


def stop_for(event: ChangeEvent, tables: Sequence[TablePlan], drifts: Sequence[Drift]) -> Stop | None:
    """The stop of `event` given the drifts its tables found (None: none stops it)."""
    if not drifts:
        return None
    first = drifts[0]
    return Stop(
        ref=event.ref,
        source=first.source,
        targets=tuple(t.target for t in tables),
        rule_id=first.rule_id,
        reason=first.reason,
        fix=first.fix,
        shape=event.shape,
    )


def cut(batch: Batch, verdict: Verdict) -> tuple[Batch, tuple[Stop, ...]]:
    """The batch without each stopped partition's first non-matching event and all after it, and
    those stops. A partition's next offset becomes its stopping event's offset (point 1)."""
    stops: dict[Partition, Stop] = {}
    kept = []
    for event in batch.events:
        p = (event.ref.topic, event.ref.partition)
        if p in stops:
            continue
        if event.op is not Op.TRUNCATE:
            stop = verdict(event)
            if stop is not None:
                stops[p] = stop
                continue
        kept.append(event)
    if not stops:
        return batch, ()
    out = Batch(
        events=kept,
        failures=[
            f
            for f in batch.failures
            if (s := stops.get((f.ref.topic, f.ref.partition))) is None or f.ref.offset < s.ref.offset
        ],
        next_offsets={p: (stops[p].ref.offset if p in stops else o) for p, o in batch.next_offsets.items()},
        counts=batch.counts,
        size_bytes=batch.size_bytes,
    )
    return out, tuple(stops.values())
