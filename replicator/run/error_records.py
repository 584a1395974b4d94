"""`replicator errors ...`: the error records in the target's control schema."""

from __future__ import annotations

import json
from typing import Any

from replicator.config import Settings
from replicator.core.errors import ConfigError
from replicator.target.store import ControlStore


def list_errors(
    settings: Settings, kind: str | None, limit: int, **filters: str | None
) -> list[dict[str, Any]]:
    """The newest error records; `filters`: table, rule, sqlstate, run."""
    with ControlStore.open(settings) as store:
        store.require()
        return store.error_records(kind, limit, **filters)


def show_error(settings: Settings, record_id: int) -> dict[str, Any]:
    """One error record, its raw key and value readable: JSON as JSON, other bytes as hex."""
    with ControlStore.open(settings) as store:
        store.require()
        row = store.error_record(record_id)
    if row is None:
        raise ConfigError(f"no error record #{record_id}; `replicator errors list` shows the ids")
    for column in ("raw_key", "raw_value"):
        row[column] = readable(row[column])
    return row


def readable(raw: bytes | memoryview | None) -> Any:
    """A raw Kafka key or value as the operator reads it: parsed JSON, else `{"hex": ...}` (e.g. the
    Avro wire format, which starts with byte 0 and a schema id)."""
    if raw is None:
        return None
    data = bytes(raw)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return {"hex": data.hex(), "bytes": len(data)}
