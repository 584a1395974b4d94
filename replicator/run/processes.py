"""`replicator run --processes N`: N daemon processes in one consumer group, from one command.

One interpreter decodes, maps and formats every message it applies, and its threads share one
lock; several processes in the group use more cores (the partitions are shared among them, the
ordering guard and the target-stored checkpoints make any interleaving of their batches safe).

Invariants:
- Each child is a whole `replicator run` (same settings, same flags) and a member of the group;
  with `REPLICATOR_KAFKA__INSTANCE_ID` set, child i gets `<id>-<i>`, stable across restarts, so
  a restarted child gets its own partitions back at once. Secrets reach the children through the
  environment, never their command lines.
- A child killed by a signal (kill -9, OOM) is started again at once: nothing it held is lost (its
  batch rolls back, its checkpoint is in the target). A child that exits with a status (a fatal
  error, a halt, caught up) is not: the supervisor stops the others (SIGTERM: each finishes its
  batch) once one exits non-zero, and exits with that status; it exits 0 when every child did.
- SIGTERM or SIGINT to the supervisor is passed to every child; a child outlives a supervisor
  killed with -9 by at most its current batch (it is sent SIGTERM by the kernel, Linux).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

INSTANCE_ENV = "REPLICATOR_KAFKA__INSTANCE_ID"
#: A child killed this many times within `_RESTART_WINDOW_S` is not started again (a crash loop).
_MAX_RESTARTS = 5
_RESTART_WINDOW_S = 60.0


def instance_ids(base: str | None, count: int) -> list[str | None]:
    """The static member id of each child: `<base>-<i>` (1-based), or None (dynamic membership)."""
    return [None if base is None else f"{base}-{i}" for i in range(1, count + 1)]


def child_env(environ: Mapping[str, str], instance: str | None) -> dict[str, str]:
    env = dict(environ)
    if instance is not None:
        env[INSTANCE_ENV] = instance
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass(slots=True)
class _Child:
    number: int
    instance: str | None
    process: subprocess.Popen[bytes]
    kills: list[float]

    def describe(self) -> str:
        who = f"process {self.number} (pid {self.process.pid}"
        return who + (f", instance {self.instance})" if self.instance else ")")


def supervise(run_args: Sequence[str], count: int, base_instance: str | None) -> int:
    """Run `count` children of `replicator <run_args>` until they end; returns the exit status."""
    ids = instance_ids(base_instance, count)
    command = [sys.executable, "-m", "replicator", *run_args]
    stopping = False

    def start(number: int, kills: list[float]) -> _Child:
        instance = ids[number - 1]
        # The command is this interpreter running this package: no outside input in it.
        process = subprocess.Popen(  # noqa: S603
            command, env=child_env(os.environ, instance), preexec_fn=_die_with_parent
        )
        return _Child(number, instance, process, kills)

    children = {c.process.pid: c for c in (start(n, []) for n in range(1, count + 1))}
    print(
        f"replicator: started {count} processes: " + ", ".join(c.describe() for c in children.values()),
        file=sys.stderr,
        flush=True,
    )

    def stop_all(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        for c in children.values():
            if c.process.poll() is None:
                c.process.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop_all) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0

    def say(line: str) -> None:
        print(f"replicator: {line}", file=sys.stderr, flush=True)

    try:
        while children:
            pid, wait_status = os.wait()
            child = children.pop(pid, None)
            if child is None:
                continue
            child.process.returncode = code = os.waitstatus_to_exitcode(wait_status)
            if code == 0 or stopping:
                if status == 0 and code != 0:
                    status = code if code > 0 else 128 - code
                continue
            if code < 0:  # killed by a signal: start it again, unless it keeps being killed
                now = time.monotonic()
                kills = [t for t in child.kills if now - t < _RESTART_WINDOW_S] + [now]
                if len(kills) <= _MAX_RESTARTS:
                    again = start(child.number, kills)
                    children[again.process.pid] = again
                    killed = f"{child.describe()} was killed by signal {-code}"
                    say(f"{killed}; started again: pid {again.process.pid}")
                    continue
                say(
                    f"{child.describe()} was killed {len(kills)} times within {_RESTART_WINDOW_S:.0f} s"
                    f" (by signal {-code} last): not started again; stopping the others"
                )
                status = 128 - code
            else:
                say(f"{child.describe()} exited {code}: stopping the others (its error is above)")
                status = code
            stop_all()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status
