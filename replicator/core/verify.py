"""Verification that understands the mapping: target == mapped(source), row by row.

The expected target is computed by running every current source row through
the compiled plan (filters included); rows the plan rejects are expected
error records, not rows ("rejected by a rule": expected). An expected row
that is absent is one of three things: an error record the target refused
("errored": needs action), held back waiting for a lagging table ("held":
will land), or missing (a loss). Only the absence of all of them is clean;
`clean(accept_errors=True)` lets error records through when the operator has
looked at them. Target rows whose stored version says the source
deleted them are excluded where the spec keeps them (soft delete, ignore).
The result counts missing, extra and mismatched rows, with the columns that
differ, and any cell holding Debezium's unchanged-TOAST placeholder.

Pure: the reads are in `replicator.run.verify`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from replicator.core.intents import key_text
from replicator.core.mapping.plan import Plan, RowError, TablePlan
from replicator.core.model import TableRef

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
    errored: list[str] = field(default_factory=list)  # absent: an error record (needs action)
    held: list[str] = field(default_factory=list)  # absent: held back, waiting for a lagging table
    target_owned: list[str] = field(default_factory=list)  # only in the target, declared target-owned

    def clean(self, accept_errors: bool = False) -> bool:
        """Nothing missing, extra, mismatched or a placeholder; nothing held; no error record
        unless `accept_errors`."""
        bad = self.missing or self.extra or self.mismatched or self.placeholders or self.held
        return not bad and (accept_errors or not self.errored)

    def summary(self) -> str:
        return (
            f"{self.target}: expected={self.expected} actual={self.actual} missing={len(self.missing)} "
            f"extra={len(self.extra)} mismatched={len(self.mismatched)} "
            f"placeholders={len(self.placeholders)} held={len(self.held)} "
            f"errored={len(self.errored)} (needs action) rejected={len(self.rejected)} (by a rule, expected)"
            + (f" target_owned={len(self.target_owned)} (declared)" if self.target_owned else "")
        )


def normalize(value: Any) -> Any:
    """A comparable form: numbers by value, instants in UTC, containers recursively."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | Decimal):
        return Decimal(value).normalize()
    if isinstance(value, float):
        return Decimal(repr(value)).normalize()
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return tuple(normalize(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def expected_rows(
    plan: Plan, source: Mapping[TableRef, Iterable[Mapping[str, Any]]]
) -> dict[TableRef, tuple[Rows, list[tuple[str, str]]]]:
    out: dict[TableRef, tuple[Rows, list[tuple[str, str]]]] = {}
    for table in plan.tables:
        rows: Rows = {}
        rejected: list[tuple[str, str]] = []
        for row in source.get(table.source, ()):
            try:
                if not table.accepts(row):
                    continue
                values = table.map_row(row)
            except RowError as err:
                rejected.append((key_text(tuple(row.get(k) for k in table.key_sources)), err.rule_id))
                continue
            rows[key_text(tuple(values[k] for k in table.key))] = values
        out[table.target] = (rows, rejected)
    return out


def diff(
    table: TablePlan,
    expected: Rows,
    rejected: list[tuple[str, str]],
    actual: Rows,
    placeholder: str,
    errored: frozenset[str] = frozenset(),
    held: frozenset[str] = frozenset(),
) -> TableDiff:
    """Compare one table. Absent keys in `errored` (error records) or `held` (held events) are
    reported as such, never as missing."""
    result = TableDiff(table.target, expected=len(expected), actual=len(actual), rejected=rejected)
    marker = placeholder.encode()
    for key, row in actual.items():
        for column, value in row.items():
            if value in (placeholder, marker) or (isinstance(value, list) and placeholder in value):
                result.placeholders.append((key, column))
    absent = set(expected) - set(actual)
    result.held = sorted(absent & held)
    result.errored = sorted((absent - held) & errored)
    result.missing = sorted(absent - held - errored)
    only_target = sorted(set(actual) - set(expected))
    if table.target_owned_rows:
        result.target_owned = only_target
    else:
        result.extra = only_target
    for key in sorted(set(expected) & set(actual)):
        want, got = expected[key], actual[key]
        for column in want:
            if normalize(want[column]) != normalize(got.get(column)):
                result.mismatched.append((key, column, want[column], got.get(column)))
    return result
