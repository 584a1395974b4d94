"""A child table's topic applied long before its parent's: no valid child is ever lost.

A source schema with a parent table (uuid keys) and a child table referencing
it, foreign keys in the source AND in the target, its own connector, slot and
topics (3 partitions each). The daemon runs with the parent topic paused (the
env-only pause failpoint), so every child event reaches it before its parent:
the children are held, not errored. The daemon is killed with SIGKILL while
they are held and restarted (static membership: its partitions come back at
once, not after the session timeout); more children arrive; then the parent
topic is released. Proves: every valid child lands, no error record for any
of them; a child whose parent the spec filters out becomes exactly one error
record (23503); held rows survive kill -9; `verify` reports held rows as not
clean; the target ends equal to the mapped source. Without the holding logic
every child would be an error record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
from tests.integration.stack import Stack, one_row

CONNECTOR_FILE = Path(__file__).parent / "connectors-fk" / "fk-postgres.json"
CONTROL = "replicator"

SPEC = """
version: 1
topic_prefix: {prefix}
defaults: {{unmapped_source_columns: fail}}
tables:
  - id: parent
    source: {schema}.parent
    target: {schema}.parent
    key: {{id: id}}
    filter: {{column: hidden, op: eq, value: false}}
    delete: {{policy: hard}}
    truncate: {{policy: error}}
    columns: {{id: {{from: id}}, name: {{from: name}}, hidden: {{from: hidden}}}}
  - id: child
    source: {schema}.child
    target: {schema}.child
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: error}}
    columns: {{id: {{from: id}}, parent_id: {{from: parent_id}}, note: {{from: note}}}}
"""


@dataclass(frozen=True)
class World:
    schema: str
    prefix: str
    connector: str
    dbname: str
    spec: Path

    @property
    def parent_topic(self) -> str:
        return f"{self.prefix}.{self.schema}.parent"

    @property
    def child_topic(self) -> str:
        return f"{self.prefix}.{self.schema}.child"

    @property
    def signal(self) -> str:
        return f"{self.schema}.debezium_signal"


TABLES = """
CREATE TABLE {s}.parent (id uuid PRIMARY KEY, name text NOT NULL, hidden boolean NOT NULL DEFAULT false);
CREATE TABLE {s}.child (id uuid PRIMARY KEY, parent_id uuid NOT NULL REFERENCES {s}.parent ON DELETE CASCADE,
                        note text);
