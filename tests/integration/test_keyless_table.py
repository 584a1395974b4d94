"""Source tables without a primary key, on the real stack (trial 3 found the old row of a moved
key left in the target, on a table without any unique index). `mapping check` refuses a key that
is not a unique constraint of such a table. With one (here NOT NULL, and nullable), Debezium keys
the table's events on that index, so a change of the key columns arrives as a delete and a create
and replicates exactly; `reload` refuses a table without a primary key. (Without any unique index
the events have no Kafka key and such a change is one update: the writer makes it an error record,
`tests/unit/test_batching.py`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.integration.own_capture import OwnSchema, own_source, own_target, running_connector
from tests.integration.pipeline import run_cli
from tests.integration.stack import Stack


@pytest.fixture
def world(stack: Stack) -> Iterator[OwnSchema]:
    def ddl(s: sql.Identifier) -> sql.Composed:
        return sql.SQL(
            "CREATE TABLE {s}.t (code text NOT NULL UNIQUE, v text);"
            " ALTER TABLE {s}.t REPLICA IDENTITY FULL;"
            " CREATE TABLE {s}.n (code text UNIQUE, v text);"
            " ALTER TABLE {s}.n REPLICA IDENTITY FULL;"
            " CREATE TABLE {s}.loose (code text, v text);"
            " ALTER TABLE {s}.loose REPLICA IDENTITY FULL;"
            " INSERT INTO {s}.t VALUES ('a', 'one'), ('b', 'two');"
            " INSERT INTO {s}.n VALUES ('a', 'one'), ('b', 'two')"
        ).format(s=s)

    with own_source(stack, "keyless", ["t", "n"], ddl) as own:
        yield own


def spec(tmp_path: Path, world: OwnSchema, keyless_source: str) -> Path:
    """Rule `unique` maps t (NOT NULL unique code), rule `keyless` maps `keyless_source`."""
    return world.spec(
        tmp_path / f"{keyless_source}.yaml",
        [
            world.rule("unique", "t", ["v"], key=["code"]),
            world.rule("keyless", keyless_source, ["v"], target="n", key=["code"]),
        ],
    )


def target_db(stack: Stack, world: OwnSchema) -> str:
    return own_target(
        stack,
        world,
        ["t", "n"],
        lambda s: sql.SQL(
            "CREATE TABLE {s}.t (code text PRIMARY KEY, v text);"
            " CREATE TABLE {s}.n (code text PRIMARY KEY, v text)"
        ).format(s=s),
    )


def test_tables_without_a_primary_key_replicate_on_a_unique_key_and_follow_its_moves(
    stack: Stack, world: OwnSchema, tmp_path: Path
) -> None:
    dbname = target_db(stack, world)
    env = world.env(dbname, spec(tmp_path, world, "n"))
    loose = run_cli({**env, "REPLICATOR_MAPPING": str(spec(tmp_path, world, "loose"))}, "mapping", "check")
    assert loose.returncode == 1 and "keyless.key" in loose.stderr, loose.stderr
    assert "not a unique constraint" in loose.stderr, loose.stderr
    checked = run_cli(env, "mapping", "check")
    assert checked.returncode == 0, checked.stderr
    with running_connector(stack, world) as flush:
        flush("the snapshot")
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            for table in ("t", "n"):
                t = sql.Identifier(world.schema, table)
                conn.execute(sql.SQL("UPDATE {} SET v = 'uno' WHERE code = 'a'").format(t))  # same key
                conn.execute(sql.SQL("UPDATE {} SET code = 'b2' WHERE code = 'b'").format(t))  # a move
                conn.execute(sql.SQL("INSERT INTO {} VALUES ('c', 'three')").format(t))
        flush("the changes")
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
