"""Capture marks: what Kafka Connect has durably in Kafka, and where the mapped partitions end.

A mark is read in this order: Connect's committed source offset of the
connector (its `lsn_commit`), then the end offset of every mapped partition.
Every transaction committed at or before `lsn_commit` is then below those end
offsets (`core.holding`, point 2). Marks are taken in a background thread,
every `interval_s`, only while the writer holds rows back (`wanted`), and the
newest few are kept. An unreachable Connect or Kafka only means no new mark:
held rows then wait (they are never turned into errors on missing evidence).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from replicator.core.holding import CaptureMark
from replicator.core.model import Partition

KEEP = 12


class CaptureMarks:
    def __init__(
        self,
        committed_lsn: Callable[[], int],
        end_offsets: Callable[[], dict[Partition, int]],
        interval_s: float,
        log: Callable[..., Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._committed_lsn = committed_lsn
        self._end_offsets = end_offsets
        self._interval_s = interval_s
        self._log = log
        self._clock = clock
        self._marks: tuple[CaptureMark, ...] = ()
        self.wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def current(self) -> tuple[CaptureMark, ...]:
        return self._marks

    def take(self) -> CaptureMark | None:
        """Read one mark now (None when Connect or Kafka cannot be asked)."""
        try:
            lsn = self._committed_lsn()
            ends = self._end_offsets()
        except Exception as exc:  # any failure only means no evidence this time
            if not self._failing:
                self._log(
                    "capture_mark_failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                )
            self._failing = True
            return None
        self._failing = False
        mark = CaptureMark(lsn_commit=lsn, ends=ends, taken_at=self._clock())
        self._marks = (*self._marks, mark)[-KEEP:]
        return mark

    def start(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                if self.wanted.wait(timeout=self._interval_s):
                    self.take()
                    self._stop.wait(self._interval_s)

        self._thread = threading.Thread(target=run, name="capture-marks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
