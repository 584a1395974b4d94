"""The partition watch: compares each mapped topic's partition count in Kafka with the recorded one.

The loop asks at every assignment (`force`: before a newly assigned
partition is read) and otherwise every `core.layout.CHECK_EVERY_S` seconds.
Kafka's count is read from the brokers' metadata, raised to what the
assignment itself shows (a partition numbered 3 means at least 4; a topic
the metadata does not show is not compared until it does); the
recorded count is read from the target only when it may have moved: at an
assignment, when Kafka shows another count than the one last read, or
while a topic of this instance is stopped (waiting for an accept).

The answer (`Watched`): the topics whose counts differ (`changed`: the loop
stops their partitions) and the topics to resume (`lifted`): stopped here
and accepted since, or whose recorded count moved under this instance (an
accept this instance did not wait for: its layouts are stale). Every
instance reads the same recorded row and the same cluster metadata, so all
reach the same verdict; see `core.layout` for why that ordering holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from replicator.core.layout import CHECK_EVERY_S, Change, changes
from replicator.core.model import Partition

Found = Callable[[list[str]], Mapping[str, int]]  # topics -> their partition counts in Kafka
Recorded = Callable[[Mapping[str, int]], Mapping[str, int]]  # Kafka's counts -> the recorded ones


@dataclass(frozen=True, slots=True)
class Watched:
    changed: Mapping[str, Change] = field(default_factory=dict)
    lifted: frozenset[str] = frozenset()


class PartitionWatch:
    """`check(...)`: the verdict, or None when it is not time yet (see the module)."""

    def __init__(
        self,
        found: Found,
        recorded: Recorded,
        clock: Callable[[], float] = time.monotonic,
        every_s: float = CHECK_EVERY_S,
    ) -> None:
        self._found = found
        self._recorded = recorded
        self._clock = clock
        self._every_s = every_s
        self._known: dict[str, int] = {}  # the recorded counts as last read
        self._last: float | None = None

    def check(
        self,
        topics: Collection[str],
        assigned: Collection[Partition] = (),
        stopped: Collection[str] = (),
        force: bool = False,
    ) -> Watched | None:
        now = self._clock()
        if not force and self._last is not None and now - self._last < self._every_s:
            return None
        self._last = now
        found = dict(self._found(sorted(topics)))
        for topic, partition in assigned:
            if topic in found:  # a topic the metadata does not show yet is compared later
                found[topic] = max(found[topic], partition + 1)
        moved: set[str] = set()
        if force or stopped or any(self._known.get(t) != n for t, n in found.items()):
            recorded = self._recorded(found)
            moved = {t for t, n in recorded.items() if t in self._known and self._known[t] != n}
            self._known.update(recorded)
        changed = changes(found, self._known)
        if force:  # an assignment reads the layouts anyway: nothing to resume
            return Watched(changed)
        return Watched(changed, frozenset(t for t in {*stopped, *moved} if t not in changed))
