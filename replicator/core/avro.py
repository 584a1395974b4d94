"""Confluent Avro wire format and fastavro decoding; the registry client is `connect.registry`.

Invariants:
- Wire format is: magic byte 0, 4-byte big-endian schema id, Avro binary body.
  Anything else raises `WireFormatError` (deterministic: the bytes are wrong).
- Registry failures are split by cause: `SchemaNotFoundError` (the registry
  answered that the id does not exist: deterministic) versus
  `RegistryUnavailableError` (network, 5xx, garbage: transient, retry).
- `column_type_from_avro` maps Debezium's Avro schemas (which carry
  `connect.name`, `connect.parameters`, `connect.type`) onto the same
  `ColumnType` model the JSON path uses, so `values.py` converts both.
- `null_defaults` names the row columns whose NULL the converter wrote as their DEFAULT (a
  value equal to it is ambiguous: the decoder refuses it unless told to trust it).
- Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import fastavro

from replicator.core.errors import ReplicatorError, Transient
from replicator.core.values import ColumnType

MAGIC: Final = 0
HEADER_LEN: Final = 5


class WireFormatError(ReplicatorError, ValueError):
    """Bytes that are not in the Confluent Avro wire format."""


class SchemaNotFoundError(ReplicatorError, LookupError):
    """The registry says this schema id does not exist (deterministic)."""


class RegistryUnavailableError(Transient):
    """The registry could not be asked or answered nonsense (transient: retry later)."""


def split_wire(data: bytes) -> tuple[int, bytes]:
    """Return (schema id, Avro body) of a Confluent wire-format message."""
    if len(data) < HEADER_LEN:
        raise WireFormatError(f"message is {len(data)} bytes, shorter than the 5-byte Confluent header")
    if data[0] != MAGIC:
        raise WireFormatError(
            f"unknown magic byte {data[0]} (expected 0); the topic is not written by the "
            "Confluent AvroConverter"
        )
    return int.from_bytes(data[1:5], "big"), data[5:]


def read_body(body: bytes, schema: Any) -> Any:
    """Decode one Avro binary body with a parsed (fastavro) writer schema."""
    return fastavro.schemaless_reader(io.BytesIO(body), schema, None)


def encode(schema_id: int, schema: Any, record: Any) -> bytes:
    """Encode a record in the Confluent wire format (tests, tools)."""
    out = io.BytesIO()
    out.write(bytes([MAGIC]))
    out.write(schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


# --------------------------------------------------------------------------- schema model

_PRIMITIVES: Final[dict[str, str]] = {
    "int": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
    "null": "null",
}


def named_schemas(parsed: Any) -> Mapping[str, Any]:
    """The named types of a fastavro-parsed schema (for resolving references)."""
    if isinstance(parsed, Mapping):
        named = parsed.get("__named_schemas")
        if isinstance(named, Mapping):
            return named
    return {}


def column_type_from_avro(schema: Any, named: Mapping[str, Any]) -> ColumnType:
    """Reduce an Avro (sub)schema to a `ColumnType`; nullable unions unwrap."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return ColumnType(_PRIMITIVES[schema])
        if schema not in named:
            raise ValueError(f"unknown Avro named type {schema!r}")
        return column_type_from_avro(named[schema], named)
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(branches) == 1:
            return dataclasses.replace(
                column_type_from_avro(branches[0], named), optional=len(branches) < len(schema)
            )
        return ColumnType("union")  # passes through as fastavro decodes it
    if not isinstance(schema, Mapping):
        raise ValueError(f"not an Avro schema: {schema!r}")
    typ = schema.get("type")
    if isinstance(typ, (list, Mapping)):
        return column_type_from_avro(typ, named)
    name = schema.get("connect.name")
    params = schema.get("connect.parameters") or {}
    if typ == "record":
        fields = tuple((f["name"], column_type_from_avro(f["type"], named)) for f in schema["fields"])
        return ColumnType("struct", name, dict(params), None, fields)
    if typ == "array":
        items = column_type_from_avro(schema["items"], named)
        return ColumnType("array", name, dict(params), items)
    if typ == "map":
        return ColumnType("map", name, dict(params), column_type_from_avro(schema["values"], named))
    if typ == "enum":
        return ColumnType("string", name, dict(params))
    if typ == "fixed":
        return ColumnType("bytes", name, dict(params))
    if isinstance(typ, str) and typ in _PRIMITIVES:
        connect_type = schema.get("connect.type")
        base = connect_type if isinstance(connect_type, str) else _PRIMITIVES[typ]
        return ColumnType(base, name, dict(params))
    if isinstance(typ, str) and typ in named:
        return column_type_from_avro(named[typ], named)
    raise ValueError(f"unsupported Avro type {typ!r}")


