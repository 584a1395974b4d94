"""Bad data never stops the run and is never lost: error records, exactly the bad ones.

Proves: constraint-violating and non-fitting rows become error records with
their context while the rest of their batch lands; a declared truncation is
applied and reported; poison pills (bad JSON, unknown op) become error
records and a tombstone is not an error; `--on-error=halt` stops with the
cursor kept.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.integration.pipeline import (
    SPEC,
    converge,
    daemon,
    env_for,
    fresh_target,
    run_cli,
    stored_offsets,
    wait_until,
)
from tests.integration.stack import Stack, one_row


def error_records(
    stack: Stack, dbname: str, where: str = "true", params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    with psycopg.connect(stack.target_admin(dbname), row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            f"SELECT * FROM replicator.error_record WHERE {where} ORDER BY id", params
        ).fetchall()


def test_bad_rows_become_error_records_and_neighbours_land(stack: Stack, tmp_path: Path) -> None:
    """Rules product.sku (cast reject), product CHECK price_cents >= 0, product.title (truncate + report)."""
    dbname = fresh_target("errors")
    group = f"errors-{uuid.uuid4().hex[:6]}"
    tag = uuid.uuid4().hex[:6].upper()
    long_sku = f"BAD-{tag}-" + "X" * 70  # over varchar(64): product.sku rejects
    negative = f"NEG-{tag}"  # price -1.00 -> price_cents -100 violates the CHECK
    long_name = f"LONG-{tag}"  # name over 120 chars: product.title truncates and reports
    good = [f"OK{i}-{tag}" for i in range(3)]
    with daemon(env_for(stack, dbname, group), tmp_path / "d.log"):
        with psycopg.connect(stack.source_admin()) as conn:  # one transaction: one batch
            for sku in good:
                conn.execute("INSERT INTO shop.products (sku, name, price) VALUES (%s, 'fine', 3.00)", (sku,))
            conn.execute(
                "INSERT INTO shop.products (sku, name, price) VALUES (%s, 'too long a key', 1)", (long_sku,)
            )
            conn.execute(
                "INSERT INTO shop.products (sku, name, price) VALUES (%s, 'negative', -1.00)", (negative,)
            )
            conn.execute(
                "INSERT INTO shop.products (sku, name, price) VALUES (%s, %s, 5)", (long_name, "N" * 150)
            )
        converge(stack, dbname, group)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        landed = {
            r[0]
            for r in conn.execute(
                "SELECT sku FROM catalog.product WHERE sku LIKE %s", (f"%{tag}%",)
            ).fetchall()
        }
        (title,) = one_row(conn.execute("SELECT title FROM catalog.product WHERE sku = %s", (long_name,)))
    assert landed == {*good, long_name}
    assert title == "N" * 120
    errors = [r for r in error_records(stack, dbname) if tag in (r["raw_value"] or b"").decode()]
    got = {(r["kind"], r["rule_id"], r["sqlstate"]) for r in errors}
    assert got == {
        ("error", "product.sku", None),
        ("error", "product", "23514"),
        ("truncated", "product.title", None),
    }
    for r in errors:
        assert r["topic"] == "demo.shop.products" and r["kafka_offset"] is not None
        assert r["raw_value"] and r["message"]
    neg = next(r for r in errors if r["sqlstate"] == "23514")
    assert neg["key"] == json.dumps([negative])


def poison_spec(tmp_path: Path, topic: str, keep: tuple[str, ...] = ()) -> Path:
    """The demo's product rule reading `topic`, plus the demo rules named in `keep`."""
    spec = yaml.safe_load(SPEC.read_text())
    product = next(t for t in spec["tables"] if t["id"] == "product")
    spec["tables"] = [{**product, "topic": topic}, *(t for t in spec["tables"] if t["id"] in keep)]
    # Its topic is hand-made, not the demo connector's: no capture block (and so no signal topic).
    spec.pop("capture", None)
    path = tmp_path / "poison.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def real_product_event(stack: Stack) -> tuple[bytes, bytes]:
    consumer = Consumer(
        {"bootstrap.servers": stack.kafka, "group.id": "poison-src", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition("demo.shop.products", p, 0) for p in range(3)])
        while True:
            msg = consumer.poll(10)
            assert msg is not None, "demo.shop.products is empty"
            key, value = msg.key(), msg.value()
            if not msg.error() and value is not None:
                assert key is not None, "a demo product event has a key"
                return key, value
    finally:
        consumer.close()


