"""What the cutover and status read from the source about capture (I/O edge): the slot, the
publication, the WAL, sequences.

Read-only. The slot's retained WAL is measured from the current WAL position
back to the slot's restart LSN (what PostgreSQL must keep for it). A sequence's
last value is NULL in pg_sequences both when it was never used and when the
role may not read it: `sequences` tells the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.core.model import TableRef
from replicator.core.publication import Publication
from replicator.core.sequence_pairs import SourceSequence


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    active: bool
    retained_wal_bytes: int


def slot(conn: psycopg.Connection[Any], name: str) -> Slot | None:
    row = conn.execute(
        "SELECT active, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    ).fetchone()
    return None if row is None else Slot(name, bool(row[0]), int(row[1]))


def publication(conn: psycopg.Connection[Any], name: str) -> Publication | None:
    row = conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    if row is None:
        return None
    tables = conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (name,)
    ).fetchall()
    return Publication(name, bool(row[0]), frozenset(TableRef(s, t) for s, t in tables))


def partitioned(conn: psycopg.Connection[Any], tables: list[TableRef]) -> frozenset[TableRef]:
    """Those of `tables` that are partitioned (declarative partitioning: relkind 'p')."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'p' AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([t.schema for t in tables], [t.name for t in tables]),
    ).fetchall()
    return frozenset(TableRef(s, t) for s, t in rows)


def wal_lsn(conn: psycopg.Connection[Any]) -> int:
    """The source's current WAL insert position, as an integer."""
    row = conn.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
    assert row is not None
    return int(row[0])


def sequence_value(conn: psycopg.Connection[Any], table: TableRef, column: str) -> int | None:
    """The last value of the sequence behind a source column (None: no sequence, or never used)."""
    row = conn.execute(
        "SELECT s.last_value FROM pg_sequences s"
        " WHERE format('%%I.%%I', s.schemaname, s.sequencename)::regclass"
        " = pg_get_serial_sequence(format('%%I.%%I', %s::text, %s::text), %s)::regclass",
        (table.schema, table.name, column),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


_SEQUENCES = """
SELECT n.nspname, c.relname, ps.last_value, has_sequence_privilege(c.oid, 'SELECT,USAGE'),
  EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i'))
  OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_attrdef'::regclass
             AND d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = c.relname
WHERE c.relkind = 'S' AND (n.nspname = ANY(%s::text[])
  OR (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[])))
ORDER BY 1, 2
"""


def sequences(
    conn: psycopg.Connection[Any], schemas: list[str], names: list[TableRef]
) -> list[SourceSequence]:
    """Every sequence in `schemas`, and those named: last value, readable, owned or called by a column."""
    rows = conn.execute(_SEQUENCES, (schemas, [n.schema for n in names], [n.name for n in names])).fetchall()
    return [
        SourceSequence(TableRef(s, n), None if last is None else int(last), bool(readable), bool(of_column))
        for s, n, last, readable, of_column in rows
    ]
