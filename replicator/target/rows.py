"""Set-based writes of one table's resolved rows (I/O edge), with bad rows isolated by bisection.

Invariants:
- Values travel through COPY into the table's per-session stage, then one
  prebuilt statement per table and column set writes them: upserts
  (`INSERT ... ON CONFLICT DO UPDATE ... WHERE ... IS DISTINCT FROM`, no
  write when nothing changed), updates of rows whose unchanged-TOAST columns
  Debezium did not send (the placeholder is never written: those columns keep
  their target value), hard deletes, soft-delete updates.
- A statement that fails with a row-level error (data exception, NOT NULL,
  CHECK, FK, unique) is rolled back to its savepoint and bisected
  (`core.isolate`): k bad rows among n cost about 2·k·log2(n) attempts; every
  other row lands. Each refused row comes back as a `Refused` with its
  SQLSTATE, message and the constraint and table the server named.
- Anything that is not a row-level error propagates (the caller classifies).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from replicator.core.errors import one_line
from replicator.core.intents import Intent, Kind, key_text
from replicator.core.isolate import isolate
from replicator.core.mapping.plan import TablePlan
from replicator.core.model import TableRef
from replicator.core.resolve import TableWrites
from replicator.core.values import Infinity
from replicator.pg.errors import is_row_error, sqlstate


@dataclass(frozen=True, slots=True)
class Refused:
    """A final intent the target did not take."""

    intent: Intent
    rule_id: str
    message: str
    sqlstate: str | None = None
    constraint: str | None = None
    server_table: TableRef | None = None  # the table the server named (a FK's referencing table)


@dataclass(slots=True)
class Outcome:
    applied: dict[str, int] = field(default_factory=dict)  # op -> rows
    refused: list[Refused] = field(default_factory=list)
    attempts: int = 0

    def add(self, op: str, n: int) -> None:
        if n:
            self.applied[op] = self.applied.get(op, 0) + n


def _adapter(target_type: str) -> Callable[[Any], Any]:
    base = target_type.lower()
    if base in ("json", "jsonb"):
        return lambda v: None if v is None else Jsonb(v)
    return lambda v: str(v) if isinstance(v, Infinity) else v


class TableRows:
    """The writes of one target table, against any session the caller holds a transaction on."""

    def __init__(self, table: TablePlan) -> None:
        self.table = table
        self._adapters = {
            c.target: _adapter(c.target_type) for c in (*table.columns, *table.delete.set_columns)
        }
        self._all = tuple(c.target for c in table.columns)
        self._stage_id = sql.Identifier(table.statements.stage)

    # ------------------------------------------------------------------ primitives
    def _stage(self, conn: psycopg.Connection[Any], cols: tuple[str, ...], intents: Sequence[Intent]) -> None:
        adapters = [self._adapters[c] for c in cols]
        conn.execute(sql.SQL("TRUNCATE {}").format(self._stage_id))
        with conn.cursor().copy(self.table.statements.copy_stage(cols)) as copy:
            for intent in intents:
                values = intent.values
                copy.write_row([a(values[c]) for a, c in zip(adapters, cols, strict=True)])

    def _isolated(
        self,
        conn: psycopg.Connection[Any],
        cols: tuple[str, ...],
        intents: Sequence[Intent],
        statement: sql.Composed,
        op: str,
        out: Outcome,
    ) -> None:
        """Set-based first; on a row-level error, bisect so only the bad rows fail."""

        def attempt(chunk: Sequence[Intent]) -> psycopg.Error | None:
            try:
                with conn.transaction():
                    self._stage(conn, cols, chunk)
                    conn.execute(statement)
            except psycopg.Error as exc:
                if not is_row_error(exc):
                    raise
                return exc
            return None

        done = isolate(intents, attempt)
        out.attempts += done.attempts
        out.add(op, len(done.applied))
        out.refused.extend(self._refused(intent, exc) for intent, exc in done.failed)

    def _refused(self, intent: Intent, exc: psycopg.Error) -> Refused:
        diag = exc.diag
        column = diag.column_name or ""
        rule = next((c.rule_id for c in self.table.columns if c.target == column), self.table.rule_id)
        detail = one_line(exc)
        if diag.message_detail:
            detail += f" ({diag.message_detail.splitlines()[0]})"
        server_table = (
            TableRef(diag.schema_name, diag.table_name) if diag.schema_name and diag.table_name else None
        )
        return Refused(intent, rule, detail, sqlstate(exc), diag.constraint_name, server_table)

    # ------------------------------------------------------------------ writes
    def upserts(self, conn: psycopg.Connection[Any], writes: TableWrites, out: Outcome) -> None:
        statements = self.table.statements
        for missing, intents in writes.upsert_groups().items():
            cols = tuple(c for c in self._all if c not in missing)
            if not missing:
                self._isolated(conn, cols, intents, statements.upsert(cols), "upsert", out)
                continue
            # Unchanged TOAST columns: update the existing row, never write a placeholder.
            present = self._present_keys(conn, intents)
            rule = next(c.rule_id for c in self.table.columns if c.target in missing)
            for intent in intents:
                if key_text(intent.key) not in present:
                    out.refused.append(
                        Refused(
                            intent,
                            rule,
                            f"columns {sorted(missing)} are unchanged TOAST values (not sent by "
                            "Debezium) and the row is absent from the target; fix: set REPLICA IDENTITY "
                            "FULL on the source table or re-snapshot it",
                        )
                    )
            there = [i for i in intents if key_text(i.key) in present]
            if there:
                self._isolated(conn, cols, there, statements.update_only(cols), "upsert", out)

    def _present_keys(self, conn: psycopg.Connection[Any], intents: Sequence[Intent]) -> set[str]:
        self._stage(conn, self.table.key, intents)
        rows = conn.execute(self.table.statements.select_keys(self.table.key)).fetchall()
        return {key_text(tuple(r)) for r in rows}

    def deletes(self, conn: psycopg.Connection[Any], writes: TableWrites, out: Outcome) -> None:
        statements = self.table.statements
        hard = writes.by_kind(Kind.DELETE)
        if hard:
            self._isolated(conn, self.table.key, hard, statements.delete_keys, "delete", out)
        soft = writes.by_kind(Kind.SOFT_DELETE)
        if soft:
            cols = tuple(soft[0].values)
            self._isolated(conn, cols, soft, statements.soft_delete(cols), "soft_delete", out)
        out.add("delete_ignored", len(writes.by_kind(Kind.IGNORE)))
