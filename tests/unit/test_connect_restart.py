"""`connectors apply --restart-failed`: a FAILED task is restarted once (connector and tasks) and
the apply waits for RUNNING; without the flag, FAILED is an error naming the flag. Connect's REST
answers come from a scripted worker (unit level: the real worker is exercised in integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replicator.connect.client import ConnectClient, ConnectError
from replicator.connect.configs import ConnectorSpec

SPEC = ConnectorSpec("c1", {"connector.class": "x.Y", "topic.prefix": "p"}, Path("c1.json"))


class ScriptedWorker(ConnectClient):
    """Unchanged config; the task FAILED until a restart, RUNNING after it."""

    def __init__(self) -> None:
        super().__init__("http://worker")
        self.calls: list[tuple[str, str]] = []
        self.restarted = False

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path))
        if path.endswith("/config/validate"):
            return {"configs": []}
        if path.endswith("/config"):
            return dict(SPEC.config)
        if path.endswith("/restart?includeTasks=true"):
            self.restarted = True
            return None
        if path.endswith("/status"):
            state = "RUNNING" if self.restarted else "FAILED"
            return {"connector": {"state": "RUNNING"}, "tasks": [{"state": state, "trace": "boom\n at x"}]}
        raise AssertionError(path)


def test_a_failed_task_is_restarted_once_and_the_apply_waits_for_running() -> None:
    worker = ScriptedWorker()
    action, state = worker.apply(SPEC, wait_s=5, pause=lambda _s: None, restart_failed=True)
    assert action == "unchanged and restarted" and state.running
    assert worker.calls.count(("POST", "/connectors/c1/restart?includeTasks=true")) == 1


def test_without_the_flag_failed_is_an_error_naming_it() -> None:
    worker = ScriptedWorker()
    with pytest.raises(ConnectError, match=r"FAILED: boom; fix the cause, then .*--restart-failed"):
        worker.apply(SPEC, wait_s=5, pause=lambda _s: None)
    assert not worker.restarted


class FlappingWorker(ConnectClient):
    """Unchanged config; the task RUNNING on the first status poll, FAILED from the second on
    (what a task does that fails on its first records, e.g. RecordTooLargeException)."""

    def __init__(self) -> None:
        super().__init__("http://worker")
        self.polls = 0

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        if path.endswith("/config/validate"):
            return {"configs": []}
        if path.endswith("/config"):
            return dict(SPEC.config)
        if path.endswith("/status"):
            self.polls += 1
            state = "RUNNING" if self.polls == 1 else "FAILED"
            trace = (
                "org.apache.kafka.connect.errors.ConnectException: Unrecoverable exception from producer"
                " send callback\n\tat x\nCaused by: org.apache.kafka.common.errors.RecordTooLargeException:"
                " The message is 5246099 bytes\n\tat y"
            )
            return {"connector": {"state": "RUNNING"}, "tasks": [{"state": state, "trace": trace}]}
        raise AssertionError(path)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def test_running_counts_only_once_it_held_for_the_settle_time() -> None:
    clock = Clock()
    # the innermost cause is named: what to change
    first = r"FAILED: org.apache.kafka.connect.errors.ConnectException: Unrecoverable exception from producer"
    cause = r" send callback \(caused by org.apache.kafka.common.errors.RecordTooLargeException: The message"
    with pytest.raises(ConnectError, match=first + cause):
        FlappingWorker().apply(SPEC, wait_s=30, clock=clock, pause=clock.pause, settle_s=5)
    # without a settle time the first RUNNING is taken at its word
    action, state = FlappingWorker().apply(SPEC, wait_s=30, clock=clock, pause=clock.pause)
    assert action == "unchanged" and state.running


def test_a_steady_running_connector_is_reported_after_the_settle_time() -> None:
    clock = Clock()
    worker = ScriptedWorker()
    worker.restarted = True  # RUNNING throughout
    action, state = worker.apply(SPEC, wait_s=30, clock=clock, pause=clock.pause, settle_s=5)
    assert action == "unchanged" and state.running and clock.now >= 5
