"""Opening PostgreSQL sessions (I/O edge): one place that turns a refused or failed
connection into a one-line error naming the setting that fixes it.

A refused login (28000/28P01) or a missing database (3D000) is `Fatal`;
anything else that stops a connection is `Transient` (the daemon retries, a
one-shot command reports it in one line). The password never appears in a
message: psycopg's errors do not carry it and only `describe()` is printed.
Every session loads the values Python cannot hold or would round (±infinity,
BC dates, intervals, JSON numbers) as the pipeline's own objects (`pg.types`).
"""

from __future__ import annotations

from typing import Any

import psycopg

from replicator.config import PostgresSettings
from replicator.core.errors import Fatal, Transient, one_line
from replicator.pg.errors import sqlstate
from replicator.pg.types import register_types


def connect(pg: PostgresSettings, side: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A session on the `side` ("source" or "target") database; raises Fatal or Transient."""
    var = f"REPLICATOR_{side.upper()}__"
    try:
        conn = psycopg.connect(pg.conninfo(), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        state = sqlstate(exc) or _login_state(str(exc))
        where = f"{side} database {pg.describe()}"
        if state in ("28000", "28P01"):
            raise Fatal(f"{where}: {one_line(exc)}; fix: {var}USER / {var}PASSWORD") from exc
        if state == "3D000":
            raise Fatal(f"{where}: {one_line(exc)}; fix: {var}DBNAME") from exc
        raise Transient(f"{where} is unreachable: {one_line(exc)}; check {var}HOST / {var}PORT") from exc
    register_types(conn)
    return conn


# psycopg gives no SQLSTATE for a failed connection attempt (libpq keeps only the server's
# message), so a refused login or a missing database is recognised by the server's FATAL text.
def _login_state(message: str) -> str | None:
    fatal = message.partition("FATAL:")[2].strip()
    if fatal.startswith(("password authentication failed", "no password supplied")):
        return "28P01"
    if fatal.startswith("no pg_hba.conf entry") or (fatal.startswith('role "') and "does not exist" in fatal):
        return "28000"
    if fatal.startswith('database "') and "does not exist" in fatal:
        return "3D000"
    return None
