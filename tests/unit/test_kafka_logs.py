"""librdkafka's log lines become rate-limited `kafka_log` events naming the setting that fixes
them (a real librdkafka client against a closed port: no broker is needed to make it complain).
A one-shot question the brokers do not answer is one error line with librdkafka's reason and the
fix, and librdkafka's own line is not printed beside it (trial 7), in-process and through the CLI;
a question answered lets the lines held meanwhile pass, in order."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from replicator.config import KafkaSettings
from replicator.core.errors import Transient
from replicator.kafka import clients, logs

SPEC = Path(__file__).resolve().parents[2] / "mappings" / "demo.yaml"


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket is closed


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


def test_a_question_kafka_does_not_answer_is_one_line_and_no_librdkafka_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(logs._HANDLER, "limit", logs.RateLimit(logs.WINDOW_S))
    monkeypatch.setattr(logs._HANDLER, "emit_event", lambda kind, **f: events.append((kind, f)))
    address = closed_port()
    with pytest.raises(Transient) as raised, clients.Metadata(KafkaSettings(bootstrap_servers=address)) as m:
        m.partitions(["t"])
    said = str(raised.value)
    assert said.startswith(f"kafka at {address}: ") and "\n" not in said, said
    assert f"Connect to ipv4#{address} failed: Connection refused" in said and "[thrd:" not in said
    assert said.endswith("; fix: check REPLICATOR_KAFKA__BOOTSTRAP_SERVERS and that the broker is up")
    assert events == []  # held while waiting, dropped once the error said it (also at close)


def test_lines_held_until_the_first_answer_pass_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(logs._HANDLER, "limit", logs.RateLimit(logs.WINDOW_S))
    monkeypatch.setattr(logs._HANDLER, "emit_event", lambda kind, **f: events.append((kind, f)))
    lines = logs.FirstAnswer()
    lines.log(logging.WARNING, "%s [%s] %s", "A", "rdkafka#1", "first")
    lines.log(logging.ERROR, "%s [%s] %s", "B", "rdkafka#1", "second")
    assert events == []
    lines.answered()
    lines.log(logging.WARNING, "%s [%s] %s", "C", "rdkafka#1", "third")
    assert [f["message"] for _, f in events] == ["first", "second", "third"]
    unasked = logs.FirstAnswer()  # closed before any question: nobody reported its lines
    unasked.log(logging.WARNING, "%s [%s] %s", "D", "rdkafka#1", "fourth")
    unasked.closed()
    assert events[-1][1]["message"] == "fourth"
    debug = logs.FirstAnswer(hold=False)  # librdkafka's `debug` asked for: nothing is held
    debug.log(logging.WARNING, "%s [%s] %s", "E", "rdkafka#1", "fifth")
    assert events[-1][1]["message"] == "fifth"


def test_the_cli_prints_one_line_when_kafka_is_unreachable() -> None:
    """`shadow --from` asks Kafka first (the offsets at that time), before any database."""
    address = closed_port()
    env = {**os.environ, "REPLICATOR_KAFKA__BOOTSTRAP_SERVERS": address, "REPLICATOR_MAPPING": str(SPEC)}
    done = subprocess.run(
        [sys.executable, "-m", "replicator", "shadow", "--from", "2026-01-01T00:00:00Z"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"replicator: error: kafka at {address}: "), lines
    assert "fix: check REPLICATOR_KAFKA__BOOTSTRAP_SERVERS and that the broker is up" in lines[0]
