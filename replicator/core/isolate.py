"""Isolating the bad rows of a set-based statement by bisection. Pure.

`isolate(items, attempt)` runs `attempt` on all items; when it fails with a
row-level error, the items are split in halves and each half is attempted on
its own (the caller wraps every attempt in a savepoint), down to single items.
A batch of n items with k bad ones costs about 2·k·log2(n) attempts instead of
n: a clean batch is one attempt, one bad row among 5,000 about 25.

With `leaf` and `leaf_size`, a failed chunk is cut straight into chunks of
`leaf_size` items (not halves), and a failed chunk of that size is handed to
`leaf`: one call that applies it row by row on its own (the writer's
server-side loop) and returns the positions of the rows that failed. Then k
bad rows among n cost at most n/leaf_size + k + 1 calls; once two leaf-size
chunks in a row failed, failures are taken as dense and the next chunks go to
`leaf` directly (one call per chunk, not two attempts per row).

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


def isolate(
    items: Sequence[T],
    attempt: Callable[[Sequence[T]], E | None],
    leaf: Callable[[Sequence[T]], list[tuple[int, E]]] | None = None,
    leaf_size: int = 0,
) -> Isolated[T, E]:
    """Apply `items` with as few attempts as bisection allows.

    `attempt(chunk)` applies the chunk atomically and returns None on success,
    or the row-level error that rolled the whole chunk back. `leaf(chunk)`
    applies a chunk row by row and returns (position in the chunk, error) of
    each row that failed.
    """
    out: Isolated[T, E] = Isolated()
    pending: list[Sequence[T]] = [items] if items else []
    dense = 0  # leaf-size chunks that failed in a row: past two, failures are dense, go straight to `leaf`

    def row_by_row(chunk: Sequence[T], run: Callable[[Sequence[T]], list[tuple[int, E]]]) -> bool:
        out.attempts += 1
        failed = dict(run(chunk))
        out.applied.extend(item for i, item in enumerate(chunk) if i not in failed)
        out.failed.extend((chunk[i], e) for i, e in sorted(failed.items()))
        return bool(failed)

    while pending:
        chunk = pending.pop()
        if leaf is not None and dense >= 2 and 1 < len(chunk) <= leaf_size:
            dense = dense + 1 if row_by_row(chunk, leaf) else 0
            continue
        out.attempts += 1
        error = attempt(chunk)
        if error is None:
            dense = 0
            out.applied.extend(chunk)
        elif len(chunk) == 1:
            out.failed.append((chunk[0], error))
        elif leaf is not None and len(chunk) <= leaf_size:
            dense += 1
            row_by_row(chunk, leaf)
        elif leaf is not None:
            parts = [chunk[i : i + leaf_size] for i in range(0, len(chunk), leaf_size)]
            pending.extend(reversed(parts))  # popped in order: Kafka order is kept
        else:
            middle = len(chunk) // 2
            pending.append(chunk[middle:])  # popped second: the first half runs first
            pending.append(chunk[:middle])
    return out
