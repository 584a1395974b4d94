"""`errors retry` of a decode record whose event now decodes but is refused by the target.

Found in a trial (date 'infinity' while streaming was a decode error; after the decoder fix, a
retry of those records applied most rows, but a child depot whose parent was itself an error
record was refused with 23503): the retry reported every decode record closed and exited 0, and
stored the refusal as a new open record beside it. The record must stay open, as the table's.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

from replicator.config import TargetSettings
from replicator.core.intents import prepare
from replicator.core.model import Batch, ChangeEvent, KafkaRef, Op, SourcePosition, TableRef
from replicator.core.retry import Chosen
from replicator.target import control
from replicator.target.retry import RetryTables
from replicator.target.writer import BatchWriter
from tests.integration.pipeline import CONTROL, demo_plan, fresh_target
from tests.integration.stack import Stack, one_row

TOPIC = "demo.shop.customers"


def customer_event(offset: int, email: str) -> ChangeEvent:
    after: dict[str, Any] = {
        "id": 40 + offset,
        "email": email,
        "full_name": "Retry Person",
        "country": "DE",
        "tier": "gold",
        "tags": None,
        "profile": None,
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }
    return ChangeEvent(
        ref=KafkaRef(TOPIC, 0, offset),
        op=Op.CREATE,
        table=TableRef.parse("shop.customers"),
        key=None,
        before=None,
        after=after,
        position=SourcePosition(1000, 2000 + offset),
        snapshot=False,
        ts_ms=0,
        raw_key=b"k",
        raw_value=b"v",
    )


def test_a_decode_record_refused_by_the_target_on_retry_stays_open_as_that_tables_record(
    stack: Stack,
) -> None:
    dbname = fresh_target("retrydecode")
    group, run_id = "retry-decode", f"retry-{uuid.uuid4().hex[:6]}"
    settings = TargetSettings(
        host=stack.target_host,
        port=stack.target_port,
        dbname=dbname,
        user="replicator",
        password="replicator",
    )
    with psycopg.connect(settings.conninfo(), autocommit=True) as conn:
        control.ensure(conn, CONTROL)  # what `replicator init` does, as the replicator's role
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute("ALTER TABLE crm.customer_pii ADD CONSTRAINT no_zz CHECK (email_masked NOT LIKE '%zz%')")
        ids = [
            one_row(
                conn.execute(
                    "INSERT INTO replicator.error_record (kind, run_id, group_id, topic, partition,"
                    " kafka_offset, target_table, key, raw_key, raw_value, rule_id, message)"
                    " VALUES ('error', 'earlier', %s, %s, 0, %s, NULL, NULL, 'k', 'v', 'decode',"
                    " 'cannot convert') RETURNING id",
                    (group, TOPIC, offset),
                )
            )[0]
            for offset in (0, 1)
        ]
    plan = demo_plan(stack, dbname)
    chosen = [Chosen(i, KafkaRef(TOPIC, 0, o), None) for i, o in zip(ids, (0, 1), strict=True)]
    tables = RetryTables(plan, CONTROL, group, run_id, chosen)
    writer = BatchWriter(settings, tables, CONTROL, group, run_id, may_hold=False)
    events = [customer_event(0, "fine@example.com"), customer_event(1, "zzzzzz@example.zz")]
    try:
        writer.apply(prepare(Batch(events=events, next_offsets={}), plan))
    finally:
        writer.close()
    assert tables.settled.closed == (ids[0],)
    assert set(tables.settled.failing) == {ids[1]}
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        records = conn.execute(
            "SELECT id, target_table, key, rule_id, sqlstate, resolved_at IS NULL"
            " FROM replicator.error_record WHERE kind = 'error' ORDER BY id"
        ).fetchall()
    assert records == [
        (ids[0], None, None, "decode", None, False),  # landed: closed
        (ids[1], "crm.customer_pii", "[41]", "customer_pii", "23514", True),  # one open record, the table's
    ]
