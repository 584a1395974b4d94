"""Boundary values end to end: infinities, earliest/latest timestamps, min/max numerics,
maximum lengths with multibyte text, empty string vs null, padded strings.

Each value goes source -> Debezium -> Kafka -> replicator -> target and is
checked in the target; the whole target is then compared with the mapped source.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from tests.integration.pipeline import assert_converged_equal, converge, daemon, env_for, fresh_target
from tests.integration.stack import Stack, one_row


def test_boundary_values_reach_the_target_exactly(stack: Stack, tmp_path: Path) -> None:
    dbname = fresh_target("values")
    group = f"values-{uuid.uuid4().hex[:6]}"
    tag = uuid.uuid4().hex[:6]
    name_120 = ("é" * 119) + "x"  # exactly varchar(120), 240 bytes in UTF-8
    with psycopg.connect(stack.source_admin()) as conn:
        (cid,) = one_row(
            conn.execute(
                "INSERT INTO shop.customers (email, full_name, country) VALUES (%s, '', 'X ') RETURNING id",
                (f"Edge.{tag}@Example.com",),
            )
        )
        orders = {}
        for label, placed, total, note in [
            ("pos_inf", "infinity", Decimal("999999999999.99"), ""),
            ("neg_inf", "-infinity", Decimal("-999999999999.99"), None),
            ("earliest", "0001-01-01 00:00:00+00", Decimal("0.00"), "  "),
            ("latest", "9999-12-31 23:59:59.999999+00", Decimal("0.01"), "Ünïcödé 🙂"),
        ]:
            (oid,) = one_row(
                conn.execute(
                    "INSERT INTO shop.orders (customer_id, status, placed_at, total, note)"
                    " VALUES (%s, 'placed', %s, %s, %s) RETURNING id",
                    (cid, placed, total, note),
                )
            )
            orders[label] = oid
        conn.execute(
            "INSERT INTO shop.products (sku, name, price, weight_grams) VALUES (%s, %s, 9999999999.99, %s)",
            (f"MAX-{tag}", name_120, 2147483647),
        )
        conn.execute(
            "INSERT INTO shop.products (sku, name, price, weight_grams) VALUES (%s, 'min', 0, %s)",
            (f"MIN-{tag}", -2147483648),
        )
    with daemon(env_for(stack, dbname, group), tmp_path / "d.log") as proc:
        converge(stack, dbname, group)
    assert proc.returncode == 0
    with psycopg.connect(stack.target_admin(dbname)) as conn:

        def one(query: str, *params: object) -> tuple[Any, ...]:
            row = conn.execute(query, params).fetchone()
            assert row is not None, query
            return tuple(row)

        order = 'SELECT placed_at_utc::text, total, note FROM sales."order" WHERE order_id = %s'
        assert one(order, orders["pos_inf"]) == ("infinity", Decimal("999999999999.99"), "")
        assert one(order, orders["neg_inf"]) == ("-infinity", Decimal("-999999999999.99"), None)
        assert one(order, orders["earliest"]) == ("0001-01-01 00:00:00", Decimal("0.00"), "")  # trim
        assert one(order, orders["latest"]) == ("9999-12-31 23:59:59.999999", Decimal("0.01"), "Ünïcödé 🙂")
        product = "SELECT title, price_cents, weight_kg FROM catalog.product WHERE sku = %s"
        assert one(product, f"MAX-{tag}") == (name_120, 999999999999, Decimal("2147483.647"))
        assert one(product, f"MIN-{tag}") == ("min", 0, Decimal("-2147483.648"))
        customer = (
            "SELECT first_name, last_name, country_code, email FROM crm.customer WHERE customer_id = %s"
        )
        assert one(customer, cid) == ("", None, "X ", f"edge.{tag}@example.com")
        (truncations,) = one("SELECT count(*) FROM replicator.error_record WHERE key = %s", f'["MAX-{tag}"]')
        assert truncations == 0, "exactly 120 characters fit: no truncation report"
    assert_converged_equal(stack, dbname)


def test_timestamp_beyond_python_range_is_an_error_record_not_a_crash(stack: Stack, tmp_path: Path) -> None:
    """Year 294276 (PostgreSQL's latest timestamptz) cannot be held by Python: one error record."""
    dbname = fresh_target("farfuture")
    group = f"far-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.source_admin()) as conn:
        (oid,) = one_row(
            conn.execute(
                "INSERT INTO shop.orders (customer_id, status, placed_at) SELECT min(id), 'placed',"
                " '294276-12-31 23:59:59.999999+00' FROM shop.customers RETURNING id"
            )
        )
        conn.execute("DELETE FROM shop.orders WHERE id = %s", (oid,))  # keep the source readable for verify
    with daemon(env_for(stack, dbname, group), tmp_path / "d.log") as proc:
        converge(stack, dbname, group)
    assert proc.returncode == 0
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        rows = conn.execute(
            "SELECT rule_id, message FROM replicator.error_record WHERE topic = 'demo.shop.orders'"
            " AND message LIKE %s AND convert_from(raw_value, 'UTF8') LIKE %s",
            ("%294276%", f'%"after":{{"id":{oid},%'),
        ).fetchall()
    assert len(rows) == 1 and rows[0][0] == "decode" and "placed_at" in rows[0][1]
