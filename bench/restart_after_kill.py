#!/usr/bin/env python3
"""A restart after kill -9: seconds from starting the new process to its first assignment.

    eval "$(deploy/local/stack env)"     # after deploy/demo/run (or demo.py setup + connectors apply)
    python3 bench/restart_after_kill.py [--rounds 4] [--session-timeout-ms 45000]

One `python -m replicator run` of a fresh consumer group on the demo topics, with a stable
`REPLICATOR_KAFKA__INSTANCE_ID` (static membership), into a fresh demo target. Per round: wait
for its first assignment that names partitions, SIGKILL it, start it again with the same instance
id and time, from the start of the new process, until its log says `event=assigned` with
partitions. Without static membership the group would wait for the dead member's session to
expire (`--session-timeout-ms`) before reassigning; with it the broker hands the partitions back
at once. The time includes interpreter start, settings, the mapping check against both catalogs
and the target's checkpoint reads. Nothing here is a claim beyond these runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.pipeline import fresh_target  # noqa: E402

ASSIGNED = "event=assigned partitions="


def assigned(log: Path) -> bool:
    """The log has an assignment that names partitions (an empty one says `partitions=-`)."""
    return any(ASSIGNED in line and ASSIGNED + "-" not in line for line in log.read_text().splitlines())


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "replicator", "run"], env=env, stdout=out, stderr=out, cwd=ROOT
        )


def wait_assigned(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> float:
    began = time.monotonic()
    while not assigned(log):
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode} before its assignment; see {log}")
        if time.monotonic() - began > timeout_s:
            raise SystemExit(f"no assignment within {timeout_s} s; see {log}")
        time.sleep(0.02)  # polling the log for the condition
    return time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--session-timeout-ms", type=int, default=45000)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        "REPLICATOR_TARGET__DBNAME": fresh_target("restart"),
        "REPLICATOR_KAFKA__GROUP_ID": f"restart-{run}",
        "REPLICATOR_KAFKA__INSTANCE_ID": f"restart-{run}-1",
        "REPLICATOR_KAFKA__SESSION_TIMEOUT_MS": str(args.session_timeout_ms),
    }
    logs = Path(f"/tmp/restart-bench-{run}")
    logs.mkdir()
    subprocess.run(
        [sys.executable, "-m", "replicator", "init"], env=env, cwd=ROOT, check=True, capture_output=True
    )
    proc = start(env, logs / "first.log")
    wait_assigned(proc, logs / "first.log", 120)
    times: list[float] = []
    for n in range(1, args.rounds + 1):
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log = logs / f"restart-{n}.log"
        proc = start(env, log)
        times.append(wait_assigned(proc, log, args.session_timeout_ms / 1000 + 60))
        print(f"restart {n}: assigned {times[-1]:.2f} s after the new process started", flush=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)} restarts"
        f" (session timeout {args.session_timeout_ms} ms; load {load}); logs in {logs}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
