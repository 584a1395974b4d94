"""A declaratively partitioned source table, on the real stack: its rows of every partition land in
one target table, and `replicator status` names a publication that would lose its changes.

PostgreSQL publishes a partitioned table's changes as its partitions' unless the publication has
`publish_via_partition_root`: under partition names that no rule maps and that the connector's
include list (naming the partitioned table) filters out. The snapshot reads the partitioned table
with SELECT, so only the later changes would be lost, silently. `status` says so (exit 1) with the
statement that fixes it; `init --print-grants` creates the publication with the option.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from tests.integration.own_capture import OwnSchema, own_source, own_target, running_connector
from tests.integration.pipeline import run_cli
from tests.integration.stack import Stack

TABLE = "Events"  # mixed case: quoted everywhere


@pytest.fixture
def world(stack: Stack) -> Iterator[OwnSchema]:
    def ddl(s: sql.Identifier) -> sql.Composed:
        t = sql.SQL("{}.{}").format(s, sql.Identifier(TABLE))
        return sql.SQL(
            "CREATE TABLE {t} (id bigint, at timestamptz, v text, PRIMARY KEY (id, at))"
            " PARTITION BY RANGE (at);"
            " CREATE TABLE {s}.{p2025} PARTITION OF {t} FOR VALUES FROM ('2025-01-01Z') TO ('2026-01-01Z');"
            " CREATE TABLE {s}.{p2026} PARTITION OF {t} FOR VALUES FROM ('2026-01-01Z') TO ('2027-01-01Z');"
            " INSERT INTO {t} VALUES (1, '2025-03-01Z', 'one'), (2, '2026-03-01Z', 'two')"
        ).format(s=s, t=t, p2025=sql.Identifier(f"{TABLE}_2025"), p2026=sql.Identifier(f"{TABLE}_2026"))

    with own_source(stack, "parted", [TABLE], ddl, via_root=False) as own:  # without the option
        yield own


def spec(tmp_path: Path, world: OwnSchema) -> Path:
    return world.spec(
        tmp_path / "parted.yaml",
        [world.rule("events", TABLE, ["v"], target="events", key=["id", "at"])],
    )


def target_db(stack: Stack, world: OwnSchema) -> str:
    return own_target(
        stack,
        world,
        ["events"],
        lambda s: sql.SQL(
            "CREATE TABLE {}.events (id bigint, at timestamptz, v text, PRIMARY KEY (id, at))"
        ).format(s),
    )


def rows(conninfo: str, table: sql.Composable) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(sql.SQL("SELECT id, at, v FROM {} ORDER BY id, at").format(table)).fetchall()


def test_a_partitioned_table_lands_whole_in_one_target_table_and_status_names_a_losing_publication(
    stack: Stack, world: OwnSchema, tmp_path: Path
) -> None:
    dbname = target_db(stack, world)
    env = world.env(dbname, spec(tmp_path, world))
    checked = run_cli(env, "mapping", "check")
    assert checked.returncode == 0, checked.stderr
    # a scaffold of the schema maps the partitioned table, not its partitions
    made = run_cli(env, "mapping", "scaffold", "--topic-prefix", world.prefix, "--schemas", world.schema)
    assert made.returncode == 0, made.stderr
    assert [(t["source"], t["key"]) for t in yaml.safe_load(made.stdout)["tables"]] == [
        (f"{world.schema}.{TABLE}", {"id": "id", "at": "at"}),
        (f"{world.schema}.debezium_signal", {"id": "id"}),  # not named a signal table here
    ]
    assert run_cli(env, "init").returncode == 0
    with running_connector(stack, world) as flush:
        # published through its partitions: status names the loss and the fix
        status = run_cli(env, "status")
        assert status.returncode == 1, status.stdout
        assert (
            f"PROBLEM: {world.schema}.{TABLE} is partitioned and publication {world.publication} publishes"
            " its changes as its partitions'"
        ) in status.stdout, status.stdout
        fix = sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)").format(
            sql.Identifier(world.publication)
        )
        assert f"fix: {fix.as_string()}" in status.stdout
        early = run_cli(env, "run", "--stop-when-caught-up")  # a run says it too, as it starts
        assert early.returncode == 0, early.stderr[-3000:]
        assert f"{world.schema}.{TABLE} is partitioned and publication" in early.stderr, early.stderr[-3000:]
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            conn.execute(fix)
        status = run_cli(env, "status")
        assert status.returncode == 0 and "PROBLEM" not in status.stdout, status.stdout

        flush("the snapshot")
        source_table = sql.Identifier(world.schema, TABLE)
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} VALUES (3, '2025-07-01Z', 'three'), (4, '2026-07-01Z', 'four')"
                ).format(source_table)
            )
            conn.execute(sql.SQL("UPDATE {} SET v = 'uno' WHERE id = 1").format(source_table))  # in place
            conn.execute(
                sql.SQL("UPDATE {} SET at = '2026-05-01Z' WHERE id = 3").format(source_table)
            )  # moves
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = 2").format(source_table))
        flush("the changes")
        applied = run_cli(env, "run", "--stop-when-caught-up")
        assert applied.returncode == 0, applied.stderr[-3000:]
        expected = rows(stack.source_admin(), source_table)
        assert [(i, v) for i, _, v in expected] == [(1, "uno"), (3, "three"), (4, "four")]
        assert rows(stack.target_admin(dbname), sql.Identifier(world.schema, "events")) == expected
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            assert conn.execute("SELECT count(*) FROM replicator.error_record").fetchone() == (0,)
        verified = run_cli(env, "verify")
        assert verified.returncode == 0, verified.stdout
