"""Events of a source table no rule reads, on a topic the spec reads (a routing transform merging
tables; Debezium's shared topic names, see test_shared_topic.py), on the real stack: they are not
applied, and the batch that reads past them counts them in the control schema's `unread_table`
in its own transaction, so a batch killed before its commit counts nothing and its rerun counts
each event once; `replicator status` (text and --json) names the table, its topic, how many events
were skipped and the fix.

The records are real Debezium events of the demo's `shop.products` topic, copied onto a topic of
this test; the copies said to come from `shop.products_old` stand for a merged table."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
from confluent_kafka import Producer

from tests.integration.pipeline import env_for, fresh_target, run_cli, stored_offsets
from tests.integration.stack import Stack
from tests.integration.test_daemon_errors import poison_spec, real_product_event

OLD = "shop.products_old"


def unread_rows(stack: Stack, dbname: str, group: str) -> list[tuple[str, int, str, int]]:
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        return [
            (t, p, s, n)
            for t, p, s, n in conn.execute(
                "SELECT topic, partition, source_table, events FROM replicator.unread_table"
                " WHERE group_id = %s ORDER BY topic, partition, source_table",
                (group,),
            ).fetchall()
        ]


def test_a_merged_table_no_rule_reads_is_counted_once_with_its_batch_and_shown_by_status(
    stack: Stack, tmp_path: Path
) -> None:
    topic = f"merged-{uuid.uuid4().hex[:8]}"
    key, value = real_product_event(stack)
    producer = Producer({"bootstrap.servers": stack.kafka})
    producer.produce(topic, key=key, value=value, partition=0)  # shop.products: a rule reads it
    for n in range(2):
        doc, k = json.loads(value), json.loads(key)
        doc["payload"]["source"]["table"] = "products_old"
        doc["payload"]["after"]["sku"] = k["payload"]["sku"] = f"OLD-{n}"
        producer.produce(topic, key=json.dumps(k).encode(), value=json.dumps(doc).encode(), partition=0)
    producer.flush(10)
    dbname = fresh_target("unread")
    group = f"unread-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group, REPLICATOR_MAPPING=str(poison_spec(tmp_path, topic)))
    assert run_cli(env, "init").returncode == 0
    killed = run_cli({**env, "REPLICATOR_FAILPOINT": "before_target_commit"}, "run", "--stop-when-caught-up")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert stored_offsets(stack, dbname, group) == {} and unread_rows(stack, dbname, group) == []
    done = run_cli(env, "run", "--stop-when-caught-up")
    assert done.returncode == 0, done.stderr[-2000:]
    assert stored_offsets(stack, dbname, group) == {(topic, 0): 3}
    assert unread_rows(stack, dbname, group) == [(topic, 0, OLD, 2)]  # once, though read twice
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        skus = {r[0] for r in conn.execute("SELECT sku FROM catalog.product").fetchall()}
    assert skus == {json.loads(value)["payload"]["after"]["sku"]}  # the merged table's rows are not applied
    shown = run_cli(env, "status", "--json")
    assert "Traceback" not in shown.stderr, shown.stderr
    (unread,) = json.loads(shown.stdout)["unread_tables"]
    assert (unread["source_table"], unread["events"], unread["topics"], unread["read_now"]) == (
        OLD,
        2,
        [topic],
        False,
    )
    assert unread["fix"] == (
        f"add a rule for {OLD} to the spec to replicate it, or drop it from the connector's"
        " table.include.list (and the publication) to stop capturing it"
    )
    text = run_cli(env, "status").stdout
    assert "source tables no rule reads (their events on topics the spec reads are NOT applied):" in text
    assert f"  {OLD:34} 2 events skipped on {topic} (first " in text, text
