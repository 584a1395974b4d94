#!/usr/bin/env python3
"""Peer benchmark: `replicator run` beside the Debezium JDBC sink and binary COPY, on the same topics.

    eval "$(deploy/local/stack env)"
    python3 bench/peer.py [--events N] [--rounds 2] [--quick] [--keep] [--reuse-backlog] [--only ...]
    python3 bench/peer.py --report-only     # re-render bench/results/peer.md from peer.json

What it does (the demo and test databases, connectors and topics are never touched):

1. Backlog, once. A dedicated source database `peer_src` (schema `app`: `accounts` with a
   uuid key, `entries` with a composite (uuid, int) key, `documents` with a bigint key and a
   ~10 kB `body` text column with STORAGE EXTERNAL, so it is TOASTed out of line; numeric,
   timestamptz, boolean, nullable text, a column with a DEFAULT holding NULLs), its own
   publication `cdc_peer`, slot `cdc_peer` and Debezium connector `peer-postgres` (topic
   prefix `peer`, the demo connector's settings: pgoutput, JsonConverter with schemas,
   precise decimals, replace.null.with.default=false, transaction metadata, heartbeats).
   The topics are created beforehand with `--partitions` (default 3) partitions. Set-based
   SQL inserts, updates (documents are updated without touching `body`, so Debezium sends
   `__debezium_unavailable_value` for it, and once with a new body in between), deletes
   (each followed by a tombstone) and re-inserts of deleted keys. A fence transaction, then
   a wait until Connect's committed source offset (lsn_proc) passes it; then the source
   connector is stopped and every contender drains the same topics from offset 0. The
   topics are scanned once (messages, tombstones, ops, messages carrying the placeholder)
   and the source tables are hashed once.
2. Contenders, each into its own freshly created target database with the identity schema
   (the source DDL), recreated for every run (the last run of each stays for inspection):
     rep1    `python -m replicator run --stop-when-caught-up --json` from this checkout
             (PYTHONPATH), identity spec bench/peer.yaml (generated), fresh consumer group,
             `replicator init` first as the `replicator` role.
     sink    the Debezium JDBC sink on the local Connect, tasks.max=1, insert.mode=upsert,
             delete.enabled, primary.key.mode=record_key, schema.evolution=none, explicit
             topics, batch.size 500/5000 x use.reduction.buffer false/true (5000 also sets
             consumer.override.max.poll.records=5000); a new connector name per run (a new
             group `connect-<name>`, auto.offset.reset=earliest). Done when the group's
             committed offsets reach the end offsets; then the connector is deleted.
     copy    binary COPY (psycopg, FORMAT BINARY) of the final rows, read from the source,
             into truncated identical tables of `peer_copy`: the ceiling, rows/s.
     rep3    three replicator processes in one consumer group.
     sink3   the JDBC sink with tasks.max=3 and the best sink configuration of round 1
             (`--sink3-config` overrides).
   Rounds are interleaved (rep1, sink configs in a rotating order, copy, rep3, sink3, then
   the next round), after one untimed warm-up sink run (the worker JVM's class loading and
   JIT; `--no-warmup` skips it). The sink's converters also get
   replace.null.with.default=false (without it NULLs in DEFAULT columns become the default).
3. Per run: wall seconds (launch to exit for the replicator; connector creation to
   committed offsets at the end for the sink), Kafka messages/s (messages = sum of end
   offsets, tombstones included), CPU seconds per 1M messages of the consuming process(es)
   (replicator: rusage of the daemon processes; sink: the Connect worker JVM's CPU delta
   minus its idle rate measured over `--idle-s` seconds just before the run), the target
   PostgreSQL cluster's CPU seconds (postmaster + children, exited backends included via
   the postmaster's cutime/cstime), peak RSS (replicator: ru_maxrss; sink: the JVM's
   sampled VmRSS peak during the run), target cells holding the TOAST placeholder, and a
   checksum of every target table against the source (md5 over the md5 of each row's text,
   ordered by key, TimeZone=UTC on both sides; on a mismatch the rows are diffed by key),
   /proc/loadavg before and after.
   Other people's tests restart stack processes (the target cluster, the Connect worker) on
   this machine: a run during which a stack pid changed is marked disturbed, kept in the
   table, left out of the medians and repeated (`--repeat-disturbed`, default once); REST
   calls and idempotent PostgreSQL steps wait for the restarted service.
4. Results: bench/results/peer.json and bench/results/peer.md (per-run table, medians,
   ratios, the sink configuration, the machine), written after every run and at the end.
   Logs of each run go to a temporary directory named in the JSON.
5. Cleanup (unless --keep): the sink connectors, the source connector (stopped, offsets
   reset, deleted), the slot, the topics and the consumer groups created here. The
   databases are left for inspection.

Nothing is asserted about speed: a contender that fails, times out or leaves different
rows is recorded as such.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, TypeVar, cast

import psycopg
import yaml
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from psycopg import sql

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent  # the replicator under test is this checkout's package (PYTHONPATH)
RESULTS = HERE / "results"
SPEC_PATH = HERE / "peer.yaml"


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


KAFKA = env("REPLICATOR_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:59092")
CONNECT = env("REPLICATOR_CONNECT__URL", "http://127.0.0.1:58083").rstrip("/")
SRC_HOST, SRC_PORT = env("REPLICATOR_SOURCE__HOST", "127.0.0.1"), env("REPLICATOR_SOURCE__PORT", "55432")
TGT_HOST, TGT_PORT = env("REPLICATOR_TARGET__HOST", "127.0.0.1"), env("REPLICATOR_TARGET__PORT", "55433")
ADMIN_USER, ADMIN_PASSWORD = (
    env("STACK_PG_ADMIN_USER", "postgres"),
    env("STACK_PG_ADMIN_PASSWORD", "postgres"),
)
TGT_USER, TGT_PASSWORD = (
    env("REPLICATOR_TARGET__USER", "replicator"),
    env("REPLICATOR_TARGET__PASSWORD", "replicator"),
)
DBZ_USER, DBZ_PASSWORD = env("CDC_DEBEZIUM_USER", "debezium"), env("CDC_DEBEZIUM_PASSWORD", "debezium")
STACK_DIR = Path(env("STACK_DIR", "/work/main/.stack"))

SOURCE_DB = "peer_src"
COPY_DB = "peer_copy"
CONNECTOR, SLOT, PUBLICATION, PREFIX, SCHEMA = "peer-postgres", "cdc_peer", "cdc_peer", "peer", "app"
SINK_PREFIX = "peer-sink-"
PLACEHOLDER = "__debezium_unavailable_value"
CLK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, SQL type incl. constraints)
    key: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    @property
    def topic(self) -> str:
        return f"{PREFIX}.{SCHEMA}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(SCHEMA, self.name)

    def ddl(self) -> str:
        cols = ",\n  ".join(f"{c} {t}" for c, t in self.columns)
        return f"CREATE TABLE {self.qualified} (\n  {cols},\n  PRIMARY KEY ({', '.join(self.key)})\n);"


TABLES: tuple[Table, ...] = (
    Table(
        "accounts",
        (
            ("id", "uuid NOT NULL"),
            ("name", "text NOT NULL"),
            ("status", "text DEFAULT 'new'"),  # NULLs in the data: replace.null.with.default=false
            ("balance", "numeric(14,2) NOT NULL"),
            ("active", "boolean NOT NULL"),
            ("opened_at", "timestamptz NOT NULL"),
            ("updated_at", "timestamptz"),
        ),
        ("id",),
    ),
    Table(
        "entries",
        (
            ("account_id", "uuid NOT NULL"),
            ("seq", "integer NOT NULL"),
            ("amount", "numeric(12,2) NOT NULL"),
            ("booked_at", "timestamptz NOT NULL"),
            ("memo", "text"),
        ),
        ("account_id", "seq"),
    ),
    Table(
        "documents",
        (
            ("id", "bigint NOT NULL"),
            ("title", "text NOT NULL"),
            ("body", "text"),  # ~10 kB, STORAGE EXTERNAL: out of line, never compressed
            ("version", "integer NOT NULL"),
            ("updated_at", "timestamptz NOT NULL"),
        ),
        ("id",),
    ),
)
TOPICS = [t.topic for t in TABLES]
SCHEMA_DDL = (
    f"CREATE SCHEMA {SCHEMA};\n"
    + "\n".join(t.ddl() for t in TABLES)
    + f"\nALTER TABLE {SCHEMA}.documents ALTER COLUMN body SET STORAGE EXTERNAL;\n"
)


def say(*parts: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step of the harness itself failed (not a contender)."""


def wait_until(cond: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)  # polling interval while the condition is checked


