"""Builder for decoded change events in tests (what `replicator.core.decode` would produce)."""

from __future__ import annotations

from typing import Any

from replicator.core.model import ChangeEvent, KafkaRef, Op, SourcePosition, TableRef


def change(
    topic: str,
    op: Op,
    table: str,
    *,
    offset: int,
    position: SourcePosition,
    key: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    ts_ms: int = 0,
) -> ChangeEvent:
    """A streaming event on partition 0 of `topic`, for source table `schema.table`."""
    return ChangeEvent(
        ref=KafkaRef(topic, 0, offset),
        op=op,
        table=TableRef.parse(table),
        key=key,
        before=before,
        after=after,
        position=position,
        snapshot=False,
        ts_ms=ts_ms,
        raw_key=b"k",
        raw_value=b"v",
    )


def by_id(
    prefix: str, table: str, op: Op, offset: int, at: tuple[int, int], row: dict[str, Any]
) -> ChangeEvent:
    """An event of source table `app.<table>` keyed by its `id` (topic `<prefix>.app.<table>`,
    source position `at`): a delete carries the key as its old row, anything else `row`."""
    key = {"id": row["id"]}
    return change(
        f"{prefix}.app.{table}",
        op,
        f"app.{table}",
        offset=offset,
        position=SourcePosition(*at),
        key=key,
        before=key if op is Op.DELETE else None,
        after=None if op is Op.DELETE else row,
    )
