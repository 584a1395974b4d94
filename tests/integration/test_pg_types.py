"""`pg.types`: values PostgreSQL holds and Python cannot, read back by the connections that compare
rows (verify, the shadow's clones), against a real server."""

from __future__ import annotations

import datetime as dt

import psycopg

from replicator.core.values import POS_INFINITY, PgText
from replicator.pg.types import register_infinity
from tests.integration.stack import Stack


def test_dates_outside_python_years_come_back_as_the_servers_text_not_an_error(stack: Stack) -> None:
    """Trial 5: `verify` stopped at the first BC date ('date too small (before year 1)') and compared
    nothing. Such a value now reads as its text, so a BC source date beside the AD date Debezium's
    snapshot wrote is a mismatch verify reports."""
    with psycopg.connect(stack.target_admin()) as conn:
        register_infinity(conn)
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
