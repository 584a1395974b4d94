"""`replicator errors list` filters and `replicator errors show` on the real stack: after a run
of the demo with deliberately bad rows of two rules inserted, every listed record matches the
filter it was asked for, `--counts` counts every match per table, rule and SQLSTATE, and `show`
prints the stored raw event, readable (the JSON converter's envelope as JSON), with its Kafka
position."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.integration.pipeline import converge, daemon, env_for, fresh_target, run_cli
from tests.integration.stack import Stack, one_row


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
    listed = run_cli(env, "errors", "list", "--limit", "1000000", "--json")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert records, "the demo's bad rows left no error records"
    rule, table = Counter((r["rule_id"], r["target_table"]) for r in records).most_common(1)[0][0]

    by_rule = json.loads(
        run_cli(env, "errors", "list", "--limit", "1000000", "--rule", rule, "--json").stdout
    )
    assert by_rule and {r["rule_id"] for r in by_rule} == {rule}
    assert len(by_rule) == sum(1 for r in records if r["rule_id"] == rule)
    by_table = json.loads(
        run_cli(env, "errors", "list", "--limit", "1000000", "--table", table, "--json").stdout
    )
    assert {r["target_table"] for r in by_table} == {table}
    none = run_cli(env, "errors", "list", "--rule", "no.such.rule", "--json")
    assert json.loads(none.stdout) == []

    # --counts: every matching record counted (past --limit), per target table, rule and SQLSTATE
    expected = Counter((r["target_table"], r["rule_id"], r["sqlstate"]) for r in records)
    counts = json.loads(run_cli(env, "errors", "list", "--limit", "1", "--counts", "--json").stdout)
    assert {(c["target_table"], c["rule_id"], c["sqlstate"]): c["records"] for c in counts} == expected
    lines = run_cli(env, "errors", "list", "--counts", "--rule", rule).stdout.splitlines()
    assert lines[0] == f"{len(by_rule)} error record{'' if len(by_rule) == 1 else 's'} (open)", lines
    assert all(line.split()[2] == rule for line in lines[1:]) and len(lines) > 1, lines

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
    assert f"--bootstrap-server {stack.kafka} " in text.stdout, text.stdout  # the configured brokers

    missing = run_cli(env, "errors", "show", "999999999")
    assert missing.returncode != 0 and "no error record #999999999" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr


def test_errors_retry_after_a_target_fix_applies_the_fixed_rows_and_nothing_else(
    stack: Stack, tmp_path: Path
) -> None:
    """Retry goes through the guarded apply: a record whose row moved on since is a no-op, a row
    refused again stays one open record, a fixed row lands; resolve closes one without applying."""
    dbname = fresh_target("errretry")
    group = f"errretry-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group)
    tag = uuid.uuid4().hex[:6].upper()
    stays, moves, long_sku = f"NEG-{tag}", f"MOVED-{tag}", f"L-{tag}-" + "X" * 70
    with daemon(env, tmp_path / "d.log"):
        with psycopg.connect(stack.source_admin()) as conn:
            conn.execute("INSERT INTO shop.products (sku, name, price) VALUES (%s, 'n', -1)", (stays,))
            conn.execute("INSERT INTO shop.products (sku, name, price) VALUES (%s, 'm', -2)", (moves,))
            conn.execute("INSERT INTO shop.products (sku, name, price) VALUES (%s, 'l', 1)", (long_sku,))
        converge(stack, dbname, group)  # its own batch: the update below must not be reduced into it
        with psycopg.connect(stack.source_admin()) as conn:
            conn.execute(
                "UPDATE shop.products SET price = 2, name = 'fixed at the source' WHERE sku = %s", (moves,)
            )
        converge(stack, dbname, group)

    def open_records() -> list[dict[str, Any]]:
        """This test's open records (a long sku has no key text: found by its raw event)."""
        with psycopg.connect(stack.target_admin(dbname), row_factory=psycopg.rows.dict_row) as conn:
            return conn.execute(
                "SELECT id, rule_id, sqlstate, key FROM replicator.error_record"
                " WHERE resolved_at IS NULL AND target_table = 'catalog.product'"
                " AND convert_from(raw_value, 'UTF8') LIKE %s ORDER BY id",
                (f"%{tag}%",),
            ).fetchall()

    before = open_records()
    assert sorted((r["rule_id"], r["sqlstate"]) for r in before) == [
        ("product", "23514"),
        ("product", "23514"),
        ("product.sku", None),
    ], before

    dry = run_cli(env, "errors", "retry", "--all", "--dry-run", "--json")
    assert json.loads(dry.stdout)["chosen"] >= 3, dry.stdout
    failing_dry = {int(i) for i in json.loads(dry.stdout)["failing"]}
    assert next(r["id"] for r in before if r["rule_id"] == "product.sku") in failing_dry

    stay_id, moved_id = (
        next(r["id"] for r in before if r["key"] == json.dumps([sku])) for sku in (stays, moves)
    )
    again = run_cli(env, "errors", "retry", str(stay_id), str(moved_id), "--json")
    assert again.returncode == 1, again.stderr
    first = json.loads(again.stdout)
    assert first["closed"] == [moved_id] and set(first["failing"]) == {str(stay_id)}, first
    assert "check constraint" in first["failing"][str(stay_id)]
    assert sum(first["applied"].values()) == 0 and first["skipped_older"] == 1, "the moved-on row is a no-op"
    assert first["closed_older"] == 1, first  # the closed record is counted a no-op, not applied
    assert [r["id"] for r in open_records()] == sorted(r["id"] for r in before if r["id"] != moved_id)

    with psycopg.connect(stack.target_admin(dbname)) as conn:
        (check,) = one_row(
            conn.execute(
                "SELECT conname FROM pg_constraint"
                " WHERE conrelid = 'catalog.product'::regclass AND contype = 'c'"
            )
        )
        conn.execute(sql.SQL("ALTER TABLE catalog.product DROP CONSTRAINT {}").format(sql.Identifier(check)))
    fixed = run_cli(env, "errors", "retry", str(stay_id), "--json")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    done = json.loads(fixed.stdout)
    assert done["closed"] == [stay_id] and not done["failing"], done
    assert sum(done["applied"].values()) == 1 and done["skipped_older"] == 0, done
    assert done["closed_older"] == 0, done
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        rows: dict[str, int] = dict(
            conn.execute(
                "SELECT sku, price_cents FROM catalog.product WHERE sku = ANY(%s)", ([stays, moves],)
            ).fetchall()
        )
    assert rows == {stays: -100, moves: 200}, "the fixed row landed; the moved-on row kept its newer version"

    (left,) = open_records()
    assert left["rule_id"] == "product.sku"
    closed = run_cli(env, "errors", "resolve", str(left["id"]), "--reason", "the sku is wrong at the source")
    assert closed.returncode == 0, closed.stderr
    assert open_records() == []
    resolved = json.loads(
        run_cli(env, "errors", "list", "--state", "resolved", "--limit", "1000000", "--json").stdout
    )
    notes = {r["id"]: r["resolution"] for r in resolved}
    assert "the sku is wrong at the source" in notes[left["id"]]
    assert "retried in run" in notes[stay_id] and "retried in run" in notes[moved_id]
    closed_by = {r["id"]: r["resolved_by"] for r in resolved}
    assert (closed_by[left["id"]], closed_by[stay_id], closed_by[moved_id]) == ("operator", "retry", "retry")
    twice = run_cli(env, "errors", "resolve", str(left["id"]), "--reason", "again")
    assert twice.returncode != 0 and f"#{left['id']}" in twice.stderr and "Traceback" not in twice.stderr
