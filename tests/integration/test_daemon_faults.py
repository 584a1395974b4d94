"""Crashes and outages: the target ends equal to the source, nothing lost or duplicated.

Proves (fault-test matrix 3, 10, 11 with oracles C, H, O):
- kill -9 of the replicator at named points (mid-batch, before the target
  commit, between the target commit and the Kafka commit): after restart the
  target equals the source and Kafka's committed offsets are never ahead of
  the target-stored ones;
- the target PostgreSQL stopped immediately mid-stream and restarted later:
  the daemon waits, recovers, loses nothing;
- the Connect worker killed with SIGKILL mid-stream and restarted: Debezium
  redelivers, the redelivered events are no-ops, and no row's applied version
  ever goes backwards (every write to the guard table is logged by a trigger
  and checked per key).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.pipeline import (
    DEMO,
    REPO,
    TOPICS,
    assert_converged_equal,
    converge,
    daemon,
    env_for,
    fresh_target,
    kafka_committed,
    run_cli,
    stored_offsets,
    wait_until,
)
from tests.integration.stack import Stack

STACK = REPO / "deploy" / "local" / "stack"
VERSION_LOG = """
CREATE TABLE IF NOT EXISTS public.version_log (
  id bigserial PRIMARY KEY, target_table text, key text, partition int, kafka_offset bigint,
  commit_lsn numeric, lsn numeric, total_order bigint, deleted boolean,
  txid bigint NOT NULL DEFAULT txid_current());
CREATE OR REPLACE FUNCTION public.log_version() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF NEW.kafka_offset IS NOT NULL THEN
    INSERT INTO public.version_log
      (target_table, key, partition, kafka_offset, commit_lsn, lsn, total_order, deleted)
    VALUES (NEW.target_table, NEW.key, NEW.partition, NEW.kafka_offset, NEW.commit_lsn, NEW.lsn,
            NEW.total_order, NEW.deleted);
  END IF;
  RETURN NULL;
END $$;
-- A version claimed and dropped again in one transaction (a key whose row was refused) was never
-- a state of the target: its log entries go with it, so the log is the committed history.
CREATE OR REPLACE FUNCTION public.unlog_version() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  DELETE FROM public.version_log
   WHERE target_table = OLD.target_table AND key = OLD.key AND txid = txid_current();
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS log_version ON replicator.row_version;
CREATE TRIGGER log_version AFTER INSERT OR UPDATE ON replicator.row_version
  FOR EACH ROW EXECUTE FUNCTION public.log_version();
DROP TRIGGER IF EXISTS unlog_version ON replicator.row_version;
CREATE TRIGGER unlog_version AFTER DELETE ON replicator.row_version
  FOR EACH ROW EXECUTE FUNCTION public.unlog_version();
