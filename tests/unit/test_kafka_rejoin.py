"""The consumer edge's own recovery: a member stuck without an assignment rebuilds its consumer,
a failed offset lookup is retried (`Transient`) instead of crashing the loop, and a pause never
outlives the assignment it was made in (librdkafka would keep it across a re-assignment)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from replicator.config import KafkaSettings
from replicator.core.errors import Transient
from replicator.kafka import consumer

Callback = Any


class FakeConsumer:
    """Stands in for confluent_kafka.Consumer: keeps the rebalance callbacks of `subscribe`."""

    def __init__(self, built: list[FakeConsumer]) -> None:
        built.append(self)
        self.callbacks: dict[str, Callback] = {}
        self.closed = False
        self.lookup_error: KafkaError | None = None
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def subscribe(self, topics: list[str], **callbacks: Callback) -> None:
        self.callbacks = callbacks

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return []

    def assign(self, tps: list[Any]) -> None:
        self.calls.append(("assign", sorted((tp.topic, tp.partition) for tp in tps)))

    def pause(self, tps: list[Any]) -> None:
        self.calls.append(("pause", sorted((tp.topic, tp.partition) for tp in tps)))

    def resume(self, tps: list[Any]) -> None:
        self.calls.append(("resume", sorted((tp.topic, tp.partition) for tp in tps)))

    def unassign(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        if self.lookup_error is not None:
            raise KafkaException(self.lookup_error)
        return 0, 5


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[FakeConsumer]:
    made: list[FakeConsumer] = []
    monkeypatch.setattr(consumer, "new_consumer", lambda *_a, **_k: FakeConsumer(made))
    return made


def source(built: list[FakeConsumer], clock: Clock, monkeypatch: pytest.MonkeyPatch) -> consumer.KafkaSource:
    monkeypatch.setattr(time, "monotonic", clock)
    errors: list[str] = []
    src = consumer.KafkaSource(KafkaSettings(rejoin_timeout_s=60), "g", lambda m, _r: errors.append(m))
    src.subscribe(["t"], lambda parts: {}, lambda parts: None)
    return src


def test_a_member_stuck_without_an_assignment_joins_again_with_a_new_consumer(
    built: list[FakeConsumer], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    src = source(built, clock, monkeypatch)
    first = built[0]
    first.callbacks["on_assign"](first, [])  # joined: an (empty) assignment completes the rebalance
    clock.now += 600
    src.poll(10, 0)
    assert len(built) == 1, "a member that completed a rebalance is left alone, even with no partitions"
    first.callbacks["on_lost"](first, [])  # session timed out: partitions lost, rejoining
    clock.now += 59
    src.poll(10, 0)
    assert len(built) == 1, "a rejoin inside the timeout is waited for"
    clock.now += 2
    src.poll(10, 0)
    assert first.closed and len(built) == 2, "past the timeout the stuck consumer is replaced"
    assert built[1].callbacks, "the new consumer subscribes with the same callbacks"
    clock.now += 30
    src.poll(10, 0)
    assert len(built) == 2, "the new consumer gets its own timeout"


def test_a_member_that_never_completes_its_first_join_is_replaced(
    built: list[FakeConsumer], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    src = source(built, clock, monkeypatch)
    clock.now += 61
    src.poll(10, 0)
    assert len(built) == 2


def test_a_failed_offset_lookup_is_transient(
    built: list[FakeConsumer], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = source(built, Clock(), monkeypatch)
    assert src.watermarks(("t", 0)) == (0, 5)
    built[0].lookup_error = KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)
    with pytest.raises(Transient, match=r"t\[0\]"):
        src.watermarks(("t", 0))


def test_an_assignment_resumes_what_an_earlier_one_paused_except_what_it_pauses_itself(
    built: list[FakeConsumer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "monotonic", Clock())
    src = consumer.KafkaSource(KafkaSettings(), "g", lambda m, _r: None)
    src.subscribe(["t"], lambda parts: {}, lambda parts: None, lambda parts: [p for p in parts if p[1] == 1])
    src.pause([("t", 0)])  # e.g. a table stopped by a schema change, in the first assignment
    fake = built[0]
    fake.callbacks["on_assign"](fake, [TopicPartition("t", 0), TopicPartition("t", 1)])
    assert fake.calls[-3:] == [
        ("assign", [("t", 0), ("t", 1)]),
        ("resume", [("t", 0)]),  # fetched again: its stopping event is judged again
        ("pause", [("t", 1)]),  # what this assignment pauses stays paused
    ]