def test_poison_pills_become_error_records_and_tombstone_is_not(stack: Stack, tmp_path: Path) -> None:
    topic = f"poison-{uuid.uuid4().hex[:8]}"
    key, value = real_product_event(stack)
    doc = json.loads(value)
    unknown_op = json.loads(value)
    unknown_op["payload"]["op"] = "x"
    second = json.loads(value)
    second["payload"]["after"]["sku"] = "POISON-NEIGHBOUR"
    second_key = json.loads(key)
    second_key["payload"]["sku"] = "POISON-NEIGHBOUR"
    producer = Producer({"bootstrap.servers": stack.kafka})
    sequence = [
        (key, value),  # 0 valid
        (b'{"id": 1}', b"{not json"),  # 1 bad JSON
        (key, json.dumps(unknown_op).encode()),  # 2 unknown op
        (key, None),  # 3 tombstone: not an error
        (json.dumps(second_key).encode(), json.dumps(second).encode()),  # 4 valid neighbour
    ]
    for k, v in sequence:
        producer.produce(topic, key=k, value=v, partition=0)
    producer.flush(10)
    dbname = fresh_target("poison")
    env = env_for(
        stack, dbname, f"poison-{uuid.uuid4().hex[:6]}", REPLICATOR_MAPPING=str(poison_spec(tmp_path, topic))
    )
    done = run_cli(env, "run", "--stop-when-caught-up")
    assert done.returncode == 0, done.stderr[-2000:]
    errors = error_records(stack, dbname)
    assert [(r["kafka_offset"], r["rule_id"]) for r in errors] == [(1, "decode"), (2, "decode")]
    assert "JSON" in errors[0]["message"] or "json" in errors[0]["message"]
    assert "'x'" in errors[1]["message"] or '"x"' in errors[1]["message"]
    assert bytes(errors[0]["raw_value"]) == b"{not json"
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        skus = {r[0] for r in conn.execute("SELECT sku FROM catalog.product").fetchall()}
    assert skus == {doc["payload"]["after"]["sku"], "POISON-NEIGHBOUR"}
    assert stored_offsets(stack, dbname, env["REPLICATOR_KAFKA__GROUP_ID"]) == {(topic, 0): 5}


def test_on_error_halt_stops_with_cursor_kept(stack: Stack, tmp_path: Path) -> None:
    topic = f"halt-{uuid.uuid4().hex[:8]}"
    key, value = real_product_event(stack)
    producer = Producer({"bootstrap.servers": stack.kafka})
    producer.produce(topic, key=key, value=value, partition=0)
    producer.flush(10)
    producer.produce(topic, key=key, value=b"{broken", partition=0)
    producer.flush(10)
    dbname = fresh_target("halt")
    group = f"halt-{uuid.uuid4().hex[:6]}"
    env = env_for(
        stack,
        dbname,
        group,
        REPLICATOR_MAPPING=str(poison_spec(tmp_path, topic)),
        REPLICATOR_BATCH__MAX_EVENTS="1",
    )
    done = run_cli(env, "run", "--stop-when-caught-up", "--on-error", "halt")
    assert done.returncode == 1
    assert "--on-error=halt" in done.stderr and len(done.stderr.strip().splitlines()[-1]) > 0
    assert stored_offsets(stack, dbname, group) == {(topic, 0): 1}  # the good event, not the bad one
    assert error_records(stack, dbname) == []


@pytest.mark.parametrize("setting", ["REPLICATOR_TARGET__PASSWORD"])
def test_wrong_target_password_is_one_line_fatal(stack: Stack, setting: str) -> None:
    env = env_for(stack, "shop_target", f"pw-{uuid.uuid4().hex[:6]}", **{setting: "sentinel-pw-0815"})
    done = run_cli(env, "run", "--stop-when-caught-up", timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("replicator: error:") and "password authentication failed" in last
    assert "sentinel-pw-0815" not in done.stderr + done.stdout


def test_topic_created_after_start_is_picked_up(stack: Stack, tmp_path: Path) -> None:
    """A mapped topic that does not exist when the daemon starts (a snapshot still starting) is
    consumed once it appears, within seconds, beside topics that existed from the start."""
    topic = f"late-{uuid.uuid4().hex[:8]}"
    key, value = real_product_event(stack)
    dbname = fresh_target("late")
    group = f"late-{uuid.uuid4().hex[:6]}"
    spec = poison_spec(tmp_path, topic, keep=("customer", "customer_pii"))
    env = env_for(stack, dbname, group, REPLICATOR_MAPPING=str(spec))
    log = tmp_path / "d.log"
    with daemon(env, log):
        wait_until(
            lambda: "event=batch" in log.read_text(),
            180,  # a loaded machine can take a minute to start and join
            "the daemon to subscribe",
        )
        producer = Producer({"bootstrap.servers": stack.kafka})
        producer.produce(topic, key=key, value=value, partition=0)
        producer.flush(10)
        wait_until(
            lambda: stored_offsets(stack, dbname, group).get((topic, 0)) == 1, 60, "the late topic's event"
        )


def test_retention_gap_halts_instead_of_skipping(stack: Stack, tmp_path: Path) -> None:
    """Matrix 21: the target-stored offset is below the log start (events deleted before they were
    applied): the run halts with a one-line reason and changes nothing, never skips ahead."""
    from confluent_kafka.admin import AdminClient

    topic = f"gap-{uuid.uuid4().hex[:8]}"
    key, value = real_product_event(stack)
    producer = Producer({"bootstrap.servers": stack.kafka})
    for _ in range(3):
        producer.produce(topic, key=key, value=value, partition=0)
    producer.flush(10)
    dbname = fresh_target("gap")
    group = f"gap-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group, REPLICATOR_MAPPING=str(poison_spec(tmp_path, topic)))
    assert run_cli(env, "run", "--stop-when-caught-up").returncode == 0
    assert stored_offsets(stack, dbname, group) == {(topic, 0): 3}
    with psycopg.connect(
        stack.target_admin(dbname)
    ) as conn:  # as if the target were restored from an old backup
        conn.execute("UPDATE replicator.checkpoint SET next_offset = 1 WHERE group_id = %s", (group,))
    admin = AdminClient({"bootstrap.servers": stack.kafka})
    for future in admin.delete_records([TopicPartition(topic, 0, 2)]).values():
        future.result(timeout=30)
    done = run_cli(env, "run", "--stop-when-caught-up")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert f"retention gap on {topic}[0]" in last and "below the log start 2" in last
    assert stored_offsets(stack, dbname, group) == {(topic, 0): 1}
