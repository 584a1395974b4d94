"""Shadow mode: the live pipeline with a sink that writes diffs instead of rows.

`ShadowWriter` IS the live `TargetWriter`, pointed at session-local copies:
every target table gets a TEMP clone (same columns, defaults, NOT NULL,
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
only SELECT on them); the live guard table `row_version` is only read.
Diffs go to `<control>.shadow_diff` and to a JSON Lines report.

Limits (documented): FK violations and unique violations against rows the
batch does not touch are not predicted (the clones hold only touched rows);
a source TRUNCATE is reported as one `truncate` diff for the table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from replicator import control
from replicator.batching import Failure, Intent, Key, Kind, TableWrites, key_text
from replicator.mapping.plan import Narrowing, Plan, TablePlan
from replicator.mapping.statements import TableStatements
from replicator.model import TableRef
from replicator.writer import BatchResult, TargetWriter

_SHADOW_DDL = """
CREATE TABLE IF NOT EXISTS {s}.shadow_diff (
  id           bigserial PRIMARY KEY,
  run_id       text NOT NULL,
  group_id     text NOT NULL,
  target_table text NOT NULL,
  key          text,
  kind         text NOT NULL,
  columns      jsonb,
  topic        text,
  partition    int,
  kafka_offset bigint,
  source_position text,
  rule_ids     text[],
  sqlstate     text,
  message      text,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS shadow_diff_run ON {s}.shadow_diff (run_id);
"""


def ensure_shadow_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the shadow_diff table (run by the replicator's owner role, e.g. `replicator init`)."""
    with conn.transaction():
        conn.execute(sql.SQL(_SHADOW_DDL).format(s=sql.Identifier(schema)))


def grant_shadow_role(conn: psycopg.Connection[Any], schema: str, role: str) -> None:
    """Least privilege for shadow mode in the control schema (run as its owner): read the
    guard and checkpoints, write only checkpoints, runs and diffs. SELECT on the data
    tables is granted by their owner; the shadow role never gets DML on them."""
    r, s = sql.Identifier(role), sql.Identifier(schema)
    with conn.transaction():
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, r))
        conn.execute(
            sql.SQL("GRANT INSERT, UPDATE ON {}, {}, {} TO {}").format(
                control.table(schema, "checkpoint"),
                control.table(schema, "shadow_diff"),
                control.table(schema, "run"),
                r,
            )
        )
        conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r))


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def _clone_name(rule_id: str) -> str:
    return "shadow_" + hashlib.sha256(rule_id.encode()).hexdigest()[:16]


def _shadow_plan(plan: Plan) -> Plan:
    """The same plan, its statements aimed at TEMP clones (`pg_temp.shadow_<hash>`)."""
    tables = []
    for t in plan.tables:
        s = t.statements
        clone = TableStatements(
            target=TableRef("pg_temp", _clone_name(t.rule_id)), key=s.key, columns=s.columns, stage=s.stage
        )
        tables.append(dataclasses.replace(t, statements=clone))
    return Plan(plan.spec_path, tuple(tables), plan.apply_order, plan.warnings)


