"""A run's heartbeat: its row in `run` records that the process is alive every `heartbeat_s`, so
`status` can tell a live run from one killed without recording its end (kill -9, a lost host).
With `on_flipped`, each beat also reads the authority row: once the target is authoritative (a
cutover flipped), `on_flipped` is called once, so an idle forward daemon stops too (a busy one
stops at its next batch, which reads the row before writing)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from replicator.config import Settings
from replicator.core.errors import one_line
from replicator.target.store import ControlStore

DEAD_AFTER_BEATS = 3  # silent this many heartbeats (and not ended): dead


class Heartbeat:
    def __init__(
        self,
        settings: Settings,
        run_id: str,
        warn: Callable[[str], None],
        on_flipped: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self._settings = settings
        self._run_id = run_id
        self._warn = warn
        self._on_flipped = on_flipped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._settings.heartbeat_s):
            try:
                with ControlStore.open(self._settings) as store:
                    store.beat(self._run_id)
                    authority = store.authority() if self._on_flipped is not None else None
                if (
                    self._on_flipped is not None
                    and authority is not None
                    and authority["authority"] != "source"
                ):
                    self._on_flipped(authority)
                    self._on_flipped = None
                failing = False
            except Exception as exc:  # the target is away: the apply path reports and retries it; beat on
                if not failing:
                    self._warn(f"could not record the heartbeat: {one_line(exc)}")
                failing = True


def liveness(silent_s: float, heartbeat_s: float) -> str:
    """An unfinished run's state from its silence: `running`, or `dead` after DEAD_AFTER_BEATS."""
    return "dead" if silent_s > DEAD_AFTER_BEATS * heartbeat_s else "running"
