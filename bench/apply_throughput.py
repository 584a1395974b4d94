#!/usr/bin/env python3
"""Apply throughput: events/s applied from a Kafka backlog, beside binary COPY into the same tables.

    eval "$(deploy/local/stack env)"
    python bench/apply_throughput.py [--customers N --products N --orders N] [--keep] [--profile]

What it does (idempotent; the demo database, connector and topics are never touched):

1. Backlog. A separate source database `bench_src` (demo schema, publication
   `cdc_bench`, the demo's grants for the `debezium` role) and a connector
   `bench-postgres` (bench/connectors/bench-postgres.json: topic prefix
   `bench`, slot `cdc_bench`) applied with `replicator connectors apply`.
   Set-based SQL loads customers, products, orders and order lines (chunked
   transactions), then updates and deletes; a fence transaction, then wait
   until Connect's committed source offset (lsn_proc) passes it. The backlog
   is the sum of the end offsets of the four bench.shop.* topics.
2. Target. `bench_tgt` recreated with `deploy/demo/demo.py target --reset`;
   the mapping is mappings/demo.yaml with `topic_prefix: bench`, generated into
   bench/bench.yaml at run time (the demo spec stays the contract).
3. Replicator. `python -m replicator run --stop-when-caught-up --json` with a
   fresh consumer group; wall time, events/s, target rows written/s, and the
   daemon's memory: /proc/<pid>/status VmRSS sampled every 0.2 s against the
   events applied so far (from its JSON batch log), plus VmHWM (peak).
4. COPY. The final rows the replicator produced are read from bench_tgt and
   written with psycopg binary COPY (`FORMAT BINARY`, `set_types`) into the
   truncated tables of `bench_copy` (same DDL); rows/s.
5. Results. A Markdown table (stdout and bench/results/apply_throughput.md)
   and JSON (bench/results/apply_throughput.json), with the machine.
6. Cleanup. The bench connector is stopped, its Connect offsets reset and it
   is deleted, the slot `cdc_bench` dropped and the bench topics deleted
   (unless --keep). The databases are left for inspection.

`--reuse-backlog` (after a `--keep` run) skips steps 1 and re-measures on the
kept topics. `--profile` also runs the daemon once more under cProfile into
`bench_prof` and prints the top functions (not part of the timed numbers).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import pstats
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from statistics import median
from typing import Any

import psycopg
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
DEMO_PY = REPO / "deploy" / "demo" / "demo.py"
DEMO_SPEC = REPO / "mappings" / "demo.yaml"
BENCH_SPEC = BENCH / "bench.yaml"
RESULTS = BENCH / "results"

SOURCE_DB, TARGET_DB, COPY_DB, PROFILE_DB = "bench_src", "bench_tgt", "bench_copy", "bench_prof"
CONNECTOR, SLOT, PUBLICATION, PREFIX = "bench-postgres", "cdc_bench", "cdc_bench", "bench"
TOPICS = [f"{PREFIX}.shop.{t}" for t in ("customers", "products", "orders", "order_lines")]
# Target tables parent-first (FKs), as the replicator applies them.
TARGET_TABLES = ["crm.customer", "crm.customer_pii", "catalog.product", "sales.order", "sales.order_line"]


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


KAFKA = env("REPLICATOR_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:59092")
CONNECT = env("REPLICATOR_CONNECT__URL", "http://127.0.0.1:58083").rstrip("/")


def say(*parts: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


def wait_until(cond: Any, timeout_s: float, what: str, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)  # polling interval while the condition is checked


# ---------------------------------------------------------------- demo.py, imported as a module
def load_demo() -> Any:
    """deploy/demo/demo.py with the bench database and publication (it reads them from the env)."""
    os.environ["REPLICATOR_SOURCE__DBNAME"] = SOURCE_DB
    os.environ["CDC_PUBLICATION"] = PUBLICATION
    spec = importlib.util.spec_from_file_location("cdc_demo", DEMO_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEMO = load_demo()


def source_admin(dbname: str = SOURCE_DB) -> str:
    return str(DEMO.admin_conninfo("SOURCE", dbname))


def target_admin(dbname: str) -> str:
    return str(DEMO.admin_conninfo("TARGET", dbname))


def target_replicator(dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(
        host=env("REPLICATOR_TARGET__HOST", "127.0.0.1"),
        port=env("REPLICATOR_TARGET__PORT", "55433"),
        dbname=dbname,
        user=env("REPLICATOR_TARGET__USER", "replicator"),
        password=env("REPLICATOR_TARGET__PASSWORD", "replicator"),
    )


# ---------------------------------------------------------------- Connect REST
def rest(method: str, path: str, body: Any = None, ok404: bool = False) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{CONNECT}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and ok404:
            return None
        raise SystemExit(f"bench: Connect {method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from exc
    return json.loads(raw) if raw else {}


def connector_state() -> str | None:
    status = rest("GET", f"/connectors/{CONNECTOR}/status", ok404=True)
    return None if status is None else str(status["connector"]["state"])


def remove_connector() -> None:
    """Stop, reset its source offsets (so a new connector of this name starts clean), delete."""
    if connector_state() is None:
        return
    say(f"removing connector {CONNECTOR} (stop, reset offsets, delete)")
    rest("PUT", f"/connectors/{CONNECTOR}/stop")
    wait_until(lambda: connector_state() == "STOPPED", 120, f"{CONNECTOR} to stop")
    rest("DELETE", f"/connectors/{CONNECTOR}/offsets")
    rest("DELETE", f"/connectors/{CONNECTOR}")
    wait_until(lambda: connector_state() is None, 60, f"{CONNECTOR} to be deleted")


def drop_slot() -> None:
    with psycopg.connect(source_admin("postgres"), autocommit=True) as conn:

        def inactive() -> bool:
            row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (SLOT,))
            found = row.fetchone()
            return found is None or found[0] is None

        if not inactive():
            try:
                wait_until(inactive, 30, f"slot {SLOT} to be released")
            except SystemExit:
                conn.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                    " WHERE slot_name = %s AND active_pid IS NOT NULL",
                    (SLOT,),
                )
                wait_until(inactive, 30, f"slot {SLOT} to be released")
        if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))
            say(f"dropped replication slot {SLOT}")


def connect_flushed_lsn() -> int:
    got = rest("GET", f"/connectors/{CONNECTOR}/offsets", ok404=True) or {"offsets": []}
    return max(
        (int(o["offset"].get("lsn_proc") or o["offset"].get("lsn") or 0) for o in got["offsets"]), default=0
    )


# ---------------------------------------------------------------- Kafka
def bench_topics(admin: AdminClient) -> list[str]:
    names = admin.list_topics(timeout=10).topics
    return sorted(t for t in names if t.startswith(f"{PREFIX}.") or t == f"__debezium-heartbeat.{PREFIX}")


def delete_topics() -> None:
    admin = AdminClient({"bootstrap.servers": KAFKA})
    topics = bench_topics(admin)
    if not topics:
        return
    say("deleting topics", ", ".join(topics))
    for topic, fut in admin.delete_topics(topics, operation_timeout=30).items():
        try:
            fut.result()
        except Exception as exc:
            if "UNKNOWN_TOPIC" not in str(exc):
                raise SystemExit(f"bench: cannot delete topic {topic}: {exc}") from exc
    wait_until(lambda: not bench_topics(admin), 60, "bench topics to be deleted")


def end_offsets(topics: list[str]) -> dict[str, int]:
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": "bench-end-offsets"})
    try:
        md = consumer.list_topics(timeout=10)
        out: dict[str, int] = {}
        for t in topics:
            if t not in md.topics or md.topics[t].error is not None:
                out[t] = 0
                continue
            total = 0
            for p in md.topics[t].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                total += high - low
            out[t] = total
        return out
    finally:
        consumer.close()


# ---------------------------------------------------------------- source and backlog
def setup_source() -> None:
    remove_connector()
    drop_slot()
    delete_topics()
    say(f"recreating source database {SOURCE_DB} with publication {PUBLICATION}")
    DEMO.setup_source(reset=True)
    with psycopg.connect(source_admin(), autocommit=True) as conn:
        # Only for the load's speed (the FK check of customer deletes); change events are the same.
        conn.execute("CREATE INDEX IF NOT EXISTS orders_customer_id_idx ON shop.orders (customer_id)")
    say(f"applying connector {CONNECTOR}")
    done = subprocess.run(
        [sys.executable, "-m", "replicator", "connectors", "apply", "--dir", str(BENCH / "connectors")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: connectors apply failed: {done.stderr.strip() or done.stdout.strip()}")
    with psycopg.connect(source_admin("postgres"), autocommit=True) as conn:
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)
                ).fetchone()
                == (True,)
            ),
            120,
            f"slot {SLOT} to be active",
        )
    # The initial snapshot (empty tables) is done once the connector commits its first offset.
    try:
        wait_until(lambda: rest("GET", f"/connectors/{CONNECTOR}/offsets")["offsets"], 30, "first offset")
    except SystemExit:
        say("no connector offset yet after 30s; loading anyway (changes are captured by the slot)")


def chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size - 1, total)) for lo in range(1, total + 1, size)]


LOAD_STEPS: list[tuple[str, str, str]] = [
    # (what, SQL with %(lo)s/%(hi)s and sizes, chunked over) -- set-based, one transaction per chunk
    (
        "insert customers",
        """INSERT INTO shop.customers (id, email, full_name, country, tier, tags, profile, created_at)
        SELECT g, 'user' || g || '@example.com',
          (ARRAY['Anna','Zoë','José','Łukasz','Søren','Chloé','李','Ана','O''Brien'])[1 + g % 9] || ' '
            || (ARRAY['Müller','Núñez','小龍','Smith','Ōta','van der Berg','Dvořák'])[1 + g % 7],
          CASE WHEN g % 50 = 0 THEN 'XX' ELSE (ARRAY['DE','FR','PL','US','JP','ES',NULL])[1 + g % 7] END,
          (ARRAY['bronze','silver','gold','platinum'])[1 + g % 4]::shop.customer_tier,
          CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN '{}'::text[] WHEN 2 THEN ARRAY['vip']
            ELSE ARRAY['new','ünïcode'] END,
          (CASE g % 3 WHEN 0 THEN NULL WHEN 1 THEN '{"newsletter": true}'
            ELSE '{"newsletter": false, "x": [1, 2]}' END)::jsonb,
          timestamptz '2024-01-01 00:00+00' + g * interval '1 minute'
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g""",
        "customers",
    ),
    (
        "insert products",
        """INSERT INTO shop.products (sku, name, description, price, weight_grams, image)
        SELECT 'SKU-' || lpad(g::text, 7, '0'), 'Kaffeemühle ' || g,
          CASE WHEN g % 10 = 0
            THEN (SELECT string_agg(md5(g::text || '-' || i), ' ') FROM generate_series(1, 200) AS i)
            ELSE 'short description ' || g END,
          (g % 100000) / 100.0,
          CASE WHEN g % 5 = 0 THEN NULL ELSE g % 50000 + 1 END,
          CASE WHEN g % 4 = 0 THEN decode(md5(g::text), 'hex') END
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g""",
        "products",
    ),
    (
        "insert orders",
        """INSERT INTO shop.orders (id, customer_id, status, placed_at, total, note)
        SELECT g, 1 + g % %(order_customers)s,
          (ARRAY['draft','placed','paid','shipped'])[1 + g % 4]::shop.order_status,
          timestamptz '2024-03-31 00:30+00' + g * interval '7 minutes',
          (g % 100000) / 10.0,
          (ARRAY[NULL, '', 'Bitte klingeln', '  padded  '])[1 + g % 4]
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g""",
        "orders",
    ),
    (
        "insert order lines",
        """INSERT INTO shop.order_lines (order_id, line_no, sku, qty, unit_price)
        SELECT o, l, 'SKU-' || lpad((1 + (o * 7 + l) % %(products)s)::text, 7, '0'), 1 + (o + l) % 4,
          ((o * 13 + l) % 10000) / 100.0
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS o, generate_series(1, 3) AS l
        WHERE l <= 2 + o % 2""",
        "orders",
    ),
    (
        "update order status (every 2nd order)",
        "UPDATE shop.orders SET status = 'paid', total = total + 1"
        " WHERE id BETWEEN %(lo)s AND %(hi)s AND id % 2 = 0",
        "orders",
    ),
    (
        "update customer tier (every 5th customer)",
        "UPDATE shop.customers SET tier = 'gold', tags = array_append(coalesce(tags, '{}'), 'upd')"
        " WHERE id BETWEEN %(lo)s AND %(hi)s AND id % 5 = 0",
        "customers",
    ),
    (
        "update product price (every 2nd product; TOASTed descriptions unchanged)",
        "UPDATE shop.products SET price = price + 1"
        " WHERE sku BETWEEN 'SKU-' || lpad(%(lo)s::text, 7, '0') AND 'SKU-' || lpad(%(hi)s::text, 7, '0')"
        " AND right(sku, 1)::int % 2 = 0",
        "products",
    ),
    (
        "delete order lines (line 2 of every 5th order)",
        "DELETE FROM shop.order_lines WHERE order_id BETWEEN %(lo)s AND %(hi)s"
        " AND order_id % 5 = 0 AND line_no = 2",
        "orders",
    ),
    (
        "delete customers without orders (soft delete in the target)",
        "DELETE FROM shop.customers WHERE id BETWEEN %(lo)s AND %(hi)s AND id > %(order_customers)s"
        " AND id % 2 = 0",
        "customers",
    ),
]


def load_backlog(sizes: dict[str, int], chunk: int) -> dict[str, Any]:
    params = {
        **sizes,
        # orders reference the first 90% of customers; the rest may be deleted
        "order_customers": max(1, sizes["customers"] * 9 // 10),
    }
    timings: dict[str, float] = {}
    with psycopg.connect(source_admin(), autocommit=True) as conn:
        for what, text, over in LOAD_STEPS:
            stmt = text.replace("% ", "%% ")  # the modulo operator, not a placeholder
            started = time.monotonic()
            rows = 0
            for lo, hi in chunks(sizes[over], chunk if over != "orders" else max(1, chunk // 3)):
                with conn.transaction():
                    cur = conn.execute(stmt, {**params, "lo": lo, "hi": hi})
                    rows += cur.rowcount
            timings[what] = round(time.monotonic() - started, 2)
            say(f"source: {what}: {rows} rows in {timings[what]}s")
        # The fence: a no-op update; its LSN is inside the last transaction of the load.
        with conn.transaction():
            conn.execute(
                "UPDATE shop.products SET price = price WHERE sku = (SELECT min(sku) FROM shop.products)"
            )
            row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
            assert row is not None
            fence = int(row[0])
    say(f"source load done; waiting until Connect has flushed past LSN {fence}")
    started = time.monotonic()
    last = [0.0]

    def flushed() -> bool:
        if time.monotonic() - last[0] > 15:
            last[0] = time.monotonic()
            so_far = sum(end_offsets(TOPICS).values())
            say(f"  connect: lsn_proc={connect_flushed_lsn()} messages so far={so_far}")
        return connect_flushed_lsn() >= fence

    wait_until(flushed, 1800, f"Connect to flush past LSN {fence}", every_s=1)
    capture_s = time.monotonic() - started
    return {"load_s": timings, "fence_lsn": fence, "capture_wait_s": round(capture_s, 1)}


# ---------------------------------------------------------------- targets, spec
def fresh_target(dbname: str) -> None:
    subprocess.run(
        [sys.executable, str(DEMO_PY), "target", "--dbname", dbname, "--reset"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_bench_spec() -> Path:
    spec = yaml.safe_load(DEMO_SPEC.read_text(encoding="utf-8"))
    spec["topic_prefix"] = PREFIX
    header = (
        "# GENERATED by bench/apply_throughput.py from mappings/demo.yaml (only topic_prefix differs);\n"
        "# edit the demo spec, not this file.\n"
    )
    BENCH_SPEC.write_text(
        header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return BENCH_SPEC


# ---------------------------------------------------------------- the daemon
def proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])  # kB
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def proc_cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def daemon_env(dbname: str, group: str) -> dict[str, str]:
    return {
        **os.environ,
        "REPLICATOR_TARGET__DBNAME": dbname,
        "REPLICATOR_SOURCE__DBNAME": SOURCE_DB,
        "REPLICATOR_MAPPING": str(BENCH_SPEC),
        "REPLICATOR_KAFKA__GROUP_ID": group,
        "REPLICATOR_LOG_FORMAT": "json",
    }


def run_daemon(dbname: str, profile_to: Path | None = None) -> dict[str, Any]:
    group = f"bench-{uuid.uuid4().hex[:10]}"
    args = [sys.executable]
    if profile_to is not None:
        args += ["-m", "cProfile", "-o", str(profile_to)]
    args += ["-m", "replicator", "run", "--stop-when-caught-up", "--json"]
    say(f"daemon: {'profiled ' if profile_to else ''}run into {dbname}, group {group}")
    started = time.monotonic()
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        env=daemon_env(dbname, group),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = {"events": 0, "messages": 0, "first_batch": None, "last_batch": None}
    log_tail: list[str] = []

    def read_log() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log_tail.append(line)
            del log_tail[:-50]
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "batch":
                now = time.monotonic() - started
                progress["events"] += int(rec.get("events", 0))
                progress["messages"] += int(rec.get("events", 0)) + int(rec.get("tombstones", 0))
                if progress["first_batch"] is None:
                    progress["first_batch"] = now
                progress["last_batch"] = now

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    samples: list[tuple[float, int, int]] = []  # (t, events applied so far, VmRSS kB)
    hwm = 0
    cpu: float | None = None
    while proc.poll() is None:
        st = proc_status(proc.pid)
        if "VmRSS" in st:
            samples.append((time.monotonic() - started, int(progress["events"] or 0), st["VmRSS"]))
            hwm = max(hwm, st.get("VmHWM", 0))
        cpu = proc_cpu_s(proc.pid) or cpu
        time.sleep(0.2)  # memory sampling interval
    wall = time.monotonic() - started
    out = proc.stdout.read() if proc.stdout else ""
    reader.join(timeout=10)
    if proc.returncode != 0:
        raise SystemExit(f"bench: daemon exited {proc.returncode}:\n{''.join(log_tail[-15:])}")
    totals = json.loads(out)
    return {
        "loadavg_at_end": os.getloadavg(),
        "group": group,
        "wall_s": round(wall, 2),
        "apply_s": round((progress["last_batch"] or wall) - (progress["first_batch"] or 0), 2),
        "cpu_s": cpu,
        "totals": totals,
        "rss_samples": samples,
        "vm_hwm_kb": hwm,
    }


def memory_profile(samples: list[tuple[float, int, int]], total_events: int) -> dict[str, Any]:
    """RSS after warm-up (first 10% of events applied) and at progress milestones."""
    if not samples:
        return {}
    warm = [s for s in samples if s[1] >= 0.10 * total_events] or samples
    rss = [s[2] for s in warm]
    milestones = {}
    for frac in (0.1, 0.25, 0.5, 0.75, 1.0):
        hit = next((s for s in samples if s[1] >= frac * total_events), samples[-1])
        milestones[f"{int(frac * 100)}%"] = round(hit[2] / 1024, 1)
    return {
        "after_warmup_mib": {
            "min": round(min(rss) / 1024, 1),
            "median": round(median(rss) / 1024, 1),
            "max": round(max(rss) / 1024, 1),
        },
        "rss_at_progress_mib": milestones,
        "samples": len(samples),
    }


# ---------------------------------------------------------------- binary COPY
def target_columns(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".")
    rows = conn.execute(
        "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass"
        " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, name),
    ).fetchall()
    # binary COPY: the server reads each column with its own receive function; char(n) and
    # varchar take the same bytes as text (psycopg has no binary bpchar dumper).
    alias = {"bpchar": "text", "varchar": "text"}

    def name(t: str) -> str:
        return alias.get(t[1:], t[1:]) + "[]" if t.startswith("_") else alias.get(t, t)

    return [(c, name(t)) for c, t in rows]


def copy_rates(src_db: str, copy_db: str, repeats: int) -> dict[str, Any]:
    """Binary COPY of the replicator's final rows into truncated copies of the tables.

    Repeated `repeats` times (the machine is shared); the run with the median total is reported.
    """
    data: dict[str, tuple[list[tuple[str, str]], list[tuple[Any, ...]]]] = {}
    with psycopg.connect(target_admin(src_db)) as conn:
        for table in TARGET_TABLES:
            cols = target_columns(conn, table)
            ident = sql.Identifier(*table.split("."))
            names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in cols)
            rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(names, ident)).fetchall()
            data[table] = (cols, rows)
    runs = sorted((copy_once(copy_db, data) for _ in range(max(1, repeats))), key=lambda r: r["s"])
    chosen = runs[len(runs) // 2]
    chosen["all_runs_s"] = [r["s"] for r in runs]
    return chosen


def copy_once(
    copy_db: str, data: dict[str, tuple[list[tuple[str, str]], list[tuple[Any, ...]]]]
) -> dict[str, Any]:
    per_table: dict[str, Any] = {}
    total_rows, total_s = 0, 0.0
    with psycopg.connect(target_replicator(copy_db)) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(sql.Identifier(*t.split(".")) for t in TARGET_TABLES)
            )
        )
        conn.commit()
        for table in TARGET_TABLES:
            cols, rows = data[table]
            ident = sql.Identifier(*table.split("."))
            names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in cols)
            started = time.perf_counter()
            stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(ident, names)
            with conn.cursor() as cur, cur.copy(stmt) as cp:
                cp.set_types([t for _, t in cols])
                for row in rows:
                    cp.write_row(row)
            conn.commit()
            took = time.perf_counter() - started
            per_table[table] = {"rows": len(rows), "s": round(took, 3), "rows_per_s": round(len(rows) / took)}
            total_rows += len(rows)
            total_s += took
    say(f"COPY: {total_rows} rows in {total_s:.2f}s")
    return {
        "rows": total_rows,
        "s": round(total_s, 3),
        "rows_per_s": round(total_rows / total_s),
        "tables": per_table,
    }


# ---------------------------------------------------------------- machine
def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version()}
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    with open("/proc/meminfo", encoding="utf-8") as f:
        kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    info["memory_gib"] = round(kb / 1024 / 1024, 1)
    info["kernel"] = platform.release()
    info["loadavg_at_start"] = os.getloadavg()
    with psycopg.connect(target_admin("postgres")) as conn:
        info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    try:
        info["kafka_connect"] = rest("GET", "/").get("version")
        plugins = rest("GET", "/connector-plugins")
        info["debezium"] = next(
            (p["version"] for p in plugins if p["class"].endswith("PostgresConnector")), "?"
        )
    except SystemExit:
        pass
    import confluent_kafka

    info["psycopg"] = psycopg.__version__
    info["librdkafka"] = confluent_kafka.libversion()[0]
    info["confluent_kafka"] = confluent_kafka.version()[0]
    return info


# ---------------------------------------------------------------- report
def applied_rows(applied: dict[str, int]) -> int:
    """Target rows written: upserts, deletes, soft deletes (not ignored deletes, not truncates)."""
    return sum(n for k, n in applied.items() if k.rsplit(":", 1)[1] in ("upsert", "delete", "soft_delete"))


def report(res: dict[str, Any]) -> str:
    m, d, c, b = res["machine"], res["daemon"], res["copy"], res["backlog"]
    t = d["totals"]
    mem = d["memory"]
    lines = [
        "# Apply throughput benchmark",
        "",
        f"Run {res['started']} ({res['elapsed_s']:.0f}s in all). Machine: {m['nproc']} CPUs ({m['cpu']}),"
        f" {m['memory_gib']} GiB RAM, Linux {m['kernel']}, load average at start"
        f" {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}. PostgreSQL {m['postgresql']},"
        f" Kafka Connect {m.get('kafka_connect', '?')}, Debezium {m.get('debezium', '?')},"
        f" Python {m['python']}, psycopg {m['psycopg']}, librdkafka {m['librdkafka']}."
        " Everything (both PostgreSQL clusters, Kafka, Connect, the daemon) shares these CPUs.",
        "",
        f"Backlog: {b['messages']} Kafka messages in "
        + ", ".join(f"{k}={v}" for k, v in b["per_topic"].items())
        + f" ({t['events']} change events + {t['tombstones']} tombstones), demo mapping with topic prefix"
        f" `{PREFIX}` (bench/bench.yaml), default batch limits.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| replicator wall time (process start to exit) | {d['wall_s']:.1f} s (1-min load average at"
        f" its end {d['loadavg_at_end'][0]:.2f} on {m['nproc']} CPUs) |",
        f"| replicator change events/s (wall) | {d['events_per_s']:,} |",
        f"| replicator Kafka messages/s (wall, incl. tombstones) | {d['messages_per_s']:,} |",
        f"| replicator target rows written/s (wall) | {d['rows_per_s']:,} ({d['rows_written']} rows) |",
        f"| replicator CPU time (user+sys) | {d['cpu_s']:.1f} s"
        f" ({d['cpu_s'] / d['wall_s']:.0%} of one core) |",
        f"| binary COPY rows/s ({c['rows']} final rows, same tables) |"
        f" {c['rows_per_s']:,} ({c['s']:.2f} s; median of runs {c['all_runs_s']}) |",
        f"| **events/s ÷ COPY rows/s** | **{d['events_per_s'] / c['rows_per_s']:.1%}** (goal ≥ 25%) |",
        f"| rows written/s ÷ COPY rows/s | {d['rows_per_s'] / c['rows_per_s']:.1%} |",
        f"| daemon peak RSS (VmHWM) | {d['vm_hwm_kb'] / 1024:.1f} MiB |",
        f"| daemon RSS after warm-up min / median / max | {mem['after_warmup_mib']['min']} /"
        f" {mem['after_warmup_mib']['median']} / {mem['after_warmup_mib']['max']} MiB |",
        "| daemon RSS at 10/25/50/75/100% of the backlog applied | "
        + " / ".join(str(v) for v in mem["rss_at_progress_mib"].values())
        + " MiB |",
        "",
        "Rows applied per target table and operation (replicator totals):",
        "",
        "| table:operation | rows |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in t["applied"].items()),
        "",
        "Binary COPY per table:",
        "",
        "| table | rows | seconds | rows/s |",
        "|---|---|---|---|",
        *(f"| {k} | {v['rows']} | {v['s']} | {v['rows_per_s']:,} |" for k, v in c["tables"].items()),
        "",
        f"Other totals: batches={t['batches']}, skipped_older={t['skipped_older']},"
        f" error_records={t['error_records']}, unordered={t['unordered']}.",
    ]
    return "\n".join(lines) + "\n"


def print_profile(path: Path, limit: int = 25) -> str:
    import io

    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--products", type=int, default=20_000)
    ap.add_argument("--orders", type=int, default=100_000, help="order lines are about 2.5 per order")
    ap.add_argument("--chunk", type=int, default=25_000, help="rows per source transaction")
    ap.add_argument("--copy-repeats", type=int, default=3, help="COPY runs; the median is reported")
    ap.add_argument("--keep", action="store_true", help="keep the connector, slot and topics")
    ap.add_argument("--reuse-backlog", action="store_true", help="measure on the topics a --keep run left")
    ap.add_argument("--profile", action="store_true", help="also run the daemon under cProfile (bench_prof)")
    args = ap.parse_args()
    sizes = {"customers": args.customers, "products": args.products, "orders": args.orders}
    begun = time.monotonic()
    res: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "sizes": sizes}
    res["machine"] = machine()
    try:
        if args.reuse_backlog:
            res["source"] = {"reused": True}
        else:
            setup_source()
            res["source"] = load_backlog(sizes, args.chunk)
        per_topic = end_offsets(TOPICS)
        res["backlog"] = {"messages": sum(per_topic.values()), "per_topic": per_topic}
        say(f"backlog: {res['backlog']['messages']} messages {per_topic}")
        write_bench_spec()
        for db in (TARGET_DB, COPY_DB):
            fresh_target(db)
        d = run_daemon(TARGET_DB)
        t = d["totals"]
        d["rows_written"] = applied_rows(t["applied"])
        d["events_per_s"] = round(t["events"] / d["wall_s"])
        d["messages_per_s"] = round((t["events"] + t["tombstones"]) / d["wall_s"])
        d["rows_per_s"] = round(d["rows_written"] / d["wall_s"])
        d["memory"] = memory_profile(d.pop("rss_samples"), t["events"])
        res["daemon"] = d
        say(
            f"daemon: {t['events']} events in {d['wall_s']}s = {d['events_per_s']}/s,"
            f" peak RSS {d['vm_hwm_kb'] // 1024} MiB"
        )
        res["copy"] = copy_rates(TARGET_DB, COPY_DB, args.copy_repeats)
        res["ratio_events_to_copy"] = round(d["events_per_s"] / res["copy"]["rows_per_s"], 4)
        if args.profile:
            fresh_target(PROFILE_DB)
            prof = Path("/tmp") / f"bench-apply-{uuid.uuid4().hex[:6]}.prof"
            p = run_daemon(PROFILE_DB, profile_to=prof)
            res["profile"] = {"path": str(prof), "wall_s": p["wall_s"]}
            text = print_profile(prof)
            (RESULTS / "apply_throughput.profile.txt").write_text(text, encoding="utf-8")
            say(f"profile written to {prof} and bench/results/apply_throughput.profile.txt")
    finally:
        if not args.keep:
            remove_connector()
            drop_slot()
            delete_topics()
    res["elapsed_s"] = time.monotonic() - begun
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = report(res)
    (RESULTS / "apply_throughput.md").write_text(text, encoding="utf-8")
    (RESULTS / "apply_throughput.json").write_text(
        json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8"
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
