"""A declaratively partitioned source table, on the real stack: its rows of every partition land in
one target table, and `replicator status` names a publication that would lose its changes.

PostgreSQL publishes a partitioned table's changes as its partitions' unless the publication has
`publish_via_partition_root`: under partition names that no rule maps and that the connector's
include list (naming the partitioned table) filters out. The snapshot reads the partitioned table
with SELECT, so only the later changes would be lost, silently. `status` says so (exit 1) with the
statement that fixes it; `init --print-grants` creates the publication with the option.
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

TABLE = "Events"  # mixed case: quoted everywhere


@dataclass(frozen=True)
class World:
    schema: str
    signal: TableRef
    prefix: str

    @property
    def publication(self) -> str:
        return f"cdc_{self.schema}"


@pytest.fixture
def world(stack: Stack) -> Iterator[World]:
    run = uuid.uuid4().hex[:6]
    schema = f"parted{run}"
    s, t = sql.Identifier(schema), sql.Identifier(schema, TABLE)
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE SCHEMA {s};"
                " CREATE TABLE {t} (id bigint, at timestamptz, v text, PRIMARY KEY (id, at))"
                " PARTITION BY RANGE (at);"
                " CREATE TABLE {p2025} PARTITION OF {t} FOR VALUES FROM ('2025-01-01Z') TO ('2026-01-01Z');"
                " CREATE TABLE {p2026} PARTITION OF {t} FOR VALUES FROM ('2026-01-01Z') TO ('2027-01-01Z');"
                " CREATE TABLE {s}.debezium_signal (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL,"
                " data varchar(2048));"
                " GRANT USAGE ON SCHEMA {s} TO debezium;"
                " GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO debezium;"
                " CREATE PUBLICATION {p} FOR TABLE {t}, {s}.debezium_signal;"  # without the option
                " INSERT INTO {t} VALUES (1, '2025-03-01Z', 'one'), (2, '2026-03-01Z', 'two')"
            ).format(
                s=s,
                t=t,
                p2025=sql.Identifier(schema, f"{TABLE}_2025"),
                p2026=sql.Identifier(schema, f"{TABLE}_2026"),
                p=sql.Identifier(f"cdc_{schema}"),
            )
        )
    try:
        yield World(schema, TableRef(schema, "debezium_signal"), f"pt{run}")
    finally:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(f"cdc_{schema}")))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))


def connector(world: World) -> Any:
    return own_connector(world.prefix, world.publication, [f"{world.schema}.{TABLE}"], str(world.signal))


def spec(tmp_path: Path, world: World) -> Path:
    document = {
        "version": 1,
        "topic_prefix": world.prefix,
        "capture": {"signal_table": str(world.signal)},
        "tables": [
            {
                "id": "events",
                "source": f"{world.schema}.{TABLE}",
                "target": f"{world.schema}.events",
                "key": {"id": "id", "at": "at"},
                "delete": {"policy": "hard"},
                "truncate": {"policy": "ignore"},
                "columns": {"v": {"from": "v"}},
            }
        ],
    }
    path = tmp_path / "parted.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def target_db(stack: Stack, world: World) -> str:
    dbname = f"t_parted_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.target_admin("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER replicator").format(sql.Identifier(dbname)))
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE SCHEMA {s}; CREATE TABLE {s}.events (id bigint, at timestamptz, v text,"
                " PRIMARY KEY (id, at));"
                " GRANT USAGE ON SCHEMA {s} TO replicator;"
                " GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.events TO replicator"
            ).format(s=sql.Identifier(world.schema))
        )
    return dbname


def rows(conninfo: str, table: sql.Composable) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(sql.SQL("SELECT id, at, v FROM {} ORDER BY id, at").format(table)).fetchall()


def test_a_partitioned_table_lands_whole_in_one_target_table_and_status_names_a_losing_publication(
    stack: Stack, world: World, tmp_path: Path
) -> None:
    dbname = target_db(stack, world)
    env = {
        **os.environ,
        "REPLICATOR_TARGET__DBNAME": dbname,
        "REPLICATOR_MAPPING": str(spec(tmp_path, world)),
        "REPLICATOR_CONNECTOR": connector(world).name,
        "REPLICATOR_KAFKA__GROUP_ID": f"parted-{world.prefix}",
        "REPLICATOR_BATCH__MAX_MS": "200",
    }
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
    client = ConnectClient(stack.connect_url)
    client.apply(connector(world), wait_s=120)
    name = connector(world).name
    try:
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

        _, lsn = write_fence(load_settings(None).source, world.signal)
        wait_until(lambda: client.flushed_lsn(name) >= lsn, 180, "the snapshot to flush")
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
        _, lsn = write_fence(load_settings(None).source, world.signal)
        wait_until(lambda: client.flushed_lsn(name) >= lsn, 180, "the changes to flush")
        applied = run_cli(env, "run", "--stop-when-caught-up")
        assert applied.returncode == 0, applied.stderr[-3000:]
        expected = rows(stack.source_admin(), source_table)
        assert [(i, v) for i, _, v in expected] == [(1, "uno"), (3, "three"), (4, "four")]
        assert rows(stack.target_admin(dbname), sql.Identifier(world.schema, "events")) == expected
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            assert conn.execute("SELECT count(*) FROM replicator.error_record").fetchone() == (0,)
        verified = run_cli(env, "verify")
        assert verified.returncode == 0, verified.stdout
    finally:
        client.delete(name)
        drop_slot(stack, connector(world).config["slot.name"])
