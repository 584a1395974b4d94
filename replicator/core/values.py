"""Kafka Connect / Debezium semantic types -> plain Python values.

Invariants:
- Conversion is driven by the field schema (Connect type + semantic `name` +
  `parameters`), compiled once per schema into a `RowConverter`; the hot path
  only calls prebuilt closures, it never inspects a schema.
- Conversion is lossless or fails: a value that cannot be represented exactly
  (bad base64, a date outside Python's years 1..9999, ...) raises
  `ValueConversionError` naming the column; nothing is rounded or clamped.
  Debezium's approximate encodings are refused, not passed on: `MicroDuration`
  (interval.handling.mode=numeric: a month is 30.4375 days) and the Java
  object names it sends for multi-dimensional text arrays.
- Decimals are exact (`decimal.Decimal`, built from the unscaled integer, never
  through float or a limited-precision context).
- An unchanged-TOAST placeholder, in the shape Debezium gives it for the
  field's type, becomes `UNAVAILABLE`; it is recognised on the wire value,
  before any conversion.
- PostgreSQL `infinity` / `-infinity` dates and timestamps become
  `POS_INFINITY` / `NEG_INFINITY` (instances of `Infinity`), never
  datetime.max/min, in every shape Debezium gives them (see `_TS_INFINITIES`,
  `_DATE_INFINITIES`, `_ZONED_INFINITIES`).
- Values Python has no type for but PostgreSQL reads exactly from a text are
  `PgText` (time 24:00:00, a geometric point); JSON documents stay their
  exact text (`JsonText`, so `json` keeps key order, duplicates and spacing);
  `bit(n)` values are `Bits` (the target column decides their text, see
  `core.mapping.targets`). Float NaN and ±Infinity are floats.

Writer note: `Infinity` is not registered with psycopg (nothing global is
registered here).  `str(POS_INFINITY) == "infinity"`, so a writer either
binds `str(value)` for such values, or registers on its own connection
`conn.adapters.register_dumper(Infinity, d)` with a text dumper `d` whose
`dump(obj)` returns `str(obj).encode()` and whose `oid` is 0 (unknown), so
PostgreSQL infers timestamp/timestamptz/date from the target column.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from mypy_extensions import mypyc_attr

from replicator.core.errors import ReplicatorError
from replicator.core.model import UNAVAILABLE

Converter = Callable[[Any], Any]

DEFAULT_PLACEHOLDER: Final = "__debezium_unavailable_value"


@dataclass(frozen=True, slots=True)
class Infinity:
    """PostgreSQL `infinity` (positive=True) or `-infinity` for a date/time column."""

    positive: bool

    def __str__(self) -> str:
        return "infinity" if self.positive else "-infinity"

    def __repr__(self) -> str:
        return "POS_INFINITY" if self.positive else "NEG_INFINITY"


POS_INFINITY: Final = Infinity(True)
NEG_INFINITY: Final = Infinity(False)


@mypyc_attr(native_class=False)  # compiled (mypyc): a str subclass stays a Python class
class PgText(str):
    """A value carried as the exact text PostgreSQL reads it from, because Python has no type
    that holds it (e.g. time '24:00:00', a point). A `str`, so it is dumped as text and the
    target column's type parses it."""

    __slots__ = ()


@mypyc_attr(native_class=False)
class JsonText(str):
    """A json/jsonb value as its exact document text (Debezium sends JSON as text). Written as
    is, so a `json` column keeps key order, duplicate keys and spacing; rules that read inside
    it (`json_path`) parse it."""

    __slots__ = ()


