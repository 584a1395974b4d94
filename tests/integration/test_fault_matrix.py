"""The rest of the fault matrix on the real stack (../shared/reference/fault-tests.md).

Each scenario runs the daemon under the demo workload, injects its fault while
the load runs, heals it and asserts the oracles:
- C: the target equals the mapped source (`assert_converged_equal`);
- H: per key, the versions the target stored never went backwards and no
  event was applied twice (every write of the version guard is logged by a
  trigger and checked: `regressions`);
- O: Kafka's committed offsets are never ahead of the target-stored ones;
- L: lag recovers: `replicator drain` reaches the end offsets within a bound
  after the fault heals.
Scenarios: broker restart (SIGTERM and SIGKILL) under load (matrix 8); Kafka
link faults through Toxiproxy: reset, black hole, 2 s latency (9); target link
faults through Toxiproxy: reset, black hole, 2 s latency (13); a lost COMMIT
acknowledgement: the target commits, the reply never arrives, the re-applied
batch is a no-op (12); rebalance churn: instances joining, leaving and killed
under load (7). Connect killed mid-snapshot (10) is in test_chaos.py (it needs
a snapshot big enough to interrupt).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.integration.pipeline import (
    DEMO,
    REPO,
    assert_converged_equal,
    converge,
    daemon,
    env_for,
    fresh_target,
    stored_offsets,
    wait_until,
)
from tests.integration.stack import Stack
from tests.integration.test_daemon_faults import (
    VERSION_LOG,
    assert_offsets_never_ahead,
    init_control,
    local_stack_only,
    regressions,
)
from tests.integration.toxiproxy import Toxiproxy, kafka_proxy, target_proxy_port

STACK = REPO / "deploy" / "local" / "stack"
STATE = Path(os.environ.get("STACK_DIR", REPO / ".stack"))


def batches(log: Path) -> int:
    return log.read_text().count("event=batch")


@contextmanager
def load(seconds: float, seed: int, rate: int = 120) -> Iterator[subprocess.Popen[bytes]]:
    """The demo workload in the background (direct to the source, never through a proxy)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(DEMO),
            "workload",
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--seed",
            str(seed),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.wait(timeout=seconds + 120)


def prepared_target(stack: Stack, name: str) -> tuple[str, str]:
    dbname = fresh_target(name)
    init_control(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(VERSION_LOG)
    return dbname, f"{name}-{uuid.uuid4().hex[:6]}"


def assert_oracles(stack: Stack, dbname: str, group: str) -> None:
    assert regressions(stack, dbname) == []  # H
    assert_offsets_never_ahead(stack, dbname, group)  # O
    assert_converged_equal(stack, dbname)  # C


def run_with_fault(
    stack: Stack,
    tmp_path: Path,
    name: str,
    fault: Callable[[subprocess.Popen[bytes], Path, subprocess.Popen[bytes]], None],
    seconds: float = 10,
    recover_s: float = 240,
    **extra: str,
) -> None:
    """Daemon up and caught up; the workload starts; `fault(daemon, log, load)` runs while the load
    does and heals before it returns; then the target must converge within `recover_s` (L)."""
    dbname, group = prepared_target(stack, name)
    env = env_for(stack, dbname, group, **extra)
    log = tmp_path / "d.log"
    with daemon(env, log) as proc:
        converge(stack, dbname, group, timeout_s=180)
        with load(seconds, seed=len(name)) as work:
            start = batches(log)
            wait_until(lambda: batches(log) >= start + 2, 120, "streaming batches under load")
            fault(proc, log, work)
        assert proc.poll() is None, log.read_text()[-3000:]
        converge(stack, dbname, group, timeout_s=recover_s)  # L: lag back to 0 within the bound
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert_oracles(stack, dbname, group)


# ---------------------------------------------------------------- broker restart (matrix 8)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill9"])
def test_broker_restart_under_load(stack: Stack, tmp_path: Path, sig: signal.Signals) -> None:
    local_stack_only()

    def restart_broker(_proc: subprocess.Popen[bytes], log: Path, work: subprocess.Popen[bytes]) -> None:
        pid = int((STATE / "run" / "kafka.pid").read_text())
        os.kill(pid, sig)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 120, "the broker to exit")
        wait_until(
            lambda: "event=retry" in log.read_text() or work.poll() is not None, 120, "load or retries"
        )
        subprocess.run([str(STACK), "up"], check=True, capture_output=True, timeout=600)

    run_with_fault(stack, tmp_path, f"broker{sig.name.lower()}", restart_broker)


# ---------------------------------------------------------------- Kafka link (matrix 9)
KAFKA_FAULTS = {
    # every connection reset as soon as data flows, for the whole load window
    "reset": ("reset_peer", {"timeout": 0}),
    # a black hole: nothing gets through, connections stay open
    "blackhole": ("timeout", {"timeout": 0}),
    # 2 s each way
    "latency": ("latency", {"latency": 2000, "jitter": 0}),
}


@pytest.mark.parametrize("fault", sorted(KAFKA_FAULTS))
def test_kafka_link_fault(stack: Stack, tmp_path: Path, toxiproxy: Toxiproxy, fault: str) -> None:
    kind, attributes = KAFKA_FAULTS[fault]

    def cut(_proc: subprocess.Popen[bytes], _log: Path, work: subprocess.Popen[bytes]) -> None:
        with toxiproxy.fault("kafka", kind, **attributes):
            work.wait(timeout=300)  # the fault lasts as long as the load

    run_with_fault(
        stack,
        tmp_path,
        f"kl{fault}",
        cut,
        REPLICATOR_KAFKA__BOOTSTRAP_SERVERS=kafka_proxy(),
        REPLICATOR_KAFKA__SESSION_TIMEOUT_MS="10000",
    )


