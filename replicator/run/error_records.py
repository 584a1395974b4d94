"""`replicator errors ...`: the error records in the target's control schema."""

from __future__ import annotations

from typing import Any

from replicator.config import Settings
from replicator.target.store import ControlStore


def list_errors(settings: Settings, kind: str | None, limit: int) -> list[dict[str, Any]]:
    with ControlStore.open(settings) as store:
        store.require()
        return store.error_records(kind, limit)
