"""`run.status.partition_status` reads Kafka's committed offsets before the target's checkpoints.

A batch commits in the target first, then in Kafka: read in that order, the target is never
behind Kafka unless that invariant broke. Read the other way, a batch committing between the two
reads showed as `KAFKA AHEAD OF TARGET` during normal running (trial 15: 3 of 34 polls)."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.config import Settings
from replicator.core.model import Partition
from replicator.run import status

P: Partition = ("t.src.items", 0)


class World:
    """One partition at offset 4 in both; the first read by anyone lets a batch commit (5)."""

    def __init__(self) -> None:
        self.target = self.kafka = 4

    def read(self, value: int) -> int:
        self.target = self.kafka = 5  # the batch commits right after this read
        return value


class FakeMetadata:
    def __init__(self, world: World) -> None:
        self.world = world

    def __enter__(self) -> FakeMetadata:
        return self

    def __exit__(self, *_: Any) -> None:
        pass

    def partitions(self, topics: list[str]) -> list[Partition]:
        return [P]

    def committed(self, group: str, partitions: list[Partition]) -> dict[Partition, int]:
        return {P: self.world.read(self.world.kafka)}

    def watermarks(self, p: Partition) -> tuple[int, int]:
        return 0, 5


class FakeStore:
    def __init__(self, world: World) -> None:
        self.world = world

    def checkpoints(self, group: str) -> dict[Partition, int]:
        return {P: self.world.read(self.world.target)}

    def error_counts(self, group: str) -> dict[Partition, int]:
        return {}

    def stops(self, group: str) -> list[dict[str, Any]]:
        return []


def test_a_batch_committing_between_the_reads_is_not_kafka_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    monkeypatch.setattr(status, "Metadata", lambda kafka: FakeMetadata(world))
    (row,) = status.partition_status(FakeStore(world), Settings(), ["t.src.items"], "g")  # type: ignore[arg-type]
    assert (row["kafka_committed"], row["target_offset"], row["kafka_ahead"]) == (4, 5, False)
    assert row["lag"] == 0