# --------------------------------------------------------------------------- NULLs written as defaults


class _Unknown:
    """A default whose decoded form is not known: every non-NULL value may be it."""

    def __repr__(self) -> str:
        return "<a default of an unknown logical type>"


UNKNOWN_DEFAULT: Final = _Unknown()
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def null_defaults(envelope: Any) -> dict[str, Any]:
    """The columns of a Debezium envelope's row whose NULL arrives as their DEFAULT, each with that
    default as fastavro decodes a value (`UNKNOWN_DEFAULT` when that form is not known).

    Debezium puts a nullable column's constant DEFAULT into the Connect schema; an Avro converter
    reading the row with `Struct.get` writes that default for a NULL (KAFKA-8713; Apicurio's 2.6
    converter has no `ignore.default.for.nullables`). Such a field is a union with null whose
    default is not null; an event's value equal to it may have been a NULL."""
    named = named_schemas(envelope)
    row = _row_record(envelope, named)
    if row is None:
        return {}
    out: dict[str, Any] = {}
    for field in row.get("fields", ()):
        branches = field.get("type")
        default = field.get("default")
        if not isinstance(branches, list) or "null" not in branches or default is None:
            continue
        typed = [b for b in branches if b != "null"]
        one = len(typed) == 1
        out[field["name"]] = _decoded_default(typed[0], default, named) if one else UNKNOWN_DEFAULT
    return out


def _row_record(envelope: Any, named: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The record schema of the envelope's `after` (or `before`) row."""
    if not isinstance(envelope, Mapping):
        return None
    fields = {f.get("name"): f for f in envelope.get("fields", ()) if isinstance(f, Mapping)}
    for name in ("after", "before"):
        typ = fields.get(name, {}).get("type")
        for branch in typ if isinstance(typ, list) else [typ]:
            resolved = named.get(branch) if isinstance(branch, str) else branch
            if isinstance(resolved, Mapping) and resolved.get("type") == "record":
                return resolved
    return None


def _decoded_default(schema: Any, default: Any, named: Mapping[str, Any]) -> Any:
    """`default` (Avro's JSON form) as fastavro decodes a value of `schema`."""
    if isinstance(schema, str):
        if schema in named:
            return _decoded_default(named[schema], default, named)
        return default.encode("latin-1") if schema == "bytes" and isinstance(default, str) else default
    if not isinstance(schema, Mapping):
        return UNKNOWN_DEFAULT
    typ, logical = schema.get("type"), schema.get("logicalType")
    raw = default.encode("latin-1") if typ in ("bytes", "fixed") and isinstance(default, str) else default
    if logical is None:
        return raw if isinstance(typ, str) else UNKNOWN_DEFAULT
    if logical == "decimal" and isinstance(raw, bytes):
        return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-int(schema.get("scale", 0)))
    if logical == "date" and isinstance(raw, int):
        return dt.date(1970, 1, 1) + dt.timedelta(days=raw)
    if logical in ("timestamp-millis", "timestamp-micros") and isinstance(raw, int):
        unit = 1000 if logical == "timestamp-millis" else 1
        return _EPOCH + dt.timedelta(microseconds=raw * unit)
    return UNKNOWN_DEFAULT
