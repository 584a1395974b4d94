"""Two source tables, one topic, on the real stack (trial 14): Debezium names the topics of
`"dup x"` and `dup_x` the same (`<prefix>.<schema>.dup_x`, an unsafe character made `_`). Each
table's rows land in its own target table only, with the same key value in both tables, through
the snapshot and streaming; `scaffold` gives the two rules distinct ids and its spec checks clean.
Before, every event went to both target tables, and two tables of different columns stopped
each other at their first event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka.admin import AdminClient
from psycopg import sql

from tests.integration.own_capture import OwnSchema, own_source, own_target, running_connector
from tests.integration.pipeline import run_cli
from tests.integration.stack import Stack

TABLES = ("dup x", "dup_x")


def ddl(s: sql.Identifier) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE {s}.{a} (id bigint PRIMARY KEY, label text NOT NULL);"
        " CREATE TABLE {s}.{b} (id bigint PRIMARY KEY, amount bigint NOT NULL)"
    ).format(s=s, a=sql.Identifier(TABLES[0]), b=sql.Identifier(TABLES[1]))


@pytest.fixture
def world(stack: Stack) -> Iterator[OwnSchema]:
    def seeded(s: sql.Identifier) -> sql.Composed:
        return ddl(s) + sql.SQL(
            "; INSERT INTO {s}.{a} VALUES (1, 'space'), (2, 'two');"
            " INSERT INTO {s}.{b} VALUES (1, 100), (3, 300)"
        ).format(s=s, a=sql.Identifier(TABLES[0]), b=sql.Identifier(TABLES[1]))

    with own_source(stack, "dup", TABLES, seeded) as own:
        yield own


def rows(conninfo: str, world: OwnSchema, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(world.table(table))).fetchall()


def test_two_tables_on_one_topic_each_land_in_their_own_target(
    stack: Stack, world: OwnSchema, tmp_path: Path
) -> None:
    dbname = own_target(stack, world, TABLES, ddl)
    env = world.env(dbname, tmp_path / "unused.yaml")
    made = run_cli(env, "mapping", "scaffold", "--topic-prefix", world.prefix, "--schemas", world.schema,
                   "--signal-table", str(world.signal))  # fmt: skip
    assert made.returncode == 0, made.stderr
    rules = yaml.safe_load(made.stdout)["tables"]
    assert [(r["id"], r["source"]) for r in rules] == [
        ("dup_x", f"{world.schema}.dup x"),
        ("dup_x_2", f"{world.schema}.dup_x"),
    ]
    spec = tmp_path / "dup.yaml"
    spec.write_text(made.stdout)
    env["REPLICATOR_MAPPING"] = str(spec)
    checked = run_cli(env, "mapping", "check")
    assert checked.returncode == 0, checked.stderr
    with running_connector(stack, world) as flush:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            a, b = (world.table(t) for t in TABLES)
            conn.execute(sql.SQL("INSERT INTO {} VALUES (3, 'three')").format(a))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (2, 200)").format(b))
            conn.execute(sql.SQL("UPDATE {} SET amount = 101 WHERE id = 1").format(b))
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = 2").format(a))
        flush("the changes")
        admin = AdminClient({"bootstrap.servers": stack.kafka})
        ours = sorted(t for t in admin.list_topics(timeout=30).topics if t.startswith(world.topic("")))
        assert ours == [world.topic("debezium_signal"), world.topic("dup_x")]  # one topic for both
        assert run_cli(env, "init").returncode == 0
        applied = run_cli(env, "run", "--stop-when-caught-up")
        assert applied.returncode == 0, applied.stderr[-3000:]
    assert rows(stack.target_admin(dbname), world, "dup x") == [(1, "space"), (3, "three")]
    assert rows(stack.target_admin(dbname), world, "dup_x") == [(1, 101), (2, 200), (3, 300)]
    for table in TABLES:
        assert rows(stack.target_admin(dbname), world, table) == rows(stack.source_admin(), world, table)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        assert conn.execute("SELECT count(*) FROM replicator.error_record").fetchone() == (0,)
    verified = run_cli(env, "verify")
    assert verified.returncode == 0, verified.stdout
