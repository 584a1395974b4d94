"""`replicator verify`: read the source and the target, compare through the mapping.

Reads every current source row of the mapped tables and every target row,
then `core.verify` decides: missing, extra, mismatched, placeholders, and
rows absent because they are error records. Read-only on both sides.

`compare_marked` is the same verify, each side read in one REPEATABLE READ
snapshot whose xmin it keeps (`Baseline`); `compare_since` then verifies
again reading only the key columns of unchanged rows, on both sides: a row changed since
a snapshot if its xmin is at or after that snapshot's xmin (modulo 2^32;
transactions that were running then count as changed, also through their
subtransactions, which the snapshot does not list). Rows that changed, and
keys that differed before, are compared value by value; missing and extra
rows over all keys. The cutover uses it inside the write-downtime window.

Lookup columns are resolved in the target the way the writer resolves them
(`target.lookups`: the same stage, join and `on_missing`), and the `take`
text is cast to the target column's type by the target; a value the lookup
cannot give is an expected error record of the column's rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from replicator.config import Settings
from replicator.core.intents import key_text
from replicator.core.mapping.plan import LookupRef, Plan, TablePlan
from replicator.core.model import TableRef
from replicator.core.values import JsonText
from replicator.core.verify import (
    Expectation,
    Rows,
    TableBaseline,
    TableDiff,
    collect,
    diff,
    expect,
    expect_since,
)
from replicator.pg.session import connect
from replicator.pg.types import exact_rows, register_types
from replicator.run.assembly import target_plan, target_topics
from replicator.run.status import table_status
from replicator.target.lookups import LookupResolver
from replicator.target.store import ControlStore

_ITERSIZE = 256  # rows per round trip of `_stream`'s server-side cursor


def _json_text(data: bytes | bytearray | memoryview | str) -> JsonText:
    return JsonText(data if isinstance(data, str) else bytes(data).decode())


def _stream(
    conn: psycopg.Connection[Any], query: sql.Composed, params: Sequence[Any] | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of `query` through a server-side cursor, inside the caller's transaction: libpq
    never holds a whole table's result beside its rows. json and jsonb come as their text
    (`JsonText`): `core.verify.same` parses a document only when its texts differ (trial 17: a
    verify of megabyte documents parsed into objects peaked at 8.4 GB)."""
    with conn.cursor("replicator_verify", row_factory=dict_row) as cur:
        set_json_loads(_json_text, cur)
        cur.itersize = _ITERSIZE
        cur.execute(query, params)
        yield from cur


def _keys(conn: psycopg.Connection[Any], query: sql.Composed) -> list[tuple[Any, ...]]:
    """Rows of key columns (small), json read as `_stream` reads it."""
    with conn.cursor() as cur:
        set_json_loads(_json_text, cur)
        return list(cur.execute(query))


def _table_rows(conn: psycopg.Connection[Any], ref: TableRef) -> Iterator[dict[str, Any]]:
    return _stream(conn, sql.SQL("SELECT * FROM {}").format(sql.Identifier(ref.schema, ref.name)))


def read_target(
    conn: psycopg.Connection[Any], table: TablePlan, store: ControlStore, only: set[str] | None = None
) -> Rows:
    """Target rows by key, leaving out rows the source deleted that the spec keeps. With `only`,
    the values of those keys alone: every other key maps to no values (its presence is all a
    `diff` with `only` reads), so a table of big values is not read whole to compare a few rows.
    The second read finds the rows by ctid: stable inside the caller's REPEATABLE READ snapshot."""
    cols = [c.target for c in table.columns]
    ref = sql.Identifier(table.target.schema, table.target.name)
    rows: Rows = {}
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
    if only is None:
        for row in _stream(conn, sql.SQL("SELECT {} FROM {}").format(columns, ref)):
            rows[key_text(tuple(row[k] for k in table.key))] = row
    else:
        wanted: list[str] = []  # ctids of the rows whose values are compared
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in table.key)
        for ctid, *values in _keys(conn, sql.SQL("SELECT ctid::text, {} FROM {}").format(keys, ref)):
            text = key_text(tuple(values))
            rows[text] = {}
            if text in only:
                wanted.append(str(ctid))
        query = sql.SQL("SELECT {} FROM {} WHERE ctid = ANY(%s::tid[])").format(columns, ref)
        for row in _stream(conn, query, (wanted,)):
            rows[key_text(tuple(row[k] for k in table.key))] = row
    if table.delete.kind in ("soft", "ignore"):
        for key in store.deleted_keys(table.target):
            rows.pop(key, None)
    return rows