"""


@pytest.fixture(scope="module")
def world(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    run = uuid.uuid4().hex[:6]
    schema, prefix, slot = f"fk{run}", f"fk{run}", f"cdc_fk_{run}"
    s = sql.Identifier(schema)
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
        conn.execute(sql.SQL(TABLES).format(s=s))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.debezium_signal (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL,"
                " data varchar(2048))"
            ).format(s)
        )
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {0} TO debezium; GRANT SELECT ON ALL TABLES IN SCHEMA {0} TO debezium"
            ).format(s)
        )
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}.parent, {}.child, {}.debezium_signal").format(
                sql.Identifier(f"cdc_{schema}"), s, s, s
            )
        )
    dbname = f"t_fk_{run}"
    empty_target(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION replicator").format(s))
        conn.execute(sql.SQL(TABLES).format(s=s))
        conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO replicator").format(s))
    spec = tmp_path_factory.mktemp("fk") / "fk.yaml"
    spec.write_text(SPEC.format(prefix=prefix, schema=schema))
    environ = {
        **os.environ,
        "CDC_FK_CONNECTOR": f"test-fk-{run}",
        "CDC_FK_PREFIX": prefix,
        "CDC_FK_SLOT": slot,
        "CDC_FK_PUBLICATION": f"cdc_{schema}",
        "CDC_FK_SCHEMA": schema,
    }
    connector = load_connector(CONNECTOR_FILE, environ)
    client = ConnectClient(stack.connect_url)
    client.apply(connector, wait_s=120)
    try:
        yield World(schema, prefix, connector.name, dbname, spec)
    finally:
        client.delete(connector.name)
        drop_slot(stack, slot)


def daemon_env(stack: Stack, w: World, group: str, release: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REPLICATOR_TARGET__DBNAME": w.dbname,
        "REPLICATOR_KAFKA__GROUP_ID": group,
        "REPLICATOR_KAFKA__INSTANCE_ID": f"{group}-1",
        "REPLICATOR_KAFKA__SESSION_TIMEOUT_MS": "60000",
        "REPLICATOR_MAPPING": str(w.spec),
        "REPLICATOR_CONNECTOR": w.connector,
        "REPLICATOR_BATCH__MAX_MS": "200",
        "REPLICATOR_HOLD__RETRY_AFTER_S": "1",
        "REPLICATOR_FAILPOINT_PAUSE": w.parent_topic,
        "REPLICATOR_FAILPOINT_RELEASE": str(release),
    }


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "replicator", "run"], env=env, stdout=out, stderr=out)


def target_count(stack: Stack, w: World, query: str) -> int:
    with psycopg.connect(stack.target_admin(w.dbname)) as conn:
        (n,) = one_row(conn.execute(sql.SQL(query).format(s=sql.Identifier(w.schema))))
    return int(n)


def held(stack: Stack, w: World) -> int:
    try:
        return target_count(stack, w, "SELECT count(*) FROM replicator.held_event")
    except psycopg.errors.UndefinedTable:
        return 0


def children_consumed(stack: Stack, w: World, group: str) -> bool:
    try:
        ends = {p: o for p, o in end_offsets(stack, [w.child_topic]).items() if o > 0}
    except KeyError:  # the topic appears with its first event
        return False
    stored = stored_offsets(stack, w.dbname, group)
    return bool(ends) and all(stored.get(p, 0) >= o for p, o in ends.items())


def assigned_since(log: Path, line: int) -> bool:
    """The daemon logged an assignment with partitions after log line `line`."""
    return any(
        "event=assigned" in text and "partitions=-" not in text
        for text in log.read_text().splitlines()[line:]
    )


def insert_family(conn: psycopg.Connection, w: World, parents: int, children: int, hidden: int) -> list[str]:
    """Parents (the last `hidden` of them filtered out by the spec), `children` per parent."""
    ids = []
    s = sql.Identifier(w.schema)
    for i in range(parents):
        pid = str(uuid.uuid4())
        conn.execute(
            sql.SQL("INSERT INTO {}.parent VALUES (%s, %s, %s)").format(s),
            (pid, f"p{i}", i >= parents - hidden),
        )
        for j in range(children):
            conn.execute(
                sql.SQL("INSERT INTO {}.child VALUES (%s, %s, %s)").format(s),
                (str(uuid.uuid4()), pid, f"c{j}"),
            )
        ids.append(pid)
    return ids


def test_children_ahead_of_their_parents_are_held_not_lost(
    stack: Stack, world: World, tmp_path: Path
) -> None:
    w = world
    s = sql.Identifier(w.schema)
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        insert_family(conn, w, parents=20, children=3, hidden=1)
    group = f"fk-{uuid.uuid4().hex[:6]}"
    release = tmp_path / "release-parents"
    env = daemon_env(stack, w, group, release)
    log = tmp_path / "daemon.log"
    proc = start(env, log)
    try:
        wait_until(lambda: children_consumed(stack, w, group), 120, "the child topic to be consumed")
        assert target_count(stack, w, "SELECT count(*) FROM {s}.child") == 0
        assert target_count(stack, w, "SELECT count(*) FROM replicator.error_record") == 0
        first = held(stack, w)
        assert first == 60  # every child held, none an error record

        # verify says "not clean" while rows are held, and names them as held, not missing
        spec = load_spec(w.spec)
        with psycopg.connect(stack.target_admin(w.dbname)) as conn:
            plan = compile_spec(spec, read_catalog(conn, [w.schema]))
        diffs = {
            str(d.target): d
            for d in verify(plan, stack.source_admin(), stack.target_admin(w.dbname), CONTROL)
        }
        child_diff = diffs[f"{w.schema}.child"]
        assert (
            len(child_diff.held) == 60 and not child_diff.missing and not child_diff.clean(accept_errors=True)
        )

        proc.send_signal(signal.SIGKILL)  # held rows are in the target, not in memory
        proc.wait(timeout=30)
        assert held(stack, w) == first
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            insert_family(conn, w, parents=5, children=2, hidden=0)
            conn.execute(sql.SQL("UPDATE {}.child SET note = 'updated' WHERE note = 'c0'").format(s))
            conn.execute(sql.SQL("DELETE FROM {}.child WHERE note = 'c1'").format(s))
        before = len(log.read_text().splitlines())
        started = time.monotonic()
        proc = start(env, log)
        # static membership: the same instance id gets its partitions back without waiting for the
        # dead member's 60 s session to expire
        wait_until(lambda: assigned_since(log, before), 50, "reassignment after kill -9")
        reassigned_s = time.monotonic() - started
        assert reassigned_s < 30, reassigned_s
        wait_until(lambda: children_consumed(stack, w, group), 120, "the new child events to be consumed")
        assert target_count(stack, w, "SELECT count(*) FROM {s}.child") == 0
        assert target_count(stack, w, "SELECT count(*) FROM replicator.error_record") == 0

        release.touch()  # the parent topic flows now
        # `replicator drain` with no flags: connector and signal table from the settings (this
        # world's own, not the demo's)
        drained = run_cli({**env, "REPLICATOR_SIGNAL_TABLE": w.signal}, "drain", "--timeout", "180")
        assert drained.returncode == 0 and drained.stdout.startswith("drained: fence LSN"), drained.stderr
        assert held(stack, w) == 0  # drained: every row held before the fence applied or decided
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    with psycopg.connect(stack.target_admin(w.dbname)) as conn:
        errors = conn.execute(
            sql.SQL(
                "SELECT sqlstate, rule_id, key FROM replicator.error_record WHERE kind = 'error' ORDER BY 3"
            )
        ).fetchall()
    with psycopg.connect(stack.source_admin()) as conn:
        orphans = conn.execute(
            sql.SQL(
                "SELECT c.id::text, c.note FROM {0}.child c JOIN {0}.parent p ON p.id = c.parent_id"
                " WHERE p.hidden ORDER BY 1"
            ).format(s)
        ).fetchall()
    # exactly the children of the filtered parent, FK violation: one error record per event folded
    # into each (the updated one's insert and update, both needed to build it again)
    assert [(state, rule) for state, rule, _ in errors] == [("23503", "child")] * len(errors)
    assert sorted(k for _, _, k in errors) == sorted(
        f'["{o}"]' for o, note in orphans for _ in range(2 if note == "updated" else 1)
    )
    final = verify(plan, stack.source_admin(), stack.target_admin(w.dbname), CONTROL)
    for d in final:
        assert d.clean(accept_errors=True), d.summary()
        assert not d.missing and not d.held
    child = next(d for d in final if d.target.name == "child")
    assert len(child.errored) == len(orphans) and child.actual == child.expected - len(orphans)
    print(f"reassigned after kill -9 in {reassigned_s:.1f}s")  # evidence for MIGRATION-ARTIFACTS
