"""Which exceptions are an operator's problem (one line) and which are bugs (a traceback).

Known: every `ReplicatorError`, a database error with a SQLSTATE that is not
a syntax error of ours, a Kafka client error, a file that cannot be read or
written. Anything else is a bug.
"""

from __future__ import annotations

import psycopg
from confluent_kafka import KafkaException

from replicator.core.errors import ReplicatorError, one_line
from replicator.pg.errors import sqlstate

_OUR_SQL_BUGS = frozenset(
    {"42601", "42P02", "42P18"}
)  # syntax error, undefined parameter, indeterminate type


def known_reason(exc: BaseException) -> str | None:
    """The one-line reason for a known failure, or None for a bug."""
    if isinstance(exc, ReplicatorError):
        return " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, psycopg.Error):
        state = sqlstate(exc)
        if state in _OUR_SQL_BUGS:
            return None
        return f"database: {one_line(exc)}" + (f" (SQLSTATE {state})" if state else "")
    if isinstance(exc, KafkaException):
        return f"kafka: {exc.args[0]}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or type(exc).__name__}: {exc.filename or exc}"
    return None
