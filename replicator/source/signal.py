"""The drain fence on the source (I/O edge): a row in Debezium's signal table.

The row is a captured change at a known LSN (type `log`, so Debezium only
logs it). A missing signal table is one line saying how to create it.
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
    with connect(source, "source") as conn:
        try:
            conn.execute(
                sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, 'log', %s)").format(
                    sql.Identifier(signal_table.schema, signal_table.name)
                ),
                (fence_id, json.dumps({"message": f"cdc-replicator {fence_id}"})),
            )
        except psycopg.errors.UndefinedTable as exc:
            raise Fatal(
                f"the signal table {signal_table} does not exist in the source; fix: create it "
                f"(CREATE TABLE {signal_table} (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, "
                "data varchar(2048)), add it to the connector's publication, set the connector's "
                "signal.data.collection to it) or point REPLICATOR_SIGNAL_TABLE at yours"
            ) from exc
        except psycopg.Error as exc:
            raise Fatal(f"source: cannot write the fence row into {signal_table}: {one_line(exc)}") from exc
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return fence_id, int(row[0])
