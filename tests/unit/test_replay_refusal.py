"""The replay refusal names static members and their session timeout (trial 2: after SIGTERM of
both `replicator run` processes, which the runbook starts with REPLICATOR_KAFKA__INSTANCE_ID,
replay still said "has 2 live member(s); stop its `replicator run` processes first" for 45 s)."""

from __future__ import annotations

from replicator.run.replay import live_members_refusal


def test_static_members_are_named_with_the_session_timeout() -> None:
    line = live_members_refusal("ledger", ["ledger-i2", "ledger-i1"], 45000)
    assert line.startswith("replay refused: consumer group ledger has 2 live member(s)")
    assert "Static members (ledger-i1, ledger-i2: REPLICATOR_KAFKA__INSTANCE_ID)" in line
    assert "(REPLICATOR_KAFKA__SESSION_TIMEOUT_MS, 45 s)" in line
    assert "\n" not in line


def test_dynamic_members_get_the_plain_line() -> None:
    line = live_members_refusal("g", [None], 45000)
    assert line == (
        "replay refused: consumer group g has 1 live member(s); stop its `replicator run` processes"
        " first (they would go on from their own positions)"
    )
