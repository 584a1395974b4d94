"""A SIGTERM that arrives while the daemon starts is kept and stops the loop once it exists; a
member fenced by a newer one with its instance id ends stopped, not halted."""

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


def test_a_member_fenced_by_a_newer_one_with_its_instance_id_ends_done_not_halted() -> None:
    """Trials 13 and 14: a `run --processes` child fenced by the restarted command's child (same
    instance id), asked to stop or not, ended `halted`, and `status` called its tables HALTED while
    the successor applied them. Any other fatal error still halts."""
    fenced = Fenced("kafka: Static consumer fenced by other consumer with same group.instance.id")
    assert end_of(fenced) == ("done", None)
    other = Fatal("retention gap on t[0]")
    assert end_of(other) == ("halted", other)
