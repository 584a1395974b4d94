"""`status` names each source table whose events arrived on a topic the spec reads while no rule
read the table (not applied; the control schema's `unread_table`): how many, on which topics,
since when, and the fix: a rule for it or no capture of it, and once a rule reads it, a reload of
the rows skipped before. A control schema without the record says so instead of nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from replicator.run.status import unread_lines, unread_status
from replicator.target.store import ControlStore

FIRST = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
LAST = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)


class Store:
    def __init__(self, rows: list[dict[str, Any]] | None) -> None:
        self.rows = rows
        self.groups: list[str] = []

    def unread_tables(self, group: str) -> list[dict[str, Any]] | None:
        self.groups.append(group)
        return self.rows


def row(table: str, events: int, *topics: str) -> dict[str, Any]:
    return {"source_table": table, "events": events, "topics": list(topics), "first_seen_at": FIRST,
            "last_seen_at": LAST}  # fmt: skip


def test_each_unread_table_is_named_with_its_count_topics_and_fix() -> None:
    store = Store([row("src.dup-x", 4, "t.src.dup_x"), row("src.items_old", 1, "t.b", "t.a")])
    got = unread_status(cast("ControlStore", store), "g1", {"src.items_old", "src.items"})
    assert store.groups == ["g1"]
    assert [(u["source_table"], u["events"], u["topics"], u["read_now"]) for u in got or []] == [
        ("src.dup-x", 4, ["t.src.dup_x"], False),
        ("src.items_old", 1, ["t.a", "t.b"], True),
    ]
    assert unread_lines(got) == [
        "source tables no rule reads (their events on topics the spec reads are NOT applied):",
        f"  {'src.dup-x':34} 4 events skipped on t.src.dup_x (first {FIRST.isoformat()}, last"
        f" {LAST.isoformat()}); fix: add a rule for src.dup-x to the spec to replicate it, or drop it"
        " from the connector's table.include.list (and the publication) to stop capturing it",
        f"  {'src.items_old':34} 1 event skipped on t.a, t.b (first {FIRST.isoformat()}, last"
        f" {LAST.isoformat()}); fix: a rule reads it now, but the events counted were not applied before"
        " it did: `replicator reload --table src.items_old` (an incremental snapshot) writes its rows",
    ]


def test_none_recorded_prints_nothing_and_a_schema_without_the_record_says_so() -> None:
    assert unread_lines(unread_status(cast("ControlStore", Store([])), "g", set())) == []
    assert unread_status(cast("ControlStore", Store(None)), "g", set()) is None
    (note,) = unread_lines(None)
    assert "not recorded by this control schema's version" in note
