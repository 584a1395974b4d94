"""Lookup rules resolved against the target (I/O edge), set-based, once per batch.

A lookup column's mapped value is a `LookupRef` (`core.mapping.plan`): which
lookup rule, which source values. Before a batch writes any row, every
`LookupRef` in it is resolved: per lookup rule, the distinct source values
are COPYed into a per-session stage shaped like the lookup table's match
columns (so they are parsed as those types), and one join reads the `take`
value (as text; the target column parses it back) and how many rows matched.

Invariants:
- One TRUNCATE, one COPY and one SELECT per lookup rule per batch, whatever the
  number of rows; nothing is read row by row.
- A stage is emptied before every fill and read only right after it, in the same
  transaction: it is not ON COMMIT DELETE ROWS (PostgreSQL truncates every such
  table of a session at each commit, used or not: `target.rows.TRUNCATE_PAST_ROWS`),
  and what a commit or a rollback leaves in it is never read.
- A value with no row follows the rule's `on_missing`: `null`, or `reject`:
  the event becomes an error record naming the rule, and none of its target
  rows is written (one event, all its rows or none). A value that matches
  several rows is always rejected: the lookup is ambiguous.
- The lookup table is only read (the shadow role needs SELECT on it). Rows
  added to it later do not change rows already written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.core.intents import Intent, key_text
from replicator.core.mapping.plan import LookupPlan, LookupRef, Plan
from replicator.core.model import Failure, KafkaRef, TableRef
from replicator.core.serialize import dumps


@dataclass(frozen=True, slots=True)
class Found:
    """What a lookup found for one source value: the `take` text (None: null), or why not."""

    value: str | None
    problem: str | None = None  # set when the value cannot be used


def _where(lookup: LookupPlan, values: tuple[Any, ...]) -> str:
    return " AND ".join(f"{m} = {dumps(v)}" for m, v in zip(lookup.match, values, strict=True))


class LookupResolver:
    """Resolves the `LookupRef` values of a plan's lookup rules on a target session."""

    def __init__(self, plan: Plan) -> None:
        self._lookups = plan.lookups

    def prepare_session(self, conn: psycopg.Connection[Any]) -> None:
        """Once per session: a stage per lookup rule."""
        if not self._lookups:
            return
        with conn.transaction():
            for lk in self._lookups:
                conn.execute(lk.statements.create_stage)

    def read(self, conn: psycopg.Connection[Any], refs: Iterable[LookupRef]) -> dict[tuple[int, str], Found]:
        """What each distinct (lookup, values) finds; keyed by (id of the lookup, key text of the
        values). Runs inside the caller's transaction; each stage is emptied before it is filled."""
        wanted: dict[int, tuple[LookupPlan, dict[str, tuple[Any, ...]]]] = {}
        for ref in refs:
            _, values = wanted.setdefault(id(ref.lookup), (ref.lookup, {}))
            values.setdefault(key_text(ref.values), ref.values)
        found: dict[tuple[int, str], Found] = {}
        for ident, (lk, values) in wanted.items():
            texts = list(values)
            st = lk.statements
            conn.execute(st.clear_stage)
            with conn.cursor().copy(st.copy_stage) as copy:
                for n, text in enumerate(texts):
                    copy.write_row([*values[text], n])
            for n, take, count in conn.execute(st.select).fetchall():
                text = texts[n]
                if count == 1:
                    found[(ident, text)] = Found(take)
                elif count > 1:
                    found[(ident, text)] = Found(
                        None,
                        f"lookup: {count} rows of {lk.table} match {_where(lk, values[text])}, so "
                        "the value is ambiguous; fix: make the lookup's match columns a unique key "
                        f"of {lk.table}",
                    )
                elif lk.on_missing == "null":
                    found[(ident, text)] = Found(None)
                else:
                    found[(ident, text)] = Found(
                        None,
                        f"lookup: no row of {lk.table} with {_where(lk, values[text])} "
                        f"(on_missing: reject); fix: add the row to {lk.table}, or declare "
                        "lookup: {on_missing: null}",
                    )
        return found

    def resolve(self, conn: psycopg.Connection[Any], merged: dict[TableRef, list[Intent]]) -> list[Failure]:
        """Replace every `LookupRef` in the batch's intents (in place); an event whose lookup
        fails loses all its intents and becomes one error record."""
        if not self._lookups:
            return []
        refs = [
            v
            for intents in merged.values()
            for i in intents
            if i.table.lookup_columns
            for v in i.values.values()
            if isinstance(v, LookupRef)
        ]
        if not refs:
            return []
        found = self.read(conn, refs)
        failed: dict[KafkaRef, tuple[Intent, str, str]] = {}
        for intents in merged.values():
            for n, intent in enumerate(intents):
                if not intent.table.lookup_columns:
                    continue
                values = dict(intent.values)
                for c in intent.table.lookup_columns:
                    v = values.get(c.target)
                    if not isinstance(v, LookupRef):
                        continue
                    got = found[(id(v.lookup), key_text(v.values))]
                    if got.problem is not None:
                        failed.setdefault(intent.event.ref, (intent, c.rule_id, got.problem))
                    values[c.target] = got.value
                intents[n] = intent._replace(values=values)
        if not failed:
            return []
        return self._drop_failed(merged, failed)

    @staticmethod
    def _drop_failed(
        merged: dict[TableRef, list[Intent]], failed: Mapping[KafkaRef, tuple[Intent, str, str]]
    ) -> list[Failure]:
        others: dict[KafkaRef, list[tuple[str, str | None]]] = {}
        for target, intents in merged.items():
            kept = []
            for i in intents:
                if i.event.ref in failed:
                    first = failed[i.event.ref][0]
                    if i is not first and (i.table.target, i.key) != (first.table.target, first.key):
                        others.setdefault(i.event.ref, []).append((str(target), key_text(i.key)))
                else:
                    kept.append(i)
            merged[target] = kept
        out = []
        for ref, (intent, rule_id, message) in failed.items():
            also = tuple(sorted(set(others.get(ref, ()))))
            if also:
                message += f" (the event is not applied to {', '.join(t for t, _ in also)} either)"
            out.append(
                Failure(
                    ref=ref,
                    rule_id=rule_id,
                    message=message,
                    raw_key=intent.event.raw_key,
                    raw_value=intent.event.raw_value,
                    target=intent.table.target,
                    key=key_text(intent.key),
                    also=also,
                )
            )
        return out
