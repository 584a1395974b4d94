"""Avro wire format + registry client, and JSON with schemas disabled."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from replicator.connect.registry import RegistryClient
from replicator.core import avro
from replicator.core.decode import AvroDecoder, DecodeError, JsonDecoder, Tombstone
from replicator.core.model import UNAVAILABLE, ChangeEvent, KafkaRef, Op, SourcePosition

from . import builders as b

PH = "__debezium_unavailable_value"
NS = "srv.public.items"

VALUE_SCHEMA = {
    "type": "record",
    "name": "Value",
    "namespace": NS,
    "fields": [
        {"name": "id", "type": "int"},
        {
            "name": "price",
            "type": [
                "null",
                {
                    "type": "bytes",
                    "scale": 2,
                    "precision": 10,
                    "connect.version": 1,
                    "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"},
                    "connect.name": "org.apache.kafka.connect.data.Decimal",
                    "logicalType": "decimal",
                },
            ],
            "default": None,
        },
        {
            "name": "ts",
            "type": [
                "null",
                {
                    "type": "long",
                    "connect.version": 1,
                    "connect.name": "io.debezium.time.MicroTimestamp",
                },
            ],
            "default": None,
        },
        {
            "name": "d",
            "type": [
                "null",
                {"type": "int", "connect.version": 1, "connect.name": "io.debezium.time.Date"},
            ],
            "default": None,
        },
        {"name": "body", "type": ["null", "string"], "default": None},
        {"name": "bin", "type": ["null", "bytes"], "default": None},
        {
            "name": "tags",
            "type": ["null", {"type": "array", "items": ["null", "string"]}],
            "default": None,
        },
    ],
    "connect.name": f"{NS}.Value",
}

ENVELOPE_SCHEMA = {
    "type": "record",
    "name": "Envelope",
    "namespace": NS,
    "fields": [
        {"name": "before", "type": ["null", VALUE_SCHEMA], "default": None},
        {"name": "after", "type": ["null", f"{NS}.Value"], "default": None},
        {
            "name": "source",
            "type": {
                "type": "record",
                "name": "Source",
                "namespace": "io.debezium.connector.postgresql",
                "fields": [
                    {"name": "ts_ms", "type": "long"},
                    {"name": "snapshot", "type": ["string", "null"], "default": "false"},
                    {"name": "sequence", "type": ["null", "string"], "default": None},
                    {"name": "schema", "type": "string"},
                    {"name": "table", "type": "string"},
                    {"name": "txId", "type": ["null", "long"], "default": None},
                    {"name": "lsn", "type": ["null", "long"], "default": None},
                ],
            },
        },
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": None},
        {
            "name": "transaction",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "block",
                    "namespace": "event",
                    "fields": [
                        {"name": "id", "type": "string"},
                        {"name": "total_order", "type": "long"},
                        {"name": "data_collection_order", "type": "long"},
                    ],
                },
            ],
            "default": None,
        },
    ],
    "connect.name": f"{NS}.Envelope",
}

KEY_SCHEMA = {
    "type": "record",
    "name": "Key",
    "namespace": NS,
    "fields": [{"name": "id", "type": "int"}],
}

REGISTRY = {1: fastavro.parse_schema(KEY_SCHEMA), 2: fastavro.parse_schema(ENVELOPE_SCHEMA)}


def source(**kw: Any) -> dict[str, Any]:
    s = {
        "ts_ms": 1,
        "snapshot": "false",
        "sequence": '["100","200"]',
        "schema": "public",
        "table": "items",
        "txId": 9,
        "lsn": 200,
    }
    s.update(kw)
    return s


def row(**kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "id": 1,
        "price": Decimal("-12.34"),
        "ts": 1_700_000_000_123_456,
        "d": -1,
        "body": "héllo 😀",
        "bin": b"\x00\xff",
        "tags": ["a", None],
    }
    r.update(kw)
    return r


def avro_record(op: str = "c", **kw: Any) -> tuple[bytes, bytes]:
    env = {
        "before": None,
        "after": row(),
        "source": source(),
        "op": op,
        "ts_ms": 5,
        "transaction": None,
    }
    env.update(kw)
    return avro.encode(1, REGISTRY[1], {"id": 1}), avro.encode(2, REGISTRY[2], env)


def test_avro_roundtrip_converts_by_connect_name() -> None:
    key, value = avro_record()
    ev = AvroDecoder(REGISTRY.__getitem__).decode(KafkaRef(NS, 0, 3), key, value)
    assert isinstance(ev, ChangeEvent)
    assert ev.op is Op.CREATE and ev.key == {"id": 1}
    assert ev.after == {
        "id": 1,
        "price": Decimal("-12.34"),
        "ts": dt.datetime(2023, 11, 14, 22, 13, 20, 123456),
        "d": dt.date(1969, 12, 31),
        "body": "héllo 😀",
        "bin": b"\x00\xff",
        "tags": ["a", None],
    }
    assert ev.position == SourcePosition(100, 200, 0)
    assert ev.raw_value == value


def test_avro_toast_placeholder_shapes() -> None:
    after = row(body=PH, bin=PH.encode(), tags=[PH])
    key, value = avro_record("u", after=after)
    ev = AvroDecoder(REGISTRY.__getitem__).decode(KafkaRef(NS, 0, 3), key, value)
    assert isinstance(ev, ChangeEvent) and ev.after is not None
    assert ev.after["body"] is UNAVAILABLE
    assert ev.after["bin"] is UNAVAILABLE
    assert ev.after["tags"] is UNAVAILABLE


def test_avro_tombstone_and_null_key_truncate() -> None:
    dec = AvroDecoder(REGISTRY.__getitem__)
    assert isinstance(dec.decode(KafkaRef(NS, 0, 1), b"k", None), Tombstone)
    _, value = avro_record("t", after=None)
    ev = dec.decode(KafkaRef(NS, 0, 2), None, value)
    assert isinstance(ev, ChangeEvent) and ev.op is Op.TRUNCATE and ev.key is None


def test_avro_unknown_magic_byte_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="magic byte 1"):
        AvroDecoder(REGISTRY.__getitem__).decode(KafkaRef(NS, 0, 1), None, b"\x01\x00\x00\x00\x02x")


def test_avro_short_message_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="shorter than the 5-byte"):
        AvroDecoder(REGISTRY.__getitem__).decode(KafkaRef(NS, 0, 1), None, b"\x00\x00")


def test_avro_unknown_schema_id_is_a_decode_error() -> None:
    value = avro.encode(
        99,
        REGISTRY[2],
        {
            "before": None,
            "after": row(),
            "source": source(),
            "op": "c",
            "ts_ms": 5,
            "transaction": None,
        },
    )
    with pytest.raises(DecodeError, match="schema id 99 is unknown"):
        AvroDecoder(REGISTRY.__getitem__).decode(KafkaRef(NS, 0, 1), None, value)


def test_avro_registry_outage_is_not_a_decode_error() -> None:
    def down(_: int) -> Any:
        raise avro.RegistryUnavailableError("registry down")

    _, value = avro_record()
    with pytest.raises(avro.RegistryUnavailableError):
        AvroDecoder(down).decode(KafkaRef(NS, 0, 1), None, value)


def test_avro_truncated_body_is_a_decode_error() -> None:
    _, value = avro_record()
    with pytest.raises(DecodeError, match="does not match its schema"):
        AvroDecoder(REGISTRY.__getitem__).decode(KafkaRef(NS, 0, 1), None, value[:12])


# --------------------------------------------------------------------------- registry client


def test_registry_client_fetches_once_and_caches() -> None:
    calls: list[str] = []

    def fetch(url: str) -> bytes:
        calls.append(url)
        return json.dumps({"schema": json.dumps(ENVELOPE_SCHEMA)}).encode()

    client = RegistryClient("http://reg:8081/", fetch)
    first = client.schema(2)
    assert client(2) is first
    assert calls == ["http://reg:8081/schemas/ids/2"]
    _, value = avro_record()
    assert isinstance(AvroDecoder(client).decode(KafkaRef(NS, 0, 1), None, value), ChangeEvent)


def test_registry_client_not_found_names_url_and_id() -> None:
    def fetch(url: str) -> bytes:
        raise avro.SchemaNotFoundError("HTTP 404")

    with pytest.raises(avro.SchemaNotFoundError, match=r"schema id 7 .*http://reg/schemas/ids/7"):
        RegistryClient("http://reg", fetch).schema(7)


def test_registry_client_transport_failure_is_transient_and_not_cached() -> None:
    attempts = 0

    def fetch(url: str) -> bytes:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("connection refused")
        return json.dumps({"schema": json.dumps(KEY_SCHEMA)}).encode()

    client = RegistryClient("http://reg", fetch)
    with pytest.raises(avro.RegistryUnavailableError, match=r"schema id 1.*http://reg/schemas/ids/1"):
        client.schema(1)
    assert client.schema(1)["name"] == f"{NS}.Key"


def test_registry_client_rejects_non_avro_schema() -> None:
    def fetch(url: str) -> bytes:
        return json.dumps({"schemaType": "JSON", "schema": "{}"}).encode()

    with pytest.raises(avro.SchemaNotFoundError, match="not AVRO"):
        RegistryClient("http://reg", fetch).schema(3)


# --------------------------------------------------------------------------- schemas disabled


T = b.Table(
    [
        b.int32("id", optional=False),
        b.decimal("price", 2),
        b.string("body"),
        b.bytea("bin"),
        b.array("tags", b.string("x")),
    ]
)


def test_schemaless_json_decodes_envelope_with_json_native_values() -> None:
    rec = b.create(T, {"id": 1, "price": "MDk=", "body": "x", "bin": "AAH/", "tags": ["a"]}, schemas=False)
    ev = JsonDecoder().decode(rec.ref(), rec.key, rec.value)
    assert isinstance(ev, ChangeEvent)
    assert ev.key == {"id": 1}
    # No schema: base64 decimal and bytea stay text (documented limitation).
    assert ev.after == {"id": 1, "price": "MDk=", "body": "x", "bin": "AAH/", "tags": ["a"]}


def test_schemaless_numeric_format_decimal_is_exact_decimal() -> None:
    rec = b.create(T, {"id": 1, "price": 0, "body": None, "bin": None, "tags": None}, schemas=False)
    raw = (rec.value or b"").replace(b'"price":0', b'"price":12345678901234567890.01')
    ev = JsonDecoder().decode(rec.ref(), rec.key, raw)
    assert isinstance(ev, ChangeEvent) and ev.after is not None
    assert ev.after["price"] == Decimal("12345678901234567890.01")


def test_schemaless_toast_placeholder_in_every_shape() -> None:
    b64 = base64.b64encode(PH.encode()).decode()
    rec = b.update(T, None, {"id": 1, "price": None, "body": PH, "bin": b64, "tags": [PH]}, schemas=False)
    ev = JsonDecoder().decode(rec.ref(), rec.key, rec.value)
    assert isinstance(ev, ChangeEvent) and ev.after is not None
    assert ev.after["body"] is UNAVAILABLE
    assert ev.after["bin"] is UNAVAILABLE
    assert ev.after["tags"] is UNAVAILABLE


def test_schemaless_and_schema_messages_mix_on_one_topic() -> None:
    dec = JsonDecoder()
    with_schema = b.create(T, {"id": 1, "price": "MDk=", "body": None, "bin": None, "tags": None})
    without = b.create(T, {"id": 2, "price": "MDk=", "body": None, "bin": None, "tags": None}, schemas=False)
    a = dec.decode(with_schema.ref(), with_schema.key, with_schema.value)
    c = dec.decode(without.ref(), without.key, without.value)
    assert isinstance(a, ChangeEvent) and a.after is not None and a.after["price"] == Decimal("123.45")
    assert isinstance(c, ChangeEvent) and c.after is not None and c.after["price"] == "MDk="


def _defaulted_registry() -> dict[int, Any]:
    """The items schema as an Avro converter writes it for `body text DEFAULT 'open'` and
    `price numeric(10,2) DEFAULT 5.00`: the non-null branch first, the default on the union."""
    value = json.loads(json.dumps(VALUE_SCHEMA))
    for field in value["fields"]:
        if field["name"] == "body":
            field["type"], field["default"] = [{"type": "string", "connect.default": "open"}, "null"], "open"
        if field["name"] == "price":
            field["type"] = [field["type"][1], "null"]
            field["default"] = "\u0001\u00f4"  # 500 unscaled: 5.00
    envelope = json.loads(json.dumps(ENVELOPE_SCHEMA))
    envelope["fields"][0]["type"] = ["null", value]
    return {1: REGISTRY[1], 3: fastavro.parse_schema(envelope)}


def _defaulted_record(op: str, **kw: Any) -> tuple[bytes, bytes]:
    registry = _defaulted_registry()
    env = {"before": None, "after": row(), "source": source(), "op": op, "ts_ms": 5, "transaction": None}
    env.update(kw)
    return avro.encode(1, registry[1], {"id": 1}), avro.encode(3, registry[3], env)


def test_avro_null_defaults_are_the_nullable_columns_with_a_default() -> None:
    assert avro.null_defaults(_defaulted_registry()[3]) == {"body": "open", "price": Decimal("5.00")}
    assert avro.null_defaults(REGISTRY[2]) == {}


def test_avro_value_equal_to_a_nullable_columns_default_is_refused_as_ambiguous() -> None:
    registry = _defaulted_registry()
    decoder = AvroDecoder(registry.__getitem__)
    key, value = _defaulted_record("c", after=row(body="open"))
    with pytest.raises(DecodeError) as raised:
        decoder.decode(KafkaRef(NS, 0, 3), key, value)
    said = str(raised.value)
    assert "column body of public.items holds 'open', its DEFAULT" in said, said
    assert "replace.null.with.default=false" in said and "REPLICATOR_AVRO_TRUST_NULL_DEFAULTS" in said
    key, value = _defaulted_record("c", after=row(price=Decimal("5.00")))
    with pytest.raises(DecodeError, match=r"column price of public\.items holds Decimal"):
        decoder.decode(KafkaRef(NS, 0, 4), key, value)
    key, value = _defaulted_record("d", before=row(body="open"), after=None)  # the row a delete names
    with pytest.raises(DecodeError, match="column body"):
        decoder.decode(KafkaRef(NS, 0, 5), key, value)


def test_avro_other_values_of_a_defaulted_column_decode_and_trust_takes_the_default() -> None:
    registry = _defaulted_registry()
    key, value = _defaulted_record("u", after=row(body="shipped", price=Decimal("7.00")))
    ev = AvroDecoder(registry.__getitem__).decode(KafkaRef(NS, 0, 3), key, value)
    assert isinstance(ev, ChangeEvent) and ev.after is not None
    assert (ev.after["body"], ev.after["price"]) == ("shipped", Decimal("7.00"))
    key, value = _defaulted_record("c", after=row(body="open"))
    trusting = AvroDecoder(registry.__getitem__, trust_null_defaults=True)
    ev = trusting.decode(KafkaRef(NS, 0, 4), key, value)
    assert isinstance(ev, ChangeEvent) and ev.after is not None and ev.after["body"] == "open"
