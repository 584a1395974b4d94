"""Confluent-compatible schema-registry client (I/O edge): schemas by id, cached forever.

Invariants:
- A schema id names one immutable schema, so parsed schemas are cached per
  id; only successful look-ups are cached.
- Failures are split by cause (see `core.avro`): `SchemaNotFoundError` is
  deterministic, `RegistryUnavailableError` transient. Both name the URL and id.
- The HTTP transport is injectable (`fetch`), so unit tests need no server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import fastavro

from replicator.core.avro import RegistryUnavailableError, SchemaNotFoundError

Fetch = Callable[[str], bytes]


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
