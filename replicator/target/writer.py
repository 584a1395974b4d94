"""The target writer (I/O edge): one batch, one target transaction.

Inside the transaction, in this order:
1. lock the stored versions of every key the batch touches (placeholder rows
   + SELECT ... FOR UPDATE, keys sorted), so a stale instance's late batch
   waits and then sees the newer versions, and its writes become no-ops;
2. resolve intents against those versions (pure, `batching.resolve`);
3. set-based writes: COPY into a per-session stage table, then one guarded
   statement per table and column set: upserts parents-first, deletes
   children-first; unchanged-TOAST columns are never written;
4. store the new versions, the error records and the checkpoints
   (next offset per partition, never moved backwards).
Commit. Kafka offsets are committed by the caller only after this returns.

A row-level SQL error (data exception, NOT NULL, CHECK, FK, unique) rolls the
statement back to its savepoint and the rows are retried one by one, so only
the bad rows become error records; their neighbours land. Transient errors
surface as `Transient` (the caller retries the whole batch), others as `Fatal`.
The error policy (`ErrorPolicy`) is applied here, once, before the commit.

Where rows, versions and error records go is a `WriteTarget`, given to the
writer: `LiveTables` (the real target tables, `row_version`, `error_record`)
or the shadow's clones (`target.shadow`). The writer never knows which.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from replicator import failpoints
from replicator.config import TargetSettings
from replicator.core.errors import REORDER_SQLSTATES, Fatal, Transient, one_line
from replicator.core.intents import Intent, Kind, PreparedBatch, key_text
from replicator.core.mapping.plan import Narrowing, Plan, TablePlan
from replicator.core.model import BatchResult, Failure, Partition, SourcePosition, TableRef
from replicator.core.ordering import Verdict, Version, compare
from replicator.core.resolve import TableWrites, resolve, split_at_truncates
from replicator.core.values import Infinity
from replicator.pg.errors import is_row_error, is_transient, sqlstate
from replicator.pg.session import connect
from replicator.target import control


class _RetryBatch(Exception):
    """Roll the batch back and apply it again (reordering suspected)."""


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """What a batch with error records does: `record` commits them with the batch, `halt` rolls
    the batch back and stops (the cursor stays before it)."""

    on_error: Literal["record", "halt"] = "record"

    def check(self, result: BatchResult) -> None:
        if self.on_error == "halt" and result.errors:
            first = result.errors[0]
            raise Fatal(
                f"{first.ref}: {first.rule_id}: {first.message} "
                "(--on-error=halt: batch rolled back, cursor kept)"
            )


class WriteTarget(Protocol):
    """Where a batch's rows, versions and error records go (live tables or shadow clones)."""

    @property
    def plan(self) -> Plan: ...
    @property
    def versions(self) -> sql.Composable: ...
    @property
    def reorder_retries(self) -> int: ...
    def prepare_session(self, conn: psycopg.Connection[Any]) -> None: ...
    def before_writes(
        self, conn: psycopg.Connection[Any], by_table: Mapping[TableRef, list[Intent]]
    ) -> None: ...
    def after_writes(
        self, conn: psycopg.Connection[Any], writes: Sequence[TableWrites], result: BatchResult
    ) -> None: ...
    def before_truncate(self, conn: psycopg.Connection[Any], intent: Intent) -> None: ...
    def store_errors(
        self,
        conn: psycopg.Connection[Any],
        failures: Sequence[Failure],
        notes: Sequence[tuple[Intent, Narrowing]],
    ) -> None: ...


def _adapter(target_type: str) -> Callable[[Any], Any]:
    base = target_type.lower()
    if base in ("json", "jsonb"):
        return lambda v: None if v is None else Jsonb(v)
    return lambda v: str(v) if isinstance(v, Infinity) else v


def _truncate_key(intent: Intent) -> str:
    return f"!truncate/{intent.event.ref.topic}/{intent.event.ref.partition}"


