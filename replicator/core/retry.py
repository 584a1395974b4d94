"""`errors retry`: which chosen error records a retried batch closed and which still fail.

A record is one event refused for one target table (or for none: a decode failure). Retried, the
event goes through the guarded apply again; the record is closed unless the same event failed again
for the same table, in which case it stays open with the new reason. A retried event that lands
as older than the row's stored version is a no-op, never a regression: closed too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from replicator.core.model import Failure, KafkaRef


@dataclass(frozen=True, slots=True)
class Chosen:
    """An open error record picked for a retry: its id, event and target table (None: no table)."""

    record_id: int
    ref: KafkaRef
    target_table: str | None


@dataclass(frozen=True, slots=True)
class Settled:
    """The records a retry closes and, for those still failing, the failure of this attempt."""

    closed: tuple[int, ...]
    failing: Mapping[int, Failure]


def settle(chosen: Sequence[Chosen], failures: Sequence[Failure]) -> Settled:
    by_event = {(f.ref, str(f.target) if f.target is not None else None): f for f in failures}
    failing = {
        c.record_id: by_event[(c.ref, c.target_table)] for c in chosen if (c.ref, c.target_table) in by_event
    }
    return Settled(tuple(c.record_id for c in chosen if c.record_id not in failing), failing)
