"""The loop's observer as Prometheus metrics, and the health decisions behind /healthz and /readyz.

Proves: /readyz answers 503 with a one-line reason before assignment, after a failed target round
trip and after a halt, and 200 once assigned with the target reachable; /healthz turns 503 when the
loop stops turning; the loop feeds applied counts, lag, retries and rebalances to the metrics (the
lag is the end offset minus the target-stored next offset); the HTTP server serves all three
paths; with metrics off the loop reads no extra end offsets.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from replicator.config import BatchSettings
from replicator.core.intents import PreparedBatch
from replicator.core.model import BatchResult, Failure, KafkaRef, Partition, Record, TableRef
from replicator.core.schema_change import Stop
from replicator.run.metrics import Metrics, MetricsServer
from replicator.run.observer import Health
from tests.unit.decode.builders import Table, create, int64, string
from tests.unit.test_loop import TOPIC, FakeSink, FakeSource, make_loop, record


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and sorted labels (what a scrape sees)."""
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_readyz_needs_assignment_a_reachable_target_and_no_halt() -> None:
    clock = Clock()
    health = Health(stale_after_s=60, clock=clock)
    assert health.ready() == (False, "the consumer loop has not started")
    health.turned()
    assert health.ready() == (False, "no partitions assigned")
    health.assigned([(TOPIC, 0)])
    assert health.ready() == (True, "ok")
    health.target_failed("connection refused\n  is the server running?")
    ok, why = health.ready()
    assert not ok and why == "target unreachable: connection refused is the server running?"
    health.target_ok()
    assert health.ready() == (True, "ok")
    health.revoked([(TOPIC, 0)])
    assert health.ready() == (False, "no partitions assigned")
    health.assigned([(TOPIC, 0)])
    health.halted("retention gap on t[0]")
    assert health.ready() == (False, "halted: retention gap on t[0]")


def test_healthz_fails_when_the_loop_stops_turning() -> None:
    clock = Clock()
    health = Health(stale_after_s=60, clock=clock)
    assert not health.live()[0]
    health.turned()
    clock.now += 59
    assert health.live() == (True, "ok")
    clock.now += 2
    ok, why = health.live()
    assert not ok and "has not turned for 61s" in why
    assert not health.ready()[0]  # a stuck loop is not ready either


class CountingSink(FakeSink):
    """Reports one applied row per event, like the writer's `<table>:<op>` counts."""

    def apply(self, batch: PreparedBatch) -> BatchResult:
        super().apply(batch)
        return BatchResult(
            applied=Counter({"dst.items:c": batch.events}),
            skipped_older=1,
            skipped_by_table=Counter({"dst.items:older": 1}),
        )


def test_the_loop_feeds_counts_lag_retries_and_rebalances() -> None:
    source = FakeSource([record(5), record(6), record(7)], {(TOPIC, 0): (0, 10), (TOPIC, 1): (0, 4)})
    sink = CountingSink(source, {(TOPIC, 0): 5, (TOPIC, 1): 4}, transient_failures=1)
    metrics = Metrics("run-1", "g1", "run", Health(60), wall=lambda: 1_700_000_000.0)
    loop = make_loop(source, sink)
    loop.observer = metrics
    loop.run()
    got = samples(metrics)
    assert got[("replicator_run_info", (("group", "g1"), ("mode", "run"), ("run_id", "run-1")))] == 1
    assert got[("replicator_events_applied_total", (("op", "c"), ("table", "dst.items")))] == 3
    assert got[("replicator_events_skipped_total", (("reason", "older"), ("table", "dst.items")))] == 1
    p0 = (("partition", "0"), ("topic", TOPIC))
    p1 = (("partition", "1"), ("topic", TOPIC))
    # Stored next offset 8 after the batch; the end offset read at assignment is 10: 2 behind.
    assert got[("replicator_partition_next_offset", p0)] == 8
    assert got[("replicator_partition_end_offset", p0)] == 10
    assert got[("replicator_partition_lag_events", p0)] == 2
    assert got[("replicator_partition_lag_events", p1)] == 0
    assert got[("replicator_partition_lag_seconds", p1)] == 0
    assert got[("replicator_retries_total", (("what", "apply batch"),))] == 1
    assert got[("replicator_rebalances_total", (("kind", "assign"),))] == 1
    assert got[("replicator_batch_events_count", ())] == 1
    assert got[("replicator_batch_events_sum", ())] == 3
    assert got[("replicator_batch_apply_seconds_count", ())] == 1
    assert got[("replicator_assigned_partitions", ())] == 2
    assert metrics.health.ready() == (True, "ok")  # the retry failed, the attempt after it succeeded


