"""Isolating the bad rows of a set-based statement by bisection. Pure.

`isolate(items, attempt)` runs `attempt` on all items; when it fails with a
row-level error, the items are split in halves and each half is attempted on
its own (the caller wraps every attempt in a savepoint), down to single items.
A batch of n items with k bad ones costs about 2·k·log2(n) attempts instead of
n: a clean batch is one attempt, one bad row among 5,000 about 25.

Invariants: every item ends either applied (in an attempt that succeeded) or
failed with the error of its own single-item attempt; the order of items is
kept inside every attempt (parents before children, Kafka order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
E = TypeVar("E")


@dataclass(slots=True)
class Isolated(Generic[T, E]):
    applied: list[T] = field(default_factory=list)
    failed: list[tuple[T, E]] = field(default_factory=list)
    attempts: int = 0


def isolate(items: Sequence[T], attempt: Callable[[Sequence[T]], E | None]) -> Isolated[T, E]:
    """Apply `items` with as few attempts as bisection allows.

    `attempt(chunk)` applies the chunk atomically and returns None on success,
    or the row-level error that rolled the whole chunk back.
    """
    out: Isolated[T, E] = Isolated()
    pending: list[Sequence[T]] = [items] if items else []
    while pending:
        chunk = pending.pop()
        out.attempts += 1
        error = attempt(chunk)
        if error is None:
            out.applied.extend(chunk)
        elif len(chunk) == 1:
            out.failed.append((chunk[0], error))
        else:
            middle = len(chunk) // 2
            pending.append(chunk[middle:])  # popped second: the first half runs first
            pending.append(chunk[:middle])
    return out
