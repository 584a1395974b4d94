"""Confluent Avro wire format, fastavro decoding and a small schema-registry client.

Invariants:
- Wire format is: magic byte 0, 4-byte big-endian schema id, Avro binary body.
  Anything else raises `WireFormatError` (deterministic: the bytes are wrong).
- A schema id names one immutable schema, so `RegistryClient` caches parsed
  schemas forever, per id.  Only successful look-ups are cached.
- Registry failures are split by cause: `SchemaNotFoundError` (the registry
  answered that the id does not exist: deterministic) versus
  `RegistryUnavailableError` (network, 5xx, garbage: transient, retry).
  Both name the URL and the id.
- `column_type_from_avro` maps Debezium's Avro schemas (which carry
  `connect.name`, `connect.parameters`, `connect.type`) onto the same
  `ColumnType` model the JSON path uses, so `values.py` converts both.
- The HTTP transport is injectable (`fetch`), so nothing here needs a server
  in unit tests.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Final

import fastavro

from replicator.values import ColumnType

MAGIC: Final = 0
HEADER_LEN: Final = 5

Fetch = Callable[[str], bytes]


class WireFormatError(ValueError):
    """Bytes that are not in the Confluent Avro wire format."""


class SchemaNotFoundError(LookupError):
    """The registry says this schema id does not exist (deterministic)."""


class RegistryUnavailableError(Exception):
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
            return column_type_from_avro(branches[0], named)
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


# --------------------------------------------------------------------------- registry


def _urllib_fetch(timeout: float) -> Fetch:
    def fetch(url: str) -> bytes:
        request = urllib.request.Request(  # noqa: S310 - scheme checked in RegistryClient
            url, headers={"Accept": "application/vnd.schemaregistry.v1+json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
                body: bytes = resp.read()
                return body
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise SchemaNotFoundError(f"HTTP 404 from {url}") from e
            raise RegistryUnavailableError(f"HTTP {e.code} from {url}") from e
        except (urllib.error.URLError, OSError) as e:
            raise RegistryUnavailableError(f"cannot reach {url}: {e}") from e

    return fetch


class RegistryClient:
    """Confluent-compatible registry: `GET {base_url}/schemas/ids/{id}`, cached per id.

    `fetch(url) -> bytes` is the transport; it raises `SchemaNotFoundError`
    for a 404 and anything else for a transient failure.  Default: urllib.
    Instances are callable (`client(id)`), so one can be given directly to
    `AvroDecoder` as its schema look-up.
    """

    def __init__(self, base_url: str, fetch: Fetch | None = None, *, timeout: float = 10.0) -> None:
        if fetch is None and not base_url.startswith(("http://", "https://")):
            raise ValueError(f"schema registry URL {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self._fetch = fetch if fetch is not None else _urllib_fetch(timeout)
        self._cache: dict[int, Any] = {}

    def url(self, schema_id: int) -> str:
        return f"{self.base_url}/schemas/ids/{schema_id}"

    def schema(self, schema_id: int) -> Any:
        """The parsed fastavro schema with this id (fetched once, then cached)."""
        cached = self._cache.get(schema_id)
        if cached is not None:
            return cached
        url = self.url(schema_id)
        try:
            body = self._fetch(url)
        except SchemaNotFoundError as e:
            raise SchemaNotFoundError(f"schema id {schema_id} not found at {url}: {e}") from e
        except RegistryUnavailableError as e:
            raise RegistryUnavailableError(f"schema id {schema_id}: {e}") from e
        except Exception as e:
            raise RegistryUnavailableError(f"schema id {schema_id}: fetching {url} failed: {e}") from e
        parsed = self._parse(schema_id, url, body)
        self._cache[schema_id] = parsed
        return parsed

    __call__ = schema

    @staticmethod
    def _parse(schema_id: int, url: str, body: bytes) -> Any:
        try:
            doc = json.loads(body)
            schema_type = doc.get("schemaType", "AVRO")
            if schema_type != "AVRO":
                raise SchemaNotFoundError(f"schema id {schema_id} at {url} is {schema_type}, not AVRO")
            if doc.get("references"):
                raise SchemaNotFoundError(
                    f"schema id {schema_id} at {url} uses schema references (unsupported)"
                )
            return fastavro.parse_schema(json.loads(doc["schema"]))
        except SchemaNotFoundError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RegistryUnavailableError(
                f"schema id {schema_id}: {url} returned an unusable answer: {e}"
            ) from e
