"""`replicator drain` against the real source: a signal table that does not exist is one line
naming the fix (the SQL that creates it), never a raw `relation ... does not exist`; rows held
back before the fence keep drain from calling the target drained; its lines show the fence LSN
as PostgreSQL prints it (X/Y), as cutover does."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import psycopg

from tests.integration.pipeline import CONNECTOR, converge, daemon, env_for, fresh_target, run_cli
from tests.integration.stack import Stack


def test_missing_signal_table_is_one_line_naming_the_fix(stack: Stack) -> None:
    missing = f"shop.no_signal_{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "REPLICATOR_SIGNAL_TABLE": missing}
    done = run_cli(env, "drain", "--timeout", "30")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"the signal table {missing} does not exist in the source; fix: create it" in lines[0]
    assert f"CREATE TABLE {missing} (id varchar(42) PRIMARY KEY" in lines[0]
    assert "Traceback" not in done.stderr


def test_drain_waits_for_rows_held_before_the_fence_and_names_them(stack: Stack, tmp_path: Path) -> None:
    """Trial 5: drain said "drained" while 258 rows were held back and missing from the target.
    A row held since before the fence keeps drain from ending: at its timeout it names the table,
    the rows and what they wait for; once the row is gone, the same drain ends clean."""
    dbname = fresh_target("drainheld")
    group = f"drainheld-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group, REPLICATOR_CONNECTOR=CONNECTOR)
    held = (
        "INSERT INTO replicator.held_event (group_id, topic, partition, kafka_offset, target_table, key,"
        " blocked_by, judged_at, positioned) VALUES (%s, 'demo.shop.orders', 0, 999999999, 'sales.order',"
        " '[1]', 'crm.customer', 1, true)"
    )
    with daemon(env, tmp_path / "daemon.log"):
        converge(stack, dbname, group)
        with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
            conn.execute(held, (group,))  # judged at LSN 1: committed long before any fence
        stuck = run_cli(env, "drain", "--timeout", "20")
        assert stuck.returncode != 0, stuck.stdout
        assert "holds rows back (sales.order: 1 rows wait for crm.customer)" in stuck.stderr, stuck.stderr
        assert re.search(r"applied past the fence LSN [0-9A-F]+/[0-9A-F]+ but", stuck.stderr), stuck.stderr
        with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
            conn.execute("DELETE FROM replicator.held_event WHERE group_id = %s", (group,))
        done = run_cli(env, "drain", "--timeout", "60")
        assert done.returncode == 0, done.stderr
        line = r"drained: fence LSN [0-9A-F]+/[0-9A-F]+ applied in [0-9.]+s\n"
        assert re.fullmatch(line, done.stdout), done.stdout
