"""What the consumer loop tells an observer (metrics, health), and the health decisions.

The loop calls a `LoopObserver` at a few points: each turn, each rebalance,
each applied batch, each retry, each refresh of the end offsets, a halt.
`NullObserver` is the default (metrics off): every call does nothing and the
loop reads no end offsets for it. `Health` turns those calls into the answers
of `/healthz` (the loop turned recently) and `/readyz` (partitions assigned,
the last target round trip succeeded, not halted); it has no HTTP or
Prometheus in it, so it unit-tests with a fake clock.

Calls come from the loop's thread and (retries) from its apply thread; the
HTTP server reads from its own. Each call sets plain attributes, so a reader
sees either the old or the new value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from replicator.core.intents import PreparedBatch
from replicator.core.model import BatchResult, Partition

# What the loop retries against the target (a failing attempt means the target is not reachable).
TARGET_ACTIONS = ("apply batch", "read checkpoints")


class LoopObserver(Protocol):
    wants_end_offsets: bool  # the loop reads the partitions' end offsets for this observer

    def turned(self) -> None: ...
    def assigned(self, partitions: list[Partition], stored: Mapping[Partition, int]) -> None: ...
    def revoked(self, partitions: list[Partition]) -> None: ...
    def applied(self, batch: PreparedBatch, result: BatchResult, apply_s: float) -> None: ...
    def retried(self, what: str, error: str) -> None: ...
    def end_offsets(self, ends: Mapping[Partition, int]) -> None: ...
    def halted(self, reason: str) -> None: ...


class NullObserver:
    """Metrics off: nothing observed, no end offsets read."""

    wants_end_offsets = False

    def turned(self) -> None:
        pass

    def assigned(self, partitions: list[Partition], stored: Mapping[Partition, int]) -> None:
        pass

    def revoked(self, partitions: list[Partition]) -> None:
        pass

    def applied(self, batch: PreparedBatch, result: BatchResult, apply_s: float) -> None:
        pass

    def retried(self, what: str, error: str) -> None:
        pass

    def end_offsets(self, ends: Mapping[Partition, int]) -> None:
        pass

    def halted(self, reason: str) -> None:
        pass


class FanOut:
    """Several observers as one (metrics and progress)."""

    def __init__(self, observers: Sequence[LoopObserver]) -> None:
        self._observers = tuple(observers)
        self.wants_end_offsets = any(o.wants_end_offsets for o in observers)

    def turned(self) -> None:
        for o in self._observers:
            o.turned()

    def assigned(self, partitions: list[Partition], stored: Mapping[Partition, int]) -> None:
        for o in self._observers:
            o.assigned(partitions, stored)

    def revoked(self, partitions: list[Partition]) -> None:
        for o in self._observers:
            o.revoked(partitions)

    def applied(self, batch: PreparedBatch, result: BatchResult, apply_s: float) -> None:
        for o in self._observers:
            o.applied(batch, result, apply_s)

    def retried(self, what: str, error: str) -> None:
        for o in self._observers:
            o.retried(what, error)

    def end_offsets(self, ends: Mapping[Partition, int]) -> None:
        for o in self._observers:
            o.end_offsets(ends)

    def halted(self, reason: str) -> None:
        for o in self._observers:
            o.halted(reason)


def observe_all(observers: Sequence[LoopObserver]) -> LoopObserver | None:
    """None, the one observer, or a fan-out of several."""
    if not observers:
        return None
    return observers[0] if len(observers) == 1 else FanOut(observers)


class Health:
    """Liveness and readiness from what the loop reported, as (ok, one-line reason)."""

    def __init__(self, stale_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.last_turn: float | None = None
        self.partitions: set[Partition] = set()
        self.target_error: str | None = None
        self.target_seen = False  # a target round trip succeeded at least once
        self.halt: str | None = None

    def turned(self) -> None:
        self.last_turn = self.clock()

    def assigned(self, partitions: list[Partition]) -> None:
        self.partitions |= set(partitions)
        self.target_ok()  # the target-stored offsets were just read

    def revoked(self, partitions: list[Partition]) -> None:
        self.partitions -= set(partitions)

    def target_ok(self) -> None:
        self.target_error = None
        self.target_seen = True

    def target_failed(self, error: str) -> None:
        self.target_error = " ".join(error.split())[:200]

    def halted(self, reason: str) -> None:
        self.halt = " ".join(reason.split())[:200]

    def live(self) -> tuple[bool, str]:
        if self.last_turn is None:
            return False, "the consumer loop has not started"
        idle = self.clock() - self.last_turn
        if idle > self.stale_after_s:
            return (
                False,
                f"the consumer loop has not turned for {idle:.0f}s (limit {self.stale_after_s:.0f}s)",
            )
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.halt is not None:
            return False, f"halted: {self.halt}"
        live, why = self.live()
        if not live:
            return False, why
        if not self.partitions:
            return False, "no partitions assigned"
        if self.target_error is not None:
            return False, f"target unreachable: {self.target_error}"
        if not self.target_seen:
            return False, "no target round trip yet"
        return True, "ok"