# ---------------------------------------------------------------- PostgreSQL
def conninfo(side: str, dbname: str, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> str:
    host, port = (SRC_HOST, SRC_PORT) if side == "source" else (TGT_HOST, TGT_PORT)
    return psycopg.conninfo.make_conninfo(
        host=host,
        port=port,
        dbname=dbname,
        user=user,
        password=password,
        application_name="peer-bench",
        options="-c TimeZone=UTC -c DateStyle=ISO,YMD",
    )


PG_RETRY_S = 300  # other people's tests stop and restart the target cluster; wait that long for it

F = TypeVar("F", bound=Callable[..., Any])


def pg_retry(fn: F) -> F:
    """Retry an idempotent PostgreSQL step while the server is unreachable (restarted by someone else)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + PG_RETRY_S
        while True:
            try:
                return fn(*args, **kwargs)
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise
                say(f"{fn.__name__}: {str(exc).strip().splitlines()[0]}; retrying in 3 s")
                time.sleep(3)  # wait for the server to come back

    return cast(F, wrapper)


def role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


@pg_retry
def recreate_database(side: str, dbname: str) -> None:
    with psycopg.connect(conninfo(side, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


@pg_retry
def fresh_target(dbname: str) -> None:
    """An empty target with the identity schema; DML and CREATE (control schema) for the replicator role."""
    recreate_database("target", dbname)
    with psycopg.connect(conninfo("target", dbname), autocommit=True) as conn:
        if not role_exists(conn, TGT_USER):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(TGT_USER), sql.Literal(TGT_PASSWORD)
                )
            )
        conn.execute(SCHEMA_DDL)
        conn.execute(
            sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(TGT_USER)
            )
        )
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {0} TO {1};"
                " GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {0} TO {1}"
            ).format(sql.Identifier(SCHEMA), sql.Identifier(TGT_USER))
        )


def row_hashes(conn: psycopg.Connection[Any], table: Table) -> dict[str, str]:
    keys = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in table.key)
    keytext = sql.SQL(" || '|' || ").join(sql.SQL("t.{}::text").format(sql.Identifier(k)) for k in table.key)
    rows = conn.execute(
        sql.SQL("SELECT {}, md5(t::text) FROM {} AS t ORDER BY {}").format(keytext, table.ident, keys)
    ).fetchall()
    return {str(k): str(h) for k, h in rows}


def table_digest(conn: psycopg.Connection[Any], table: Table) -> tuple[int, str]:
    """Row count and md5 of the ordered per-row md5 of the row's text (all columns)."""
    keys = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in table.key)
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY {}), '')) FROM {} AS t"
        ).format(keys, table.ident)
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def placeholder_cells(conn: psycopg.Connection[Any], table: Table) -> int:
    text_cols = [c for c, t in table.columns if t.split()[0] == "text"]
    if not text_cols:
        return 0
    counts = sql.SQL(" + ").join(
        sql.SQL("count(*) FILTER (WHERE {} = %(p)s)").format(sql.Identifier(c)) for c in text_cols
    )
    row = conn.execute(
        sql.SQL("SELECT {} FROM {}").format(counts, table.ident), {"p": PLACEHOLDER}
    ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class SourceTruth:
    digests: dict[str, tuple[int, str]] = field(default_factory=dict)
    rows: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> key text -> row md5


def source_truth() -> SourceTruth:
    truth = SourceTruth()
    with psycopg.connect(conninfo("source", SOURCE_DB)) as conn:
        for t in TABLES:
            truth.digests[t.name] = table_digest(conn, t)
            truth.rows[t.name] = row_hashes(conn, t)
    return truth


DIFF_SAMPLE = 50


def rows_by_key(
    conn: psycopg.Connection[Any], table: Table, keys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    keytext = sql.SQL(" || '|' || ").join(sql.SQL("t.{}::text").format(sql.Identifier(k)) for k in table.key)
    got = conn.execute(
        sql.SQL("SELECT {0}, to_jsonb(t) FROM {1} AS t WHERE {0} = ANY(%s)").format(keytext, table.ident),
        (list(keys),),
    ).fetchall()
    return {str(k): dict(v) for k, v in got}


def differing_columns(conn: psycopg.Connection[Any], table: Table, keys: Sequence[str]) -> dict[str, Any]:
    """For a sample of differing rows: how often each column differs, and how (placeholder or other)."""
    if not keys:
        return {}
    with psycopg.connect(conninfo("source", SOURCE_DB)) as src:
        want = rows_by_key(src, table, keys)
    got = rows_by_key(conn, table, keys)
    out: dict[str, dict[str, int]] = {}
    examples: dict[str, Any] = {}
    for k in keys:
        for col, value in want.get(k, {}).items():
            other = got.get(k, {}).get(col)
            if other != value:
                kind = "placeholder" if other == PLACEHOLDER else "other"
                out.setdefault(col, {}).setdefault(kind, 0)
                out[col][kind] += 1
                if kind == "other" and col not in examples:
                    examples[col] = {"key": k, "source": str(value)[:80], "target": str(other)[:80]}
    return {"sample_rows": len(keys), "columns": out, "examples": examples}


@pg_retry
def check_target(dbname: str, truth: SourceTruth) -> dict[str, Any]:
    """Checksums of every target table against the source, placeholder cells, a row diff on mismatch."""
    tables: dict[str, Any] = {}
    with psycopg.connect(conninfo("target", dbname)) as conn:
        for t in TABLES:
            count, digest = table_digest(conn, t)
            src_count, src_digest = truth.digests[t.name]
            entry: dict[str, Any] = {
                "rows": count,
                "source_rows": src_count,
                "md5": digest,
                "match": digest == src_digest and count == src_count,
                "placeholder_cells": placeholder_cells(conn, t),
            }
            if not entry["match"]:
                got, want = row_hashes(conn, t), truth.rows[t.name]
                missing = [k for k in want if k not in got]
                extra = [k for k in got if k not in want]
                differ = [k for k in want if k in got and got[k] != want[k]]
                entry["diff"] = {
                    "missing": len(missing),
                    "extra": len(extra),
                    "differing": len(differ),
                    "sample_keys": (missing[:2] + extra[:2] + differ[:3]),
                    "columns_in_sample": differing_columns(conn, t, differ[:DIFF_SAMPLE]),
                }
            tables[t.name] = entry
    return {
        "tables": tables,
        "match": all(e["match"] for e in tables.values()),
        "placeholder_cells": sum(e["placeholder_cells"] for e in tables.values()),
    }


# ---------------------------------------------------------------- Connect REST
REST_RETRY_S = 300  # other people's tests kill and restart the worker; wait that long for it


def rest(method: str, path: str, body: Any = None, ok404: bool = False) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{CONNECT}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    deadline = time.monotonic() + REST_RETRY_S
    while True:
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and ok404:
                return None
            if exc.code in (409, 500, 503) and time.monotonic() < deadline:  # rebalancing / restarting
                time.sleep(2)  # retry interval while the worker settles
                continue
            raise BenchError(f"Connect {method} {path}: HTTP {exc.code} {exc.read()[:600]!r}") from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"Connect {method} {path}: {exc}") from exc
            time.sleep(2)  # the worker is down (someone restarts it): wait for it
    return json.loads(raw) if raw else {}


def connector_status(name: str) -> dict[str, Any] | None:
    got = rest("GET", f"/connectors/{name}/status", ok404=True)
    return None if got is None else dict(got)


def connector_state(name: str) -> str | None:
    st = connector_status(name)
    return None if st is None else str(st["connector"]["state"])


def delete_connector(name: str, reset_offsets: bool = False) -> None:
    if connector_state(name) is None:
        return
    if reset_offsets:  # a source connector: stop, reset offsets, so a new one of this name starts clean
        rest("PUT", f"/connectors/{name}/stop")
        wait_until(lambda: connector_state(name) == "STOPPED", 120, f"{name} to stop")
        rest("DELETE", f"/connectors/{name}/offsets")
    rest("DELETE", f"/connectors/{name}")
    wait_until(lambda: connector_state(name) is None, 120, f"{name} to be deleted")
    say(f"deleted connector {name}")


def source_connector_config() -> dict[str, str]:
    """The demo connector's settings (connectors/demo-postgres.json) for peer_src."""
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": SRC_HOST,
        "database.port": SRC_PORT,
        "database.dbname": SOURCE_DB,
        "database.user": DBZ_USER,
        "database.password": DBZ_PASSWORD,
        "topic.prefix": PREFIX,
        "slot.name": SLOT,
        "publication.name": PUBLICATION,
        "publication.autocreate.mode": "disabled",
        "table.include.list": ",".join(t.qualified for t in TABLES),
        "snapshot.mode": "initial",
        "skipped.operations": "none",
        "tombstones.on.delete": "true",
        "heartbeat.interval.ms": "5000",
        "provide.transaction.metadata": "true",
        "decimal.handling.mode": "precise",
        "time.precision.mode": "adaptive",
        "interval.handling.mode": "numeric",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "true",
        "key.converter.replace.null.with.default": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "value.converter.replace.null.with.default": "false",
        "topic.creation.default.partitions": "3",
        "topic.creation.default.replication.factor": "1",
    }


def connect_flushed_lsn() -> int:
    got = rest("GET", f"/connectors/{CONNECTOR}/offsets", ok404=True) or {"offsets": []}
    return max(
        (int(o["offset"].get("lsn_proc") or o["offset"].get("lsn") or 0) for o in got["offsets"]), default=0
    )


# ---------------------------------------------------------------- Kafka
def admin() -> AdminClient:
    return AdminClient({"bootstrap.servers": KAFKA})


def our_topics(a: AdminClient) -> list[str]:
    names = a.list_topics(timeout=10).topics
    return sorted(t for t in names if t.startswith(f"{PREFIX}.") or t == f"__debezium-heartbeat.{PREFIX}")


def delete_topics() -> None:
    a = admin()
    topics = our_topics(a)
    if not topics:
        return
    say("deleting topics", ", ".join(topics))
    for topic, fut in a.delete_topics(topics, operation_timeout=30).items():
        try:
            fut.result(timeout=60)
        except KafkaException as exc:
            if "UNKNOWN_TOPIC" not in str(exc):
                raise BenchError(f"cannot delete topic {topic}: {exc}") from exc
    wait_until(lambda: not our_topics(a), 120, "peer topics to be deleted")


def create_topics(partitions: int) -> None:
    a = admin()
    futures = a.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in TOPICS], operation_timeout=30
    )
    for topic, fut in futures.items():
        try:
            fut.result(timeout=60)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BenchError(f"cannot create topic {topic}: {exc}") from exc


def partitions_of(topics: Sequence[str]) -> list[TopicPartition]:
    md = admin().list_topics(timeout=10)
    out: list[TopicPartition] = []
    for t in topics:
        if t not in md.topics or md.topics[t].error is not None:
            raise BenchError(f"topic {t} does not exist")
        out += [TopicPartition(t, p) for p in sorted(md.topics[t].partitions)]
    return out


