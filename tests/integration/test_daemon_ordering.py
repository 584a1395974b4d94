"""Interleavings that break naive appliers (fault-test matrix 14), against a running daemon.

Proves: a long transaction committed after short ones ends with its values;
rows written by one COPY share LSNs and all land; a row updated
twice in one transaction ends with the second value; primary-key updates move
the row (hard delete policy) or soft-delete the old key and insert the new one.
Every test ends with the whole target compared to the mapped source.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any, cast

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.pipeline import assert_converged_equal, converge, daemon, env_for, fresh_target
from tests.integration.stack import Stack, one_row


@pytest.fixture(scope="module")
def live(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    dbname = fresh_target("order")
    group = f"order-{uuid.uuid4().hex[:6]}"
    log = tmp_path_factory.mktemp("order") / "daemon.log"
    with daemon(env_for(stack, dbname, group), log) as proc:
        converge(stack, dbname, group)
        yield dbname, group
    assert proc.returncode == 0, log.read_text()[-3000:]


def target_one(stack: Stack, dbname: str, query: str, *params: object) -> tuple[Any, ...] | None:
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        return conn.execute(query, params).fetchone()


def test_long_transaction_committed_after_short_ones_wins(stack: Stack, live: tuple[str, str]) -> None:
    dbname, group = live
    tag = uuid.uuid4().hex[:6]
    a, b = f"LT-A-{tag}", f"LT-B-{tag}"
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        for sku in (a, b):
            conn.execute("INSERT INTO shop.products (sku, name, price) VALUES (%s, 'v0', 1)", (sku,))
    long_tx = psycopg.connect(stack.source_admin())
    try:
        long_tx.execute("UPDATE shop.products SET name = 'long-early' WHERE sku = %s", (a,))  # early LSN
        with psycopg.connect(stack.source_admin(), autocommit=True) as short:
            for i in range(5):
                short.execute("UPDATE shop.products SET name = %s WHERE sku = %s", (f"short-{i}", b))
        long_tx.execute("UPDATE shop.products SET name = 'long-late' WHERE sku = %s", (b,))
        long_tx.commit()
    finally:
        long_tx.close()
    converge(stack, dbname, group)
    assert target_one(stack, dbname, "SELECT title FROM catalog.product WHERE sku = %s", a) == ("long-early",)
    assert target_one(stack, dbname, "SELECT title FROM catalog.product WHERE sku = %s", b) == ("long-late",)
    assert_converged_equal(stack, dbname)


def lsns_of(stack: Stack, topic: str, marker: str) -> list[int]:
    consumer = Consumer(
        {"bootstrap.servers": stack.kafka, "group.id": "lsn-peek", "enable.auto.commit": False}
    )
    out = []
    try:
        md = consumer.list_topics(topic, timeout=10)
        ends = {}
        for p in md.topics[topic].partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, max(0, ends[p] - 400)) for p in ends])
        remaining = {p for p, e in ends.items() if e > 0}
        while remaining:
            msg = consumer.poll(5)
            if msg is None:
                break
            value = msg.value()
            if msg.error() or value is None:
                continue
            partition = cast(int, msg.partition())
            if cast(int, msg.offset()) >= ends[partition] - 1:
                remaining.discard(partition)
            body = json.loads(value)["payload"]
            if body.get("after") and marker in str(body["after"].get("sku", "")):
                out.append(body["source"]["lsn"])
    finally:
        consumer.close()
    return out


def test_copy_rows_sharing_one_lsn_land_completely(stack: Stack, live: tuple[str, str]) -> None:
    dbname, group = live
    tag = uuid.uuid4().hex[:6]
    # COPY uses heap multi-inserts: several rows share one WAL record (one LSN).
    with (
        psycopg.connect(stack.source_admin(), autocommit=True) as conn,
        conn.cursor().copy("COPY shop.products (sku, name, price) FROM STDIN") as copy,
    ):
        for g in range(1, 41):
            copy.write_row((f"MR-{tag}-{g}", f"multi {g}", g))
    converge(stack, dbname, group)
    row = target_one(stack, dbname, "SELECT count(*) FROM catalog.product WHERE sku LIKE %s", f"MR-{tag}-%")
    assert row is not None
    (count,) = row
    assert count == 40
    lsns = lsns_of(stack, "demo.shop.products", f"MR-{tag}-")
    assert len(lsns) == 40 and len(set(lsns)) < 40, "the rows should share LSNs (multi-insert)"
    assert_converged_equal(stack, dbname)


def test_row_updated_twice_in_one_transaction_ends_with_second_value(
    stack: Stack, live: tuple[str, str]
) -> None:
    dbname, group = live
    sku = f"TW-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.source_admin()) as conn:
        conn.execute("INSERT INTO shop.products (sku, name, price) VALUES (%s, 'v0', 1)", (sku,))
        conn.execute("UPDATE shop.products SET name = 'first', price = 2 WHERE sku = %s", (sku,))
        conn.execute("UPDATE shop.products SET name = 'second', price = 3 WHERE sku = %s", (sku,))
    converge(stack, dbname, group)
    assert target_one(
        stack, dbname, "SELECT title, price_cents FROM catalog.product WHERE sku = %s", sku
    ) == ("second", 300)
    assert_converged_equal(stack, dbname)


def test_primary_key_updates_move_rows(stack: Stack, live: tuple[str, str]) -> None:
    """product (hard delete): the old key disappears; customer (soft delete): old key marked deleted."""
    dbname, group = live
    tag = uuid.uuid4().hex[:6]
    old_sku, new_sku = f"PK-OLD-{tag}", f"PK-NEW-{tag}"
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute("INSERT INTO shop.products (sku, name, price) VALUES (%s, 'moving', 4)", (old_sku,))
        (cid,) = one_row(
            conn.execute(
                "INSERT INTO shop.customers (email, full_name) VALUES (%s, 'Pk Mover') RETURNING id",
                (f"pk-{tag}@example.com",),
            )
        )
    converge(stack, dbname, group)
    new_cid = cid + 10_000_000
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute("UPDATE shop.products SET sku = %s WHERE sku = %s", (new_sku, old_sku))
        conn.execute("UPDATE shop.customers SET id = %s WHERE id = %s", (new_cid, cid))
    converge(stack, dbname, group)
    assert target_one(stack, dbname, "SELECT count(*) FROM catalog.product WHERE sku = %s", old_sku) == (0,)
    assert target_one(stack, dbname, "SELECT title FROM catalog.product WHERE sku = %s", new_sku) == (
        "moving",
    )
    assert target_one(stack, dbname, "SELECT is_deleted FROM crm.customer WHERE customer_id = %s", cid) == (
        True,
    )
    assert target_one(
        stack, dbname, "SELECT is_deleted, first_name FROM crm.customer WHERE customer_id = %s", new_cid
    ) == (False, "Pk")
    assert target_one(stack, dbname, "SELECT count(*) FROM crm.customer_pii WHERE customer_id = %s", cid) == (
        0,
    )
    assert_converged_equal(stack, dbname)


def test_concurrent_writers_interleaved_commits_converge(stack: Stack, live: tuple[str, str]) -> None:
    """Four sessions commit interleaved transactions on shared rows; the target ends equal."""
    dbname, group = live
    tag = uuid.uuid4().hex[:6]
    skus = [f"CC-{tag}-{i}" for i in range(5)]
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        for sku in skus:
            conn.execute("INSERT INTO shop.products (sku, name, price) VALUES (%s, 'c', 1)", (sku,))

    def writer(n: int) -> None:
        with psycopg.connect(stack.source_admin()) as conn:
            for i in range(25):
                for sku in (skus[(n + i) % 5], skus[(n + i + 1) % 5]):
                    conn.execute(
                        "UPDATE shop.products SET name = %s, price = price + 1 WHERE sku = %s",
                        (f"w{n}-{i}", sku),
                    )
                conn.commit()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    converge(stack, dbname, group)
    assert_converged_equal(stack, dbname)
