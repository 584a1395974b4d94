"""Which partitions a halted run holds (`core.halts.halted_by`), the judgement behind a table
shown `halted` by `replicator status` (trial 7: the tables of a halted member showed `running`).

Proves: a partition owned by the halted run's static instance (its session not yet timed out) is
held; one a live member owns (another instance, a dynamic member) is not; one nobody owns is held
by the run that last applied from it when that run halted, and by the newest halted run when no
run applied from it since that halt; a run that applied from it after the halt clears it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from replicator.core.halts import halted_by

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def halted(run_id: str, instance: str | None, ended_min: int) -> dict[str, Any]:
    return {"run_id": run_id, "instance_id": instance, "ended_at": T0 + timedelta(minutes=ended_min)}


ONE = halted("h-one", "one", 10)
DYN = halted("h-dyn", None, 5)
HALTED = [ONE, DYN]  # newest first, as the store lists them
P = [("t", 0), ("t", 1), ("t", 2), ("u", 0)]


def test_a_partition_its_halted_static_member_still_owns_is_held() -> None:
    owners = {("t", 0): "one", ("t", 1): "two", ("t", 2): None}
    out = halted_by(P[:3], owners, {}, HALTED)
    assert out == {("t", 0): ONE}  # "two" and a dynamic member are live members that apply them


def test_a_partition_nobody_owns_is_held_until_a_run_applies_from_it_after_the_halt() -> None:
    last = {
        ("t", 0): ("h-dyn", T0),  # last applied by a halted run: that one
        ("t", 1): ("r-before", T0 + timedelta(minutes=1)),  # a run started before both halts
        ("t", 2): ("r-between", T0 + timedelta(minutes=7)),  # started after DYN halted, before ONE
        ("u", 0): ("r-after", T0 + timedelta(minutes=11)),  # started after every halt: it took it
    }
    out = halted_by(P, {}, last, HALTED)
    assert out == {("t", 0): DYN, ("t", 1): ONE, ("t", 2): ONE}
    assert halted_by([("v", 0)], {}, {}, HALTED) == {("v", 0): ONE}  # never applied: the newest
    assert halted_by(P, {}, last, []) == {}