# ---------------------------------------------------------------- target link (matrix 13)
@pytest.mark.parametrize("fault", sorted(KAFKA_FAULTS))
def test_target_link_fault(stack: Stack, tmp_path: Path, toxiproxy: Toxiproxy, fault: str) -> None:
    kind, attributes = KAFKA_FAULTS[fault]

    def cut(_proc: subprocess.Popen[bytes], log: Path, work: subprocess.Popen[bytes]) -> None:
        with toxiproxy.fault("target", kind, **attributes):
            if fault == "latency":
                work.wait(timeout=300)
            else:
                wait_until(lambda: "event=retry" in log.read_text(), 180, "the daemon to notice the cut")
                work.wait(timeout=300)

    run_with_fault(
        stack,
        tmp_path,
        f"tl{fault}",
        cut,
        REPLICATOR_TARGET__PORT=target_proxy_port(),
        REPLICATOR_TARGET__APPLY_TIMEOUT_S="15",
    )


# ---------------------------------------------------------------- lost COMMIT ack (matrix 12)
def test_lost_commit_ack_reapply_is_noop(stack: Stack, tmp_path: Path, toxiproxy: Toxiproxy) -> None:
    """The daemon freezes right before its 4th target commit; the reply path of the target link
    becomes a black hole; it resumes: the COMMIT reaches the target and commits (the stored
    checkpoint moves), the acknowledgement never comes back. The daemon gives up on the silent
    connection, reconnects and applies the same batch again: every event is already stored
    (applied nothing, skipped all), no version is written twice, Kafka is committed only after."""
    dbname, group = prepared_target(stack, "lostack")
    env = env_for(
        stack,
        dbname,
        group,
        REPLICATOR_TARGET__PORT=target_proxy_port(),
        REPLICATOR_TARGET__APPLY_TIMEOUT_S="10",
        REPLICATOR_BATCH__MAX_EVENTS="200",
        REPLICATOR_FAILPOINT="stop_before_target_commit:4",
    )
    log = tmp_path / "d.log"
    with ExitStack() as stack_exit:
        proc = stack_exit.enter_context(daemon(env, log))
        stack_exit.callback(lambda: None if proc.poll() is not None else os.kill(proc.pid, signal.SIGCONT))
        wait_until(lambda: Path(f"/proc/{proc.pid}/stat").read_text().split()[2] == "T", 180, "the freeze")
        assert batches(log) == 3
        before = stored_offsets(stack, dbname, group)
        toxiproxy.toxic("target", "ack_lost", "timeout", "downstream", timeout=0)
        os.kill(proc.pid, signal.SIGCONT)
        wait_until(lambda: stored_offsets(stack, dbname, group) != before, 60, "the COMMIT to land")
        wait_until(lambda: "event=retry" in log.read_text(), 120, "the daemon to give up on the ack")
        assert batches(log) == 3, "the batch must not count as done before its outcome is known"
        toxiproxy.remove("target", "ack_lost")
        wait_until(lambda: batches(log) >= 4, 120, "the re-applied batch")
        converge(stack, dbname, group)
    assert proc.returncode == 0, log.read_text()[-3000:]
    reapplied = [line for line in log.read_text().splitlines() if "event=batch" in line][3]
    assert "applied=-" in reapplied and "skipped_older=0" not in reapplied, reapplied
    assert_oracles(stack, dbname, group)


# ---------------------------------------------------------------- rebalance churn (matrix 7)
def test_rebalance_churn_under_load(stack: Stack, tmp_path: Path) -> None:
    """Three instances of one group under load: B and C join, A leaves (SIGTERM), B is killed
    (SIGKILL), A joins again, C leaves; one survivor drains. Every step waits for the group to
    have rebalanced (an `assigned` event in a joining or surviving log)."""
    dbname, group = prepared_target(stack, "churn")
    env = env_for(stack, dbname, group, REPLICATOR_KAFKA__SESSION_TIMEOUT_MS="6000")
    logs = {n: tmp_path / f"{n}.log" for n in ("a", "b", "c", "a2")}

    def assigned(name: str) -> int:
        return logs[name].read_text().count("event=assigned") if logs[name].exists() else 0

    with ExitStack() as es:
        a = es.enter_context(daemon(env, logs["a"]))
        converge(stack, dbname, group, timeout_s=180)
        work = es.enter_context(load(25, seed=13))
        b = es.enter_context(daemon(env, logs["b"]))
        wait_until(lambda: assigned("b") >= 1, 120, "B to join")
        c = es.enter_context(daemon(env, logs["c"]))
        wait_until(lambda: assigned("c") >= 1, 120, "C to join")
        seen_b = assigned("b")
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=60) == 0, logs["a"].read_text()[-2000:]
        wait_until(lambda: assigned("b") > seen_b, 120, "the group to rebalance after A left")
        seen_c = assigned("c")
        b.kill()
        b.wait(timeout=30)
        wait_until(lambda: assigned("c") > seen_c, 120, "the group to rebalance after B died")
        a2 = es.enter_context(daemon(env, logs["a2"]))
        wait_until(lambda: assigned("a2") >= 1, 120, "A to join again")
        work.wait(timeout=300)
        c.send_signal(signal.SIGTERM)
        assert c.wait(timeout=60) == 0, logs["c"].read_text()[-2000:]
        converge(stack, dbname, group, timeout_s=240)
        assert a2.poll() is None
    assert a2.returncode == 0, logs["a2"].read_text()[-3000:]
    assert_oracles(stack, dbname, group)
