"""The schema guard: judges each source shape of a mapped topic once, for the loop's `cut`.

A shape (an event's row columns, see `core.schema_change`) is judged the first
time the run meets it on a topic, and the verdict is kept for every later
event of that shape:
- the column set against each table rule the topic feeds (`judge`: from the
  event alone, so every instance of the group decides the same);
- a *schema-change event* is then re-checked against the live catalog: a shape
  whose read columns changed type since the topic's last accepted shape, or
  any shape of a table whose check failed when the run started (tolerated
  because the table was replicating already, see `run.daemon`). The table
  rules of the topic are checked (`check_tables`) against the live source
  table as the event sees it: only the columns the event has (a column the
  source dropped since cannot be judged any more, and its rules are not);
  an error stops the table (`Drift.retyped`), none accepts the shape.
An event older than the source catalog the run read at its start (`now`: a
partition that lagged behind a change the spec was fixed for) is not stopped
for a column-set drift that `core.schema_change.older` explains: a column
gone from the table since that the spec leaves out, a column it reads that
the table gained since (its mapping then does the same, `core.intents`).
Policy `record` tables are never judged. Schemaless events carry their row's
column names only: column-set changes are judged, a new column is never known
to be nullable (`ignore_new_columns` stops on it), types are not compared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from replicator.core.errors import ReplicatorError, one_line
from replicator.core.mapping import Catalog, Spec
from replicator.core.mapping.catalog import Table
from replicator.core.mapping.check import check_tables
from replicator.core.mapping.plan import Plan, TablePlan
from replicator.core.model import ChangeEvent, SourceShape, TableRef
from replicator.core.schema_change import (
    Drift,
    SourceNow,
    Stop,
    checked_columns,
    judge,
    older,
    retyped,
    stop_for,
)

LiveCatalogs = Callable[[TableRef], tuple[Catalog, Catalog]]  # (source, target) catalogs, read now
Log = Callable[..., None]


_Stream = tuple[str, TableRef]  # a topic and one source table whose events it carries


class SchemaGuard:
    """`guard(event)`: the `Stop` that event makes, or None (see the module)."""

    def __init__(
        self,
        spec: Spec,
        plan: Plan,
        live: LiveCatalogs,
        suspect: Iterable[str] = (),
        log: Log = lambda kind, **fields: None,
        now: SourceNow | None = None,
    ) -> None:
        self.spec = spec
        self.plan = plan
        self._live = live
        self._now = now
        self._log = log
        self.suspect = set(suspect)  # topics whose tables did not check at start
        # Per stream (a topic and one source table in it: a topic can carry several tables, and an
        # event is judged only against its own table's rules, as `core.intents.to_intents` maps it):
        self._baseline: dict[_Stream, SourceShape] = {}  # the last accepted shape
        self._drifts: dict[tuple[_Stream, SourceShape], tuple[Drift, ...]] = {}
        self._last: dict[_Stream, tuple[SourceShape, tuple[Drift, ...]]] = {}  # by identity

    def __call__(self, event: ChangeEvent) -> Stop | None:
        shape = event.shape
        if shape is None:
            return None
        stream = (event.ref.topic, event.table)
        last = self._last.get(stream)
        if last is not None and last[0] is shape:
            drifts = last[1]
        else:
            drifts, kept = self._judged(stream, shape)
            if kept:
                self._last[stream] = (shape, drifts)
        if not drifts or self._older_explains(event, shape, drifts):
            return None
        return stop_for(event, self.plan.tables_for(*stream), drifts)

    def _older_explains(self, event: ChangeEvent, shape: SourceShape, drifts: tuple[Drift, ...]) -> bool:
        """Whether every drift is a column-set change the event predates (see the module)."""
        now = self._now
        if now is None or event.lsn is None or event.lsn >= now.lsn:
            return False
        by_id = {t.schema_change.rule_id: t for t in self.plan.tables_for(event.ref.topic, event.table)}
        row = dict.fromkeys(shape.names)
        for d in drifts:
            table = by_id.get(d.rule_id)
            then = older(table, event, row, now) if table is not None and not d.retyped else None
            if then is None or not then.added.issuperset(d.missing) or not then.gone.issuperset(d.added):
                return False
        return True

    def _judged(self, stream: _Stream, shape: SourceShape) -> tuple[tuple[Drift, ...], bool]:
        """The shape's drifts, and whether the verdict is kept for later events of that shape."""
        key = (stream, shape)
        found = self._drifts.get(key)
        if found is None:
            try:
                found = self._judge(stream, shape)
            except _Unjudged as exc:  # stops this event; judged again when it is read again
                return exc.drifts, False
            self._drifts[key] = found
        return found, True

    def _judge(self, stream: _Stream, shape: SourceShape) -> tuple[Drift, ...]:
        topic = stream[0]
        tables = [t for t in self.plan.tables_for(*stream) if t.schema_change.kind != "record"]
        if not tables:
            return ()
        drifts = tuple(d for t in tables if (d := judge(t, shape, self.plan.spec_path)) is not None)
        if drifts:
            return drifts
        baseline = self._baseline.get(stream)
        changed = retyped(baseline, shape, checked_columns(tables)) if baseline is not None else ()
        if changed or topic in self.suspect:
            drifts = self._recheck(tables, shape, changed)
            self._log(
                "schema_recheck",
                topic=topic,
                retyped=",".join(changed) or "-",
                verdict="stop" if drifts else "accepted",
            )
            if drifts:
                return drifts
            self.suspect.discard(topic)
        self._baseline[stream] = shape
        return ()

    def _recheck(
        self, tables: list[TablePlan], shape: SourceShape, changed: tuple[str, ...]
    ) -> tuple[Drift, ...]:
        """The table rules re-checked against the live source table as this event sees it."""
        source_ref = tables[0].source
        try:
            source, target = self._live(source_ref)
        except ReplicatorError as exc:
            self._log("warning", message=f"schema re-check of {source_ref}: {one_line(exc)}")
            raise _Unjudged(
                tuple(
                    Drift(
                        t.schema_change.rule_id,
                        t.source,
                        t.target,
                        retyped=changed or tuple(sorted(t.read_by)),
                        problem=f"the live catalog could not be read: {one_line(exc)}",
                        spec=self.plan.spec_path,
                        remedy="make the source catalog readable (REPLICATOR_SOURCE__*), then restart"
                        " `replicator run` (or let a rebalance hand the partition over): the event is"
                        " judged again",
                    )
                    for t in tables[:1]
                )
            ) from exc
        live = source.table(source_ref)
        seen = _as_seen(live, shape)
        gone = {c for c in shape.names if live is not None and live.column(c) is None}
        unjudged = {rid for t in tables for c in gone for rid in t.read_by.get(c, ())}
        catalog = Catalog({**source.tables, **({source_ref: seen} if seen is not None else {})})
        by_id = {t.rule_id: t for t in tables}
        problems = [
            p
            for p in check_tables(self.spec, by_id, catalog, target)
            if p.severity == "error" and p.rule_id not in unjudged
        ]
        drifts = []
        for table in tables:
            mine = [p for p in problems if p.table == table.rule_id]
            if not mine:
                continue
            readers = {c for c, rids in table.read_by.items() if mine[0].rule_id in rids}
            drifts.append(
                Drift(
                    table.schema_change.rule_id,
                    table.source,
                    table.target,
                    retyped=tuple(sorted(set(changed) | readers)) or tuple(sorted(table.read_by)),
                    problem=f"{mine[0].rule_id}: {mine[0].message}",
                    spec=self.plan.spec_path,
                )
            )
        return tuple(drifts)


class _Unjudged(Exception):
    """A shape that could not be judged now (the live catalog was not readable): its event stops,
    and the verdict is not kept."""

    def __init__(self, drifts: tuple[Drift, ...]) -> None:
        super().__init__("not judged")
        self.drifts = drifts


def _as_seen(live: Table | None, shape: SourceShape) -> Table | None:
    """The live table with only the columns the event has."""
    if live is None:
        return None
    return dataclasses.replace(live, columns=tuple(c for c in live.columns if c.name in shape.names))


def topics_of(plan: Plan, table_ids: Iterable[str]) -> set[str]:
    """The topics of some table rules (by id)."""
    wanted = set(table_ids)
    return {t.topic for t in plan.tables if t.rule_id in wanted}
