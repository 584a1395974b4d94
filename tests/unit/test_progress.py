"""Progress of long work: the pure rate/ETA core, and the observer that shows it on a terminal
(one line redrawn in place) or as `progress` log events when stderr is not a terminal."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Mapping

import pytest

from replicator.core.intents import PreparedBatch
from replicator.core.model import BatchResult, Partition
from replicator.core.progress import RateWindow, duration, events_left, render
from replicator.run.observer import FanOut, NullObserver, observe_all
from replicator.run.progress import ProgressObserver, progress_observer
from replicator.runlog import RunLog

A: Partition = ("t", 0)
B: Partition = ("t", 1)


def batch(events: int, next_offsets: Mapping[Partition, int]) -> PreparedBatch:
    return PreparedBatch(by_table={}, failures=(), next_offsets=next_offsets, counts=Counter(), events=events)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_events_left_counts_from_each_applied_position_to_its_end() -> None:
    assert events_left({A: 100, B: 50}, {A: 40, B: 50}) == 60
    assert events_left({A: 100}, {}) == 0, "no known position: nothing is known to be left"
    assert events_left({A: 10}, {A: 12}) == 0, "never negative"


def test_rate_is_measured_over_the_recent_window_so_a_stall_shows() -> None:
    w = RateWindow(window_s=10)
    assert w.sample(0, 0, 1000).rate is None
    fast = w.sample(5, 500, 500)
    assert fast.rate == pytest.approx(100) and fast.eta_s == pytest.approx(5)
    w.sample(10, 1000, 500)
    stalled = w.sample(30, 1000, 500)  # 20 s without progress: the window forgot the fast part
    assert stalled.rate == pytest.approx(0) and stalled.eta_s is None
    assert w.sample(31, 1500, 0).eta_s == 0


def test_render_and_duration() -> None:
    snap = RateWindow().sample(0, 0, 0)
    assert render("catch-up", snap) == "catch-up 0/0 events (100%) - events/s caught up"
    w = RateWindow()
    w.sample(0, 0, 40_000)
    line = render("catch-up", w.sample(2, 10_000, 30_000))
    assert line == "catch-up 10,000/40,000 events (25%) 5,000 events/s ETA 6s"
    assert [duration(s) for s in (42, 303, 7620)] == ["42s", "5m03s", "2h07m"]


def test_observer_shows_at_most_every_interval_and_caught_up_once() -> None:
    clock = Clock()
    shown: list[tuple[int, int, bool]] = []
    obs = ProgressObserver("catch-up", lambda s, up: shown.append((s.done, s.left, up)), 10, clock)
    obs.turned()
    assert shown == [], "nothing before the end offsets are known"
    obs.assigned([A, B], {A: 0})
    obs.end_offsets({A: 100, B: 30})
    obs.turned()
    assert shown == [(0, 100, False)], "B has no stored position: only A's 100 are known to be left"
    obs.applied(batch(60, {A: 60, B: 30}), BatchResult(), 0.1)
    clock.now += 5
    obs.turned()
    assert len(shown) == 1, "within the interval"
    clock.now += 5
    obs.turned()
    assert shown[-1] == (60, 40, False)
    obs.applied(batch(40, {A: 100}), BatchResult(), 0.1)
    obs.turned()
    assert shown[-1] == (100, 0, True), "reaching 0 is shown at once"
    clock.now += 60
    obs.turned()
    assert len(shown) == 3, "nothing more while caught up"


def test_a_range_end_caps_the_backlog() -> None:
    shown: list[int] = []
    obs = ProgressObserver("shadow", lambda s, _up: shown.append(s.left), 1, Clock(), caps={A: 50})
    obs.assigned([A], {A: 10})
    obs.end_offsets({A: 500})
    obs.turned()
    assert shown == [40]


def test_not_a_terminal_gives_progress_log_events() -> None:
    out = io.StringIO()
    obs = progress_observer("catch-up", RunLog("r1", "json", out), stream=io.StringIO(), plain_every_s=0)
    obs.assigned([A], {A: 0})
    obs.end_offsets({A: 10})
    obs.turned()
    event = json.loads(out.getvalue().splitlines()[-1])
    assert event["event"] == "progress" and event["work"] == "catch-up"
    assert (event["done"], event["left"]) == (0, 10)


def test_a_terminal_gets_one_line_redrawn_in_place() -> None:
    tty, log_out = Tty(), io.StringIO()
    obs = progress_observer("catch-up", RunLog("r1", "text", log_out), stream=tty)
    obs.assigned([A], {A: 0})
    obs.end_offsets({A: 10})
    obs.turned()
    assert tty.getvalue().startswith("\r\x1b[Kcatch-up 0/10 events (0%)") and tty.getvalue().endswith("\r")
    obs.applied(batch(10, {A: 10}), BatchResult(), 0.1)
    obs.turned()
    assert tty.getvalue().endswith("caught up\n")
    assert log_out.getvalue() == "", "no log events on a terminal"


def test_fan_out_forwards_to_every_observer() -> None:
    seen: list[int] = []
    a = ProgressObserver("a", lambda s, _u: seen.append(s.left), 0, Clock())
    b = ProgressObserver("b", lambda s, _u: seen.append(s.left), 0, Clock())
    fan = observe_all([a, b])
    assert isinstance(fan, FanOut) and fan.wants_end_offsets
    fan.assigned([A], {A: 1})
    fan.end_offsets({A: 3})
    fan.turned()
    assert seen == [2, 2]
    assert observe_all([]) is None
    single = NullObserver()
    assert observe_all([single]) is single