@mypyc_attr(native_class=False)
class JsonNumber(Decimal):
    """A number with a fraction or exponent inside a JSON document read back from a json/jsonb
    column (`pg.types.exact_rows`): a Decimal (so it compares as one) that keeps the token as the
    server wrote it (`text`: 1.50 stays 1.50, 1e400 stays 1e400). `core.serialize` writes `text`
    as a JSON number, where a plain Decimal (a numeric column) is written as a string."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, token: str) -> JsonNumber:
        number = Decimal.__new__(cls, token)  # not super(): mypyc compiles that to object.__new__
        number.text = token
        return number


@dataclass(frozen=True, slots=True)
class Bits:
    """A `bit(n)` / `bit varying` value as Debezium sends it (io.debezium.data.Bits): the bits as
    an unsigned integer and the column's declared length (2^31-1 for bit varying without one).
    Debezium keeps no count of leading zero bits: B'0001' and B'1' of a bit varying column
    arrive alike, so only a `bit(n)` target can be written exactly (`text(n)`)."""

    value: int
    declared: int

    def text(self, length: int) -> str:
        """The bit string of exactly `length` bits (ValueError when the value needs more)."""
        if self.value.bit_length() > length:
            raise ValueError(f"{self.value.bit_length()} bits do not fit bit({length})")
        return format(self.value, f"0{length}b") if length else ""

    def __str__(self) -> str:
        return format(self.value, "b") if self.value else "0"


# Debezium's encoding of PostgreSQL +-infinity for timestamp (MicroTimestamp);
# the millisecond variant is what the same instant gives as Timestamp.
MICRO_POS_INFINITY: Final = 9223372036825200000
MICRO_NEG_INFINITY: Final = -9223372036832400000
_TS_INFINITIES: Final[dict[int, Infinity]] = {
    MICRO_POS_INFINITY: POS_INFINITY,
    MICRO_NEG_INFINITY: NEG_INFINITY,
    MICRO_POS_INFINITY // 1000: POS_INFINITY,
    MICRO_NEG_INFINITY // 1000: NEG_INFINITY,
}
# Debezium 3.6 sends date 'infinity' / '-infinity' as these day counts. In the snapshot (read
# through pgjdbc) its infinity sentinels overflow int32 on the way: -622191234 / -625821272.
# While streaming (pgoutput) PostgreSQL's own sentinels (INT32_MAX / INT32_MIN days from 2000)
# are moved to 1970 in int32 and wrap: -2147472692 / -2147472691. All four lie far outside
# PostgreSQL's own date range (4713 BC .. 5874897 AD, days -2440588 .. 2146764185 from 1970),
# so they can only mean infinity.
_DATE_INFINITIES: Final[dict[int, Infinity]] = {
    -622191234: POS_INFINITY,
    -625821272: NEG_INFINITY,
    -2147472692: POS_INFINITY,
    -2147472691: NEG_INFINITY,
}
_ZONED_INFINITIES: Final[dict[str, Infinity]] = {
    "infinity": POS_INFINITY,
    "-infinity": NEG_INFINITY,
}
# Inside a timestamptz[] Debezium sends '-infinity' as a year-292269055 instant (java.util.Date
# printing Long.MIN_VALUE without its era); PostgreSQL's latest year is 294276.
_ZONED_NEG_INFINITY_IN_ARRAYS: Final = "+292269055-"
# Debezium's text for one element of a multi-dimensional text array: a Java array's identity.
_JAVA_ARRAY_NAME: Final = "[L"


class InexactNumber(Exception):
    """A decimal column's value arrived as a float: the JSON must be parsed again, exactly."""


class ValueConversionError(ReplicatorError, ValueError):
    """A wire value that cannot be converted exactly; `column` names the field path."""

    def __init__(self, column: str, semantic: str, value: Any, reason: str) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"column {column!r} ({semantic}): cannot convert {shown}: {reason}")
        self.column = column
        self.semantic = semantic
        self.value = value
        self.reason = reason


# --------------------------------------------------------------------------- schema model


