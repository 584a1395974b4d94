"""A SIGTERM that arrives while the daemon starts is kept and stops the loop once it exists; a
member that was asked to stop ends stopped even when its successor fenced it first."""

from __future__ import annotations

from replicator.core.errors import Fatal
from replicator.kafka.consumer import Fenced
from replicator.run.daemon import _StopRequest, end_of


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


def test_a_member_asked_to_stop_and_fenced_by_its_successor_ends_done_not_halted() -> None:
    """Trial 13: a `run --processes` child got SIGTERM with its command's kill -9 and was fenced by
    the restarted command's child (same instance id) before it ended: not a halt."""
    fenced = Fenced("kafka: Static consumer fenced by other consumer with same group.instance.id")
    assert end_of(fenced, stop_requested=True) == ("done", None)
    assert end_of(fenced, stop_requested=False) == ("halted", fenced)  # not asked: a duplicate id, say
    other = Fatal("retention gap on t[0]")
    assert end_of(other, stop_requested=True) == ("halted", other)
