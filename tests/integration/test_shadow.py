"""Shadow mode is a faithful dry run (issue: shadow).

Proves: from the same target state, the shadow's predicted diffs over a range
equal what the live run then writes over the same range (captured by an
AFTER trigger): same rows, same kinds, same field values, same error
records; the shadow runs under a role without DML on the data tables and
leaves the data byte-for-byte unchanged; the summary counts equal the JSON
Lines report, and every run's review (HTML and Markdown) shows those counts
per table and its error records (the first run's page also as headless
Chromium builds it).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import psycopg

from replicator.config import load_settings
from replicator.connect.client import ConnectClient
from replicator.core.model import TableRef
from replicator.core.report import KINDS, offsets_read
from replicator.source.signal import write_fence
from tests.integration.pipeline import (
    CONNECTOR,
    assert_converged_equal,
    converge,
    daemon,
    demo_plan,
    env_for,
    fresh_target,
    run_cli,
    wait_until,
    workload,
)
from tests.integration.stack import Stack, one_row
from tests.integration.test_daemon_apply import install_audit
from tests.integration.test_report_browser import chromium
from tests.unit.test_report import parse

DATA_TABLES = ["crm.customer", "crm.customer_pii", "catalog.product", 'sales."order"', "sales.order_line"]
ONE_BATCH = {
    "REPLICATOR_BATCH__MAX_EVENTS": "1000000",
    "REPLICATOR_BATCH__MAX_MS": "600000",
    "REPLICATOR_BATCH__MAX_BYTES": "1000000000",
}


def checksum(stack: Stack, dbname: str) -> dict[str, str]:
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        return {
            t: one_row(
                conn.execute(
                    f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x"
                )
            )[0]
            for t in DATA_TABLES
        }


def source_in_kafka(stack: Stack) -> None:
    """Everything the source committed so far is in Kafka (no consumer involved)."""
    settings = load_settings(None)
    _, lsn = write_fence(settings.source, TableRef("shop", "debezium_signal"))
    client = ConnectClient(stack.connect_url)
    wait_until(lambda: client.flushed_lsn(CONNECTOR) >= lsn, 120, "Connect to flush the fence")


def run_shadow(
    env: dict[str, str], report_dir: Path, *args: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`replicator shadow` under the read-only shadow role; its summary and its JSON Lines diffs."""
    shadow_env = {
        **env,
        "REPLICATOR_TARGET__USER": "replicator_shadow",
        "REPLICATOR_TARGET__PASSWORD": "shadow",
    }
    done = run_cli(shadow_env, "shadow", *args, "--report-dir", str(report_dir), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    diffs = [json.loads(line) for line in Path(summary["report"]).read_text().splitlines()]
    assert_review_shows(summary, diffs)
    return summary, diffs


def assert_review_shows(summary: dict[str, Any], diffs: list[dict[str, Any]]) -> None:
    """The run's review twins (Markdown, HTML) show its counts per table and its error records
    (the page in a browser: test_report_browser.py)."""
    page = parse(Path(summary["review_html"]).read_text(encoding="utf-8"))
    markdown = Path(summary["review"]).read_text(encoding="utf-8")
    for table, counts in summary["diffs"].items():
        n = [counts.get(k, 0) for k in KINDS]
        assert "|".join([table, *map(str, n), str(sum(n))]) in page.rows, (table, counts)
        assert f"| `{table}` | " + " | ".join(map(str, [*n, sum(n)])) + " |" in markdown
    errors = [d for d in diffs if d["kind"] in ("error", "truncated")]
    assert len([r for r in page.rows if r.startswith(("error|", "truncated|"))]) == min(len(errors), 500)


def live_writes(stack: Stack, dbname: str) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """The audit trigger's log as (table, key text) -> (operation, row); one write per key expected."""
    keys = {str(t.target): t.key for t in demo_plan(stack, dbname).tables}
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        rows = conn.execute("SELECT tbl, op, row_data FROM audit.writes ORDER BY id").fetchall()
    out: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for tbl, op, row in rows:
        key = json.dumps([row[k] for k in keys[tbl]], ensure_ascii=False, separators=(",", ":"))
        assert (tbl, key) not in out, f"one batch writes each key once: {tbl} {key}"
        out[(tbl, key)] = (op, row)
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if a is None or b is None:
        return a is None and b is None
    try:
        return Decimal(str(a)) == Decimal(str(b))
    except (InvalidOperation, ValueError):
        pass
    try:  # timestamps: PostgreSQL's JSON drops trailing zeros of the fraction
        return datetime.fromisoformat(str(a)) == datetime.fromisoformat(str(b))
    except ValueError:
        return str(a) == str(b)


def test_shadow_predicts_exactly_what_the_live_run_writes(stack: Stack, tmp_path: Path) -> None:
    dbname = fresh_target("shadow")
    live = f"live-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, live)
    with daemon(env, tmp_path / "live0.log"):
        converge(stack, dbname, live)
    done = run_cli(env, "init", "--shadow-role", "replicator_shadow")
    assert done.returncode == 0, done.stderr

    tag = uuid.uuid4().hex[:6]
    workload(seconds=3, rate=120, seed=23)
    with psycopg.connect(stack.source_admin()) as conn:  # a would-be error record and a truncation
        conn.execute("INSERT INTO shop.products (sku, name, price) VALUES (%s, 'neg', -3)", (f"SNEG-{tag}",))
        conn.execute(
            "INSERT INTO shop.products (sku, name, price) VALUES (%s, %s, 1)", (f"SLONG-{tag}", "L" * 130)
        )
    try:
        predicts_what_the_live_run_writes(stack, tmp_path, dbname, live, env)
    finally:
        leave_no_bad_rows(stack, [f"SNEG-{tag}", f"SLONG-{tag}"])


def leave_no_bad_rows(stack: Stack, skus: list[str]) -> None:
    """The test's products leave the shared demo source, or (if a workload's order line points at
    one since) stay with a price the target accepts: a negative price left there is an error record
    for every later reader of the demo (a new connector's snapshot: test_avro_path.py)."""
    with psycopg.connect(stack.source_admin()) as conn:
        conn.execute(
            "DELETE FROM shop.products p WHERE sku = ANY(%s)"
            " AND NOT EXISTS (SELECT 1 FROM shop.order_lines l WHERE l.sku = p.sku)",
            (skus,),
        )
        conn.execute("UPDATE shop.products SET price = 1 WHERE sku = ANY(%s) AND price < 0", (skus,))


def predicts_what_the_live_run_writes(
    stack: Stack, tmp_path: Path, dbname: str, live: str, env: dict[str, str]
) -> None:
    source_in_kafka(stack)
    before = checksum(stack, dbname)
    summary, diffs = run_shadow({**env, **ONE_BATCH}, tmp_path, "--stop-when-caught-up", "--from-group", live)
    assert checksum(stack, dbname) == before, "shadow mode changed target data"
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        for t in DATA_TABLES:
            for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                (has,) = one_row(
                    conn.execute("SELECT has_table_privilege('replicator_shadow', %s, %s)", (t, privilege))
                )
                assert not has, f"shadow role has {privilege} on {t}"

    counted: dict[str, dict[str, int]] = {}
    for d in diffs:
        counted.setdefault(d["table"], {}).setdefault(d["kind"], 0)
        counted[d["table"]][d["kind"]] += 1
    assert counted == summary["diffs"], "summary counts must equal the JSON Lines"
    predicted = {(d["table"], d["key"]): d for d in diffs if d["kind"] in ("insert", "update", "delete")}
    predicted_errors = {
        (d["topic"], d["partition"], d["offset"], d["rule_ids"][0], d["sqlstate"])
        for d in diffs
        if d["kind"] == "error"
    }
    assert predicted and any(d["kind"] == "update" for d in predicted.values())
    assert any(s == "23514" for *_, s in predicted_errors), "the CHECK violation is predicted"
    # The real run's review page as a browser builds it: the counts and the would-be error records.
    dom = parse(chromium(tmp_path / "browser", "--dump-dom", Path(summary["review_html"]).as_uri()).stdout)
    for table, counts in summary["diffs"].items():
        assert any(r.startswith(f"{table}|{counts.get('insert', 0)}|") for r in dom.rows), table
    assert any(r.startswith("error|") and "|23514|" in r for r in dom.rows)

    install_audit(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        (last_error,) = one_row(conn.execute("SELECT coalesce(max(id), 0) FROM replicator.error_record"))
    live_run = run_cli({**env, **ONE_BATCH}, "run", "--stop-when-caught-up")
    assert live_run.returncode == 0, live_run.stderr[-3000:]

    actual = live_writes(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        live_errors = {
            tuple(r)
            for r in conn.execute(
                "SELECT topic, partition, kafka_offset, rule_id, sqlstate FROM replicator.error_record"
                " WHERE id > %s AND kind = 'error'",
                (last_error,),
            ).fetchall()
        }
    live_only = sorted(set(actual) - set(predicted))[:5]
    shadow_only = sorted(set(predicted) - set(actual))[:5]
    assert set(actual) == set(predicted), f"live-only: {live_only} shadow-only: {shadow_only}"
    kinds = {"INSERT": "insert", "UPDATE": "update", "DELETE": "delete"}
    for k, (op, row) in actual.items():
        d = predicted[k]
        assert kinds[op] == d["kind"], (k, op, d["kind"])
        if op != "DELETE":
            for column, change in d["columns"].items():
                assert same(change["after"], row[column]), (k, column, change["after"], row[column])
    assert live_errors == predicted_errors

    # a second preview starts where the live group stands now, not where the first one ended
    # (trial 4: it previewed 11,911 old events from its own old positions)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        stands = {
            f"{t}[{p}]": o
            for t, p, o in conn.execute(
                "SELECT topic, partition, next_offset FROM replicator.checkpoint WHERE group_id = %s", (live,)
            ).fetchall()
        }
    again, _ = run_shadow({**env, **ONE_BATCH}, tmp_path, "--stop-when-caught-up", "--from-group", live)
    # the live group also stands on the signal topic (it reads the drain fences there); the preview
    # reads only the spec's topics, and its range and review name only those (trial 15)
    signal = {k for k in stands if k.startswith("demo.shop.debezium_signal[")}
    assert signal, stands
    assert {k: start for k, (start, _) in again["range"].items()} == {
        k: o for k, o in stands.items() if k not in signal
    }
    review = Path(again["review"]).read_text(encoding="utf-8")
    assert "debezium_signal" not in review and "debezium_signal" not in str(summary["range"])


def keys_touched_after(stack: Stack, dbname: str, since: dict[str, list[int]]) -> set[tuple[str, str]]:
    """Target keys that events beyond the previewed offsets map to (through the demo plan)."""
    from confluent_kafka import Consumer, TopicPartition

    from replicator.core.decode import JsonDecoder
    from replicator.core.intents import key_text, to_intents
    from replicator.core.model import ChangeEvent, KafkaRef

    plan = demo_plan(stack, dbname)
    decoder = JsonDecoder()
    consumer = Consumer(
        {"bootstrap.servers": stack.kafka, "group.id": "after-preview", "enable.auto.commit": False}
    )
    events = []
    try:
        for name, (_start, end) in since.items():
            topic, partition = name[:-1].rsplit("[", 1)
            tp = TopicPartition(topic, int(partition), end)
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            consumer.assign([tp])
            while end < high:
                msg = consumer.poll(10)
                assert msg is not None and not msg.error()
                offset = cast(int, msg.offset())
                end = offset + 1
                decoded = decoder.decode(
                    KafkaRef(topic, cast(int, msg.partition()), offset), msg.key(), msg.value()
                )
                if isinstance(decoded, ChangeEvent):
                    events.append(decoded)
    finally:
        consumer.close()
    intents = to_intents(events, plan)
    return {(str(t), key_text(i.key)) for t, items in intents.by_table.items() for i in items}


def test_source_changes_after_the_preview_are_applied_live_and_the_rest_matches(
    stack: Stack, tmp_path: Path
) -> None:
    """Defined behaviour: a preview covers the offsets in its report's `range`. Changes that reach
    Kafka later are applied by the live run as usual; for every key they do not touch, the live
    run writes exactly what the preview predicted."""
    dbname = fresh_target("shadow2")
    live = f"live2-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, live)
    with daemon(env, tmp_path / "live0.log"):
        converge(stack, dbname, live)
    assert run_cli(env, "init", "--shadow-role", "replicator_shadow").returncode == 0
    workload(seconds=2, rate=120, seed=31)
    source_in_kafka(stack)
    summary, diffs = run_shadow({**env, **ONE_BATCH}, tmp_path, "--stop-when-caught-up", "--from-group", live)
    assert summary["range"] and all(a <= b for a, b in summary["range"].values())
    predicted = {(d["table"], d["key"]): d for d in diffs if d["kind"] in ("insert", "update", "delete")}

    workload(seconds=2, rate=120, seed=32)  # changes after the preview
    source_in_kafka(stack)
    later = keys_touched_after(stack, dbname, summary["range"])
    assert later, "the second workload changed something"
    install_audit(stack, dbname)
    assert run_cli({**env, **ONE_BATCH}, "run", "--stop-when-caught-up").returncode == 0

    actual = live_writes(stack, dbname)
    untouched = {k: d for k, d in predicted.items() if k not in later}
    assert untouched, "some previewed keys were not touched again"
    kinds = {"INSERT": "insert", "UPDATE": "update", "DELETE": "delete"}
    for k, d in untouched.items():
        assert k in actual, f"previewed write missing from the live run: {k}"
        op, row = actual[k]
        assert kinds[op] == d["kind"], (k, op, d["kind"])
        if op != "DELETE":
            for column, change in d["columns"].items():
                assert same(change["after"], row[column]), (k, column)
    assert set(actual) - set(predicted) <= later, "live-only writes come only from changes after the preview"
    assert_converged_equal(stack, dbname)


def test_shadow_previews_a_time_range(stack: Stack, tmp_path: Path) -> None:
    """`--from T0 --to T1` previews exactly the events stamped in [T0, T1): the report's range is
    the offsets of those times, and every diff comes from inside it."""
    from datetime import UTC, datetime

    from confluent_kafka import Consumer, TopicPartition

    dbname = fresh_target("range")
    live = f"range-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, live)
    with daemon(env, tmp_path / "live0.log"):
        converge(stack, dbname, live)
    assert run_cli(env, "init", "--shadow-role", "replicator_shadow").returncode == 0
    t0 = datetime.now(UTC)
    workload(seconds=2, rate=100, seed=41)
    source_in_kafka(stack)
    t1 = datetime.now(UTC)
    workload(seconds=2, rate=100, seed=42)
    source_in_kafka(stack)

    consumer = Consumer({"bootstrap.servers": stack.kafka, "group.id": "range-check"})
    try:

        def at(moment: datetime) -> dict[str, int]:
            ms = int(moment.timestamp() * 1000)
            tps = [
                TopicPartition(f"demo.shop.{t}", p, ms)
                for t in ("customers", "products", "orders", "order_lines")
                for p in range(3)
            ]
            out = {}
            for tp in consumer.offsets_for_times(tps, timeout=10):
                high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]
                out[f"{tp.topic}[{tp.partition}]"] = tp.offset if tp.offset >= 0 else high
            return out

        start, end = at(t0), at(t1)
    finally:
        consumer.close()
    shadow_env = {
        **env,
        "REPLICATOR_TARGET__USER": "replicator_shadow",
        "REPLICATOR_TARGET__PASSWORD": "shadow",
    }

    def preview(*args: str) -> tuple[str, dict[str, Any]]:
        """The run's text output and, with --json, its summary."""
        done = run_cli(
            shadow_env,
            "shadow",
            "--from",
            t0.isoformat(),
            "--to",
            t1.isoformat(),
            "--shadow-group",
            f"range-shadow-{uuid.uuid4().hex[:6]}",
            "--report-dir",
            str(tmp_path),
            *args,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout, json.loads(done.stdout[done.stdout.index("{") :]) if args else {}

    _, summary = preview("--json")
    assert summary["range"] == {k: [start[k], end[k]] for k in summary["range"]}
    diffs = [json.loads(line) for line in Path(summary["report"]).read_text().splitlines()]
    assert diffs, "the first workload is in the range"
    # every offset of the range is a record the run read (trial 7: 461 events for 530 offsets): a
    # change event, the tombstone Debezium sends after each delete, or a record of no table
    read, offsets = summary["totals"], sum(b - a for a, b in summary["range"].values())
    assert read["events"] + read["tombstones"] + read["not_table_data"] == offsets, (read, offsets)
    said = offsets_read(summary["range"], read)
    assert said and said.startswith(f"{offsets:,} offsets read: {read['events']:,} change events")
    assert said in Path(summary["review"]).read_text(encoding="utf-8")
    for d in diffs:
        if d["offset"] is not None:
            name = f"{d['topic']}[{d['partition']}]"
            assert start[name] <= d["offset"] < end[name], (name, d["offset"], start[name], end[name])
    # The live group applies the window; a preview of it again reads its events and finds their row
    # changes older than the target's versions: only the demo's bad rows are predicted again, as
    # error records (trial: the review said "no events previewed" beside ~3,000 offsets).
    with daemon(env, tmp_path / "live1.log"):
        converge(stack, dbname, live)
    _, again = preview("--json")
    events, older = again["totals"]["events"], again["totals"]["skipped_older"]
    assert 0 < events <= sum(b - a for a, b in again["range"].values()) and older > 0
    assert {k for counts in again["diffs"].values() for k in counts} <= {"error"}, again["diffs"]
    # whether the window held one of the workload's bad rows depends on the demo database's state
    if again["diffs"]:
        said = f"Besides these, {older} row changes in the events read were already applied in the target"
    else:
        said = f"no diffs: the {events} events read were already applied in the target ({older} row changes"
    assert said in Path(again["review"]).read_text(encoding="utf-8")


def test_shadow_previews_a_cascading_delete_under_the_read_only_role(stack: Stack, tmp_path: Path) -> None:
    """A target ON DELETE CASCADE key guards the parent's delete (held until the child table has
    applied its own deletes). Under the shadow role, which may only read data tables, the preview
    reads the children as it left them (its clones over the real rows) and locks only its clones
    (trial 15: `permission denied` on the live child table; with UPDATE granted, every held
    parent delete missing from the preview). Here a product and its order lines go in one source
    transaction: the preview names the three deletes, nothing held at the end, and the live run
    then deletes the same rows."""
    dbname = fresh_target("cascade")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE sales.order_line ADD FOREIGN KEY (sku) REFERENCES catalog.product (sku)"
            " ON DELETE CASCADE"
        )
    sku = f"SKU-CASCADE-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.source_admin()) as conn:
        (order,) = one_row(conn.execute("SELECT max(id) FROM shop.orders"))
        conn.execute("INSERT INTO shop.products (sku, name, price) VALUES (%s, 'cascading', 5)", (sku,))
        conn.execute(
            "INSERT INTO shop.order_lines (order_id, line_no, sku, qty, unit_price)"
            " VALUES (%s, 100, %s, 1, 5), (%s, 101, %s, 2, 5)",
            (order, sku, order, sku),
        )
    live = f"cascade-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, live)
    with daemon(env, tmp_path / "live0.log"):
        converge(stack, dbname, live)
    assert run_cli(env, "init", "--shadow-role", "replicator_shadow").returncode == 0
    with psycopg.connect(stack.source_admin()) as conn:  # one transaction, children first
        conn.execute("DELETE FROM shop.order_lines WHERE sku = %s", (sku,))
        conn.execute("DELETE FROM shop.products WHERE sku = %s", (sku,))
    source_in_kafka(stack)

    summary, diffs = run_shadow(env, tmp_path, "--stop-when-caught-up", "--from-group", live)
    deleted = {(d["table"], d["key"]) for d in diffs if d["kind"] == "delete"}
    lines = {("sales.order_line", f"[{order},{n}]") for n in (100, 101)}
    assert deleted == {("catalog.product", json.dumps([sku])), *lines}, diffs
    assert summary["held_at_end"] == 0

    live_run = run_cli(env, "run", "--stop-when-caught-up")
    assert live_run.returncode == 0, live_run.stderr[-3000:]
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM catalog.product WHERE sku = %s),"
            " (SELECT count(*) FROM sales.order_line WHERE sku = %s)",
            (sku, sku),
        ).fetchone()
    assert left == (0, 0)


