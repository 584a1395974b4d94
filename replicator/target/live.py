"""The live write target: the real target tables, `row_version`, `held_event`, `error_record`,
`schema_stop`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from replicator.core.errors import Fatal
from replicator.core.intents import Fence, Intent, key_text
from replicator.core.mapping.plan import Narrowing, Plan
from replicator.core.model import BatchResult, Failure, Partition, TableRef
from replicator.core.resolve import TableWrites
from replicator.core.schema_change import Stop
from replicator.target import control
from replicator.target.stages import create_stage

# The batch's error records on their way into `error_record` (created once per session; emptied
# by TRUNCATE before each use, not at commit: see `target.rows.TRUNCATE_PAST_ROWS`).
_ERRORS = sql.Identifier("pg_temp", "replicator_batch_errors")
_ERRORS_DDL = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS {} (kind text, run_id text, group_id text, topic text, partition int,"
    " kafka_offset bigint, target_table text, key text, raw_key bytea, raw_value bytea, rule_id text,"
    " sqlstate text, message text, also jsonb, n int)"
).format(_ERRORS)
_COLUMNS = sql.SQL(
    "kind, run_id, group_id, topic, partition, kafka_offset, target_table, key, raw_key, raw_value,"
    " rule_id, sqlstate, message, also"
)
_REPORT = sql.SQL(
    "INSERT INTO {records} ({c}) SELECT {c} FROM ("
    "SELECT DISTINCT ON (topic, partition, kafka_offset, target_table, kind) * FROM {stage}"
    " ORDER BY topic, partition, kafka_offset, target_table, kind, n) AS e"
    " WHERE NOT EXISTS (SELECT FROM {records} r WHERE r.topic = e.topic AND r.partition = e.partition"
    " AND r.kafka_offset = e.kafka_offset AND r.target_table IS NOT DISTINCT FROM e.target_table"
    " AND r.kind = e.kind AND r.resolved_at IS NULL) ORDER BY e.n RETURNING kind"
)


class LiveTables:
    """The `WriteTarget` of `replicator run`."""

    def __init__(self, plan: Plan, control_schema: str, group_id: str, run_id: str) -> None:
        self._plan = plan
        self._schema = control_schema
        self._group_id = group_id
        self._run_id = run_id

    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def versions(self) -> sql.Composable:
        return control.table(self._schema, "row_version")

    @property
    def holds(self) -> sql.Composable:
        return control.table(self._schema, "held_event")

    def relation(self, table: TableRef) -> sql.Composable:
        return sql.Identifier(table.schema, table.name)

    def prepare_session(self, conn: psycopg.Connection[Any]) -> None:
        """Once per connection: the per-session stage tables. The control schema is this version's
        already: whatever opens a writer ensures it once at its start (`replicator run`; `errors
        retry`, by `require(upgrade=True)`)."""
        with conn.transaction():
            conn.execute(_ERRORS_DDL)
            for t in self._plan.tables:
                create_stage(conn, t.statements.create_stage, t.statements.stage)

    def before_writes(self, conn: psycopg.Connection[Any], by_table: Mapping[TableRef, list[Intent]]) -> None:
        """The authority check, in the batch's transaction and before its first write: the row is
        read FOR SHARE, so a cutover's flip waits for this batch and every later batch sees it."""
        row = conn.execute(
            sql.SQL("SELECT authority, cutover_id, since FROM {} FOR SHARE").format(
                control.table(self._schema, "authority")
            )
        ).fetchone()
        if row is not None and row[0] != "source":
            raise Fatal(
                f"the target is authoritative since {row[2]:%Y-%m-%d %H:%M:%S%z} (cutover {row[1]}): this "
                "forward replicator writes nothing to it and stops; nothing was written. Stop it for good, "
                "or `replicator cutover rollback` to make the source authoritative again"
            )

    def after_writes(
        self, conn: psycopg.Connection[Any], writes: Sequence[TableWrites], result: BatchResult
    ) -> None:
        """Nothing to observe: the rows are the output."""

    def before_truncate(self, conn: psycopg.Connection[Any], intent: Intent) -> None:
        """Nothing to record before a truncate is applied."""

    def store_fences(self, conn: psycopg.Connection[Any], fences: Sequence[Fence]) -> None:
        if not fences:
            return
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (fence_id, group_id, topic, partition, kafka_offset)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (fence_id) DO NOTHING"
                ).format(control.table(self._schema, "fence_seen")),
                [(f.fence_id, self._group_id, f.ref.topic, f.ref.partition, f.ref.offset) for f in fences],
            )

    def store_stops(
        self, conn: psycopg.Connection[Any], stops: Sequence[Stop], flowing: Sequence[Partition]
    ) -> None:
        """The partitions stopped by a schema change (re-stopped: the newest judgement), and the end
        of the stop of those that flow again."""
        table = control.table(self._schema, "schema_stop")
        if flowing:
            conn.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE group_id = %s"
                    " AND (topic, partition) IN (SELECT * FROM unnest(%b::text[], %s::int[]))"
                ).format(table),
                (self._group_id, [t for t, _ in flowing], [p for _, p in flowing]),
            )
        if not stops:
            return
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (group_id, topic, partition, kafka_offset, source_table, target_tables,"
                    " rule_id, reason, fix, columns, run_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (group_id, topic, partition) DO UPDATE SET"
                    " kafka_offset = EXCLUDED.kafka_offset, source_table = EXCLUDED.source_table,"
                    " target_tables = EXCLUDED.target_tables, rule_id = EXCLUDED.rule_id,"
                    " reason = EXCLUDED.reason, fix = EXCLUDED.fix, columns = EXCLUDED.columns,"
                    " run_id = EXCLUDED.run_id, seen_at = now()"
                ).format(table),
                [
                    (
                        self._group_id,
                        s.ref.topic,
                        s.ref.partition,
                        s.ref.offset,
                        str(s.source),
                        [str(t) for t in s.targets],
                        s.rule_id,
                        s.reason,
                        s.fix,
                        Jsonb(s.shape.to_json()) if s.shape is not None else None,
                        self._run_id,
                    )
                    for s in stops
                ],
            )

    def store_unread(self, conn: psycopg.Connection[Any], unread: Mapping[tuple[str, int, str], int]) -> None:
        """Add the batch's events of source tables no rule reads (`PreparedBatch.unread`) to their
        partition's count; one row per partition and table, which only the member owning the
        partition writes."""
        if not unread:
            return
        items = sorted(unread.items())
        conn.execute(
            sql.SQL(
                "INSERT INTO {} AS u (group_id, topic, partition, source_table, events, run_id)"
                " SELECT %s, t, p, s, n, %s FROM unnest(%b::text[], %s::int[], %s::text[], %s::bigint[])"
                " AS x(t, p, s, n)"
                " ON CONFLICT (group_id, topic, partition, source_table) DO UPDATE"
                " SET events = u.events + EXCLUDED.events, run_id = EXCLUDED.run_id, last_seen_at = now()"
            ).format(control.table(self._schema, "unread_table")),
            (
                self._group_id,
                self._run_id,
                [t for (t, _, _), _ in items],
                [p for (_, p, _), _ in items],
                [s for (_, _, s), _ in items],
                [n for _, n in items],
            ),
        )

    def store_errors(
        self,
        conn: psycopg.Connection[Any],
        failures: Sequence[Failure],
        notes: Sequence[tuple[Intent, Narrowing]],
    ) -> int:
        """Stores the error records (and notes) not already open; returns how many error records are new."""
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
                Jsonb([{"table": t, "key": k} for t, k in f.also]) if f.also else None,
            )
            for f in failures
        ]
        rows.extend(
            (
                n.kind,
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
                None,
            )
            for i, n in notes
        )
        if not rows:
            return 0
        # Set-based: copied into the session's stage, then one INSERT. An event already reported
        # and still open (a replay, an `errors retry`) is not reported again, nor twice in one call
        # (the first of equal records wins); records keep the order given.
        conn.execute(sql.SQL("TRUNCATE {}").format(_ERRORS))
        with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(_ERRORS)) as copy:
            for n, row in enumerate(rows):
                copy.write_row((*row, n))
        records = control.table(self._schema, "error_record")
        stored = conn.execute(_REPORT.format(records=records, stage=_ERRORS, c=_COLUMNS)).fetchall()
        return sum(1 for (kind,) in stored if kind == "error")
