"""Set-based writes of one table's resolved rows (I/O edge), with bad rows isolated by bisection.

Invariants:
- Values travel through COPY into the table's per-session stage, then one
  prebuilt statement per table and column set writes them: upserts
  (`INSERT ... ON CONFLICT DO UPDATE ... WHERE ... IS DISTINCT FROM`, no
  write when nothing changed), updates of rows whose unchanged-TOAST columns
  Debezium did not send (the placeholder is never written: those columns keep
  their target value), hard deletes, soft-delete updates.
- The rows are staged once; a statement that fails with a row-level error
  (data exception, NOT NULL, CHECK, FK, unique) is rolled back to its
  savepoint and bisected (`core.isolate`) over ranges of the staged row
  numbers: k bad rows among n cost about 2·k·log2(n) attempts; every other
  row lands. A failed chunk of at most `LEAF_ROWS` rows is applied row by row
  in one round trip by a PL/pgSQL loop (a session-local function, one
  subtransaction per row), so many bad rows cost one call per chunk, not a
  statement per row. A batch whose staging fails (a value the stage's COPY
  cannot parse) is staged chunk by chunk instead, and a leaf chunk that
  cannot be staged is staged and written row by row. Each refused row
  comes back as a `Refused` with its SQLSTATE, message and the constraint
  and table the server named. The
  function is created inside the batch transaction: one that a rollback
  took away since (a retried or halted batch) is created again.
- Anything that is not a row-level error propagates (the caller classifies).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from replicator.core.errors import one_line
from replicator.core.intents import Intent, Kind, key_text, left_by_filter
from replicator.core.isolate import Isolated, isolate
from replicator.core.mapping.plan import ForeignKeyPlan, TablePlan
from replicator.core.mapping.statements import ONE_ROW, ROW_NUMBER, ROW_VARIABLE, Within
from replicator.core.model import TableRef
from replicator.core.resolve import TableWrites
from replicator.core.serialize import json_document
from replicator.core.values import JsonText
from replicator.pg.errors import is_row_error, sqlstate
from replicator.pg.types import array_cell

LEAF_ROWS = 256

#: A stage is emptied by DELETE, which leaves its rows dead (a temporary table is never vacuumed),
#: until this many rows went through it since it was last truncated; then by TRUNCATE (a new
#: file: about the cost of deleting this many rows), which frees them. Stages are not ON COMMIT
#: DELETE ROWS: PostgreSQL truncates every such table of a session at every commit, touched or
#: not (150 stages: 70-200 ms per commit).
TRUNCATE_PAST_ROWS = 2000

_Item = TypeVar("_Item")  # what an isolation bisects: row numbers of a stage, or the intents

# Savepoints of the staged-once path, sent in the round trip of the statements they guard (a
# query without parameters may hold several statements; the server stops at the first error,
# which is then rolled back to the savepoint). They nest inside psycopg's own savepoints.
_NOTHING = sql.SQL("")
_STAGE = sql.SQL("SAVEPOINT replicator_stage; ")
_UNSTAGE = sql.SQL("ROLLBACK TO SAVEPOINT replicator_stage; RELEASE SAVEPOINT replicator_stage")
_KEEP_STAGE = sql.SQL("RELEASE SAVEPOINT replicator_stage; ")
_TRY = sql.SQL("SAVEPOINT replicator_attempt; ")
_TRIED = sql.SQL("; RELEASE SAVEPOINT replicator_attempt")
_UNTRY = sql.SQL("ROLLBACK TO SAVEPOINT replicator_attempt; RELEASE SAVEPOINT replicator_attempt")

#: A table's statement builder: the statement for the staged rows a `Within` selects.
Statement = Callable[[Within], sql.Composed]

# The row-by-row loop over the stage rows numbered first..last: `{stmt}` is one of the `*_row`
# statements (restricted to the stage row whose ctid is `{var}`); column names win over the
# function's own (`use_column`).
_LOOP = """CREATE OR REPLACE FUNCTION {fn}(replicator_first_ int, replicator_last_ int)
RETURNS TABLE (replicator_rn_out int, replicator_state text,
  replicator_message text, replicator_detail text, replicator_constraint text, replicator_schema text,
  replicator_table text, replicator_column text)
