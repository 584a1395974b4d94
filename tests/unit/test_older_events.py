"""Events older than a source schema change, mapped by the spec fixed for it (`core.schema_change.older`):
held rows and retried error records from before `ALTER TABLE ... DROP / ADD / RENAME COLUMN`."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.core.intents import Intent, to_intents
from replicator.core.mapping import compile_spec, load_spec_text
from replicator.core.mapping.catalog import Catalog, catalog_from_dict
from replicator.core.mapping.plan import Plan
from replicator.core.model import (
    ChangeEvent,
    Failure,
    KafkaRef,
    Op,
    SourceColumn,
    SourcePosition,
    SourceShape,
    TableRef,
)
from replicator.core.resolve import TableWrites
from replicator.core.schema_change import SourceNow, older
from replicator.run.schema_guard import SchemaGuard
from replicator.target.rows import Refusal, TableRows

TOPIC = "t.src.orders"
SOURCE = TableRef("src", "orders")
TARGET = TableRef("dst", "orders")
SPEC = """
version: 1
topic_prefix: t
defaults: {unmapped_source_columns: fail}
tables:
  - id: orders
    source: src.orders
    target: dst.orders
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns:
      id: {from: id}
      note: {from: note}
      priority: {from: priority}
      label: {concat: [{column: note}, "/", {column: priority}]}
