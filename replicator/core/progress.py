"""Progress of long work (pure): events done against what is left, the recent rate, the ETA.

The rate is measured over a sliding window of samples (the last `window_s`
seconds), so a stall shows as a falling rate and a growing ETA instead of an
average that hides it. No clock and no output here: the caller passes `now`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from replicator.core.model import Partition


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    done: int  # events handled since the work started
    left: int  # events between the applied positions and the end offsets
    rate: float | None  # events per second over the window; None until two samples apart in time
    eta_s: float | None  # None while the rate is unknown or zero with events left

    @property
    def percent(self) -> float:
        total = self.done + self.left
        return 100.0 if total == 0 else 100.0 * self.done / total


def events_left(ends: Mapping[Partition, int], positions: Mapping[Partition, int]) -> int:
    """Events between each partition's next offset to apply and its end offset (a partition with
    no known position counts from its end: nothing is known to be left there)."""
    return sum(max(0, end - positions.get(p, end)) for p, end in ends.items())


class RateWindow:
    """Samples of (time, done) over the last `window_s` seconds."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float, done: int, left: int) -> ProgressSnapshot:
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= self.window_s:
            samples.popleft()
        t0, d0 = samples[0]
        rate = (done - d0) / (now - t0) if now > t0 else None
        if left == 0:
            eta: float | None = 0.0
        elif rate:
            eta = left / rate
        else:
            eta = None
        return ProgressSnapshot(done, left, rate, eta)


def duration(seconds: float) -> str:
    """A short human duration: 42s, 5m03s, 2h07m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def render(label: str, snap: ProgressSnapshot) -> str:
    """One line: `catch-up 12,345/40,000 events (31%) 5,210 events/s ETA 5s`."""
    rate = "-" if snap.rate is None else f"{snap.rate:,.0f}"
    if snap.left == 0:
        eta = "caught up"
    elif snap.eta_s is None:
        eta = "ETA -"
    else:
        eta = f"ETA {duration(snap.eta_s)}"
    total = snap.done + snap.left
    return f"{label} {snap.done:,}/{total:,} events ({snap.percent:.0f}%) {rate} events/s {eta}"