class BatchWriter:
    """Applies prepared batches to a `WriteTarget`, one target transaction per batch."""

    def __init__(
        self,
        target_settings: TargetSettings,
        target: WriteTarget,
        control_schema: str,
        group_id: str,
        run_id: str,
        policy: ErrorPolicy = ErrorPolicy(),
        connector: Callable[[], psycopg.Connection[Any]] | None = None,
    ) -> None:
        self._connector = connector or (lambda: connect(target_settings, "target"))
        self.target = target
        self.plan = target.plan
        self.schema = control_schema
        self.group_id = group_id
        self.run_id = run_id
        self.policy = policy
        self._conn: psycopg.Connection[Any] | None = None
        self._versions = target.versions
        self._tables = {t.target: t for t in self.plan.tables}
        order = list(self.plan.apply_order) + [
            t.target for t in self.plan.tables if t.target not in self.plan.apply_order
        ]
        self._order: list[TableRef] = list(dict.fromkeys(order))
        self._adapters: dict[TableRef, dict[str, Callable[[Any], Any]]] = {
            t.target: {c.target: _adapter(c.target_type) for c in (*t.columns, *t.delete.set_columns)}
            for t in self.plan.tables
        }

    # ------------------------------------------------------------------ connection
    def connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = self._connector()
        try:
            self.target.prepare_session(conn)
        except psycopg.Error as exc:
            conn.close()
            raise self._classify(exc) from exc
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _classify(self, exc: psycopg.Error) -> Exception:
        if is_transient(exc):
            self.close()
            return Transient(one_line(exc))
        return Fatal(f"target: {one_line(exc)} (SQLSTATE {sqlstate(exc)})")

    # ------------------------------------------------------------------ checkpoints
    def stored_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        conn = self.connect()
        try:
            with conn.transaction():
                rows = conn.execute(
                    sql.SQL(
                        "SELECT topic, partition, next_offset FROM {} WHERE group_id = %s"
                        " AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
                    ).format(control.table(self.schema, "checkpoint")),
                    (self.group_id, [t for t, _ in partitions], [p for _, p in partitions]),
                ).fetchall()
        except psycopg.Error as exc:
            raise self._classify(exc) from exc
        return {(t, p): o for t, p, o in rows}

    # ------------------------------------------------------------------ apply
    def apply(self, batch: PreparedBatch) -> BatchResult:
        """Apply one batch in one transaction; raises Transient or Fatal.

        FK and unique violations may come from reordering across partitions (a
        child before its parent, two rows swapping a unique value): the whole
        batch is rolled back and retried after a growing pause, a bounded number
        of times, before those rows become error records.
        """
        retries = self.target.reorder_retries
        for attempt in range(retries + 1):
            conn = self.connect()
            try:
                with conn.transaction():
                    result = self._apply(conn, batch)
                    if attempt < retries and any(f.sqlstate in REORDER_SQLSTATES for f in result.errors):
                        raise _RetryBatch
                    self.policy.check(result)
                    failpoints.hit("before_target_commit")
                return result
            except _RetryBatch:
                time.sleep(0.25 * 2**attempt)  # another instance may apply the parent meanwhile
            except psycopg.Error as exc:
                raise self._classify(exc) from exc
        raise AssertionError("unreachable: the last attempt commits")

    def _apply(self, conn: psycopg.Connection[Any], batch: PreparedBatch) -> BatchResult:
        result = BatchResult()
        result.errors.extend(batch.failures)
        self.target.before_writes(conn, batch.by_table)
        notes: list[tuple[Intent, Narrowing]] = []
        resolved: list[TableWrites] = []
        for target in self._order:
            table_intents = batch.by_table.get(target)
            if not table_intents:
                continue
            table = self._tables[target]
            segments = split_at_truncates(table_intents)
            if len(segments) == 1 and segments[0][0].kind is not Kind.TRUNCATE:
                resolved.append(self._resolve(conn, table, segments[0], result))
                continue
            # A truncate is a barrier: this table's segments run in order, now.
            for segment in segments:
                if segment[0].kind is Kind.TRUNCATE:
                    self._truncate(conn, segment[0], result)
                else:
                    writes = self._resolve(conn, table, segment, result)
                    self._write_upserts(conn, writes, result)
                    self._write_deletes(conn, writes, result)
                    self._store_versions(conn, writes, result)
                    self.target.after_writes(conn, [writes], result)
        for writes in resolved:
            self._write_upserts(conn, writes, result)
        failpoints.hit("mid_batch")
        for writes in reversed(resolved):
            self._write_deletes(conn, writes, result)
        for writes in resolved:
            notes.extend((i, n) for i in writes.final.values() for n in i.notes)
            self._store_versions(conn, writes, result)
        self.target.after_writes(conn, resolved, result)
        self.target.store_errors(conn, result.errors, notes)
        result.truncated_notes = len(notes)
        self._store_checkpoints(conn, batch.next_offsets)
        return result

    # ------------------------------------------------------------------ versions
    def _resolve(
        self,
        conn: psycopg.Connection[Any],
        table: TablePlan,
        intents: Sequence[Intent],
        result: BatchResult,
    ) -> TableWrites:
        by_text = {key_text(i.key): i.key for i in intents}
        keys = sorted(by_text)
        stored = self._lock_versions(conn, table.target, keys)
        writes = resolve(table, intents, {by_text[k]: v for k, v in stored.items()})
        writes.unversioned = frozenset(k for k in keys if k not in stored)
        result.skipped_older += writes.skipped_older
        result.unordered += writes.unordered
        return writes

    def _lock_versions(
        self, conn: psycopg.Connection[Any], target: TableRef, keys: list[str]
    ) -> dict[str, Version]:
        rv = self._versions
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (target_table, key) SELECT %s, k FROM unnest(%s::text[]) AS k"
                " ORDER BY k ON CONFLICT DO NOTHING"
            ).format(rv),
            (str(target), keys),
        )
        rows = conn.execute(
            sql.SQL(
                "SELECT key, topic, partition, kafka_offset, commit_lsn, lsn, total_order, deleted"
                " FROM {} WHERE target_table = %s AND key = ANY(%s) ORDER BY key FOR UPDATE"
            ).format(rv),
            (str(target), keys),
        ).fetchall()
        stored: dict[str, Version] = {}
        for key, topic, partition, offset, commit_lsn, lsn, total_order, deleted in rows:
            if offset is None:
                continue  # placeholder: no event applied yet
            position = None if lsn is None else SourcePosition(int(commit_lsn), int(lsn), int(total_order))
            stored[key] = Version(topic, partition, offset, position, deleted)
        return stored

    def _store_versions(
        self, conn: psycopg.Connection[Any], writes: TableWrites, result: BatchResult
    ) -> None:
        failed = {key for target, key in result.unwritten if target == writes.table.target}
        texts = ((key_text(k), v) for k, v in writes.versions.items())
        rows = [(text, v) for text, v in texts if text not in failed]
        rv = self._versions
        target = str(writes.table.target)
        if rows:
            conn.execute(
                sql.SQL(
                    "UPDATE {} AS v SET topic = u.topic, partition = u.partition,"
                    " kafka_offset = u.off, commit_lsn = u.c, lsn = u.l, total_order = u.o,"
                    " deleted = u.d FROM unnest(%s::text[], %s::text[], %s::int[], %s::bigint[],"
                    " %s::numeric[], %s::numeric[], %s::bigint[], %s::bool[])"
                    " AS u(key, topic, partition, off, c, l, o, d)"
                    " WHERE v.target_table = %s AND v.key = u.key"
                ).format(rv),
                (
                    [k for k, _ in rows],
                    [v.topic for _, v in rows],
                    [v.partition for _, v in rows],
                    [v.offset for _, v in rows],
                    [v.position.commit_lsn if v.position else None for _, v in rows],
                    [v.position.lsn if v.position else None for _, v in rows],
                    [v.position.total_order if v.position else None for _, v in rows],
                    [v.deleted for _, v in rows],
                    target,
                ),
            )
        # The placeholder rows `_lock_versions` inserted and no version replaced (failed keys):
        # by key, not a scan of every version of the table (that grew with the table, per batch).
        leftover = sorted(writes.unversioned.difference(k for k, _ in rows))
        if leftover:
            conn.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE target_table = %s AND key = ANY(%s) AND kafka_offset IS NULL"
                ).format(rv),
                (target, leftover),
            )

    # ------------------------------------------------------------------ writes
    def _stage(
        self,
        conn: psycopg.Connection[Any],
        table: TablePlan,
        cols: tuple[str, ...],
        intents: Sequence[Intent],
    ) -> None:
        adapters = self._adapters[table.target]
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table.statements.stage)))
        with conn.cursor().copy(table.statements.copy_stage(cols)) as copy:
            for intent in intents:
                copy.write_row([adapters[c](intent.values[c]) for c in cols])

    def _run_isolated(
        self,
        conn: psycopg.Connection[Any],
        table: TablePlan,
        cols: tuple[str, ...],
        intents: Sequence[Intent],
        statement: sql.Composed,
        op: str,
        result: BatchResult,
    ) -> None:
        """Set-based first; on a row-level error, row by row so only bad rows fail."""
        try:
            with conn.transaction():
                self._stage(conn, table, cols, intents)
                conn.execute(statement)
            result.applied[f"{table.target}:{op}"] += len(intents)
            return
        except psycopg.Error as exc:
            if not is_row_error(exc):
                raise
        for intent in intents:
            try:
                with conn.transaction():
                    self._stage(conn, table, cols, [intent])
                    conn.execute(statement)
                result.applied[f"{table.target}:{op}"] += 1
            except psycopg.Error as exc:
                if not is_row_error(exc):
                    raise
                result.not_written(self._row_failure(intent, table, exc))

    def _row_failure(self, intent: Intent, table: TablePlan, exc: psycopg.Error) -> Failure:
        diag = exc.diag
        column = diag.column_name or ""
        rule = next((c.rule_id for c in table.columns if c.target == column), table.rule_id)
        detail = one_line(exc)
        if diag.message_detail:
            detail += f" ({diag.message_detail.splitlines()[0]})"
        return Failure(
            ref=intent.event.ref,
            rule_id=rule,
            message=detail,
            raw_key=intent.event.raw_key,
            raw_value=intent.event.raw_value,
            target=table.target,
            key=key_text(intent.key),
            sqlstate=sqlstate(exc),
        )

    def _write_upserts(self, conn: psycopg.Connection[Any], writes: TableWrites, result: BatchResult) -> None:
        table = writes.table
        all_cols = tuple(c.target for c in table.columns)
        for missing, intents in writes.upsert_groups().items():
            cols = tuple(c for c in all_cols if c not in missing)
            if not missing:
                self._run_isolated(
                    conn, table, cols, intents, table.statements.upsert(cols), "upsert", result
                )
                continue
            # Unchanged TOAST columns: update the existing row, never write a placeholder.
            present = self._present_keys(conn, table, intents)
            absent = [i for i in intents if key_text(i.key) not in present]
            for intent in absent:
                result.not_written(
                    Failure(
                        ref=intent.event.ref,
                        rule_id=next(c.rule_id for c in table.columns if c.target in missing),
                        message=f"columns {sorted(missing)} are unchanged TOAST values (not sent by "
                        "Debezium) and the row is absent from the target; fix: set REPLICA IDENTITY "
                        "FULL on the source table or re-snapshot it",
                        raw_key=intent.event.raw_key,
                        raw_value=intent.event.raw_value,
                        target=table.target,
                        key=key_text(intent.key),
                    )
                )
            there = [i for i in intents if key_text(i.key) in present]
            if there:
                self._run_isolated(
                    conn, table, cols, there, table.statements.update_only(cols), "upsert", result
                )

    def _present_keys(
        self, conn: psycopg.Connection[Any], table: TablePlan, intents: Sequence[Intent]
    ) -> set[str]:
        self._stage(conn, table, table.key, intents)
        rows = conn.execute(table.statements.select_keys(table.key)).fetchall()
        return {key_text(tuple(r)) for r in rows}

    def _write_deletes(self, conn: psycopg.Connection[Any], writes: TableWrites, result: BatchResult) -> None:
        table = writes.table
        hard = writes.by_kind(Kind.DELETE)
        if hard:
            self._run_isolated(conn, table, table.key, hard, table.statements.delete_keys, "delete", result)
        soft = writes.by_kind(Kind.SOFT_DELETE)
        if soft:
            cols = tuple(soft[0].values)
            self._run_isolated(
                conn, table, cols, soft, table.statements.soft_delete(cols), "soft_delete", result
            )
        ignored = writes.by_kind(Kind.IGNORE)
        if ignored:
            result.applied[f"{table.target}:delete_ignored"] += len(ignored)

    def _truncate(self, conn: psycopg.Connection[Any], intent: Intent, result: BatchResult) -> None:
        self.target.before_truncate(conn, intent)
        table = intent.table
        marker = _truncate_key(intent)
        stored = self._lock_versions(conn, table.target, [marker]).get(marker)
        if compare(intent.version, stored) is Verdict.OLDER:
            result.skipped_older += 1
            return
        policy = table.truncate.kind
        if policy == "error":
            raise Fatal(
                f"{table.truncate.rule_id}: source table {table.source} was truncated at "
                f"{intent.event.ref} and the spec says truncate: error; decide, then set the "
                "policy to truncate, delete or ignore"
            )
        if policy in ("truncate", "delete"):
            stmt = table.statements.truncate if policy == "truncate" else table.statements.delete_all
            conn.execute(stmt)
        result.applied[f"{table.target}:truncate_{policy}"] += 1
        rv = self._versions
        v = intent.version
        conn.execute(
            sql.SQL(
                "UPDATE {} SET topic = %s, partition = %s, kafka_offset = %s, commit_lsn = %s,"
                " lsn = %s, total_order = %s, deleted = true WHERE target_table = %s AND key = %s"
            ).format(rv),
            (
                v.topic,
                v.partition,
                v.offset,
                v.position.commit_lsn if v.position else None,
                v.position.lsn if v.position else None,
                v.position.total_order if v.position else None,
                str(table.target),
                marker,
            ),
        )

    def _store_checkpoints(
        self, conn: psycopg.Connection[Any], offsets: Mapping[tuple[str, int], int]
    ) -> None:
        if not offsets:
            return
        items = sorted(offsets.items())
        conn.execute(
            sql.SQL(
                "INSERT INTO {0} AS c (group_id, topic, partition, next_offset, run_id, updated_at)"
                " SELECT %s, t, p, o, %s, now() FROM unnest(%s::text[], %s::int[], %s::bigint[])"
                " AS u(t, p, o) ON CONFLICT (group_id, topic, partition) DO UPDATE"
                " SET next_offset = EXCLUDED.next_offset, run_id = EXCLUDED.run_id, updated_at = now()"
                " WHERE c.next_offset < EXCLUDED.next_offset"
            ).format(control.table(self.schema, "checkpoint")),
            (
                self.group_id,
                self.run_id,
                [t for (t, _), _ in items],
                [p for (_, p), _ in items],
                [o for _, o in items],
            ),
        )


