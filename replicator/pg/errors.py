"""Which psycopg exception is which kind of failure (the driver side of `core.errors`).

psycopg raises `OperationalError` without a SQLSTATE for a lost connection
(transient), and with 28000/28P01 for a refused login (fatal); everything
else is decided by its SQLSTATE through `core.errors.classify_sqlstate`.
"""

from __future__ import annotations

import psycopg

from replicator.core.errors import classify_sqlstate


def sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def is_transient(exc: BaseException) -> bool:
    state = sqlstate(exc)
    if state is None:
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return classify_sqlstate(state) == "transient"


def is_row_error(exc: BaseException) -> bool:
    state = sqlstate(exc)
    return state is not None and classify_sqlstate(state) == "row"


def is_fatal(exc: BaseException) -> bool:
    state = sqlstate(exc)
    return state is not None and classify_sqlstate(state) == "fatal"
