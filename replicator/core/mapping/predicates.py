"""Row filters: structured predicates compiled into plain functions.

Invariants:
- A filter is data (`all`/`any`/`not` over `{column, op, value}`), never text
  to evaluate; compiling it yields a function of the source row.
- Null semantics are explicit, not SQL's three-valued logic: `eq`/`ne`/`in`/
  `not_in` compare null like any value (`null ne "XX"` is true); the ordering
  ops `lt`/`le`/`gt`/`ge` are false for null; `is_null`/`not_null` test null.
- A filter reading an `UNAVAILABLE` column (unchanged TOAST) or comparing
  incomparable types raises RowError(filter rule id): a row is never dropped
  or kept by accident.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from replicator.core.mapping.notation import flow
from replicator.core.mapping.plan import RowError
from replicator.core.mapping.spec import AllOf, AnyOf, Compare, NotOf, Predicate
from replicator.core.model import UNAVAILABLE, Row

RowPredicate = Callable[[Row], bool]

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


def predicate_columns(pred: Predicate) -> frozenset[str]:
    """Source columns a predicate reads."""
    if isinstance(pred, AllOf):
        return frozenset().union(*(predicate_columns(p) for p in pred.all))
    if isinstance(pred, AnyOf):
        return frozenset().union(*(predicate_columns(p) for p in pred.any))
    if isinstance(pred, NotOf):
        return predicate_columns(pred.not_)
    return frozenset({pred.column})


def describe(pred: Predicate) -> str:
    """Readable one-line form, for explain output."""
    if isinstance(pred, AllOf):
        return "(" + " AND ".join(describe(p) for p in pred.all) + ")"
    if isinstance(pred, AnyOf):
        return "(" + " OR ".join(describe(p) for p in pred.any) + ")"
    if isinstance(pred, NotOf):
        return f"NOT {describe(pred.not_)}"
    if pred.op in ("is_null", "not_null"):
        return f"{pred.column} {pred.op}"
    return f"{pred.column} {pred.op} {flow(pred.value, quote=True)}"


def compile_predicate(pred: Predicate, rule_id: str) -> RowPredicate:
    """A function row -> bool; raises RowError(rule_id) when it cannot decide."""
    if isinstance(pred, AllOf):
        parts = tuple(compile_predicate(p, rule_id) for p in pred.all)
        return lambda row: all(p(row) for p in parts)
    if isinstance(pred, AnyOf):
        parts = tuple(compile_predicate(p, rule_id) for p in pred.any)
        return lambda row: any(p(row) for p in parts)
    if isinstance(pred, NotOf):
        inner = compile_predicate(pred.not_, rule_id)
        return lambda row: not inner(row)
    return _compare(pred, rule_id)


def _compare(pred: Compare, rule_id: str) -> RowPredicate:
    column, op, value = pred.column, pred.op, pred.value

    def read(row: Row) -> Any:
        if column not in row:
            raise RowError(
                rule_id,
                f"filter column {column!r} is missing from the row; "
                "fix: filter on a column the source table has",
            )
        v = row[column]
        if v is UNAVAILABLE:
            raise RowError(
                rule_id,
                f"filter column {column!r} is unavailable (unchanged "
                "TOAST); fix: filter on a small column or set REPLICA IDENTITY FULL",
            )
        return v

    if op == "is_null":
        return lambda row: read(row) is None
    if op == "not_null":
        return lambda row: read(row) is not None
    if op == "eq":
        return lambda row: bool(read(row) == value)
    if op == "ne":
        return lambda row: bool(read(row) != value)
    if op in ("in", "not_in"):
        members = tuple(value)
        want = op == "in"
        return lambda row: (read(row) in members) == want
    cmp = _ORDER[op]

    def ordered(row: Row) -> bool:
        v = read(row)
        if v is None:
            return False
        try:
            return bool(cmp(v, value))
        except TypeError:
            raise RowError(
                rule_id,
                f"filter cannot compare {type(v).__name__} {v!r} {op} "
                f"{value!r}; fix: compare with a value of the column's type",
            ) from None

    return ordered