LANGUAGE plpgsql AS {tag}
#variable_conflict use_column
DECLARE {var} tid; replicator_n_ int;
BEGIN
  FOR {var}, replicator_n_ IN SELECT ctid, {number} FROM {stage}
      WHERE {number} BETWEEN replicator_first_ AND replicator_last_ ORDER BY {number} LOOP
    BEGIN
      {stmt};
    EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
      GET STACKED DIAGNOSTICS replicator_state = RETURNED_SQLSTATE, replicator_message = MESSAGE_TEXT,
        replicator_detail = PG_EXCEPTION_DETAIL, replicator_constraint = CONSTRAINT_NAME,
        replicator_schema = SCHEMA_NAME, replicator_table = TABLE_NAME, replicator_column = COLUMN_NAME;
      replicator_rn_out := replicator_n_;
      RETURN NEXT;
    END;
  END LOOP;
END {tag}"""


@dataclass(frozen=True, slots=True)
class Refused:
    """A final intent the target did not take."""

    intent: Intent
    rule_id: str
    message: str
    sqlstate: str | None = None
    constraint: str | None = None
    server_table: TableRef | None = None  # the table the server named (a FK's referencing table)
    # refused by the writer itself, to wait (a cascade's delete): held, never judged an error record
    waits: bool = False


class Refusal(NamedTuple):
    """What the server said about a refused row (from an exception, or from the loop)."""

    sqlstate: str | None
    message: str
    detail: str | None
    constraint: str | None
    schema: str | None
    table: str | None
    column: str | None


def _pairs(left: str, lcols: Sequence[str], right: str, rcols: Sequence[str]) -> sql.Composed:
    """`left.a = right.x AND left.b = right.y ...`, column by column."""
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, a), sql.Identifier(right, b))
        for a, b in zip(lcols, rcols, strict=True)
    )


def _from_exception(exc: psycopg.Error) -> Refusal:
    d = exc.diag
    return Refusal(
        sqlstate(exc),
        one_line(exc),
        d.message_detail,
        d.constraint_name,
        d.schema_name,
        d.table_name,
        d.column_name,
    )


@dataclass(slots=True)
class Outcome:
    applied: dict[str, int] = field(default_factory=dict)  # op -> rows
    refused: list[Refused] = field(default_factory=list)
    attempts: int = 0

    def add(self, op: str, n: int) -> None:
        if n:
            self.applied[op] = self.applied.get(op, 0) + n


def _unwritable(exc: psycopg.ProgrammingError, cols: Sequence[str], values: Sequence[Any]) -> psycopg.Error:
    """A row-level error (SQLSTATE 22000, so the row is isolated and becomes an error record) for
    a row holding a value psycopg cannot dump: raised here, it would stop the daemon."""
    kinds = {type(v).__name__ for v in values if isinstance(v, Mapping | set)}
    named = [c for c, v in zip(cols, values, strict=False) if isinstance(v, Mapping | set)]
    where = f" in column(s) {', '.join(named)}" if named else ""
    return psycopg.errors.DataException(
        f"{one_line(exc)}{where}: a decoded value of type {', '.join(sorted(kinds)) or '?'} has no"
        " PostgreSQL text form; fix: map it with a transform (or to a json/jsonb column), or report"
        " the Debezium type so it gets a conversion"
    )


def _jsonb(value: Any) -> Any:
    """A json/jsonb cell: Debezium's document text as it is, any other value as a document whose
    numbers stay exact (`core.serialize.json_document`)."""
    if value is None or isinstance(value, JsonText):
        return value
    return Jsonb(value, dumps=json_document)


def _itself(table: TableRef) -> sql.Composable:
    return sql.Identifier(table.schema, table.name)


class TableRows:
    """The writes of one target table, against any session the caller holds a transaction on."""

    def __init__(self, table: TablePlan, relation: Callable[[TableRef], sql.Composable] = _itself) -> None:
        """`relation`: how another target table is read (a foreign key's parent or child): live,
        the table; in a shadow run, its clone's rows over the real ones (`WriteTarget.relation`)."""
        self.table = table
        self._relation = relation
        # json/jsonb values are wrapped (unless they are a document's text already); everything
        # else (±infinity included, see pg.types) is dumped by the session's adapters as it is.
        self._json = frozenset(
            c.target
            for c in (*table.columns, *table.delete.set_columns)
            if c.target_type.lower() in ("json", "jsonb")
        )
        # Array cells whose elements mix types (±infinity beside dates) go as array text (`pg.types`).
        self._arrays = frozenset(
            c.target for c in (*table.columns, *table.delete.set_columns) if c.target_type.endswith("[]")
        )
        self._all = tuple(c.target for c in table.columns)
        self._loops: set[tuple[int, str]] = set()  # (session, function) created in pg_temp
        self._through: dict[int, int] = {}  # session -> rows staged since its stage was truncated
        self._stage_id = sql.Identifier(table.statements.stage)

    # ------------------------------------------------------------------ primitives
    def _stage(
        self,
        conn: psycopg.Connection[Any],
        cols: tuple[str, ...],
        intents: Sequence[Intent],
        lead: sql.Composable = _NOTHING,
    ) -> None:
        """The intents' values into the emptied stage, numbered 1, 2, ... `lead` is sent with the
        emptying statement, in its round trip."""
        get = itemgetter(*cols)
        wrap = [i for i, c in enumerate(cols) if c in self._json]
        arrays = [i for i, c in enumerate(cols) if c in self._arrays]
        conn.execute(lead + self._emptying(conn, len(intents)))
        with conn.cursor().copy(self.table.statements.copy_stage(cols, numbered=True)) as copy:
            for n, intent in enumerate(intents, 1):
                row = get(intent.values)
                values = [row] if len(cols) == 1 else list(row)
                for i in wrap:
                    values[i] = _jsonb(values[i])
                for i in arrays:
                    values[i] = array_cell(values[i])
                values.append(n)
                try:
                    copy.write_row(values)
                except psycopg.ProgrammingError as exc:  # a value no adapter writes (a struct, say)
                    raise _unwritable(exc, cols, values) from exc

    def _emptying(self, conn: psycopg.Connection[Any], adding: int) -> sql.Composed:
        """The statement that empties the stage before `adding` rows go in (see
        `TRUNCATE_PAST_ROWS`; a TRUNCATE in a savepoint makes a new file each time, so it is
        rare)."""
        through = self._through.get(id(conn), 0) + adding
        if through > TRUNCATE_PAST_ROWS:
            self._through[id(conn)] = adding
            return sql.SQL("TRUNCATE {}").format(self._stage_id)
        self._through[id(conn)] = through
        return sql.SQL("DELETE FROM {}").format(self._stage_id)

    def _isolated(
        self,
        conn: psycopg.Connection[Any],
        cols: tuple[str, ...],
        intents: Sequence[Intent],
        statement: Statement,
        op: str,
        out: Outcome,
    ) -> None:
        """Set-based first; on a row-level error, bisect, and loop over small failed chunks
        server-side, so only the bad rows fail. The batch is staged once (in a savepoint of its
        own, outside every attempt's): attempts and loops read ranges of its row numbers.
        A clean batch costs three round trips: the stage's savepoint and DELETE, the COPY, and
        the release, the attempt's savepoint, the statement and its release."""
        if not intents:
            return  # nothing to stage (and no savepoint left open)
        try:
            self._stage(conn, cols, intents, lead=_STAGE)
        except psycopg.Error as exc:
            if not is_row_error(exc):
                raise
            # the stage itself refused a value (COPY: text its column type cannot parse)
            conn.execute(_UNSTAGE)
            self._restaging(conn, cols, intents, statement, op, out)
            return
        everything, one_row = len(intents), statement(ONE_ROW)
        kept = [_KEEP_STAGE]  # sent with the first attempt: the stage's savepoint is released once

        def attempt(chunk: Sequence[int]) -> Refusal | None:
            within = None if len(chunk) == everything else (chunk[0] + 1, chunk[-1] + 1)
            try:
                conn.execute((kept.pop() if kept else _NOTHING) + _TRY + statement(within) + _TRIED)
            except psycopg.Error as exc:
                if not is_row_error(exc):
                    raise
                conn.execute(_UNTRY)
                return _from_exception(exc)
            return None

        def leaf(chunk: Sequence[int]) -> list[tuple[int, Refusal]]:
            if kept:
                conn.execute(kept.pop())
            rows = self._looped(conn, one_row, chunk[0] + 1, chunk[-1] + 1)
            return [(n - 1 - chunk[0], Refusal(*rest)) for n, *rest in rows]

        done = isolate(range(everything), attempt, leaf, LEAF_ROWS)
        self._record(out, op, done, intents.__getitem__)

    def _restaging(
        self,
        conn: psycopg.Connection[Any],
        cols: tuple[str, ...],
        intents: Sequence[Intent],
        statement: Statement,
        op: str,
        out: Outcome,
    ) -> None:
        """`_isolated` for a batch whose staging failed: every attempt stages its own chunk, and a
        leaf chunk that cannot be staged is staged and written row by row."""
        one_row = statement(ONE_ROW)

        def attempt(chunk: Sequence[Intent]) -> Refusal | None:
            return self._attempt(conn, statement(None), lambda: self._stage(conn, cols, chunk))

        def one_by_one(chunk: Sequence[Intent]) -> list[tuple[int, Refusal]]:
            refused = ((i, attempt([intent])) for i, intent in enumerate(chunk))
            return [(i, why) for i, why in refused if why is not None]

        def leaf(chunk: Sequence[Intent]) -> list[tuple[int, Refusal]]:
            try:
                rows = self._looped(conn, one_row, 1, len(chunk), lambda: self._stage(conn, cols, chunk))
            except psycopg.Error as exc:
                if not is_row_error(exc):
                    raise
                return one_by_one(chunk)  # the stage refused a value of this chunk: the loop never ran
            return [(n - 1, Refusal(*rest)) for n, *rest in rows]

        done = isolate(intents, attempt, leaf, LEAF_ROWS)
        self._record(out, op, done, lambda intent: intent)

    def _record(
        self, out: Outcome, op: str, done: Isolated[_Item, Refusal], intent: Callable[[_Item], Intent]
    ) -> None:
        """Add an isolation's result to `out`: its attempts, its applied rows under `op`, and a
        refusal for each failed row (`intent`: the row's intent from the item isolated)."""
        out.attempts += done.attempts
        filtered = 0 if op == "upsert" else sum(left_by_filter(intent(item)) for item in done.applied)
        out.add(op, len(done.applied) - filtered)
        out.add("filtered", filtered)
        out.refused.extend(self._refused(intent(item), why) for item, why in done.failed)

    @staticmethod
    def _attempt(
        conn: psycopg.Connection[Any], statement: sql.Composed, stage: Callable[[], None] | None = None
    ) -> Refusal | None:
        """Run `statement` (after `stage`) in a savepoint: None, or the row-level error that
        rolled it back."""
        try:
            with conn.transaction():
                if stage is not None:
                    stage()
                conn.execute(statement)
        except psycopg.Error as exc:
            if not is_row_error(exc):
                raise
            return _from_exception(exc)
        return None

    def _looped(
        self,
        conn: psycopg.Connection[Any],
        one_row: sql.Composed,
        first: int,
        last: int,
        stage: Callable[[], None] | None = None,
    ) -> list[tuple[Any, ...]]:
        """The staged rows numbered first..last (after `stage`) applied one by one server-side, in a
        savepoint: (row number, the refusal's fields) of each row that failed."""

        def run() -> list[tuple[Any, ...]]:
            with conn.transaction():
                if stage is not None:
                    stage()
                return conn.execute(
                    sql.SQL("SELECT * FROM {}({}, {})").format(
                        self._loop(conn, one_row), sql.Literal(first), sql.Literal(last)
                    )
                ).fetchall()

        try:
            return run()
        except psycopg.errors.UndefinedFunction:
            # Created in a transaction rolled back since (a retried or halted batch), or on a
            # closed session whose id() a new one reuses: create it again, once.
            self._loops.discard((id(conn), self._loop_name(conn, one_row)))
            return run()

    def _loop(self, conn: psycopg.Connection[Any], one_row: sql.Composed) -> sql.Identifier:
        """The session-local function applying the staged rows one by one with `one_row`
        (created once per session and statement)."""
        body = one_row.as_string(conn)
        name = self._loop_name(conn, one_row)
        fn = sql.Identifier("pg_temp", name)
        if (id(conn), name) in self._loops:
            return fn
        tag = "$replicator$"
        while tag in body:  # an identifier may hold anything: pick a dollar quote it does not contain
            tag = f"$replicator{secrets.token_hex(4)}$"
        conn.execute(
            sql.SQL(_LOOP).format(
                fn=fn,
                tag=sql.SQL(tag),
                var=sql.Identifier(ROW_VARIABLE),
                number=sql.Identifier(ROW_NUMBER),
                stage=self._stage_id,
                stmt=one_row,
            )
        )
        self._loops.add((id(conn), name))
        return fn

    @staticmethod
    def _loop_name(conn: psycopg.Connection[Any], one_row: sql.Composed) -> str:
        return "replicator_rows_" + hashlib.sha256(one_row.as_string(conn).encode()).hexdigest()[:16]

    def _refused(self, intent: Intent, why: Refusal) -> Refused:
        rule = next(
            (c.rule_id for c in self.table.columns if c.target == (why.column or "")), self.table.rule_id
        )
        detail = why.message
        if why.detail:
            detail += f" ({why.detail.splitlines()[0]})"
        if why.column and why.column in intent.absent:
            # an insert older than the source column: its value was the source's ADD COLUMN default
            detail += (
                f"; the event is older than the source column {why.column} is computed from (added"
                f" since); fix: give the target column {why.column} the DEFAULT the source's ADD COLUMN"
                " gave, then `replicator errors retry`; or `replicator reload --table"
                f" {self.table.source}`, then `replicator errors resolve` the record"
            )
        server_table = TableRef(why.schema, why.table) if why.schema and why.table else None
        return Refused(intent, rule, detail, why.sqlstate, why.constraint or None, server_table)

    # ------------------------------------------------------------------ writes
    def upserts(self, conn: psycopg.Connection[Any], writes: TableWrites, out: Outcome) -> None:
        statements = self.table.statements
        for (missing, absent), intents in writes.upsert_groups().items():
            # columns the events predate are not written: an insert gets their DEFAULT
            cols = tuple(c for c in self._all if c not in missing and c not in absent)
            if not missing:
                self._isolated(conn, cols, intents, partial(statements.upsert, cols), "upsert", out)
                continue
            # Unchanged TOAST columns: update the existing row, never write a placeholder, nor keep
            # values a delete of the row (held, soft or ignored) left behind.
            present = self._present_keys(conn, intents)
            rule = next(c.rule_id for c in self.table.columns if c.target in missing)
            for intent in intents:
                if intent.key in writes.stale:
                    why = (
                        "the target's values of them are older than the row's: the row was deleted or "
                        "left the filter since (its delete held, soft or ignored left them there)"
                    )
                elif key_text(intent.key) not in present:
                    why = "the row is absent from the target (e.g. it came back into a filter)"
                else:
                    continue
                out.refused.append(
                    Refused(
                        intent,
                        rule,
                        f"columns {sorted(missing)} are unchanged TOAST values (not sent by Debezium) "
                        f"and {why}; fix: `replicator reload --table {self.table.source}` reads it whole "
                        "again (set REPLICA IDENTITY FULL on the source table to have every update "
                        "carry every column)",
                    )
                )
            there = [i for i in intents if key_text(i.key) in present and i.key not in writes.stale]
            if there:
                self._isolated(conn, cols, there, partial(statements.update_only, cols), "upsert", out)

    def delete_all_but(self, conn: psycopg.Connection[Any], keep: set[str]) -> int:
        """Delete every row whose key text is not in `keep`; returns how many went."""
        statements = self.table.statements
        gone = [
            row for row in conn.execute(statements.all_keys).fetchall() if key_text(tuple(row)) not in keep
        ]
        if gone:
            conn.execute(self._emptying(conn, len(gone)))
            with conn.cursor().copy(statements.copy_stage(self.table.key, numbered=True)) as copy:
                for n, row in enumerate(gone, 1):
                    copy.write_row([*row, n])
            conn.execute(statements.delete_keys)
        return len(gone)

    def _present_keys(self, conn: psycopg.Connection[Any], intents: Sequence[Intent]) -> set[str]:
        self._stage(conn, self.table.key, intents)
        rows = conn.execute(self.table.statements.select_keys(self.table.key)).fetchall()
        return {key_text(tuple(r)) for r in rows}

    # ------------------------------------------------------------------ deferred foreign keys
    def unreferenced(
        self, conn: psycopg.Connection[Any], fk: ForeignKeyPlan, rows: Sequence[Intent]
    ) -> list[Intent]:
        """Of `rows` (this table's upserts, written, every column of `fk` set), those whose
        referenced row is not in `fk.parent` now."""
        return self._matching(conn, rows, fk.columns, fk.parent, fk.ref_columns, exists=False)

    def lock(self, conn: psycopg.Connection[Any], rows: Sequence[Intent]) -> None:
        """Lock `rows` (by key) FOR UPDATE, in key order. A transaction inserting a row that
        references one of them holds it FOR KEY SHARE (its foreign key check): this waits for that
        one to end, and a later one waits for this transaction: once it returns, no other
        transaction is adding a row that references them, and the rows added are visible to the
        next statement (READ COMMITTED)."""
        key = self.table.key
        self._stage(conn, key, rows)
        conn.execute(
            sql.SQL("SELECT FROM {} AS t JOIN {} AS s ON {} ORDER BY {} FOR UPDATE OF t").format(
                sql.Identifier(*self.table.statements.target),  # a shadow's clone: no live row is locked
                self._stage_id,
                _pairs("t", key, "s", key),
                sql.SQL(", ").join(sql.Identifier("t", k) for k in key),
            )
        )

    def referenced(
        self, conn: psycopg.Connection[Any], fk: ForeignKeyPlan, rows: Sequence[Intent]
    ) -> list[Intent]:
        """Of `rows` (this table's hard deletes, whose key `fk` references), those a row of
        `fk.child` still references."""
        return self._matching(conn, rows, fk.ref_columns, fk.child, fk.columns, exists=True)

    def _matching(
        self,
        conn: psycopg.Connection[Any],
        rows: Sequence[Intent],
        cols: tuple[str, ...],
        other: TableRef,
        other_cols: tuple[str, ...],
        exists: bool,
    ) -> list[Intent]:
        """Of `rows` (staged by `cols`), those that do (`exists`) or do not have a row in `other`
        whose `other_cols` equal their `cols`, column by column."""
        self._stage(conn, cols, rows)
        found = conn.execute(
            sql.SQL("SELECT s.{} FROM {} AS s WHERE {} EXISTS (SELECT FROM {} AS o WHERE {})").format(
                sql.Identifier(ROW_NUMBER),
                self._stage_id,
                sql.SQL("" if exists else "NOT"),
                self._relation(other),
                _pairs("o", other_cols, "s", cols),
            )
        ).fetchall()
        return [rows[n - 1] for (n,) in found]

    def deletes(
        self, conn: psycopg.Connection[Any], writes: TableWrites, out: Outcome, waiting: Collection[Any] = ()
    ) -> None:
        """`waiting`: keys whose hard delete is not written in this pass (the caller refuses them)."""
        statements = self.table.statements
        hard = [i for i in writes.by_kind(Kind.DELETE) if i.key not in waiting]
        if hard:
            self._isolated(conn, self.table.key, hard, statements.delete_keys_within, "delete", out)
        soft = writes.by_kind(Kind.SOFT_DELETE)
        if soft:
            cols = tuple(soft[0].values)
            self._isolated(conn, cols, soft, partial(statements.soft_delete, cols), "soft_delete", out)
        ignored = writes.by_kind(Kind.IGNORE)
        filtered = sum(map(left_by_filter, ignored))
        out.add("delete_ignored", len(ignored) - filtered)
        out.add("filtered", filtered)
