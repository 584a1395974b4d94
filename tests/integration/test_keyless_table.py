"""Source tables without a primary key, on the real stack (trial 3 found the old row of a moved
key left in the target, on a table without any unique index). `mapping check` refuses a key that
is not a unique constraint of such a table. With one (here NOT NULL, and nullable), Debezium keys
the table's events on that index, so a change of the key columns arrives as a delete and a create
and replicates exactly; `reload` refuses a table without a primary key. (Without any unique index
the events have no Kafka key and such a change is one update: the writer makes it an error record,
`tests/unit/test_batching.py`.)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from replicator.config import load_settings
from replicator.connect.client import ConnectClient
from replicator.core.model import TableRef
from replicator.source.signal import write_fence
from tests.integration.pipeline import drop_slot, own_connector, run_cli, wait_until
from tests.integration.stack import Stack


@dataclass(frozen=True)
class World:
    schema: str
    signal: TableRef
    prefix: str


@pytest.fixture
def world(stack: Stack) -> Iterator[World]:
    run = uuid.uuid4().hex[:6]
    schema = f"keyless{run}"
    s = sql.Identifier(schema)
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE SCHEMA {s};"
                " CREATE TABLE {s}.t (code text NOT NULL UNIQUE, v text);"
                " ALTER TABLE {s}.t REPLICA IDENTITY FULL;"
                " CREATE TABLE {s}.n (code text UNIQUE, v text);"
                " ALTER TABLE {s}.n REPLICA IDENTITY FULL;"
                " CREATE TABLE {s}.loose (code text, v text);"
                " ALTER TABLE {s}.loose REPLICA IDENTITY FULL;"
                " CREATE TABLE {s}.debezium_signal (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL,"
                " data varchar(2048));"
                " GRANT USAGE ON SCHEMA {s} TO debezium;"
                " GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO debezium;"
                " CREATE PUBLICATION {p} FOR TABLE {s}.t, {s}.n, {s}.debezium_signal;"
                " INSERT INTO {s}.t VALUES ('a', 'one'), ('b', 'two');"
                " INSERT INTO {s}.n VALUES ('a', 'one'), ('b', 'two')"
            ).format(s=s, p=sql.Identifier(f"cdc_{schema}"))
        )
    try:
        yield World(schema, TableRef(schema, "debezium_signal"), f"kl{run}")
    finally:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(f"cdc_{schema}")))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))


def connector(world: World) -> Any:
    return own_connector(
        world.prefix, f"cdc_{world.schema}", [f"{world.schema}.t", f"{world.schema}.n"], str(world.signal)
    )


def spec(tmp_path: Path, world: World, keyless_source: str) -> Path:
    """Rule `unique` maps t (NOT NULL unique code), rule `keyless` maps `keyless_source`."""

    def rule(rule_id: str, source: str, target: str) -> dict[str, Any]:
        return {
            "id": rule_id,
            "source": f"{world.schema}.{source}",
            "target": f"{world.schema}.{target}",
            "key": {"code": "code"},
            "delete": {"policy": "hard"},
            "truncate": {"policy": "ignore"},
            "columns": {"v": {"from": "v"}},
        }

    document = {
        "version": 1,
        "topic_prefix": world.prefix,
        "capture": {"signal_table": str(world.signal)},
        "tables": [rule("unique", "t", "t"), rule("keyless", keyless_source, "n")],
    }
    path = tmp_path / f"{keyless_source}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def target_db(stack: Stack, world: World) -> str:
    dbname = f"t_keyless_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.target_admin("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER replicator").format(sql.Identifier(dbname)))
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE SCHEMA {s}; CREATE TABLE {s}.t (code text PRIMARY KEY, v text);"
                " CREATE TABLE {s}.n (code text PRIMARY KEY, v text);"
                " GRANT USAGE ON SCHEMA {s} TO replicator;"
                " GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.t, {s}.n TO replicator"
            ).format(s=sql.Identifier(world.schema))
        )
    return dbname


def test_tables_without_a_primary_key_replicate_on_a_unique_key_and_follow_its_moves(
    stack: Stack, world: World, tmp_path: Path
) -> None:
    dbname = target_db(stack, world)
    env = {
        **os.environ,
        "REPLICATOR_TARGET__DBNAME": dbname,
        "REPLICATOR_MAPPING": str(spec(tmp_path, world, "n")),
        "REPLICATOR_CONNECTOR": connector(world).name,
        "REPLICATOR_KAFKA__GROUP_ID": f"keyless-{world.prefix}",
        "REPLICATOR_BATCH__MAX_MS": "200",
    }
    loose = run_cli({**env, "REPLICATOR_MAPPING": str(spec(tmp_path, world, "loose"))}, "mapping", "check")
    assert loose.returncode == 1 and "keyless.key" in loose.stderr, loose.stderr
    assert "not a unique constraint" in loose.stderr, loose.stderr
    checked = run_cli(env, "mapping", "check")
    assert checked.returncode == 0, checked.stderr
    client = ConnectClient(stack.connect_url)
    client.apply(connector(world), wait_s=120)
    name = connector(world).name
    try:
        _, lsn = write_fence(load_settings(None).source, world.signal)
        wait_until(lambda: client.flushed_lsn(name) >= lsn, 180, "the snapshot to flush")
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            for table in ("t", "n"):
                t = sql.Identifier(world.schema, table)
                conn.execute(sql.SQL("UPDATE {} SET v = 'uno' WHERE code = 'a'").format(t))  # same key
                conn.execute(sql.SQL("UPDATE {} SET code = 'b2' WHERE code = 'b'").format(t))  # a move
                conn.execute(sql.SQL("INSERT INTO {} VALUES ('c', 'three')").format(t))
        _, lsn = write_fence(load_settings(None).source, world.signal)
        wait_until(lambda: client.flushed_lsn(name) >= lsn, 180, "the changes to flush")
        assert run_cli(env, "init").returncode == 0
        applied = run_cli(env, "run", "--stop-when-caught-up")
        assert applied.returncode == 0, applied.stderr[-3000:]
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            keyed, keyless = (
                conn.execute(sql.SQL("SELECT code, v FROM {} ORDER BY code").format(t)).fetchall()
                for t in (sql.Identifier(world.schema, "t"), sql.Identifier(world.schema, "n"))
            )
            records = conn.execute(
                "SELECT rule_id, key, message FROM replicator.error_record WHERE kind = 'error'"
            ).fetchall()
        # keyed on the unique index by Debezium: each move is a delete and a create
        assert keyed == keyless == [("a", "uno"), ("b2", "two"), ("c", "three")]
        assert records == []
        verified = run_cli(env, "verify")
        assert verified.returncode == 0, verified.stdout
        reload = run_cli(env, "reload", "--table", f"{world.schema}.n", timeout=60)
        assert reload.returncode == 1 and "has no primary key" in reload.stderr, reload.stderr
    finally:
        client.delete(name)
        drop_slot(stack, connector(world).config["slot.name"])