"""


def local_stack_only() -> None:
    if os.environ.get("CDC_EXTERNAL_STACK") == "1":
        pytest.skip("needs process control over the local stack (CDC_EXTERNAL_STACK=1 points elsewhere)")


def assert_offsets_never_ahead(stack: Stack, dbname: str, group: str) -> None:
    stored = stored_offsets(stack, dbname, group)
    for tp, offset in kafka_committed(stack, group, TOPICS).items():
        assert offset <= stored.get(tp, 0), f"Kafka committed {tp}@{offset} ahead of target {stored.get(tp)}"


def init_control(stack: Stack, dbname: str) -> None:
    env = env_for(stack, dbname, "init")
    done = run_cli(env, "init")
    assert done.returncode == 0, done.stderr


def regressions(stack: Stack, dbname: str) -> list[str]:
    """Keys whose applied versions ever went backwards (oracle H on the guard's history)."""
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        rows = conn.execute(
            "SELECT target_table, key, partition, kafka_offset, commit_lsn, lsn, total_order"
            " FROM public.version_log ORDER BY id"
        ).fetchall()
    last: dict[tuple[str, str], tuple[int, int, tuple[Any, ...] | None]] = {}
    bad = []
    for table, key, partition, offset, c, lsn, order in rows:
        prev = last.get((table, key))
        if prev is not None:
            p_partition, p_offset, p_pos = prev
            pos = None if lsn is None else (c, lsn, order)
            if partition == p_partition and offset <= p_offset:
                bad.append(f"{table}{key}: offset {p_offset} -> {offset}")
            if pos is not None and p_pos is not None and pos <= p_pos:
                bad.append(f"{table}{key}: position {p_pos} -> {pos}")
        last[(table, key)] = (partition, offset, None if lsn is None else (c, lsn, order))
    return bad


@pytest.mark.parametrize("failpoint", ["mid_batch", "before_target_commit", "after_target_commit"])
def test_kill_at_failpoint_then_restart_converges(stack: Stack, tmp_path: Path, failpoint: str) -> None:
    dbname = fresh_target(failpoint.replace("_", ""))
    group = f"fp-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group, REPLICATOR_BATCH__MAX_EVENTS="400")
    crashed = run_cli({**env, "REPLICATOR_FAILPOINT": f"{failpoint}:3"}, "run", "--stop-when-caught-up")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert_offsets_never_ahead(stack, dbname, group)
    before = sum(stored_offsets(stack, dbname, group).values())
    # Two batches committed before the kill; a kill before the commit keeps none of the third.
    assert before > 0
    with daemon(env, tmp_path / "d.log") as proc:
        converge(stack, dbname, group)
    assert proc.returncode == 0
    assert_offsets_never_ahead(stack, dbname, group)
    assert_converged_equal(stack, dbname)


def test_target_down_mid_stream_daemon_waits_and_recovers(stack: Stack, tmp_path: Path) -> None:
    local_stack_only()
    state = Path(os.environ.get("STACK_DIR", REPO / ".stack"))
    dbname = fresh_target("tdown")
    group = f"tdown-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group)
    log = tmp_path / "d.log"
    with daemon(env, log) as proc:
        load = subprocess.Popen(
            [sys.executable, str(DEMO), "workload", "--rate", "100", "--seconds", "6"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: "event=batch" in log.read_text(), 60, "a first batch")
        as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        pg_ctl = f"/usr/lib/postgresql/{os.environ.get('STACK_PG_VERSION', '15')}/bin/pg_ctl"
        subprocess.run(
            [*as_pg, pg_ctl, "-D", str(state / "pg" / "target"), "-m", "immediate", "stop"],
            check=True,
            capture_output=True,
        )
        wait_until(lambda: "event=retry" in log.read_text(), 60, "the daemon to notice and retry")
        assert proc.poll() is None, "the daemon must wait, not die"
        load.wait(timeout=120)
        subprocess.run([str(STACK), "up"], check=True, capture_output=True, timeout=300)
        converge(stack, dbname, group)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert_offsets_never_ahead(stack, dbname, group)
    assert_converged_equal(stack, dbname)


def test_connect_killed_mid_stream_redelivery_is_noop_and_nothing_regresses(
    stack: Stack, tmp_path: Path
) -> None:
    local_stack_only()
    state = Path(os.environ.get("STACK_DIR", REPO / ".stack"))
    dbname = fresh_target("ckill")
    group = f"ckill-{uuid.uuid4().hex[:6]}"
    init_control(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(VERSION_LOG)
    env = env_for(stack, dbname, group)
    log = tmp_path / "d.log"
    with daemon(env, log) as proc:
        converge(stack, dbname, group)  # snapshot history applied first
        load = subprocess.Popen(
            [sys.executable, str(DEMO), "workload", "--rate", "150", "--seconds", "8", "--seed", "5"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: log.read_text().count("event=batch") >= 3, 60, "streaming batches")
        pid = int((state / "run" / "connect.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        load.wait(timeout=120)
        subprocess.run([str(STACK), "up"], check=True, capture_output=True, timeout=300)
        converge(stack, dbname, group, timeout_s=180)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert regressions(stack, dbname) == []
    assert_offsets_never_ahead(stack, dbname, group)
    assert_converged_equal(stack, dbname)


@contextmanager
def resumed_on_exit(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """A frozen process cannot handle SIGTERM: resume it whatever happens."""
    try:
        yield
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)


def test_stale_instance_late_batch_is_harmless(stack: Stack, tmp_path: Path) -> None:
    """Matrix 6: instance A freezes with a decoded batch in hand (SIGSTOP) past its session
    timeout; B takes over and applies past it; A resumes and applies its stale batch:
    every event is older than the stored versions (no-op), checkpoints do not go back,
    nothing regresses and the target ends equal to the source."""
    dbname = fresh_target("stale")
    group = f"stale-{uuid.uuid4().hex[:6]}"
    init_control(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(VERSION_LOG)
    env = env_for(
        stack, dbname, group, REPLICATOR_KAFKA__SESSION_TIMEOUT_MS="6000", REPLICATOR_BATCH__MAX_EVENTS="300"
    )
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    with daemon({**env, "REPLICATOR_FAILPOINT": "stop_before_apply:4"}, log_a) as a, resumed_on_exit(a):
        wait_until(lambda: log_a.read_text().count("event=batch") >= 3, 120, "A's first batches")
        wait_until(lambda: Path(f"/proc/{a.pid}/stat").read_text().split()[2] == "T", 60, "A to freeze")
        stored_at_freeze = sum(stored_offsets(stack, dbname, group).values())
        with daemon(env, log_b) as b:
            wait_until(
                lambda: (
                    "event=assigned" in log_b.read_text() and log_b.read_text().count("partitions=demo") >= 1
                ),
                120,
                "B to take over",
            )
            subprocess.run(
                [sys.executable, str(DEMO), "workload", "--rate", "100", "--seconds", "3", "--seed", "9"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            converge(stack, dbname, group)
            assert sum(stored_offsets(stack, dbname, group).values()) > stored_at_freeze
            os.kill(a.pid, signal.SIGCONT)
            wait_until(lambda: log_a.read_text().count("event=batch") >= 4, 120, "A's late batch")
            converge(stack, dbname, group)
        assert b.returncode == 0, log_b.read_text()[-2000:]
    late = [line for line in log_a.read_text().splitlines() if "event=batch" in line][3]
    assert "applied=-" in late and "skipped_older=0" not in late, late
    assert regressions(stack, dbname) == []
    assert_offsets_never_ahead(stack, dbname, group)
    assert_converged_equal(stack, dbname)


def test_a_member_fenced_by_a_newer_one_with_its_instance_id_stops_naming_both_causes(
    stack: Stack, tmp_path: Path
) -> None:
    """A static member frozen with a batch in hand while a newer member joins with its instance
    id: Kafka fences it, and when it runs again it ends `done` (exit 0: its successor applies its
    partitions; `halted` made `status` call them HALTED, trials 13 and 14), with a `fenced` line
    that names both causes (its replacement, nothing to fix; or a second process configured with
    the same id, and that fix)."""
    dbname = fresh_target("fenced")
    group = f"fenced-{uuid.uuid4().hex[:6]}"
    env = env_for(
        stack, dbname, group, REPLICATOR_KAFKA__INSTANCE_ID=f"{group}-1", REPLICATOR_BATCH__MAX_EVENTS="300"
    )
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    with daemon({**env, "REPLICATOR_FAILPOINT": "stop_before_apply:2"}, log_a) as a, resumed_on_exit(a):
        wait_until(lambda: Path(f"/proc/{a.pid}/stat").read_text().split()[2] == "T", 120, "A to freeze")
        with daemon(env, log_b):
            wait_until(
                lambda: "event=assigned" in log_b.read_text(), 120, "B, its replacement, to be assigned"
            )
            os.kill(a.pid, signal.SIGCONT)
            a.wait(timeout=180)
    said = log_a.read_text()
    assert a.returncode == 0, said[-3000:]
    end = [line for line in said.splitlines() if "event=end" in line][-1]
    assert "status=done" in end, end
    fenced = [line for line in said.splitlines() if "event=fenced" in line][-1]
    assert "this process's replacement" in fenced, fenced
    assert "same id (fix: give each process its own REPLICATOR_KAFKA__INSTANCE_ID)" in fenced, fenced
