"""Target sequences at cutover (I/O edge): found per mapped table, moved past every replicated key.

A sequence belongs to a column through an identity, a serial (OWNED BY), or
a column default calling nextval(). Each is set to `SequencePlan.value` (past
the largest mapped key and past the source's sequence, plus a margin) and
never moved backwards: a sequence already further stays where it is.
Descending sequences are reported and left alone. Standalone sequences (no
column: `core.sequence_pairs`) are found by name and set the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator.core.errors import Fatal
from replicator.core.model import TableRef
from replicator.core.sequence_pairs import TargetSequence as NamedSequence

INTEGER_TYPES = frozenset({"smallint", "integer", "bigint", "numeric"})


@dataclass(frozen=True, slots=True)
class TargetSequence:
    sequence: str  # as regclass text: usable as `%s::regclass`
    table: TableRef
    column: str
    column_type: str
    last_value: int | None
    increment: int
    max_value: int


_FIND = """
WITH t AS (SELECT to_regclass(format('%%I.%%I', %(schema)s::text, %(name)s::text)) AS oid),
owned AS (
  SELECT d.objid AS seq, d.refobjsubid AS attnum
  FROM pg_depend d, t
  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
    AND d.refobjid = t.oid AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
),
defaults AS (
  SELECT d.refobjid AS seq, ad.adnum AS attnum
  FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
    AND d.refclassid = 'pg_class'::regclass, t
  WHERE ad.adrelid = t.oid
)
SELECT DISTINCT s.oid::regclass::text, a.attname, format_type(a.atttypid, NULL),
       ps.last_value, ps.increment_by, ps.max_value
FROM (SELECT * FROM owned UNION SELECT * FROM defaults) o
CROSS JOIN t
JOIN pg_class s ON s.oid = o.seq AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_sequences ps ON ps.schemaname = sn.nspname AND ps.sequencename = s.relname
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = o.attnum
ORDER BY 1, 2
"""


def find(conn: psycopg.Connection[Any], tables: Iterable[TableRef]) -> list[TargetSequence]:
    out: list[TargetSequence] = []
    for t in sorted(set(tables)):
        for seq, column, ctype, last, inc, maxv in conn.execute(
            _FIND, {"schema": t.schema, "name": t.name}
        ).fetchall():
            out.append(
                TargetSequence(
                    seq, t, column, ctype, None if last is None else int(last), int(inc), int(maxv)
                )
            )
    return out


def column_max(conn: psycopg.Connection[Any], s: TargetSequence) -> int | None:
    """The largest value in the sequence's column (None: empty, or not an integer column)."""
    if s.column_type not in INTEGER_TYPES:
        return None
    row = conn.execute(
        sql.SQL("SELECT max({}) FROM {}").format(
            sql.Identifier(s.column), sql.Identifier(s.table.schema, s.table.name)
        )
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def set_past(conn: psycopg.Connection[Any], s: TargetSequence, value: int) -> int:
    """Set the sequence so that its next value is above `value` (never backwards); the value set."""
    if value > s.max_value:
        raise Fatal(
            f"target sequence {s.sequence} ({s.table}.{s.column}) would be set to {value}, past its"
            f" maximum {s.max_value}; fix: ALTER SEQUENCE {s.sequence} AS bigint MAXVALUE ..."
        )
    row = conn.execute(
        "SELECT setval(%s::regclass, GREATEST(%s::bigint, coalesce("
        "(SELECT last_value FROM pg_sequences WHERE format('%%I.%%I', schemaname, sequencename)::regclass"
        " = %s::regclass), %s::bigint)), true)",
        (s.sequence, value, s.sequence, value),
    ).fetchone()
    assert row is not None
    return int(row[0])


_NAMED = """
SELECT n.nspname, c.relname, s.seqincrement, s.seqmax, has_sequence_privilege(c.oid, 'UPDATE')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE c.relkind = 'S' AND (n.nspname = ANY(%s::text[])
  OR (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[])))
ORDER BY 1, 2
"""


def named(conn: psycopg.Connection[Any], schemas: list[str], names: list[TableRef]) -> list[NamedSequence]:
    """Every sequence in `schemas`, and those named, whatever owns them; settable: UPDATE on it."""
    rows = conn.execute(_NAMED, (schemas, [n.schema for n in names], [n.name for n in names])).fetchall()
    return [NamedSequence(TableRef(s, n), int(inc), int(maxv), bool(ok)) for s, n, inc, maxv, ok in rows]


def set_named_past(conn: psycopg.Connection[Any], s: NamedSequence, value: int) -> int:
    """`set_past` for a standalone sequence: its next value above `value`, never backwards."""
    if value > s.max_value:
        raise Fatal(
            f"target sequence {s.name} would be set to {value}, past its maximum {s.max_value};"
            f" fix: ALTER SEQUENCE {s.name} AS bigint MAXVALUE ..."
        )
    row = conn.execute(
        "SELECT setval(format('%%I.%%I', %(schema)s::text, %(name)s::text)::regclass,"
        " GREATEST(%(value)s::bigint, coalesce((SELECT last_value FROM pg_sequences"
        " WHERE schemaname = %(schema)s AND sequencename = %(name)s), %(value)s::bigint)), true)",
        {"schema": s.name.schema, "name": s.name.name, "value": value},
    ).fetchone()
    assert row is not None
    return int(row[0])
