"""`status`'s group line says what it knows: runs beating in the target, members Kafka lists.

Trial 8: "2 consumers running" after both static members had halted or been killed; Kafka lists
a static member until its session timeout after its process ended.
"""

from __future__ import annotations

from replicator.run.status import group_line, runs_beating


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
