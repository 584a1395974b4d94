"""The one JSON serializer for every output a person or a tool reads (diffs, error records,
reports, `--json`). Pure.

Invariant: it never raises on a value. Every value a decoder, a transform or a
database read can produce has a stable text form: decimals, ±infinity dates
and timestamps, NaN and ±Infinity floats (as strings, since JSON has no such
numbers), UUIDs, network addresses, bytes (`\\x<hex>`), intervals, ranges and
any other object (its `str`). Containers are walked recursively.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from replicator.core.model import UNAVAILABLE

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


def to_jsonable(value: Any) -> JSONValue:
    """A value JSON can hold exactly as text; see the module invariant."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if value is UNAVAILABLE:
        return "UNAVAILABLE"
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return str(value)  # timedelta, Infinity, ipaddress, ranges, anything else: its text


def dumps(value: Any, *, indent: int | None = None) -> str:
    """JSON text of any value (never raises on a value; non-ASCII kept as is)."""
    return json.dumps(to_jsonable(value), ensure_ascii=False, allow_nan=False, indent=indent)
