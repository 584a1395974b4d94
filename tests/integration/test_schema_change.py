"""A source DDL under load stops its table only; after the spec fix and a restart nothing is lost.

A source schema of its own (a customer table feeding two target tables, an
order table whose rows reference customers, an independent item table), its
own connector and topics (3 partitions each). While a workload writes to all
three tables, `ALTER TABLE` adds, drops or renames a customer column. Proves,
for each of ADD / DROP / RENAME COLUMN (rule `customer.on_schema_change`,
policy stop, the default; `customer_mail.on_schema_change` stops with it, as
it shares the source table):
- the customer partitions stop exactly in front of their first event with the
  new columns: the target-stored checkpoint and the stop's offset equal the
  offset of that event read back from Kafka, in every partition that has one,
  and every other partition is applied to its end;
- the other tables keep flowing (their topics are applied to the end); orders
  of customers inserted after the DDL are held, not error records; fewer than
  5 error records in all (none, in fact);
- `replicator status` shows both customer tables `stopped` with one line of
  reason and fix (exit 1), `drain` fails at once naming the table, `verify`
  says it is stopped (exit 1),
  `mapping check` reports the stopped table against the old spec and says the
  fixed spec matches the event that stopped it; the dry run (`shadow`, DROP)
  predicts the same stops;
- after the spec fix and a restart the target equals the mapped source
  (`verify` clean, no error record to accept, nothing held, no stop left);
- with two instances in the group (ADD), the instance that did not stop a
  partition takes it over when the other leaves and stops it at the same
  offset; with one (DROP, RENAME), a restart before the spec is fixed starts
  (the spec's errors for the changed table are tolerated, logged) and stops the
  table again at the same offsets.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from replicator.config import load_settings
from replicator.connect.client import ConnectClient
from replicator.connect.configs import load_connector
from replicator.core.mapping import compile_spec, load_spec
from replicator.core.model import TableRef
from replicator.pg.catalog import read_catalog
from replicator.run.verify import verify
from replicator.source.signal import write_fence
from tests.integration.pipeline import (
    drop_slot,
    empty_target,
    end_offsets,
    run_cli,
    stored_offsets,
    wait_until,
)
from tests.integration.stack import Stack, one_row

CONNECTOR_FILE = Path(__file__).parent / "connectors-schema" / "schema-postgres.json"
CONTROL = "replicator"

SPEC = """
version: 1
topic_prefix: {prefix}
capture: {{connector: {connector}, signal_table: {schema}.debezium_signal}}
defaults: {{unmapped_source_columns: fail}}
tables:
  - id: customer
    source: {schema}.{kind}_customer
    target: {schema}.customer
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: error}}
    columns:
      id: {{from: id}}
      email: {{from: email}}
      name: {{from: {name_column}}}
{extra_columns}
  - id: customer_mail
    source: {schema}.{kind}_customer
    target: {schema}.customer_mail
    key: {{id: id}}
    unmapped_source_columns: ignore
    delete: {{policy: hard}}
    truncate: {{policy: error}}
    columns: {{id: {{from: id}}, email: {{from: email}}}}
  - id: order
    source: {schema}.{kind}_order
    target: {{schema: {schema}, table: order}}
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: error}}
    columns: {{id: {{from: id}}, customer_id: {{from: customer_id}}, amount: {{from: amount}}}}
  - id: item
    source: {schema}.{kind}_item
    target: {schema}.item
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: error}}
    columns: {{id: {{from: id}}, name: {{from: name}}}}
"""

SOURCE_TABLES = """
CREATE TABLE {s}.{customer} (id bigint PRIMARY KEY, email text NOT NULL, full_name text, note text);
CREATE TABLE {s}.{order} (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES {s}.{customer},
                          amount int);
CREATE TABLE {s}.{item} (id bigint PRIMARY KEY, name text);
"""

TARGET_TABLES = """
CREATE TABLE {s}.customer (id bigint PRIMARY KEY, email text NOT NULL, name text, note text);
CREATE TABLE {s}.customer_mail (id bigint PRIMARY KEY, email text NOT NULL);
CREATE TABLE {s}."order" (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES {s}.customer,
                          amount int);
