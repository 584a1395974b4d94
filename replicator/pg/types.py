"""PostgreSQL values Python cannot hold, mapped to the pipeline's own objects.

psycopg refuses `infinity` / `-infinity` dates and timestamps (they are out of
Python's range). Connections that read rows the pipeline compares or diffs
(the shadow's clones, verification) register these loaders, so such values
come back as `values.POS_INFINITY` / `NEG_INFINITY`, the same objects the
decoder produces, and round-trip as text ('infinity') when written; time
'24:00:00' comes back as `values.PgText`, as the decoder carries it, and so
do dates and timestamps outside Python's years 1..9999 ('0044-03-15 BC'):
compared as the server's text, never a crash of the whole comparison.
Intervals come back as the server's text too (a timedelta folds '3 mons' into
'90 days', which PostgreSQL keeps apart). Cursors that read rows to compare or
preview (`exact_rows`) also read JSON numbers with a fraction or exponent as
`values.JsonNumber`, a Decimal keeping the server's token (floats would round
1.000000000000000000001 to 1.0; the token lets a preview show 1.50 as a JSON
number 1.50); the control schema's own JSON (settings, totals) keeps
psycopg's plain loading.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Dumper
from psycopg.types.datetime import DateLoader, TimeLoader, TimestampLoader, TimestamptzLoader
from psycopg.types.json import set_json_loads
from psycopg.types.string import TextLoader

from replicator.core.values import NEG_INFINITY, POS_INFINITY, Infinity, JsonNumber, PgText


def _infinite(data: Any) -> Any:
    raw = bytes(data)
    if raw == b"infinity":
        return POS_INFINITY
    if raw == b"-infinity":
        return NEG_INFINITY
    return None


def _server_text(data: Any) -> PgText:
    """A value as the server wrote it: for what Python cannot hold (BC, beyond year 9999) or
    would fold (an interval's months)."""
    return PgText(bytes(data).decode())


def _date_or_text(data: Any, load: Callable[[Any], Any]) -> Any:
    """±infinity as the Infinity objects, a value out of Python's range as its text, else `load`."""
    try:
        return _infinite(data) or load(data)
    except psycopg.DataError:
        return _server_text(data)


class _InfTimestampLoader(TimestampLoader):
    def load(self, data: Any) -> Any:
        return _date_or_text(data, super().load)


class _InfTimestamptzLoader(TimestamptzLoader):
    def load(self, data: Any) -> Any:
        return _date_or_text(data, super().load)


class _InfDateLoader(DateLoader):
    def load(self, data: Any) -> Any:
        return _date_or_text(data, super().load)


class _TimeLoader(TimeLoader):
    """time '24:00:00' (valid in PostgreSQL, not in Python) as the decoder carries it: PgText."""

    def load(self, data: Any) -> Any:
        raw = bytes(data)
        return PgText(raw.decode()) if raw.startswith(b"24:") else super().load(data)


class _IntervalLoader(TextLoader):
    """An interval as the server writes it ('3 mons 3 days 05:42:38'): PgText."""

    def load(self, data: Any) -> Any:
        return _server_text(data)


def _exact_json(data: str | bytes) -> Any:
    return json.loads(data, parse_float=JsonNumber)


class _InfinityDumper(Dumper):
    """'infinity' / '-infinity' as text of an unknown type: the server reads it as the column's
    date or timestamp type (in COPY and in parameters alike)."""

    oid = 0

    def dump(self, obj: Any) -> Buffer:
        return str(obj).encode()


def _elements(value: list[Any]) -> Iterator[Any]:
    for item in value:
        if isinstance(item, list):
            yield from _elements(item)
        elif item is not None:
            yield item


def _array_literal(value: list[Any]) -> str:
    parts = []
    for item in value:
        if item is None:
            parts.append("NULL")
        elif isinstance(item, list):
            parts.append(_array_literal(item))
        else:
            parts.append('"' + str(item).replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


def array_cell(value: Any) -> Any:
    """An array cell for COPY: psycopg dumps a list whose elements share one type; one that mixes
    types (a date[] holding 'infinity' beside dates: `Infinity` and `date`; a time[] with
    '24:00:00': `PgText` and `time`) goes as PostgreSQL's array text, which the server reads as
    the column's type. Any other value is returned as it is."""
    if not isinstance(value, list) or len({type(item) for item in _elements(value)}) < 2:
        return value
    return _array_literal(value)


def register_types(context: AdaptContext) -> None:
    """Load the values Python cannot hold (or would round) as the pipeline's own objects, and
    write the Infinity objects back."""
    context.adapters.register_loader("timestamp", _InfTimestampLoader)
    context.adapters.register_loader("timestamptz", _InfTimestamptzLoader)
    context.adapters.register_loader("date", _InfDateLoader)
    context.adapters.register_loader("time", _TimeLoader)
    context.adapters.register_loader("interval", _IntervalLoader)
    context.adapters.register_dumper(Infinity, _InfinityDumper)


C = TypeVar("C", bound="psycopg.Cursor[Any]")


def exact_rows(cursor: C) -> C:
    """`cursor`, reading JSON numbers exactly (`JsonNumber`): for rows that are compared or shown."""
    set_json_loads(_exact_json, cursor)
    return cursor
