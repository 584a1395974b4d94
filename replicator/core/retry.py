"""`errors retry`: which chosen error records a retried batch closed and which still fail.

A record is one event refused for one target table (or for none: a decode failure). Retried, the
event goes through the guarded apply again; the record is closed unless the same event failed again
for the same table (or for another table whose failure names it in `also`: one event, all its rows
or none), or failed for the same table and key (the retried events of one key are folded into one
write, reported under the last of them: none of them was written), in which case it stays open
with the new reason. A decode record whose event now decodes
but is refused for a table stays open too, as that table's record (its rows were not written). A
retried event that lands as older than the row's stored version is a no-op, never a regression:
closed too.
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
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    """The records a retry closes and, for those still failing, the failure of this attempt."""

    closed: tuple[int, ...]
    failing: Mapping[int, Failure]


def settle(chosen: Sequence[Chosen], failures: Sequence[Failure]) -> Settled:
    by_ref: dict[KafkaRef, list[Failure]] = {}
    for f in failures:
        by_ref.setdefault(f.ref, []).append(f)
    by_row: dict[tuple[str | None, str | None], list[Failure]] = {}
    for f in failures:
        by_row.setdefault((_table(f), f.key), []).append(f)
        for t, k in f.also:
            by_row.setdefault((t, k), []).append(f)
    failing: dict[int, Failure] = {}
    for c in chosen:
        found = by_ref.get(c.ref, [])
        exact = [f for f in found if _table(f) == c.target_table]
        related = [f for f in found if c.target_table is None or c.target_table in {t for t, _ in f.also}]
        same_row = by_row.get((c.target_table, c.key), []) if c.key is not None else []
        if exact or related or same_row:
            failing[c.record_id] = (exact or related or same_row)[0]
    return Settled(tuple(c.record_id for c in chosen if c.record_id not in failing), failing)


def _table(f: Failure) -> str | None:
    return str(f.target) if f.target is not None else None
