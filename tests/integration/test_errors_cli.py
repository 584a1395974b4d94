"""`replicator errors list` filters and `replicator errors show` on the real stack: after a run
of the demo with deliberately bad rows of two rules inserted, every listed record matches the
filter it was asked for, and `show` prints the stored raw event, readable (the JSON converter's
envelope as JSON), with its Kafka position."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import psycopg

from tests.integration.pipeline import converge, daemon, env_for, fresh_target, run_cli
from tests.integration.stack import Stack


def test_errors_list_filters_and_show_prints_the_raw_event(stack: Stack, tmp_path: Path) -> None:
    dbname = fresh_target("errcli")
    group = f"errcli-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group)
    tag = uuid.uuid4().hex[:6].upper()
    with daemon(env, tmp_path / "d.log"):
        with psycopg.connect(stack.source_admin()) as conn:
            for i in range(2):  # rules product (CHECK price_cents >= 0) and product.sku (over varchar(64))
                conn.execute(
                    "INSERT INTO shop.products (sku, name, price) VALUES (%s, 'n', -1)", (f"NEG{i}-{tag}",)
                )
            conn.execute(
                "INSERT INTO shop.products (sku, name, price) VALUES (%s, 'l', 1)", (f"L-{tag}-" + "X" * 70,)
            )
        converge(stack, dbname, group)
    listed = run_cli(env, "errors", "list", "--limit", "1000", "--json")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert records, "the demo's bad rows left no error records"
    rule, table = Counter((r["rule_id"], r["target_table"]) for r in records).most_common(1)[0][0]

    by_rule = json.loads(run_cli(env, "errors", "list", "--limit", "1000", "--rule", rule, "--json").stdout)
    assert by_rule and {r["rule_id"] for r in by_rule} == {rule}
    assert len(by_rule) == sum(1 for r in records if r["rule_id"] == rule)
    by_table = json.loads(
        run_cli(env, "errors", "list", "--limit", "1000", "--table", table, "--json").stdout
    )
    assert {r["target_table"] for r in by_table} == {table}
    none = run_cli(env, "errors", "list", "--rule", "no.such.rule", "--json")
    assert json.loads(none.stdout) == []

    first = by_rule[0]
    shown = run_cli(env, "errors", "show", str(first["id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)
    assert (row["topic"], row["partition"], row["kafka_offset"]) == (
        first["topic"],
        first["partition"],
        first["kafka_offset"],
    )
    value = row["raw_value"]
    assert isinstance(value, dict) and "hex" not in value, value
    envelope = value.get("payload", value)
    assert envelope["op"] in ("c", "u", "r", "d") and "source" in envelope, envelope
    text = run_cli(env, "errors", "show", str(first["id"]))
    assert f"--offset {first['kafka_offset']}" in text.stdout and rule in text.stdout, text.stdout

    missing = run_cli(env, "errors", "show", "999999999")
    assert missing.returncode != 0 and "no error record #999999999" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr
