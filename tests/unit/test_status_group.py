"""`status`'s group line says what it knows: runs beating in the target, members Kafka lists.

Trial 8: "2 consumers running" after both static members had halted or been killed; Kafka lists
a static member until its session timeout after its process ended.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from replicator.config import Settings
from replicator.run.status import dead_text, group_line, run_status, runs_beating
from replicator.target.store import ControlStore


def test_members_that_outlive_their_runs_are_explained_with_the_session_timeout() -> None:
    line = group_line("g", ["one", "two"], beating=0, session_timeout_ms=45000)
    assert line.startswith(
        "group g: 0 runs beating (target heartbeats), 2 members listed by Kafka (2 static:"
    )
    # the daemons' own timeout is not recorded: this command's is shown as its own, not theirs
    assert (
        "stays listed for its daemon's session.timeout.ms after its process ended, halted or not;"
        " this command's setting is 45000 ms)" in line
    )
    assert "running" not in line


def test_a_dynamic_member_left_behind_is_a_killed_one() -> None:
    line = group_line("g", [None], beating=0, session_timeout_ms=10000)
    assert line == (
        "group g: 0 runs beating (target heartbeats), 1 member listed by Kafka"
        " (a killed member stays listed for its daemon's session.timeout.ms; this command's setting"
        " is 10000 ms)"
    )


def test_members_matching_their_runs_need_no_explanation() -> None:
    assert (
        group_line("g", ["one"], 1, 45000)
        == "group g: 1 run beating (target heartbeats), 1 member listed by Kafka"
    )
    assert (
        group_line("g", [], 0, 45000)
        == "group g: 0 runs beating (target heartbeats), 0 members listed by Kafka"
    )


def test_runs_beating_counts_the_live_runs_of_the_group_and_mode() -> None:
    runs = [
        {"group": "g", "mode": "run", "state": "running"},
        {"group": "g", "mode": "run", "state": "dead"},
        {"group": "g", "mode": "run", "state": "halted"},
        {"group": "g", "mode": "shadow", "state": "running"},
        {"group": "h", "mode": "run", "state": "running"},
    ]
    assert runs_beating(runs, "g") == 2
    assert runs_beating(runs, "g", "run") == 1
    assert runs_beating(runs, "x", "run") == 0


class _Runs:
    """The two reads `run_status` makes of the control store."""

    def __init__(self, unfinished: list[dict[str, Any]]) -> None:
        self._unfinished = unfinished

    def unfinished_runs(self) -> list[dict[str, Any]]:
        return self._unfinished

    def halted_runs(self) -> list[dict[str, Any]]:
        return []


def _run(run_id: str, silent_s: float, heartbeat_s: float | None) -> dict[str, Any]:
    at = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    return {"run_id": run_id, "mode": "run", "group_id": "g", "started_at": at, "silent_s": silent_s,
            "heartbeat_s": heartbeat_s}  # fmt: skip


def test_a_run_is_judged_by_the_heartbeat_interval_it_recorded_not_this_commands() -> None:
    """A daemon beating every 1 s, silent for 5 s, is dead even when `status` runs with a
    heartbeat of 600 s; a run that recorded no interval is judged by this command's, and says so."""
    store = cast(
        ControlStore, _Runs([_run("fast", 5.0, 1.0), _run("slow", 5.0, 2.0), _run("old", 5.0, None)])
    )
    runs = {r["run_id"]: r for r in run_status(store, heartbeat_s=600.0)}
    assert {k: r["state"] for k, r in runs.items()} == {"fast": "dead", "slow": "running", "old": "running"}
    assert dead_text(runs["fast"]) == (
        "silent 5s, more than 3 heartbeats of 1s, and never recorded its end: killed or its host lost"
    )
    old = cast(ControlStore, _Runs([_run("old", 5.0, None)]))
    (judged,) = run_status(old, heartbeat_s=1.0)
    assert judged["state"] == "dead" and dead_text(judged) == (
        "silent 5s, more than 3 heartbeats of 1s (this command's REPLICATOR_HEARTBEAT_S: the run recorded"
        " none), and never recorded its end: killed or its host lost"
    )


def test_a_run_records_its_heartbeat_interval() -> None:
    assert Settings(heartbeat_s=2.5).summary()["heartbeat_s"] == 2.5
