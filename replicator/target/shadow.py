"""Shadow mode's write target: the live pipeline pointed at session-local copies, writing diffs.

`ShadowClones` is a `WriteTarget` for the same `BatchWriter` the live run
uses: every target table gets a TEMP clone (same columns, defaults, NOT NULL,
CHECK and unique indexes), and the version table a TEMP clone too. Before a
batch, the rows and versions of the keys it touches are copied in from the
real target (once per key per session); then the very same guarded
statements run against the clones, so constraint violations, the ordering
guard, TOAST handling and collapsing behave exactly as they would live. The
before and after images of every touched key become the diff: insert,
update (before/after per changed column), delete or no-op, with the source
position, Kafka coordinates and the mapping rule ids involved. Error records
the live run would write become diffs of kind `error`.

Invariants: no statement writes a target data table (the shadow role needs
only SELECT on them); the live guard table `row_version` and the held events of the live
group a preview starts from (`from_group`, copied into the preview's own) are only read.
Diffs go to `<control>.shadow_diff` and to a JSON Lines report, through the
one serializer (`core.serialize`), so no value can make the run crash.

A partition the live run would stop on a source schema change becomes a
`stopped` diff per target table it feeds (`store_stops`).

Limits (documented): FK violations and unique violations against rows the
batch does not touch are not predicted (the clones hold only touched rows);
a source TRUNCATE is reported as one `truncate` diff for the table.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from replicator.core.diff import row_diff
from replicator.core.errors import NotInitialized
from replicator.core.intents import Fence, Intent, Key, Kind, key_text
from replicator.core.mapping.plan import Narrowing, Plan, TablePlan
from replicator.core.mapping.statements import TableStatements
from replicator.core.model import BatchResult, Failure, Partition, TableRef
from replicator.core.resolve import TableWrites
from replicator.core.schema_change import Stop
from replicator.core.serialize import dumps, jsonb_safe, to_jsonable
from replicator.pg.types import exact_rows
from replicator.target import control
from replicator.target.stages import create_stage


def _clone_name(rule_id: str) -> str:
    return "shadow_" + hashlib.sha256(rule_id.encode()).hexdigest()[:16]


def _seeded_name(rule_id: str) -> str:
    """The keys copied into a clone (`before_writes`): the clone's rows stand for the real ones."""
    return "shadow_seeded_" + hashlib.sha256(rule_id.encode()).hexdigest()[:16]


def _shadow_plan(plan: Plan) -> Plan:
    """The same plan, its statements aimed at TEMP clones (`pg_temp.shadow_<hash>`)."""
    tables = []
    for t in plan.tables:
        s = t.statements
        clone = TableStatements(
            target=TableRef("pg_temp", _clone_name(t.rule_id)),
            key=s.key,
            columns=s.columns,
            stage=s.stage,
            text_compared=s.text_compared,
        )
        tables.append(dataclasses.replace(t, statements=clone))
    return dataclasses.replace(plan, tables=tuple(tables))


