"""`replicator status`: per partition the target-stored, Kafka-committed and end offsets.

Lag is measured from the target-stored offset (the truth), not Kafka's.
Rows held back (waiting for a parent or a unique swap on a lagging
partition) are listed per table. `kafka_ahead` flags a partition whose Kafka-committed offset is ahead of the
target-stored one, which the loop never does (invariant 1). Read-only: on a
target without the control schema it says so in one line.
"""

from __future__ import annotations

from typing import Any

from replicator.config import Settings
from replicator.kafka.clients import Metadata
from replicator.target.store import ControlStore


def held_status(settings: Settings, group_id: str) -> list[dict[str, Any]]:
    """Per target table: events held back waiting for a lagging table (count, oldest age, for what)."""
    with ControlStore.open(settings) as store:
        store.require()
        return store.held_summary(group_id)


def partition_status(settings: Settings, topics: list[str], group_id: str) -> list[dict[str, Any]]:
    with ControlStore.open(settings) as store:
        store.require()
        stored = store.checkpoints(group_id)
        errors = store.error_counts(group_id)
    rows: list[dict[str, Any]] = []
    with Metadata(settings.kafka) as metadata:
        partitions = metadata.partitions(topics)
        committed = metadata.committed(group_id, partitions)
        for p in partitions:
            low, high = metadata.watermarks(p)
            target = stored.get(p)
            kafka = committed.get(p)
            rows.append(
                {
                    "topic": p[0],
                    "partition": p[1],
                    "target_offset": target,
                    "kafka_committed": kafka,
                    "end_offset": high,
                    "log_start": low,
                    "lag": high - (target if target is not None else low),
                    "errors": errors.get(p, 0),
                    "kafka_ahead": kafka is not None and target is not None and kafka > target,
                }
            )
    return rows