def resolve_lookups(
    conn: psycopg.Connection[Any], plan: Plan, table: TablePlan, expectations: list[Expectation]
) -> list[Expectation]:
    """The expectations with every `LookupRef` replaced by what the target's lookup table gives
    now, typed as the target column; a value the lookup cannot give makes the row rejected by the
    column's rule (the writer made it an error record). Inside the caller's transaction."""
    if not table.lookup_columns:
        return expectations
    refs = [
        v
        for e in expectations
        if e.values is not None
        for c in table.lookup_columns
        if isinstance(v := e.values.get(c.target), LookupRef)
    ]
    if not refs:
        return expectations
    resolver = LookupResolver(plan)
    with conn.transaction():
        resolver.prepare_session(conn)
        found = resolver.read(conn, refs)
    typed: dict[str, dict[str, Any]] = {}  # column -> take text -> value of the column's type
    for c in table.lookup_columns:  # each column's own texts: another column's may not cast
        texts = sorted(
            {
                got.value
                for e in expectations
                if e.values is not None and isinstance(v := e.values.get(c.target), LookupRef)
                if (got := found[(id(v.lookup), key_text(v.values))]).value is not None
            }
        )
        with exact_rows(conn.cursor()) as cur:
            rows = cur.execute(
                sql.SQL("SELECT t, t::{} FROM unnest(%s::text[]) AS t").format(sql.SQL(c.target_type)),
                (texts,),
            ).fetchall()
        typed[c.target] = {t: v for t, v in rows}
    out: list[Expectation] = []
    for e in expectations:
        if e.values is None:
            out.append(e)
            continue
        values = dict(e.values)
        rejected: str | None = None
        for c in table.lookup_columns:
            v = values.get(c.target)
            if not isinstance(v, LookupRef):
                continue
            got = found[(id(v.lookup), key_text(v.values))]
            if got.problem is not None:
                rejected = rejected or c.rule_id
            values[c.target] = None if got.value is None else typed[c.target][got.value]
        out.append(
            Expectation(e.source_key, rule_id=rejected)
            if rejected is not None
            else Expectation(e.source_key, e.key, values)
        )
    return out


def compare(
    plan: Plan,
    source: psycopg.Connection[Any],
    target: psycopg.Connection[Any],
    control_schema: str,
    placeholder: str = "__debezium_unavailable_value",
) -> list[TableDiff]:
    """Every mapped table of the target against the mapped source, through open sessions (no
    baseline kept: memory is one table's rows, source and target, at a time)."""
    return compare_marked(plan, source, target, control_schema, placeholder, keep=False)[0]


@dataclass(frozen=True, slots=True)
class Baseline:
    """A verify read at two snapshots (their xmin, modulo 2^32) and what it saw per table; a table
    it does not hold is compared in full by `compare_since`."""

    source_xmin: int
    target_xmin: int
    tables: Mapping[TableRef, TableBaseline]
    rows: int  # expected rows it compared


@contextmanager
def _snapshot(conn: psycopg.Connection[Any]) -> Iterator[int]:
    """One REPEATABLE READ transaction; yields its snapshot's xmin modulo 2^32."""
    level = conn.isolation_level
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296"
            ).fetchone()
            assert row is not None
            yield int(row[0])
    finally:
        conn.isolation_level = level


def _changed_since(xmin: int) -> sql.Composable:
    """True for a row written by a transaction at or after the snapshot xmin (circular xid order)."""
    return sql.SQL("((xmin::text::bigint - {} + 4294967296) % 4294967296) < 2147483648").format(
        sql.Literal(xmin)
    )


def compare_marked(
    plan: Plan,
    source: psycopg.Connection[Any],
    target: psycopg.Connection[Any],
    control_schema: str,
    placeholder: str = "__debezium_unavailable_value",
    keep: bool = True,
) -> tuple[list[TableDiff], Baseline]:
    """`compare`, each side read in one snapshot, and the baseline for `compare_since` (without
    `keep`, an empty one). Both snapshots stay open while the tables are compared one by one, each
    reading its source table (again, for a table another rule reads too): memory holds one table's
    rows at a time, unless a baseline keeps its expectations."""
    store = ControlStore(target, control_schema)
    diffs: list[TableDiff] = []
    tables: dict[TableRef, TableBaseline] = {}
    with _snapshot(source) as source_xmin, _snapshot(target) as target_xmin:
        store.require()
        for t in plan.tables:
            rows = (expect(t, row) for row in _table_rows(source, t.source))
            expectations = resolve_lookups(target, plan, t, list(rows))
            errored, accepted = store.error_keys(t.target)
            result = diff(
                t,
                *collect(expectations),
                read_target(target, t, store),
                placeholder,
                errored=errored,
                held=store.held_keys(t.target),
                accepted=accepted,
            )
            diffs.append(result)
            baseline = TableBaseline.of(t, expectations, result) if keep else None
            if baseline is not None:
                tables[t.target] = baseline
    return diffs, Baseline(source_xmin, target_xmin, tables, sum(d.expected for d in diffs))


