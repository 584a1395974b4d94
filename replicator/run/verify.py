"""`replicator verify`: read the source and the target, compare through the mapping.

Reads every current source row of the mapped tables and every target row,
then `core.verify` decides: missing, extra, mismatched, placeholders, and
rows absent because they are error records. Read-only on both sides.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from replicator.config import Settings
from replicator.core.intents import key_text
from replicator.core.mapping.plan import Plan, TablePlan
from replicator.core.model import TableRef
from replicator.core.verify import Rows, TableDiff, diff, expected_rows
from replicator.pg.session import connect
from replicator.pg.types import register_infinity
from replicator.run.assembly import target_plan
from replicator.target.store import ControlStore


def read_source(conn: psycopg.Connection[Any], plan: Plan) -> dict[TableRef, list[dict[str, Any]]]:
    out: dict[TableRef, list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for ref in sorted({t.source for t in plan.tables}):
            cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(ref.schema, ref.name)))
            out[ref] = list(cur.fetchall())
    return out


def read_target(conn: psycopg.Connection[Any], table: TablePlan, store: ControlStore) -> Rows:
    """Target rows by key, leaving out rows the source deleted that the spec keeps."""
    cols = [c.target for c in table.columns]
    rows: Rows = {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in cols),
                sql.Identifier(table.target.schema, table.target.name),
            )
        )
        for row in cur.fetchall():
            rows[key_text(tuple(row[k] for k in table.key))] = row
    if table.delete.kind in ("soft", "ignore"):
        for key in store.deleted_keys(table.target):
            rows.pop(key, None)
    return rows


def compare(
    plan: Plan,
    source: psycopg.Connection[Any],
    target: psycopg.Connection[Any],
    control_schema: str,
    placeholder: str = "__debezium_unavailable_value",
) -> list[TableDiff]:
    """Every mapped table of the target against the mapped source, through open sessions."""
    expected = expected_rows(plan, read_source(source, plan))
    store = ControlStore(target, control_schema)
    store.require()
    return [
        diff(
            t,
            *expected[t.target],
            read_target(target, t, store),
            placeholder,
            store.error_keys(t.target),
            store.held_keys(t.target),
        )
        for t in plan.tables
    ]


def verify(
    plan: Plan,
    source_conninfo: str,
    target_conninfo: str,
    control_schema: str,
    placeholder: str = "__debezium_unavailable_value",
) -> list[TableDiff]:
    """`compare` on sessions opened from connection strings (tests pass administrator ones)."""
    with psycopg.connect(source_conninfo) as src, psycopg.connect(target_conninfo, autocommit=True) as tgt:
        register_infinity(src)
        register_infinity(tgt)
        return compare(plan, src, tgt, control_schema, placeholder)


def verify_configured(settings: Settings) -> list[TableDiff]:
    """`replicator verify`: the configured spec, source and target."""
    plan = target_plan(settings)
    with (
        connect(settings.source, "source") as src,
        connect(settings.target, "target", autocommit=True) as tgt,
    ):
        return compare(plan, src, tgt, settings.control_schema, settings.unavailable_placeholder)