def end_offsets(topics: Sequence[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": "peer-bench-watermarks"})
    try:
        out: dict[tuple[str, int], int] = {}
        for tp in partitions_of(topics):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if low != 0:
                raise BenchError(f"{tp.topic}[{tp.partition}] starts at {low}, not 0 (retention?)")
            out[(tp.topic, tp.partition)] = high
        return out
    finally:
        consumer.close()


def committed(a: AdminClient, group: str, parts: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    tps = [TopicPartition(t, p) for t, p in parts]
    futs = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])
    res = futs[group].result(timeout=30)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}


def delete_groups(groups: Sequence[str]) -> None:
    if not groups:
        return
    a = admin()  # keep the client alive until its futures are done
    for group, fut in a.delete_consumer_groups(list(groups), request_timeout=30).items():
        try:
            fut.result(timeout=60)
        except (KafkaException, TimeoutError) as exc:
            if "GROUP_ID_NOT_FOUND" not in str(exc):
                say(f"could not delete consumer group {group}: {exc}")


def scan_topics(ends: dict[tuple[str, int], int]) -> dict[str, Any]:
    """Read every message once: per topic messages, tombstones, ops, placeholder-carrying values."""
    stats: dict[str, dict[str, int]] = {t: {"messages": 0, "tombstones": 0} for t in TOPICS}
    consumer = Consumer(
        {
            "bootstrap.servers": KAFKA,
            "group.id": f"peer-bench-scan-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, 0) for (t, p), high in ends.items() if high > 0])
        remaining = {tp: high for tp, high in ends.items() if high > 0}
        marker = PLACEHOLDER.encode()
        while remaining:
            for msg in consumer.consume(1000, timeout=5):
                if msg.error():
                    raise BenchError(f"scan: {msg.error()}")
                tp = (str(msg.topic()), int(msg.partition() or 0))
                s = stats[tp[0]]
                s["messages"] += 1
                value = msg.value()
                if value is None:
                    s["tombstones"] += 1
                else:
                    for op in "crud":
                        if f'"op":"{op}"'.encode() in value:
                            s[f"op_{op}"] = s.get(f"op_{op}", 0) + 1
                            break
                    if marker in value:
                        s["with_placeholder"] = s.get("with_placeholder", 0) + 1
                if tp in remaining and int(msg.offset() or 0) + 1 >= remaining[tp]:
                    del remaining[tp]
    finally:
        consumer.close()
    total = {
        k: sum(s.get(k, 0) for s in stats.values())
        for k in ("messages", "tombstones", "op_c", "op_u", "op_d", "op_r", "with_placeholder")
    }
    return {"per_topic": stats, "total": total}


# ---------------------------------------------------------------- source and backlog
def sizes_for(events: int) -> dict[str, int]:
    """Row counts so that the backlog is at least `events` Kafka messages (about 971.5 per unit)."""
    unit = max(1, math.ceil(events / 970))
    return {"accounts": 150 * unit, "entries": 400 * unit, "documents": 20 * unit}


def setup_source(partitions: int) -> None:
    remove_sink_connectors()  # left by an interrupted run
    delete_connector(CONNECTOR, reset_offsets=True)
    drop_slot()
    delete_topics()
    say(f"recreating source database {SOURCE_DB} with publication {PUBLICATION}")
    recreate_database("source", SOURCE_DB)
    with psycopg.connect(conninfo("source", SOURCE_DB), autocommit=True) as conn:
        conn.execute(SCHEMA_DDL)
        if not role_exists(conn, DBZ_USER):
            conn.execute(
                sql.SQL("CREATE ROLE {} WITH LOGIN REPLICATION PASSWORD {}").format(
                    sql.Identifier(DBZ_USER), sql.Literal(DBZ_PASSWORD)
                )
            )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(SOURCE_DB), sql.Identifier(DBZ_USER)
            )
        )
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {0} TO {1}; GRANT SELECT ON ALL TABLES IN SCHEMA {0} TO {1}"
            ).format(sql.Identifier(SCHEMA), sql.Identifier(DBZ_USER))
        )
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(PUBLICATION), sql.SQL(", ").join(t.ident for t in TABLES)
            )
        )
    create_topics(partitions)
    say(f"creating connector {CONNECTOR}")
    rest("PUT", f"/connectors/{CONNECTOR}/config", source_connector_config())

    def running() -> bool:
        st = connector_status(CONNECTOR)
        if st is None:
            return False
        tasks = st.get("tasks", [])
        for t in tasks:
            if t["state"] == "FAILED":
                raise BenchError(f"{CONNECTOR} task failed: {str(t.get('trace'))[:800]}")
        return (
            st["connector"]["state"] == "RUNNING"
            and bool(tasks)
            and all(t["state"] == "RUNNING" for t in tasks)
        )

    wait_until(running, 120, f"{CONNECTOR} to run")
    with psycopg.connect(conninfo("source", "postgres"), autocommit=True) as conn:
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
    try:
        wait_until(
            lambda: rest("GET", f"/connectors/{CONNECTOR}/offsets")["offsets"], 30, "a first source offset"
        )
    except BenchError:
        say("no source offset yet after 30s; loading anyway (the slot captures the changes)")


def drop_slot() -> None:
    with psycopg.connect(conninfo("source", "postgres"), autocommit=True) as conn:

        def inactive() -> bool:
            got = conn.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)
            ).fetchone()
            return got is None or got[0] is None

        if not inactive():
            try:
                wait_until(inactive, 30, f"slot {SLOT} to be released")
            except BenchError:
                conn.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                    " WHERE slot_name = %s AND active_pid IS NOT NULL",
                    (SLOT,),
                )
                wait_until(inactive, 30, f"slot {SLOT} to be released")
        if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))
            say(f"dropped replication slot {SLOT}")


ACCOUNT_ID = "md5('a' || {g})::uuid"
ENTRY_KEY = "md5('a' || (1 + ({e} - 1) % %(accounts)s))::uuid, (1 + ({e} - 1) / %(accounts)s)::int"

# (what, SQL with %(lo)s/%(hi)s and the sizes, table it is chunked over, messages per row)
LOAD_STEPS: list[tuple[str, str, str, int]] = [
    (
        "insert accounts",
        f"""INSERT INTO app.accounts (id, name, status, balance, active, opened_at, updated_at)
        SELECT {ACCOUNT_ID.format(g="g")},
          (ARRAY['Anna','Zoë','José','Łukasz','李','O''Brien','Søren'])[1 + g % 7] || ' ' || g,
          CASE WHEN g % 5 = 0 THEN NULL ELSE (ARRAY['new','open','frozen'])[1 + g % 3] END,
          (g % 1000000) / 100.0 - 2500,
          g % 7 <> 0,
          timestamptz '2024-01-01 00:00+00' + g * interval '61.123457 seconds',
          NULL
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g""",
        "accounts",
        1,
    ),
    (
        "insert entries",
        f"""INSERT INTO app.entries (account_id, seq, amount, booked_at, memo)
        SELECT {ENTRY_KEY.format(e="e")}, ((e * 37) % 200000) / 100.0 - 1000,
          timestamptz '2024-02-01 00:00+00' + e * interval '7.654321 seconds',
          CASE WHEN e % 3 = 0 THEN NULL ELSE 'memo ' || e END
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS e""",
        "entries",
        1,
    ),
    (
        "insert documents (~10 kB body each)",
        """INSERT INTO app.documents (id, title, body, version, updated_at)
        SELECT g, 'Doc ' || g,
          (SELECT string_agg(md5(g::text || '-' || i), '') FROM generate_series(1, 320) AS i),
          1, timestamptz '2024-03-01 00:00+00' + g * interval '1 second'
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g""",
        "documents",
        1,
    ),
    (
        "update accounts (2 of 3)",
        f"""UPDATE app.accounts SET balance = balance + 1.5,
          status = CASE WHEN status = 'frozen' THEN NULL ELSE 'open' END,
          updated_at = timestamptz '2024-06-01 00:00+00' + opened_at::time::interval
        WHERE id IN (SELECT {ACCOUNT_ID.format(g="g")}
                     FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g WHERE g % 3 <> 0)""",
        "accounts",
        1,
    ),
    (
        "update entries (1 of 4)",
        f"""UPDATE app.entries SET amount = amount * 2, memo = coalesce(memo, '') || ' ünïcode'
        WHERE (account_id, seq) IN (SELECT {ENTRY_KEY.format(e="e")}
            FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS e WHERE e % 4 = 0)""",
        "entries",
        1,
    ),
    (
        "update documents, body untouched (placeholder)",
        """UPDATE app.documents SET version = version + 1, title = title || '.',
          updated_at = updated_at + interval '1 hour'
        WHERE id BETWEEN %(lo)s AND %(hi)s""",
        "documents",
        1,
    ),
    (
        "update documents with a new body (1 of 10)",
        """UPDATE app.documents SET body = upper(body), version = version + 1
        WHERE id BETWEEN %(lo)s AND %(hi)s AND id % 10 = 0""",
        "documents",
        1,
    ),
    (
        "update documents again, body untouched (placeholder)",
        """UPDATE app.documents SET version = version + 1, updated_at = updated_at + interval '1 minute'
        WHERE id BETWEEN %(lo)s AND %(hi)s""",
        "documents",
        1,
    ),
    (
        "delete entries (1 of 7)",
        f"""DELETE FROM app.entries
        WHERE (account_id, seq) IN (SELECT {ENTRY_KEY.format(e="e")}
            FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS e WHERE e % 7 = 0)""",
        "entries",
        2,
    ),
    (
        "delete accounts (1 of 20)",
        f"""DELETE FROM app.accounts
        WHERE id IN (SELECT {ACCOUNT_ID.format(g="g")}
                     FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g WHERE g % 20 = 0)""",
        "accounts",
        2,
    ),
    (
        "delete documents (1 of 25)",
        "DELETE FROM app.documents WHERE id BETWEEN %(lo)s AND %(hi)s AND id % 25 = 0",
        "documents",
        2,
    ),
    (
        "re-insert deleted entries (1 of 14)",
        f"""INSERT INTO app.entries (account_id, seq, amount, booked_at, memo)
        SELECT {ENTRY_KEY.format(e="e")}, e % 1000 + 0.01, timestamptz '2025-01-01 00:00+00', 'again ' || e
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS e WHERE e % 14 = 0""",
        "entries",
        1,
    ),
]


def chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size - 1, total)) for lo in range(1, total + 1, size)]


def load_backlog(sizes: dict[str, int], chunk: int) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    expected = 0
    with psycopg.connect(conninfo("source", SOURCE_DB), autocommit=True) as conn:
        for what, text, over, per_row in LOAD_STEPS:
            stmt = text.replace("% ", "%% ")  # the modulo operator, not a placeholder
            size = chunk if over != "documents" else max(1, chunk // 10)
            started = time.monotonic()
            rows = 0
            for lo, hi in chunks(sizes[over], size):
                with conn.transaction():
                    rows += conn.execute(stmt, {**sizes, "lo": lo, "hi": hi}).rowcount
            expected += rows * per_row
            steps[what] = {"rows": rows, "s": round(time.monotonic() - started, 2)}
            say(f"source: {what}: {rows} rows in {steps[what]['s']}s")
        # The fence: a no-op update (one more message); its LSN is inside the last transaction.
        with conn.transaction():
            conn.execute(
                "UPDATE app.accounts SET active = active"
                " WHERE id = (SELECT id FROM app.accounts ORDER BY id LIMIT 1)"
            )
            got = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
            assert got is not None
            fence = int(got[0])
        expected += 1
    say(
        f"source load done ({expected} messages expected); waiting until Connect has flushed past LSN {fence}"
    )
    started = time.monotonic()
    last = [0.0]

    def flushed() -> bool:
        if time.monotonic() - last[0] > 15:
            last[0] = time.monotonic()
            say(
                f"  connect: lsn_proc={connect_flushed_lsn()}"
                f" messages so far={sum(end_offsets(TOPICS).values())}"
            )
        return connect_flushed_lsn() >= fence

    wait_until(flushed, 3600, f"Connect to flush past LSN {fence}", every_s=1)
    return {
        "steps": steps,
        "expected_messages": expected,
        "fence_lsn": fence,
        "capture_wait_s": round(time.monotonic() - started, 1),
    }


def stop_source_connector() -> None:
    """After the fence the source is not needed: a stopped connector adds no load during the runs."""
    if connector_state(CONNECTOR) not in (None, "STOPPED"):
        rest("PUT", f"/connectors/{CONNECTOR}/stop")
        wait_until(lambda: connector_state(CONNECTOR) == "STOPPED", 120, f"{CONNECTOR} to stop")
        say(f"stopped connector {CONNECTOR} (kept until cleanup)")


# ---------------------------------------------------------------- the identity spec
def write_spec() -> Path:
    spec = {
        "version": 1,
        "topic_prefix": PREFIX,
        "defaults": {"unmapped_source_columns": "fail"},
        "tables": [
            {
                "id": t.name,
                "source": t.qualified,
                "target": t.qualified,
                "key": {k: k for k in t.key},
                "delete": {"policy": "hard"},
                "truncate": {"policy": "truncate"},
                "unmapped_source_columns": "fail",
                "columns": {c: {"from": c} for c, _ in t.columns},
            }
            for t in TABLES
        ],
    }
    header = "# GENERATED by bench/peer.py: the identity mapping of peer_src (edit peer.py, not this file).\n"
    SPEC_PATH.write_text(header + yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return SPEC_PATH


# ---------------------------------------------------------------- processes, CPU
def proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def proc_cpu_s(pid: int, children: bool = False) -> float:
    f = proc_stat(pid)
    if f is None:
        return 0.0
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if children else 0)
    return ticks / CLK


def proc_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def is_connect_worker(pid: int) -> bool:
    try:
        return b"ConnectDistributed" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


def connect_pid() -> int | None:
    """The Connect worker JVM: the stack's pid file, else the process running ConnectDistributed."""
    pid = read_pid(STACK_DIR / "run" / "connect.pid")
    if pid is not None and is_connect_worker(pid):
        return pid
    out = subprocess.run(["pgrep", "-f", "ConnectDistributed"], capture_output=True, text=True, check=False)
    pids = [int(x) for x in out.stdout.split() if is_connect_worker(int(x))]
    return pids[0] if pids else None


def postmaster_pid(side: str) -> int | None:
    pid = read_pid(STACK_DIR / "pg" / side / "postmaster.pid")
    return pid if pid is not None and proc_stat(pid) is not None else None


def stack_pids() -> dict[str, int | None]:
    """Pids of the stack's processes; one that changes during a run was restarted (by someone else)."""
    return {
        "target_pg": postmaster_pid("target"),
        "source_pg": postmaster_pid("source"),
        "connect": connect_pid(),
        "kafka": read_pid(STACK_DIR / "run" / "kafka.pid"),
    }


def cluster_cpu_s(postmaster: int | None) -> float:
    """CPU of a PostgreSQL cluster: the postmaster, its reaped children (cutime) and live children."""
    if postmaster is None:
        return 0.0
    total = proc_cpu_s(postmaster, children=True)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = proc_stat(int(entry))
            if f is not None and int(f[1]) == postmaster:
                total += (int(f[11]) + int(f[12])) / CLK
    return total


def loadavg() -> list[float]:
    with open("/proc/loadavg", encoding="ascii") as f:
        return [float(x) for x in f.read().split()[:3]]


@dataclass(frozen=True)
class Probe:
    """One reading: monotonic time, the stack's pids, the JVM's and the target cluster's CPU seconds."""

    t: float
    pids: dict[str, int | None]
    jvm_cpu: float
    pg_cpu: float

    @staticmethod
    def take() -> Probe:
        pids = stack_pids()
        jvm = pids["connect"]
        return Probe(
            time.monotonic(),
            pids,
            proc_cpu_s(jvm) if jvm else 0.0,
            cluster_cpu_s(pids["target_pg"]),
        )

    def restarted(self, later: Probe) -> list[str]:
        return [k for k, v in self.pids.items() if later.pids.get(k) != v]

    def jvm_delta(self, later: Probe) -> float | None:
        ok = self.pids["connect"] is not None and later.pids["connect"] == self.pids["connect"]
        return later.jvm_cpu - self.jvm_cpu if ok else None

    def pg_delta(self, later: Probe) -> float | None:
        ok = self.pids["target_pg"] is not None and later.pids["target_pg"] == self.pids["target_pg"]
        return later.pg_cpu - self.pg_cpu if ok else None


def idle_rates(seconds: float) -> dict[str, Any]:
    """CPU rates (CPU-s per s) of the JVM and the target cluster while nothing of ours runs."""
    p0 = Probe.take()
    time.sleep(seconds)  # the idle window
    p1 = Probe.take()
    dt = p1.t - p0.t
    j, g = p0.jvm_delta(p1), p0.pg_delta(p1)
    return {
        "window_s": round(dt, 2),
        "jvm_cpu_per_s": None if j is None else round(j / dt, 4),
        "target_pg_cpu_per_s": None if g is None else round(g / dt, 4),
    }


def rounded(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(v, digits)


# ---------------------------------------------------------------- contenders
@dataclass
class Ctx:
    args: argparse.Namespace
    messages: int
    ends: dict[tuple[str, int], int]
    truth: SourceTruth
    log_dir: Path
    groups: list[str] = field(default_factory=list)  # consumer groups created (deleted at cleanup)
    copy_data: dict[str, tuple[list[tuple[str, str]], list[tuple[Any, ...]]]] | None = None


def daemon_env(dbname: str, group: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    out.update(
        {
            "PYTHONPATH": str(CHECKOUT),
            "REPLICATOR_KAFKA__BOOTSTRAP_SERVERS": KAFKA,
            "REPLICATOR_SOURCE__HOST": SRC_HOST,
            "REPLICATOR_SOURCE__PORT": SRC_PORT,
            "REPLICATOR_SOURCE__DBNAME": SOURCE_DB,
            "REPLICATOR_SOURCE__USER": ADMIN_USER,
            "REPLICATOR_SOURCE__PASSWORD": ADMIN_PASSWORD,
            "REPLICATOR_TARGET__HOST": TGT_HOST,
            "REPLICATOR_TARGET__PORT": TGT_PORT,
            "REPLICATOR_TARGET__DBNAME": dbname,
            "REPLICATOR_TARGET__USER": TGT_USER,
            "REPLICATOR_TARGET__PASSWORD": TGT_PASSWORD,
            "REPLICATOR_MAPPING": str(SPEC_PATH),
            "REPLICATOR_KAFKA__GROUP_ID": group,
            "REPLICATOR_LOG_FORMAT": "json",
        }
    )
    return out


def replicator_cmd(
    *args: str, dbname: str, group: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        cwd=CHECKOUT,
        env=daemon_env(dbname, group),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "".join(path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-lines:])
    except FileNotFoundError:
        return ""


def run_replicators(ctx: Ctx, label: str, dbname: str, processes: int) -> dict[str, Any]:
    fresh_target(dbname)
    group = f"peer-bench-{label}-{uuid.uuid4().hex[:8]}"
    ctx.groups.append(group)
    for _ in range(3):  # init is idempotent; the target may be restarting (someone else's test)
        init = replicator_cmd("init", dbname=dbname, group=group)
        if init.returncode == 0:
            break
        time.sleep(5)  # before the next attempt
    if init.returncode != 0:
        return {
            "status": "failed",
            "reason": f"replicator init exited {init.returncode}: {init.stderr.strip()[-800:]}",
        }
    idle = idle_rates(ctx.args.idle_s)
    load0 = loadavg()
    say(f"{label}: {processes} replicator process(es) into {dbname}, group {group}")
    probe0 = Probe.take()
    procs: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    started = time.monotonic()
    for i in range(processes):
        out, err = ctx.log_dir / f"{dbname}-{i}.out.json", ctx.log_dir / f"{dbname}-{i}.log"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            p = subprocess.Popen(
                [sys.executable, "-m", "replicator", "run", "--stop-when-caught-up", "--json"],
                cwd=CHECKOUT,
                env=daemon_env(dbname, group),
                stdout=fo,
                stderr=fe,
            )
        procs.append((p, out, err))
    ACTIVE_PIDS.update(p.pid for p, _, _ in procs)
    finished: dict[int, dict[str, Any]] = {}
    deadline = started + ctx.args.timeout
    timed_out = False
    while len(finished) < len(procs):
        for p, _, _ in procs:
            if p.pid in finished:
                continue
            wpid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if wpid:
                p.returncode = os.waitstatus_to_exitcode(status)
                ACTIVE_PIDS.discard(p.pid)
                finished[p.pid] = {
                    "exit": p.returncode,
                    "cpu_s": ru.ru_utime + ru.ru_stime,
                    "maxrss_kb": ru.ru_maxrss,
                    "wall_s": time.monotonic() - started,
                }
        if time.monotonic() > deadline and not timed_out:
            timed_out = True
            for p, _, _ in procs:
                if p.pid not in finished:
                    p.send_signal(signal.SIGTERM)  # finishes its batch and exits
            deadline = time.monotonic() + 60
        elif timed_out and time.monotonic() > deadline:
            for p, _, _ in procs:
                if p.pid not in finished:
                    p.kill()
        time.sleep(0.05)  # reap poll interval
    wall = time.monotonic() - started
    probe1 = Probe.take()
    load1 = loadavg()
    per_proc: list[dict[str, Any]] = []
    totals: dict[str, Any] = {
        "events": 0,
        "tombstones": 0,
        "error_records": 0,
        "skipped_older": 0,
        "applied": {},
    }
    failures: list[str] = []
    for p, out, err in procs:
        f = finished[p.pid]
        rec: dict[str, Any] = {**f, "log": str(err)}
        try:
            t = json.loads(out.read_text(encoding="utf-8") or "null")
        except ValueError:
            t = None
        if f["exit"] != 0 or not isinstance(t, dict):
            failures.append(f"process {p.pid} exited {f['exit']}: {tail(err, 8).strip()[-1200:]}")
        else:
            rec["totals"] = t
            for k in ("events", "tombstones", "error_records", "skipped_older"):
                totals[k] += int(t.get(k, 0))
            for k, v in t.get("applied", {}).items():
                totals["applied"][k] = totals["applied"].get(k, 0) + int(v)
        per_proc.append(rec)
    cpu = sum(f["cpu_s"] for f in finished.values())
    res: dict[str, Any] = {
        "db": dbname,
        "group": group,
        "processes": processes,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "target_pg_cpu_s": rounded(probe0.pg_delta(probe1)),
        "restarted_during_run": probe0.restarted(probe1),
        "peak_rss_mib": round(max(f["maxrss_kb"] for f in finished.values()) / 1024, 1),
        "peak_rss_sum_mib": round(sum(f["maxrss_kb"] for f in finished.values()) / 1024, 1),
        "idle": idle,
        "loadavg_before": load0,
        "loadavg_after": load1,
        "consumed": totals["events"] + totals["tombstones"],
        "daemon_runtime_s": max(
            (float(r["totals"].get("runtime_s", 0)) for r in per_proc if "totals" in r), default=None
        ),
        "totals": totals,
        "processes_detail": per_proc,
    }
    if timed_out:
        failures.insert(0, f"timed out after {ctx.args.timeout:.0f}s (SIGTERM sent)")
    if failures:
        res["status"] = "failed"
        res["reason"] = "; ".join(failures)
    res["check"] = check_target(dbname, ctx.truth)
    finish(res, ctx)
    return res


def finish(res: dict[str, Any], ctx: Ctx) -> None:
    """Derived figures and the status: ok, mismatch (completed, rows differ) or failed."""
    res["messages"] = ctx.messages
    res["messages_per_s"] = round(ctx.messages / res["wall_s"]) if res.get("wall_s") else None
    if res.get("cpu_s") is not None:
        res["cpu_s_per_1m"] = round(res["cpu_s"] / ctx.messages * 1e6, 1)
    check = res.get("check")
    if check is not None:
        res["placeholder_cells"] = check["placeholder_cells"]
        res["checksums_match"] = check["match"]
    if res.get("restarted_during_run"):
        res["disturbed"] = (
            f"restarted during the run (not by this harness): {', '.join(res['restarted_during_run'])}"
        )
    if res.get("status") != "failed":
        if res.get("consumed") not in (None, ctx.messages):
            res["status"] = "failed"
            res["reason"] = f"consumed {res['consumed']} of {ctx.messages} messages"
        else:
            res["status"] = "ok" if check and check["match"] else "mismatch"
    say(
        f"  -> {res['status']}: {res.get('wall_s')}s, {res.get('messages_per_s')} msg/s,"
        f" CPU {res.get('cpu_s')}s ({res.get('cpu_s_per_1m')} per 1M),"
        f" target PG {res.get('target_pg_cpu_s')}s,"
        f" RSS {res.get('peak_rss_mib')} MiB, placeholders {res.get('placeholder_cells')},"
        f" checksums {'match' if res.get('checksums_match') else 'DIFFER'}"
        + (f" ({res['reason'][:300]})" if res.get("reason") else "")
        + (f" DISTURBED: {res['disturbed']}" if res.get("disturbed") else "")
    )


SINK_CONFIGS: dict[str, dict[str, Any]] = {
    "b500-nored": {"batch.size": 500, "use.reduction.buffer": False},
    "b500-red": {"batch.size": 500, "use.reduction.buffer": True},
    "b5000-nored": {"batch.size": 5000, "use.reduction.buffer": False},
    "b5000-red": {"batch.size": 5000, "use.reduction.buffer": True},
}


def sink_config(dbname: str, cfg: dict[str, Any], tasks: int) -> dict[str, str]:
    out = {
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": str(tasks),
        "topics": ",".join(TOPICS),
        "connection.url": f"jdbc:postgresql://{TGT_HOST}:{TGT_PORT}/{dbname}",
        "connection.username": TGT_USER,
        "connection.password": TGT_PASSWORD,
        "insert.mode": "upsert",
        "delete.enabled": "true",
        "primary.key.mode": "record_key",
        "schema.evolution": "none",
        "batch.size": str(cfg["batch.size"]),
        "use.reduction.buffer": str(cfg["use.reduction.buffer"]).lower(),
        # peer.app.accounts -> app.accounts: the router strips the prefix (offsets are committed
        # on the original topic), the format adds the schema. The default ${topic} would be
        # public.peer_app_accounts.
        "transforms": "route",
        "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
        "transforms.route.regex": rf"{PREFIX}\.{SCHEMA}\.(.*)",
        "transforms.route.replacement": "$1",
        "collection.name.format": f"{SCHEMA}.${{topic}}",
        "consumer.override.auto.offset.reset": "earliest",
        # The converters as the source connector has them. Without replace.null.with.default=false
        # on the sink's side too, a NULL in a column with a DEFAULT is written as the default.
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "true",
        "key.converter.replace.null.with.default": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "value.converter.replace.null.with.default": "false",
    }
    if int(cfg["batch.size"]) >= 5000:
        out["consumer.override.max.poll.records"] = str(cfg["batch.size"])
    return out


def masked(cfg: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if "password" in k else v) for k, v in cfg.items()}


def run_sink(ctx: Ctx, label: str, dbname: str, cfg_name: str, tasks: int) -> dict[str, Any]:
    fresh_target(dbname)
    name = f"{SINK_PREFIX}{label}-{uuid.uuid4().hex[:8]}"
    group = f"connect-{name}"
    ctx.groups.append(group)
    cfg = sink_config(dbname, SINK_CONFIGS[cfg_name], tasks)
    idle = idle_rates(ctx.args.idle_s)
    load0 = loadavg()
    say(f"{label}: JDBC sink {cfg_name} tasks.max={tasks} into {dbname}, connector {name}")
    probe0 = Probe.take()
    jvm = probe0.pids["connect"] or 0
    started = time.monotonic()
    res: dict[str, Any] = {
        "db": dbname,
        "connector": name,
        "group": group,
        "sink_config": cfg_name,
        "tasks": tasks,
        "config": masked(cfg),
        "idle": idle,
        "loadavg_before": load0,
    }
    ACTIVE_CONNECTORS.add(name)
    try:
        rest("PUT", f"/connectors/{name}/config", cfg)
    except BenchError as exc:
        ACTIVE_CONNECTORS.discard(name)
        res.update(status="failed", reason=str(exc), wall_s=None)
        finish(res, ctx)
        return res
    parts = list(ctx.ends)
    kafka_admin = admin()
    peak_rss = 0
    last_status = 0.0
    reason = None
    done_offsets: dict[tuple[str, int], int] = {}
    while True:
        now = time.monotonic()
        peak_rss = max(peak_rss, proc_rss_kb(jvm))
        try:
            got = committed(kafka_admin, group, parts)
        except (KafkaException, TimeoutError):
            got = {}
        if all(got.get(p, -1) >= high for p, high in ctx.ends.items() if high > 0):
            done_offsets = got
            break
        if now - last_status > 2:
            last_status = now
            st = connector_status(name) or {}
            failed = [t for t in st.get("tasks", []) if t.get("state") == "FAILED"]
            if st.get("connector", {}).get("state") == "FAILED" or failed:
                trace = str((failed[0] if failed else st["connector"]).get("trace", ""))
                reason = f"task FAILED: {trace[:1500]}"
                done_offsets = got
                break
        if now - started > ctx.args.timeout:
            reason = f"timed out after {ctx.args.timeout:.0f}s"
            done_offsets = got
            break
        time.sleep(0.2)  # committed-offset poll interval (the worker commits every offset.flush.interval.ms)
    wall = time.monotonic() - started
    probe1 = Probe.take()
    load1 = loadavg()
    try:
        delete_connector(name)
    finally:
        ACTIVE_CONNECTORS.discard(name)
    consumed = sum(max(0, done_offsets.get(p, 0)) for p in parts)
    jvm_cpu = probe0.jvm_delta(probe1)
    idle_rate = idle["jvm_cpu_per_s"]
    res.update(
        wall_s=round(wall, 2),
        jvm_cpu_raw_s=rounded(jvm_cpu),
        cpu_s=(
            None if jvm_cpu is None or idle_rate is None else round(max(0.0, jvm_cpu - idle_rate * wall), 2)
        ),
        target_pg_cpu_s=rounded(probe0.pg_delta(probe1)),
        restarted_during_run=probe0.restarted(probe1),
        peak_rss_mib=round(peak_rss / 1024, 1),
        loadavg_after=load1,
        consumed=consumed,
    )
    if reason:
        res.update(status="failed", reason=reason)
    res["check"] = check_target(dbname, ctx.truth)
    finish(res, ctx)
    return res


def column_types(conn: psycopg.Connection[Any], table: Table) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (table.qualified,),
    ).fetchall()
    return [(str(c), str(t)) for c, t in rows]


@pg_retry
def run_copy(ctx: Ctx) -> dict[str, Any]:
    """Binary COPY of the final rows (read once from the source) into truncated tables of peer_copy."""
    if ctx.copy_data is None:
        fresh_target(COPY_DB)
        data: dict[str, tuple[list[tuple[str, str]], list[tuple[Any, ...]]]] = {}
        with psycopg.connect(conninfo("source", SOURCE_DB)) as conn:
            for t in TABLES:
                cols = column_types(conn, t)
                names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in cols)
                data[t.name] = (
                    cols,
                    conn.execute(sql.SQL("SELECT {} FROM {}").format(names, t.ident)).fetchall(),
                )
        ctx.copy_data = data
    data = ctx.copy_data
    idle = idle_rates(ctx.args.idle_s)
    load0 = loadavg()
    say(f"copy: binary COPY of {sum(len(r) for _, r in data.values())} rows into {COPY_DB}")
    per_table: dict[str, Any] = {}
    probe0 = Probe.take()
    total_rows, total_s = 0, 0.0
    with psycopg.connect(conninfo("target", COPY_DB, TGT_USER, TGT_PASSWORD)) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(t.ident for t in TABLES)))
        conn.commit()
        for t in TABLES:
            cols, rows = data[t.name]
            names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in cols)
            started = time.perf_counter()
            stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(t.ident, names)
            with conn.cursor() as cur, cur.copy(stmt) as cp:
                cp.set_types([ty for _, ty in cols])
                for row in rows:
                    cp.write_row(row)
            conn.commit()
            took = time.perf_counter() - started
            per_table[t.name] = {
                "rows": len(rows),
                "s": round(took, 3),
                "rows_per_s": round(len(rows) / took),
            }
            total_rows += len(rows)
            total_s += took
    probe1 = Probe.take()
    res: dict[str, Any] = {
        "db": COPY_DB,
        "rows": total_rows,
        "wall_s": round(total_s, 3),
        "rows_per_s": round(total_rows / total_s),
        "target_pg_cpu_s": rounded(probe0.pg_delta(probe1)),
        "restarted_during_run": probe0.restarted(probe1),
        "tables": per_table,
        "idle": idle,
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
    }
    res["check"] = check_target(COPY_DB, ctx.truth)
    res["placeholder_cells"] = res["check"]["placeholder_cells"]
    res["checksums_match"] = res["check"]["match"]
    res["status"] = "ok" if res["checksums_match"] else "mismatch"
    say(f"  -> {res['status']}: {total_rows} rows in {total_s:.2f}s = {res['rows_per_s']} rows/s")
    return res


