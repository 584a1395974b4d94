"""Verification that understands the mapping: target == mapped(source), row by row.

The expected target is computed by running every current source row through
the compiled plan (filters included); rows the plan rejects are error
records, not rows ("rejected by a rule", e.g. a value a cast refuses). An
expected row that is absent is one of three things: an error record the
target refused ("errored"), held back waiting for a lagging table ("held":
will land), or missing (a loss); a held update or delete (a row that differs
or is extra) is reported held too, and a refused one (an open error record
for the row's key) errored. Only the absence of all of them is clean: a
rejected or errored row is a source row the target does not have, so both
need action; `clean(accept_errors=True)` lets them through when the operator
has looked at them. A row whose error records the operator resolved (`errors
resolve`: accepted as it is) is counted as "accepted", never as a loss and
never silently: it is listed, and clean. Target rows whose stored version says the source
deleted them are excluded where the spec keeps them (soft delete, ignore).
The result counts missing, extra and mismatched rows, with the columns that
differ, and any cell holding Debezium's unchanged-TOAST placeholder.

Verifying only what changed (the cutover's window): a verify before the fence
keeps a `TableBaseline` per table (every source key with the target key it
maps to, every expected row, and the keys that differed then). After the
drain, `expect_since` rebuilds the expected key set from the source keys that
still exist (unchanged ones from the baseline, changed ones mapped again),
and `diff(..., only=...)` compares values only for keys whose source or
target row changed since the baseline's snapshots or that differed then.
Missing and extra rows are always computed over the full key sets. The
result equals a full verify when a row whose xmin the baseline's snapshot
saw is the row the baseline read (an update or delete gives a new xmin or no
row) and the mapping is a function of the source row (tables with lookups,
or with source keys that are not unique, are compared in full).

Pure: the reads are in `replicator.run.verify`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from replicator.core.intents import key_text
from replicator.core.mapping.plan import RowError, TablePlan
from replicator.core.model import TableRef
from replicator.core.values import JsonNumber, JsonText

Rows = dict[str, dict[str, Any]]  # key text -> column -> value


@dataclass(slots=True)
class TableDiff:
    target: TableRef
    expected: int = 0
    actual: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str, Any, Any]] = field(default_factory=list)  # key, column, want, got
    placeholders: list[tuple[str, str]] = field(default_factory=list)  # key, column
    rejected: list[tuple[str, str]] = field(default_factory=list)  # source key, rule id (expected)
    # absent, extra or differing rows explained by error records: open ones (need action), or
    # only ones the operator resolved (accepted as they are)
    errored: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # held back (an insert, update or delete that will land)
    target_owned: list[str] = field(default_factory=list)  # only in the target, declared target-owned

    def clean(self, accept_errors: bool = False) -> bool:
        """Nothing missing, extra, mismatched or a placeholder; nothing held; no source row kept
        out by an error record (refused by the target, or rejected by a rule) unless
        `accept_errors`: a row of the source that is not in the target is never clean unseen."""
        bad = self.missing or self.extra or self.mismatched or self.placeholders or self.held
        return not bad and (accept_errors or not (self.errored or self.rejected))

    def summary(self) -> str:
        return (
            f"{self.target}: expected={self.expected} actual={self.actual} missing={len(self.missing)} "
            f"extra={len(self.extra)} mismatched={len(self.mismatched)} "
            f"placeholders={len(self.placeholders)} held={len(self.held)} "
            f"errored={len(self.errored)} (open error records) rejected={len(self.rejected)} (by a rule)"
            + (f" accepted={len(self.accepted)} (error records resolved)" if self.accepted else "")
            + (f" target_owned={len(self.target_owned)} (declared)" if self.target_owned else "")
        )

    def mismatch_detail(self, width: int = 60) -> str:
        """Which columns differ (rows per column) and the first difference's values, each shown to
        `width` characters (longer ones are cut and say how long they are); "" when none differ."""
        if not self.mismatched:
            return ""
        per_column = Counter(column for _, column, _, _ in self.mismatched)
        key, column, want, got = self.mismatched[0]
        return (
            "mismatched columns: "
            + ", ".join(f"{c} ({n})" for c, n in per_column.most_common())
            + f"; first: key {key} {column}: source {_shown(want, width)}, target {_shown(got, width)}"
        )


def _shown(value: Any, width: int) -> str:
    text = repr(value)
    return text if len(text) <= width else f"{text[:width]}… ({len(text)} chars)"


NAN: Final = "NaN"  # numeric and float NaN: equal to itself here (a Decimal NaN never is)


def normalize(value: Any) -> Any:
    """A comparable form: numbers by value (NaN as `NAN`), instants and times of day with a
    zone in UTC, containers recursively."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | Decimal | float):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return NAN if number.is_nan() else number.normalize()
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    if isinstance(value, dt.time) and value.tzinfo is not None:  # timetz: Debezium sends it in UTC
        return dt.datetime.combine(dt.date(2000, 1, 1), value).astimezone(dt.UTC).timetz()
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return tuple(normalize(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, JsonText):  # a json/jsonb value read as its text: compared as its document
        return normalize(json.loads(value, parse_float=JsonNumber))
    return value


def same(want: Any, got: Any) -> bool:
    """Equal once normalized. JSON read as text (`JsonText`, verify's reads) with the same text is
    equal without being parsed: a document of megabytes is parsed only when the texts differ."""
    if (isinstance(want, JsonText) or isinstance(got, JsonText)) and want == got:
        return True
    return bool(normalize(want) == normalize(got))


def source_key(table: TablePlan, row: Mapping[str, Any]) -> str:
    """The text of the source columns the target key is computed from."""
    return key_text(tuple(row.get(k) for k in table.key_sources))


@dataclass(frozen=True, slots=True)
class Expectation:
    """What one source row means for one target table: its target row, or the rule that rejects
    it, or nothing (filtered out)."""

    source_key: str
    key: str | None = None
    values: dict[str, Any] | None = None
    rule_id: str | None = None


def expect(table: TablePlan, row: Mapping[str, Any]) -> Expectation:
    try:
        if not table.accepts(row):
            return Expectation(source_key(table, row))
        values = table.map_row(row)
    except RowError as err:
        return Expectation(source_key(table, row), rule_id=err.rule_id)
    return Expectation(source_key(table, row), key_text(tuple(values[k] for k in table.key)), values)


def collect(expectations: Iterable[Expectation]) -> tuple[Rows, list[tuple[str, str]]]:
    """Expected rows by target key, and (source key, rule id) of the rejected rows."""
    rows: Rows = {}
    rejected: list[tuple[str, str]] = []
    for e in expectations:
        if e.rule_id is not None:
            rejected.append((e.source_key, e.rule_id))
        elif e.key is not None and e.values is not None:
            rows[e.key] = e.values
    return rows, rejected


@dataclass(frozen=True, slots=True)
class TableBaseline:
    """A verify of one table before the fence: every source key with its expectation, and the
    target keys that differed then (in motion, or wrong: compared again after the drain)."""

    target: TableRef
    by_source_key: Mapping[str, Expectation]
    differed: frozenset[str]

    @staticmethod
    def of(table: TablePlan, expectations: list[Expectation], result: TableDiff) -> TableBaseline | None:
        """None when the table must be compared in full after the drain: its mapping reads the
        target (lookups) or two source rows share a source key."""
        by_source_key = {e.source_key: e for e in expectations}
        if table.lookup_columns or len(by_source_key) != len(expectations):
            return None
        differed = {
            *result.missing,
            *result.extra,
            *(m[0] for m in result.mismatched),
            *(p[0] for p in result.placeholders),
            *result.errored,
            *result.accepted,
            *result.held,
            *result.target_owned,
        }
        return TableBaseline(result.target, by_source_key, frozenset(differed))


def expect_since(
    baseline: TableBaseline, unchanged: Iterable[str], changed: Iterable[Expectation]
) -> tuple[Rows, list[tuple[str, str]], set[str]] | None:
    """The expected rows now: source keys whose rows did not change since the baseline keep its
    expectation, changed rows bring their own. Returns (rows, rejected, target keys to compare
    again), or None when a source key is unknown to the baseline without having changed (the
    table is then compared in full)."""
    kept: list[Expectation] = []
    for key in unchanged:
        e = baseline.by_source_key.get(key)
        if e is None:
            return None
        kept.append(e)
    fresh = list(changed)
    rows, rejected = collect([*kept, *fresh])
    again = set(baseline.differed)
    again.update(e.key for e in fresh if e.key is not None)
    return rows, rejected, again


def diff(
    table: TablePlan,
    expected: Rows,
    rejected: list[tuple[str, str]],
    actual: Rows,
    placeholder: str,
    errored: frozenset[str] = frozenset(),
    held: frozenset[str] = frozenset(),
    only: set[str] | None = None,
    accepted: frozenset[str] = frozenset(),
) -> TableDiff:
    """Compare one table. Keys in `held` (held events: an insert, update or delete that will land)
    are reported as held, never as missing, extra or mismatched; other absent, extra or differing
    keys in `errored` (open error records: the target refused the row's insert, update or delete)
    as errored, and those only in `accepted` (error records the operator resolved) as accepted.
    With `only`, values (and placeholders) are compared for those keys alone; missing and extra
    rows are always over every key."""
    result = TableDiff(table.target, expected=len(expected), actual=len(actual), rejected=rejected)
    marker = placeholder.encode()
    for key, row in actual.items() if only is None else ((k, actual[k]) for k in sorted(only) if k in actual):
        for column, value in row.items():
            if value in (placeholder, marker) or (isinstance(value, list) and placeholder in value):
                result.placeholders.append((key, column))
    absent = set(expected) - set(actual)
    only_target = set(actual) - set(expected)
    both = set(expected) & set(actual)
    differing: set[str] = set()
    for key in sorted(both if only is None else both & only):
        want, got = expected[key], actual[key]
        for column in want:
            if not same(want[column], got.get(column)):
                result.mismatched.append((key, column, want[column], got.get(column)))
                differing.add(key)
    extra = set() if table.target_owned_rows else only_target
    unlike = absent | extra | differing
    result.held = sorted(unlike & held)
    result.errored = sorted((unlike - held) & errored)
    result.accepted = sorted((unlike - held - errored) & accepted)
    explained = held | errored | accepted
    result.mismatched = [m for m in result.mismatched if m[0] not in explained]
    result.missing = sorted(absent - explained)
    if table.target_owned_rows:
        result.target_owned = sorted(only_target)
    else:
        result.extra = sorted(extra - explained)
    return result
