"""Where a replay moves a group's positions (pure): one move per partition, checked.

A replay only moves positions back (or sets a start where none is stored):
moving a stored position forward would skip events, which is not a replay and
is refused. Targets are clamped into the partition's log (`low..high`); a
target below the log start is refused, since those events are gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from replicator.core.model import Partition


class ReplayRefused(ValueError):
    """The requested replay would skip or lose events; the message names the partition."""


@dataclass(frozen=True, slots=True)
class Move:
    partition: Partition
    stored: int | None  # the target-stored next offset now (None: never applied)
    to: int  # the next offset the group reads after the replay

    @property
    def events(self) -> int:
        """Events read again (0 where nothing was applied yet)."""
        return 0 if self.stored is None else max(0, self.stored - self.to)


def plan_moves(
    wanted: Mapping[Partition, int],
    stored: Mapping[Partition, int],
    marks: Mapping[Partition, tuple[int, int]],
) -> list[Move]:
    """The moves for `wanted` (next offset per partition); raises ReplayRefused."""
    moves = []
    for p in sorted(wanted):
        low, high = marks[p]
        to = min(wanted[p], high)
        name = f"{p[0]}[{p[1]}]"
        if to < low:
            raise ReplayRefused(
                f"{name}: offset {to} is below the log start {low} (deleted by retention);"
                f" replay from {low} (--to-earliest), or re-snapshot the table"
            )
        now = stored.get(p)
        if now is not None and to > now:
            raise ReplayRefused(
                f"{name}: offset {to} is ahead of the stored position {now}; a replay only moves"
                " back (moving forward would skip events)"
            )
        moves.append(Move(p, now, to))
    return moves


def parse_offset(text: str) -> tuple[Partition, int]:
    """`TOPIC:PARTITION:OFFSET` (the topic may contain dots, not colons)."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"{text!r} is not TOPIC:PARTITION:OFFSET (e.g. demo.shop.orders:0:1200)")
    return (parts[0], int(parts[1])), int(parts[2])
