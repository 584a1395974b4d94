"""Source column types Debezium's PostgreSQL connector does not carry as they are. Pure.

Measured on the stack (Debezium 3.6.1.Final, pgoutput, `include.unknown.datatypes` off, JSON and
Avro; `tests/integration/test_type_coverage.py`):
- left out of every change event, snapshot and streaming alike (the column is absent, so a rule
  reading it stops its table at the first event): box, circle, line, lseg, path, polygon, pg_lsn,
  tsquery, the multirange types, user-defined composite and range types (also under a domain or
  as array elements; the catalog reader marks them: `PgType.user_kind`), and arrays of those or
  of interval, money, point and xml (whose scalars it carries);
- `name`: carried by the snapshot, but null in every streamed event (pgoutput), so each insert
  or update would write NULL over the value without any error.
A rule that reads such a column is refused by `mapping check`; `mapping scaffold` leaves the
column out (`ignore_source_columns`) and says so.
"""

from __future__ import annotations

from replicator.core.mapping.catalog import PgType

_LEFT_OUT = frozenset(
    {
        "box",
        "circle",
        "line",
        "lseg",
        "path",
        "polygon",
        "pg_lsn",
        "tsquery",
        "int4multirange",
        "int8multirange",
        "nummultirange",
        "datemultirange",
        "tsmultirange",
        "tstzmultirange",
    }
)
_ARRAYS_LEFT_OUT = _LEFT_OUT | {"interval", "money", "point", "xml"}


def capture_gap(t: PgType) -> str | None:
    """Why Debezium does not carry a source column of type `t` as it is; None when it does (as far
    as measured: a type not named here is taken as carried)."""
    if t.name in (_ARRAYS_LEFT_OUT if t.is_array else _LEFT_OUT):
        return f"Debezium's PostgreSQL connector leaves {t} columns out of its change events"
    if t.user_kind is not None:
        return (
            f"Debezium's PostgreSQL connector leaves columns of a user-defined {t.user_kind} type"
            f" ({t}) out of its change events"
        )
    if t.name == "name" and not t.is_array:
        return "Debezium's streamed change events carry null for name columns (snapshot rows have the value)"
    return None
