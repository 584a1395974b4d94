"""The cutover fence on the source (I/O edge): the application roles lose their writes, and get them back.

Fence: the grants of INSERT/UPDATE/DELETE/TRUNCATE that the application roles
hold directly on the mapped source tables are read (`grants`, recorded by the
caller before anything changes), revoked, and the roles' sessions that have a
transaction open are ended, so no write already under way commits after the
fence. `writable` then proves the fence: for every role and table it asks
PostgreSQL whether the role may still write (through any grant: direct, a
role it is a member of, PUBLIC) and, when this session may act as the role,
runs each write as the role (statements matching no row, rolled back).
Unfence grants back exactly what was recorded and `writable` proves that the
roles can write again.

Partitions: PostgreSQL checks a partition's own privileges when it is written
directly (not through its partitioned table), so a fence on the partitioned
table alone leaves those writes open, and they never reach the target. Every
function here therefore works on the mapped tables and all their descendants
in pg_inherits (`covered`: partitions, sub-partitions, and legacy inheritance
children alike), re-read on every call: a grant on a partition is recorded,
revoked, probed and given back like one on a mapped table, and a partition
attached after the fence makes `writable` report it. Foreign-table partitions
are fenced by their grants and judged by the privilege functions only (a
probe write would reach the remote server).

Invariants: revoking and granting are idempotent, so a step repeated after a
crash is safe; the probes change nothing; identifiers only via psycopg.sql.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator.core.errors import Fatal, one_line
from replicator.core.model import TableRef
from replicator.pg.errors import sqlstate

WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(frozen=True, slots=True)
class Grant:
    role: str
    schema: str
    table: str
    privilege: str
    grantable: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def of(d: dict[str, Any]) -> Grant:
        return Grant(d["role"], d["schema"], d["table"], d["privilege"], bool(d["grantable"]))


def check_roles(conn: psycopg.Connection[Any], roles: Sequence[str]) -> None:
    """Every configured application role exists and none is a superuser (it cannot be fenced)."""
    rows = conn.execute(
        "SELECT rolname, rolsuper FROM pg_roles WHERE rolname = ANY(%s)", (list(roles),)
    ).fetchall()
    found = {name: bool(sup) for name, sup in rows}
    missing = [r for r in roles if r not in found]
    if missing:
        raise Fatal(
            f"application role(s) {', '.join(missing)} do not exist in the source; fix "
            "REPLICATOR_CUTOVER__APP_ROLES (the roles the application writes as)"
        )
    supers = [r for r, sup in found.items() if sup]
    if supers:
        raise Fatal(
            f"application role(s) {', '.join(supers)} are superusers: no grant can fence them; "
            "give the application an ordinary role with DML grants"
        )


def covered(conn: psycopg.Connection[Any], tables: Iterable[TableRef]) -> list[tuple[TableRef, bool]]:
    """The tables and every descendant of theirs in pg_inherits (partitions at any depth, inheritance
    children), each once, sorted, with whether a probe write may be run on it (not a foreign table).
    A table given is always in the result, even when it does not exist (the caller's check fails)."""
    refs = sorted(set(tables))
    rows = conn.execute(
        "WITH RECURSIVE tree(oid) AS ("
        " SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        " UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid)"
        " SELECT n.nspname, c.relname, c.relkind <> 'f' FROM tree t JOIN pg_class c ON c.oid = t.oid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'f')",
        ([t.schema for t in refs], [t.name for t in refs]),
    ).fetchall()
    out = {t: True for t in refs}
    for schema, name, probe in rows:
        out.setdefault(TableRef(schema, name), bool(probe))
    return sorted(out.items())


def grants(conn: psycopg.Connection[Any], tables: Iterable[TableRef], roles: Sequence[str]) -> list[Grant]:
    """The write privileges the roles hold directly on the tables and their partitions and inheritance
    children (what the fence revokes)."""
    refs = [t for t, _ in covered(conn, tables)]
    rows = conn.execute(
        "SELECT r.rolname, n.nspname, c.relname, a.privilege_type, a.is_grantable"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,"
        " LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee"
        " WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        " AND r.rolname = ANY(%s) AND a.privilege_type = ANY(%s)"
        " ORDER BY 1, 2, 3, 4",
        ([t.schema for t in refs], [t.name for t in refs], list(roles), list(WRITES)),
    ).fetchall()
    return [Grant(role, schema, table, priv, bool(g)) for role, schema, table, priv, g in rows]


def _on(g: Grant) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    return sql.SQL(g.privilege), sql.Identifier(g.schema, g.table), sql.Identifier(g.role)


def revoke(conn: psycopg.Connection[Any], granted: Sequence[Grant]) -> None:
    with conn.transaction():
        for g in granted:
            if g.privilege not in WRITES:
                raise ValueError(f"not a write privilege: {g.privilege}")
            conn.execute(sql.SQL("REVOKE {} ON {} FROM {}").format(*_on(g)))


def grant(conn: psycopg.Connection[Any], granted: Sequence[Grant]) -> None:
    with conn.transaction():
        for g in granted:
            if g.privilege not in WRITES:
                raise ValueError(f"not a write privilege: {g.privilege}")
            option = sql.SQL(" WITH GRANT OPTION" if g.grantable else "")
            conn.execute(sql.SQL("GRANT {} ON {} TO {}{}").format(*_on(g), option))


