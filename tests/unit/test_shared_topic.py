"""One topic, several source tables (trial 14): Debezium names the topics of `"dup x"` and `dup_x`
the same (`src.dup_x`: an unsafe character becomes `_`), and a routing transform merges tables.
Each event feeds only the rules of its own source table (`core.intents.to_intents`) and is judged
only against them (`run.schema_guard`); another table's events are counted, never written."""

from __future__ import annotations

from typing import Any

from replicator.core.intents import other_tables, prepare, to_intents
from replicator.core.mapping import Catalog, Plan, catalog_from_dict, compile_spec, load_spec_text
from replicator.core.model import (
    Batch,
    ChangeEvent,
    KafkaRef,
    Op,
    SourceColumn,
    SourcePosition,
    SourceShape,
    TableRef,
)
from replicator.run.schema_guard import SchemaGuard

TOPIC = "t.src.dup_x"
SPEC = """
version: 1
topic_prefix: t
tables:
  - id: spaced
    source: src.dup x
    target: dst.spaced
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns: {id: {from: id}, label: {from: label}}
  - id: underscored
    source: src.dup_x
    target: dst.underscored
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns: {id: {from: id}, amount: {from: amount}}
"""
SOURCE = catalog_from_dict(
    {
        "src.dup x": {"columns": {"id": "bigint", "label": "text"}, "pk": ["id"]},
        "src.dup_x": {"columns": {"id": "bigint", "amount": "bigint"}, "pk": ["id"]},
    }
)
TARGET = catalog_from_dict(
    {
        "dst.spaced": {"columns": {"id": "bigint", "label": "text"}, "pk": ["id"]},
        "dst.underscored": {"columns": {"id": "bigint", "amount": "bigint"}, "pk": ["id"]},
    }
)


def plan() -> Plan:
    return compile_spec(load_spec_text(SPEC, "dup.yaml"), TARGET)


def insert(offset: int, table: str, **row: Any) -> ChangeEvent:
    return ChangeEvent(
        ref=KafkaRef(TOPIC, 0, offset),
        op=Op.CREATE,
        table=TableRef.parse(table),
        key={"id": row["id"]},
        before=None,
        after=row,
        position=SourcePosition(100 + offset, 200 + offset),
        snapshot=False,
        ts_ms=offset,
        raw_key=b"k",
        raw_value=b"v",
        shape=SourceShape(tuple(SourceColumn(c, "int64" if c != "label" else "string", True) for c in row)),
    )


def test_both_tables_read_the_one_topic_debezium_gives_them() -> None:
    assert [t.rule_id for t in plan().tables_for_topic(TOPIC)] == ["spaced", "underscored"]


def test_each_event_feeds_only_the_rules_of_its_own_source_table() -> None:
    out = to_intents(
        [
            insert(1, "src.dup x", id=1, label="space"),
            insert(2, "src.dup_x", id=2, amount=20),
            insert(3, "src.dup x", id=3, label="again"),
            insert(4, "src.dup-x", id=4, label="a table the spec does not map"),
        ],
        plan(),
    )
    spaced, underscored = TableRef("dst", "spaced"), TableRef("dst", "underscored")
    assert {t: [(i.key, i.values) for i in intents] for t, intents in out.by_table.items()} == {
        spaced: [((1,), {"id": 1, "label": "space"}), ((3,), {"id": 3, "label": "again"})],
        underscored: [((2,), {"id": 2, "amount": 20})],
    }
    assert out.failures == [] and out.counts == {"other_table:src.dup-x": 1}


def test_a_batch_carries_the_events_of_a_table_no_rule_reads_per_partition_and_table() -> None:
    """What the metrics (per table) and the control schema's `unread_table` (per partition and
    table) are fed: only the events of the table no rule reads, not the other tables'."""
    events = [
        insert(1, "src.dup-x", id=1, label="a"),
        insert(2, "src.dup x", id=2, label="b"),
        insert(3, "src.dup-x", id=3, label="c"),
        insert(4, "src.dup-x", id=4, label="d")._replace(ref=KafkaRef(TOPIC, 1, 4)),
    ]
    batch = Batch(events=events, next_offsets={(TOPIC, 0): 4, (TOPIC, 1): 5})
    prepared = prepare(batch, plan())
    assert prepared.unread == {(TOPIC, 0, "src.dup-x"): 2, (TOPIC, 1, "src.dup-x"): 1}
    assert other_tables(prepared.counts) == {"src.dup-x": 3}
    assert other_tables({"tombstone": 2, "other_table:a.b": 0, "unmapped_topic": 1}) == {}


class Live:
    def __call__(self, table: TableRef) -> tuple[Catalog, Catalog]:
        return SOURCE, TARGET


def test_each_table_is_judged_against_its_own_rules_only() -> None:
    """Before: each table's columns were judged against the other's rule, and both tables stopped
    at their first event ("column amount ... renamed or dropped")."""
    p = plan()
    guard = SchemaGuard(load_spec_text(SPEC, "dup.yaml"), p, Live())
    assert guard(insert(1, "src.dup x", id=1, label="space")) is None
    assert guard(insert(2, "src.dup_x", id=2, amount=20)) is None
    stop = guard(insert(3, "src.dup_x", id=3, amount=30, extra=1))  # a column new to its rule
    assert stop is not None and stop.rule_id == "underscored.on_schema_change"
    assert stop.targets == (TableRef("dst", "underscored"),)
    assert guard(insert(4, "src.dup-x", id=4, label="unmapped")) is None  # not the spec's: not judged
