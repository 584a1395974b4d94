"""The SQL a migration's administrators run before the replicator starts, from the spec alone.

`replicator init --print-grants` prints it; nothing here connects anywhere.

Invariants:
- Least privilege, per role: the connector role replicates and reads the captured tables
  (and the signal table, where it also inserts an incremental snapshot's window markers);
  the replicator's source role reads them and writes only fence rows into the signal table;
  the replicator's target role writes the mapped tables, reads the lookup tables and owns the
  control schema (`replicator init` creates it); the shadow role reads the mapped and lookup
  tables and gets its control-schema grants from `init`. For `replicator cutover`, the source
  role may also end the application roles' transactions, probe-write as them and keep the
  authority mirror, and read the source schemas' sequences (`pg_sequences` hides a sequence's
  last value from a role without SELECT or USAGE on it); the target role may move the
  sequences of the mapped schemas, and both may use the sequences of
  REPLICATOR_CUTOVER__SEQUENCES. After the flip the application roles write the mapped tables
  in the target and draw their sequences (printed for them, as the cutover's `app_target` gate
  checks).
- Every identifier is quoted with `psycopg.sql`; the text is deterministic (sorted tables).
- No password is ever printed: roles are created by the administrator, with a placeholder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from psycopg import sql

from replicator.core.mapping.spec import Spec
from replicator.core.model import TableRef

Database = Literal["source", "target", "both"]

SIGNAL_COLUMNS = "id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048)"


@dataclass(frozen=True, slots=True)
class Roles:
    """Who is who: databases, roles and the publication the connector reads."""

    source_db: str
    target_db: str
    connector_role: str  # the Debezium connector's database.user
    source_role: str  # REPLICATOR_SOURCE__USER
    target_role: str  # REPLICATOR_TARGET__USER
    shadow_role: str | None
    publication: str
    control_schema: str
    app_roles: tuple[str, ...] = ()  # REPLICATOR_CUTOVER__APP_ROLES: the roles a cutover fences


def _t(ref: TableRef) -> sql.Identifier:
    return sql.Identifier(ref.schema, ref.name)


def _list(refs: list[TableRef]) -> sql.Composable:
    return sql.SQL(", ").join(_t(r) for r in refs)


def _schemas(refs: list[TableRef]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(s) for s in sorted({r.schema for r in refs}))


def grants_sql(
    spec: Spec,
    signal_table: TableRef,
    roles: Roles,
    sequences: Sequence[tuple[TableRef, TableRef]] = (),
    database: Database = "both",
) -> str:
    """The statements, in the order to run them, with a comment saying where and as whom: every
    source statement before every target statement, so `database` ("source" or "target") prints
    one database's part alone, to pipe into psql there; `sequences`: the (source, target) pairs of
    REPLICATOR_CUTOVER__SEQUENCES."""
    captured = sorted({t.source for t in spec.tables}, key=str)
    targets = sorted({t.target for t in spec.tables}, key=str)
    truncated = sorted({t.target for t in spec.tables if t.truncate.policy == "truncate"}, key=str)
    lookups = sorted(
        {c.lookup.table for t in spec.tables for c in t.columns.values() if c.lookup is not None}
        - set(targets),
        key=str,
    )
    read_on_source = [*captured, signal_table]
    conn_role, src_role = sql.Identifier(roles.connector_role), sql.Identifier(roles.source_role)
    tgt_role = sql.Identifier(roles.target_role)
    src_db, tgt_db = sql.Identifier(roles.source_db), sql.Identifier(roles.target_db)
    source: list[str | sql.Composable] = [
        f"-- source database {roles.source_db}, as an administrator (or the tables' owner)",
        "-- the signal table: `replicator drain` writes its fence rows here, the connector captures them",
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + SIGNAL_COLUMNS + ")").format(_t(signal_table)),
        "-- every captured table needs a primary key: once in a publication, a table with neither a"
        " primary key nor REPLICA IDENTITY FULL refuses the application's UPDATE and DELETE."
        " `replicator mapping check` names such tables: run it before this",
        "-- publish_via_partition_root: a partitioned table's changes are published as its own"
        " (the table the spec names), not as its partitions' (which no rule maps)",
        sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)").format(
            sql.Identifier(roles.publication), _list(read_on_source)
        ),
        f"-- the connector role (create it if needed: CREATE ROLE {roles.connector_role} "
        "WITH LOGIN REPLICATION PASSWORD '<secret>')",
        sql.SQL("ALTER ROLE {} WITH REPLICATION").format(conn_role),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(src_db, conn_role),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_schemas(read_on_source), conn_role),
        sql.SQL("GRANT SELECT ON {} TO {}").format(_list(read_on_source), conn_role),
        "-- INSERT: an incremental snapshot (`replicator reload`) writes its window markers there",
        sql.SQL("GRANT INSERT ON {} TO {}").format(_t(signal_table), conn_role),
        f"-- the replicator's source role: catalog checks, verify, drain's fence row (create it if needed:"
        f" CREATE ROLE {roles.source_role} WITH LOGIN PASSWORD '<secret>')",
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(src_db, src_role),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_schemas(read_on_source), src_role),
        sql.SQL("GRANT SELECT ON {} TO {}").format(_list(captured), src_role),
        sql.SQL("GRANT INSERT ON {} TO {}").format(_t(signal_table), src_role),
        *_cutover_source(captured, roles, sequences),
    ]
    target: list[str | sql.Composable] = [
        f"-- target database {roles.target_db}, as the owner of the target tables",
        f"-- the replicator's target role (create it if needed: CREATE ROLE {roles.target_role} WITH LOGIN"
        " PASSWORD '<secret>')",
        "-- CREATE: `replicator init`, run as this role, creates and owns the control schema "
        f"{roles.control_schema}; TEMP: per-session stage tables",
        sql.SQL("GRANT CONNECT, CREATE, TEMP ON DATABASE {} TO {}").format(tgt_db, tgt_role),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_schemas([*targets, *lookups]), tgt_role),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(_list(targets), tgt_role),
    ]
    if truncated:
        target.append(sql.SQL("GRANT TRUNCATE ON {} TO {}").format(_list(truncated), tgt_role))
    if lookups:
        target.append(sql.SQL("GRANT SELECT ON {} TO {}").format(_list(lookups), tgt_role))
    if roles.shadow_role is not None:
        shadow = sql.Identifier(roles.shadow_role)
        target += [
            "-- the shadow role: reads the data, never writes it (TEMP: its session-local clones; create it"
            f" if needed: CREATE ROLE {roles.shadow_role} WITH LOGIN PASSWORD '<secret>')",
            sql.SQL("GRANT CONNECT, TEMP ON DATABASE {} TO {}").format(tgt_db, shadow),
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_schemas([*targets, *lookups]), shadow),
            sql.SQL("GRANT SELECT ON {} TO {}").format(_list([*targets, *lookups]), shadow),
        ]
    target += _cutover_target(targets, roles, sequences)
    tail = f" --shadow-role {roles.shadow_role}" if roles.shadow_role else ""
    target += ["", f"-- then, as {roles.target_role}: replicator init{tail}"]
    parts = {"source": [source], "target": [target], "both": [source, target]}[database]
    return "\n\n".join(_text(part) for part in parts) + "\n"


def _text(statements: list[str | sql.Composable]) -> str:
    return "\n".join(s if isinstance(s, str) else s.as_string() + ";" for s in statements)


def _cutover_source(
    captured: list[TableRef], roles: Roles, named: Sequence[tuple[TableRef, TableRef]]
) -> list[str | sql.Composable]:
    """What `replicator cutover` needs in the source beyond replication (the runbook's step 9)."""
    src_role = sql.Identifier(roles.source_role)
    out: list[str | sql.Composable] = [
        "",
        f"-- for `replicator cutover` (source database {roles.source_db}, as an administrator):",
        "-- the fence revokes the application roles' write privileges on the captured tables and on all",
        "-- their partitions (a partition written directly checks its own grants)",
        "-- and gives them back on abort: only the grantor can, so the source role must own those tables",
        f"-- or be a member of their owner (GRANT <owner> TO {roles.source_role})",
        "-- ending the application roles' open transactions:",
        sql.SQL("GRANT pg_signal_backend TO {}").format(src_role),
        "-- the authority mirror (a small table in the control schema, on the source too):",
        sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(roles.source_db), src_role),
        "-- reading the source sequences it carries over (the columns' and the standalone ones the",
        "-- application draws with nextval()); ALL SEQUENCES covers those that exist now: a sequence",
        "-- created later needs its own GRANT SELECT (the cutover's `sequences` gate names it):",
        sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(_schemas(captured), src_role),
    ]
    sources = sorted({s for s, _ in named}, key=str)
    if sources:
        out += [
            "-- the source sequences REPLICATOR_CUTOVER__SEQUENCES names:",
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_schemas(sources), src_role),
            sql.SQL("GRANT SELECT ON SEQUENCE {} TO {}").format(_list(sources), src_role),
        ]
    if roles.app_roles:
        out += [
            "-- the probe writes that prove the fence, made as each application role:",
            sql.SQL("GRANT {} TO {}").format(
                sql.SQL(", ").join(sql.Identifier(r) for r in roles.app_roles), src_role
            ),
        ]
    else:
        out.append(
            "-- set REPLICATOR_CUTOVER__APP_ROLES to the roles your application writes as, then print again "
            "for the probe grants"
        )
    return out