def _source_since(
    conn: psycopg.Connection[Any], table: TablePlan, xmin: int
) -> tuple[list[str], list[dict[str, Any]]]:
    """The source keys of rows unchanged since `xmin`, and the changed rows whole."""
    ref = sql.Identifier(table.source.schema, table.source.name)
    changed = _changed_since(xmin)
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in table.key_sources)
    unchanged = [
        key_text(row)
        for row in _keys(conn, sql.SQL("SELECT {} FROM {} WHERE NOT ({})").format(keys, ref, changed))
    ]
    return unchanged, list(_stream(conn, sql.SQL("SELECT * FROM {} WHERE {}").format(ref, changed)))


def _target_changed(conn: psycopg.Connection[Any], table: TablePlan, xmin: int) -> set[str]:
    """Target keys of rows written since `xmin` (directly, or by the replicator)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {} WHERE {}").format(
                sql.SQL(", ").join(sql.Identifier(k) for k in table.key),
                sql.Identifier(table.target.schema, table.target.name),
                _changed_since(xmin),
            )
        )
        return {key_text(tuple(row)) for row in cur}


def compare_since(
    plan: Plan,
    source: psycopg.Connection[Any],
    target: psycopg.Connection[Any],
    control_schema: str,
    baseline: Baseline,
    placeholder: str = "__debezium_unavailable_value",
) -> tuple[list[TableDiff], int]:
    """`compare` again, comparing values only where `baseline` cannot vouch for them. Returns the
    diffs (as a full `compare` would give them) and how many rows were compared value by value."""
    expected: dict[TableRef, tuple[Rows, list[tuple[str, str]], set[str] | None]] = {}
    full: dict[TableRef, list[Expectation]] = {}  # compared in full (lookups resolved in the target)
    with _snapshot(source):
        for t in plan.tables:
            kept = baseline.tables.get(t.target)
            since = None
            if kept is not None and t.key_sources:
                unchanged, changed = _source_since(source, t, baseline.source_xmin)
                since = expect_since(kept, unchanged, (expect(t, row) for row in changed))
            if since is None:  # no baseline for this table: every row is compared
                full[t.target] = [expect(t, row) for row in _table_rows(source, t.source)]
            else:
                expected[t.target] = since
    store = ControlStore(target, control_schema)
    diffs: list[TableDiff] = []
    compared = 0
    with _snapshot(target):
        store.require()
        for ref, expectations in full.items():
            table = next(t for t in plan.tables if t.target == ref)
            expected[ref] = (*collect(resolve_lookups(target, plan, table, expectations)), None)
        for t in plan.tables:
            rows, rejected, again = expected[t.target]
            if again is not None:
                again |= _target_changed(target, t, baseline.target_xmin)
            actual = read_target(target, t, store, again)
            compared += len(rows) if again is None else len(again)
            errored, accepted = store.error_keys(t.target)
            diffs.append(
                diff(
                    t,
                    rows,
                    rejected,
                    actual,
                    placeholder,
                    errored=errored,
                    held=store.held_keys(t.target),
                    only=again,
                    accepted=accepted,
                )
            )
    return diffs, compared


def verify(
    plan: Plan,
    source_conninfo: str,
    target_conninfo: str,
    control_schema: str,
    placeholder: str = "__debezium_unavailable_value",
) -> list[TableDiff]:
    """`compare` on sessions opened from connection strings (tests pass administrator ones)."""
    with psycopg.connect(source_conninfo) as src, psycopg.connect(target_conninfo, autocommit=True) as tgt:
        register_types(src)
        register_types(tgt)
        return compare(plan, src, tgt, control_schema, placeholder)


def verify_configured(settings: Settings) -> tuple[list[TableDiff], list[dict[str, Any]]]:
    """`replicator verify`: the configured spec, source and target, and each target table's state
    (`run.status.table_status`: a stopped table is not clean), both read on one target session."""
    plan = target_plan(settings)
    with connect(settings.source, "source") as src, ControlStore.open(settings) as store:
        store.require()
        diffs = compare(plan, src, store.conn, settings.control_schema, settings.unavailable_placeholder)
        return diffs, table_status(store, settings.kafka.group_id, target_topics(settings))
