"""Rows in Debezium's signal table (I/O edge): the drain fence and the reload request.

The fence is a captured change at a known LSN (type `log`, so Debezium only
logs it); a reload is an `execute-snapshot` signal (an incremental snapshot of
the named tables). A missing signal table is one line saying how to create it.
"""

from __future__ import annotations

import json
import uuid

import psycopg
from psycopg import sql

from replicator.config import SourceSettings
from replicator.core.errors import Fatal, one_line
from replicator.core.intents import FENCE_PREFIX
from replicator.core.model import TableRef
from replicator.pg.session import connect


def write_fence(source: SourceSettings, signal_table: TableRef) -> tuple[str, int]:
    """Insert a fence row into the signal table; return its id and an LSN inside its transaction
    (below its commit: a capture position at or past it includes the fence's transaction)."""
    fence_id = f"{FENCE_PREFIX}{uuid.uuid4().hex[:20]}"
    data = {"message": f"cdc-replicator {fence_id}"}
    return fence_id, _signal(source, signal_table, fence_id, "log", data)


def write_snapshot_signal(
    source: SourceSettings, signal_table: TableRef, tables: list[TableRef]
) -> tuple[str, int]:
    """Ask the connector for an incremental snapshot of `tables` (Debezium's `execute-snapshot`);
    return the signal's id and an LSN inside its transaction."""
    signal_id = f"reload-{uuid.uuid4().hex[:20]}"
    data = {"data-collections": [str(t) for t in tables], "type": "incremental"}
    return signal_id, _signal(source, signal_table, signal_id, "execute-snapshot", data)


def _signal(source: SourceSettings, signal_table: TableRef, signal_id: str, kind: str, data: object) -> int:
    with connect(source, "source") as conn:
        try:
            conn.execute(
                sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(
                    sql.Identifier(signal_table.schema, signal_table.name)
                ),
                (signal_id, kind, json.dumps(data)),
            )
        except psycopg.errors.UndefinedTable as exc:
            raise Fatal(
                f"the signal table {signal_table} does not exist in the source; fix: create it "
                f"(CREATE TABLE {signal_table} (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, "
                "data varchar(2048)), add it to the connector's publication, set the connector's "
                "signal.data.collection to it) or point REPLICATOR_SIGNAL_TABLE at yours"
            ) from exc
        except psycopg.Error as exc:
            raise Fatal(
                f"source: cannot write the {kind} signal into {signal_table}: {one_line(exc)}"
            ) from exc
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])