class ShadowClones:
    """The shadow `WriteTarget`: TEMP clones of the target tables; diffs instead of rows."""

    def __init__(
        self,
        plan: Plan,
        control_schema: str,
        group_id: str,
        run_id: str,
        report: TextIO,
        from_group: str | None = None,
    ) -> None:
        """`from_group`: the live group the preview starts where (`shadow --from-group`): the events
        it holds are held in the preview too, as the live run retries them next."""
        self._plan = _shadow_plan(plan)
        self._from_group = from_group
        self._tables = {t.target: t for t in self._plan.tables}
        self._real = {t.target: t for t in plan.tables}
        self.schema = control_schema
        self.group_id = group_id
        self.run_id = run_id
        self._report = report
        self._seeded: dict[TableRef, set[str]] = {}
        self._before: dict[TableRef, dict[str, dict[str, Any] | None]] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self.error_lines: list[str] = []
        self.stop_lines: list[str] = []

    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def versions(self) -> sql.Composable:
        return sql.Identifier("pg_temp", "shadow_row_version")

    @property
    def holds(self) -> sql.Composable:
        return sql.Identifier("pg_temp", "shadow_held_event")

    def relation(self, table: TableRef) -> sql.Composable:
        """A mapped table as the preview left it: its clone's rows, and the real table's rows of
        the keys never copied into the clone (a key deleted in the clone stays deleted); what a
        foreign key's guard reads (a cascade's children, a child's parent), as the live run
        reads the table it wrote. Another table: the real one."""
        t = self._tables.get(table)
        if t is None:
            return sql.Identifier(table.schema, table.name)
        return sql.SQL(
            "(SELECT * FROM {} UNION ALL SELECT r.* FROM {} AS r"
            " WHERE NOT EXISTS (SELECT FROM {} AS k WHERE {}))"
        ).format(
            sql.Identifier("pg_temp", t.statements.target.name),
            sql.Identifier(table.schema, table.name),
            sql.Identifier("pg_temp", _seeded_name(t.rule_id)),
            sql.SQL(" AND ").join(sql.SQL("k.{0} = r.{0}").format(sql.Identifier(k)) for k in t.key),
        )

    # ---------------------------------------------------------------- session
    def prepare_session(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            present = conn.execute("SELECT to_regclass(%s)", (f"{self.schema}.shadow_diff",)).fetchone()
            if present is None or present[0] is None:
                raise NotInitialized(
                    f"{self.schema}.shadow_diff does not exist in the target; "
                    "fix: run `replicator init` as the replicator's owner role"
                )
            for name in ("row_version", "held_event"):
                conn.execute(
                    sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING ALL)").format(
                        sql.Identifier(f"shadow_{name}"), control.table(self.schema, name)
                    )
                )
            # a control schema from before `awaits`, `also` (a daemon's start adds them; the shadow role
            # may not)
            conn.execute("ALTER TABLE pg_temp.shadow_held_event ADD COLUMN IF NOT EXISTS awaits text")
            conn.execute("ALTER TABLE pg_temp.shadow_held_event ADD COLUMN IF NOT EXISTS also jsonb")
            if self._from_group is not None:  # what the live group holds, it retries before anything new
                conn.execute("DELETE FROM pg_temp.shadow_held_event")
                conn.execute(
                    sql.SQL(
                        "INSERT INTO pg_temp.shadow_held_event SELECT * FROM {} WHERE group_id = %s"
                    ).format(control.table(self.schema, "held_event")),
                    (self._from_group,),
                )
                conn.execute("UPDATE pg_temp.shadow_held_event SET group_id = %s", (self.group_id,))
            for t in self._plan.tables:
                real = self._real[t.target]
                conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
                        " INCLUDING INDEXES)"
                    ).format(
                        sql.Identifier(t.statements.target.name),
                        sql.Identifier(real.target.schema, real.target.name),
                    )
                )
                conn.execute(
                    sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {} FROM {} WITH NO DATA").format(
                        sql.Identifier(_seeded_name(t.rule_id)),
                        sql.SQL(", ").join(map(sql.Identifier, t.key)),
                        sql.Identifier(real.target.schema, real.target.name),
                    )
                )
                create_stage(conn, t.statements.create_stage, t.statements.stage)
        # A new session starts with empty clones: nothing is seeded yet.
        self._seeded = {t.target: set() for t in self._plan.tables}

    # ---------------------------------------------------------------- hooks
    def _stage_keys(self, conn: psycopg.Connection[Any], table: TablePlan, keys: Sequence[Key]) -> None:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table.statements.stage)))
        with conn.cursor().copy(table.statements.copy_stage(table.key)) as copy:
            for key in keys:
                copy.write_row(list(key))

    def _read(
        self, conn: psycopg.Connection[Any], table: TablePlan, keys: Sequence[Key]
    ) -> dict[str, dict[str, Any]]:
        cols = tuple(c.target for c in table.columns)
        self._stage_keys(conn, table, keys)
        names = list(table.key) + [c for c in cols if c not in table.key]
        with exact_rows(conn.cursor()) as cur:
            rows = cur.execute(table.statements.select_keys(cols)).fetchall()
        out = {}
        for row in rows:
            values = dict(zip(names, row, strict=True))
            out[key_text(tuple(values[k] for k in table.key))] = values
        return out

    def before_writes(self, conn: psycopg.Connection[Any], by_table: Mapping[TableRef, list[Intent]]) -> None:
        self._before = {}
        for target, intents in by_table.items():
            table = self._tables[target]
            keys = list({key_text(i.key): i.key for i in intents if i.key}.items())
            fresh = [k for text, k in keys if text not in self._seeded[target]]
            if fresh:
                real = self._real[target].target
                self._stage_keys(conn, table, fresh)
                join = sql.SQL(" AND ").join(
                    sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k)) for k in table.key
                )
                conn.execute(
                    sql.SQL("INSERT INTO {} SELECT t.* FROM {} AS t JOIN {} AS s ON {}").format(
                        sql.Identifier("pg_temp", table.statements.target.name),
                        sql.Identifier(real.schema, real.name),
                        sql.Identifier(table.statements.stage),
                        join,
                    )
                )
                conn.execute(
                    sql.SQL("INSERT INTO {} SELECT {} FROM {}").format(
                        sql.Identifier("pg_temp", _seeded_name(table.rule_id)),
                        sql.SQL(", ").join(map(sql.Identifier, table.key)),
                        sql.Identifier(table.statements.stage),
                    )
                )
                conn.execute(
                    sql.SQL(
                        "INSERT INTO pg_temp.shadow_row_version SELECT * FROM {} WHERE target_table = %s"
                        " AND key = ANY(%b) ON CONFLICT DO NOTHING"
                    ).format(control.table(self.schema, "row_version")),
                    (str(target), [key_text(k) for k in fresh]),
                )
                self._seeded[target].update(key_text(k) for k in fresh)
            present = self._read(conn, table, [k for _, k in keys])
            self._before[target] = {text: present.get(text) for text, _ in keys}

    def after_writes(
        self, conn: psycopg.Connection[Any], writes: Sequence[TableWrites], result: BatchResult
    ) -> None:
        for w in writes:
            table = w.table
            before = self._before.get(table.target, {})
            failed = {key for target, key in result.unwritten if target == table.target}
            touched = [k for k in w.final if key_text(k) not in failed]
            after = self._read(conn, table, touched)
            columns = [c.target for c in table.columns]
            for key in touched:
                text = key_text(key)
                intent = w.final[key]
                kind, changed = row_diff(before.get(text), after.get(text), columns)
                rules = {c.rule_id for c in table.columns if c.target in changed}
                if kind == "insert":
                    rules.add(table.rule_id)
                if intent.kind in (Kind.DELETE, Kind.SOFT_DELETE, Kind.IGNORE):
                    rules = {
                        table.delete.rule_id,
                        *(c.rule_id for c in table.delete.set_columns if c.target in changed),
                    }
                self._record(conn, table.target, text, kind, changed, intent, sorted(rules))

    def _record(
        self,
        conn: psycopg.Connection[Any],
        target: TableRef,
        key: str | None,
        kind: str,
        changed: Mapping[str, Any] | None,
        intent: Intent | None,
        rules: Sequence[str],
        failure: Failure | None = None,
    ) -> None:
        ref = intent.event.ref if intent else (failure.ref if failure else None)
        position = intent.event.position.as_tuple() if intent and intent.event.position else None
        record = {
            "run_id": self.run_id,
            "table": str(target),
            "key": key,
            "kind": kind,
            "columns": changed or None,
            "topic": ref.topic if ref else None,
            "partition": ref.partition if ref else None,
            "offset": ref.offset if ref else None,
            "source_position": list(position) if position else None,
            "rule_ids": list(rules),
            "sqlstate": failure.sqlstate if failure else None,
            "message": failure.message if failure else None,
        }
        self._report.write(dumps(record) + "\n")
        self.counts[(str(target), kind)] += 1
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, group_id, target_table, key, kind, columns, topic, partition,"
                " kafka_offset, source_position, rule_ids, sqlstate, message)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(control.table(self.schema, "shadow_diff")),
            (
                self.run_id,
                self.group_id,
                str(target),
                key,
                kind,
                Jsonb(jsonb_safe(to_jsonable(changed)), dumps=dumps) if changed else None,
                record["topic"],
                record["partition"],
                record["offset"],
                dumps(record["source_position"]) if position else None,
                list(rules),
                record["sqlstate"],
                record["message"],
            ),
        )

    def store_fences(self, conn: psycopg.Connection[Any], fences: Sequence[Fence]) -> None:
        """A shadow run proves no drain: its fences are not recorded."""

    def store_stops(
        self, conn: psycopg.Connection[Any], stops: Sequence[Stop], flowing: Sequence[Partition]
    ) -> None:
        """A table the live run would stop becomes a `stopped` diff per target table (nothing is
        persisted: the live group's state is not the shadow's)."""
        for stop in stops:
            note = Failure(stop.ref, stop.rule_id, f"{stop.reason}; fix: {stop.fix}", None, None)
            for target in stop.targets:
                self._record(conn, target, None, "stopped", None, None, [stop.rule_id], note)
            self.stop_lines.append(stop.line())

    def store_unread(self, conn: psycopg.Connection[Any], unread: Mapping[tuple[str, int, str], int]) -> None:
        """Nothing persisted: the live group's state is not the shadow's (the run's log warns)."""

    def store_errors(
        self,
        conn: psycopg.Connection[Any],
        failures: Sequence[Failure],
        notes: Sequence[tuple[Intent, Narrowing]],
    ) -> int:
        """What the live run would write to error_record becomes `error` / `truncated` diffs."""
        for f in failures:
            self._record(conn, f.target or TableRef("-", "-"), f.key, "error", None, None, [f.rule_id], f)
            self.error_lines.append(f"{f.ref}: {f.rule_id}: {f.sqlstate or ''} {f.message}")
        for intent, note in notes:
            self._record(
                conn,
                intent.table.target,
                key_text(intent.key),
                note.kind,
                {note.target: {"message": note.message}},
                intent,
                [note.rule_id],
            )
        return len(failures)

    def before_truncate(self, conn: psycopg.Connection[Any], intent: Intent) -> None:
        self._record(
            conn, intent.table.target, None, "truncate", None, intent, [intent.table.truncate.rule_id]
        )

    def summary(self) -> dict[str, Any]:
        per_table: dict[str, dict[str, int]] = {}
        for (table, kind), n in sorted(self.counts.items()):
            per_table.setdefault(table, {})[kind] = n
        return {
            "run_id": self.run_id,
            "group_id": self.group_id,
            "diffs": per_table,
            "errors": self.error_lines,
            "stopped": self.stop_lines,
        }
