"""The consumer loop and the partition watch (`run.partition_watch`, `core.layout`), with fakes.

A topic whose partition count in Kafka is not the recorded one stops, all its
assigned partitions, where they stand; another topic flows; an accept seen
while stopped makes the instance join again and the topic flows from its
checkpoints, the new partition included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from io import StringIO

from replicator.config import BatchSettings
from replicator.core.decode import JsonDecoder
from replicator.core.layout import RULE
from replicator.core.mapping import Plan, catalog_from_dict, compile_spec, load_spec_text
from replicator.core.model import KafkaRef, Partition, Record
from replicator.run.loop import ConsumerLoop, LoopOptions
from replicator.run.partition_watch import PartitionWatch
from replicator.runlog import RunLog
from tests.unit.decode.builders import Table, create, int64, string
from tests.unit.test_loop import FakeSink, FakeSource

ITEMS, OTHERS = "t.src.items", "t.src.others"
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
  - id: others
    source: src.others
    target: dst.others
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns: {id: {from: id}, name: {from: name}}
"""


def plan() -> Plan:
    table = {"columns": {"id": "bigint not null", "name": "text"}, "pk": ["id"]}
    return compile_spec(
        load_spec_text(SPEC, "two.yaml"), catalog_from_dict({"dst.items": table, "dst.others": table})
    )


def record(topic: str, partition: int, offset: int) -> Record:
    name = topic.rsplit(".", 1)[1]
    table = Table([int64("id", optional=False), string("name")], prefix="t", schema="src", name=name)
    built = create(table, {"id": partition * 1000 + offset, "name": "n"}, lsn=1000 + offset, commit_lsn=900)
    return Record(KafkaRef(topic, partition, offset), built.key, built.value)


class Counts:
    """Kafka's partition counts and the recorded ones, as the watch reads them (both mutable)."""

    def __init__(self, found: dict[str, int], recorded: dict[str, int]) -> None:
        self.kafka = found
        self.target = recorded
        self.recorded_reads = 0

    def found(self, topics: list[str]) -> Mapping[str, int]:
        return {t: n for t, n in self.kafka.items() if t in topics}

    def recorded(self, found: Mapping[str, int]) -> Mapping[str, int]:
        self.recorded_reads += 1
        return {t: n for t, n in self.target.items() if t in found}


def make_loop(
    source: FakeSource,
    sink: FakeSink,
    watch: PartitionWatch,
    max_events: int = 2,
    caught_up: bool = True,
    log: StringIO | None = None,
) -> ConsumerLoop:
    return ConsumerLoop(
        source,
        sink,
        JsonDecoder(),
        plan(),
        RunLog("test", stream=log or StringIO()),
        LoopOptions(limits=BatchSettings(max_events=max_events, max_ms=1), stop_when_caught_up=caught_up),
        sleep=lambda s: None,
        watch=watch,
    )


def applied(sink: FakeSink) -> list[tuple[str, int, int]]:
    return sorted(
        (i.event.ref.topic, i.event.ref.partition, i.event.ref.offset)
        for b in sink.applied
        for intents in b.by_table.values()
        for i in intents
    )


def run_turning(loop: ConsumerLoop, sink: FakeSink, turn: Callable[[], None]) -> None:
    """Run `loop` with `turn` called every time its batch is empty, until `turn` stops it (a
    stopped topic never catches up: a timer ends a run that would hang)."""

    def due() -> bool:
        turn()
        return False

    give_up = threading.Timer(10, loop.request_stop)
    give_up.start()
    sink.retry_due = due  # type: ignore[method-assign]  # asked every turn the batch is empty
    try:
        loop.run()
    finally:
        give_up.cancel()