CREATE TABLE {s}.item (id bigint PRIMARY KEY, name text);
"""

KINDS = ("add", "drop", "rename")


@dataclass(frozen=True)
class World:
    schema: str
    prefix: str
    connector: str

    def topic(self, kind: str, table: str) -> str:
        return f"{self.prefix}.{self.schema}.{kind}_{table}"

    @property
    def signal(self) -> TableRef:
        return TableRef(self.schema, "debezium_signal")


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    run = uuid.uuid4().hex[:6]
    schema, prefix, slot = f"sc{run}", f"sc{run}", f"cdc_sc_{run}"
    s = sql.Identifier(schema)
    tables: list[sql.Composable] = []
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
        for kind in KINDS:
            names = {t: sql.Identifier(f"{kind}_{t}") for t in ("customer", "order", "item")}
            conn.execute(sql.SQL(SOURCE_TABLES).format(s=s, **names))
            tables += [sql.Identifier(schema, f"{kind}_{t}") for t in ("customer", "order", "item")]
            seed(conn, schema, kind)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.debezium_signal (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL,"
                " data varchar(2048))"
            ).format(s)
        )
        tables.append(sql.Identifier(schema, "debezium_signal"))
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {0} TO debezium; GRANT SELECT ON ALL TABLES IN SCHEMA {0} TO debezium;"
                " GRANT INSERT ON {0}.debezium_signal TO debezium"
            ).format(s)
        )
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(f"cdc_{schema}"), sql.SQL(", ").join(tables)
            )
        )
    environ = {
        **os.environ,
        "CDC_SC_CONNECTOR": f"test-sc-{run}",
        "CDC_SC_PREFIX": prefix,
        "CDC_SC_SLOT": slot,
        "CDC_SC_PUBLICATION": f"cdc_{schema}",
        "CDC_SC_SCHEMA": schema,
    }
    connector = load_connector(CONNECTOR_FILE, environ)
    client = ConnectClient(stack.connect_url)
    client.apply(connector, wait_s=120)
    try:
        yield World(schema, prefix, connector.name)
    finally:
        client.delete(connector.name)
        drop_slot(stack, slot)


def seed(conn: psycopg.Connection[Any], schema: str, kind: str) -> None:
    t = {n: sql.Identifier(schema, f"{kind}_{n}") for n in ("customer", "order", "item")}
    for i in range(1, 31):
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(t["customer"]),
            (i, f"c{i}@example.org", f"Customer {i}", f"note {i}"),
        )
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(t["order"]), (i, i, i * 10))
    for i in range(1, 21):
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(t["item"]), (i, f"item {i}"))


@dataclass
class Load:
    """A workload on one scenario's three source tables, from its own thread and session. A DDL
    runs between two of its statements (`alter`); later statements use the new columns."""

    stack: Stack
    schema: str
    kind: str
    name_column: str = "full_name"
    loyalty: bool = False  # write loyalty_points (after ADD COLUMN)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ddl: list[tuple[LiteralString, Callable[[], None], threading.Event]] = field(default_factory=list)
    _thread: threading.Thread | None = None
    errors: list[BaseException] = field(default_factory=list)
    statements: int = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"load-{self.kind}", daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def alter(self, ddl: LiteralString, then: Callable[[], None]) -> None:
        done = threading.Event()
        self._ddl.append((ddl, then, done))
        assert done.wait(60), "the DDL did not run"
        assert not self.errors, self.errors

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(60)
        assert not self.errors, self.errors

    def _table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, f"{self.kind}_{name}")

    def _run(self) -> None:
        rng = random.Random(f"{self.schema}-{self.kind}")
        next_customer, next_order, next_item = 1000, 1000, 1000
        try:
            with psycopg.connect(self.stack.source_admin(), autocommit=True) as conn:
                while not self._stop.is_set():
                    if self._ddl:
                        ddl, then, done = self._ddl.pop(0)
                        conn.execute(sql.SQL(ddl).format(t=self._table("customer")))
                        then()
                        done.set()
                    name = sql.Identifier(self.name_column)
                    extra = sql.SQL(", loyalty_points") if self.loyalty else sql.SQL("")
                    values = sql.SQL(", %s") if self.loyalty else sql.SQL("")
                    params: tuple[Any, ...] = (
                        next_customer,
                        f"n{next_customer}@example.org",
                        f"New {next_customer}",
                    )
                    conn.execute(
                        sql.SQL("INSERT INTO {} (id, email, {}{}) VALUES (%s, %s, %s{})").format(
                            self._table("customer"), name, extra, values
                        ),
                        params + ((next_customer % 7,) if self.loyalty else ()),
                    )
                    who = rng.choice([rng.randint(1, 30), rng.randint(1000, next_customer)])
                    sets = sql.SQL("email = %s, {} = %s").format(name)
                    upd: tuple[Any, ...] = (f"u{self.statements}@example.org", f"Renamed {self.statements}")
                    if self.loyalty:
                        sets = sql.SQL("{}, loyalty_points = %s").format(sets)
                        upd += (self.statements % 11,)
                    conn.execute(
                        sql.SQL("UPDATE {} SET {} WHERE id = %s").format(self._table("customer"), sets),
                        (*upd, who),
                    )
                    parent = rng.randint(max(1000, next_customer - 5), next_customer)
                    conn.execute(
                        sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(self._table("order")),
                        (next_order, parent, rng.randint(1, 500)),
                    )
                    conn.execute(
                        sql.SQL("UPDATE {} SET name = %s WHERE id = %s").format(self._table("item")),
                        (f"item v{self.statements}", rng.randint(1, 20)),
                    )
                    conn.execute(
                        sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(self._table("item")),
                        (next_item, f"item {next_item}"),
                    )
                    if next_item % 3 == 0:
                        conn.execute(
                            sql.SQL("DELETE FROM {} WHERE id = %s").format(self._table("item")),
                            (next_item - 1,),
                        )
                    next_customer, next_order, next_item = next_customer + 1, next_order + 1, next_item + 1
                    self.statements += 1
                    self._stop.wait(0.02)  # the workload's pace (about 50 changes per second per table)
        except BaseException as exc:  # reported by stop()/alter() in the test's thread
            self.errors.append(exc)


@dataclass(frozen=True)
class Site:
    """One scenario: its target database, spec file and consumer group."""

    stack: Stack
    world: World
    kind: str
    dbname: str
    spec: Path
    group: str
    tmp: Path

    def env(self, instance: str = "1") -> dict[str, str]:
        return {
            **os.environ,
            "REPLICATOR_TARGET__DBNAME": self.dbname,
            "REPLICATOR_KAFKA__GROUP_ID": self.group,
            "REPLICATOR_MAPPING": str(self.spec),
            "REPLICATOR_BATCH__MAX_MS": "200",
            "REPLICATOR_HOLD__RETRY_AFTER_S": "1",
            "REPLICATOR_HEARTBEAT_S": "2",
        }

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env(), *args, timeout=timeout)

    def start(self, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "replicator", "run"], env=self.env(), stdout=out, stderr=out
            )
        return proc, log

    def topics(self) -> list[str]:
        return [self.world.topic(self.kind, t) for t in ("customer", "order", "item")]

    def write_spec(self, name_column: str = "full_name", extra: str = "      note: {from: note}") -> None:
        w = self.world
        self.spec.write_text(
            SPEC.format(
                prefix=w.prefix,
                connector=w.connector,
                schema=w.schema,
                kind=self.kind,
                name_column=name_column,
                extra_columns=extra,
            )
        )

    def query(self, query: LiteralString, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.stack.target_admin(self.dbname)) as conn:
            return conn.execute(sql.SQL(query).format(s=sql.Identifier(self.world.schema)), params).fetchall()


@pytest.fixture
def site(stack: Stack, world: World, tmp_path: Path, request: pytest.FixtureRequest) -> Site:
    kind = request.param
    dbname = f"t_sc_{kind}_{uuid.uuid4().hex[:6]}"
    s = sql.Identifier(world.schema)
    empty_target(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION replicator").format(s))
        conn.execute(sql.SQL(TARGET_TABLES).format(s=s))
        conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO replicator").format(s))
    site = Site(
        stack, world, kind, dbname, tmp_path / "spec.yaml", f"sc-{kind}-{uuid.uuid4().hex[:6]}", tmp_path
    )
    site.write_spec()
    return site


def flushed(stack: Stack, world: World) -> None:
    """Everything the source committed so far is in Kafka (a fence row, Connect's offset past it)."""
    settings = load_settings(None)
    _, lsn = write_fence(settings.source, world.signal)
    client = ConnectClient(stack.connect_url)
    wait_until(
        lambda: client.flushed_lsn(world.connector) >= lsn, 120, "the connector to flush past the fence"
    )


def applied_to_end(stack: Stack, site: Site, topics: list[str]) -> bool:
    ends = {p: o for p, o in end_offsets(stack, topics).items() if o > 0}
    stored = stored_offsets(stack, site.dbname, site.group)
    return all(stored.get(p, 0) >= o for p, o in ends.items())


def first_new_events(
    stack: Stack, topic: str, is_new: Callable[[set[str]], bool]
) -> dict[tuple[str, int], int]:
    """Per partition of `topic`, the offset of its first event whose row columns `is_new` says are
    the changed ones (read back from Kafka)."""
    ends = end_offsets(stack, [topic])
    consumer = Consumer(
        {
            "bootstrap.servers": stack.kafka,
            "group.id": f"read-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    found: dict[tuple[str, int], int] = {}
    try:
        consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end > 0])
        left = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1):
                if msg.error() is not None:
                    continue
                p, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
                if offset >= ends[p] - 1:
                    left.discard(p)
                value = msg.value()
                if value is None or p in found:
                    continue
                schema = json.loads(value)["schema"]
                after = next(f for f in schema["fields"] if f["field"] == "after")
                if is_new({f["field"] for f in after["fields"]}):
                    found[p] = offset
        assert not left, f"could not read {topic} to its end"
    finally:
        consumer.close()
    return found


