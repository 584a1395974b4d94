"""Progress of a run as a person watches it (I/O edge): a loop observer that renders
`core.progress` on the terminal, or as plain log lines when not attached to one.

On a terminal (stderr is a tty) one line is redrawn in place at most every
`tty_every_s`; otherwise a `progress` event goes to the run log at most every
`plain_every_s` while events are left, and once when the backlog reaches 0.
`--json` runs get none (the caller passes no observer).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from replicator.core.intents import PreparedBatch
from replicator.core.model import BatchResult, Partition
from replicator.core.progress import ProgressSnapshot, RateWindow, events_left, render
from replicator.runlog import RunLog


class ProgressObserver:
    """Events applied since the start against the assigned partitions' end offsets."""

    wants_end_offsets = True

    def __init__(
        self,
        label: str,
        show: Callable[[ProgressSnapshot, bool], None],
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
        caps: Mapping[Partition, int] | None = None,
    ) -> None:
        self.label = label
        self._caps = dict(caps or {})  # a range's end per partition (replay, shadow --to)
        self._show = show
        self._every_s = every_s
        self._clock = clock
        self._window = RateWindow()
        self._positions: dict[Partition, int] = {}
        self._ends: dict[Partition, int] = {}
        self._done = 0
        self._last_shown: float | None = None
        self._last_left: int | None = None

    def turned(self) -> None:
        self._maybe_show()

    def assigned(self, partitions: list[Partition], stored: Mapping[Partition, int]) -> None:
        self._positions.update({p: stored[p] for p in partitions if p in stored})

    def revoked(self, partitions: list[Partition]) -> None:
        for p in partitions:
            self._positions.pop(p, None)
            self._ends.pop(p, None)

    def applied(self, batch: PreparedBatch, result: BatchResult, apply_s: float) -> None:
        self._done += batch.events
        self._positions.update(batch.next_offsets)

    def retried(self, what: str, error: str) -> None:
        pass

    def end_offsets(self, ends: Mapping[Partition, int]) -> None:
        caps = self._caps
        self._ends.update({p: min(end, caps.get(p, end)) for p, end in ends.items()})

    def halted(self, reason: str) -> None:
        pass

    def _maybe_show(self) -> None:
        if not self._ends:
            return  # nothing assigned yet: no backlog to measure against
        now = self._clock()
        left = events_left(self._ends, self._positions)
        caught_up = left == 0 and self._last_left != 0
        if not caught_up and self._last_shown is not None and now - self._last_shown < self._every_s:
            return
        snap = self._window.sample(now, self._done, left)
        if left or caught_up:
            self._show(snap, caught_up)
            self._last_shown = now
        self._last_left = left


def progress_observer(
    label: str,
    log: RunLog,
    stream: TextIO | None = None,
    plain_every_s: float = 30.0,
    caps: Mapping[Partition, int] | None = None,
) -> ProgressObserver:
    """Redrawn in place on a terminal, `progress` log events otherwise."""
    out = stream if stream is not None else sys.stderr
    if out.isatty():

        def redraw(snap: ProgressSnapshot, caught_up: bool) -> None:
            # The cursor goes back to column 0: the next log line draws over the progress line.
            out.write("\r\x1b[K" + render(label, snap) + ("\n" if caught_up else "\r"))
            out.flush()

        return ProgressObserver(label, redraw, every_s=0.5, caps=caps)

    def plain(snap: ProgressSnapshot, caught_up: bool) -> None:
        log.event(
            "progress",
            work=label,
            done=snap.done,
            left=snap.left,
            rate_per_s=None if snap.rate is None else round(snap.rate, 1),
            eta_s=None if snap.eta_s is None else round(snap.eta_s),
        )

    return ProgressObserver(label, plain, every_s=plain_every_s, caps=caps)
