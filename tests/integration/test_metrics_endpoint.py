"""`replicator run` with REPLICATOR_METRICS__PORT: a scrape of the running daemon on the real stack.

Proves: /healthz answers 200 while the daemon runs and /readyz 200 once partitions are assigned;
/metrics carries the run info (this run's group and mode), per-partition next offsets equal to
the target-stored ones, lag gauges equal to Kafka's end offsets minus those (0 for the
customers' partitions once caught up; other tables' rows may be held back on the shared stack),
and applied-event counters by table and op equal to the sum of the daemon's own batch log lines.
Every check waits on its condition (a scrape is retried until consistent, since other users of the
shared stack may write to the demo topics at any time). /readyz turns 503 naming the target when
the daemon's target link (through Toxiproxy) goes down under a write, and 200 again once it is back.
"""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.pipeline import (
    TOPICS,
    daemon,
    end_offsets,
    env_for,
    fresh_target,
    stored_offsets,
    wait_until,
)
from tests.integration.stack import Stack
from tests.integration.toxiproxy import Toxiproxy, target_proxy_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, str(exc)


def scrape(base: str) -> Samples:
    status, body = get(base + "/metrics")
    assert status in (0, 200), body
    out: Samples = {}
    if status == 200:
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


N = TypeVar("N", int, float)


def by_partition(samples: Samples, name: str) -> dict[tuple[str, int], float]:
    return {
        (dict(labels)["topic"], int(dict(labels)["partition"])): v
        for (n, labels), v in samples.items()
        if n == name
    }


def applied_counters(samples: Samples) -> Counter[str]:
    out: Counter[str] = Counter()
    for (n, labels), v in samples.items():
        if n == "replicator_events_applied_total" and v:
            d = dict(labels)
            out[f"{d['table']}:{d['op']}"] = int(v)
    return out


def logged_applied(log: Path) -> Counter[str]:
    """The sum of the daemon's `batch` lines' `applied=<table>:<op>:<rows>,...` fields."""
    out: Counter[str] = Counter()
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if " event=batch " not in line:
            continue
        found = re.search(r" applied=(\S+)", line)
        if found and found.group(1) != "-":
            for item in found.group(1).split(","):
                key, _, rows = item.rpartition(":")
                out[key] += int(rows)
    return out


def mapped(values: dict[tuple[str, int], N]) -> dict[tuple[str, int], N]:
    return {key: value for key, value in values.items() if key[0] in TOPICS}


def test_a_running_daemon_serves_metrics_consistent_with_the_target(stack: Stack, tmp_path: Path) -> None:
    dbname = fresh_target("metrics")
    group = f"metrics-{uuid.uuid4().hex[:6]}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = env_for(stack, dbname, group, REPLICATOR_METRICS__PORT=str(port))
    log = tmp_path / "daemon.log"
    with daemon(env, log) as proc:
        wait_until(lambda: get(base + "/healthz")[0] == 200 or proc.poll() is not None, 60, "/healthz 200")
        assert proc.poll() is None, log.read_text()[-3000:]
        wait_until(lambda: get(base + "/readyz") == (200, "ok\n"), 90, "/readyz 200 once assigned")
        ends = end_offsets(stack, TOPICS)
        assert sum(ends.values()) > 0, "the demo topics hold no data"

        seen: dict[str, Any] = {}

        def consistent() -> bool:
            samples = scrape(base)
            # The run also consumes the capture's signal topic; these checks are about the mapped ones.
            at = mapped(stored_offsets(stack, dbname, group))
            seen.update(samples=samples, stored=at)
            nexts = by_partition(samples, "replicator_partition_next_offset")
            lags = mapped(by_partition(samples, "replicator_partition_lag_events"))
            kafka_ends = by_partition(samples, "replicator_partition_end_offset")
            # The customers' partitions depend on no other table (no rows held back): they catch up.
            customers = [p for p in ends if p[0] == "demo.shop.customers"]
            return (
                set(lags) == set(ends)
                and set(at) == set(ends)
                and all(nexts[p] == at[p] for p in ends)
                and all(lags[p] == max(0, kafka_ends[p] - nexts[p]) for p in ends)
                and all(at[p] >= ends[p] and lags[p] == 0 for p in customers)
                and applied_counters(samples) == logged_applied(log)
            )

        try:
            wait_until(consistent, 120, "scraped offsets, lag 0 and applied counts matching target and log")
        except AssertionError as exc:
            shown = {k: v for k, v in seen.get("samples", {}).items() if k[0].startswith("replicator_part")}
            raise AssertionError(
                f"{exc}; ends {ends}; stored {seen.get('stored')}; scraped {shown}; applied "
                f"{applied_counters(seen.get('samples', {}))} vs logged {logged_applied(log)}"
            ) from None
        samples = seen["samples"]
        info = [dict(labels) for (n, labels), _ in samples.items() if n == "replicator_run_info"]
        assert len(info) == 1 and info[0]["group"] == group and info[0]["mode"] == "run", info
        applied = applied_counters(samples)
        assert sum(applied.values()) > 0
        tables = {key.rpartition(":")[0] for key in applied}
        assert "crm.customer" in tables, applied
        assert "upsert" in {key.rpartition(":")[2] for key in applied}, applied
        assert samples[("replicator_batch_events_count", ())] >= 1
        assert samples[("replicator_rebalances_total", (("kind", "assign"),))] >= 1
        assert get(base + "/healthz") == (200, "ok\n")
    assert proc.returncode == 0, log.read_text()[-3000:]


def test_readyz_turns_503_while_the_target_is_unreachable(
    stack: Stack, tmp_path: Path, toxiproxy: Toxiproxy
) -> None:
    dbname = fresh_target("ready")
    group = f"ready-{uuid.uuid4().hex[:6]}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = env_for(
        stack,
        dbname,
        group,
        REPLICATOR_METRICS__PORT=str(port),
        REPLICATOR_TARGET__PORT=target_proxy_port(),
        REPLICATOR_TARGET__APPLY_TIMEOUT_S="10",
    )
    log = tmp_path / "daemon.log"
    with daemon(env, log) as proc:
        wait_until(lambda: get(base + "/readyz") == (200, "ok\n") or proc.poll() is not None, 120, "ready")
        assert proc.poll() is None, log.read_text()[-3000:]
        toxiproxy.enabled("target", False)
        try:
            with psycopg.connect(stack.source_admin(), autocommit=True) as conn:  # an event to apply
                conn.execute(
                    "UPDATE shop.customers SET full_name = full_name"
                    " WHERE id = (SELECT min(id) FROM shop.customers)"
                )
            _, body = wait_until(
                lambda: (r := get(base + "/readyz"))[0] == 503 and r, 120, "/readyz 503 with the target down"
            )
            assert body.startswith("target unreachable:"), body
            assert get(base + "/healthz") == (200, "ok\n"), "the loop still turns: alive, not ready"
        finally:
            toxiproxy.enabled("target", True)
        wait_until(lambda: get(base + "/readyz") == (200, "ok\n"), 120, "/readyz 200 with the target back")
    assert proc.returncode == 0, log.read_text()[-3000:]