"""
CATALOG = catalog_from_dict(
    {
        "dst.orders": {
            "columns": {"id": "bigint", "note": "text", "priority": "int", "label": "text"},
            "pk": ["id"],
        }
    }
)
# `priority` added to the source (and read by the fixed spec); `legacy_ref` dropped (and left out of it)
NOW = SourceNow(10_000, {SOURCE: frozenset({"id", "note", "priority"})})


def plan(spec: str = SPEC) -> Plan:
    return compile_spec(load_spec_text(spec, "orders.yaml"), CATALOG)


def event(row: dict[str, Any], lsn: int | None = 5_000, offset: int = 7) -> ChangeEvent:
    return ChangeEvent(
        ref=KafkaRef(TOPIC, 0, offset),
        op=Op.CREATE,
        table=SOURCE,
        key={"id": row["id"]},
        before=None,
        after=row,
        position=SourcePosition(lsn or 1, lsn or 1),
        snapshot=False,
        ts_ms=1,
        raw_key=b"k",
        raw_value=b"v",
        lsn=lsn,
    )


def mapped(p: Plan, e: ChangeEvent, now: SourceNow | None = NOW) -> Intent | Failure:
    out = to_intents([e], p, now)
    if out.failures:
        return out.failures[0]
    return out.by_table[TARGET][0]


def test_a_column_dropped_after_the_event_and_left_out_of_the_spec_is_ignored() -> None:
    p = plan()
    old = event({"id": 1, "note": "n", "priority": 2, "legacy_ref": "L-1"})
    intent = mapped(p, old)
    assert isinstance(intent, Intent), intent
    assert dict(intent.values) == {"id": 1, "note": "n", "priority": 2, "label": "n/2"} and not intent.absent
    assert older(p.tables[0], old, old.after or {}, NOW) == (frozenset({"legacy_ref"}), frozenset())
    # without the catalog, or with one not read after the event, or one that still has the column:
    # `legacy_ref` may be new (the catalog may be older than the event), so it stays an error
    for now in (
        None,
        SourceNow(5_000, NOW.columns),
        SourceNow(10_000, {SOURCE: NOW.columns[SOURCE] | {"legacy_ref"}}),
    ):
        failure = mapped(p, old, now)
        assert isinstance(failure, Failure) and failure.rule_id == "orders.unmapped", now
    assert isinstance(mapped(p, event({**(old.after or {})}, lsn=None)), Failure)  # no LSN: not known older


def test_a_column_added_after_the_event_is_left_out_of_its_row_so_the_target_keeps_or_defaults_it() -> None:
    p = plan()
    intent = mapped(p, event({"id": 1, "note": "n"}))
    assert isinstance(intent, Intent), intent
    # every target column computed from `priority` is absent: never written (an insert gets the
    # target's DEFAULT, an update leaves it), not NULL
    assert intent.absent == frozenset({"priority", "label"})
    assert dict(intent.values) == {"id": 1, "note": "n"} and not intent.unavailable and not intent.notes
    assert intent.kind.value == "upsert" and intent.key == (1,)
    writes = TableWrites(p.tables[0], final={(1,): intent})
    assert list(writes.upsert_groups()) == [(frozenset(), frozenset({"priority", "label"}))]
    for now in (None, SourceNow(5_000, NOW.columns), SourceNow(10_000, {SOURCE: frozenset({"id", "note"})})):
        failure = mapped(p, event({"id": 1, "note": "n"}), now)
        assert isinstance(failure, Failure) and "'priority' is missing from the event" in failure.message, now


def test_a_renamed_column_stays_an_error_its_value_would_be_lost() -> None:
    # RENAME note TO memo, the spec reads memo now: an older event carries note and lacks memo,
    # exactly what a DROP of note beside an ADD of memo looks like, and memo's value is note's
    spec = SPEC.replace("note: {from: note}", "note: {from: memo}").replace(
        "{column: note}", "{column: memo}"
    )
    now = SourceNow(10_000, {SOURCE: frozenset({"id", "memo", "priority"})})
    for unmapped in ("fail", "ignore"):  # note, gone from the table, is not what fails it
        relaxed = spec.replace("unmapped_source_columns: fail", f"unmapped_source_columns: {unmapped}")
        failure = mapped(plan(relaxed), event({"id": 1, "note": "n", "priority": 2}), now)
        assert isinstance(failure, Failure) and "'memo' is missing from the event" in failure.message


def test_a_column_dropped_beside_one_added_is_a_possible_rename_unless_the_spec_ignores_it() -> None:
    # DROP legacy_ref and ADD priority on one table (trial 11's orders): an event older than both
    # carries legacy_ref and lacks priority, as one older than RENAME legacy_ref TO priority would
    old = event({"id": 1, "note": "n", "legacy_ref": "L-1"})
    failure = mapped(plan(), old)
    assert isinstance(failure, Failure) and "'priority' is missing from the event" in failure.message
    declared = plan(SPEC.replace("    columns:", "    ignore_source_columns: [legacy_ref]\n    columns:"))
    intent = mapped(declared, old)
    assert isinstance(intent, Intent), intent
    assert dict(intent.values) == {"id": 1, "note": "n"} and intent.absent == frozenset({"priority", "label"})


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        # a key column: the row cannot be placed
        (
            lambda s: (
                s.replace("key: {id: id}", "key: {id: priority}")
                .replace("      id: {from: id}\n", "")
                .replace("columns: fail", "columns: ignore")
            ),
            "key",
        ),
        # a column the filter reads: whether the row belongs is unknown
        (
            lambda s: s.replace("    delete:", "    filter: {column: priority, op: not_null}\n    delete:"),
            "filter",
        ),
    ],
)
def test_a_key_or_filter_column_the_event_predates_stays_an_error(change: Any, needle: str) -> None:
    p = plan(change(SPEC))
    failure = mapped(p, event({"id": 1, "note": "n"}))
    assert isinstance(failure, Failure) and "priority" in failure.message, failure
    assert older(p.tables[0], event({"id": 1, "note": "n"}), {"id": 1, "note": "n"}, NOW) is None, needle


def test_an_insert_older_than_a_not_null_column_without_default_stays_an_error_naming_the_fix() -> None:
    p = plan()
    intent = mapped(p, event({"id": 1, "note": "n"}))
    assert isinstance(intent, Intent)
    why = Refusal(
        "23502",
        'null value in column "priority" of relation "orders" violates not-null constraint',
        None,
        None,
        "dst",
        "orders",
        "priority",
    )
    refused = TableRows(p.tables[0])._refused(intent, why)
    assert refused.sqlstate == "23502" and refused.rule_id == "orders.priority"
    assert "older than the source column priority" in refused.message
    assert "give the target column priority the DEFAULT" in refused.message
    other = TableRows(p.tables[0])._refused(intent, why._replace(column="note"))
    assert "older than" not in other.message  # a column the event has: the server's words alone


def shaped(row: dict[str, Any], lsn: int) -> ChangeEvent:
    return event(row, lsn)._replace(shape=SourceShape(tuple(SourceColumn(c, "int64", True) for c in row)))


def test_the_guard_lets_a_lagging_partitions_older_events_through_and_still_stops_newer_ones() -> None:
    """A partition that lagged behind the change, read after the spec was fixed for it: its events
    from before the change are applied as the mapping above says, not stopped; an event as new as
    the catalog (a change after the start) is judged as before."""

    def unread(source: TableRef) -> tuple[Catalog, Catalog]:
        raise AssertionError("a column-set drift reads no catalog")

    declared = SPEC.replace("    columns:", "    ignore_source_columns: [legacy_ref]\n    columns:")
    p = plan(declared)
    guard = SchemaGuard(load_spec_text(declared, "orders.yaml"), p, unread, now=NOW)
    before_both = {"id": 1, "note": "n", "legacy_ref": "L"}  # older than the DROP and the ADD
    assert guard(shaped(before_both, 5_000)) is None
    stop = guard(shaped(before_both, 10_000))  # as new as the catalog: not known to be older
    assert stop is not None and "priority" in stop.reason
    assert SchemaGuard(load_spec_text(declared, "orders.yaml"), p, unread)(shaped(before_both, 5_000))
    # a column new to the spec that the table has now is no older-event case: it stops
    new_column = {"id": 1, "note": "n", "priority": 2, "points": 3}
    now = SourceNow(10_000, {SOURCE: NOW.columns[SOURCE] | {"points"}})
    assert SchemaGuard(load_spec_text(declared, "orders.yaml"), p, unread, now=now)(shaped(new_column, 5_000))
    # without the spec's word that legacy_ref was dropped, it may be priority renamed: stopped
    undeclared = SchemaGuard(load_spec_text(SPEC, "orders.yaml"), plan(), unread, now=NOW)
    assert undeclared(shaped(before_both, 5_000)) is not None
    assert undeclared(shaped({"id": 1, "note": "n", "legacy_ref": "L", "priority": 2}, 5_000)) is None
    mapped_now = to_intents([shaped(before_both, 5_000)], p, NOW)
    assert not mapped_now.failures and mapped_now.by_table[TARGET][0].absent == frozenset(
        {"priority", "label"}
    )
