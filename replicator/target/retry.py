"""The write target of `replicator errors retry`: the live tables, and the chosen error records
closed or brought up to date in the same transaction as the retried rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from replicator.core.mapping.plan import Plan
from replicator.core.model import BatchResult
from replicator.core.resolve import TableWrites
from replicator.core.retry import Chosen, Settled, settle
from replicator.target import control
from replicator.target.live import LiveTables
from replicator.target.store import BY_RETRY


class RetryTables(LiveTables):
    """`LiveTables` that also settles the chosen error records with the batch (see core.retry)."""

    def __init__(
        self, plan: Plan, control_schema: str, group_id: str, run_id: str, chosen: Sequence[Chosen]
    ) -> None:
        super().__init__(plan, control_schema, group_id, run_id)
        self._chosen = list(chosen)
        self.settled = Settled((), {})

    def after_writes(
        self, conn: psycopg.Connection[Any], writes: Sequence[TableWrites], result: BatchResult
    ) -> None:
        settled = settle(self._chosen, result.errors)
        table = control.table(self._schema, "error_record")
        conn.execute(
            sql.SQL(
                "UPDATE {} SET resolved_at = now(), resolved_by = %s, resolution = %s"
                " WHERE id = ANY(%s) AND resolved_at IS NULL"
            ).format(table),
            (
                BY_RETRY,
                f"retried in run {self._run_id}: applied, or a no-op where the row had moved on",
                list(settled.closed),
            ),
        )
        # A decode record whose event now fails for a table becomes that table's record (so the
        # failure is not stored again beside it: `store_errors` skips an open record of the event).
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "UPDATE {} SET rule_id = %s, sqlstate = %s, message = %s,"
                    " target_table = coalesce(target_table, %s), key = coalesce(key, %s),"
                    " also = coalesce(also, %s) WHERE id = %s"
                ).format(table),
                [
                    (
                        f.rule_id,
                        f.sqlstate,
                        f.message,
                        str(f.target) if f.target is not None else None,
                        f.key,
                        Jsonb([{"table": t, "key": k} for t, k in f.also]) if f.also else None,
                        i,
                    )
                    for i, f in settled.failing.items()
                ],
            )
        self.settled = settled