class LiveTables:
    """The live `WriteTarget`: the real target tables, `row_version` and `error_record`."""

    def __init__(
        self, plan: Plan, control_schema: str, group_id: str, run_id: str, reorder_retries: int
    ) -> None:
        self._plan = plan
        self._schema = control_schema
        self._group_id = group_id
        self._run_id = run_id
        self._retries = reorder_retries

    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def versions(self) -> sql.Composable:
        return control.table(self._schema, "row_version")

    @property
    def reorder_retries(self) -> int:
        return self._retries

    def prepare_session(self, conn: psycopg.Connection[Any]) -> None:
        """Once per connection: the control schema and the per-session stage tables."""
        control.ensure(conn, self._schema)
        with conn.transaction():
            for t in self._plan.tables:
                conn.execute(t.statements.create_stage)

    def before_writes(self, conn: psycopg.Connection[Any], by_table: Mapping[TableRef, list[Intent]]) -> None:
        """The live tables need nothing before a batch."""

    def after_writes(
        self, conn: psycopg.Connection[Any], writes: Sequence[TableWrites], result: BatchResult
    ) -> None:
        """Nothing to observe: the rows are the output."""

    def before_truncate(self, conn: psycopg.Connection[Any], intent: Intent) -> None:
        """Nothing to record before a truncate is applied."""

    def store_errors(
        self,
        conn: psycopg.Connection[Any],
        failures: Sequence[Failure],
        notes: Sequence[tuple[Intent, Narrowing]],
    ) -> None:
        rows: list[tuple[Any, ...]] = [
            (
                "error",
                self._run_id,
                self._group_id,
                f.ref.topic,
                f.ref.partition,
                f.ref.offset,
                str(f.target) if f.target else None,
                f.key,
                f.raw_key,
                f.raw_value,
                f.rule_id,
                f.sqlstate,
                f.message,
            )
            for f in failures
        ]
        rows.extend(
            (
                "truncated",
                self._run_id,
                self._group_id,
                i.event.ref.topic,
                i.event.ref.partition,
                i.event.ref.offset,
                str(i.table.target),
                key_text(i.key),
                i.event.raw_key,
                i.event.raw_value,
                n.rule_id,
                None,
                n.message,
            )
            for i, n in notes
        )
        if not rows:
            return
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (kind, run_id, group_id, topic, partition, kafka_offset,"
                    " target_table, key, raw_key, raw_value, rule_id, sqlstate, message)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(control.table(self._schema, "error_record")),
                rows,
            )
