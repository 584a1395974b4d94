"""Builders of realistic Debezium (3.x, PostgreSQL, JsonConverter) change events.

In the style of the Debezium JDBC sink's `SinkRecordBuilder`: describe a table
once (`Table`), then build `create() / update() / delete() / tombstone() /
truncate() / read()` records from it.  Row values are given in *wire form*
(base64 decimals, epoch micros, ISO strings, ...) so tests state exactly what
Debezium sends; the builder only assembles the envelope, its schema and the
key.  Output is compact JSON like Jackson's, schema first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from replicator.core.model import KafkaRef

Schema = dict[str, Any]


# --------------------------------------------------------------------------- column schemas


def col(
    name: str,
    type_: str,
    *,
    optional: bool = True,
    semantic: str | None = None,
    parameters: dict[str, str] | None = None,
    items: Schema | None = None,
    version: int | None = None,
) -> Schema:
    s: Schema = {"type": type_, "optional": optional}
    if items is not None:
        s["items"] = items
    if semantic is not None:
        s["name"] = semantic
    if version is not None:
        s["version"] = version
    if parameters is not None:
        s["parameters"] = parameters
    s["field"] = name
    return s


def int32(name: str, optional: bool = True) -> Schema:
    return col(name, "int32", optional=optional)


def int64(name: str, optional: bool = True) -> Schema:
    return col(name, "int64", optional=optional)


def string(name: str, optional: bool = True) -> Schema:
    return col(name, "string", optional=optional)


def boolean(name: str) -> Schema:
    return col(name, "boolean")


def float64(name: str) -> Schema:
    return col(name, "double")  # JsonConverter's name for FLOAT64


def bytea(name: str) -> Schema:
    return col(name, "bytes")


def decimal(name: str, scale: int, precision: int = 10) -> Schema:
    return col(
        name,
        "bytes",
        semantic="org.apache.kafka.connect.data.Decimal",
        version=1,
        parameters={"scale": str(scale), "connect.decimal.precision": str(precision)},
    )


def var_decimal(name: str) -> Schema:
    s = col(name, "struct", semantic="io.debezium.data.VariableScaleDecimal", version=1)
    s["fields"] = [
        {"type": "int32", "optional": False, "field": "scale"},
        {"type": "bytes", "optional": False, "field": "value"},
    ]
    s["doc"] = "Variable scaled decimal"
    return s


def semantic(name: str, type_: str, sem: str, **kw: Any) -> Schema:
    return col(name, type_, semantic=sem, version=1, **kw)


def date(name: str) -> Schema:
    return semantic(name, "int32", "io.debezium.time.Date")


def micro_timestamp(name: str) -> Schema:
    return semantic(name, "int64", "io.debezium.time.MicroTimestamp")


def timestamp_ms(name: str) -> Schema:
    return semantic(name, "int64", "io.debezium.time.Timestamp")


def nano_timestamp(name: str) -> Schema:
    return semantic(name, "int64", "io.debezium.time.NanoTimestamp")


def zoned_timestamp(name: str) -> Schema:
    return semantic(name, "string", "io.debezium.time.ZonedTimestamp")


def time_ms(name: str) -> Schema:
    return semantic(name, "int32", "io.debezium.time.Time")


def micro_time(name: str) -> Schema:
    return semantic(name, "int64", "io.debezium.time.MicroTime")


def nano_time(name: str) -> Schema:
    return semantic(name, "int64", "io.debezium.time.NanoTime")


def zoned_time(name: str) -> Schema:
    return semantic(name, "string", "io.debezium.time.ZonedTime")


def micro_duration(name: str) -> Schema:
    return semantic(name, "int64", "io.debezium.time.MicroDuration")


def json_(name: str) -> Schema:
    return semantic(name, "string", "io.debezium.data.Json")


def uuid_(name: str) -> Schema:
    return semantic(name, "string", "io.debezium.data.Uuid")


def xml(name: str) -> Schema:
    return semantic(name, "string", "io.debezium.data.Xml")


def enum(name: str, allowed: str) -> Schema:
    return semantic(name, "string", "io.debezium.data.Enum", parameters={"allowed": allowed})


def float32(name: str) -> Schema:
    return col(name, "float")


def bits(name: str, length: int) -> Schema:
    return semantic(name, "bytes", "io.debezium.data.Bits", parameters={"length": str(length)})


def point(name: str) -> Schema:
    s = col(name, "struct", semantic="io.debezium.data.geometry.Point", version=1)
    s["fields"] = [
        {"type": "double", "optional": False, "field": "x"},
        {"type": "double", "optional": False, "field": "y"},
        {"type": "bytes", "optional": True, "field": "wkb"},
        {"type": "int32", "optional": True, "field": "srid"},
    ]
    return s


def geometry(name: str, semantic: str = "io.debezium.data.geometry.Geometry") -> Schema:
    s = col(name, "struct", semantic=semantic, version=1)
    s["fields"] = [
        {"type": "bytes", "optional": False, "field": "wkb"},
        {"type": "int32", "optional": True, "field": "srid"},
    ]
    return s


def array(name: str, item: Schema) -> Schema:
    item = {k: v for k, v in item.items() if k != "field"}
    return col(name, "array", items=item)


# --------------------------------------------------------------------------- tables and envelopes


@dataclass
class Table:
    """A captured table: topic prefix, schema, name, columns and key columns."""

    columns: list[Schema]
    key: list[str] = field(default_factory=lambda: ["id"])
    prefix: str = "srv"
    schema: str = "public"
    name: str = "items"

    @property
    def topic(self) -> str:
        return f"{self.prefix}.{self.schema}.{self.name}"

    def _struct(self, cols: list[Schema], suffix: str, optional: bool) -> Schema:
        return {
            "type": "struct",
            "fields": cols,
            "optional": optional,
            "name": f"{self.topic}.{suffix}",
        }

    def key_schema(self) -> Schema:
        cols = [dict(c, optional=False) for c in self.columns if c["field"] in self.key]
        return self._struct(cols, "Key", False)

    def value_schema(self) -> Schema:
        return self._struct(self.columns, "Value", True)

    def envelope_schema(self) -> Schema:
        before = dict(self.value_schema(), field="before")
        after = dict(self.value_schema(), field="after")
        return {
            "type": "struct",
            "fields": [
                before,
                after,
                SOURCE_SCHEMA,
                TRANSACTION_SCHEMA,
                {"type": "string", "optional": False, "field": "op"},
                {"type": "int64", "optional": True, "field": "ts_ms"},
                {"type": "int64", "optional": True, "field": "ts_us"},
                {"type": "int64", "optional": True, "field": "ts_ns"},
            ],
            "optional": False,
            "name": f"{self.topic}.Envelope",
            "version": 2,
        }


SOURCE_SCHEMA: Schema = {
    "type": "struct",
    "fields": [
        {"type": "string", "optional": False, "field": "version"},
        {"type": "string", "optional": False, "field": "connector"},
        {"type": "string", "optional": False, "field": "name"},
        {"type": "int64", "optional": False, "field": "ts_ms"},
        {
            "type": "string",
            "optional": True,
            "name": "io.debezium.data.Enum",
            "version": 1,
            "parameters": {
                "allowed": "true,first,first_in_data_collection,last_in_data_collection,"
                "last,false,incremental"
            },
            "default": "false",
            "field": "snapshot",
        },
        {"type": "string", "optional": False, "field": "db"},
        {"type": "string", "optional": True, "field": "sequence"},
        {"type": "int64", "optional": True, "field": "ts_us"},
        {"type": "int64", "optional": True, "field": "ts_ns"},
        {"type": "string", "optional": False, "field": "schema"},
        {"type": "string", "optional": False, "field": "table"},
        {"type": "int64", "optional": True, "field": "txId"},
        {"type": "int64", "optional": True, "field": "lsn"},
        {"type": "int64", "optional": True, "field": "xmin"},
    ],
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "version": 1,
    "field": "source",
}

TRANSACTION_SCHEMA: Schema = {
    "type": "struct",
    "fields": [
        {"type": "string", "optional": False, "field": "id"},
        {"type": "int64", "optional": False, "field": "total_order"},
        {"type": "int64", "optional": False, "field": "data_collection_order"},
    ],
    "optional": True,
    "name": "event.block",
    "version": 1,
    "field": "transaction",
}


@dataclass(frozen=True)
class Record:
    """What the consumer sees: topic, key/value bytes, headers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    def ref(self, offset: int = 0, partition: int = 0) -> KafkaRef:
        return KafkaRef(self.topic, partition, offset)


