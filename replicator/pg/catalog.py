"""Read a live database's catalog into the pure `Catalog` (I/O edge).

Only fixed SQL text is sent; the schema names travel as bound parameters, so
no SQL is ever built from identifiers here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import psycopg

from replicator.core.mapping.catalog import (
    Catalog,
    Column,
    ForeignKey,
    PgType,
    ReplicaIdentity,
    Table,
    parse_or_opaque,
)
from replicator.core.model import TableRef

_COLUMNS_SQL = """
SELECT n.nspname, c.relname, c.relreplident, a.attname,
       -- a domain column is judged by its base type (its CHECK refuses rows when written)
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
            ELSE format_type(a.atttypid, a.atttypmod) END,
       a.attnotnull OR (t.typtype = 'd' AND t.typnotnull),
       (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''),
       t.typtype = 'e' OR (et.typtype IS NOT NULL AND et.typtype = 'e'),
       COALESCE(
         (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e
           WHERE e.enumtypid = CASE WHEN t.typelem <> 0 THEN t.typelem ELSE t.oid END),
         ARRAY[]::text[]),
       t.typcategory = 'A',
       a.attgenerated = 's',
       -- a user-defined composite or range type (Debezium leaves such columns out of its events)
       (SELECT CASE WHEN s.typtype = 'c' THEN 'composite'
                    WHEN s.typtype = 'r' AND s.typnamespace <> 'pg_catalog'::regnamespace THEN 'range' END
          FROM pg_type b JOIN pg_type s
            ON s.oid = CASE WHEN b.typcategory = 'A' AND b.typelem <> 0 THEN b.typelem ELSE b.oid END
         WHERE b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typelem <> 0
WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%(schemas)s)
ORDER BY n.nspname, c.relname, a.attnum
"""

_CONSTRAINTS_SQL = """
SELECT n.nspname, c.relname, k.conname, k.contype,
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
             ORDER BY u.i),
       rn.nspname, rc.relname,
       ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY AS u(attnum, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum
             ORDER BY u.i),
       k.condeferrable, k.confdeltype = 'c'
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class rc ON rc.oid = k.confrelid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE k.contype IN ('p', 'u', 'f') AND n.nspname = ANY(%(schemas)s)
ORDER BY n.nspname, c.relname, k.conname
"""

_UNIQUE_INDEX_SQL = """
SELECT n.nspname, c.relname,
       ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS u(attnum, o)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum
             ORDER BY u.o)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique AND NOT i.indisprimary AND i.indpred IS NULL AND i.indexprs IS NULL
  AND n.nspname = ANY(%(schemas)s)
"""

_REPLIDENT: dict[str, ReplicaIdentity] = {"d": "default", "f": "full", "i": "index", "n": "nothing"}


def read_catalog(conn: psycopg.Connection[Any], schemas: Sequence[str]) -> Catalog:
    """Read the tables of `schemas` from a live psycopg connection.

    Only fixed SQL text is sent; `schemas` travels as a bound parameter.
    Unique indexes without a predicate count as unique constraints (ON CONFLICT
    can use them).
    """
    params = {"schemas": list(schemas)}
    cols: dict[TableRef, list[Column]] = {}
    replident: dict[TableRef, ReplicaIdentity] = {}
    with conn.cursor() as cur:
        cur.execute(_COLUMNS_SQL, params)
        for (
            nsp,
            rel,
            ident,
            att,
            typ,
            notnull,
            hasdef,
            is_enum,
            labels,
            is_array,
            generated,
            user_kind,
        ) in cur.fetchall():
            ref = TableRef(nsp, rel)
            replident[ref] = _REPLIDENT.get(ident, "default")
            if is_enum:
                pg_type = PgType("enum", is_enum=True, is_array=bool(is_array))
            else:
                pg_type = parse_or_opaque(typ)
                if user_kind is not None:
                    pg_type = dataclasses.replace(pg_type, user_kind=user_kind)
            cols.setdefault(ref, []).append(
                Column(
                    att,
                    pg_type,
                    nullable=not notnull,
                    has_default=bool(hasdef),
                    enum_labels=tuple(labels or ()),
                    generated=bool(generated),
                )
            )
        pks: dict[TableRef, tuple[str, ...]] = {}
        uniques: dict[TableRef, list[tuple[str, ...]]] = {}
        deferrable_uniques: dict[TableRef, list[tuple[str, ...]]] = {}
        fks: dict[TableRef, list[ForeignKey]] = {}
        cur.execute(_CONSTRAINTS_SQL, params)
        for nsp, rel, name, kind, conkey, rnsp, rrel, confkey, deferrable, cascades in cur.fetchall():
            ref = TableRef(nsp, rel)
            if kind == "p":
                pks[ref] = tuple(conkey)
            elif kind == "u":
                uniques.setdefault(ref, []).append(tuple(conkey))
                if deferrable:
                    deferrable_uniques.setdefault(ref, []).append(tuple(conkey))
            else:
                fks.setdefault(ref, []).append(
                    ForeignKey(
                        name,
                        tuple(conkey),
                        TableRef(rnsp, rrel),
                        tuple(confkey),
                        bool(deferrable),
                        bool(cascades),
                    )
                )
        cur.execute(_UNIQUE_INDEX_SQL, params)
        for nsp, rel, idxcols in cur.fetchall():
            key = tuple(idxcols)
            bucket = uniques.setdefault(TableRef(nsp, rel), [])
            if key not in bucket:
                bucket.append(key)
    tables = {
        ref: Table(
            ref=ref,
            columns=tuple(c),
            primary_key=pks.get(ref, ()),
            unique=tuple(uniques.get(ref, ())),
            foreign_keys=tuple(fks.get(ref, ())),
            replica_identity=replident[ref],
            deferrable_unique=tuple(deferrable_uniques.get(ref, ())),
        )
        for ref, c in cols.items()
    }
    return Catalog(tables)


def partitions(conn: psycopg.Connection[Any], schemas: Sequence[str]) -> frozenset[TableRef]:
    """The tables of `schemas` that are partitions of another (their rows are its rows)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relispartition AND n.nspname = ANY(%(schemas)s)",
        {"schemas": list(schemas)},
    ).fetchall()
    return frozenset(TableRef(nsp, rel) for nsp, rel in rows)
