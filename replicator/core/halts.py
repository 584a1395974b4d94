"""Which halted run holds a partition (pure): the judgement behind a table `replicator status`
shows `halted`.

A run that halted (a fatal error) applies nothing more, but its partitions are not free: a static
member keeps them in the group until its session times out, and a partition no member owns is
applied by nobody until a run takes it. The caller reads the halted runs, the group's assignment
and the run that last applied from each partition; `halted_by` judges.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from replicator.core.model import Partition


def halted_by(
    partitions: list[Partition],
    owners: Mapping[Partition, str | None],
    last_runs: Mapping[Partition, tuple[str | None, datetime | None]],
    halted: list[dict[str, Any]],
) -> dict[Partition, dict[str, Any]]:
    """Which listed halted run (`halted`, newest first) holds each partition, if one does.

    Owned by a member of the group (`owners`: its static instance id, None for a dynamic member):
    held when that member is a halted run's instance (a static member keeps its partitions until
    its session times out; an instance started again is not listed as halted), else applied by that
    live member. Owned by none: held by the run that last applied from it (`last_runs`: its id and
    start) when that one halted, else by the newest halted run that ended after that run started
    (or any, when none applied from it): no run took the partition since the halt."""
    by_instance = {r["instance_id"]: r for r in reversed(halted) if r["instance_id"] is not None}
    by_id = {r["run_id"]: r for r in halted}
    out: dict[Partition, dict[str, Any]] = {}
    for p in partitions:
        run: dict[str, Any] | None
        if p in owners:
            instance = owners[p]
            run = by_instance.get(instance) if instance is not None else None
        else:
            last, started = last_runs.get(p, (None, None))
            run = by_id.get(last) if last is not None else None
            if run is None:
                run = next((r for r in halted if started is None or r["ended_at"] > started), None)
        if run is not None:
            out[p] = run
    return out
