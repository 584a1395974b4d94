"""The compiled mapping plan: immutable, prebuilt, and the only thing the hot loop reads.

Invariants:
- Every object here is a frozen dataclass holding tuples, never lists; a plan
  built once is shared by all batches and threads.
- Column functions never see YAML and never build SQL. If any source column a
  rule reads is `UNAVAILABLE` (unchanged TOAST), the rule yields `UNAVAILABLE`
  without transforming it; the writer then leaves that target column alone.
- A value problem raises `RowError(rule_id, message)` naming the rule; nothing
  is dropped or changed silently. A declared truncation (`on_narrowing:
  truncate`) is applied AND reported as a `Narrowing` by `map_row_noted`, and
  each truncating rule is listed in `Plan.warnings`.
- Key columns are never `UNAVAILABLE`; a key that cannot be computed is a RowError.
- A lookup rule yields a `LookupRef` (which lookup, and the source values to
  match) instead of a value: the plan only describes the read; the writer
  resolves every `LookupRef` of a batch against the target, set-based, before
  any row is written (`target.lookups`). Lookups never feed key columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from replicator.core.errors import ReplicatorError
from replicator.core.mapping.statements import LookupStatements, TableStatements
from replicator.core.model import UNAVAILABLE, Row, TableRef

#: Reserved row key under which `DeletePolicy.values` passes the event's source
#: timestamp to `{source_ts: true}` rules. NUL cannot occur in a PostgreSQL name.
SOURCE_TS = "\x00source_ts"


class RowError(ReplicatorError):
    """A source row that a mapping rule cannot turn into a target value.

    `message` is one line: what is wrong with the value and how to fix it.
    """

    def __init__(self, rule_id: str, message: str) -> None:
        super().__init__(rule_id, message)
        self.rule_id = rule_id
        self.message = message

    def __str__(self) -> str:
        return f"{self.rule_id}: {self.message}"


@dataclass(frozen=True, slots=True)
class Narrowing:
    """A value the target does not get exactly, reported, never silent: a declared, applied
    truncation (`truncated`), or a column left as it was because one of the several source
    columns it combines arrived as an unchanged TOAST placeholder (`unavailable`)."""

    rule_id: str
    target: str
    message: str
    kind: Literal["truncated", "unavailable"] = "truncated"


ColumnEval = Callable[[Row, "list[Narrowing] | None"], Any]


@dataclass(frozen=True, slots=True, eq=False)
class LookupPlan:
    """One lookup rule: read `take` from `table` where its `match` columns equal the source
    values; `on_missing` decides a value that has no row (`reject`: an error record naming
    `rule_id`; `null`)."""

    rule_id: str
    table: TableRef
    match: tuple[str, ...]
    sources: tuple[str, ...]  # the source column for each match column, in the same order
    take: str
    on_missing: Literal["reject", "null"]
    statements: LookupStatements

    def describe(self) -> str:
        pairs = ", ".join(f"{m} = {s}" for m, s in zip(self.match, self.sources, strict=True))
        return f"lookup {self.take} from {self.table} where {pairs}, on_missing {self.on_missing}"


class LookupRef(NamedTuple):
    """The value of a lookup column before the writer resolves it: which lookup, which values."""

    lookup: LookupPlan
    values: tuple[Any, ...]

    def __str__(self) -> str:
        return f"lookup({self.lookup.table}.{self.lookup.take} for {list(self.values)})"


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """One target column and the function that computes it from a source row.

    `fn(row)` returns the target value, `UNAVAILABLE`, or raises RowError.
    `evaluate(row, notes)` is the same and also appends any truncation
    reports to `notes`.
    """

    rule_id: str
    target: str
    target_type: str
    sources: tuple[str, ...]
    fn: Callable[[Row], Any]
    is_key: bool
    evaluate: ColumnEval = field(repr=False)
    truncates: bool = False
    describe: str = ""
    lookup: LookupPlan | None = None


@dataclass(frozen=True, slots=True)
class DeletePolicy:
    """What a source delete does. `set_columns` (soft deletes only) compute the
    target values from the event's `before` row and its source timestamp."""

    kind: Literal["hard", "soft", "ignore"]
    rule_id: str
    set_columns: tuple[ColumnPlan, ...] = ()

    def values(self, before: Row, source_ts: datetime) -> dict[str, Any]:
        """Target values for a soft delete (raises RowError)."""
        row = {**before, SOURCE_TS: source_ts}
        return {c.target: c.fn(row) for c in self.set_columns}