SCENARIOS: dict[str, tuple[LiteralString, Callable[[set[str]], bool], tuple[str, ...]]] = {
    # kind: (DDL, is the event's row of the new shape, the words the stop's reason names)
    "add": (
        "ALTER TABLE {t} ADD COLUMN loyalty_points int",
        lambda f: "loyalty_points" in f,
        ("loyalty_points", "new"),
    ),
    "drop": ("ALTER TABLE {t} DROP COLUMN note", lambda f: "note" not in f, ("note", "not in the event")),
    "rename": (
        "ALTER TABLE {t} RENAME COLUMN full_name TO display_name",
        lambda f: "display_name" in f,
        ("full_name", "display_name", "renamed"),
    ),
}


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60)
    return proc.returncode


@pytest.mark.parametrize("site", KINDS, indirect=True)
def test_a_source_ddl_under_load_stops_its_table_only_and_a_fixed_spec_loses_nothing(
    stack: Stack, world: World, site: Site
) -> None:
    kind = site.kind
    ddl, is_new, words = SCENARIOS[kind]
    customer_topic, order_topic, item_topic = site.topics()
    instances = 2 if kind == "add" else 1
    load = Load(stack, world.schema, kind)
    daemons = [site.start(f"run-{i}") for i in range(instances)]
    try:
        load.start()
        # the daemons are through the snapshot and apply the load before the DDL
        wait_until(
            lambda: site.query("SELECT count(*) FROM {s}.customer WHERE id >= 1000")[0][0] > 20,
            180,
            "catch-up",
        )

        def switch() -> None:
            load.loyalty = kind == "add"
            load.name_column = "display_name" if kind == "rename" else "full_name"

        load.alter(ddl, switch)
        more = load.statements + 150
        wait_until(lambda: load.statements >= more, 120, "the load to go on after the DDL")
        load.stop()
        flushed(stack, world)
        first_new = first_new_events(stack, customer_topic, is_new)
        assert first_new, "no customer event with the new columns reached Kafka"
        ends = end_offsets(stack, [customer_topic])

        def customer_state_reached() -> bool:
            stored = stored_offsets(stack, site.dbname, site.group)
            stops = {
                (t, p): o
                for t, p, o in site.query("SELECT topic, partition, kafka_offset FROM replicator.schema_stop")
            }
            return stops == first_new and all(
                stored.get(p, 0) == first_new.get(p, end) for p, end in ends.items() if end > 0
            )

        # the other tables flow to their end; the customer partitions stop in front of their first
        # event with the new columns (checkpoint and stop offset equal to it), the rest is applied
        wait_until(lambda: applied_to_end(stack, site, [order_topic, item_topic]), 180, "orders and items")
        wait_until(customer_state_reached, 120, f"the customer partitions to stop at {first_new}")
        for proc, log in daemons:
            assert proc.poll() is None, log.read_text()[-3000:]
        errors = site.query(
            "SELECT rule_id, sqlstate, message FROM replicator.error_record WHERE kind = 'error'"
        )
        assert len(errors) < 5, errors
        assert errors == [], errors  # in fact none: the changed rows wait in Kafka, their orders are held
        held_orders = site.query(
            "SELECT count(*) FROM replicator.held_event WHERE target_table = %s", f"{world.schema}.order"
        )
        assert held_orders[0][0] > 0  # orders of customers inserted after the DDL wait for them

        (stop_row,) = site.query(
            "SELECT DISTINCT rule_id, target_tables, reason, fix FROM replicator.schema_stop"
        )
        rule_id, targets, reason, fix = stop_row
        assert rule_id == "customer.on_schema_change"
        assert targets == [f"{world.schema}.customer", f"{world.schema}.customer_mail"]
        assert all(w in reason for w in words), reason
        assert str(site.spec) in fix and "restart `replicator run`" in fix

        status = site.cli("status", "--json")
        assert status.returncode == 1, status.stderr  # a stopped table is a problem
        tables = {t["table"]: t for t in json.loads(status.stdout)["tables"]}
        for name in ("customer", "customer_mail"):
            t = tables[f"{world.schema}.{name}"]
            assert t["state"] == "stopped" and t["reason"] == reason and t["fix"] == fix, t
        assert tables[f"{world.schema}.item"]["state"] == "running"
        assert tables[f"{world.schema}.order"]["state"] == "held"
        text = site.cli("status").stdout.splitlines()
        line = next(x for x in text if x.strip().startswith(f"{world.schema}.customer "))
        assert " stopped at " in line and line.endswith(": reason [1]"), text  # both tables share it
        shared = next(x for x in text if x.strip().startswith("[1] stopped, 2 tables"))
        assert f"{world.schema}.customer, {world.schema}.customer_mail" in shared, shared
        assert f"; fix: {fix}" in shared, shared

        started = time.monotonic()
        drained = site.cli("drain", "--timeout", "120")
        assert drained.returncode == 1 and "stopped at" in drained.stderr, drained.stderr
        assert time.monotonic() - started < 60  # at once, not at its timeout

        if kind == "drop":  # the dry run predicts the same stops, at the same events
            reports = site.tmp / "reports"
            shadow = site.cli(
                "shadow", "--from-group", site.group, "--stop-when-caught-up", "--report-dir", str(reports)
            )
            assert shadow.returncode == 0, shadow.stderr[-3000:]
            (summary,) = reports.glob("shadow-*.summary.json")
            predicted = json.loads(summary.read_text())["stopped"]
            refs = [f"{t}[{p}]@{o}" for (t, p), o in sorted(first_new.items())]
            assert sorted(r for r in refs if any(f"stopped at {r} " in line for line in predicted)) == refs
            # the terminal lists every table previewed, the stopped ones marked with their stop and fix
            # (trial 8: only the stopped table was to be seen)
            said = shadow.stdout.splitlines()
            for name in ("customer", "customer_mail", "order", "item"):
                (row,) = [x for x in said if x.startswith(f"  {world.schema}.{name} ")]
                assert row.split()[1].startswith("STOPPED;") is name.startswith("customer"), said
            assert any(x.startswith("    ") and " stopped at " in x and "; fix: " in x for x in said), said
        verified = site.cli("verify")  # a stopped table is never clean, and says why
        assert verified.returncode == 1 and "stopped at" in verified.stdout, verified.stdout
        old_spec = site.cli("mapping", "check", str(site.spec))
        assert old_spec.returncode == 1
        assert "customer.on_schema_change" in old_spec.stderr and "is stopped" in old_spec.stderr

        if instances > 1:  # the instance that stopped the partitions leaves: the other stops them too
            owner = next(i for i, (_, log) in enumerate(daemons) if "event=stopped" in log.read_text())
            other = daemons[1 - owner]
            before = other[1].read_text().count("event=stopped")
            assert stop(daemons[owner][0]) == 0
            refs = [f"{t}[{p}]@{o}" for (t, p), o in sorted(first_new.items())]
            wait_until(
                lambda: (
                    all(r in other[1].read_text() for r in refs)
                    and other[1].read_text().count("event=stopped") > before
                ),
                120,
                "the other instance to stop the customer partitions",
            )
            assert customer_state_reached()
        else:  # a restart before the spec is fixed: the run starts (the other tables must flow) and
            # judges the stopping events again, stopping at the same offsets
            assert stop(daemons[0][0]) == 0
            daemons.append(site.start("restarted"))
            restarted = daemons[-1][1]
            refs = [f"{t}[{p}]@{o}" for (t, p), o in sorted(first_new.items())]
            wait_until(
                lambda: all(r in restarted.read_text() for r in refs), 120, "the restarted run to stop again"
            )
            assert daemons[-1][0].poll() is None, restarted.read_text()[-3000:]
            assert "the spec and the source disagree on table customer" in restarted.read_text()
            assert customer_state_reached()
    finally:
        if not load.stopped:
            load.stop()
        codes = [stop(proc) for proc, _ in daemons]
    assert all(c == 0 for c in codes), [log.read_text()[-3000:] for _, log in daemons]

    # the fix: the spec reads what the source has now (ADD maps the new column, which the target gets)
    if kind == "add":
        with psycopg.connect(stack.target_admin(site.dbname), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER TABLE {}.customer ADD COLUMN loyalty_points int").format(
                    sql.Identifier(world.schema)
                )
            )
        site.write_spec(extra="      note: {from: note}\n      loyalty_points: {from: loyalty_points}")
    elif kind == "drop":
        site.write_spec(extra="")
    else:
        site.write_spec(name_column="display_name")
    fixed = site.cli("mapping", "check", str(site.spec))
    assert fixed.returncode == 0, fixed.stderr
    assert "this spec matches the event that stopped it" in fixed.stdout, fixed.stdout

    proc, log = site.start("fixed")
    try:
        drained = site.cli("drain", "--timeout", "180")
        assert drained.returncode == 0, drained.stderr + log.read_text()[-3000:]
        wait_until(
            lambda: site.query("SELECT count(*) FROM replicator.held_event")[0][0] == 0, 120, "held orders"
        )
        assert site.query("SELECT count(*) FROM replicator.schema_stop") == [(0,)]
        status = site.cli("status", "--json")
        assert status.returncode == 0, status.stdout
        assert {t["state"] for t in json.loads(status.stdout)["tables"]} == {"running"}
    finally:
        assert stop(proc) == 0, log.read_text()[-3000:]
    assert site.query("SELECT count(*) FROM replicator.error_record") == [(0,)]
    spec = load_spec(site.spec)
    with psycopg.connect(stack.target_admin(site.dbname)) as conn:
        plan = compile_spec(spec, read_catalog(conn, [world.schema]))
    diffs = verify(plan, stack.source_admin(), stack.target_admin(site.dbname), CONTROL)
    for d in diffs:
        assert d.clean(accept_errors=False), d.summary()
        assert d.expected > 0
    if kind == "add":  # the new column's values arrived, cell by cell (verify compared them)
        with psycopg.connect(stack.source_admin()) as conn:
            (source_set,) = one_row(
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE loyalty_points IS NOT NULL").format(
                        sql.Identifier(world.schema, "add_customer")
                    )
                )
            )
        assert source_set > 0
        assert site.query("SELECT count(*) FROM {s}.customer WHERE loyalty_points IS NOT NULL") == [
            (source_set,)
        ]