# ---------------------------------------------------------------- machine, report
def machine() -> dict[str, Any]:
    import confluent_kafka

    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version()}
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    with open("/proc/meminfo", encoding="utf-8") as f:
        kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    info["memory_gib"] = round(kb / 1024 / 1024, 1)
    info["kernel"] = platform.release()
    info["loadavg_at_start"] = loadavg()
    for side in ("source", "target"):
        info[f"postgresql_{side}"] = server_version(side)
    info["kafka_connect"] = rest("GET", "/").get("version")
    for p in rest("GET", "/connector-plugins"):
        if p["class"].endswith("PostgresConnector"):
            info["debezium_postgres"] = p["version"]
        if p["class"].endswith("JdbcSinkConnector"):
            info["debezium_jdbc_sink"] = p["version"]
    info["psycopg"] = psycopg.__version__
    info["librdkafka"] = confluent_kafka.libversion()[0]
    info["confluent_kafka"] = confluent_kafka.version()[0]
    rev = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=CHECKOUT, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "replicator"],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        check=False,
    )
    info["replicator_checkout"] = str(CHECKOUT)
    info["replicator_commit"] = rev.stdout.strip()
    info["replicator_dirty"] = bool(dirty.stdout.strip())
    modules = subprocess.run(  # as the daemons will import them (PYTHONPATH=CHECKOUT)
        [sys.executable, "-c", "import replicator.compiled as c; print(c.state())"],
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
        capture_output=True,
        text=True,
        check=False,
    )
    info["replicator_per_event_modules"] = modules.stdout.strip() or modules.stderr.strip()[-200:]
    info["connect_worker_offset_flush_interval_ms"] = worker_setting("offset.flush.interval.ms")
    return info


