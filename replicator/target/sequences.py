"""Target sequences at cutover (I/O edge): found per mapped table, moved past every replicated key.

A sequence belongs to a column through an identity, a serial (OWNED BY), or
a column default calling nextval(). Each is set to `SequencePlan.value` (past
the largest mapped key and past the source's sequence, plus a margin) and
never moved backwards: a sequence already further stays where it is.
Descending sequences are reported and left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator.core.errors import Fatal
from replicator.core.model import TableRef

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
