"""`pg.types`: values PostgreSQL holds and Python cannot, read back by the connections that compare
rows (verify, the shadow's clones), against a real server."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg

from replicator.core.serialize import dumps
from replicator.core.values import POS_INFINITY, PgText
from replicator.pg.types import exact_rows, register_types
from tests.integration.stack import Stack


def test_dates_outside_python_years_come_back_as_the_servers_text_not_an_error(stack: Stack) -> None:
    """Trial 5: `verify` stopped at the first BC date ('date too small (before year 1)') and compared
    nothing. Such a value now reads as its text, so a BC source date beside the AD date Debezium's
    snapshot wrote is a mismatch verify reports."""
    with psycopg.connect(stack.target_admin()) as conn:
        register_types(conn)
        row = conn.execute(
            "SELECT '0044-03-15 BC'::date, '4000-01-01 12:00 BC'::timestamp,"
            " '0044-03-15 10:00+00 BC'::timestamptz, '10000-01-01'::date, 'infinity'::date,"
            " '2020-01-02'::date"
        ).fetchone()
    assert row == (
        PgText("0044-03-15 BC"),
        PgText("4000-01-01 12:00:00 BC"),
        PgText("0044-03-15 10:00:00+00 BC"),
        PgText("10000-01-01"),
        POS_INFINITY,
        dt.date(2020, 1, 2),
    )
    assert isinstance(row[0], PgText) and row[0] != dt.date(44, 3, 15)


def test_intervals_and_json_numbers_come_back_exactly_as_the_database_holds_them(stack: Stack) -> None:
    """Trial 5: the shadow preview showed '93 days, 5:42:38' for '3 mons 3 days 05:42:38' and
    {"big": 1.0} for 1.000000000000000000001 (the run wrote both right); a comparison reading them
    so would call '3 mons' equal to '90 days' and the two numbers equal."""
    with psycopg.connect(stack.target_admin()) as conn:
        register_types(conn)
        plain = conn.execute("SELECT '{\"timeout_s\": 1.5}'::jsonb").fetchone()
        row = (
            exact_rows(conn.cursor())
            .execute(
                "SELECT '3 mons 3 days 05:42:38'::interval, '90 days'::interval,"
                " '{\"big\": 1.000000000000000000001, \"n\": [2.50, 3]}'::jsonb, '0.1'::json"
            )
            .fetchone()
        )
    assert row is not None and plain is not None
    assert type(plain[0]["timeout_s"]) is float  # the control schema's JSON (settings) stays plain
    months, days, doc, scalar = row
    assert (months, days) == (PgText("3 mons 3 days 05:42:38"), PgText("90 days")) and months != days
    assert doc == {"big": Decimal("1.000000000000000000001"), "n": [Decimal("2.50"), 3]}
    assert dumps(doc) == '{"n": [2.50, 3], "big": 1.000000000000000000001}'  # jsonb's order, its tokens
    assert scalar == Decimal("0.1") and isinstance(scalar, Decimal)
