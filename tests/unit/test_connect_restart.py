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