class ReadCounting(FakeSource):
    """Counts the end-offset reads; an uncached one is a broker round trip in the real source."""

    reads: list[Partition] = []  # noqa: RUF012 (replaced per instance on the first read)
    uncached: list[Partition] = []  # noqa: RUF012

    def watermarks(self, partition: Partition, cached: bool = False) -> tuple[int, int]:
        self.reads = [*self.reads, partition]
        if not cached:
            self.uncached = [*self.uncached, partition]
        return super().watermarks(partition)


def test_end_offsets_are_re_read_at_most_every_few_seconds() -> None:
    source = ReadCounting([], {(TOPIC, 0): (0, 3)})
    sink = FakeSink(source, {(TOPIC, 0): 3})
    metrics = Metrics("r", "g", "run", Health(60))
    loop = make_loop(source, sink)
    loop.observer = metrics
    clock = Clock()
    loop.clock = clock
    loop.source.subscribe([TOPIC], loop._on_assign, loop._on_revoke)
    assert len(source.reads) == 1  # at assignment
    loop._refresh_end_offsets()
    assert len(source.reads) == 1  # too soon
    source.marks[(TOPIC, 0)] = (0, 9)
    clock.now += 5
    loop._refresh_end_offsets()
    assert len(source.reads) == 2
    # Only the assignment asks the broker: an uncached lookup waits behind the long-polling fetch
    # (a 15 s stall per refresh was seen on 15 partitions).
    assert source.uncached == [(TOPIC, 0)]
    assert samples(metrics)[("replicator_partition_lag_events", (("partition", "0"), ("topic", TOPIC)))] == 6


def test_with_metrics_off_the_loop_reads_no_extra_end_offsets() -> None:
    source = FakeSource([], {(TOPIC, 0): (0, 3)})
    loop = make_loop(source, FakeSink(source, {(TOPIC, 0): 3}))
    loop.source.subscribe([TOPIC], loop._on_assign, loop._on_revoke)
    source.marks.clear()  # any further read would raise KeyError
    loop.clock = lambda: 1e9
    loop._refresh_end_offsets()


def test_error_records_count_by_table_and_rule() -> None:
    metrics = Metrics("r", "g", "run", Health(60))
    failure = Failure(KafkaRef(TOPIC, 0, 1), "not_null", "m", None, None, TableRef("dst", "items"))
    batch = PreparedBatch({}, (), {}, Counter(), 1, {})
    held = Counter({"dst.items": 3, "dst.other": 1})
    metrics.applied(batch, BatchResult(errors=[failure, failure], held=4, held_by_table=held), 0.01)
    got = samples(metrics)
    assert got[("replicator_events_errored_total", (("rule", "not_null"), ("table", "dst.items")))] == 2
    assert got[("replicator_events_held_total", (("table", "dst.items"),))] == 3
    assert got[("replicator_events_held_total", (("table", "dst.other"),))] == 1


