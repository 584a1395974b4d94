"""The authority mirror on the source (I/O edge): a one-row control table beside the application's.

The target's `authority` row is the record; this copy tells anyone looking at
the source (and the application's own checks, if it reads it) which side is
authoritative and where a cutover stands. It is written after each cutover
transition, so it can lag the record by one step when a cutover process dies
between the two writes; `cutover status` shows both and `--resume` rewrites it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from replicator.core.errors import Fatal, one_line

DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.authority (
  singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  authority  text NOT NULL CHECK (authority IN ('source', 'target')),
  since      timestamptz NOT NULL DEFAULT now(),
  cutover_id text,
  state      text,
  fence_lsn  numeric,
  updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO {s}.authority (authority) VALUES ('source') ON CONFLICT DO NOTHING;
"""


def ensure(conn: psycopg.Connection[Any], schema: str) -> None:
    try:
        with conn.transaction():
            conn.execute(sql.SQL(DDL).format(s=sql.Identifier(schema)))
    except psycopg.Error as exc:
        raise Fatal(
            f"source: cannot create the authority mirror {schema}.authority: {one_line(exc)}; fix: GRANT "
            "CREATE ON DATABASE to the replicator's source role (or create the schema for it)"
        ) from exc


def write(
    conn: psycopg.Connection[Any],
    schema: str,
    authority: str,
    cutover_id: str | None,
    state: str | None,
    fence_lsn: int | None,
) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE {}.authority SET since = CASE WHEN authority = %s THEN since ELSE now() END,"
                " authority = %s, cutover_id = %s, state = %s, fence_lsn = %s, updated_at = now()"
            ).format(sql.Identifier(schema)),
            (authority, authority, cutover_id, state, fence_lsn),
        )


def read(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any] | None:
    """The mirror row (None when there is no mirror yet)."""
    exists = conn.execute(
        "SELECT to_regclass(format('%%I.authority', %s::text)) IS NOT NULL", (schema,)
    ).fetchone()
    if not exists or not exists[0]:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {}.authority").format(sql.Identifier(schema)))
        return cur.fetchone()
