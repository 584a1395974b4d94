"""The chaos runner on the real stack: one short seed, and Connect killed mid-snapshot.

- One seed of tests/chaos/runner.py (CDC_CHAOS_SEED, default 1; CDC_CHAOS_MINUTES,
  default 2): three replicator instances, the nemesis over instances, broker,
  Connect, target and both links, then the history checker. Every safety
  counter 0, error records exactly the injected bad rows, no mismatch.
- Matrix 10, mid-snapshot: the Connect worker is killed (SIGKILL) while the
  connector's initial snapshot of a large pgbench_accounts is being written;
  restarted, Debezium snapshots again from the start. The topics hold
  duplicates (asserted: the fault happened), the target none: the history
  checker finds no effective duplicate, loss, phantom or regression, and the
  target equals the mapped source.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
from confluent_kafka import KafkaException

from replicator.config import load_settings
from replicator.run.drain import drain
from tests.chaos import runner
from tests.chaos.history import check
from tests.chaos.world import World, wait_until
from tests.integration.pipeline import REPO, daemon, end_offsets
from tests.integration.stack import Stack
from tests.integration.test_daemon_faults import local_stack_only

STACK = REPO / "deploy" / "local" / "stack"
STATE = Path(os.environ.get("STACK_DIR", REPO / ".stack"))


def test_one_chaos_seed(stack: Stack, tmp_path: Path) -> None:
    local_stack_only()
    seed = int(os.environ.get("CDC_CHAOS_SEED", "1"))
    minutes = float(os.environ.get("CDC_CHAOS_MINUTES", "2"))
    line, ok = runner.run_seed(seed, minutes, 1000, 3, tmp_path / f"seed{seed}")
    print(runner.HEADER)
    print(line)
    assert ok, f"{runner.HEADER}\n{line}\nsee {tmp_path / f'seed{seed}' / 'result.json'}"


def test_connect_killed_mid_snapshot_duplicates_in_topic_none_in_target(stack: Stack, tmp_path: Path) -> None:
    local_stack_only()
    name = f"snap{uuid.uuid4().hex[:4]}"
    world = World(name, tmp_path, accounts=300_000)
    target_db = f"chaos_t_{name}"
    group = f"chaos-{name}"
    world.create_source()
    world.write_spec()
    world.create_target(target_db)
    env = {
        **os.environ,
        "REPLICATOR_SOURCE__DBNAME": world.source_db,
        "REPLICATOR_TARGET__DBNAME": target_db,
        "REPLICATOR_KAFKA__GROUP_ID": group,
        "REPLICATOR_MAPPING": str(world.spec),
        "REPLICATOR_CONNECTOR": world.connector,
    }
    assert subprocess.run(["python3", "-m", "replicator", "init"], env=env, check=False).returncode == 0
    accounts = f"{world.prefix}.public.pgbench_accounts"
    try:
        with daemon(env, tmp_path / "d.log"):
            world.apply_connector()

            def snapshot_under_way() -> bool:
                try:
                    return sum(end_offsets(stack, [accounts]).values()) >= 2000
                except (KeyError, KafkaException):
                    return False  # the topic is not there yet, or has no leader yet

            wait_until(snapshot_under_way, 300, "the snapshot to be under way", every_s=0.1)
            assert not world.snapshot_done(), "the snapshot finished before the kill: make it bigger"
            pid = int((STATE / "run" / "connect.pid").read_text())
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), 120, "the Connect worker to die")
            subprocess.run([str(STACK), "up"], check=True, capture_output=True, timeout=600)
            wait_until(world.snapshot_done, 600, "the snapshot to complete after the restart")
            snapshot_done_at = time.time()
            settings = load_settings(None)
            settings.source.dbname = world.source_db
            settings.target.dbname = target_db
            drain(settings, world.topics, world.connector, world.signal_table, 600, group=group)
        source, target, error_keys, expected, _ = runner.read_history(world, target_db, snapshot_done_at)
        verdict = check(source, target, error_keys, expected)
        assert runner.topic_dups(world) > 0, "Connect's restart should have redelivered snapshot rows"
        assert verdict.safe(), verdict.examples()
        assert not verdict.unexpected_errors and not verdict.missing_errors
        bad, detail = runner.mismatches(world, target_db)
        assert bad == 0, detail
    finally:
        subprocess.run([str(STACK), "up"], check=False, capture_output=True, timeout=600)
        world.remove()
        with psycopg.connect(world.admin("TARGET", "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target_db}" WITH (FORCE)')
