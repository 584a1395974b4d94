"""The project's errors, and the SQLSTATE classes that decide how a failure is handled.

Invariants:
- Every error the project raises on purpose is a `ReplicatorError`; its
  message is one line saying what is wrong and, where known, the fix. The CLI
  prints such errors as one line; anything else is a bug and shows its
  traceback, so a bug never looks like an operator mistake.
- `Transient`: retry the same batch after a backoff (the ordering guard makes
  re-applying idempotent). `Fatal`: halt cleanly with the cursor preserved;
  raise it `from` the exception that caused it, so the cause is kept.
- Classification is by SQLSTATE code, never by message text. Pure: the
  driver-specific part (which exception carries which code) is in
  `replicator.pg.errors`.
"""

from __future__ import annotations

from typing import Final, Literal


class ReplicatorError(Exception):
    """A known failure: one line naming the thing and the fix."""


class Transient(ReplicatorError):
    """Retry the same batch after a backoff."""


class Fatal(ReplicatorError):
    """Stop the run with this one-line reason; nothing is committed past the last checkpoint."""


class ConfigError(ReplicatorError):
    """Settings that cannot be used: names the variable or file and the parse error."""


class NotInitialized(Fatal):
    """The control schema is missing from the target (read-only commands never create it)."""


# Retry the batch: connection trouble, serialization, deadlock, lock timeout,
# shutdown/cancel, too many connections, read-only transaction (failover).
TRANSIENT_SQLSTATES: Final = frozenset(
    {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "57014", "53300", "25006"}
)
TRANSIENT_CLASSES: Final = frozenset({"08"})
# One bad row: data exceptions, NOT NULL, CHECK, FK, unique, exclusion.
ROW_SQLSTATES: Final = frozenset({"23502", "23514", "23503", "23505", "23P01"})
ROW_CLASSES: Final = frozenset({"22"})
# Constraint errors that reordering across partitions or topics can cause and time can heal.
REORDER_SQLSTATES: Final = frozenset({"23503", "23505"})
# Halt: authentication, permissions, missing objects, disk full, corruption.
FATAL_SQLSTATES: Final = frozenset(
    {"28000", "28P01", "42501", "42P01", "42703", "42804", "3D000", "3F000", "53100", "XX001", "XX002"}
)

Disposition = Literal["transient", "row", "fatal"]


def classify_sqlstate(state: str) -> Disposition:
    """What to do about a server error with this SQLSTATE."""
    if state in FATAL_SQLSTATES:
        return "fatal"
    if state in TRANSIENT_SQLSTATES or state[:2] in TRANSIENT_CLASSES:
        return "transient"
    if state in ROW_SQLSTATES or state[:2] in ROW_CLASSES:
        return "row"
    return "fatal"


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
