"""Source changes arrive in Kafka as the Debezium events our decoder relies on.

Runs a dedicated connector (`test-probe-<run>`, topic prefix `probe`, its own slot and
publication) over `probe.items`, so it never disturbs the demo connector.
Each test names the event shape it proves.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Message

from replicator.connect.client import ConnectClient
from replicator.connect.configs import load_connector
from tests.integration.pipeline import drop_slot
from tests.integration.stack import Stack, collect, consumer_at_end, event_payload, key_payload, payload

TOPIC = "probe.probe.items"
PLACEHOLDER = "__debezium_unavailable_value"
CONNECTOR_FILE = Path(__file__).parent / "connectors" / "probe-postgres.json"


@pytest.fixture(scope="module")
def probe(stack: Stack, probe_source: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        # Its own name and slot per module run: the stack keeps a connector's offsets after it is
        # deleted, and a new slot under the old name's offsets is refused by Debezium.
        run = uuid.uuid4().hex[:6]
        names = {"CDC_PROBE_CONNECTOR": f"test-probe-{run}", "CDC_PROBE_SLOT": f"cdc_probe_{run}"}
        spec = load_connector(CONNECTOR_FILE, {**os.environ, **names})
        ConnectClient(stack.connect_url).apply(spec, wait_s=120)
        # The topic exists once the first event is produced.
        warm = random.randrange(10**8, 2 * 10**8)
        conn.execute("INSERT INTO probe.items (id, name) VALUES (%s, 'warm-up')", (warm,))
        consumer = Consumer(
            {"bootstrap.servers": stack.kafka, "group.id": "probe-warm", "auto.offset.reset": "earliest"}
        )
        consumer.subscribe([TOPIC])
        try:
            collect(
                consumer,
                lambda ms: any(((payload(m) or {}).get("after") or {}).get("id") == warm for m in ms),
                90,
            )
        finally:
            consumer.close()
        try:
            yield conn
        finally:  # a connector left running keeps its task busy and its slot pins the source's WAL
            ConnectClient(stack.connect_url).delete(spec.name)
            drop_slot(stack, spec.config["slot.name"])


def new_id() -> int:
    return random.randrange(1, 10**8)


def events_for(messages: list[Message], key_id: int) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        k = key_payload(m)
        if k is not None and k.get("id") == key_id:
            out.append(m)
    return out


def test_insert_arrives_as_create_event_with_after_and_sequence(
    stack: Stack, probe: psycopg.Connection
) -> None:
    i = new_id()
    with consumer_at_end(stack, TOPIC) as consumer:
        probe.execute("INSERT INTO probe.items VALUES (%s, 'Zoë 🙂', 12.34, 'small', ARRAY['a','b'])", (i,))
        msgs = collect(consumer, lambda ms: bool(events_for(ms, i)))
    (event,) = events_for(msgs, i)
    body = event_payload(event)
    assert body["op"] == "c"
    assert body["before"] is None
    assert body["after"]["id"] == i and body["after"]["name"] == "Zoë 🙂"
    assert body["after"]["tags"] == ["a", "b"]
    seq = json.loads(body["source"]["sequence"])
    assert len(seq) == 2 and int(seq[1]) == body["source"]["lsn"]
    assert body["source"]["snapshot"] in (None, "false")
    assert body["transaction"]["total_order"] >= 1


def test_update_not_touching_toasted_column_carries_placeholder(
    stack: Stack, probe: psycopg.Connection
) -> None:
    i = new_id()
    big = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(20000))
    with consumer_at_end(stack, TOPIC) as consumer:
        probe.execute("INSERT INTO probe.items (id, name, big) VALUES (%s, 'v1', %s)", (i, big))
        probe.execute("UPDATE probe.items SET name = 'v2' WHERE id = %s", (i,))
        msgs = collect(consumer, lambda ms: len(events_for(ms, i)) >= 2)
    create, update = (event_payload(m) for m in events_for(msgs, i))
    assert create["op"] == "c" and create["after"]["big"] == big
    assert update["op"] == "u"
    assert update["after"]["name"] == "v2"
    assert update["after"]["big"] == PLACEHOLDER
    # Commit order: the update's sequence is after the insert's.
    s_create = [int(x or 0) for x in json.loads(create["source"]["sequence"])]
    s_update = [int(x or 0) for x in json.loads(update["source"]["sequence"])]
    assert s_update > s_create


def test_delete_arrives_as_delete_then_tombstone(stack: Stack, probe: psycopg.Connection) -> None:
    i = new_id()
    with consumer_at_end(stack, TOPIC) as consumer:
        probe.execute("INSERT INTO probe.items (id, name) VALUES (%s, 'gone soon')", (i,))
        probe.execute("DELETE FROM probe.items WHERE id = %s", (i,))
        msgs = collect(consumer, lambda ms: len(events_for(ms, i)) >= 3)
    create, delete, tombstone = events_for(msgs, i)
    assert event_payload(create)["op"] == "c"
    body = event_payload(delete)
    assert body["op"] == "d" and body["after"] is None
    assert body["before"]["id"] == i  # REPLICA IDENTITY DEFAULT: key columns only
    assert tombstone.value() is None and key_payload(tombstone) == {"id": i}


def test_primary_key_update_arrives_as_delete_tombstone_create(
    stack: Stack, probe: psycopg.Connection
) -> None:
    old, new = new_id(), new_id()
    with consumer_at_end(stack, TOPIC) as consumer:
        probe.execute("INSERT INTO probe.items (id, name) VALUES (%s, 'moving')", (old,))
        probe.execute("UPDATE probe.items SET id = %s WHERE id = %s", (new, old))
        msgs = collect(consumer, lambda ms: bool(events_for(ms, new)) and len(events_for(ms, old)) >= 3)
    _create_old, delete_old, tomb_old = events_for(msgs, old)
    (create_new,) = events_for(msgs, new)
    assert event_payload(delete_old)["op"] == "d"
    assert dict(delete_old.headers() or [])["__debezium.newkey"]
    assert tomb_old.value() is None
    body = event_payload(create_new)
    assert body["op"] == "c" and body["after"]["name"] == "moving"
    assert dict(create_new.headers() or [])["__debezium.oldkey"]


def test_truncate_arrives_as_truncate_event_with_null_key(stack: Stack, probe: psycopg.Connection) -> None:
    with consumer_at_end(stack, TOPIC) as consumer:
        probe.execute("TRUNCATE probe.items")
        msgs = collect(consumer, lambda ms: any((payload(m) or {}).get("op") == "t" for m in ms))
    (event,) = [m for m in msgs if (payload(m) or {}).get("op") == "t"]
    assert event.key() is None
    body = event_payload(event)
    assert body["before"] is None and body["after"] is None
    assert body["source"]["table"] == "items"
