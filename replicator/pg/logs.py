"""psycopg's own log lines as our events (I/O edge). psycopg logs a few warnings itself (an error
it ignores while ending a COPY on a connection that was lost, for one); without a handler Python
prints them raw on stderr, a line no log reader can parse (trial 17). Every such line becomes one
`pg_log` event of the run (`route_psycopg_logs`), or, before a run routes them, one `psycopg:`
line on stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

Emit = Callable[..., None]

PSYCOPG_LOGGER = logging.getLogger("psycopg")
PSYCOPG_LOGGER.propagate = False  # never the root logger's raw format


def _stderr(kind: str, **fields: Any) -> None:
    print(f"psycopg: {fields['level']}: {fields['message']}", file=sys.stderr)


class _ToEvents(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.emit_event: Emit = _stderr

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning"
        self.emit_event("pg_log", level=level, message=" ".join(record.getMessage().split()))


_HANDLER = _ToEvents()
PSYCOPG_LOGGER.addHandler(_HANDLER)


def route_psycopg_logs(emit: Emit) -> None:
    """Send psycopg's lines to `emit(kind, **fields)` (a run's log) from now on."""
    _HANDLER.emit_event = emit