@pg_retry
def server_version(side: str) -> str:
    with psycopg.connect(conninfo(side, "postgres")) as conn:
        got = conn.execute("SHOW server_version").fetchone()
        return str(got[0]) if got else "?"


def worker_setting(key: str) -> str | None:
    try:
        for line in (STACK_DIR / "conf" / "connect.properties").read_text(encoding="utf-8").splitlines():
            if line.startswith(f"{key}="):
                return line.split("=", 1)[1].strip()
    except FileNotFoundError:
        pass
    return None


def counted(r: dict[str, Any]) -> bool:
    """A run that enters the medians: it completed (ok or mismatch) and nothing restarted during it."""
    return r["status"] in ("ok", "mismatch") and not r.get("disturbed")


def med(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in runs if r.get(key) is not None]
    return round(median(vals), 2) if vals else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["label"], []).append(r)
    medians: dict[str, Any] = {}
    for label, rs in groups.items():
        done = [r for r in rs if counted(r)]
        rate_key = "rows_per_s" if rs[0]["contender"] == "copy" else "messages_per_s"
        medians[label] = {
            "runs": len(rs),
            "counted": len(done),
            "statuses": [r["status"] + (" (disturbed)" if r.get("disturbed") else "") for r in rs],
            "rate_per_s": med(done, rate_key),
            "wall_s": med(done, "wall_s"),
            "cpu_s_per_1m": med(done, "cpu_s_per_1m"),
            "target_pg_cpu_s": med(done, "target_pg_cpu_s"),
            "peak_rss_mib": med(done, "peak_rss_mib"),
            "placeholder_cells": med(done, "placeholder_cells"),
        }
    sink_labels = [f"sink {c}" for c in SINK_CONFIGS if medians.get(f"sink {c}", {}).get("rate_per_s")]
    best = max(sink_labels, key=lambda s: medians[s]["rate_per_s"], default=None)

    def ratio(a: str | None, b: str | None, key: str) -> float | None:
        if a is None or b is None or a not in medians or b not in medians:
            return None
        x, y = medians[a].get(key), medians[b].get(key)
        return round(x / y, 3) if x and y else None

    sink3 = next((lb for lb in medians if lb.startswith("sink3")), None)
    sink3_base = f"sink {sink3.split()[1]}" if sink3 else None
    ratios = {
        "sink_best_by_median": best,
        "replicator_vs_sink_best_messages_per_s": ratio("replicator", best, "rate_per_s"),
        "replicator_vs_sink_best_cpu_per_message": ratio("replicator", best, "cpu_s_per_1m"),
        "replicator_vs_copy_rate": ratio("replicator", "copy", "rate_per_s"),
        "sink_best_vs_copy_rate": ratio(best, "copy", "rate_per_s"),
        "replicator_x3_vs_x1_messages_per_s": ratio("replicator x3", "replicator", "rate_per_s"),
        "sink3_vs_same_config_tasks1_messages_per_s": ratio(sink3, sink3_base, "rate_per_s"),
        "replicator_x3_vs_sink3_messages_per_s": ratio("replicator x3", sink3, "rate_per_s"),
    }
    return {"medians": medians, "ratios": ratios}


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def load_str(la: list[float] | None) -> str:
    return "-" if not la else "/".join(f"{x:.2f}" for x in la)


SINK_NOTES = [
    "Sink configuration notes (found while building this harness):",
    "",
    "- Table names: the default `collection.name.format=${topic}` with the default naming strategy"
    " turns `peer.app.accounts` into `peer_app_accounts` (dots become underscores) in the default schema."
    " A RegexRouter strips the prefix and `collection.name.format=app.${topic}` adds the schema; Connect"
    " still commits the offsets of the original topic. `${source.table}` would name change events, but by"
    " the code of DefaultCollectionNamingStrategy (3.6.0.Final) a tombstone has no source block and would be"
    " logged and skipped (not run here).",
    "- NULLs: the source connector's converters have `replace.null.with.default=false`; the sink's own"
    " converters need it too. Without it the sink's JsonConverter replaces a NULL by the column's schema"
    " default: in a 20k smoke run 998 of 2,993 `accounts` rows got `status='new'` instead of NULL.",
    "- TOAST: the sink writes `__debezium_unavailable_value` into `documents.body` for every update that"
    " did not touch the column (no handling of unchanged TOAST values); see the placeholder cells.",
    "- `use.reduction.buffer` is not listed by Connect's validate endpoint for 3.6.0.Final (the property"
    " string is in its JdbcSinkConnectorConfig, and Connect accepts it).",
    "- The first sink run in the worker JVM was slower than later ones (class loading, JIT): 2-3x in the"
    " 20k smoke runs, less at 300k. Hence the untimed warm-up run before round 1.",
]


