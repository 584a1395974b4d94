"""Rows with big TOASTed values, on the real stack: a 3 MiB bytea and a 1 MiB text per row make
change events of over 5 MB (JSON: the bytea base64-encoded), five times Kafka's default message
size. With the stack's limits (broker `message.max.bytes`, the connector's
`producer.override.max.request.size` / `buffer.memory` and `topic.creation.default.max.message.bytes`)
they travel: snapshot rows, streamed inserts, an update of a big value, and updates of another
column (Debezium sends the unchanged-TOAST placeholder for the big columns; the target keeps its
values). Without them the connector task fails with RecordTooLargeException; this test then fails
naming the task's trace.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from replicator.config import load_settings
from replicator.connect.client import ConnectClient
from replicator.source.signal import write_fence
from tests.integration.own_capture import OwnSchema, own_source, own_target
from tests.integration.pipeline import drop_slot, end_offsets, run_cli, wait_until
from tests.integration.stack import Stack, collect, event_payload, key_payload

TABLE = "blobs"
BYTEA_BYTES = 3 * 1024 * 1024
TEXT_CHARS = 1024 * 1024
PLACEHOLDER = "__debezium_unavailable_value"


def big_row(conn: psycopg.Connection[Any], table: sql.Identifier, row_id: int, note: str) -> None:
    """A row with an incompressible 3 MiB bytea and a 1 MiB text (random: compression cannot keep
    either inline, so both are TOASTed out of line)."""
    conn.execute(
        sql.SQL("INSERT INTO {} (id, note, payload, doc) VALUES (%s, %s, %s, %s)").format(table),
        (row_id, note, secrets.token_bytes(BYTEA_BYTES), secrets.token_hex(TEXT_CHARS // 2)),
    )


@pytest.fixture
def world(stack: Stack) -> Iterator[OwnSchema]:
    with own_source(stack, "big", [TABLE], table_ddl) as own:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            for row_id in (1, 2):  # before the connector: the snapshot reads them
                big_row(conn, own.table(TABLE), row_id, f"snapshot {row_id}")
            toasted = conn.execute(
                sql.SQL(
                    "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = {}::regclass"
                ).format(sql.Literal(f"{own.schema}.{TABLE}"))
            ).fetchone()
        assert toasted is not None and toasted[0] >= 2 * (BYTEA_BYTES + TEXT_CHARS), "the values are TOASTed"
        yield own


def table_ddl(s: sql.Identifier) -> sql.Composed:
    return sql.SQL("CREATE TABLE {}.{} (id int PRIMARY KEY, note text, payload bytea, doc text)").format(
        s, sql.Identifier(TABLE)
    )


def spec(tmp_path: Path, world: OwnSchema) -> Path:
    return world.spec(
        tmp_path / "big.yaml",
        [world.rule("blobs", TABLE, ["note", "payload", "doc"], truncate="error")],
    )


def target_db(stack: Stack, world: OwnSchema) -> str:
    return own_target(stack, world, [TABLE], table_ddl)


def fields(conninfo: str, table: sql.Identifier) -> dict[int, dict[str, Any]]:
    """Per row, each column (the big ones as length and md5): compared field by field."""
    with psycopg.connect(conninfo) as conn:
        found = conn.execute(
            sql.SQL(
                "SELECT id, note, length(payload), md5(payload), length(doc), md5(doc) FROM {} ORDER BY id"
            ).format(table)
        ).fetchall()
    names = ("note", "payload_bytes", "payload_md5", "doc_chars", "doc_md5")
    return {row[0]: dict(zip(names, row[1:], strict=True)) for row in found}


def flushed_past(client: ConnectClient, name: str, lsn: int) -> bool:
    """Connect's committed offset is at or past `lsn`; a FAILED task fails the test with its trace
    (a too-large record fails the task instead of ever committing)."""
    state = client.state(name)
    if state is not None and state.failed:
        raise AssertionError(f"connector {name} FAILED: {(state.trace or 'no trace').strip()[:2000]}")
    return client.flushed_lsn(name) >= lsn


def all_events(stack: Stack, topic: str) -> list[tuple[Any, dict[str, Any], int]]:
    """Every change event of `topic` (key, payload, size in bytes), read with librdkafka's defaults."""
    ends = {tp: high for tp, high in end_offsets(stack, [topic]).items() if high > 0}
    consumer = Consumer(
        {"bootstrap.servers": stack.kafka, "group.id": "test-reader", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
        wanted = sum(ends.values())
        messages = collect(consumer, lambda got: len(got) >= wanted, timeout_s=120)
    finally:
        consumer.close()
    return [(key_payload(m), event_payload(m), len(m.value() or b"")) for m in messages if m.value()]


def test_rows_with_megabytes_of_toasted_values_replicate_field_by_field(
    stack: Stack, world: OwnSchema, tmp_path: Path
) -> None:
    dbname = target_db(stack, world)
    connector = world.connector()
    env = world.env(dbname, spec(tmp_path, world))
    checked = run_cli(env, "mapping", "check")
    assert checked.returncode == 0, checked.stderr
    assert run_cli(env, "init").returncode == 0
    client = ConnectClient(stack.connect_url)
    client.apply(connector, wait_s=120)
    try:
        _, lsn = write_fence(load_settings(None).source, world.signal)
        wait_until(lambda: flushed_past(client, connector.name, lsn), 180, "the snapshot to flush")
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            for row_id in (3, 4):  # streamed
                big_row(conn, world.table(TABLE), row_id, f"streamed {row_id}")
            # another column of big rows (one from the snapshot, one streamed): unchanged TOAST
            conn.execute(
                sql.SQL("UPDATE {} SET note = 'touched' WHERE id IN (1, 3)").format(world.table(TABLE))
            )
            # a big value itself
            conn.execute(
                sql.SQL("UPDATE {} SET doc = %s WHERE id = 2").format(world.table(TABLE)),
                (secrets.token_hex(TEXT_CHARS // 2),),
            )
        _, lsn = write_fence(load_settings(None).source, world.signal)
        wait_until(lambda: flushed_past(client, connector.name, lsn), 180, "the changes to flush")

        # the events are big, and the note updates carry the placeholder for the big columns
        events = all_events(stack, world.topic(TABLE))
        assert max(size for _, _, size in events) > 5 * 1024 * 1024
        touched = [e for k, e, _ in events if e["op"] == "u" and k["id"] in (1, 3)]
        assert len(touched) == 2
        assert all(e["after"]["note"] == "touched" and e["after"]["doc"] == PLACEHOLDER for e in touched)

        applied = run_cli(env, "run", "--stop-when-caught-up")
        assert applied.returncode == 0, applied.stderr[-3000:]
        source = fields(stack.source_admin(), world.table(TABLE))
        target = fields(stack.target_admin(dbname), world.table(TABLE))
        assert sorted(source) == [1, 2, 3, 4]
        assert {r["payload_bytes"] for r in source.values()} == {BYTEA_BYTES}
        assert {r["doc_chars"] for r in source.values()} == {TEXT_CHARS}
        assert [source[i]["note"] for i in (1, 2, 3, 4)] == ["touched", "snapshot 2", "touched", "streamed 4"]
        for row_id, row in source.items():
            for name, value in row.items():
                assert target[row_id][name] == value, f"row {row_id}, {name}"
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            assert conn.execute("SELECT count(*) FROM replicator.error_record").fetchone() == (0,)
        verified = run_cli(env, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr[-3000:]
    finally:
        client.delete(connector.name)
        drop_slot(stack, connector.config["slot.name"])
