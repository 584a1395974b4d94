"""How a mapped value becomes a value of its target column's type: the last step of a column rule.

Invariants:
- Pure; chosen once per column at compile time (`adapter`), None for the many
  types that need nothing: psycopg writes numbers, text, dates, `PgText` and
  `JsonText` as text that the column's own type parses.
- Only values whose meaning depends on the target are touched:
  * `Bits` into `bit(n)`: exactly n bits; into `bit varying` it is refused,
    because Debezium drops leading zero bits (B'0001' and B'1' arrive alike);
  * booleans into bit columns: '1' / '0' (Debezium sends bit(1) as a boolean);
  * a JSON object into `hstore`: hstore text (Debezium sends hstore as JSON);
  * JSON values into text columns after `json_path`: the text PostgreSQL's
    `->>` gives (strings as they are, other values as JSON text).
- A value that cannot be written exactly raises `TransformError` (the
  compiler turns it into a RowError naming the column rule); text read back
  from PostgreSQL (verification, shadow clones) passes through unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from replicator.core.errors import ReplicatorError
from replicator.core.mapping.catalog import PgType
from replicator.core.serialize import json_document
from replicator.core.values import Bits, JsonText

Fn = Callable[[Any], Any]

TEXT_TYPES = frozenset({"text", "varchar", "char", "citext"})


class AdaptError(ReplicatorError, ValueError):
    """A value its target column cannot hold exactly (one line, with the fix)."""


def adapter(target: PgType, *, json_to_text: bool = False) -> Fn | None:
    """The step that fits a value to `target`, or None when values are written as they are.
    `json_to_text`: the rule extracts JSON values (json_path) into a text column."""
    if target.is_array:
        return None
    if target.name == "bit":
        return _bit(target.length if target.length is not None else 1)
    if target.name == "bit varying":
        return _varbit
    if target.name == "hstore" or target.name.endswith(".hstore"):  # qualified when off search_path
        return _hstore
    if json_to_text and target.name in TEXT_TYPES:
        return json_as_text
    return None


def _bit(length: int) -> Fn:
    def fn(v: Any) -> Any:
        if isinstance(v, bool):
            v = Bits(int(v), 1)
        if isinstance(v, Bits):
            try:
                return v.text(length)
            except ValueError as exc:
                raise AdaptError(f"{exc}; fix: widen the target column") from None
        return v

    return fn


def _varbit(v: Any) -> Any:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, Bits):
        raise AdaptError(
            "a bit varying value cannot be carried exactly: Debezium drops its leading zero bits "
            "(B'0001' and B'1' arrive alike); fix: a bit(n) column on the source, or fill this "
            "column another way (a known limitation)"
        )
    return v


def _hstore_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hstore_text(pairs: Mapping[Any, Any]) -> str:
    """hstore input text of a flat mapping of text to text or null."""
    parts = []
    for k, v in pairs.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, str)):
            raise AdaptError(
                f"hstore holds text keys and text or null values, not {type(k).__name__} -> "
                f"{type(v).__name__}; fix: map a flat JSON object of strings"
            )
        parts.append(_hstore_quote(k) + "=>" + ("NULL" if v is None else _hstore_quote(v)))
    return ", ".join(parts)


def _hstore(v: Any) -> Any:
    if isinstance(v, JsonText):  # Debezium's hstore.handling.mode=json
        try:
            v = json.loads(v)
        except json.JSONDecodeError as exc:
            raise AdaptError(f"hstore value is not JSON ({exc.msg}); fix: clean the source value") from None
        if not isinstance(v, dict):
            raise AdaptError("hstore value is not a JSON object; fix: map a flat JSON object of strings")
    if isinstance(v, Mapping):  # hstore.handling.mode=map, or a decoded document
        return hstore_text(v)
    return v


def json_as_text(v: Any) -> Any:
    """A JSON value as text, like PostgreSQL's `->>`: strings as they are, null as null,
    numbers and booleans in JSON spelling, objects and arrays as JSON text."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | Decimal):
        return str(v)
    return json_document(v)
