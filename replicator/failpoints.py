"""Named crash points for interrupt/resume tests, enabled only by an env var.

`REPLICATOR_FAILPOINT=<name>[:<n>]` makes the process kill itself with SIGKILL
the n-th time (default 1st) it reaches `hit(<name>)`; names starting with
`stop_` send SIGSTOP instead (a frozen, soon stale, group member that a test
resumes with SIGCONT). Unset, `hit` is a no-op.
Names: `mid_batch` (inside the target transaction, after the row writes),
`before_target_commit`, `after_target_commit` (before the Kafka commit),
`stop_before_apply` (a decoded batch in hand, nothing applied yet),
`stop_before_target_commit` (every write done, the COMMIT not yet sent). The two
`*before_target_commit` points count batches that consume events, not retries of held rows.
`deleted <schema>.<table>`: a batch's deletes of that target table are done (its rows locked),
the next table's not begun. In-process tests replace `hit` to act at these points (the writer
is compiled: its methods cannot be replaced).

`REPLICATOR_FAILPOINT_PAUSE=<topic>[,<topic>...]` with
`REPLICATOR_FAILPOINT_RELEASE=<path>`: the loop does not consume those topics
until the file <path> exists (a topic made to lag behind the others, e.g. a
parent table's, deterministically).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

_spec = os.environ.get("REPLICATOR_FAILPOINT", "")
_name, _, _count = _spec.partition(":")
_remaining = int(_count or 1)


def hit(name: str) -> None:
    global _remaining
    if not _name or name != _name:
        return
    _remaining -= 1
    if _remaining == 0:
        os.kill(os.getpid(), signal.SIGSTOP if name.startswith("stop_") else signal.SIGKILL)


_paused = frozenset(t for t in os.environ.get("REPLICATOR_FAILPOINT_PAUSE", "").split(",") if t)
_release = os.environ.get("REPLICATOR_FAILPOINT_RELEASE", "")


def paused_topics() -> frozenset[str]:
    """Topics held back by the pause failpoint (empty when unset or released)."""
    if not _paused or (_release and Path(_release).exists()):
        return frozenset()
    return _paused
