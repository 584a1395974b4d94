"""How a batch's failures become rows of `error_record` (`LiveTables.store_errors`, one set-based
INSERT): every field stored as given and in the order given; an event already reported and still
open is not reported again (a replay, an `errors retry`), nor twice in one call; once resolved, a
new failure of the same event is a new record."""

from __future__ import annotations

import uuid

import psycopg

from replicator.core.model import Failure, KafkaRef, TableRef
from replicator.target import control
from replicator.target.live import LiveTables
from tests.integration.pipeline import CONTROL, demo_plan, fresh_target
from tests.integration.stack import Stack

TABLE = TableRef("catalog", "product")


def failure(offset: int, message: str = "refused", target: TableRef | None = TABLE) -> Failure:
    return Failure(
        KafkaRef("demo.shop.products", 0, offset),
        "product",
        message,
        b'{"sku": "k"}',
        b"\x00\xffvalue",
        target,
        f'["k{offset}"]',
        "23514",
        (("catalog.product_price", f'["k{offset}"]'),),
    )


def test_error_records_are_stored_whole_once_per_open_event_and_in_order(stack: Stack) -> None:
    dbname = fresh_target("errrec")
    tables = LiveTables(demo_plan(stack, dbname), CONTROL, "errrec", f"run-{uuid.uuid4().hex[:6]}")
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        control.ensure(conn, CONTROL)  # what `replicator run` does before it opens a writer
        tables.prepare_session(conn)

        def stored() -> list[tuple[object, ...]]:
            return conn.execute(
                "SELECT kafka_offset, kind, message, target_table, key, raw_key, raw_value, rule_id,"
                " sqlstate, also, group_id, resolved_at IS NULL FROM replicator.error_record ORDER BY id"
            ).fetchall()

        # offsets 7, 3, 5 in that order; 3 twice (the first wins); 9 with no target table, twice
        new = tables.store_errors(
            conn,
            [failure(7), failure(3, "first"), failure(5), failure(3, "second"), failure(9, "a", None)],
            [],
        )
        assert new == 4  # what the batch log's new_error_records says
        assert tables.store_errors(conn, [failure(9, "b", None)], []) == 0
        conn.commit()
        rows = stored()
        assert [(r[0], r[2]) for r in rows] == [(7, "refused"), (3, "first"), (5, "refused"), (9, "a")]
        assert rows[0][1:] == (
            "error",
            "refused",
            "catalog.product",
            '["k7"]',
            b'{"sku": "k"}',
            b"\x00\xffvalue",
            "product",
            "23514",
            [{"table": "catalog.product_price", "key": '["k7"]'}],
            "errrec",
            True,
        )
        assert rows[3][3] is None

        # a replay reports 7 and 5 again while they are open: nothing new, and it says so
        assert tables.store_errors(conn, [failure(5), failure(7)], []) == 0
        conn.commit()
        assert len(stored()) == 4

        # once 7 is resolved, its next failure is a new record
        conn.execute("UPDATE replicator.error_record SET resolved_at = now() WHERE kafka_offset = 7")
        assert tables.store_errors(conn, [failure(7, "again")], []) == 1
        conn.commit()
        assert [(r[0], r[2], r[-1]) for r in stored()][-1] == (7, "again", True)
        assert len(stored()) == 5


def test_a_batch_reports_only_its_own_failures(stack: Stack) -> None:
    """The session's error stage is emptied before every use, not at commit: what an earlier
    committed call (or a rolled-back one) left in it is never reported again, even once the
    record it made was resolved."""
    dbname = fresh_target("errstage")
    tables = LiveTables(demo_plan(stack, dbname), CONTROL, "errstage", f"run-{uuid.uuid4().hex[:6]}")
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        control.ensure(conn, CONTROL)
        tables.prepare_session(conn)
        tables.store_errors(conn, [failure(7)], [])
        conn.commit()
        tables.store_errors(conn, [failure(8)], [])
        conn.rollback()
        conn.execute("UPDATE replicator.error_record SET resolved_at = now() WHERE kafka_offset = 7")
        tables.store_errors(conn, [failure(5)], [])
        conn.commit()
        rows = conn.execute(
            "SELECT kafka_offset, resolved_at IS NULL FROM replicator.error_record ORDER BY id"
        ).fetchall()
    assert rows == [(7, False), (5, True)]