def end_transactions(conn: psycopg.Connection[Any], roles: Sequence[str]) -> int:
    """End the roles' sessions that have a transaction open in this database; how many were ended.
    Prepared transactions of the roles cannot be ended: their presence is an error."""
    prepared = conn.execute(
        "SELECT gid FROM pg_prepared_xacts WHERE owner = ANY(%s) AND database = current_database()",
        (list(roles),),
    ).fetchall()
    if prepared:
        raise Fatal(
            f"prepared transactions of the application roles are open ({', '.join(g for (g,) in prepared)}):"
            " they could commit after the fence; COMMIT PREPARED or ROLLBACK PREPARED them first"
        )
    try:
        rows = conn.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)"
            " AND datname = current_database() AND pid <> pg_backend_pid()"
            " AND (xact_start IS NOT NULL OR state <> 'idle')",
            (list(roles),),
        ).fetchall()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise Fatal(
            f"source: cannot end the application roles' open transactions: {one_line(exc)}; fix: GRANT "
            "pg_signal_backend TO the replicator's source role"
        ) from exc
    return sum(1 for _, ended in rows if ended)


def writable(conn: psycopg.Connection[Any], tables: Iterable[TableRef], roles: Sequence[str]) -> list[str]:
    """Every (role, table, privilege) write still possible, as 'role may INSERT schema.table', on
    the tables and their partitions and inheritance children (`covered`).

    Empty means fenced. PostgreSQL's privilege functions decide (they see every
    path to a grant); when this session may act as the role, each write is also
    run as the role, matching no row, and must fail with insufficient_privilege.
    """
    out: list[str] = []
    refs = covered(conn, tables)  # every partition too: each one refuses, or the fence does not hold
    for role in roles:
        can_act = _can_set_role(conn, role)
        for t, probe in refs:
            qualified = f"{t.schema}.{t.name}"
            allowed = _privileges(conn, role, t)
            probed = _probe(conn, role, t) if can_act and probe else {}
            for priv in WRITES:
                if allowed.get(priv) or probed.get(priv):
                    out.append(f"{role} may {priv} {qualified}")
    return out


def foreign_writes(
    conn: psycopg.Connection[Any], tables: Iterable[TableRef], roles: Sequence[str], direct: Sequence[Grant]
) -> list[str]:
    """Writes the roles may do through a grant that is not their own (a role they belong to, PUBLIC):
    revoking their grants would not stop these, so the fence cannot hold."""
    own = {(g.role, g.schema, g.table, g.privilege) for g in direct}
    out: list[str] = []
    refs = [t for t, _ in covered(conn, tables)]
    for role in roles:
        for t in refs:
            for priv, allowed in _privileges(conn, role, t).items():
                if allowed and (role, t.schema, t.name, priv) not in own:
                    out.append(
                        f"{role} may {priv} {t} through a grant that is not its own (a role it is a member"
                        " of, or PUBLIC); fix: grant writes to the application role directly, or list the"
                        " role holding them in REPLICATOR_CUTOVER__APP_ROLES"
                    )
    return out


def _can_set_role(conn: psycopg.Connection[Any], role: str) -> bool:
    row = conn.execute(
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
        " OR pg_has_role(current_user, %s, 'MEMBER')",
        (role,),
    ).fetchone()
    return bool(row and row[0])


def _privileges(conn: psycopg.Connection[Any], role: str, t: TableRef) -> dict[str, bool]:
    qualified = sql.Identifier(t.schema, t.name).as_string(conn)
    row = conn.execute(
        "SELECT has_any_column_privilege(%(r)s, %(t)s, 'INSERT'),"
        " has_any_column_privilege(%(r)s, %(t)s, 'UPDATE'),"
        " has_table_privilege(%(r)s, %(t)s, 'DELETE'), has_table_privilege(%(r)s, %(t)s, 'TRUNCATE')",
        {"r": role, "t": qualified},
    ).fetchone()
    assert row is not None
    return dict(zip(WRITES, (bool(v) for v in row), strict=True))


def _probe(conn: psycopg.Connection[Any], role: str, t: TableRef) -> dict[str, bool]:
    """Each write run as `role`, matching no row, in a transaction rolled back: True = it ran."""
    column = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))"
        " AND attnum > 0 AND NOT attisdropped AND attidentity <> 'a' AND attgenerated = ''"
        " ORDER BY attnum LIMIT 1",
        (t.schema, t.name),
    ).fetchone()
    table = sql.Identifier(t.schema, t.name)
    statements: dict[str, sql.Composed] = {"DELETE": sql.SQL("DELETE FROM {} WHERE false").format(table)}
    if column is not None:
        col = sql.Identifier(column[0])
        statements["INSERT"] = sql.SQL("INSERT INTO {} ({}) SELECT NULL WHERE false").format(table, col)
        statements["UPDATE"] = sql.SQL("UPDATE {} SET {} = DEFAULT WHERE false").format(table, col)
    ran: dict[str, bool] = {}
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        for priv, statement in statements.items():
            try:
                with conn.transaction():
                    conn.execute(statement)
                ran[priv] = True
            except psycopg.Error as exc:
                if sqlstate(exc) != INSUFFICIENT_PRIVILEGE:
                    raise Fatal(
                        f"source: the fence probe {priv} on {t} as {role} failed: {one_line(exc)}"
                    ) from exc
                ran[priv] = False
    return ran
