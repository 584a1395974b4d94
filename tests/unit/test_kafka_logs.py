"""librdkafka's log lines become rate-limited `kafka_log` events naming the setting that fixes
them (a real librdkafka client against a closed port: no broker is needed to make it complain)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from replicator.config import KafkaSettings
from replicator.kafka import clients, logs


def test_the_first_line_of_a_burst_passes_then_one_per_window_with_the_count() -> None:
    now = [0.0]
    limit = logs.RateLimit(30, clock=lambda: now[0])
    assert limit.admit("FAIL") == 0
    assert limit.admit("FAIL") is None and limit.admit("FAIL") is None
    assert limit.admit("REQTMOUT") == 0  # per facility
    now[0] = 31
    assert limit.admit("FAIL") == 2


def test_a_wrong_bootstrap_address_gives_one_event_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    raw: list[logging.LogRecord] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raw.append(record)

    counter = Count()
    logs.KAFKA_LOGGER.addHandler(counter)
    monkeypatch.setattr(logs._HANDLER, "limit", logs.RateLimit(logs.WINDOW_S))
    monkeypatch.setattr(logs._HANDLER, "emit_event", lambda kind, **f: events.append((kind, f)))
    consumer = clients.new_consumer(KafkaSettings(bootstrap_servers="127.0.0.1:1"), "logs-test")
    try:
        consumer.subscribe(["nothing"])
        deadline = time.monotonic() + 20
        while len(raw) < 3 and time.monotonic() < deadline:  # log lines are served by poll
            consumer.poll(0.2)
    finally:
        consumer.close()
        logs.KAFKA_LOGGER.removeHandler(counter)
    assert len(raw) >= 3, "librdkafka did not complain about the closed port"
    fails = [f for kind, f in events if kind == "kafka_log" and f["facility"] == "FAIL"]
    assert len(fails) == 1, events
    assert "127.0.0.1:1" in fails[0]["message"] and fails[0]["level"] == "error"
    assert "REPLICATOR_KAFKA__BOOTSTRAP_SERVERS" in fails[0]["fix"]
