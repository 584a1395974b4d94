"""`replicator run --processes N`: N members of one group from one command.

Proves: both processes join the group with the static ids `<id>-1` and `<id>-2`; one killed with
kill -9 is started again with its own id (its partitions come back at once); SIGTERM to the
command stops every process cleanly (exit 0, none left running); the target ends equal to the
mapped source field by field; a process that exits with an error stops the others and the
command exits with its status; kill -9 of the command ends its processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from replicator.config import load_settings
from replicator.run.status import group_members
from tests.integration.pipeline import (
    assert_converged_equal,
    converge,
    daemon,
    env_for,
    fresh_target,
    wait_until,
    workload,
)
from tests.integration.stack import Stack


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def members(group: str) -> list[str | None]:
    return group_members(load_settings(None), group)


def test_two_processes_share_the_group_and_a_killed_one_comes_back(stack: Stack, tmp_path: Path) -> None:
    dbname = fresh_target("procs")
    group = f"procs-{uuid.uuid4().hex[:6]}"
    base = f"procs-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group, REPLICATOR_KAFKA__INSTANCE_ID=base)
    log = tmp_path / "daemon.log"
    with daemon(env, log, "--processes", "2") as proc:
        wait_until(lambda: len(children(proc.pid)) == 2, 60, "two processes started")
        first = children(proc.pid)
        wait_until(
            lambda: sorted(m or "" for m in members(group)) == [f"{base}-1", f"{base}-2"],
            120,
            "both processes listed in the group with their static ids",
        )
        workload(seconds=3, rate=100, seed=31)
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: "was killed by signal 9; started again" in log.read_text(), 60, "a restart")
        wait_until(lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid), 60, "2 again")
        restarted = re.search(r"process (\d) \(pid \d+, instance ([^)]+)\) was killed", log.read_text())
        assert restarted is not None, log.read_text()[-2000:]
        assert restarted.group(2) == f"{base}-{restarted.group(1)}"
        workload(seconds=3, rate=100, seed=32)
        converge(stack, dbname, group)
        last = children(proc.pid)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert not any(alive(pid) for pid in last), "every process ended with the command"
    assert_converged_equal(stack, dbname)


def test_processes_end_when_the_command_is_killed(stack: Stack, tmp_path: Path) -> None:
    """kill -9 of the command: its processes get SIGTERM from the kernel and end (no orphan keeps
    applying beside the command an operator starts again)."""
    env = env_for(stack, fresh_target("procs"), f"procs-{uuid.uuid4().hex[:6]}")
    with open(tmp_path / "daemon.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--processes", "2"], env=env, stdout=out, stderr=out
        )
    wait_until(lambda: len(children(proc.pid)) == 2, 60, "two processes started")
    started = children(proc.pid)
    proc.kill()
    proc.wait()
    wait_until(lambda: not any(alive(pid) for pid in started), 90, "both processes ended")


def test_a_process_that_fails_stops_the_others(stack: Stack, tmp_path: Path) -> None:
    """A fatal error of one process (here: a target database that does not exist, so each fails
    at start) is the command's exit status, with the process named; nothing keeps running."""
    group = f"procs-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, f"missing_{uuid.uuid4().hex[:6]}", group)
    done = subprocess.run(
        [sys.executable, "-m", "replicator", "run", "--processes", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert re.search(r"process \d \(pid \d+\) exited 1: stopping the others", done.stderr), done.stderr
    assert "missing_" in done.stderr  # the child's own one-line error names the database


@pytest.mark.parametrize("value", ["0", "-2"])
def test_processes_below_one_is_refused(stack: Stack, value: str) -> None:
    env = env_for(stack, "unused", f"procs-{uuid.uuid4().hex[:6]}")
    done = subprocess.run(
        [sys.executable, "-m", "replicator", "run", "--processes", value],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert f"--processes {value}: give 1 or more" in done.stderr