@dataclass(frozen=True, slots=True)
class ColumnType:
    """A Connect schema reduced to what conversion needs (from JSON or Avro schemas)."""

    type: str  # int8..int64, float/double (JSON) or float32/float64 (Avro), boolean, string, ...
    name: str | None = None  # semantic name, e.g. io.debezium.time.MicroTimestamp
    parameters: Mapping[str, str] = field(default_factory=dict)
    items: ColumnType | None = None  # array element or map value type
    fields: tuple[tuple[str, ColumnType], ...] = ()  # struct fields in order
    optional: bool = False  # the value may be null (a nullable column)

    @classmethod
    def from_connect(cls, schema: Mapping[str, Any]) -> ColumnType:
        """Build from a JsonConverter schema object ({"type":..., "name":..., ...})."""
        if not isinstance(schema, Mapping) or not isinstance(schema.get("type"), str):
            raise ValueError(f"not a Connect schema: {str(schema)[:80]!r}")
        typ = schema["type"]
        items: ColumnType | None = None
        fields: tuple[tuple[str, ColumnType], ...] = ()
        if typ == "array":
            items = cls.from_connect(schema["items"])
        elif typ == "map":
            items = cls.from_connect(schema["values"])
        elif typ == "struct":
            fields = tuple((f["field"], cls.from_connect(f)) for f in schema.get("fields") or ())
        params = schema.get("parameters") or {}
        return cls(typ, schema.get("name"), dict(params), items, fields, schema.get("optional") is True)


# --------------------------------------------------------------------------- scalar converters

_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()
_EPOCH: Final = dt.datetime(1970, 1, 1)
_US_PER_DAY: Final = 86_400_000_000


def _b64(value: str) -> bytes:
    return binascii.a2b_base64(value, strict_mode=True)


def _unscaled_to_decimal(unscaled: int, scale: int) -> Decimal:
    # String construction is exact; scaleb() would round to the context precision.
    if scale == 0:
        return Decimal(unscaled)
    return Decimal(f"{unscaled}E{-scale}")


def _bytes_to_decimal(raw: bytes, scale: int) -> Decimal:
    return _unscaled_to_decimal(int.from_bytes(raw, "big", signed=True), scale)


def _decimal(scale: int, binary_base64: bool) -> Converter:
    def convert(v: Any) -> Any:
        if isinstance(v, Decimal):  # decimal.format=NUMERIC, or Avro logicalType decimal
            return v
        if isinstance(v, str):
            return _bytes_to_decimal(_b64(v), scale)
        if isinstance(v, bytes):
            return _bytes_to_decimal(v, scale)
        if isinstance(v, int) and not isinstance(v, bool):
            return Decimal(v)
        if isinstance(v, float):
            raise InexactNumber
        raise TypeError(f"expected base64 string, bytes or number, got {type(v).__name__}")

    return convert


def _variable_scale_decimal(v: Any) -> Decimal:
    if not isinstance(v, Mapping) or "scale" not in v or "value" not in v:
        raise TypeError("expected a struct {scale, value}")
    raw = v["value"]
    data = _b64(raw) if isinstance(raw, str) else raw
    if not isinstance(data, bytes):
        raise TypeError(f"value must be base64 or bytes, got {type(raw).__name__}")
    return _bytes_to_decimal(data, int(v["scale"]))


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {type(v).__name__}")
    return v


def _date(v: Any) -> Any:
    if isinstance(v, dt.date):  # Avro logicalType date already decoded
        return v
    days = _int(v)
    inf = _DATE_INFINITIES.get(days)
    if inf is not None:
        return inf
    try:
        return dt.date.fromordinal(_EPOCH_ORDINAL + days)
    except ValueError:
        return _far_date(days)


_DAYS_PER_400_YEARS: Final = 146097  # the proleptic Gregorian calendar repeats every 400 years
_MAX_ORDINAL: Final = dt.date.max.toordinal()


