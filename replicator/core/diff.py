"""Field-level diff of one target row: the before and after images a shadow run observes. Pure.

A diff is one of `insert`, `update` (before/after per changed column),
`delete` or `noop`; values are in their JSON form (`core.serialize`), and
two cells are equal when their JSON texts are (so NaN equals NaN, and a
jsonb 1.5 differs from 1.50 although the numbers compare equal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from replicator.core.serialize import JSONValue, dumps, to_jsonable

ColumnChange = dict[str, JSONValue]


def row_diff(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, columns: Sequence[str]
) -> tuple[str, dict[str, ColumnChange]]:
    """Kind and changed columns ({column: {before, after}}) of one key."""
    if before is None and after is None:
        return "noop", {}
    if before is None:
        assert after is not None
        return "insert", {c: {"before": None, "after": to_jsonable(after.get(c))} for c in columns}
    if after is None:
        return "delete", {c: {"before": to_jsonable(before.get(c)), "after": None} for c in columns}
    changed: dict[str, ColumnChange] = {}
    for c in columns:
        was, now = to_jsonable(before.get(c)), to_jsonable(after.get(c))
        if was != now or dumps(was) != dumps(now):  # JSON numbers compare as numbers, not as text
            changed[c] = {"before": was, "after": now}
    return ("update" if changed else "noop"), changed
