"""Collapsing per key with the ordering guard (replicator.core.intents), pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.core.intents import Key, Kind, key_text, prepare, to_intents
from replicator.core.layout import Layout, Layouts
from replicator.core.mapping import Plan, catalog_from_dict, compile_spec, load_spec
from replicator.core.model import (
    UNAVAILABLE,
    Batch,
    ChangeEvent,
    Failure,
    KafkaRef,
    Op,
    SourcePosition,
    TableRef,
)
from replicator.core.ordering import Version
from replicator.core.resolve import TableWrites, resolve, split_at_truncates
from tests.events import change
from tests.unit.mapping.demo_catalogs import TARGET

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "demo.shop.products"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_spec(load_spec(ROOT / "mappings" / "demo.yaml"), catalog_from_dict(TARGET))


def product(
    offset: int, op: Op = Op.UPDATE, position: SourcePosition | None = None, **after: Any
) -> ChangeEvent:
    row = {
        "sku": "S1",
        "name": "n",
        "description": "d",
        "price": 1,
        "weight_grams": None,
        "image": None,
        **after,
    }
    return change(
        TOPIC,
        op,
        "shop.products",
        offset=offset,
        position=position if position is not None else SourcePosition(1, offset),
        key={"sku": "S1"},
        before={"sku": "S1"} if op is Op.DELETE else None,
        after=None if op is Op.DELETE else row,
    )


def writes(plan: Plan, events: list[ChangeEvent], stored: dict[Key, Version] | None = None) -> TableWrites:
    out = to_intents(events, plan)
    table = next(t for t in plan.tables if t.rule_id == "product")
    return resolve(table, out.by_table[table.target], stored or {})


def test_last_event_per_key_wins(plan: Plan) -> None:
    w = writes(plan, [product(1, name="a"), product(2, name="b"), product(3, name="c")])
    assert [i.values["title"] for i in w.final.values()] == ["c"]
    assert w.versions[("S1",)].offset == 3


def test_update_then_delete_collapses_to_delete(plan: Plan) -> None:
    w = writes(plan, [product(1, name="a"), product(2, op=Op.DELETE)])
    assert w.final[("S1",)].kind is Kind.DELETE and w.versions[("S1",)].deleted


def test_redelivered_older_position_is_skipped_in_the_same_batch(plan: Plan) -> None:
    w = writes(
        plan,
        [
            product(5, name="new", position=SourcePosition(2, 9)),
            product(6, name="old", position=SourcePosition(1, 4)),
        ],
    )
    assert w.final[("S1",)].values["title"] == "new" and w.skipped_older == 1


def test_stored_newer_version_makes_events_noops(plan: Plan) -> None:
    stored = {("S1",): Version(TOPIC, 0, 10, SourcePosition(5, 5))}
    w = writes(plan, [product(3, name="x"), product(4, op=Op.DELETE)], stored)
    assert w.final == {} and w.skipped_older == 2


def test_unavailable_toast_column_is_filled_from_an_earlier_upsert_in_the_batch(plan: Plan) -> None:
    w = writes(plan, [product(1, description="full text"), product(2, description=UNAVAILABLE, name="z")])
    final = w.final[("S1",)]
    assert final.values["description"] == "full text" and final.values["title"] == "z"
    assert final.unavailable == frozenset()


def test_unavailable_toast_column_stays_unavailable_alone(plan: Plan) -> None:
    w = writes(plan, [product(2, description=UNAVAILABLE)])
    assert w.upsert_groups().keys() == {(frozenset({"description"}), frozenset())}


def test_an_upsert_without_its_toasted_column_after_the_rows_delete_is_stale_not_completed(
    plan: Plan,
) -> None:
    """Trial 9: a row's delete (held, soft or ignored: the target row stays) then an update that
    left a TOASTed column unchanged; the target's value of it is not the row's, and no upsert
    before the delete may complete it."""
    w = writes(
        plan,
        [
            product(1, description="old text"),
            product(2, op=Op.DELETE),
            product(3, description=UNAVAILABLE, name="back"),
        ],
    )
    final = w.final[("S1",)]
    assert w.stale == {("S1",)}
    assert final.values["description"] is UNAVAILABLE and final.values["title"] == "back"
    # the delete applied in an earlier batch: its stored version says so
    stored = {("S1",): Version(TOPIC, 0, 2, SourcePosition(1, 2), deleted=True)}
    assert writes(plan, [product(3, description=UNAVAILABLE)], stored).stale == {("S1",)}
    # a whole row after it ends it; an earlier upsert without a delete completes it
    again = writes(plan, [product(2, op=Op.DELETE), product(3, description=UNAVAILABLE), product(4)])
    assert again.stale == set()
    assert writes(plan, [product(1, description="t"), product(2, description=UNAVAILABLE)]).stale == set()


def test_truncate_splits_segments(plan: Plan) -> None:
    events = [product(1), product(2, op=Op.TRUNCATE), product(3), product(4, op=Op.DELETE)]
    seq = to_intents(events, plan).by_table[TableRef("catalog", "product")]
    segments = split_at_truncates(seq)
    assert [[i.kind for i in s] for s in segments] == [
        [Kind.UPSERT],
        [Kind.TRUNCATE],
        [Kind.UPSERT, Kind.DELETE],
    ]


def test_key_text_is_canonical() -> None:
    assert key_text((42, 3)) == "[42,3]" and key_text(("Zoë",)) == '["Zoë"]'


@given(
    st.lists(
        st.one_of(
            st.text(),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.booleans(),
            st.none(),
            st.uuids(),
            st.decimals(allow_nan=False),
            st.datetimes(),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_key_text_fast_path_writes_exactly_what_the_json_encoder_writes(parts: list[Any]) -> None:
    """Stored keys must not change text between versions: the orjson path equals json.dumps."""
    expected = json.dumps(parts, default=str, ensure_ascii=False, separators=(",", ":"))
    assert key_text(tuple(parts)) == expected


def test_unmapped_source_column_fails_when_policy_is_fail(plan: Plan) -> None:
    """product.unmapped: a new source column the spec does not name is an error record, not silence."""
    out = to_intents([product(1, surprise="x")], plan)
    assert [f.rule_id for f in out.failures] == ["product.unmapped"]


def test_mapping_failure_carries_the_target_key_when_computable(plan: Plan) -> None:
    """An error record names the row: a rejected column still has a computable key."""
    out = to_intents([product(1, name="N" * 10, sku="S1", price=-1, weight_grams="not a number")], plan)
    assert [(f.rule_id, f.key) for f in out.failures] == [("product.weight_kg", '["S1"]')]


def test_an_update_that_moves_a_row_of_a_keyless_table_is_an_error_record(plan: Plan) -> None:
    """product.key: without a primary key (no Kafka key) Debezium sends a change of the key columns
    as one update; upserting the new key would leave the old row, so it is an error record naming
    both keys. With a Kafka key, or the same key before and after, the update applies."""
    row = product(1).after or {}

    def update(key: dict[str, Any] | None, before_sku: str) -> ChangeEvent:
        event = product(1, sku="S2")
        return event._replace(key=key, before={**row, "sku": before_sku})

    out = to_intents([update(None, "S1")], plan)
    (failure,) = out.failures
    assert (failure.rule_id, failure.key) == ("product.key", '["S2"]')
    assert 'from key ["S1"] to ["S2"]' in failure.message and "primary key" in failure.message
    for event in (update({"sku": "S2"}, "S1"), update(None, "S2")):
        out = to_intents([event], plan)
        assert not out.failures and [i.key for i in out.by_table[TableRef("catalog", "product")]] == [("S2",)]


def test_final_versions_equals_what_resolve_stores(plan: Plan) -> None:
    """The writer claims new keys with `final_versions`; it must agree with `resolve`."""
    from replicator.core.resolve import final_versions

    events = [product(1), product(2), product(1, name="again"), product(3)]
    table = next(t for t in plan.tables if t.rule_id == "product")
    out = to_intents(events, plan)
    intents = out.by_table[table.target]
    redelivered = intents[0]._replace(
        version=intents[0].version._replace(offset=99)
    )  # newer offset, older position
    intents = [*intents, redelivered]
    assert final_versions(intents, {}) == resolve(table, intents, {}).versions


def moved(event: ChangeEvent, partition: int, snapshot: bool = False) -> ChangeEvent:
    """`event` on another partition of its topic; a snapshot row (no source position) if asked."""
    return event._replace(
        ref=event.ref._replace(partition=partition),
        position=None if snapshot else event.position,
        snapshot=snapshot,
        op=Op.READ if snapshot else event.op,
    )


def test_an_undecided_event_is_set_aside_not_applied_and_the_version_stays(plan: Plan) -> None:
    """A snapshot row from another partition of the same layout (no accept recorded) is neither
    newer nor older: it is set aside for an error record, and the row keeps its version."""
    stored = {("S1",): Version(TOPIC, 0, 40, SourcePosition(9, 9))}
    w = writes(plan, [moved(product(5, name="old snapshot"), 1, snapshot=True)], stored)
    assert w.final == {} and w.versions == {} and w.skipped_older == 0
    assert [(i.event.ref.partition, v) for i, v in w.undecided] == [(1, stored[("S1",)])]


def test_replaying_old_partitions_after_an_accepted_layout_regresses_no_row(plan: Plan) -> None:
    """The issue's case: the topic went from 1 to 2 partitions (partition 0 in transition from
    offset 20, settled from 30); S1 moved to partition 1, where a streaming update is its version.
    Replaying partition 0 from its start (the snapshot row, then old updates) changes nothing."""
    layouts = Layouts({TOPIC: (Layout(1, 1, 2, (30,), (20,)),)})
    stored = {("S1",): Version(TOPIC, 1, 4, SourcePosition(50, 51))}
    old = [
        moved(product(0, name="snapshot"), 0, snapshot=True),
        product(7, name="old update", position=SourcePosition(8, 9)),
        moved(product(25, name="snapshot in the transition"), 0, snapshot=True),
    ]
    w = resolve(
        next(t for t in plan.tables if t.rule_id == "product"),
        to_intents(old, plan).by_table[TableRef("catalog", "product")],
        stored,
        layouts,
    )
    assert w.final == {} and w.skipped_older == 3 and w.undecided == []


def test_a_reload_row_in_the_new_layout_lands_over_an_old_layout_version(plan: Plan) -> None:
    """Nothing lost: after the accept, the reload's row (no position, on the key's new partition)
    is newer than the version an old-layout event left, whatever their offsets."""
    layouts = Layouts({TOPIC: (Layout(1, 1, 2, (30,), (20,)),)})
    stored = {("S1",): Version(TOPIC, 0, 29, SourcePosition(8, 9))}
    w = writes_with(plan, [moved(product(2, name="reloaded"), 1, snapshot=True)], stored, layouts)
    assert [i.values["title"] for i in w.final.values()] == ["reloaded"]
    assert w.versions[("S1",)] == Version(TOPIC, 1, 2, None)


def writes_with(
    plan: Plan, events: list[ChangeEvent], stored: dict[Key, Version], layouts: Layouts
) -> TableWrites:
    out = to_intents(events, plan)
    table = next(t for t in plan.tables if t.rule_id == "product")
    return resolve(table, out.by_table[table.target], stored, layouts)


def test_final_versions_agree_with_resolve_across_partitions(plan: Plan) -> None:
    """The claim of a new key must not take a version `resolve` sets aside (undecided) or skips."""
    from replicator.core.resolve import final_versions

    accepted = Layouts({TOPIC: (Layout(1, 1, 2, (30,), (20,)),)})
    table = next(t for t in plan.tables if t.rule_id == "product")
    for layouts, events in (
        (Layouts(), [product(3), moved(product(1), 1, snapshot=True)]),  # one layout: undecided
        (accepted, [product(31), moved(product(1), 0, snapshot=True)]),  # new layout, then old: older
        (accepted, [product(3), moved(product(2), 1, snapshot=True)]),  # old layout, then new: newer
    ):
        intents = to_intents(events, plan).by_table[table.target]
        final = final_versions(intents, {}, layouts)
        assert final == resolve(table, intents, {}, layouts).versions
        assert len(final) == 1


def order(offset: int, op: Op = Op.UPDATE, status: str = "placed") -> ChangeEvent:
    row = {
        "id": 7,
        "customer_id": 1,
        "status": status,
        "placed_at": datetime(2024, 3, 31, 0, 30, tzinfo=UTC),
        "total": Decimal("1.50"),
        "note": None,
    }
    return change(
        "demo.shop.orders",
        op,
        "shop.orders",
        offset=offset,
        position=SourcePosition(1, offset),
        key={"id": 7},
        before=row if op is Op.DELETE else None,
        after=None if op is Op.DELETE else row,
    )


def order_writes(plan: Plan, events: list[ChangeEvent]) -> TableWrites:
    out = to_intents(events, plan)
    table = next(t for t in plan.tables if t.rule_id == "order")
    return resolve(table, out.by_table[table.target], {})


def test_ignored_delete_after_an_upsert_in_the_same_batch_keeps_the_row(plan: Plan) -> None:
    """`delete: ignore` (orders are archived, never removed): an order inserted, updated and
    deleted within one batch must land as its last upserted state, as it does when the events
    arrive in separate batches; the key's version still advances to the delete's."""
    w = order_writes(plan, [order(1, Op.CREATE), order(2, status="paid"), order(3, Op.DELETE)])
    final = w.final[(7,)]
    assert final.kind is Kind.UPSERT and final.values["status"] == "PAID"
    assert w.versions[(7,)].offset == 3
    alone = order_writes(plan, [order(3, Op.DELETE)])
    assert alone.final[(7,)].kind is Kind.IGNORE


def test_a_record_that_cannot_be_decoded_names_the_tables_its_topic_feeds(plan: Plan) -> None:
    """Trial 5: decode failures had no table, so `errors list --table` missed them. The demo's
    customers topic feeds two target tables: the first is the record's table, the other in `also`."""
    broken = Failure(KafkaRef("demo.shop.customers", 1, 7), "decode", "value is not JSON", b"k", b"{x")
    foreign = Failure(KafkaRef("other.topic", 0, 1), "decode", "value is not JSON", None, b"{x")
    prepared = prepare(Batch(failures=[broken, foreign], next_offsets={("other.topic", 0): 2}), plan)
    named, unknown = prepared.failures
    assert (named.target, named.key, named.also) == (
        TableRef("crm", "customer"),
        None,
        (("crm.customer_pii", None),),
    )
    assert unknown == foreign  # a topic the spec does not map: nothing to name