def test_a_partition_added_while_running_stops_every_partition_of_its_topic_where_it_stands() -> None:
    i0, i1, o0 = (ITEMS, 0), (ITEMS, 1), (OTHERS, 0)
    records = [record(ITEMS, p, o) for o in range(6) for p in (0, 1)] + [
        record(OTHERS, 0, o) for o in range(8)
    ]
    source = FakeSource(records, {i0: (0, 6), i1: (0, 6), o0: (0, 8)})
    sink = FakeSink(source, {})
    counts = Counts({ITEMS: 2, OTHERS: 1}, {ITEMS: 2, OTHERS: 1})

    def found(topics: list[str]) -> Mapping[str, int]:
        if sink.applied:  # a partition is added once the first batch is in
            counts.kafka[ITEMS] = 3
        return counts.found(topics)

    loop = make_loop(source, sink, PartitionWatch(found, counts.recorded, every_s=0))
    loop.run()
    stopping = [b for b in sink.applied if b.stops]
    assert len(stopping) == 1
    stops = {s.partition: s for s in stopping[0].stops}
    assert sorted(stops) == [i0, i1]  # every assigned partition of the topic, none of the other
    for p, stop in stops.items():
        assert stop.rule_id == RULE and stop.ref.offset == sink.stored.get(p, 0)  # where it stood
        assert not [a for a in applied(sink) if a[:2] == p and a[2] >= stop.ref.offset]  # nothing later
        assert loop.stopped[p] is stop
    assert "topic t.src.items has 3 partitions, 2 recorded" in stops[i0].reason
    assert sink.stored[o0] == 8  # the other topic flows to its end
    assert "pause" in source.events


def test_at_assignment_a_changed_topic_is_never_fetched_and_its_stops_go_with_the_first_batch() -> None:
    i0, o0 = (ITEMS, 0), (OTHERS, 0)
    source = FakeSource([record(OTHERS, 0, 0)], {i0: (0, 5), o0: (0, 1)})
    sink = FakeSink(source, {i0: 2})
    counts = Counts({ITEMS: 2, OTHERS: 1}, {ITEMS: 1, OTHERS: 1})
    loop = make_loop(source, sink, PartitionWatch(counts.found, counts.recorded))
    loop.run()
    assert source.paused_at_assign == [[i0]]
    (first, *_) = sink.applied
    assert [(s.ref, s.rule_id) for s in first.stops] == [(KafkaRef(ITEMS, 0, 2), RULE)]
    assert sink.stored == {i0: 2, o0: 1}


def test_an_accept_seen_while_stopped_rejoins_and_the_topic_flows_from_its_checkpoints() -> None:
    i0, i1, o0 = (ITEMS, 0), (ITEMS, 1), (OTHERS, 0)
    source = FakeSource(
        [record(OTHERS, 0, 0), record(ITEMS, 0, 3), record(ITEMS, 1, 0)], {i0: (0, 4), i1: (0, 1), o0: (0, 1)}
    )
    sink = FakeSink(source, {i0: 3})
    counts = Counts({ITEMS: 2, OTHERS: 1}, {ITEMS: 1, OTHERS: 1})

    def recorded(found: Mapping[str, int]) -> Mapping[str, int]:
        if any(b.stops for b in sink.applied):  # the operator accepts once the stops are stored
            counts.target[ITEMS] = 2
        return counts.recorded(found)

    log = StringIO()
    loop = make_loop(
        source, sink, PartitionWatch(counts.found, recorded, every_s=0), caught_up=False, log=log
    )

    def done() -> None:
        if sink.stored.get(i1) == 1:
            loop.request_stop()

    run_turning(loop, sink, done)
    assert "rejoin" in source.events
    assert source.starts[i0] == 3  # positioned from the target again
    assert (ITEMS, 1, 0) in applied(sink) and (ITEMS, 0, 3) in applied(sink)
    assert sink.stored[i0] == 4 and sink.stored[i1] == 1 and not loop.stopped
    assert log.getvalue().count("event=resumed") == 1  # said once, not again by the rejoin's revoke