def _far_date(days: int) -> PgText:
    """A date outside Python's years 1..9999 (a BC date, or beyond 9999) as PostgreSQL writes it
    ('0044-03-15 BC', '10000-01-01'): the same day moved by whole 400-year cycles into Python's
    range gives its month and day; PostgreSQL and Debezium both count proleptic Gregorian days."""
    ordinal = _EPOCH_ORDINAL + days
    cycles = (
        (1 - ordinal) // _DAYS_PER_400_YEARS + 1
        if ordinal < 1
        else -((ordinal - _MAX_ORDINAL) // _DAYS_PER_400_YEARS + 1)
    )
    moved = dt.date.fromordinal(ordinal + cycles * _DAYS_PER_400_YEARS)
    year = moved.year - 400 * cycles  # astronomical: 0 is 1 BC
    if year <= 0:
        return PgText(f"{1 - year:04d}-{moved.month:02d}-{moved.day:02d} BC")
    return PgText(f"{year:04d}-{moved.month:02d}-{moved.day:02d}")


_TIME_2400: Final = PgText("24:00:00")


def _time_from_micros(micros: int) -> dt.time | PgText:
    if micros == _US_PER_DAY:
        return _TIME_2400  # PostgreSQL allows 24:00:00; Python's time does not
    if not 0 <= micros < _US_PER_DAY:
        raise ValueError("outside 00:00:00..24:00:00")
    secs, us = divmod(micros, 1_000_000)
    mins, s = divmod(secs, 60)
    h, m = divmod(mins, 60)
    return dt.time(h, m, s, us)


def _time(unit_per_us: int, us_per_unit: int) -> Converter:
    def convert(v: Any) -> Any:
        if isinstance(v, dt.time):
            return v
        if isinstance(v, dt.timedelta):  # fastavro time-micros/millis
            return _time_from_micros(v // dt.timedelta(microseconds=1))
        n = _int(v)
        micros = n * us_per_unit if us_per_unit > 1 else n // unit_per_us
        return _time_from_micros(micros)

    return convert


def _timestamp(unit_per_us: int, us_per_unit: int) -> Converter:
    def convert(v: Any) -> Any:
        if isinstance(v, dt.datetime):  # Avro logicalType already decoded
            return v.replace(tzinfo=None) if v.tzinfo is not None else v
        n = _int(v)
        inf = _TS_INFINITIES.get(n)
        if inf is not None:
            return inf
        micros = n * us_per_unit if us_per_unit > 1 else n // unit_per_us
        try:
            return _EPOCH + dt.timedelta(microseconds=micros)
        except OverflowError:
            raise ValueError(
                "the timestamp is outside years 1..9999, which Python cannot hold (a known limitation)"
            ) from None

    return convert


def _zoned_timestamp(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v
    inf = _ZONED_INFINITIES.get(v)
    if inf is not None:
        return inf
    if not isinstance(v, str):
        raise TypeError(f"expected an ISO-8601 string, got {type(v).__name__}")
    if v.startswith(_ZONED_NEG_INFINITY_IN_ARRAYS):
        return NEG_INFINITY
    try:
        parsed = dt.datetime.fromisoformat(v)
    except ValueError:
        if v[:4].isdigit() and 1 <= int(v[:4]) <= 9999 and v[4:5] == "-":
            raise
        raise ValueError(
            "the timestamp (in UTC) is outside years 1..9999, which Python cannot hold (a known limitation)"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError("ISO timestamp without offset")
    return parsed


def _zoned_time(v: Any) -> Any:
    if isinstance(v, dt.time):
        return v
    if not isinstance(v, str):
        raise TypeError(f"expected an ISO-8601 time string, got {type(v).__name__}")
    parsed = dt.time.fromisoformat(v)
    if parsed.tzinfo is None:
        raise ValueError("ISO time without offset")
    return parsed


def _micro_duration(v: Any) -> Any:
    raise ValueError(
        "an interval in Debezium's numeric mode is an approximate microsecond count (a month is "
        "30.4375 days, days and hours are merged), so it cannot be carried exactly; fix: set the "
        "connector's interval.handling.mode=string"
    )


def _json(v: Any) -> Any:
    if not isinstance(v, str):
        raise TypeError(f"expected JSON text, got {type(v).__name__}")
    return JsonText(v)


_FLOAT_WORDS: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float(v: Any) -> Any:
    # JSON numbers arrive as float (orjson) or Decimal (the exact path); float columns want float.
    # Jackson writes NaN and the infinities as the strings "NaN", "Infinity", "-Infinity".
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, str):
        word = _FLOAT_WORDS.get(v)
        if word is None:
            raise ValueError("not a number")
        return word
    return v


def _bits(declared: int, binary_base64: bool) -> Converter:
    def convert(v: Any) -> Any:
        if isinstance(v, bool):  # bit(1) arrives as a boolean
            return Bits(int(v), 1)
        raw = v if isinstance(v, bytes) else _b64(v) if isinstance(v, str) and binary_base64 else None
        if raw is None:
            raise TypeError(f"expected bytes, got {type(v).__name__}")
        return Bits(int.from_bytes(raw, "little"), declared)  # Debezium: little-endian bytes

    return convert


def _point(v: Any) -> Any:
    if not isinstance(v, Mapping) or "x" not in v or "y" not in v:
        raise TypeError("expected a struct {x, y, wkb, srid}")
    x, y = _float(v["x"]), _float(v["y"])
    if not isinstance(x, float | int) or not isinstance(y, float | int):
        raise TypeError("x and y must be numbers")
    return PgText(f"({float(x)!r},{float(y)!r})".replace("nan", "NaN").replace("inf", "Infinity"))


_EWKB_SRID_FLAG: Final = 0x20000000


def _geometry(v: Any) -> Any:
    """PostGIS geometry or geography: Debezium's struct {wkb, srid} as the hex (E)WKB text that
    PostGIS reads back. Debezium's `wkb` is PostGIS's EWKB (the SRID inside when the value has
    one); a `srid` it does not carry is put in front (`SRID=n;`)."""
    if not isinstance(v, Mapping) or "wkb" not in v:
        raise TypeError("expected a struct {wkb, srid}")
    raw = _bytes_b64(v["wkb"])
    if len(raw) < 5:
        raise TypeError("wkb must be (base64 of) well-known binary")
    kind = int.from_bytes(raw[1:5], "little" if raw[0] == 1 else "big")
    srid = v.get("srid")
    if isinstance(srid, int) and not isinstance(srid, bool) and not kind & _EWKB_SRID_FLAG:
        return PgText(f"SRID={srid};{raw.hex()}")
    return PgText(raw.hex())


def _no_java_names(v: Any) -> Any:
    if isinstance(v, str) and v.startswith(_JAVA_ARRAY_NAME) and ";@" in v:
        raise ValueError(
            "Debezium sends a multi-dimensional array's inner arrays as Java object names, not "
            "values: it cannot be carried (a known limitation)"
        )
    return v


def _bytes_b64(v: Any) -> Any:
    if isinstance(v, bytes):
        return v
    if not isinstance(v, str):
        raise TypeError(f"expected base64 text, got {type(v).__name__}")
    return _b64(v)


_FIXED: Final[dict[str, Converter]] = {
    "io.debezium.data.VariableScaleDecimal": _variable_scale_decimal,
    "io.debezium.time.Date": _date,
    "org.apache.kafka.connect.data.Date": _date,
    "io.debezium.time.Time": _time(1, 1000),
    "org.apache.kafka.connect.data.Time": _time(1, 1000),
    "io.debezium.time.MicroTime": _time(1, 1),
    "io.debezium.time.NanoTime": _time(1000, 1),
    "io.debezium.time.Timestamp": _timestamp(1, 1000),
    "org.apache.kafka.connect.data.Timestamp": _timestamp(1, 1000),
    "io.debezium.time.MicroTimestamp": _timestamp(1, 1),
    "io.debezium.time.NanoTimestamp": _timestamp(1000, 1),
    "io.debezium.time.ZonedTimestamp": _zoned_timestamp,
    "io.debezium.time.ZonedTime": _zoned_time,
    "io.debezium.time.MicroDuration": _micro_duration,
    "io.debezium.data.Json": _json,
    "io.debezium.data.geometry.Point": _point,
    "io.debezium.data.geometry.Geometry": _geometry,
    "io.debezium.data.geometry.Geography": _geometry,
}
"""Semantic names with a fixed conversion.  Names not listed (Uuid, Enum,
EnumSet, Xml, Interval in string mode, Iso* strings, Year, Bits, ...) keep
their base Connect type's conversion, i.e. usually pass through."""


def converter_for(ct: ColumnType, *, binary_base64: bool) -> Converter | None:
    """The conversion for one field, or None when the wire value is already final.

    `binary_base64` is True for JSON (bytes travel as base64 text), False for
    Avro (bytes arrive as bytes).
    """
    name = ct.name
    if name == "org.apache.kafka.connect.data.Decimal":
        return _decimal(int(ct.parameters.get("scale", "0")), binary_base64)
    if name == "io.debezium.data.Bits":
        return _bits(int(ct.parameters.get("length", "1")), binary_base64)
    if name is not None and name in _FIXED:
        return _FIXED[name]
    typ = ct.type
    if typ in ("float", "double", "float32", "float64"):  # JsonConverter's names, then Avro's
        return _float
    if typ == "bytes":
        return _bytes_b64 if binary_base64 else None
    if typ == "array" and ct.items is not None:
        inner = converter_for(ct.items, binary_base64=binary_base64)
        if inner is None and ct.items.type == "string" and ct.items.name is None:
            inner = _no_java_names
        if inner is None:
            return None
        conv_item = inner

        def convert_array(v: Any) -> Any:
            return [None if x is None else conv_item(x) for x in v]

        return convert_array
    if typ == "map" and ct.items is not None:
        inner = converter_for(ct.items, binary_base64=binary_base64)
        if inner is None:
            return None
        conv_value = inner

        def convert_map(v: Any) -> Any:
            pairs = v.items() if isinstance(v, Mapping) else v  # Avro maps: dict
            return {k: None if x is None else conv_value(x) for k, x in pairs}

        return convert_map
    if typ == "struct":
        return RowConverter(ct, placeholder=None, binary_base64=binary_base64)
    return None


# --------------------------------------------------------------------------- TOAST placeholder


def _name_based_uuid(data: bytes) -> str:
    """java.util.UUID.nameUUIDFromBytes: MD5, version 3, IETF variant."""
    digest = bytearray(hashlib.md5(data, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x30
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


def placeholder_shapes(ct: ColumnType, placeholder: str, *, binary_base64: bool) -> tuple[Any, ...]:
    """Wire values that mean "unchanged TOAST" for a field of this type.

    Shapes (Debezium `UnchangedToastedPlaceholder`): the string itself for
    text-like types (text, varchar, json/jsonb, xml, ...); its bytes for bytea
    (base64 of its UTF-8 in JSON); a one-element list for text[]/varchar[]/
    json[]/jsonb[]; the list of its byte values for int4[]/int8[]/date[]; a
    one-element list holding its name-based UUID for uuid[]; {p: p} for hstore
    as a map, or that map's JSON text in hstore JSON mode.
    """
    raw = placeholder.encode("utf-8")
    typ = ct.type
    if ct.name == "org.apache.kafka.connect.data.Decimal":
        return ()
    if typ == "string":
        shapes: tuple[Any, ...] = (placeholder,)
        if ct.name == "io.debezium.data.Json":
            shapes += (json.dumps({placeholder: placeholder}, separators=(",", ":")),)
        return shapes
    if typ == "bytes":
        return (base64.b64encode(raw).decode("ascii"),) if binary_base64 else (raw,)
    if typ == "array" and ct.items is not None:
        item = ct.items
        if item.type == "string":
            if item.name == "io.debezium.data.Uuid":
                return ([_name_based_uuid(raw)], [placeholder])
            return ([placeholder],)
        if item.type in ("int8", "int16", "int32", "int64"):
            # Java bytes are signed; the placeholder is ASCII in practice.
            return ([b if b < 128 else b - 256 for b in raw],)
        return ()
    if typ == "map":
        return ({placeholder: placeholder},)
    return ()


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    convert: Converter | None
    toast: tuple[Any, ...]
    semantic: str


class RowConverter:
    """Converts one struct value (a row: after/before/key) field by field.

    Compiled once per struct schema into the list of fields that need work
    (a conversion, or a TOAST placeholder check); the others pass through as
    parsed, and so do fields present in the value but absent from the schema.
    The row dict is converted in place (it is the freshly parsed payload's).
    `placeholder=None` disables the TOAST check (keys, nested structs).
    """

    __slots__ = ("_work", "semantic")

    def __init__(self, ct: ColumnType, *, placeholder: str | None, binary_base64: bool) -> None:
        work: list[tuple[str, _FieldPlan]] = []
        for name, fct in ct.fields:
            conv = converter_for(fct, binary_base64=binary_base64)
            toast = (
                placeholder_shapes(fct, placeholder, binary_base64=binary_base64)
                if placeholder is not None
                else ()
            )
            if conv is not None or toast:
                work.append((name, _FieldPlan(conv, toast, fct.name or fct.type)))
        self._work = tuple(work)
        self.semantic = ct.name or "struct"

    def __call__(self, value: Any) -> dict[str, Any]:
        row: dict[str, Any]
        if type(value) is dict:
            row = value
        elif isinstance(value, Mapping):
            row = dict(value)
        else:
            raise TypeError(f"expected a struct, got {type(value).__name__}")
        for k, plan in self._work:
            v = row.get(k)
            if v is None:
                continue
            if plan.toast and v in plan.toast:
                row[k] = UNAVAILABLE
            elif plan.convert is not None:
                try:
                    row[k] = plan.convert(v)
                except ValueConversionError as e:
                    path = f"{k}.{e.column}"
                    raise ValueConversionError(path, e.semantic, e.value, e.reason) from e
                except (ValueError, TypeError, OverflowError, ArithmeticError, KeyError) as failure:
                    raise ValueConversionError(k, plan.semantic, v, str(failure)) from failure
        return row


class SchemalessRowConverter:
    """Row conversion without schemas (JsonConverter schemas.enable=false).

    No type information exists, so values pass through as parsed: JSON numbers
    with a fraction are `Decimal` (exact for decimal.format=NUMERIC; float
    columns too), decimals in the default base64 format stay undecodable
    base64 strings, bytea stays base64 text, dates stay integers, timestamps
    stay epoch numbers.  Only the TOAST placeholder is recognised, in every
    shape, because the column type is unknown.  Use schemas.enable=true (the
    connector we ship does) for typed values.
    """

    __slots__ = ("_int_shape", "_scalar_shapes", "_text_list")

    def __init__(self, placeholder: str) -> None:
        raw = placeholder.encode("utf-8")
        self._scalar_shapes = frozenset((placeholder, base64.b64encode(raw).decode("ascii")))
        self._text_list = [placeholder]
        self._int_shape = [b if b < 128 else b - 256 for b in raw]

    def __call__(self, row: Any) -> dict[str, Any]:
        if not isinstance(row, Mapping):
            raise TypeError(f"expected a struct, got {type(row).__name__}")
        out: dict[str, Any] = {}
        for k, v in row.items():
            if isinstance(v, str):
                out[k] = UNAVAILABLE if v in self._scalar_shapes else v
            elif isinstance(v, list) and v and (v == self._text_list or v == self._int_shape):
                out[k] = UNAVAILABLE
            else:
                out[k] = v
        return out