@dataclass(frozen=True, slots=True)
class TruncatePolicy:
    """What a source TRUNCATE does to the target: `truncate` (TRUNCATE), `delete`
    (DELETE FROM), `ignore`, or `error` (stop: a human decides)."""

    kind: Literal["truncate", "delete", "ignore", "error"]
    rule_id: str


@dataclass(frozen=True, slots=True)
class SchemaChangePolicy:
    """What a source schema change does to the table (`core.schema_change`): `stop` its
    partitions before the first event that does not match, `ignore_new_columns` (new nullable
    columns; anything else stops), or `record` (no check: events become error records)."""

    kind: Literal["stop", "ignore_new_columns", "record"]
    rule_id: str


@dataclass(frozen=True, slots=True)
class TablePlan:
    rule_id: str
    source: TableRef
    topic: str
    target: TableRef
    key: tuple[str, ...]
    key_sources: tuple[str, ...]
    columns: tuple[ColumnPlan, ...]
    filter: Callable[[Row], bool] | None
    filter_rule_id: str
    delete: DeletePolicy
    truncate: TruncatePolicy
    unmapped: Literal["fail", "ignore"]
    known_source_columns: frozenset[str]
    statements: TableStatements
    filter_describe: str = ""
    target_owned_rows: bool = False  # rows only in the target are expected (see spec)
    schema_change: SchemaChangePolicy = SchemaChangePolicy("stop", "")
    # Each source column a rule reads (columns, key, filter, soft-delete set), with the ids of those rules.
    read_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _key_columns: tuple[ColumnPlan, ...] = field(init=False, repr=False, compare=False)
    _evaluators: tuple[tuple[str, ColumnEval], ...] = field(init=False, repr=False, compare=False)
    lookup_columns: tuple[ColumnPlan, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_target = {c.target: c for c in self.columns}
        object.__setattr__(self, "_key_columns", tuple(by_target[k] for k in self.key))
        object.__setattr__(self, "_evaluators", tuple((c.target, c.evaluate) for c in self.columns))
        object.__setattr__(self, "lookup_columns", tuple(c for c in self.columns if c.lookup is not None))

    def accepts(self, row: Row) -> bool:
        """True when the row passes the table filter (raises RowError if the
        filter reads an UNAVAILABLE column)."""
        return self.filter is None or self.filter(row)

    def map_row_noted(self, row: Row) -> tuple[dict[str, Any], tuple[Narrowing, ...]]:
        """Target values (in target column order) plus the truncations applied."""
        notes: list[Narrowing] = []
        out = {target: evaluate(row, notes) for target, evaluate in self._evaluators}
        for c in self._key_columns:
            if out[c.target] is UNAVAILABLE or out[c.target] is None:
                what = "unavailable" if out[c.target] is UNAVAILABLE else "null"
                raise RowError(
                    c.rule_id,
                    f"key column {c.target!r} is {what}; fix: map the key from a NOT NULL source key column",
                )
        return out, tuple(notes)

    def map_row(self, row: Row) -> dict[str, Any]:
        """Target values (in target column order); see `map_row_noted` for reports."""
        return self.map_row_noted(row)[0]

    def map_key(self, row: Row) -> tuple[Any, ...]:
        """The target key tuple from a source row or a Debezium key struct."""
        key = tuple(c.fn(row) for c in self._key_columns)
        for c, v in zip(self._key_columns, key, strict=True):
            if v is UNAVAILABLE or v is None:
                raise RowError(
                    c.rule_id,
                    f"key column {c.target!r} cannot be computed from "
                    f"{dict(row)!r}; fix: the event key must carry {c.sources}",
                )
        return key

    def unknown_columns(self, row: Row) -> set[str]:
        """Source columns in `row` that the spec neither maps nor ignores."""
        known = self.known_source_columns
        return set() if known.issuperset(row) else {k for k in row if k not in known}


@dataclass(frozen=True, slots=True)
class ForeignKeyPlan:
    """A foreign key of a mapped target table (`child`), from the target catalog."""

    name: str
    child: TableRef
    columns: tuple[str, ...]
    parent: TableRef
    ref_columns: tuple[str, ...]
    deferrable: bool = False
    cascades: bool = False  # ON DELETE CASCADE


def delete_order(order: Sequence[TableRef], fks: Iterable[ForeignKeyPlan]) -> tuple[TableRef, ...]:
    """The order a batch deletes its tables' rows in (`order`: parents first, `apply_order`).

    Children before their parents (a NO ACTION or RESTRICT key refuses the parent's delete while a
    child row references it), except along an ON DELETE CASCADE key: there the parent goes first,
    the order in which PostgreSQL's cascade locks the rows. A writer deleting rows of both tables
    then locks them as a concurrent cascade from a grandparent does (another instance deleting
    it), instead of the reverse (a deadlock, retried); the children's own deletes find the rows
    the cascade took gone: the same rows end deleted. Every table that must go before a child a
    parent's delete cascades into goes before that parent too. No such key, or constraints that
    cannot all hold (a cycle): children first throughout, `order` reversed."""
    backwards = tuple(reversed(order))
    among = set(backwards)
    keys = [fk for fk in fks if fk.child != fk.parent and fk.child in among and fk.parent in among]
    if not any(fk.cascades for fk in keys):
        return backwards
    first: dict[TableRef, set[TableRef]] = {t: set() for t in backwards}  # table -> what goes before it
    cascade: dict[TableRef, set[TableRef]] = {t: set() for t in backwards}  # parent -> its cascading children
    for fk in keys:
        if fk.cascades:
            first[fk.child].add(fk.parent)
            cascade[fk.parent].add(fk.child)
        else:
            first[fk.parent].add(fk.child)
    for parent in backwards:
        reached: set[TableRef] = set()
        todo = list(cascade[parent])
        while todo:
            t = todo.pop()
            if t not in reached:
                reached.add(t)
                todo.extend(cascade[t])
        for t in reached:
            first[parent] |= {
                fk.child for fk in keys if fk.parent == t and not fk.cascades and fk.child not in reached
            }
    done: list[TableRef] = []
    pending = list(backwards)
    while pending:
        ready = next((t for t in pending if first[t] <= set(done)), None)
        if ready is None:
            return backwards
        done.append(ready)
        pending.remove(ready)
    return tuple(done)


@dataclass(frozen=True, slots=True)
class Plan:
    spec_path: str
    tables: tuple[TablePlan, ...]
    apply_order: tuple[TableRef, ...]
    warnings: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKeyPlan, ...] = ()
    topic_prefix: str = ""  # the connector's topic.prefix (the spec's)
    _by_topic: Mapping[str, tuple[TablePlan, ...]] = field(init=False, repr=False, compare=False)
    _by_stream: Mapping[tuple[str, TableRef], tuple[TablePlan, ...]] = field(
        init=False, repr=False, compare=False
    )  # (topic, source table) -> its rules
    _feeders: Mapping[TableRef, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _fks: Mapping[tuple[TableRef, str], ForeignKeyPlan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[TablePlan]] = {}
        streams: dict[tuple[str, TableRef], list[TablePlan]] = {}
        feeders: dict[TableRef, set[str]] = {}
        for t in self.tables:
            index.setdefault(t.topic, []).append(t)
            streams.setdefault((t.topic, t.source), []).append(t)
            feeders.setdefault(t.target, set()).add(t.topic)
        object.__setattr__(self, "_by_topic", {k: tuple(v) for k, v in index.items()})
        object.__setattr__(self, "_by_stream", {k: tuple(v) for k, v in streams.items()})
        object.__setattr__(self, "_feeders", {k: tuple(sorted(v)) for k, v in feeders.items()})
        object.__setattr__(self, "_fks", {(fk.child, fk.name): fk for fk in self.foreign_keys})

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_topic))

    @property
    def lookups(self) -> tuple[LookupPlan, ...]:
        """Every lookup rule of the plan (the writer prepares a stage for each)."""
        return tuple(c.lookup for t in self.tables for c in t.lookup_columns if c.lookup is not None)

    def tables_for_topic(self, topic: str) -> tuple[TablePlan, ...]:
        return self._by_topic.get(topic, ())

    def tables_for(self, topic: str, source: TableRef) -> tuple[TablePlan, ...]:
        """The rules an event of `source` on `topic` feeds: a topic can carry several source tables
        (Debezium gives `"dup x"` and `dup_x` one topic; a routing transform merges tables), and
        each table's events feed only its own rules."""
        return self._by_stream.get((topic, source), ())

    def feeding_topics(self, target: TableRef) -> tuple[str, ...]:
        """The topics whose events write `target` (none: the spec does not replicate it)."""
        return self._feeders.get(target, ())

    def foreign_key(self, child: TableRef, name: str) -> ForeignKeyPlan | None:
        return self._fks.get((child, name))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description (for `replicator mapping explain --json`)."""
        return {
            "spec": self.spec_path,
            "apply_order": [str(t) for t in self.apply_order],
            "warnings": list(self.warnings),
            "tables": [
                {
                    "id": t.rule_id,
                    "topic": t.topic,
                    "source": str(t.source),
                    "target": str(t.target),
                    "key": dict(zip(t.key, t.key_sources, strict=True)),
                    "filter": {"id": t.filter_rule_id, "rule": t.filter_describe}
                    if t.filter is not None
                    else None,
                    "delete": {
                        "id": t.delete.rule_id,
                        "policy": t.delete.kind,
                        "set": [_column_json(c) for c in t.delete.set_columns],
                    },
                    "truncate": {"id": t.truncate.rule_id, "policy": t.truncate.kind},
                    "unmapped_source_columns": t.unmapped,
                    "on_schema_change": {"id": t.schema_change.rule_id, "policy": t.schema_change.kind},
                    "known_source_columns": sorted(t.known_source_columns),
                    "columns": [_column_json(c) for c in t.columns],
                }
                for t in self.tables
            ],
        }

    def explain(self) -> str:
        """Readable text: one block per table rule, one line per column rule."""
        lines = [f"plan from {self.spec_path}", "apply order: " + ", ".join(str(t) for t in self.apply_order)]
        for t in self.tables:
            lines.append("")
            lines.append(f"[{t.rule_id}] {t.source} -> {t.target}")
            lines.append(f"  topic: {t.topic}")
            lines.append(
                "  key: " + ", ".join(f"{k} <- {s}" for k, s in zip(t.key, t.key_sources, strict=True))
            )
            if t.filter is not None:
                lines.append(f"  filter [{t.filter_rule_id}]: {t.filter_describe}")
            lines.append(f"  delete [{t.delete.rule_id}]: {t.delete.kind}")
            for c in t.delete.set_columns:
                lines.append(f"    set {c.target} = {c.describe}")
            lines.append(f"  truncate [{t.truncate.rule_id}]: {t.truncate.kind}")
            lines.append(f"  unmapped source columns: {t.unmapped}")
            lines.append(f"  on schema change [{t.schema_change.rule_id}]: {t.schema_change.kind}")
            for c in t.columns:
                flag = " (key)" if c.is_key else ""
                lines.append(f"  {c.target} {c.target_type}{flag} <- {c.describe} [{c.rule_id}]")
        if self.warnings:
            lines.append("")
            lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def _column_json(c: ColumnPlan) -> dict[str, Any]:
    return {
        "id": c.rule_id,
        "target": c.target,
        "type": c.target_type,
        "sources": list(c.sources),
        "key": c.is_key,
        "rule": c.describe,
        "truncates": c.truncates,
    }