def test_an_instance_given_an_accepted_topic_again_by_another_ones_rejoin_says_resumed() -> None:
    i0, i1 = (ITEMS, 0), (ITEMS, 1)
    source = FakeSource([record(ITEMS, 0, 3), record(ITEMS, 1, 0)], {i0: (0, 4), i1: (0, 1)})
    sink = FakeSink(source, {i0: 3})
    counts = Counts({ITEMS: 2}, {ITEMS: 1})
    log = StringIO()
    # compares only when assigned: the accept is never seen here, only the other instance's rejoin
    loop = make_loop(
        source, sink, PartitionWatch(counts.found, counts.recorded, every_s=3600), caught_up=False, log=log
    )

    def turn() -> None:
        if any(b.stops for b in sink.applied) and "rejoin" not in source.events:
            counts.target[ITEMS] = 2  # accepted elsewhere; that instance's rejoin rebalances the group
            source.rejoin()
        if sink.stored.get(i1) == 1:
            loop.request_stop()

    run_turning(loop, sink, turn)
    lines = log.getvalue().splitlines()
    (said,) = [line for line in lines if "event=resumed" in line]
    assert ITEMS in said and lines.index(said) > next(i for i, x in enumerate(lines) if "event=stopped" in x)
    assert sink.stored[i0] == 4 and sink.stored[i1] == 1 and not loop.stopped


def test_a_topic_assigned_again_while_still_not_accepted_is_stopped_again_not_resumed() -> None:
    i0 = (ITEMS, 0)
    source = FakeSource([record(ITEMS, 0, 3)], {i0: (0, 4)})
    sink = FakeSink(source, {i0: 3})
    counts = Counts({ITEMS: 2}, {ITEMS: 1})
    log = StringIO()
    loop = make_loop(
        source, sink, PartitionWatch(counts.found, counts.recorded, every_s=3600), caught_up=False, log=log
    )

    def turn() -> None:
        if any(b.stops for b in sink.applied):
            if "rejoin" not in source.events:
                source.rejoin()  # a member joins or leaves: a rebalance, no accept
            else:
                loop.request_stop()

    run_turning(loop, sink, turn)
    assert "event=resumed" not in log.getvalue()
    assert log.getvalue().count("event=stopped") == 2 and i0 in loop.stopped
    assert sink.stored[i0] == 3


def test_the_watch_reads_the_target_only_when_a_count_may_have_moved() -> None:
    counts = Counts({ITEMS: 3}, {ITEMS: 3})
    now = [0.0]
    watch = PartitionWatch(counts.found, counts.recorded, clock=lambda: now[0], every_s=5)
    first = watch.check({ITEMS}, force=True)
    assert first is not None and not first.changed and counts.recorded_reads == 1
    now[0] = 1.0
    assert watch.check({ITEMS}) is None  # not due yet
    now[0] = 6.0
    steady = watch.check({ITEMS})
    assert steady is not None and not steady.changed and counts.recorded_reads == 1  # Kafka as recorded
    counts.kafka[ITEMS] = 4
    now[0] = 12.0
    grown = watch.check({ITEMS})
    assert grown is not None and list(grown.changed) == [ITEMS] and counts.recorded_reads == 2


def test_the_watch_counts_what_an_assignment_shows_before_the_metadata_does() -> None:
    counts = Counts({ITEMS: 3}, {ITEMS: 3})
    watch = PartitionWatch(counts.found, counts.recorded)
    seen: list[Partition] = [(ITEMS, 0), (ITEMS, 3)]  # partition 3 is assigned: there are 4 at least
    got = watch.check({ITEMS}, seen, force=True)
    assert got is not None and (got.changed[ITEMS].recorded, got.changed[ITEMS].found) == (3, 4)


def test_the_watch_lifts_a_stopped_topic_once_accepted_and_one_whose_record_moved_under_it() -> None:
    counts = Counts({ITEMS: 4, OTHERS: 2}, {ITEMS: 3, OTHERS: 2})
    watch = PartitionWatch(counts.found, counts.recorded, every_s=0)
    assert watch.check({ITEMS, OTHERS}, force=True) is not None
    counts.target[ITEMS] = 4  # accepted
    got = watch.check({ITEMS, OTHERS}, stopped={ITEMS})
    assert got is not None and not got.changed and got.lifted == {ITEMS}
    counts.kafka[OTHERS], counts.target[OTHERS] = 5, 5  # changed and accepted between two checks
    got = watch.check({ITEMS, OTHERS})
    assert got is not None and not got.changed and got.lifted == {OTHERS}