def test_events_of_a_table_no_rule_reads_count_by_source_table_across_batches() -> None:
    """Trial 14: `"it ems"` shares the topic of `items`, which a rule reads; its events are not
    applied, and the counter says how many, per source table, summed over the batches."""
    spaced = Table([int64("id", optional=False), string("name")], prefix="t", schema="src", name="it ems")
    others = [create(spaced, {"id": n, "name": "x"}, lsn=2000 + n, commit_lsn=1900 + n) for n in (7, 8, 9)]
    records = [
        record(5),
        *(Record(KafkaRef(TOPIC, 0, o), b.key, b.value) for o, b in zip((6, 7, 8), others, strict=True)),
    ]
    source = FakeSource(records, {(TOPIC, 0): (0, 9)})
    metrics = Metrics("r", "g", "run", Health(60))
    loop = make_loop(source, FakeSink(source, {}), limits=BatchSettings(max_events=2, max_ms=1000))
    loop.observer = metrics
    loop.run()
    got = samples(metrics)
    assert got[("replicator_events_unread_total", (("source_table", "src.it ems"),))] == 3
    assert got[("replicator_batch_events_count", ())] == 2  # two batches: 1 + 2 of them
    assert [k for k in got if k[0] == "replicator_events_unread_total"] == [
        ("replicator_events_unread_total", (("source_table", "src.it ems"),))
    ]


def test_a_partition_stopped_by_a_schema_change_is_1_until_a_batch_applies_it_again() -> None:
    metrics = Metrics("r", "g", "run", Health(60))
    metrics.assigned([(TOPIC, 0)], {(TOPIC, 0): 0})
    stop = Stop(
        KafkaRef(TOPIC, 0, 4), TableRef("src", "items"), (TableRef("dst", "items"),), "r", "x", "y", None
    )
    key = ("replicator_partition_stopped", (("partition", "0"), ("topic", TOPIC)))
    metrics.applied(PreparedBatch({}, (), {(TOPIC, 0): 4}, Counter(), 1, stops=(stop,)), BatchResult(), 0.01)
    assert samples(metrics)[key] == 1
    metrics.applied(PreparedBatch({}, (), {(TOPIC, 0): 9}, Counter(), 5), BatchResult(), 0.01)
    assert samples(metrics)[key] == 0
    metrics.revoked([(TOPIC, 0)])
    assert key not in samples(metrics)


def test_a_partition_stopped_by_a_partition_count_change_is_1_though_its_batch_moves_no_offset() -> None:
    metrics = Metrics("r", "g", "run", Health(60))
    metrics.assigned([(TOPIC, 0), (TOPIC, 1)], {(TOPIC, 0): 0, (TOPIC, 1): 0})
    stop = Stop(
        KafkaRef(TOPIC, 1, 7),
        TableRef("src", "items"),
        (TableRef("dst", "items"),),
        "partitions",
        "x",
        "y",
        None,
    )
    metrics.applied(PreparedBatch({}, (), {(TOPIC, 0): 4}, Counter(), 1, stops=(stop,)), BatchResult(), 0.01)
    got = samples(metrics)
    assert got[("replicator_partition_stopped", (("partition", "1"), ("topic", TOPIC)))] == 1
    assert got[("replicator_partition_stopped", (("partition", "0"), ("topic", TOPIC)))] == 0


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_server_answers_metrics_healthz_and_readyz() -> None:
    health = Health(60)
    metrics = Metrics("r", "g", "shadow", health)
    server = MetricsServer("127.0.0.1", 0, metrics).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(base + "/healthz") == (503, "the consumer loop has not started\n")
        metrics.turned()
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/readyz") == (503, "no partitions assigned\n")
        metrics.assigned([(TOPIC, 0)], {(TOPIC, 0): 0})
        assert get(base + "/readyz") == (200, "ok\n")
        metrics.retried("apply batch", "connection refused")
        assert get(base + "/readyz") == (503, "target unreachable: connection refused\n")
        status, body = get(base + "/metrics")
        assert status == 200 and 'replicator_retries_total{what="apply batch"} 1.0' in body
        assert get(base + "/nope")[0] == 404
    finally:
        server.stop()
