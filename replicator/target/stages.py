"""Per-session stage tables: created from the mapping's statement, values kept uncompressed.

A stage holds a batch's values only until the statement that reads them. Its
compressible columns are STORAGE EXTERNAL: a large value is moved out of line
but never compressed there, so it is compressed at most once, by the target
column's own storage (the default, EXTENDED, would compress every large
value on its way into the stage, and the target would keep that compressed
copy even where its own column says EXTERNAL).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql


def create_stage(conn: psycopg.Connection[Any], create: sql.Composed, name: str) -> None:
    """Run the stage's CREATE (idempotent) and make its compressible columns EXTERNAL."""
    conn.execute(create)
    columns = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped AND attstorage IN ('x', 'm') ORDER BY attnum",
        (sql.Identifier("pg_temp", name).as_string(conn),),
    ).fetchall()
    if columns:
        external = sql.SQL("ALTER COLUMN {} SET STORAGE EXTERNAL")
        conn.execute(
            sql.SQL("ALTER TABLE {} {}").format(
                sql.Identifier("pg_temp", name),
                sql.SQL(", ").join(external.format(sql.Identifier(c)) for (c,) in columns),
            )
        )
