"""Can the application write the target once the target is authoritative? (I/O edge, read-only)

After the flip the application writes the target as its own roles: a flip to a target those
roles cannot write turns the cutover's short window into an outage that lasts until someone
grants. Per role named in REPLICATOR_CUTOVER__APP_ROLES this reads what it lacks in the target:
the role itself, USAGE on the mapped tables' schemas, SELECT/INSERT/UPDATE/DELETE on each mapped
table, USAGE on the sequences of their columns. Only PostgreSQL's privilege functions are asked
(grants through membership and PUBLIC count); nothing is changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from replicator.core.model import TableRef

DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
SHOWN = 3  # missing privileges named per role; the others are counted


def lacking(
    conn: psycopg.Connection[Any], roles: Sequence[str], tables: Sequence[TableRef], sequences: Sequence[str]
) -> list[str]:
    """One line per role that could not write every mapped table (`sequences`: regclass texts of
    the tables' column sequences), naming what it lacks and the fix; empty when every role can."""
    out: list[str] = []
    schemas = sorted({t.schema for t in tables})
    for role in roles:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            out.append(
                f"role {role} does not exist in the target: the application cannot connect as it after the"
                " flip; fix: create it with the grants `replicator init --print-grants` prints (or name in"
                " REPLICATOR_CUTOVER__APP_ROLES the roles it will use)"
            )
            continue
        missing = [
            f"USAGE on schema {s}"
            for (s,) in conn.execute(
                "SELECT s FROM unnest(%s::text[]) AS s WHERE NOT has_schema_privilege(%s, s, 'USAGE')",
                (schemas, role),
            ).fetchall()
        ]
        missing += [
            f"{privilege} on {schema}.{name}"
            for schema, name, privilege in conn.execute(
                "SELECT t.s, t.n, p FROM unnest(%s::text[], %s::text[]) AS t (s, n), unnest(%s::text[]) AS p"
                " WHERE to_regclass(format('%%I.%%I', t.s, t.n)) IS NOT NULL"
                " AND NOT has_table_privilege(%s, format('%%I.%%I', t.s, t.n), p)"
                " ORDER BY t.s, t.n, array_position(%s::text[], p)",
                ([t.schema for t in tables], [t.name for t in tables], list(DML), role, list(DML)),
            ).fetchall()
        ]
        missing += [
            f"USAGE on sequence {seq}"
            for (seq,) in conn.execute(
                "SELECT q FROM unnest(%s::text[]) AS q WHERE NOT has_sequence_privilege(%s, q, 'USAGE')",
                (list(sequences), role),
            ).fetchall()
        ]
        if missing:
            more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
            out.append(
                f"role {role} lacks {', '.join(missing[:SHOWN])}{more} in the target: the application"
                " cannot write there after the flip; fix: the GRANTs `replicator init --print-grants`"
                " prints for it"
            )
    return out
