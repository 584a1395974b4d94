"""Error classes, decided by SQLSTATE (never by message text).

- `Transient`: retry the batch with backoff; offsets untouched. The ordering
  guard makes re-applying idempotent.
- row-level (`is_row_error`): deterministic for one row; it becomes an error
  record and its neighbours are applied.
- `Fatal`: halt cleanly with a one-line reason; the cursor is preserved.
"""

from __future__ import annotations

import psycopg

# Retry the batch: connection trouble, serialization, deadlock, lock timeout,
# shutdown/cancel, too many connections, read-only transaction (failover).
TRANSIENT_SQLSTATES = frozenset(
    {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "57014", "53300", "25006"}
)
TRANSIENT_CLASSES = frozenset({"08"})
# One bad row: data exceptions, NOT NULL, CHECK, and (see below) FK / unique.
ROW_SQLSTATES = frozenset({"23502", "23514", "23503", "23505", "23P01"})
ROW_CLASSES = frozenset({"22"})
# Halt: authentication, permissions, missing objects, disk full, corruption.
FATAL_SQLSTATES = frozenset(
    {"28000", "28P01", "42501", "42P01", "42703", "42804", "3D000", "3F000", "53100", "XX001", "XX002"}
)


class Transient(Exception):
    """Retry the same batch after a backoff."""


class Fatal(Exception):
    """Stop the run with this one-line reason; nothing is committed past the last checkpoint."""


def sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


def is_transient(exc: BaseException) -> bool:
    state = sqlstate(exc)
    if state is None:
        # psycopg raises OperationalError without SQLSTATE for lost connections.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state in TRANSIENT_SQLSTATES or state[:2] in TRANSIENT_CLASSES


def is_row_error(exc: BaseException) -> bool:
    state = sqlstate(exc)
    return state is not None and (state in ROW_SQLSTATES or state[:2] in ROW_CLASSES)


def is_fatal(exc: BaseException) -> bool:
    state = sqlstate(exc)
    return state is not None and (state in FATAL_SQLSTATES or not (is_transient(exc) or is_row_error(exc)))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