def row_diff(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, columns: Sequence[str]
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Kind and changed columns ({column: {before, after}}) of one key. Pure."""
    if before is None and after is None:
        return "noop", {}
    if before is None:
        assert after is not None
        return "insert", {c: {"before": None, "after": jsonable(after.get(c))} for c in columns}
    if after is None:
        return "delete", {c: {"before": jsonable(before.get(c)), "after": None} for c in columns}
    changed = {
        c: {"before": jsonable(before.get(c)), "after": jsonable(after.get(c))}
        for c in columns
        if before.get(c) != after.get(c)
    }
    return ("update" if changed else "noop"), changed


class ShadowWriter(TargetWriter):
    def __init__(
        self, conninfo: str, plan: Plan, control_schema: str, group_id: str, run_id: str, report: TextIO
    ) -> None:
        super().__init__(conninfo, _shadow_plan(plan), control_schema, group_id, run_id)
        self._real = {t.target: t for t in plan.tables}
        self._versions = sql.Identifier("pg_temp", "shadow_row_version")
        # A rollback would undo seeded clone rows that `_seeded` remembers: no batch retries.
        self.reorder_retries = 0
        self._report = report
        self._seeded: dict[TableRef, set[str]] = {}
        self._before: dict[TableRef, dict[str, dict[str, Any] | None]] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self.error_lines: list[str] = []

    # ---------------------------------------------------------------- session
    def _prepare_session(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            present = conn.execute("SELECT to_regclass(%s)", (f"{self.schema}.shadow_diff",)).fetchone()
            if present is None or present[0] is None:
                raise psycopg.errors.UndefinedTable(
                    f"{self.schema}.shadow_diff does not exist; "
                    "run `replicator init` as the replicator's owner"
                )
            conn.execute(
                sql.SQL("CREATE TEMP TABLE IF NOT EXISTS shadow_row_version (LIKE {} INCLUDING ALL)").format(
                    control.table(self.schema, "row_version")
                )
            )
            for t in self.plan.tables:
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
                conn.execute(t.statements.create_stage)
        # A new session starts with empty clones: nothing is seeded yet.
        self._seeded = {t.target: set() for t in self.plan.tables}

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
        rows = conn.execute(table.statements.select_keys(cols)).fetchall()
        out = {}
        for row in rows:
            values = dict(zip(names, row, strict=True))
            out[key_text(tuple(values[k] for k in table.key))] = values
        return out

    def _before_writes(
        self, conn: psycopg.Connection[Any], by_table: Mapping[TableRef, list[Intent]]
    ) -> None:
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
                    sql.SQL(
                        "INSERT INTO pg_temp.shadow_row_version SELECT * FROM {} WHERE target_table = %s"
                        " AND key = ANY(%s) ON CONFLICT DO NOTHING"
                    ).format(control.table(self.schema, "row_version")),
                    (str(target), [key_text(k) for k in fresh]),
                )
                self._seeded[target].update(key_text(k) for k in fresh)
            present = self._read(conn, table, [k for _, k in keys])
            self._before[target] = {text: present.get(text) for text, _ in keys}

    def _after_writes(
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
        self._report.write(json.dumps(record, ensure_ascii=False) + "\n")
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
                Jsonb(changed) if changed else None,
                record["topic"],
                record["partition"],
                record["offset"],
                json.dumps(record["source_position"]) if position else None,
                list(rules),
                record["sqlstate"],
                record["message"],
            ),
        )

    def _store_errors(
        self,
        conn: psycopg.Connection[Any],
        failures: Sequence[Failure],
        notes: Sequence[tuple[Intent, Narrowing]],
    ) -> None:
        """What the live run would write to error_record becomes `error` / `truncated` diffs."""
        for f in failures:
            self._record(conn, f.target or TableRef("-", "-"), f.key, "error", None, None, [f.rule_id], f)
            self.error_lines.append(f"{f.ref}: {f.rule_id}: {f.sqlstate or ''} {f.message}")
        for intent, note in notes:
            self._record(
                conn,
                intent.table.target,
                key_text(intent.key),
                "truncated",
                {note.target: {"message": note.message}},
                intent,
                [note.rule_id],
            )

    def _truncate(self, conn: psycopg.Connection[Any], intent: Intent, result: BatchResult) -> None:
        self._record(
            conn, intent.table.target, None, "truncate", None, intent, [intent.table.truncate.rule_id]
        )
        super()._truncate(conn, intent, result)

    def summary(self) -> dict[str, Any]:
        per_table: dict[str, dict[str, int]] = {}
        for (table, kind), n in sorted(self.counts.items()):
            per_table.setdefault(table, {})[kind] = n
        return {
            "run_id": self.run_id,
            "group_id": self.group_id,
            "diffs": per_table,
            "errors": self.error_lines,
        }


def write_review(path: Path, summary: Mapping[str, Any], report: Path, sample: int = 20) -> None:
    """A Markdown cutover-review report: counts per table and kind, sample diffs, errors."""
    kinds = ["insert", "update", "delete", "noop", "error", "truncated", "truncate"]
    ranges = ", ".join(f"{k} {a}..{b}" for k, (a, b) in summary.get("range", {}).items() if b > a)
    lines = [
        f"# Shadow run {summary['run_id']}",
        "",
        f"Consumer group `{summary['group_id']}`; diffs in `{report.name}`.",
        "",
        f"Previewed offsets (from..to, to exclusive): {ranges or 'none'}. Changes that reach",
        "Kafka after these offsets are not in this preview; the live run applies them as usual.",
        "",
        "| table | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for table, counts in summary["diffs"].items():
        lines.append(f"| {table} | " + " | ".join(str(counts.get(k, 0)) for k in kinds) + " |")
    lines += ["", "## Sample of field-level diffs", ""]
    shown = 0
    with report.open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["kind"] not in ("insert", "update", "delete") or shown >= sample:
                continue
            shown += 1
            lines.append(
                f"- **{d['kind']}** `{d['table']}` key `{d['key']}` at "
                f"`{d['topic']}[{d['partition']}]@{d['offset']}` rules {', '.join(d['rule_ids'])}"
            )
            for col, change in (d["columns"] or {}).items():
                lines.append(f"  - `{col}`: `{change['before']!r}` → `{change['after']!r}`")
    lines += ["", "## Error records the live run would write", ""]
    lines += [f"- {e}" for e in summary["errors"]] or ["none"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