def diff_summary(check: dict[str, Any]) -> str:
    """One line per differing table: rows missing/extra/differing, and the columns in a sample."""
    parts = []
    for name, e in check["tables"].items():
        if e["match"]:
            continue
        d = e.get("diff", {})
        cols = d.get("columns_in_sample", {})
        how = ", ".join(
            f"{c} ({', '.join(f'{k} {n}' for k, n in kinds.items())})"
            for c, kinds in cols.get("columns", {}).items()
        )
        ex = "; ".join(
            f"{c}: source {v['source']!r} vs target {v['target']!r}"
            for c, v in cols.get("examples", {}).items()
        )
        parts.append(
            f"{name}: {d.get('differing', 0)} rows differ, {d.get('missing', 0)} missing, {d.get('extra', 0)}"
            f" extra"
            + (f"; columns in {cols.get('sample_rows')} sampled rows: {how}" if how else "")
            + (f"; e.g. {ex}" if ex else "")
        )
    return " | ".join(parts)


def report(res: dict[str, Any]) -> str:
    m, b, s = res["machine"], res["backlog"], res["summary"]
    scan = b["scan"]["total"]
    lines = [
        "# Peer benchmark: replicator vs Debezium JDBC sink vs binary COPY",
        "",
        f"Command: `{res['command']}`. Run {res['started']} ({res['elapsed_s']:.0f} s in all),"
        f" {res['rounds']} round(s), interleaved. Machine: {m['nproc']} CPUs ({m['cpu']}),"
        f" {m['memory_gib']} GiB RAM,"
        f" Linux {m['kernel']}; load average at start {load_str(m['loadavg_at_start'])}. PostgreSQL"
        f" {m['postgresql_target']}, Kafka Connect {m['kafka_connect']}, Debezium PostgreSQL"
        f" {m.get('debezium_postgres')}, Debezium JDBC sink {m.get('debezium_jdbc_sink')},"
        f" Python {m['python']}, psycopg {m['psycopg']}, librdkafka {m['librdkafka']}."
        f" Replicator from {m['replicator_checkout']} at"
        f" {m['replicator_commit'][:12]}{' (dirty)' if m['replicator_dirty'] else ''}, per-event"
        f" modules {m.get('replicator_per_event_modules', 'source (not recorded)')}. Everything (both"
        " PostgreSQL clusters, Kafka, Connect, the consumers, this harness, other people's tests)"
        " shares these CPUs.",
        "",
        f"Backlog: {b['messages']:,} Kafka messages in {len(TOPICS)} topics x {b['partitions']} partitions"
        f" ({', '.join(f'{t}={v:,}' for t, v in b['per_topic'].items())}): inserts {scan['op_c']:,}, updates"
        f" {scan['op_u']:,}, deletes {scan['op_d']:,}, tombstones {scan['tombstones']:,};"
        f" {scan['with_placeholder']:,}"
        f" update events carry `{PLACEHOLDER}` for the unchanged TOASTed `documents.body` (~10 kB, STORAGE"
        f" EXTERNAL). Expected from the load's row counts: {fmt(b['source']['expected_messages'])}."
        f" Final source rows: {', '.join(f'{t}={d[0]:,}' for t, d in b['source_rows'].items())}.",
        "",
        "Per run (messages/s = all Kafka messages incl. tombstones ÷ wall; CPU = the consuming process(es):"
        " replicator rusage, sink = Connect JVM delta minus its idle rate; target PG = the target cluster's"
        " CPU during the run; RSS: replicator ru_maxrss (max over processes), sink: JVM VmRSS peak sampled):",
        "",
        "| round | contender | status | wall s | msg/s (COPY: rows/s) | CPU-s | CPU-s per 1M msg"
        " | target PG CPU-s | peak RSS MiB | placeholder cells | checksums | load before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        rate = r.get("rows_per_s") if r["contender"] == "copy" else r.get("messages_per_s")
        lines.append(
            f"| {r['round']} | {r['label']} | {r['status']}{' (disturbed)' if r.get('disturbed') else ''} |"
            f" {fmt(r.get('wall_s'), 2)} | {fmt(rate)} |"
            f" {fmt(r.get('cpu_s'))} | {fmt(r.get('cpu_s_per_1m'))} | {fmt(r.get('target_pg_cpu_s'))} |"
            f" {fmt(r.get('peak_rss_mib'))} | {fmt(r.get('placeholder_cells'))} |"
            f" {'match' if r.get('checksums_match') else ('differ' if 'checksums_match' in r else '-')} |"
            f" {load_str(r.get('loadavg_before'))} → {load_str(r.get('loadavg_after'))} |"
        )
    lines += [
        "",
        "Medians over the counted runs of each contender (completed: ok or mismatch; not disturbed by a"
        " restart of a stack process during the run):",
        "",
        "| contender | counted of runs (status) | msg/s (COPY: rows/s) | wall s | CPU-s per 1M msg"
        " | target PG CPU-s | peak RSS MiB | placeholder cells |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, md in s["medians"].items():
        lines.append(
            f"| {label} | {md['counted']} of {md['runs']} ({', '.join(md['statuses'])}) |"
            f" {fmt(md['rate_per_s'])} |"
            f" {fmt(md['wall_s'], 2)} | {fmt(md['cpu_s_per_1m'])} | {fmt(md['target_pg_cpu_s'])} |"
            f" {fmt(md['peak_rss_mib'])} | {fmt(md['placeholder_cells'], 0)} |"
        )
    r = s["ratios"]
    lines += [
        "",
        "Ratios of medians:",
        "",
        "| ratio | value |",
        "|---|---|",
        f"| best sink configuration (median msg/s) | {r['sink_best_by_median'] or '-'} |",
        f"| replicator ÷ best sink, msg/s | {fmt(r['replicator_vs_sink_best_messages_per_s'], 3)} |",
        "| replicator ÷ best sink, CPU per message |"
        f" {fmt(r['replicator_vs_sink_best_cpu_per_message'], 3)} |",
        f"| replicator msg/s ÷ COPY rows/s | {fmt(r['replicator_vs_copy_rate'], 3)} |",
        f"| best sink msg/s ÷ COPY rows/s | {fmt(r['sink_best_vs_copy_rate'], 3)} |",
        f"| 3 replicator processes ÷ 1, msg/s | {fmt(r['replicator_x3_vs_x1_messages_per_s'], 3)} |",
        "| sink tasks.max=3 ÷ same config tasks.max=1, msg/s |"
        f" {fmt(r['sink3_vs_same_config_tasks1_messages_per_s'], 3)} |",
        "| 3 replicator processes ÷ sink tasks.max=3, msg/s |"
        f" {fmt(r['replicator_x3_vs_sink3_messages_per_s'], 3)} |",
        "",
    ]
    warm = res.get("warmup")
    if warm:
        lines += [
            f"Warm-up (untimed, not in the medians): sink {warm.get('sink_config')} {warm['status']},"
            f" {fmt(warm.get('wall_s'), 2)} s, {fmt(warm.get('messages_per_s'))} msg/s,"
            f" {fmt(warm.get('cpu_s_per_1m'))} CPU-s per 1M msg.",
            "",
        ]
    problems = [x for x in res["runs"] if x["status"] != "ok" or x.get("disturbed")]
    if problems:
        lines += ["Runs that did not end ok:", ""]
        for x in problems:
            lines.append(
                f"- round {x['round']} {x['label']} (attempt {x.get('attempt', 1)}): {x['status']}"
                + (f"; {x['disturbed']}" if x.get("disturbed") else "")
                + (f"; {x['reason'][:600]}" if x.get("reason") else "")
                + (f"; {diff_summary(x['check'])}" if x.get("check") and not x["check"]["match"] else "")
            )
        lines.append("")
    sink_cfg = next((x["config"] for x in res["runs"] if x.get("config")), None)
    if sink_cfg:
        fixed = {
            k: v for k, v in sink_cfg.items() if k not in ("batch.size", "use.reduction.buffer", "tasks.max")
        }
        fixed["connection.url"] = fixed.get("connection.url", "").rsplit("/", 1)[0] + "/<target db>"
        lines += [
            "JDBC sink configuration (besides batch.size, use.reduction.buffer, tasks.max and, for batch.size"
            " 5000, consumer.override.max.poll.records=5000): "
            + ", ".join(f"`{k}={v}`" for k, v in fixed.items() if k != "consumer.override.max.poll.records")
            + ".",
            "",
            *SINK_NOTES,
            "",
        ]
    lines += [
        f"Mapping check of bench/peer.yaml: exit {res.get('mapping_check', {}).get('exit')}. Cleanup:"
        f" {res.get('cleanup', 'pending')}. Run logs: {res.get('log_dir')}.",
        "",
        "How it was measured, and what to keep in mind:",
        "",
        "- Every contender drains the same prefilled topics from offset 0 into a freshly created target"
        " database with the source's DDL; the source connector is stopped during the runs.",
        "- Replicator wall time is process launch to exit (`--stop-when-caught-up`: includes interpreter"
        " start, imports, the mapping check and the group join; the daemon's own `runtime_s`, without the"
        " interpreter start, is `daemon_runtime_s` in the JSON). Sink wall time is the connector creation"
        " request to the first"
        " poll (every 0.2 s) that sees the group's committed offsets at the end offsets; the worker commits"
        " sink offsets every offset.flush.interval.ms ="
        f" {m.get('connect_worker_offset_flush_interval_ms')} ms,"
        " so up to about that much is detection delay.",
        "- Sink CPU is the whole Connect worker JVM (it also hosts other people's idle connectors) minus its"
        f" idle rate measured over {res['idle_s']} s just before the run; the raw delta is in the JSON"
        " (`jvm_cpu_raw_s`). The sink's peak RSS is the JVM's (heap pre-sized), not comparable one-to-one"
        " with a Python process's.",
        "- Target PostgreSQL CPU is the whole target cluster (other databases on it included); its idle rate"
        " before each run is in the JSON (`idle.target_pg_cpu_per_s`).",
        "- Checksums: md5 over the md5 of each row's text, ordered by the key, TimeZone=UTC, same SQL on"
        " source and target. The sink writes the TOAST placeholder into `documents.body` (counted in"
        " 'placeholder cells'), so its `documents` table differs from the source by design of that sink.",
        "- COPY reads the final rows from the source once and writes them with psycopg binary COPY into"
        f" truncated tables of `{COPY_DB}` as the `replicator` role; rows/s over the COPY statements only.",
        "- The machine is shared and small; load averages before and after every run are in the table."
        " Nothing here is a claim about speed beyond these runs.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main
ACTIVE_PIDS: set[int] = set()
ACTIVE_CONNECTORS: set[str] = set()


def stop_started() -> None:
    """On an abort: end the processes and sink connectors this run started (by pid / name)."""
    for pid in list(ACTIVE_PIDS):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for name in list(ACTIVE_CONNECTORS):
        try:
            delete_connector(name)
        except BenchError as exc:
            say(f"could not delete {name}: {exc}")


def remove_sink_connectors() -> None:
    for name in rest("GET", "/connectors"):
        if str(name).startswith(SINK_PREFIX):
            delete_connector(str(name))


def cleanup(groups: Sequence[str]) -> None:
    remove_sink_connectors()
    delete_connector(CONNECTOR, reset_offsets=True)
    drop_slot()
    delete_topics()
    delete_groups(groups)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=None, help="Kafka messages in the backlog (default 300000)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2)")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: ~20k messages, 1 round, 3 s idle windows"
    )
    ap.add_argument("--partitions", type=int, default=3, help="partitions per topic (>= 3)")
    ap.add_argument("--chunk", type=int, default=5000, help="rows per source transaction (documents: /10)")
    ap.add_argument("--idle-s", type=float, default=None, help="idle window before each run (default 5 s)")
    ap.add_argument("--timeout", type=float, default=1800, help="per-run timeout in seconds")
    ap.add_argument("--only", default="rep1,sink,copy,rep3,sink3", help="contenders to run (comma list)")
    ap.add_argument("--sink3-config", choices=sorted(SINK_CONFIGS), help="sink config for tasks.max=3")
    ap.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the untimed sink run that warms the Connect JVM (class loading, JIT) before round 1",
    )
    ap.add_argument(
        "--repeat-disturbed",
        type=int,
        default=1,
        help="repeat a run during which a stack process was restarted (by someone else) up to N times",
    )
    ap.add_argument("--keep", action="store_true", help="keep the connector, slot and topics")
    ap.add_argument(
        "--report-only", action="store_true", help="re-render bench/results/peer.md from peer.json; no runs"
    )
    ap.add_argument("--reuse-backlog", action="store_true", help="measure on the topics a --keep run left")
    args = ap.parse_args()
    if args.report_only:
        saved = json.loads((RESULTS / "peer.json").read_text(encoding="utf-8"))
        write_results(saved)
        print(report(saved))
        return 0
    args.events = args.events or (20_000 if args.quick else 300_000)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.idle_s = args.idle_s if args.idle_s is not None else (3.0 if args.quick else 5.0)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    if args.partitions < 3:
        ap.error("--partitions must be at least 3 (three replicator processes / sink tasks)")
    begun = time.monotonic()
    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python3", "bench/peer.py", *sys.argv[1:]]),
        "rounds": args.rounds,
        "idle_s": args.idle_s,
    }
    res["machine"] = machine()
    log_dir = Path(tempfile.mkdtemp(prefix="peer-bench-"))
    res["log_dir"] = str(log_dir)
    groups: list[str] = []
    runs: list[dict[str, Any]] = []
    try:
        sizes = sizes_for(args.events)
        if args.reuse_backlog:
            source: dict[str, Any] = {"reused": True, "expected_messages": None}
        else:
            setup_source(args.partitions)
            source = load_backlog(sizes, args.chunk)
        stop_source_connector()
        ends = end_offsets(TOPICS)
        messages = sum(ends.values())
        parts_per_topic = {t: sum(1 for (tt, _) in ends if tt == t) for t in TOPICS}
        if min(parts_per_topic.values()) < 3:
            raise BenchError(f"topics need >= 3 partitions: {parts_per_topic}")
        scan = scan_topics(ends)
        if scan["total"]["messages"] != messages:
            raise BenchError(f"scan read {scan['total']['messages']} messages, end offsets say {messages}")
        truth = source_truth()
        res["backlog"] = {
            "sizes": sizes,
            "messages": messages,
            "partitions": min(parts_per_topic.values()),
            "per_topic": {t: sum(v for (tt, _), v in ends.items() if tt == t) for t in TOPICS},
            "scan": scan,
            "source": source,
            "source_rows": {t: list(d) for t, d in truth.digests.items()},
        }
        say(
            f"backlog: {messages} messages, {scan['total']['tombstones']} tombstones,"
            f" {scan['total']['with_placeholder']} with the placeholder;"
            f" source rows {res['backlog']['source_rows']}"
        )
        if source.get("expected_messages") not in (None, messages):
            say(
                f"WARNING: {source['expected_messages']} messages expected from the load, {messages} in Kafka"
            )
        write_spec()
        fresh_target(f"{PREFIX}_rep1")  # the check reads the live target catalog too
        chk = replicator_cmd(
            "mapping", "check", str(SPEC_PATH), dbname=f"{PREFIX}_rep1", group="peer-bench-check"
        )
        say(f"mapping check (exit {chk.returncode}): {(chk.stdout + chk.stderr).strip()[-400:]}")
        res["mapping_check"] = {"exit": chk.returncode, "output": (chk.stdout + chk.stderr).strip()[-2000:]}
        ctx = Ctx(args, messages, ends, truth, log_dir, groups)
        sink3_cfg = args.sink3_config
        cfg_names = list(SINK_CONFIGS)
        if not args.no_warmup and only & {"sink", "sink3"}:
            say("warm-up: one untimed sink run (the worker JVM loads and compiles the sink's code once)")
            res["warmup"] = run_sink(ctx, "warmup", f"{PREFIX}_sink_warmup", "b500-nored", 1)
        for rnd in range(1, args.rounds + 1):
            say(f"=== round {rnd} of {args.rounds}")

            def measure(
                run: Callable[[], dict[str, Any]], contender: str, label: str, rnd: int = rnd
            ) -> dict[str, Any]:
                """One run, recorded; a run disturbed by a restart of the stack is recorded and repeated."""
                for attempt in range(args.repeat_disturbed + 1):
                    r = run()
                    r.update(round=rnd, contender=contender, label=label, attempt=attempt + 1)
                    runs.append(r)
                    write_results(  # progress on disk
                        {
                            **res,
                            "runs": runs,
                            "summary": summarize(runs),
                            "elapsed_s": time.monotonic() - begun,
                        }
                    )
                    if not r.get("disturbed"):
                        break
                    say(f"{label}: disturbed ({r['disturbed']}); repeating")
                return r

            order = cfg_names[(rnd - 1) % len(cfg_names) :] + cfg_names[: (rnd - 1) % len(cfg_names)]
            if "rep1" in only:
                measure(lambda: run_replicators(ctx, "rep1", f"{PREFIX}_rep1", 1), "replicator", "replicator")
            for c in order if "sink" in only else []:  # the sink configurations, rotated per round
                measure(
                    functools.partial(run_sink, ctx, c, f"{PREFIX}_sink_{c.replace('-', '_')}", c, 1),
                    "sink",
                    f"sink {c}",
                )
            if "copy" in only:
                measure(lambda: run_copy(ctx), "copy", "copy")
            if sink3_cfg is None:
                done = [r for r in runs if r["contender"] == "sink" and counted(r)]
                sink3_cfg = (
                    max(done, key=lambda r: r["messages_per_s"])["sink_config"] if done else "b500-nored"
                )
                say(f"sink3 uses {sink3_cfg} (best sink configuration of round {rnd} by msg/s)")
            if "rep3" in only:
                measure(
                    lambda: run_replicators(ctx, "rep3", f"{PREFIX}_rep3", 3),
                    "replicator x3",
                    "replicator x3",
                )
            if "sink3" in only:
                cfg3 = sink3_cfg
                measure(
                    functools.partial(run_sink, ctx, f"x3-{cfg3}", f"{PREFIX}_sink3", cfg3, 3),
                    "sink x3",
                    f"sink3 {cfg3} tasks.max=3",
                )
        res["sink3_config"] = sink3_cfg
    except (Exception, KeyboardInterrupt) as exc:  # record what was measured, then the reason
        res["aborted"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, BenchError | KeyboardInterrupt):
            res["aborted_traceback"] = traceback.format_exc()
            traceback.print_exc()
        say(f"ABORTED: {res['aborted']}")
        stop_started()
    res["runs"] = runs
    res["summary"] = summarize(runs)
    res["elapsed_s"] = time.monotonic() - begun
    write_results(res)
    if not args.keep:
        try:
            cleanup(groups)
            res["cleanup"] = "done"
        except (BenchError, KafkaException, TimeoutError) as exc:
            res["cleanup"] = f"incomplete: {exc}"
            say(f"cleanup incomplete: {exc}")
    else:
        res["cleanup"] = "skipped (--keep)"
    write_results(res)
    if "backlog" in res:
        print(report(res))
    return 1 if res.get("aborted") else 0


def write_results(res: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "peer.json").write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
    if "backlog" in res:
        text = report(res)
        if res.get("aborted"):
            text += f"\n**Aborted:** {res['aborted']}\n"
        (RESULTS / "peer.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
