"""The chaos world: its own source database, connector, topics and target, with history logs.

Source (`World.source_db`): pgbench's TPC-B tables (created by `pgbench -i -I dtp`,
pgbench_history given a primary key `hid`, foreign keys added, a small data set
generated in SQL) and the demo shop (deploy/demo/source.sql, seeded by demo.py).
Every captured table gets a `ver` column and two triggers: BEFORE INSERT/UPDATE
stamps `ver` from one sequence (every source write is a distinct, identifiable
version); AFTER INSERT/UPDATE/DELETE appends (seq, ver, table, key, op, xid, at)
to `chaos_log.source_log`. Per key, `seq` order is commit order: a second writer
of a row waits for the first to commit before its row is written and its AFTER
trigger runs.

Target (`World.target_db`): the demo's target schema (deploy/demo/target.sql)
plus `bank.*` with parent/child foreign keys (ledger -> account, teller ->
branch, ...), `ver` columns, and an AFTER INSERT/UPDATE/DELETE trigger on every
mapped table appending (id, table, key, op, ver, deleted, at) to
`chaos_log.target_log`: every write the replicator made, in commit order per key.

Spec: tests/chaos/pgbench.yaml (renames and casts) plus mappings/demo.yaml's
tables with `ver` mapped, under the world's topic prefix (written to a file).
Connector: tests/chaos/connector.json with the world's name, slot and prefix.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from replicator.connect.client import ConnectClient
from replicator.connect.configs import load_connector

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEMO_PY = REPO / "deploy" / "demo" / "demo.py"
DEMO_SPEC = REPO / "mappings" / "demo.yaml"
DEMO_TARGET_SQL = REPO / "deploy" / "demo" / "target.sql"
PGBENCH = Path(f"/usr/lib/postgresql/{os.environ.get('STACK_PG_VERSION', '15')}/bin/pgbench")

BRANCHES, TELLERS, ACCOUNTS = 4, 40, 4000
DEMO_CUSTOMERS = 40

PGBENCH_TABLES = ("pgbench_branches", "pgbench_tellers", "pgbench_accounts", "pgbench_history")
DEMO_TABLES = ("customers", "products", "orders", "order_lines")
SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "public.pgbench_branches": ("bid",),
    "public.pgbench_tellers": ("tid",),
    "public.pgbench_accounts": ("aid",),
    "public.pgbench_history": ("hid",),
    "shop.customers": ("id",),
    "shop.products": ("sku",),
    "shop.orders": ("id",),
    "shop.order_lines": ("order_id", "line_no"),
}


@dataclass(frozen=True)
class Mapped:
    """One target table of the history: its source table, key columns and delete policy."""

    target: str
    source: str
    key: tuple[str, ...]
    delete: str  # hard | soft | ignore
    soft_flag: str = ""  # the column a soft delete sets true


MAPPED = (
    Mapped("bank.branch", "public.pgbench_branches", ("branch_id",), "hard"),
    Mapped("bank.teller", "public.pgbench_tellers", ("teller_id",), "hard"),
    Mapped("bank.account", "public.pgbench_accounts", ("account_id",), "hard"),
    Mapped("bank.ledger", "public.pgbench_history", ("entry_id",), "hard"),
    Mapped("crm.customer", "shop.customers", ("customer_id",), "soft", "is_deleted"),
    Mapped("crm.customer_pii", "shop.customers", ("customer_id",), "hard"),
    Mapped("catalog.product", "shop.products", ("sku",), "hard"),
    Mapped("sales.order", "shop.orders", ("order_id",), "ignore"),
    Mapped("sales.order_line", "shop.order_lines", ("order_id", "line_no"), "hard"),
)

SOURCE_LOG = """
CREATE SCHEMA IF NOT EXISTS chaos_log;
CREATE SEQUENCE IF NOT EXISTS chaos_log.ver;
CREATE TABLE IF NOT EXISTS chaos_log.source_log (
  seq bigserial PRIMARY KEY, ver bigint NOT NULL, tbl text NOT NULL, key text NOT NULL,
  op char(1) NOT NULL, xid xid8 NOT NULL, at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION chaos_log.stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.ver := nextval('chaos_log.ver'); RETURN NEW; END $$;
CREATE OR REPLACE FUNCTION chaos_log.log_source() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r jsonb; v bigint; k text;
BEGIN
  IF TG_OP = 'DELETE' THEN r := to_jsonb(OLD); v := nextval('chaos_log.ver');
  ELSE r := to_jsonb(NEW); v := NEW.ver; END IF;
  SELECT string_agg(r ->> a, '|' ORDER BY o) INTO k FROM unnest(TG_ARGV) WITH ORDINALITY AS t(a, o);
  INSERT INTO chaos_log.source_log (ver, tbl, key, op, xid, at)
  VALUES (v, TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, k, left(TG_OP, 1), pg_current_xact_id(),
          clock_timestamp());
  RETURN NULL;
END $$;
"""

TARGET_LOG = """
CREATE SCHEMA IF NOT EXISTS chaos_log;
CREATE TABLE IF NOT EXISTS chaos_log.target_log (
  id bigserial PRIMARY KEY, tbl text NOT NULL, key text NOT NULL, op char(1) NOT NULL,
  ver bigint, deleted boolean NOT NULL, at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION chaos_log.log_target() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE r jsonb; k text; soft text := TG_ARGV[0];
BEGIN
  IF TG_OP = 'DELETE' THEN r := to_jsonb(OLD); ELSE r := to_jsonb(NEW); END IF;
  SELECT string_agg(r ->> a, '|' ORDER BY o) INTO k
    FROM unnest(TG_ARGV[1:TG_NARGS - 1]) WITH ORDINALITY AS t(a, o);
  INSERT INTO chaos_log.target_log (tbl, key, op, ver, deleted, at)
  VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, k, left(TG_OP, 1),
          CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE (r ->> 'ver')::bigint END,
          TG_OP = 'DELETE' OR (soft <> '' AND coalesce((r ->> soft)::boolean, false)),
          clock_timestamp());
  RETURN NULL;
END $$;
"""

BANK_TARGET = """
CREATE SCHEMA IF NOT EXISTS bank;
CREATE TABLE bank.branch (branch_id bigint PRIMARY KEY, balance bigint NOT NULL, ver bigint);
CREATE TABLE bank.teller (teller_id bigint PRIMARY KEY,
  branch_id bigint NOT NULL REFERENCES bank.branch, balance bigint NOT NULL, ver bigint);
CREATE TABLE bank.account (account_id bigint PRIMARY KEY,
  branch_id bigint NOT NULL REFERENCES bank.branch, balance bigint NOT NULL, note text, ver bigint);
CREATE TABLE bank.ledger (entry_id bigint PRIMARY KEY,
  teller_id bigint NOT NULL REFERENCES bank.teller, branch_id bigint NOT NULL REFERENCES bank.branch,
  account_id bigint NOT NULL REFERENCES bank.account, amount smallint NOT NULL,
  booked_at timestamp, memo text, ver bigint);
"""

# The pgbench scripts: TPC-B (as pgbench's built-in tpcb-like, with this world's sizes), a
# ledger delete (hard deletes downstream), and an injected bad row (negative hid, a delta
# beyond the target's smallint: exactly one error record each).
TPCB = f"""\\set aid random(1, {ACCOUNTS})
\\set bid random(1, {BRANCHES})
\\set tid random(1, {TELLERS})
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
  VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
"""
DELETE_LEDGER = """\\set back random(0, 40)
DELETE FROM pgbench_history WHERE hid = (SELECT max(hid) FROM pgbench_history) - :back;
"""
BAD_ROW = f"""\\set aid random(1, {ACCOUNTS})
\\set bid random(1, {BRANCHES})
\\set tid random(1, {TELLERS})
INSERT INTO pgbench_history (hid, tid, bid, aid, delta, mtime)
  VALUES (-nextval('chaos_log.bad_hid'), :tid, :bid, :aid, 40000 + :aid, CURRENT_TIMESTAMP);
"""


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def load_demo() -> Any:
    spec = importlib.util.spec_from_file_location("cdc_demo_chaos", DEMO_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_until(cond: Any, timeout_s: float, what: str, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)  # polling interval while the condition is checked


@dataclass(frozen=True)
class World:
    name: str  # short id; names the databases, connector, slot, publication and topic prefix
    work: Path  # spec, logs and reports of this world
    accounts: int = ACCOUNTS  # pgbench_accounts rows generated (the snapshot's bulk)

    # ------------------------------------------------------------------ names
    @property
    def source_db(self) -> str:
        return f"chaos_{self.name}"

    @property
    def prefix(self) -> str:
        return f"chaos{self.name}"

    @property
    def connector(self) -> str:
        return f"chaos-{self.name}"

    @property
    def slot(self) -> str:
        return f"cdc_chaos_{self.name}"

    @property
    def publication(self) -> str:
        return f"cdc_chaos_{self.name}"

    @property
    def spec(self) -> Path:
        return self.work / "chaos.yaml"

    @property
    def signal_table(self) -> str:
        return "shop.debezium_signal"

    @property
    def topics(self) -> list[str]:
        return [f"{self.prefix}.public.{t}" for t in PGBENCH_TABLES] + [
            f"{self.prefix}.shop.{t}" for t in DEMO_TABLES
        ]

    # ------------------------------------------------------------------ addresses
    @staticmethod
    def admin(side: str, dbname: str) -> str:
        defaults = {"SOURCE": "55432", "TARGET": "55433"}
        return psycopg.conninfo.make_conninfo(
            host=env(f"REPLICATOR_{side}__HOST", "127.0.0.1"),
            port=env(f"REPLICATOR_{side}__PORT", defaults[side]),
            dbname=dbname,
            user=env("STACK_PG_ADMIN_USER", "postgres"),
            password=env("STACK_PG_ADMIN_PASSWORD", "postgres"),
        )

    def source_admin(self) -> str:
        return self.admin("SOURCE", self.source_db)

    @property
    def kafka(self) -> str:
        return env("REPLICATOR_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:59092")

    @property
    def connect_url(self) -> str:
        return env("REPLICATOR_CONNECT__URL", "http://127.0.0.1:58083")

    def connector_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CDC_CHAOS_CONNECTOR": self.connector,
            "CDC_CHAOS_DBNAME": self.source_db,
            "CDC_CHAOS_PREFIX": self.prefix,
            "CDC_CHAOS_SLOT": self.slot,
            "CDC_CHAOS_PUBLICATION": self.publication,
        }

    # ------------------------------------------------------------------ source
    def create_source(self) -> None:
        """A fresh source database: demo shop + pgbench tables, version stamps, history log."""
        demo = load_demo()
        demo.PUBLICATION = self.publication
        saved = os.environ.get("REPLICATOR_SOURCE__DBNAME")
        os.environ["REPLICATOR_SOURCE__DBNAME"] = self.source_db
        try:
            demo.setup_source(reset=True)
        finally:
            if saved is None:
                os.environ.pop("REPLICATOR_SOURCE__DBNAME", None)
            else:
                os.environ["REPLICATOR_SOURCE__DBNAME"] = saved
        subprocess.run(
            [str(PGBENCH), "-i", "-I", "dtp", "-q", *self.pgbench_conn(), self.source_db],
            check=True,
            capture_output=True,
            env={**os.environ, "PGPASSWORD": env("STACK_PG_ADMIN_PASSWORD", "postgres")},
            timeout=120,
        )
        with psycopg.connect(self.source_admin(), autocommit=True) as conn:
            conn.execute(SOURCE_LOG)
            conn.execute("CREATE SEQUENCE chaos_log.bad_hid")
            conn.execute("ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY")
            conn.execute(
                "ALTER TABLE pgbench_tellers ADD FOREIGN KEY (bid) REFERENCES pgbench_branches;"
                " ALTER TABLE pgbench_accounts ADD FOREIGN KEY (bid) REFERENCES pgbench_branches;"
                " ALTER TABLE pgbench_history ADD FOREIGN KEY (tid) REFERENCES pgbench_tellers,"
                " ADD FOREIGN KEY (bid) REFERENCES pgbench_branches,"
                " ADD FOREIGN KEY (aid) REFERENCES pgbench_accounts"
            )
            for table, key in SOURCE_KEYS.items():
                schema, name = table.split(".")
                ident = sql.Identifier(schema, name)
                conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN ver bigint").format(ident))
                conn.execute(
                    sql.SQL(
                        "CREATE TRIGGER chaos_stamp BEFORE INSERT OR UPDATE ON {}"
                        " FOR EACH ROW EXECUTE FUNCTION chaos_log.stamp()"
                    ).format(ident)
                )
                conn.execute(
                    sql.SQL(
                        "CREATE TRIGGER chaos_log AFTER INSERT OR UPDATE OR DELETE ON {}"
                        " FOR EACH ROW EXECUTE FUNCTION chaos_log.log_source({})"
                    ).format(ident, sql.SQL(", ").join(sql.Literal(k) for k in key))
                )
            with conn.transaction():
                conn.execute(
                    "INSERT INTO pgbench_branches (bid, bbalance) SELECT g, 0 FROM generate_series(1, %s) g",
                    (BRANCHES,),
                )
                conn.execute(
                    "INSERT INTO pgbench_tellers (tid, bid, tbalance)"
                    " SELECT g, 1 + (g - 1) %% %s, 0 FROM generate_series(1, %s) g",
                    (BRANCHES, TELLERS),
                )
                conn.execute(
                    "INSERT INTO pgbench_accounts (aid, bid, abalance, filler)"
                    " SELECT g, 1 + (g - 1) %% %s, 0, CASE WHEN g %% 7 = 0 THEN 'vip ' || g END"
                    " FROM generate_series(1, %s) g",
                    (BRANCHES, self.accounts),
                )
            demo.seed(conn, random.Random(11), DEMO_CUSTOMERS)
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(self.publication),
                    sql.SQL(", ").join(sql.Identifier("public", t) for t in PGBENCH_TABLES),
                )
            )
            conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO debezium")
        for name, text in (("tpcb.sql", TPCB), ("delete.sql", DELETE_LEDGER), ("bad.sql", BAD_ROW)):
            (self.work / name).write_text(text)

    def pgbench_conn(self) -> list[str]:
        return [
            "-h",
            env("REPLICATOR_SOURCE__HOST", "127.0.0.1"),
            "-p",
            env("REPLICATOR_SOURCE__PORT", "55432"),
            "-U",
            env("STACK_PG_ADMIN_USER", "postgres"),
        ]

    # ------------------------------------------------------------------ spec, connector
    def write_spec(self) -> Path:
        bank = yaml.safe_load((HERE / "pgbench.yaml").read_text(encoding="utf-8"))
        demo = yaml.safe_load(DEMO_SPEC.read_text(encoding="utf-8"))
        for table in demo["tables"]:
            table["columns"]["ver"] = {"from": "ver"}
        bank["topic_prefix"] = self.prefix
        bank["tables"] = [*bank["tables"], *demo["tables"]]
        self.spec.write_text(
            "# GENERATED by tests/chaos/world.py: tests/chaos/pgbench.yaml + mappings/demo.yaml (+ ver)\n"
            + yaml.safe_dump(bank, sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
        return self.spec

    def apply_connector(self) -> None:
        spec = load_connector(HERE / "connector.json", self.connector_env())
        ConnectClient(self.connect_url).apply(spec, wait_s=180)

    def snapshot_done(self) -> bool:
        """The connector streams: Connect holds its offset and the offset is no longer a
        snapshot's (Debezium marks those with `snapshot`)."""
        try:
            result = ConnectClient(self.connect_url).offsets(self.connector) or {}
        except Exception:
            return False
        offsets = [o.get("offset") or {} for o in result.get("offsets", [])]
        return bool(offsets) and not any(o.get("snapshot") for o in offsets)

    # ------------------------------------------------------------------ target
    def create_target(self, dbname: str) -> None:
        """A fresh target database: demo target schema + bank with FKs, ver columns, write log."""
        with psycopg.connect(self.admin("TARGET", "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        user = env("REPLICATOR_TARGET__USER", "replicator")
        with psycopg.connect(self.admin("TARGET", dbname), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(user), sql.Literal(env("REPLICATOR_TARGET__PASSWORD", "replicator"))
                    )
                )
            conn.execute(DEMO_TARGET_SQL.read_text())
            conn.execute(BANK_TARGET)
            conn.execute(TARGET_LOG)
            conn.execute(
                sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(dbname), sql.Identifier(user)
                )
            )
            for m in MAPPED:
                schema, name = m.target.split(".")
                ident = sql.Identifier(schema, name)
                if schema != "bank":
                    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN ver bigint").format(ident))
                conn.execute(
                    sql.SQL(
                        "CREATE TRIGGER chaos_log AFTER INSERT OR UPDATE OR DELETE ON {}"
                        " FOR EACH ROW EXECUTE FUNCTION chaos_log.log_target({})"
                    ).format(ident, sql.SQL(", ").join(sql.Literal(a) for a in (m.soft_flag, *m.key)))
                )
            for schema in ("crm", "catalog", "sales", "bank"):
                conn.execute(
                    sql.SQL(
                        "GRANT USAGE ON SCHEMA {0} TO {1}; "
                        "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {0} TO {1}"
                    ).format(sql.Identifier(schema), sql.Identifier(user))
                )

    # ------------------------------------------------------------------ teardown
    def remove(self) -> None:
        """Connector (stopped, offsets reset, deleted), slot, topics and source database."""
        client = ConnectClient(self.connect_url)
        try:
            client.delete(self.connector)
        except Exception as exc:  # already absent
            if "404" not in str(exc) and "not found" not in str(exc).lower():
                raise
        with psycopg.connect(self.admin("SOURCE", "postgres"), autocommit=True) as conn:

            def released() -> bool:
                row = conn.execute(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
                ).fetchone()
                if row is None:
                    return True
                if row[0] is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                    return False
                conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                return True

            wait_until(released, 120, f"slot {self.slot} to be dropped")
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.source_db))
            )
        admin = AdminClient({"bootstrap.servers": self.kafka})
        names = [
            t
            for t in admin.list_topics(timeout=10).topics
            if t.startswith(f"{self.prefix}.") or t == f"__debezium-heartbeat.{self.prefix}"
        ]
        if names:
            for fut in admin.delete_topics(names, operation_timeout=30).values():
                try:
                    fut.result()
                except Exception as exc:
                    if "UNKNOWN_TOPIC" not in str(exc):
                        raise


def connect_rest(url: str, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=10) as r:
            return json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def topic_messages(kafka: str, topics: list[str]) -> list[tuple[str, bytes | None, bytes | None]]:
    """Every message of `topics`, start to end (topic, key, value)."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": "chaos-reader", "enable.auto.commit": False})
    out: list[tuple[str, bytes | None, bytes | None]] = []
    try:
        md = consumer.list_topics(timeout=10)
        ends: dict[tuple[str, int], int] = {}
        for t in topics:
            if t not in md.topics:
                continue
            for p in md.topics[t].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                if high > low:
                    ends[(t, p)] = high
        consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
        remaining = dict(ends)
        deadline = time.monotonic() + 300
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                if msg.error():
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic is not None and partition is not None and offset is not None
                tp = (topic, partition)
                out.append((topic, msg.key(), msg.value()))
                if tp in remaining and offset >= remaining[tp] - 1:
                    del remaining[tp]
    finally:
        consumer.close()
    return out
