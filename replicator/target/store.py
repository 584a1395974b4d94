"""The control store (I/O edge): every read and write of the control schema outside a batch.

A batch's own control writes (versions, error records, checkpoints) happen
inside its target transaction, in `target.writer`; everything else is here:
checkpoints read at assignment and by `status`/`drain`, the shadow's seeded
positions, runs, the recorded partition counts and layouts (`core.layout`),
error-record listings and the keys `verify` needs.

Invariants: read-only callers (`status`, `errors list`, `verify`, `drain`)
never run DDL: on a target where `replicator init` never ran, `require()`
raises `NotInitialized` with the fix. Every statement is composed with
psycopg.sql.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from replicator.config import Settings
from replicator.core.errors import Fatal, one_line
from replicator.core.layout import RULE as PARTITIONS_RULE
from replicator.core.layout import Layout, Layouts
from replicator.core.model import Partition, TableRef
from replicator.core.serialize import dumps
from replicator.pg.errors import sqlstate
from replicator.pg.session import connect
from replicator.target import control

# Who closed an error record (its `resolved_by`; NULL while it is open).
BY_RETRY: Final = "retry"  # `errors retry` applied its event
BY_OPERATOR: Final = "operator"  # `errors resolve` closed it without applying it
_CUTOVER_FIELDS = frozenset({"fence_id", "fence_lsn", "reason", "flip_xid"})
_CUTOVER_JSON = frozenset({"revoked", "gates", "sequences", "flip_stats"})
_CUTOVER_TIMES = frozenset({"fenced_at", "flipped_at"})


class ControlStore:
    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self.conn = conn
        self.schema = schema

    @classmethod
    @contextmanager
    def open(cls, settings: Settings) -> Iterator[ControlStore]:
        """A store on its own autocommit session to the configured target."""
        with connect(settings.target, "target", autocommit=True) as conn:
            try:
                yield cls(conn, settings.control_schema)
            except psycopg.Error as exc:
                raise Fatal(
                    f"target {settings.target.describe()}: {one_line(exc)} (SQLSTATE {sqlstate(exc)})"
                ) from exc

    def _t(self, name: str) -> sql.Identifier:
        return control.table(self.schema, name)

    # ---------------------------------------------------------------- schema
    def ensure(self, *, force: bool = False) -> None:
        """Create or upgrade the control schema (only `init`, which forces it, the live daemon and
        cutover, which own it)."""
        control.ensure(self.conn, self.schema, force=force)

    def require(self, *, upgrade: bool = False) -> None:
        control.require(self.conn, self.schema, upgrade=upgrade)

    def _has_table(self, name: str) -> bool:
        """Whether the control schema has table `name` (an older version's may not)."""
        found = self.conn.execute(
            "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s", (self.schema, name)
        ).fetchone()
        return found is not None

    def initialized(self) -> bool:
        try:
            self.require()
        except Fatal:
            return False
        return True

    def grant_shadow_role(self, role: str) -> None:
        """Least privilege for shadow mode in the control schema (run as its owner): read the
        guard and checkpoints, write only checkpoints, runs and diffs. SELECT on the data
        tables is granted by their owner; the shadow role never gets DML on them."""
        r, s = sql.Identifier(role), sql.Identifier(self.schema)
        with self.conn.transaction():
            self.conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r))
            self.conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, r))
            self.conn.execute(
                sql.SQL("GRANT INSERT, UPDATE ON {}, {}, {} TO {}").format(
                    self._t("checkpoint"), self._t("shadow_diff"), self._t("run"), r
                )
            )
            self.conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r))

    # ---------------------------------------------------------------- checkpoints
    def checkpoints(self, group: str, partitions: list[Partition] | None = None) -> dict[Partition, int]:
        """The next offset per partition stored for `group` (all, or only `partitions`)."""
        if partitions is None:
            rows = self.conn.execute(
                sql.SQL("SELECT topic, partition, next_offset FROM {} WHERE group_id = %s").format(
                    self._t("checkpoint")
                ),
                (group,),
            ).fetchall()
        else:
            rows = self.conn.execute(
                sql.SQL(
                    "SELECT topic, partition, next_offset FROM {} WHERE group_id = %s"
                    " AND (topic, partition) IN (SELECT * FROM unnest(%b::text[], %s::int[]))"
                ).format(self._t("checkpoint")),
                (group, [t for t, _ in partitions], [p for _, p in partitions]),
            ).fetchall()
        return {(t, p): o for t, p, o in rows}

    def checkpoint_runs(self, group: str) -> dict[Partition, tuple[str | None, datetime | None]]:
        """Per partition of `group`, the run that last moved its stored position (the last run
        that applied from it) and when that run started (None: a seeded or replayed position,
        whose run id is a label)."""
        rows = self.conn.execute(
            sql.SQL(
                "SELECT c.topic, c.partition, c.run_id, r.started_at FROM {} AS c"
                " LEFT JOIN {} AS r ON r.run_id = c.run_id WHERE c.group_id = %s"
            ).format(self._t("checkpoint"), self._t("run")),
            (group,),
        ).fetchall()
        return {(t, p): (r, at) for t, p, r, at in rows}

    def set_checkpoints(self, group: str, positions: Mapping[Partition, int], label: str) -> None:
        """Replace `group`'s positions (an explicit range start); `label` goes into run_id."""
        with self.conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (group_id, topic, partition, next_offset, run_id)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (group_id, topic, partition)"
                    " DO UPDATE SET next_offset = EXCLUDED.next_offset, run_id = EXCLUDED.run_id"
                ).format(self._t("checkpoint")),
                [(group, t, p, o, label) for (t, p), o in sorted(positions.items())],
            )

    def copy_checkpoints(self, from_group: str, to_group: str) -> None:
        """Start `to_group` where `from_group` stands now, on every partition `from_group` has a
        position on (a position `to_group` kept from an earlier run is replaced)."""
        self.conn.execute(
            sql.SQL(
                "INSERT INTO {0} (group_id, topic, partition, next_offset, run_id)"
                " SELECT %s, topic, partition, next_offset, 'seeded' FROM {0} WHERE group_id = %s"
                " ON CONFLICT (group_id, topic, partition) DO UPDATE"
                " SET next_offset = EXCLUDED.next_offset, run_id = EXCLUDED.run_id"
            ).format(self._t("checkpoint")),
            (to_group, from_group),
        )

    def replicating_topics(self, group: str) -> frozenset[str]:
        """Topics `group` has applied from (a checkpoint stored); none before `replicator init`."""
        if not self._has_table("checkpoint"):
            return frozenset()
        rows = self.conn.execute(
            sql.SQL("SELECT DISTINCT topic FROM {} WHERE group_id = %s").format(self._t("checkpoint")),
            (group,),
        ).fetchall()
        return frozenset(r[0] for r in rows)

    # ---------------------------------------------------------------- schema stops
    def stops(self, group: str) -> list[dict[str, Any]]:
        """The partitions of `group` stopped by a source schema change (`core.schema_change`) or a
        partition count change (`core.layout`, rule `partitions`), with the stopping offset, the
        source and target tables, rule, reason, fix and the event's columns; `live`: the run that
        (last) stopped it has not recorded its end (else the next run that reads the partition
        judges it again, and clears or renews the stop)."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT s.topic, s.partition, s.kafka_offset, s.source_table, s.target_tables, s.rule_id,"
                    " s.reason, s.fix, s.columns, s.run_id, s.stopped_at, s.seen_at,"
                    " coalesce(r.status = 'running', false) AS live"
                    " FROM {} s LEFT JOIN {} r ON r.run_id = s.run_id WHERE s.group_id = %s"
                    " ORDER BY s.topic, s.partition"
                ).format(self._t("schema_stop"), self._t("run")),
                (group,),
            )
            return cur.fetchall()

    # ---------------------------------------------------------------- runs
    def start_run(self, run_id: str, mode: str, group: str, settings: Mapping[str, Any]) -> None:
        self.conn.execute(
            sql.SQL("INSERT INTO {} (run_id, mode, group_id, settings) VALUES (%s, %s, %s, %s)").format(
                self._t("run")
            ),
            (run_id, mode, group, dumps(settings)),
        )

    def end_run(self, run_id: str, status: str, totals: Mapping[str, Any]) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET ended_at = now(), status = %s, totals = %s WHERE run_id = %s").format(
                self._t("run")
            ),
            (status, dumps(totals), run_id),
        )

    def beat(self, run_id: str) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET heartbeat_at = now() WHERE run_id = %s").format(self._t("run")), (run_id,)
        )

    def unfinished_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Runs that never recorded an end, newest first, with the seconds since their last sign of
        life (heartbeat, else start): a live run beats; a killed one stays `running` and goes silent.
        A killed run whose static instance id a later run of its group took is left out: that
        instance was started again (one id runs once), so it is not a member that is gone."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT run_id, mode, group_id, started_at, heartbeat_at,"
                    " extract(epoch FROM now() - coalesce(heartbeat_at, started_at))::float8 AS silent_s,"
                    " (settings->>'heartbeat_s')::float8 AS heartbeat_s"
                    " FROM {0} AS r WHERE status = 'running' AND NOT EXISTS (SELECT 1 FROM {0} AS l"
                    " WHERE l.group_id = r.group_id AND l.mode = r.mode AND l.started_at > r.started_at"
                    " AND l.settings->>'instance_id' = r.settings->>'instance_id')"
                    " ORDER BY started_at DESC LIMIT %s"
                ).format(self._t("run")),
                (limit,),
            )
            return cur.fetchall()

    def halted_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Runs that ended halted and were not started again, newest first, with the one-line
        reason they recorded. Started again: a run of the same group and mode began after the halt
        (and, when the halted run had a static instance id, with that id). A peer that started
        beside it, or another instance restarted since, does not hide it (trial 7: two daemons
        started together, one halted, and `status` listed nothing)."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT run_id, mode, group_id, started_at, ended_at, totals->>'reason' AS reason,"
                    " settings->>'instance_id' AS instance_id"
                    " FROM {0} AS r WHERE status = 'halted' AND NOT EXISTS (SELECT 1 FROM {0} AS l"
                    " WHERE l.group_id = r.group_id AND l.mode = r.mode"
                    " AND l.started_at > coalesce(r.ended_at, r.started_at)"
                    " AND (r.settings->>'instance_id' IS NULL"
                    "      OR l.settings->>'instance_id' = r.settings->>'instance_id'))"
                    " ORDER BY ended_at DESC LIMIT %s"
                ).format(self._t("run")),
                (limit,),
            )
            return cur.fetchall()

    # ---------------------------------------------------------------- partition counts and layouts
    def record_partitions(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Record the count of each topic seen for the first time; return the recorded counts of
        `counts`' topics (the first instance to record a topic wins: all read the same row)."""
        tp = self._t("topic_partitions")
        with self.conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (topic, partitions) VALUES (%s, %s) ON CONFLICT (topic) DO NOTHING"
                ).format(tp),
                sorted(counts.items()),
            )
        rows = self.conn.execute(
            sql.SQL("SELECT topic, partitions FROM {} WHERE topic = ANY(%s)").format(tp), (sorted(counts),)
        ).fetchall()
        return {t: int(n) for t, n in rows}

    def layouts(self) -> Layouts:
        """Every accepted partition layout, per topic, oldest first."""
        rows = self.conn.execute(
            sql.SQL(
                "SELECT topic, epoch, before, partitions, starts, changed FROM {} ORDER BY topic, epoch"
            ).format(self._t("partition_layout"))
        ).fetchall()
        by_topic: dict[str, list[Layout]] = {}
        for topic, epoch, before, partitions, starts, changed in rows:
            by_topic.setdefault(topic, []).append(
                Layout(
                    int(epoch),
                    int(before),
                    int(partitions),
                    tuple(int(o) for o in starts),
                    tuple(int(o) for o in changed),
                )
            )
        return Layouts({t: tuple(layouts) for t, layouts in by_topic.items()})

    def accept_layout(self, topic: str, layout: Layout, log_starts: Mapping[int, int], operator: str) -> None:
        """Record an accepted partition count, atomically: the layout, the new count, a checkpoint
        at the log start of each new partition for every group that reads the topic (so no reset
        policy can skip its first records), and the end of the topic's `partitions` stops. Refuses
        when the recorded count is no longer `layout.before` (another accept came first)."""
        with self.conn.transaction():
            row = self.conn.execute(
                sql.SQL("SELECT partitions FROM {} WHERE topic = %s FOR UPDATE").format(
                    self._t("topic_partitions")
                ),
                (topic,),
            ).fetchone()
            if row is None or int(row[0]) != layout.before:
                now = "none" if row is None else row[0]
                raise Fatal(
                    f"partitions accept: {topic} has {now} partitions recorded, not {layout.before} (another"
                    " accept came first?); nothing recorded: run it again"
                )
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {} (topic, epoch, before, partitions, starts, changed, operator)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                ).format(self._t("partition_layout")),
                (
                    topic,
                    layout.epoch,
                    layout.before,
                    layout.partitions,
                    list(layout.starts),
                    list(layout.changed),
                    operator,
                ),
            )
            self.conn.execute(
                sql.SQL("UPDATE {} SET partitions = %s WHERE topic = %s").format(self._t("topic_partitions")),
                (layout.partitions, topic),
            )
            new = sorted(p for p in log_starts if p >= layout.before)
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {0} (group_id, topic, partition, next_offset, run_id)"
                    " SELECT g.group_id, %s, n.p, n.o, 'partitions accept'"
                    " FROM (SELECT DISTINCT group_id FROM {0} WHERE topic = %s) AS g,"
                    " unnest(%s::int[], %s::bigint[]) AS n(p, o)"
                    " ON CONFLICT (group_id, topic, partition) DO NOTHING"
                ).format(self._t("checkpoint")),
                (topic, topic, new, [log_starts[p] for p in new]),
            )
            self.conn.execute(
                sql.SQL("DELETE FROM {} WHERE topic = %s AND rule_id = %s").format(self._t("schema_stop")),
                (topic, PARTITIONS_RULE),
            )

    # ---------------------------------------------------------------- error records
    def error_records(
        self,
        kind: str | None,
        limit: int,
        table: str | None = None,
        rule: str | None = None,
        sqlstate: str | None = None,
        run: str | None = None,
        state: str = "all",
    ) -> list[dict[str, Any]]:
        """The newest error records, optionally only those of a target table, rule, SQLSTATE, run, and
        only the open (`state` "open") or the resolved ones."""
        where, params = _record_filter(kind, table, rule, sqlstate, run, state)
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT id, kind, run_id, topic, partition, kafka_offset, target_table, key, rule_id,"
                    " sqlstate, message, created_at, resolved_at, resolved_by, resolution FROM {} WHERE {}"
                    " ORDER BY id DESC LIMIT %s"
                ).format(self._t("error_record"), where),
                (*params, limit),
            )
            return cur.fetchall()

    def record_counts(
        self,
        kind: str | None,
        table: str | None = None,
        rule: str | None = None,
        sqlstate: str | None = None,
        run: str | None = None,
        state: str = "all",
    ) -> list[dict[str, Any]]:
        """How many error records match (as `error_records` chooses them, without a limit), per
        target table, rule and SQLSTATE, most first."""
        where, params = _record_filter(kind, table, rule, sqlstate, run, state)
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT count(*) AS records, target_table, rule_id, sqlstate FROM {} WHERE {}"
                    " GROUP BY 2, 3, 4 ORDER BY 1 DESC, 2, 3, 4"
                ).format(self._t("error_record"), where),
                params,
            )
            return cur.fetchall()

    def open_errors(self, ids: Sequence[int], limit: int, **filters: str | None) -> list[dict[str, Any]]:
        """Open error records (kind `error`) chosen by id or by `filters` (table, rule, sqlstate, run),
        with their raw events, in Kafka order."""
        columns = {"table": "target_table", "rule": "rule_id", "sqlstate": "sqlstate", "run": "run_id"}
        where: list[sql.Composable] = [sql.SQL("kind = 'error' AND resolved_at IS NULL")]
        params: list[Any] = []
        if ids:
            where.append(sql.SQL("id = ANY(%s)"))
            params.append(list(ids))
        for name, value in filters.items():
            if value is not None:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(columns[name])))
                params.append(value)
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT id, group_id, topic, partition, kafka_offset, target_table, key, raw_key,"
                    " raw_value, rule_id, sqlstate, message FROM {} WHERE {}"
                    " ORDER BY topic, partition, kafka_offset, id LIMIT %s"
                ).format(self._t("error_record"), sql.SQL(" AND ").join(where)),
                (*params, limit),
            )
            return cur.fetchall()

    def resolve_errors(self, ids: Sequence[int], resolution: str) -> list[int]:
        """Close open error records without applying them; returns the ids closed."""
        rows = self.conn.execute(
            sql.SQL(
                "UPDATE {} SET resolved_at = now(), resolved_by = %s, resolution = %s"
                " WHERE id = ANY(%s) AND resolved_at IS NULL RETURNING id"
            ).format(self._t("error_record")),
            (BY_OPERATOR, resolution, list(ids)),
        ).fetchall()
        return sorted(r[0] for r in rows)

    def error_record(self, record_id: int) -> dict[str, Any] | None:
        """One error record with everything stored for it (raw key and value, the other rows)."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {} WHERE id = %s").format(self._t("error_record")), (record_id,)
            )
            return cur.fetchone()

    def error_counts(self, group: str) -> dict[Partition, int]:
        rows = self.conn.execute(
            sql.SQL(
                "SELECT topic, partition, count(*) FROM {} WHERE group_id = %s AND kind = 'error'"
                " AND resolved_at IS NULL GROUP BY 1, 2"
            ).format(self._t("error_record")),
            (group,),
        ).fetchall()
        return {(t, p): n for t, p, n in rows}

    def error_keys(self, target: TableRef) -> tuple[frozenset[str], frozenset[str]]:
        """Target keys of `target` whose change an error record kept out (its own row, or one of
        `also`): (open, accepted). Accepted: every record of the key was resolved by the operator.
        A record closed by `errors retry` explains nothing any more (its event was applied)."""
        rows = self.conn.execute(
            sql.SQL(
                "WITH r AS (SELECT key, resolved_at IS NULL AS open, resolved_by FROM {0}"
                "   WHERE kind = 'error' AND target_table = %(t)s AND key IS NOT NULL"
                " UNION ALL SELECT a->>'key', resolved_at IS NULL, resolved_by"
                "   FROM {0}, jsonb_array_elements(also) AS a"
                "   WHERE kind = 'error' AND a->>'table' = %(t)s AND a->>'key' IS NOT NULL)"
                " SELECT key, bool_or(open) FROM r"
                " WHERE resolved_by IS DISTINCT FROM %(retry)s GROUP BY key"
            ).format(self._t("error_record")),
            {"t": str(target), "retry": BY_RETRY},
        ).fetchall()
        opened = frozenset(k for k, is_open in rows if is_open)
        return opened, frozenset(k for k, _ in rows) - opened

    # ---------------------------------------------------------------- held events
    def held_keys(self, target: TableRef) -> frozenset[str]:
        """Target keys whose events are held back (by any group's instances), also as an event's
        other target row (a split: `core.holding`, point 5)."""
        rows = self.conn.execute(
            sql.SQL(
                "SELECT key FROM {0} WHERE target_table = %(t)s AND key IS NOT NULL"
                " UNION SELECT a->>'key' FROM {0}, jsonb_array_elements(also) AS a"
                "   WHERE also IS NOT NULL AND a->>'table' = %(t)s AND a->>'key' IS NOT NULL"
            ).format(self._t("held_event")),
            {"t": str(target)},
        ).fetchall()
        return frozenset(r[0] for r in rows)

    def held_summary(self, group: str) -> list[dict[str, Any]]:
        """Per target table: events held, the oldest hold's age, what they wait for."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT target_table AS table, count(*) AS held,"
                    " round(extract(epoch from now() - min(held_at))::numeric, 1) AS oldest_s,"
                    " string_agg(DISTINCT coalesce(blocked_by, '?'), ',') AS waiting_for,"
                    " max(attempts) AS max_attempts"
                    " FROM {} WHERE group_id = %s GROUP BY target_table ORDER BY target_table"
                ).format(self._t("held_event")),
                (group,),
            )
            return cur.fetchall()

    # ---------------------------------------------------------------- unread source tables
    def unread_tables(self, group: str) -> list[dict[str, Any]] | None:
        """Per source table of `group`, the events not applied because no rule reads the table though
        they arrived on a topic the spec reads (`unread_table`): the count, topics, first and last
        seen; None when the control schema predates `unread_table` (nothing recorded yet)."""
        if not self._has_table("unread_table"):
            return None
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT source_table, sum(events)::bigint AS events, array_agg(DISTINCT topic) AS topics,"
                    " min(first_seen_at) AS first_seen_at, max(last_seen_at) AS last_seen_at"
                    " FROM {} WHERE group_id = %s GROUP BY source_table ORDER BY source_table"
                ).format(self._t("unread_table")),
                (group,),
            )
            return cur.fetchall()

    # ---------------------------------------------------------------- versions
    def deleted_keys(self, target: TableRef) -> frozenset[str]:
        """Keys whose stored version says the source deleted the row (kept by soft/ignore deletes)."""
        rows = self.conn.execute(
            sql.SQL("SELECT key FROM {} WHERE target_table = %s AND deleted").format(self._t("row_version")),
            (str(target),),
        ).fetchall()
        return frozenset(r[0] for r in rows)

    # ---------------------------------------------------------------- authority and cutovers
    def authority(self) -> dict[str, Any]:
        """The authority row: authority ('source' | 'target'), since, cutover_id, fence_lsn."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT authority, since, cutover_id, fence_lsn FROM {}").format(self._t("authority"))
            )
            row = cur.fetchone()
        return row or {"authority": "source", "since": None, "cutover_id": None, "fence_lsn": None}

    def set_authority(self, authority: str, cutover_id: str | None, fence_lsn: int | None) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET authority = %s, since = now(), cutover_id = %s, fence_lsn = %s").format(
                self._t("authority")
            ),
            (authority, cutover_id, fence_lsn),
        )

    def create_cutover(self, cutover_id: str, operator: str, options: Mapping[str, Any]) -> None:
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {} (cutover_id, state, operator, options) VALUES (%s, 'planned', %s, %s)"
                ).format(self._t("cutover")),
                (cutover_id, operator, dumps(options)),
            )
            self._event(cutover_id, None, "planned", operator, {"options": options})

    def cutover(self, cutover_id: str | None = None) -> dict[str, Any] | None:
        """One cutover record (the latest when no id is given)."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            if cutover_id is None:
                cur.execute(
                    sql.SQL("SELECT * FROM {} ORDER BY created_at DESC LIMIT 1").format(self._t("cutover"))
                )
            else:
                cur.execute(
                    sql.SQL("SELECT * FROM {} WHERE cutover_id = %s").format(self._t("cutover")),
                    (cutover_id,),
                )
            return cur.fetchone()

    def move_cutover(
        self, cutover_id: str, from_state: str, to_state: str, operator: str, **fields: Any
    ) -> None:
        """Record a transition (and the fields it sets) with its audit event, atomically; refuses
        when another process moved the cutover first (the state is not `from_state` any more)."""
        assignments, values = self._cutover_assignments(fields)
        assignments = [sql.SQL("state = %s"), *assignments]
        values = [to_state, *values]
        with self.conn.transaction():
            done = self.conn.execute(
                sql.SQL("UPDATE {} SET {} WHERE cutover_id = %s AND state = %s").format(
                    self._t("cutover"), sql.SQL(", ").join(assignments)
                ),
                (*values, cutover_id, from_state),
            )
            if done.rowcount != 1:
                raise Fatal(
                    f"cutover {cutover_id} is no longer {from_state!r} (another process moved it); "
                    "see `replicator cutover status`"
                )
            self._event(
                cutover_id,
                from_state,
                to_state,
                operator,
                {k: v for k, v in fields.items() if k != "revoked"},
            )

    def note_cutover(self, cutover_id: str, state: str, **fields: Any) -> None:
        """Set fields of a cutover without moving it (e.g. the grants about to be revoked, written
        before they are); refuses when the cutover is not in `state`."""
        assignments, values = self._cutover_assignments(fields)
        done = self.conn.execute(
            sql.SQL("UPDATE {} SET {} WHERE cutover_id = %s AND state = %s").format(
                self._t("cutover"), sql.SQL(", ").join(assignments)
            ),
            (*values, cutover_id, state),
        )
        if done.rowcount != 1:
            raise Fatal(f"cutover {cutover_id} is no longer {state!r}; see `replicator cutover status`")

    @staticmethod
    def _cutover_assignments(fields: Mapping[str, Any]) -> tuple[list[sql.Composable], list[Any]]:
        unknown = set(fields) - _CUTOVER_FIELDS - _CUTOVER_JSON - _CUTOVER_TIMES
        if unknown:
            raise ValueError(f"unknown cutover fields {sorted(unknown)}")
        assignments: list[sql.Composable] = [sql.SQL("updated_at = now()")]
        values: list[Any] = []
        for name, value in fields.items():
            if name in _CUTOVER_TIMES:  # stamped by the server, once: the first stamp stays
                assignments.append(sql.SQL("{0} = coalesce({0}, now())").format(sql.Identifier(name)))
                continue
            assignments.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
            values.append(dumps(value) if name in _CUTOVER_JSON else value)
        return assignments, values

    def _event(
        self, cutover_id: str, from_state: str | None, to_state: str, operator: str, detail: Any
    ) -> None:
        self.conn.execute(
            sql.SQL(
                "INSERT INTO {} (cutover_id, from_state, to_state, operator, detail)"
                " VALUES (%s, %s, %s, %s, %s)"
            ).format(self._t("cutover_event")),
            (cutover_id, from_state, to_state, operator, dumps(detail)),
        )

    def cutover_events(self, cutover_id: str) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT at, from_state, to_state, operator, detail FROM {}"
                    " WHERE cutover_id = %s ORDER BY id"
                ).format(self._t("cutover_event")),
                (cutover_id,),
            )
            return cur.fetchall()

    def fence_seen(self, fence_id: str) -> bool:
        row = self.conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE fence_id = %s").format(self._t("fence_seen")), (fence_id,)
        ).fetchone()
        return row is not None

    def held_before(self, group: str, lsn: int) -> list[tuple[str, int, str]]:
        """Per target table, rows `group` holds back that the source committed before `lsn`
        (their judgement point is below it): (table, rows, what they wait for)."""
        rows = self.conn.execute(
            sql.SQL(
                "SELECT target_table, count(*), string_agg(DISTINCT coalesce(blocked_by, '?'), ',')"
                " FROM {} WHERE group_id = %s AND judged_at < %s GROUP BY 1 ORDER BY 1"
            ).format(self._t("held_event")),
            (group, lsn),
        ).fetchall()
        return [(str(t), int(n), str(w)) for t, n, w in rows]

    def hasten_held(self, group: str, lsn: int) -> int:
        """Make the rows `group` holds back from before `lsn` due at the daemons' next retry of held
        rows, not after their backoff (up to 16 times `REPLICATOR_HOLD__RETRY_AFTER_S`): a drain
        waiting for them (a cutover's, inside its write-downtime window) learns their fate at once.
        Returns how many; 0 when this role may not change them (a slower drain, nothing else)."""
        try:
            with self.conn.transaction():
                done = self.conn.execute(
                    sql.SQL(
                        "UPDATE {} SET last_try_at = '-infinity' WHERE group_id = %s AND judged_at < %s"
                        " AND last_try_at > '-infinity'"
                    ).format(self._t("held_event")),
                    (group, lsn),
                )
        except psycopg.errors.InsufficientPrivilege:
            return 0
        return done.rowcount

    def held_count(self, group: str, older_than_s: float | None = None) -> int:
        """Rows `group` holds back; with `older_than_s`, only those first held longer ago."""
        row = self.conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {} WHERE group_id = %s"
                " AND (%s::float8 IS NULL OR held_at < now() - make_interval(secs => %s::float8))"
            ).format(self._t("held_event")),
            (group, older_than_s, older_than_s),
        ).fetchone()
        return int(row[0]) if row else 0

    def open_error_count(self) -> int:
        row = self.conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE kind = 'error' AND resolved_at IS NULL").format(
                self._t("error_record")
            )
        ).fetchone()
        return int(row[0]) if row else 0

    def recorded_partitions(self) -> dict[str, int]:
        rows = self.conn.execute(
            sql.SQL("SELECT topic, partitions FROM {}").format(self._t("topic_partitions"))
        ).fetchall()
        return {t: int(n) for t, n in rows}

    def latest_shadow_errors(self) -> int | None:
        """Would-be error records of the latest finished shadow run (None: no shadow run yet)."""
        row = self.conn.execute(
            sql.SQL(
                "SELECT totals->>'error_records' FROM {} WHERE mode = 'shadow' AND status = 'done'"
                " ORDER BY ended_at DESC NULLS LAST LIMIT 1"
            ).format(self._t("run"))
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])


def _record_filter(
    kind: str | None, table: str | None, rule: str | None, sqlstate: str | None, run: str | None, state: str
) -> tuple[sql.Composable, list[Any]]:
    """The WHERE clause (and its parameters) choosing error records by kind, target table, rule,
    SQLSTATE and run (None: any), and by state: open, resolved or all."""
    filters = {"kind": kind, "target_table": table, "rule_id": rule, "sqlstate": sqlstate, "run_id": run}
    where = sql.SQL(" AND ").join(
        [
            *(sql.SQL("(%s::text IS NULL OR {} = %s)").format(sql.Identifier(c)) for c in filters),
            sql.SQL(
                {"open": "resolved_at IS NULL", "resolved": "resolved_at IS NOT NULL"}.get(state, "true")
            ),
        ]
    )
    return where, [v for value in filters.values() for v in (value, value)]
