"""Drain: wait until the target reflects everything the source committed before now.

A fence row goes into Debezium's signal table (captured, so it is a change
at a known LSN; type `log`, so Debezium only logs it). Then, in order:
1. Connect's committed source offset passes the fence LSN: everything the
   source committed before the fence is durably in Kafka;
2. the end offsets of the mapped topics are read;
3. the target-stored checkpoints of the group reach those end offsets.
This is the exact position that cutover drains to; tests use it as the
convergence condition instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from replicator.config import Settings
from replicator.connect.client import ConnectClient
from replicator.core.errors import Fatal
from replicator.core.model import Partition, TableRef
from replicator.kafka.clients import Metadata
from replicator.source.signal import write_fence
from replicator.target.store import ControlStore


@dataclass(frozen=True, slots=True)
class Drained:
    fence_lsn: int
    end_offsets: dict[Partition, int]
    seconds: float


def wait_for(condition: Callable[[], Any], deadline: float, what: str) -> Any:
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Fatal(f"drain timed out waiting for {what}")
        time.sleep(0.25)  # polling interval between checks of the condition


def drain(
    settings: Settings,
    topics: list[str],
    connector: str,
    signal_table: str,
    timeout_s: float,
    group: str | None = None,
) -> Drained:
    started = time.monotonic()
    deadline = started + timeout_s
    group = group or settings.kafka.group_id
    client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
    _, lsn = write_fence(settings.source, TableRef.parse(signal_table))
    wait_for(
        lambda: client.flushed_lsn(connector) >= lsn,
        deadline,
        f"connector {connector} to flush past LSN {lsn}",
    )
    with Metadata(settings.kafka) as metadata:
        ends = metadata.end_offsets(topics)

    def applied() -> bool:
        with ControlStore.open(settings) as store:
            stored = store.checkpoints(group) if store.initialized() else {}  # nothing applied yet
        return all(stored.get(tp, 0) >= end for tp, end in ends.items() if end > 0)

    wait_for(applied, deadline, f"group {group} to apply up to {ends}")
    return Drained(lsn, ends, time.monotonic() - started)
