"""`replicator drain` ends at once, naming the connector and the fix, when the capture is missing
or FAILED (instead of waiting out its timeout silently)."""

from __future__ import annotations

from replicator.connect.client import ConnectorState
from replicator.run.drain import capture_problem

URL = "http://127.0.0.1:58083"


def test_a_missing_connector_is_named_with_the_fix() -> None:
    problem = capture_problem(None, "demo-postgres", URL)
    assert problem is not None
    assert "connector demo-postgres does not exist on http://127.0.0.1:58083" in problem
    assert "replicator connectors apply" in problem


def test_a_failed_task_is_named_with_its_cause_and_the_restart() -> None:
    state = ConnectorState(
        "demo-postgres",
        "RUNNING",
        ("FAILED",),
        "org.apache.kafka.connect.errors.ConnectException: "
        "Failed to create TypeRegistry\n\tat io.debezium...",
    )
    problem = capture_problem(state, "demo-postgres", URL)
    assert problem is not None
    assert (
        "tasks FAILED: org.apache.kafka.connect.errors.ConnectException: Failed to create TypeRegistry;"
        in problem
    )
    assert "\tat" not in problem, "one line: the first line of the trace only"
    assert f"POST {URL}/connectors/demo-postgres/restart?includeTasks=true" in problem


def test_a_running_or_restarting_capture_is_no_problem() -> None:
    assert capture_problem(ConnectorState("c", "RUNNING", ("RUNNING",), None), "c", URL) is None
    assert capture_problem(ConnectorState("c", "RUNNING", ("UNASSIGNED",), None), "c", URL) is None
