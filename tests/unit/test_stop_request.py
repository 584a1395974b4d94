"""A SIGTERM that arrives while the daemon starts is kept and stops the loop once it exists."""

from __future__ import annotations

from replicator.run.daemon import _StopRequest


def test_a_stop_before_the_loop_exists_reaches_the_loop() -> None:
    stop, calls = _StopRequest(), []
    stop()  # SIGTERM during startup: nothing to stop yet, nothing lost
    stop.forward_to(lambda: calls.append("stop"))
    assert calls == ["stop"]


def test_a_stop_after_the_loop_exists_is_passed_on_and_none_is_invented() -> None:
    stop, calls = _StopRequest(), []
    stop.forward_to(lambda: calls.append("stop"))
    assert calls == []
    stop()
    assert calls == ["stop"]
