"""Partition layouts (replicator.core.layout): epochs, changes, the stops they make, pure."""

from __future__ import annotations

import pytest

from replicator.core.layout import RULE, Change, Layout, Layouts, changes, next_layout, without
from replicator.core.mapping import Plan, catalog_from_dict, compile_spec, load_spec_text
from replicator.core.model import Batch, ChangeEvent, Failure, KafkaRef, Op, SourcePosition, TableRef
from tests.events import change

T = "t.src.items"
SPEC = """
version: 1
topic_prefix: t
tables:
  - id: items
    source: src.items
    target: dst.items
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns: {id: {from: id}, name: {from: name}}
  - id: item_names
    source: src.items
    target: dst.item_names
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns: {id: {from: id}, name: {from: name}}
"""


def plan() -> Plan:
    table = {"columns": {"id": "bigint not null", "name": "text"}, "pk": ["id"]}
    catalog = catalog_from_dict({"dst.items": table, "dst.item_names": table})
    return compile_spec(load_spec_text(SPEC, "items.yaml"), catalog)


# 3 -> 4 partitions (transition from 60/150/250, settled from 100/200/300), then 4 -> 6.
TWO = Layouts(
    {
        T: (
            Layout(1, 3, 4, (100, 200, 300), (60, 150, 250)),
            Layout(2, 4, 6, (150, 260, 320, 40), (120, 230, 300, 10)),
        )
    }
)


@pytest.mark.parametrize(
    ("partition", "offset", "rank"),
    [
        (0, 59, 0),  # before the first change was seen on partition 0
        (0, 60, 1),  # its transition: either count
        (0, 99, 1),
        (0, 100, 2),  # settled in layout 1
        (0, 119, 2),
        (0, 120, 3),  # the second transition
        (0, 150, 4),
        (3, 0, 2),  # created by the first change: never in a transition of it
        (3, 9, 2),
        (3, 10, 3),
        (3, 40, 4),
        (4, 0, 4),  # created by the second change
        (5, 7, 4),
    ],
)
def test_a_records_rank_follows_its_partition_and_offset(partition: int, offset: int, rank: int) -> None:
    assert TWO.rank(T, partition, offset) == rank


def test_a_topic_without_an_accepted_layout_has_rank_zero() -> None:
    assert TWO.rank("t.src.other", 5, 10**9) == 0


def test_the_next_layout_settles_at_the_ends_and_its_transition_starts_where_the_group_stood() -> None:
    first = next_layout((), 3, 4, {0: 10, 1: 20, 2: 30}, {0: 7, 1: 20, 2: 0})
    assert first == Layout(1, 3, 4, (10, 20, 30), (7, 20, 0))
    # a group standing behind the previous layout's settled offsets: the transition starts there
    second = next_layout((first,), 4, 6, {0: 11, 1: 21, 2: 31, 3: 5}, {0: 3, 1: 21, 2: 31, 3: 2})
    assert second == Layout(2, 4, 6, (11, 21, 31, 5), (10, 21, 31, 2))
    with pytest.raises(ValueError, match=r"\[2\]"):
        next_layout((), 3, 4, {0: 10, 1: 20}, {0: 1, 1: 1, 2: 1})


def test_only_a_recorded_topic_with_another_count_is_a_change() -> None:
    found = {"a": 4, "b": 3, "c": 2, "new": 5}
    recorded = {"a": 3, "b": 3, "c": 3}
    assert changes(found, recorded) == {"a": Change("a", 3, 4), "c": Change("c", 3, 2)}


def test_a_grown_topic_stops_every_given_partition_where_it_stands_naming_every_target_and_the_way_on() -> (
    None
):
    stops = Change(T, 3, 4).stops(plan().tables_for_topic(T), {(T, 0): 12, (T, 3): 0})
    assert [(s.ref, s.rule_id, s.source, s.targets, s.shape) for s in stops] == [
        (
            KafkaRef(T, 0, 12),
            RULE,
            TableRef("src", "items"),
            (TableRef("dst", "items"), TableRef("dst", "item_names")),
            None,
        ),
        (
            KafkaRef(T, 3, 0),
            RULE,
            TableRef("src", "items"),
            (TableRef("dst", "items"), TableRef("dst", "item_names")),
            None,
        ),
    ]
    line = stops[0].line()
    assert "\n" not in line
    assert f"topic {T} has 4 partitions, 3 recorded" in line
    assert f"`replicator partitions accept --topic {T} --yes`" in line
    assert "`replicator reload --table src.items`" in line


def test_a_shrunk_topic_is_named_recreated_and_not_offered_an_accept() -> None:
    change_ = Change(T, 4, 2)
    assert "deleted and created again" in change_.reason()
    assert "accept" not in change_.fix([TableRef("src", "items")])


def test_without_drops_everything_of_the_stopped_partitions_and_keeps_the_rest() -> None:
    def event(partition: int, offset: int) -> ChangeEvent:
        e = change(T, Op.UPDATE, "src.items", offset=offset, position=SourcePosition(1, offset), after={})
        return e._replace(ref=KafkaRef(T, partition, offset))

    events = [event(0, 5), event(1, 7), event(0, 6)]
    failures = [Failure(KafkaRef(T, 1, 8), "decode", "bad", None, None)]
    batch = Batch(events=events, failures=failures, next_offsets={(T, 0): 7, (T, 1): 9})
    kept = without(batch, [(T, 1)])
    assert [e.ref for e in kept.events] == [KafkaRef(T, 0, 5), KafkaRef(T, 0, 6)]
    assert kept.failures == [] and kept.next_offsets == {(T, 0): 7}
    assert without(batch, [(T, 2)]) is batch