def dumps(obj: Any) -> bytes:
    """Compact JSON as Jackson writes it (no spaces, non-ASCII kept)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def wrap(schema: Schema | None, payload: Any, schemas: bool) -> bytes:
    return dumps({"schema": schema, "payload": payload} if schemas else payload)


def source(
    t: Table,
    *,
    snapshot: Any = "false",
    lsn: int | None = 24023960,
    commit_lsn: int | None = 24023928,
    sequence: Any = ...,
    txid: int | None = 771,
    ts_ms: int = 1_700_000_000_000,
) -> dict[str, Any]:
    if sequence is ...:
        seq0 = None if commit_lsn is None else str(commit_lsn)
        seq1 = None if lsn is None else str(lsn)
        sequence = json.dumps([seq0, seq1], separators=(",", ":"))
    return {
        "version": "3.6.1.Final",
        "connector": "postgresql",
        "name": t.prefix,
        "ts_ms": ts_ms,
        "snapshot": snapshot,
        "db": "src",
        "sequence": sequence,
        "ts_us": ts_ms * 1000,
        "ts_ns": ts_ms * 1_000_000,
        "schema": t.schema,
        "table": t.name,
        "txId": txid,
        "lsn": lsn,
        "xmin": None,
    }


def envelope(
    t: Table,
    op: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    key: dict[str, Any] | None = None,
    schemas: bool = True,
    transaction: dict[str, Any] | None = None,
    headers: tuple[tuple[str, bytes | None], ...] = (),
    ts_ms: int = 1_700_000_000_123,
    **source_kw: Any,
) -> Record:
    """Any envelope; the op-named builders below are what tests normally use."""
    payload = {
        "before": before,
        "after": after,
        "source": source(t, **source_kw),
        "transaction": transaction,
        "op": op,
        "ts_ms": ts_ms,
        "ts_us": ts_ms * 1000,
        "ts_ns": ts_ms * 1_000_000,
    }
    if key is None and op != "t":
        row = after if after is not None else before
        if row is not None and t.key:
            key = {k: row[k] for k in t.key}
    key_bytes = None if key is None else wrap(t.key_schema(), key, schemas)
    return Record(t.topic, key_bytes, wrap(t.envelope_schema(), payload, schemas), headers)


def create(t: Table, after: dict[str, Any], **kw: Any) -> Record:
    return envelope(t, "c", after=after, **kw)


def read(t: Table, after: dict[str, Any], *, snapshot: Any = "true", **kw: Any) -> Record:
    kw.setdefault("commit_lsn", None)
    return envelope(t, "r", after=after, snapshot=snapshot, **kw)


def update(t: Table, before: dict[str, Any] | None, after: dict[str, Any], **kw: Any) -> Record:
    return envelope(t, "u", before=before, after=after, **kw)


def delete(t: Table, before: dict[str, Any], **kw: Any) -> Record:
    return envelope(t, "d", before=before, **kw)


def truncate(t: Table, **kw: Any) -> Record:
    return envelope(t, "t", **kw)


def tombstone(t: Table, key: dict[str, Any], *, schemas: bool = True) -> Record:
    return Record(t.topic, wrap(t.key_schema(), key, schemas), None)
