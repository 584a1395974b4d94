"""The one JSON serializer for every output a person or a tool reads (diffs, error records,
reports, `--json`), and for JSON documents written into json/jsonb columns. Pure.

Invariants:
- `to_jsonable` / `dumps` never raise on a value. Every value a decoder, a
  transform or a database read can produce has a stable text form: decimals,
  ±infinity dates and timestamps, NaN and ±Infinity floats (as strings, since
  JSON has no such numbers), UUIDs, network addresses, bytes (`\\x<hex>`),
  intervals, ranges, bit strings and any other object (its `str`). Containers
  are walked recursively.
- A `JsonNumber` (a number inside a json/jsonb value read back from the
  target) stays a JSON number: `dumps` writes its token as the server wrote
  it (no float rounding, 1.50 stays 1.50); any other Decimal is a string.
  Only a document holding one is built in Python (`encode`); every other
  goes through json.dumps, and both write the same text for it.
- `json_document` is the text of a value that *is* a JSON document (a json or
  jsonb column's content): numbers stay numbers, exactly (a Decimal keeps its
  digits and scale, as jsonb does), an embedded `JsonText` is kept as the
  document it is; anything JSON has no type for is its `to_jsonable` text.
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
from replicator.core.values import JsonNumber, JsonText

JSONValue = None | bool | int | float | JsonNumber | str | list["JSONValue"] | dict[str, "JSONValue"]


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
    if isinstance(value, JsonNumber):
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


def _visible_nul(text: str) -> str:
    return text.replace("\x00", "\\u0000") if "\x00" in text else text


def jsonb_safe(document: JSONValue) -> JSONValue:
    """`document` for a jsonb column of the control schema: jsonb refuses the character U+0000
    (which a json value, and so a diff of one, may hold as `\\u0000`); each one becomes the six
    characters `\\u0000`, visibly. Row values never go this way: they are written as they are."""
    if isinstance(document, str):
        return _visible_nul(document)
    if isinstance(document, list):
        return [jsonb_safe(v) for v in document]
    if isinstance(document, dict):
        return {_visible_nul(k): jsonb_safe(v) for k, v in document.items()}
    return document


class _HoldsJsonNumber(Exception):
    """The document holds a `JsonNumber`: the stdlib encoder cannot write its token."""


def _refuse(value: Any) -> Any:
    # `to_jsonable` leaves only JSON types and JsonNumber: nothing else reaches the encoder's default
    raise _HoldsJsonNumber


def dumps(value: Any, *, indent: int | None = None) -> str:
    """JSON text of any value (never raises on a value; non-ASCII kept as is): the text
    `json.dumps(..., ensure_ascii=False, indent=indent)` writes, with each `JsonNumber` its token."""
    document = to_jsonable(value)
    try:  # the common case, no JsonNumber: the stdlib's (C) encoder
        return json.dumps(document, ensure_ascii=False, allow_nan=False, indent=indent, default=_refuse)
    except _HoldsJsonNumber:
        return encode(document, indent=indent)


def encode(document: JSONValue, *, indent: int | None = None) -> str:
    """The text `dumps` writes for a `to_jsonable` document, built in Python: the path of a document
    that holds a `JsonNumber` (the same text as json.dumps's for any other)."""
    out: list[str] = []
    _encode(document, out, indent, 0)
    return "".join(out)


def _encode(value: JSONValue, out: list[str], indent: int | None, depth: int) -> None:
    # The stdlib encoder cannot write a raw number token, so the text is built here; its layout is
    # json.dumps's (", " / ": " on one line; "," and newlines with `indent`).
    if isinstance(value, JsonNumber):
        out.append(value.text)
        return
    if not isinstance(value, list | dict) or not value:
        # a scalar (to_jsonable made NaN and the infinities strings) or an empty container
        out.append(json.dumps(value, ensure_ascii=False, allow_nan=False))
        return
    inner = "" if indent is None else "\n" + " " * (indent * (depth + 1))
    sep = ", " if indent is None else ","
    items: list[tuple[str | None, JSONValue]]
    items = [(None, v) for v in value] if isinstance(value, list) else list(value.items())
    out.append("[" if isinstance(value, list) else "{")
    for i, (key, item) in enumerate(items):
        out.append((sep if i else "") + inner)
        if key is not None:
            out.append(json.dumps(key, ensure_ascii=False) + ": ")
        _encode(item, out, indent, depth + 1)
    out.append(
        ("" if indent is None else "\n" + " " * (indent * depth)) + ("]" if isinstance(value, list) else "}")
    )


def json_document(value: Any) -> str:
    """JSON text of a document value for a json/jsonb column (see the module invariants)."""
    out: list[str] = []
    _document(value, out)
    return "".join(out)


def _document(value: Any, out: list[str]) -> None:
    if isinstance(value, JsonText):
        out.append(value)
    elif value is None or isinstance(value, bool | int | str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Decimal):
        out.append(str(value) if value.is_finite() else json.dumps(str(value)))
    elif isinstance(value, float):
        out.append(repr(value) if math.isfinite(value) else json.dumps(to_jsonable(value)))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (k, v) in enumerate(value.items()):
            if i:
                out.append(", ")
            out.append(json.dumps(str(k), ensure_ascii=False) + ": ")
            _document(v, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(", ")
            _document(v, out)
        out.append("]")
    else:
        out.append(json.dumps(to_jsonable(value), ensure_ascii=False, allow_nan=False))