def _cutover_target(
    targets: list[TableRef], roles: Roles, named: Sequence[tuple[TableRef, TableRef]]
) -> list[str | sql.Composable]:
    """What `replicator cutover` and the application after the flip need in the target."""
    tgt_role = sql.Identifier(roles.target_role)
    out: list[str | sql.Composable] = [
        "",
        f"-- for `replicator cutover` (target database {roles.target_db}, as the target tables' owner):",
        "-- the sequences of the mapped tables, moved past the source's",
        sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            _schemas(targets), tgt_role
        ),
    ]
    ends = sorted({t for _, t in named}, key=str)
    if ends:
        out += [
            "-- the target sequences REPLICATOR_CUTOVER__SEQUENCES names:",
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_schemas(ends), tgt_role),
            sql.SQL("GRANT USAGE, SELECT, UPDATE ON SEQUENCE {} TO {}").format(_list(ends), tgt_role),
        ]
    out += ["", f"-- for the application after the flip (target database {roles.target_db}, as the owner):"]
    if roles.app_roles:
        app = sql.SQL(", ").join(sql.Identifier(r) for r in roles.app_roles)
        out += [
            "-- the roles it writes as (create them there first, with the passwords the application uses;",
            "-- the cutover's `app_target` gate warns while one of them lacks these):",
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_schemas(targets), app),
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(_list(targets), app),
            sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(_schemas(targets), app),
        ]
    else:
        out.append(
            "-- set REPLICATOR_CUTOVER__APP_ROLES to the roles your application writes as, then print again "
            "for their grants in the target"
        )
    return out
