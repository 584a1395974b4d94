"""Rows held, and error records made, before a source `DROP COLUMN` / `ADD COLUMN` land under the
spec fixed for it (trial 11: 16 held orders became `unmapped` records, 16 records failed their
retry with "missing from the event").

A parent and a child table (FKs in source and target), their own connector and topics. The daemon
runs with the parent topic paused, so the children's events (carrying `legacy_ref`) are held. It
stops; the source drops `legacy_ref` and adds `priority int DEFAULT 7` to the child, `region text
DEFAULT 'eu'` to the parent; the target follows (the same DEFAULTs) and the spec too (no
`legacy_ref`, listed in `ignore_source_columns`; reads `priority` and `region`); rows written
after the change carry the new columns. The daemon restarts with the parent topic flowing.
Proves: every held child lands with the target's DEFAULT for the column its event predates (the
value the source's ADD COLUMN gave the row), none becomes an `unmapped` or "missing" record; the
parent topic's events, which lagged behind its ADD COLUMN in Kafka, are applied, not stopped; the
one child the target refuses (a CHECK) is one 23514 record, and `errors retry` after the CHECK
is dropped closes it the same way; `verify` is clean, the target equals the source.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from replicator.connect.client import ConnectClient
from replicator.connect.configs import load_connector
from replicator.core.mapping import compile_spec, load_spec
from replicator.pg.catalog import read_catalog
from replicator.run.verify import verify
from tests.integration.pipeline import (
    drop_slot,
    empty_target,
    end_offsets,
    run_cli,
    stored_offsets,
    wait_until,
)
from tests.integration.stack import Stack

CONNECTOR_FILE = Path(__file__).parent / "connectors-fk" / "fk-postgres.json"
CONTROL = "replicator"

SPEC = """
version: 1
topic_prefix: {prefix}
capture: {{connector: {connector}, signal_table: {schema}.debezium_signal}}
defaults: {{unmapped_source_columns: fail}}
tables:
  - id: parent
    source: {schema}.parent
    target: {schema}.parent
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: error}}
    columns: {{id: {{from: id}}, name: {{from: name}}{region}}}
  - id: child
    source: {schema}.child
    target: {schema}.child
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: error}}
{ignore}    columns: {{id: {{from: id}}, parent_id: {{from: parent_id}}, note: {{from: note}}, {last}}}
"""
BEFORE = "legacy_ref: {from: legacy_ref}"  # the spec before the change
# fixed: priority added (read), legacy_ref dropped (listed as ignored: the operator's word that it
# was dropped, not renamed to priority; see `core.schema_change`)
AFTER = "priority: {from: priority}"
IGNORED = "    ignore_source_columns: [legacy_ref]\n"

SOURCE = """
CREATE TABLE {s}.parent (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE {s}.child (id bigint PRIMARY KEY, parent_id bigint NOT NULL REFERENCES {s}.parent,
                        note text, legacy_ref text);
"""
TARGET = """
CREATE TABLE {s}.parent (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE {s}.child (id bigint PRIMARY KEY, parent_id bigint NOT NULL REFERENCES {s}.parent,
                        note text CONSTRAINT not_bad CHECK (note <> 'bad'), legacy_ref text);
"""


@dataclass(frozen=True)
class World:
    schema: str
    prefix: str
    connector: str
    dbname: str
    spec: Path

    def topic(self, table: str) -> str:
        return f"{self.prefix}.{self.schema}.{table}"

    def write_spec(self, last: str, ignore: str = "", region: str = "") -> None:
        self.spec.write_text(
            SPEC.format(
                prefix=self.prefix,
                connector=self.connector,
                schema=self.schema,
                last=last,
                ignore=ignore,
                region=region,
            )
        )


@pytest.fixture(scope="module")
def world(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    run = uuid.uuid4().hex[:6]
    schema, prefix, slot = f"evolve11_oe{run}", f"evolve11_oe{run}", f"cdc_evolve11_oe_{run}"
    s = sql.Identifier(schema)
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
        conn.execute(sql.SQL(SOURCE).format(s=s))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.debezium_signal (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL,"
                " data varchar(2048))"
            ).format(s)
        )
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {0} TO debezium; GRANT SELECT ON ALL TABLES IN SCHEMA {0} TO debezium;"
                " GRANT INSERT ON {0}.debezium_signal TO debezium"
            ).format(s)
        )
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}.parent, {}.child, {}.debezium_signal").format(
                sql.Identifier(f"cdc_{schema}"), s, s, s
            )
        )
    dbname = f"t_{schema}"
    empty_target(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION replicator").format(s))
        conn.execute(sql.SQL(TARGET).format(s=s))
        conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO replicator").format(s))
    environ = {
        **os.environ,
        "CDC_FK_CONNECTOR": f"test-{schema}",
        "CDC_FK_PREFIX": prefix,
        "CDC_FK_SLOT": slot,
        "CDC_FK_PUBLICATION": f"cdc_{schema}",
        "CDC_FK_SCHEMA": schema,
    }
    connector = load_connector(CONNECTOR_FILE, environ)
    client = ConnectClient(stack.connect_url)
    client.apply(connector, wait_s=120)
    try:
        yield World(schema, prefix, connector.name, dbname, tmp_path_factory.mktemp("oe") / "spec.yaml")
    finally:
        client.delete(connector.name)
        drop_slot(stack, slot)


def env_of(w: World, group: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REPLICATOR_TARGET__DBNAME": w.dbname,
        "REPLICATOR_KAFKA__GROUP_ID": group,
        "REPLICATOR_KAFKA__INSTANCE_ID": f"{group}-1",
        "REPLICATOR_KAFKA__SESSION_TIMEOUT_MS": "60000",
        "REPLICATOR_MAPPING": str(w.spec),
        "REPLICATOR_BATCH__MAX_MS": "200",
        "REPLICATOR_HOLD__RETRY_AFTER_S": "1",
        **extra,
    }


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "replicator", "run"], env=env, stdout=out, stderr=out)


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]


def rows(conninfo: str, query: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(sql.SQL(query).format(s=sql.Identifier(schema))).fetchall()


def test_rows_held_and_records_made_before_a_drop_and_an_add_column_land_under_the_fixed_spec(
    stack: Stack, world: World, tmp_path: Path
) -> None:
    w = world
    src, dst = stack.source_admin(), stack.target_admin(w.dbname)
    s = sql.Identifier(w.schema)
    group = f"evolve11-oe-{uuid.uuid4().hex[:6]}"
    w.write_spec(BEFORE)
    paused = env_of(
        w,
        group,
        REPLICATOR_FAILPOINT_PAUSE=w.topic("parent"),
        REPLICATOR_FAILPOINT_RELEASE=str(tmp_path / "no"),
    )
    log = tmp_path / "daemon.log"
    proc = start(paused, log)
    try:
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute(sql.SQL("INSERT INTO {}.parent VALUES (1, 'p1'), (2, 'p2')").format(s))
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.child VALUES (1, 1, 'ok', 'L1'), (2, 2, 'bad', 'L2'), (3, 1, 'ok', 'L3')"
                ).format(s)
            )
            conn.execute(
                sql.SQL("UPDATE {}.child SET note = 'ok3', legacy_ref = 'L3b' WHERE id = 3").format(s)
            )

        def children_held() -> bool:
            try:
                ends = {p: o for p, o in end_offsets(stack, [w.topic("child")]).items() if o > 0}
            except KeyError:  # the topic appears with its first event
                return False
            stored = stored_offsets(stack, w.dbname, group)
            return bool(ends) and all(stored.get(p, 0) >= o for p, o in ends.items())

        wait_until(children_held, 120, "the child topic to be consumed (its rows held)")
    finally:
        stop(proc, log)
    # children 1 and 3 held (their parent's topic lags); child 2 refused by the CHECK: a record
    assert rows(dst, "SELECT count(*) FROM replicator.held_event", w.schema)[0][0] >= 2
    made = "SELECT sqlstate, key FROM replicator.error_record WHERE resolved_at IS NULL"
    assert rows(dst, made, w.schema) == [("23514", "[2]")]

    # the source changes; the target and the spec follow it (runbook step 10)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {}.child DROP COLUMN legacy_ref").format(s))
        conn.execute(sql.SQL("ALTER TABLE {}.child ADD COLUMN priority int DEFAULT 7").format(s))
        conn.execute(sql.SQL("ALTER TABLE {}.parent ADD COLUMN region text DEFAULT 'eu'").format(s))
        conn.execute(sql.SQL("INSERT INTO {}.parent VALUES (3, 'p3', 'us')").format(s))
        conn.execute(sql.SQL("INSERT INTO {}.child VALUES (4, 3, 'ok', 9)").format(s))
    with psycopg.connect(dst, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {}.child DROP COLUMN legacy_ref").format(s))
        conn.execute(sql.SQL("ALTER TABLE {}.child ADD COLUMN priority int DEFAULT 7").format(s))
        conn.execute(sql.SQL("ALTER TABLE {}.parent ADD COLUMN region text DEFAULT 'eu'").format(s))
    w.write_spec(AFTER, IGNORED, ", region: {from: region}")
    flowing = env_of(
        w, group, REPLICATOR_CONNECTOR=w.connector, REPLICATOR_SIGNAL_TABLE=f"{w.schema}.debezium_signal"
    )
    proc = start(flowing, log)
    try:
        drained = run_cli(flowing, "drain", "--timeout", "180")
        assert drained.returncode == 0, drained.stderr + log.read_text()[-3000:]
    finally:
        stop(proc, log)
    # the held children landed: no `child.unmapped` record (legacy_ref), none "missing" (priority)
    records = "SELECT sqlstate, key, message FROM replicator.error_record ORDER BY id"
    assert [r[:2] for r in rows(dst, records, w.schema)] == [("23514", "[2]")], rows(dst, records, w.schema)
    assert rows(dst, "SELECT count(*) FROM replicator.held_event", w.schema) == [(0,)]

    with psycopg.connect(dst, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {}.child DROP CONSTRAINT not_bad").format(s))
    retried = run_cli(flowing, "errors", "retry", "--all", "--json")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert len(json.loads(retried.stdout)["closed"]) == 1, retried.stdout
    assert rows(dst, "SELECT count(*) FROM replicator.error_record WHERE resolved_at IS NULL", w.schema) == [
        (0,)
    ]

    # the events older than `priority` left it to the target's DEFAULT, as the source's ADD COLUMN did
    query = "SELECT id, parent_id, note, priority FROM {s}.child ORDER BY id"
    expected = [(1, 1, "ok", 7), (2, 2, "bad", 7), (3, 1, "ok3", 7), (4, 3, "ok", 9)]
    assert rows(src, query, w.schema) == expected
    assert rows(dst, query, w.schema) == expected
    # the parent topic lagged behind its ADD COLUMN: its older events were applied, not stopped
    parents = "SELECT id, name, region FROM {s}.parent ORDER BY id"
    assert (
        rows(src, parents, w.schema)
        == rows(dst, parents, w.schema)
        == [(1, "p1", "eu"), (2, "p2", "eu"), (3, "p3", "us")]
    )
    with psycopg.connect(dst) as conn:
        plan = compile_spec(load_spec(w.spec), read_catalog(conn, [w.schema]))
    for d in verify(plan, src, dst, CONTROL):
        assert d.clean(accept_errors=False), d.summary()
