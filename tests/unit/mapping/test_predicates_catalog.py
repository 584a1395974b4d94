"""Row filters (predicates) and catalog parsing / the params-only catalog reader."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from replicator.core.mapping import PgType, RowError
from replicator.core.mapping.predicates import compile_predicate, describe
from replicator.core.mapping.spec import Predicate
from replicator.core.model import UNAVAILABLE
from replicator.pg.catalog import read_catalog

PRED: TypeAdapter[Any] = TypeAdapter(Predicate)


def pred(data: Any) -> Any:
    return compile_predicate(PRED.validate_python(data), "t.filter")


@pytest.mark.parametrize(
    ("data", "row", "expected"),
    [
        ({"column": "c", "op": "eq", "value": "XX"}, {"c": "XX"}, True),
        ({"column": "c", "op": "ne", "value": "XX"}, {"c": None}, True),
        ({"column": "c", "op": "lt", "value": 5}, {"c": None}, False),
        ({"column": "c", "op": "ge", "value": 5}, {"c": Decimal("5.0")}, True),
        ({"column": "c", "op": "in", "value": [1, 2]}, {"c": 2}, True),
        ({"column": "c", "op": "not_in", "value": [1, 2]}, {"c": 3}, True),
        ({"column": "c", "op": "is_null"}, {"c": None}, True),
        ({"column": "c", "op": "not_null"}, {"c": ""}, True),
        (
            {
                "all": [
                    {"column": "a", "op": "gt", "value": 0},
                    {"not": {"column": "b", "op": "eq", "value": "x"}},
                ]
            },
            {"a": 1, "b": "y"},
            True,
        ),
        (
            {"any": [{"column": "a", "op": "gt", "value": 0}, {"column": "b", "op": "eq", "value": "x"}]},
            {"a": 0, "b": "y"},
            False,
        ),
    ],
)
def test_filter_ops(data: Any, row: dict[str, Any], expected: bool) -> None:
    """filter: every op and combinator; null semantics as documented in predicates.py."""
    assert pred(data)(row) is expected


def test_filter_unavailable_and_type_mismatch_are_row_errors() -> None:
    """filter: UNAVAILABLE or incomparable values raise RowError(filter rule id)."""
    f = pred({"column": "c", "op": "gt", "value": 0})
    with pytest.raises(RowError) as exc:
        f({"c": UNAVAILABLE})
    assert exc.value.rule_id == "t.filter"
    with pytest.raises(RowError, match="cannot compare"):
        f({"c": datetime(2024, 1, 1)})


def test_filter_describe() -> None:
    """filter: explain text."""
    assert describe(PRED.validate_python({"not": {"column": "c", "op": "is_null"}})) == "NOT c is_null"


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-5, max_value=5) | st.none())
def test_filter_qty_gt_0_property(q: int | None) -> None:
    """filter order_line.filter shape (qty gt 0): true exactly for positive quantities."""
    assert pred({"column": "qty", "op": "gt", "value": 0})({"qty": q}) == (q is not None and q > 0)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("character varying(120)", "varchar(120)"),
        ("varchar", "varchar"),
        ("character(2)", "char(2)"),
        ("bpchar", "char(1)"),
        ("numeric(12,2)", "numeric(12,2)"),
        ("numeric(10)", "numeric(10,0)"),
        ("numeric", "numeric"),
        ("int8", "bigint"),
        ("timestamptz", "timestamp with time zone"),
        ("timestamp(3) without time zone", "timestamp without time zone"),
        ("text[]", "text[]"),
        ("jsonb", "jsonb"),
        ("shop.customer_tier", "shop.customer_tier"),
    ],
)
def test_pg_type_parse(text: str, canonical: str) -> None:
    """catalog: format_type spellings parse to one canonical form."""
    assert str(PgType.parse(text)) == canonical


class _FakeCursor:
    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log
        self.results: list[list[tuple[Any, ...]]] = [
            [
                ("s", "t", "d", "id", "bigint", True, False, False, [], False, False, None),
                ("s", "t", "d", "v", "character varying(5)", False, False, False, [], False, False, None),
            ],
            [("s", "t", "t_pkey", "p", ["id"], None, None, [], False, False)],
            [],
        ]

    def __enter__(self) -> _FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, query: str, params: Any) -> None:
        self.log.append((query, params))

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.results.pop(0)


class _FakeConn:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def cursor(self) -> _FakeCursor:
        return _FakeCursor(self.log)


def test_read_catalog_sends_schemas_only_as_parameters() -> None:
    """catalog read_catalog: fixed SQL text; hostile schema names travel as parameters."""
    conn = _FakeConn()
    hostile = ['x"; DROP TABLE y; --']
    # A duck-typed stand-in: read_catalog only uses cursor(), execute() and fetchall().
    cat = read_catalog(cast("psycopg.Connection[Any]", conn), hostile)
    assert all(params == {"schemas": hostile} for _, params in conn.log)
    assert all(hostile[0] not in q for q, _ in conn.log)
    (table,) = cat.tables.values()
    assert table.primary_key == ("id",)
    assert str(table.columns[1].type) == "varchar(5)"
    assert table.replica_identity == "default"
