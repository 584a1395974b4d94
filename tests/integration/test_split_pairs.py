"""Cycles and unique swaps whose halves two daemons hold, through the CLI on the real stack.

A source schema with a two-table cycle (team.lead_id -> member, member.team_id -> team, both
DEFERRABLE INITIALLY DEFERRED in the source and in the target) and a unique member code that two
members swap in one transaction; 3 partitions per topic; two `replicator run` daemons in one group
(range assignment: each topic's partitions go 2 + 1 to them), so a cycle's team and member, or a
swap's two members, often sit with different daemons. Neither daemon can write its half alone
(the target refuses it), so each holds it; the pair lands when one daemon's batch adopts the other
daemon's held half. One daemon is killed with SIGKILL and restarted in between. Proves: `drain`
ends with nothing held, `verify` is clean with no error record. Before adoption (trial 5 rerun,
N1) every split pair stayed held until one daemon owned both partitions, and drain timed out.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.integration.own_capture import OwnSchema, own_source, own_target, running_connector
from tests.integration.pipeline import run_cli, wait_until
from tests.integration.stack import Stack, one_row

TABLES = ["team", "member"]


def ddl(s: sql.Identifier) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE {s}.team (id uuid PRIMARY KEY, name text NOT NULL, lead_id uuid);"
        " CREATE TABLE {s}.member (id uuid PRIMARY KEY, team_id uuid NOT NULL, code text NOT NULL UNIQUE);"
        " ALTER TABLE {s}.team ADD CONSTRAINT team_lead FOREIGN KEY (lead_id) REFERENCES {s}.member"
        "   DEFERRABLE INITIALLY DEFERRED;"
        " ALTER TABLE {s}.member ADD CONSTRAINT member_team FOREIGN KEY (team_id) REFERENCES {s}.team"
        "   DEFERRABLE INITIALLY DEFERRED"
    ).format(s=s)


def rules(world: OwnSchema) -> list[dict[str, Any]]:
    return [
        world.rule("team", "team", ["name", "lead_id"], truncate="error"),
        world.rule("member", "member", ["team_id", "code"], truncate="error"),
    ]


@pytest.fixture
def world(stack: Stack) -> Iterator[OwnSchema]:
    with own_source(stack, "split", TABLES, ddl) as own:
        yield own


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "replicator", "run"], env=env, stdout=out, stderr=out)


def assigned(log: Path, since: int = 0) -> bool:
    return any(
        "event=assigned" in line and "partitions=-" not in line
        for line in log.read_text().splitlines()[since:]
    )


def write_pairs(conn: psycopg.Connection[Any], w: OwnSchema, start: int, cycles: int, swaps: int) -> None:
    """`cycles` teams, each with its lead member, one transaction each (the cycle); then `swaps`
    pairs of those members swap codes, one transaction each (through a temporary code)."""
    team, member = w.table("team"), w.table("member")
    ids: list[tuple[str, str]] = []
    for i in range(start, start + cycles):
        t, m = str(uuid.uuid4()), str(uuid.uuid4())
        with conn.transaction():
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(team), (t, f"team {i}", m))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(member), (m, t, f"code {i}"))
        ids.append((t, m))
    for k in range(swaps):
        (_, a), (_, b) = ids[2 * k], ids[2 * k + 1]
        with conn.transaction():
            codes = dict(
                conn.execute(
                    sql.SQL("SELECT id::text, code FROM {} WHERE id IN (%s, %s)").format(member), (a, b)
                ).fetchall()
            )
            conn.execute(sql.SQL("UPDATE {} SET code = 'swapping' WHERE id = %s").format(member), (a,))
            conn.execute(sql.SQL("UPDATE {} SET code = %s WHERE id = %s").format(member), (codes[a], b))
            conn.execute(sql.SQL("UPDATE {} SET code = %s WHERE id = %s").format(member), (codes[b], a))


def test_cycles_and_swaps_split_between_two_daemons_land(
    stack: Stack, world: OwnSchema, tmp_path: Path
) -> None:
    dbname = own_target(stack, world, TABLES, ddl)
    env = world.env(dbname, world.spec(tmp_path / "split.yaml", rules(world)))
    checked = run_cli(env, "mapping", "check")
    assert checked.returncode == 0, checked.stderr
    assert run_cli(env, "init").returncode == 0
    envs = [
        {**env, "REPLICATOR_KAFKA__INSTANCE_ID": f"{world.prefix}-{n}", "REPLICATOR_HOLD__RETRY_AFTER_S": "1"}
        for n in (1, 2)
    ]
    logs = [tmp_path / "daemon-1.log", tmp_path / "daemon-2.log"]
    with running_connector(stack, world) as flush:
        flush("the snapshot")
        procs = [start(e, log) for e, log in zip(envs, logs, strict=True)]
        try:
            wait_until(lambda: all(assigned(log) for log in logs), 120, "both daemons to own partitions")
            with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
                write_pairs(conn, world, 0, cycles=24, swaps=8)
            flush("the first pairs")
            procs[1].send_signal(signal.SIGKILL)  # its held halves are in the target, not in memory
            procs[1].wait(timeout=30)
            before = len(logs[1].read_text().splitlines())
            procs[1] = start(envs[1], logs[1])
            wait_until(lambda: assigned(logs[1], before), 60, "the restarted daemon's partitions")
            with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
                write_pairs(conn, world, 100, cycles=12, swaps=4)
            drained = run_cli(env, "drain", "--timeout", "180")
            assert drained.returncode == 0, drained.stderr[-2000:]
            with psycopg.connect(stack.target_admin(dbname)) as conn:
                (held,) = one_row(conn.execute("SELECT count(*) FROM replicator.held_event"))
                (errors,) = one_row(conn.execute("SELECT count(*) FROM replicator.error_record"))
            assert (held, errors) == (0, 0)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
        assert [p.returncode for p in procs] == [0, 0], [log.read_text()[-2000:] for log in logs]
        verified = run_cli(env, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