def test_shadow_refuses_once_the_target_is_authoritative(stack: Stack, tmp_path: Path) -> None:
    """After a cutover the live daemon writes nothing more (it stops at the flip), so a preview of
    its writes would preview writes never made: `shadow` refuses in one line naming the authority
    and the way back, and seeds no position and writes no report."""
    dbname = fresh_target("shadowcut")
    live = f"cut-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, live)
    assert run_cli(env, "init", "--shadow-role", "replicator_shadow").returncode == 0
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        conn.execute(
            "UPDATE replicator.authority SET authority = 'target', cutover_id = 'c-test', since = now()"
        )
    shadow_env = {
        **env,
        "REPLICATOR_TARGET__USER": "replicator_shadow",
        "REPLICATOR_TARGET__PASSWORD": "shadow",
    }
    group = f"cut-shadow-{uuid.uuid4().hex[:6]}"
    done = run_cli(
        shadow_env, "shadow", "--stop-when-caught-up", "--shadow-group", group, "--report-dir", str(tmp_path)
    )
    assert done.returncode == 1 and done.stdout == "", done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("replicator: error: the target is authoritative since "), (
        lines
    )
    assert "(cutover c-test)" in lines[0] and "`replicator cutover rollback`" in lines[0]
    assert list(tmp_path.iterdir()) == []
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        seeded = conn.execute("SELECT count(*) FROM replicator.checkpoint WHERE group_id = %s", (group,))
        assert one_row(seeded) == (0,)
