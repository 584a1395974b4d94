"""Prometheus metrics and health endpoints (I/O edge): `/metrics`, `/healthz`, `/readyz`.

`Metrics` is a `LoopObserver` that keeps its own registry (no process-global
state, so tests can build several). `MetricsServer` serves it on
`REPLICATOR_METRICS__HOST:REPLICATOR_METRICS__PORT` from a daemon thread;
the run starts one only when the port is non-zero.

Lag, per partition: in events, the partition's end offset (Kafka's high
watermark, re-read at most every `LAG_REFRESH_S` seconds) minus the
target-stored next offset; in seconds, 0 when caught up, else the age of the
newest applied event on that partition (an upper bound of how far the target
is behind). End-to-end lag: the target commit time of a batch minus the
newest event's source commit time (`source.ts_ms`) in it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

from replicator.core.intents import PreparedBatch, other_tables
from replicator.core.model import BatchResult, Partition
from replicator.run.observer import TARGET_ACTIONS, Health

BATCH_EVENTS_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)
APPLY_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The loop's observer, as Prometheus metrics and the health state."""

    wants_end_offsets = True

    def __init__(
        self,
        run_id: str,
        group: str,
        mode: str,
        health: Health,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.health = health
        self.wall = wall
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info("replicator_run", "the running process: run id, consumer group, mode", registry=r).info(
            {"run_id": run_id, "group": group, "mode": mode}
        )
        part = ["topic", "partition"]
        self.lag_events = Gauge(
            "replicator_partition_lag_events",
            "end offset minus the target-stored next offset",
            part,
            registry=r,
        )
        self.lag_seconds = Gauge(
            "replicator_partition_lag_seconds",
            "0 when caught up, else the age of the newest applied event of the partition",
            part,
            registry=r,
        )
        self.next_offset = Gauge(
            "replicator_partition_next_offset", "the target-stored next offset", part, registry=r
        )
        self.end_offset = Gauge(
            "replicator_partition_end_offset", "the partition's end offset (high watermark)", part, registry=r
        )
        self._stop_labels: set[Partition] = set()  # partitions the stopped gauge has a sample for
        self.stopped = Gauge(
            "replicator_partition_stopped",
            "1 while the partition is stopped in front of an event its spec no longer matches (a source"
            " schema change) or because its topic's partition count changed, else 0",
            part,
            registry=r,
        )
        self.e2e_lag = Gauge(
            "replicator_end_to_end_lag_seconds",
            "target commit time of the last batch minus its newest event's source commit time (source.ts_ms)",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "replicator_assigned_partitions", "partitions assigned to this process", registry=r
        )
        self.applied_total = Counter(
            "replicator_events_applied_total",
            "rows written by table and operation",
            ["table", "op"],
            registry=r,
        )
        self.skipped_total = Counter(
            "replicator_events_skipped_total",
            "events not written because the target already holds a newer version (reason=older) or"
            " arrived out of order (reason=unordered), by target table",
            ["table", "reason"],
            registry=r,
        )
        self.held_total = Counter(
            "replicator_events_held_total",
            "events held back while a table they depend on lags, by the held event's target table",
            ["table"],
            registry=r,
        )
        self.unread_total = Counter(
            "replicator_events_unread_total",
            "events not applied because no rule reads their source table, though they arrive on a topic"
            " the spec reads (a topic name Debezium gives several tables, a routing transform), by"
            " source table (schema.table)",
            ["source_table"],
            registry=r,
        )
        self.errored_total = Counter(
            "replicator_events_errored_total",
            "events that became error records, by target table and rule",
            ["table", "rule"],
            registry=r,
        )
        self.batch_events = Histogram(
            "replicator_batch_events", "events per applied batch", buckets=BATCH_EVENTS_BUCKETS, registry=r
        )
        self.apply_seconds = Histogram(
            "replicator_batch_apply_seconds",
            "time to apply one batch in the target (retries included)",
            buckets=APPLY_SECONDS_BUCKETS,
            registry=r,
        )
        self.retries_total = Counter(
            "replicator_retries_total", "retried attempts after a transient error", ["what"], registry=r
        )
        self.rebalances_total = Counter(
            "replicator_rebalances_total", "partition assignments and revocations", ["kind"], registry=r
        )
        self._stored: dict[Partition, int] = {}
        self._ends: dict[Partition, int] = {}
        self._newest_ms: dict[Partition, int] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- LoopObserver
    def turned(self) -> None:
        self.health.turned()

    def assigned(self, partitions: list[Partition], stored: Mapping[Partition, int]) -> None:
        self.rebalances_total.labels("assign").inc()
        self.health.assigned(partitions)
        with self._lock:
            self._stored.update({p: o for p, o in stored.items() if p in partitions})
            self.assigned_partitions.set(len(self.health.partitions))
            self._publish(partitions)

    def revoked(self, partitions: list[Partition]) -> None:
        self.rebalances_total.labels("revoke").inc()
        self.health.revoked(partitions)
        with self._lock:
            self.assigned_partitions.set(len(self.health.partitions))
            for p in partitions:
                for gauge in (self.lag_events, self.lag_seconds, self.next_offset, self.end_offset):
                    gauge.remove(*_labels(p))
                if p in self._stop_labels:
                    self.stopped.remove(*_labels(p))
                    self._stop_labels.discard(p)
                self._stored.pop(p, None)
                self._ends.pop(p, None)

    def applied(self, batch: PreparedBatch, result: BatchResult, apply_s: float) -> None:
        self.health.target_ok()
        now_ms = self.wall() * 1000
        for key, rows in result.applied.items():
            table, _, op = key.rpartition(":")
            self.applied_total.labels(table, op).inc(rows)
        for key, n in result.skipped_by_table.items():
            table, _, reason = key.rpartition(":")
            self.skipped_total.labels(table, reason).inc(n)
        for table, n in result.held_by_table.items():
            self.held_total.labels(table).inc(n)
        for source, n in other_tables(batch.counts).items():
            self.unread_total.labels(source).inc(n)
        for f in result.errors:
            self.errored_total.labels(str(f.target) if f.target else "-", f.rule_id).inc()
        self.batch_events.observe(batch.events)
        self.apply_seconds.observe(apply_s)
        if batch.source_ts_ms:
            self.e2e_lag.set(max(0.0, (now_ms - max(batch.source_ts_ms.values())) / 1000))
        with self._lock:
            for p, ts in batch.source_ts_ms.items():
                self._newest_ms[p] = max(self._newest_ms.get(p, 0), ts)
            self._stored.update(batch.next_offsets)
            self._publish(list(batch.next_offsets))
            stopped = {s.partition for s in batch.stops}
            for p in sorted({*batch.next_offsets, *stopped}):  # a partition-count stop moves no offset
                self.stopped.labels(*_labels(p)).set(1 if p in stopped else 0)
                self._stop_labels.add(p)

    def retried(self, what: str, error: str) -> None:
        self.retries_total.labels(what).inc()
        self.health.turned()  # retrying is the loop at work, not stuck
        if what in TARGET_ACTIONS:
            self.health.target_failed(error)

    def end_offsets(self, ends: Mapping[Partition, int]) -> None:
        with self._lock:
            self._ends.update({p: e for p, e in ends.items() if p in self.health.partitions})
            self._publish(list(ends))

    def halted(self, reason: str) -> None:
        self.health.halted(reason)

    # ---------------------------------------------------------------- gauges
    def _publish(self, partitions: list[Partition]) -> None:
        """Lag gauges of these partitions from the stored and end offsets known now (lock held)."""
        now_ms = self.wall() * 1000
        for p in partitions:
            if p not in self.health.partitions:
                continue
            stored, end = self._stored.get(p), self._ends.get(p)
            labels = _labels(p)
            if stored is not None:
                self.next_offset.labels(*labels).set(stored)
            if end is None:
                continue
            self.end_offset.labels(*labels).set(end)
            lag = max(0, end - (stored if stored is not None else 0))
            self.lag_events.labels(*labels).set(lag)
            newest = self._newest_ms.get(p)
            self.lag_seconds.labels(*labels).set(
                0.0 if lag == 0 else max(0.0, (now_ms - newest) / 1000) if newest else float("nan")
            )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _labels(p: Partition) -> tuple[str, str]:
    return p[0], str(p[1])


class MetricsServer:
    """`/metrics`, `/healthz`, `/readyz` on host:port, served from a daemon thread."""

    def __init__(self, host: str, port: int, metrics: Metrics) -> None:
        handler = _handler(metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = metrics.health.live() if path == "/healthz" else metrics.health.ready()
                self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found: /metrics, /healthz, /readyz\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds are not worth a log line

    return Handler
