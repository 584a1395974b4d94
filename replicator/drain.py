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

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from replicator import control
from replicator.config import Settings
from replicator.connect_client import ConnectClient
from replicator.failures import Fatal

Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Drained:
    fence_lsn: int
    end_offsets: dict[Partition, int]
    seconds: float


def write_fence(settings: Settings, signal_table: str) -> int:
    """Insert a fence row into the signal table; return an LSN inside its transaction."""
    schema, _, table = signal_table.partition(".")
    fence_id = f"fence-{uuid.uuid4().hex[:20]}"
    with psycopg.connect(settings.source.conninfo()) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, 'log', %s)").format(
                sql.Identifier(schema, table)
            ),
            (fence_id, json.dumps({"message": f"cdc-replicator {fence_id}"})),
        )
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def flushed_lsn(client: ConnectClient, connector: str) -> int:
    result = client.offsets(connector) or {}
    lsns = [
        int(o["offset"].get("lsn_proc") or o["offset"].get("lsn") or 0) for o in result.get("offsets", [])
    ]
    return max(lsns, default=0)


def end_offsets(settings: Settings, topics: list[str]) -> dict[Partition, int]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "drain", **settings.kafka.options}
    )
    try:
        md = consumer.list_topics(timeout=10)
        return {
            (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
            for t in topics
            if t in md.topics
            for p in md.topics[t].partitions
        }
    finally:
        consumer.close()


def stored_offsets(settings: Settings, group: str) -> dict[Partition, int]:
    with psycopg.connect(settings.target.conninfo()) as conn:
        table = f"{settings.control_schema}.checkpoint"
        present = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if present is None or present[0] is None:
            return {}  # nothing applied yet
        rows = conn.execute(
            sql.SQL("SELECT topic, partition, next_offset FROM {} WHERE group_id = %s").format(
                control.table(settings.control_schema, "checkpoint")
            ),
            (group,),
        ).fetchall()
    return {(t, p): o for t, p, o in rows}


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
    lsn = write_fence(settings, signal_table)
    wait_for(
        lambda: flushed_lsn(client, connector) >= lsn,
        deadline,
        f"connector {connector} to flush past LSN {lsn}",
    )
    ends = end_offsets(settings, topics)

    def applied() -> bool:
        stored = stored_offsets(settings, group)
        return all(stored.get(tp, 0) >= end for tp, end in ends.items() if end > 0)

    wait_for(applied, deadline, f"group {group} to apply up to {ends}")
    return Drained(lsn, ends, time.monotonic() - started)
