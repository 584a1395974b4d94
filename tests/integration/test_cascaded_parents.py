"""A held child whose parent a target ON DELETE CASCADE removed (trials 10 and 10b).

Source: one transaction (LSN 100) creates board 5 and its card 50; a later one (LSN 300) deletes
the board's workspace, its board and the card (the source's cascade). In the target the workspace's
delete cascaded the board away ahead of the board's own delete, so the board's stored version
still says "inserted at 100"; point 4 of `core.holding` (judge at the parent's later delete) had
nothing to go by, and the held card insert, judged at 100 where the source had its board, became a
23503 error record, though its own delete was still to come.

1. A card held for a parent the target lacks while its version says present is not judged: it
   waits for the board's own events (its delete, then point 4), and is superseded by its own
   delete. The workspace's delete here is applied by a writer that may not hold rows (as `errors
   retry` does): the cascade runs unguarded.
2. The guard (`BatchWriter._cascade_waits`) no longer lets such a cascade through: another
   instance inserting a child of the row (uncommitted, so the guard's look for children did not
   see it) while the delete waited on that insert's lock. The guard locks the parents it checks
   first, so it sees that child once it is committed (trial 10b: a comment and two labels became
   error records that way).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from replicator import failpoints
from replicator.config import HoldSettings
from replicator.core.mapping.compiler import compile_spec
from replicator.core.mapping.plan import Plan
from replicator.core.mapping.spec import load_spec_text
from replicator.core.model import ChangeEvent, Op
from replicator.pg.catalog import read_catalog
from tests.events import by_id
from tests.integration.pipeline import HandFed, fresh_target, wait_until
from tests.integration.stack import Stack

SCHEMA = """
CREATE SCHEMA cp;
CREATE TABLE cp.ws (id int PRIMARY KEY);
CREATE TABLE cp.board (id int PRIMARY KEY, ws int NOT NULL REFERENCES cp.ws ON DELETE CASCADE);
CREATE TABLE cp.card (id int PRIMARY KEY, board int NOT NULL REFERENCES cp.board ON DELETE CASCADE);
CREATE INDEX ON cp.board (ws);
CREATE INDEX ON cp.card (board);
GRANT USAGE ON SCHEMA cp TO replicator;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA cp TO replicator;
INSERT INTO cp.ws VALUES (1), (2);
"""


def rule(name: str, columns: list[str]) -> str:
    cols = "".join(f"\n    {c}: {{from: {c}}}" for c in columns)
    return (
        f"- id: {name}\n  source: app.{name}\n  target: cp.{name}\n  key: {{id: id}}\n"
        f"  delete: {{policy: hard}}\n  truncate: {{policy: error}}\n  columns:{cols}\n"
    )


SPEC = (
    "version: 1\ntopic_prefix: cp\ntables:\n"
    + rule("ws", ["id"])
    + rule("board", ["id", "ws"])
    + rule("card", ["id", "board"])
)
COUNTS = {"cp.app.ws": 1, "cp.app.board": 1, "cp.app.card": 1}
PATIENT = HoldSettings(retry_after_s=3600)  # only the retries the test makes


def event(table: str, op: Op, offset: int, at: tuple[int, int], row: dict[str, Any]) -> ChangeEvent:
    return by_id("cp", table, op, offset, at, row)


@pytest.fixture
def target(stack: Stack) -> Iterator[tuple[str, str, Plan]]:
    dbname = fresh_target("cascparent")
    admin = stack.target_admin(dbname)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(SCHEMA)
        plan = compile_spec(load_spec_text(SPEC), read_catalog(conn, ["cp"]))
    yield dbname, admin, plan


def table(admin: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(admin) as conn:
        return conn.execute(query).fetchall()


def test_a_child_held_for_a_parent_a_cascade_removed_waits_for_the_parents_own_delete(
    stack: Stack, target: tuple[str, str, Plan]
) -> None:
    dbname, admin, plan = target
    writer = HandFed(stack, dbname, plan, "cascparent", PATIENT, COUNTS)
    unguarded = HandFed(stack, dbname, plan, "cascparent", PATIENT, COUNTS, may_hold=False)
    try:
        assert writer.apply(event("board", Op.CREATE, 0, (100, 101), {"id": 5, "ws": 1})).held == 0
        # the workspace's topic is ahead: its delete (LSN 300) cascades the board away, unguarded
        assert unguarded.apply(event("ws", Op.DELETE, 0, (300, 303), {"id": 1})).held == 0
        assert table(admin, "SELECT id FROM cp.board") == []
        # the card's topic is behind: its insert (LSN 100, with the board) finds no board
        assert writer.apply(event("card", Op.CREATE, 0, (100, 102), {"id": 50, "board": 5})).held == 1
        # both topics move on past LSN 100 (other rows), so the card's insert is covered there
        writer.apply(event("board", Op.CREATE, 1, (200, 201), {"id": 6, "ws": 2}))
        writer.apply(event("card", Op.CREATE, 1, (200, 202), {"id": 51, "board": 6}))
        # a retry of the card (any batch): its board's version says present, the board is gone
        result = writer.apply(event("card", Op.CREATE, 2, (250, 251), {"id": 52, "board": 6}))
        assert result.errors == [] and result.held == 1, "the card waits for its board's own events"
        # the board's own delete (LSN 300): the card is judged there now, still held
        result = writer.apply(event("board", Op.DELETE, 2, (300, 301), {"id": 5}))
        assert result.errors == [] and result.held == 1
        # the card's own delete (the source's cascade, LSN 300) supersedes its held insert
        result = writer.apply(event("card", Op.DELETE, 3, (300, 302), {"id": 50}))
        assert result.errors == [] and result.released == 1
        assert table(admin, "SELECT id FROM cp.card ORDER BY id") == [(51,), (52,)]
        assert table(admin, "SELECT count(*) FROM replicator.held_event") == [(0,)]
        assert table(admin, "SELECT count(*) FROM replicator.error_record") == [(0,)]
    finally:
        writer.close()
        unguarded.close()


def test_the_guard_sees_a_child_another_instance_commits_while_the_parents_delete_waits(
    stack: Stack, target: tuple[str, str, Plan], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Source: card 50 is added to board 5 (LSN 100), moved to board 6 (LSN 200), then board 5 is
    deleted (LSN 300). One instance inserts the card (not committed yet) as another applies the
    board's delete: the card's move is not applied, so the delete must wait rather than cascade."""
    dbname, admin, plan = target
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("INSERT INTO cp.board VALUES (5, 1), (6, 1)")
    cards = HandFed(stack, dbname, plan, "cascrace", PATIENT, COUNTS)
    boards = HandFed(stack, dbname, plan, "cascrace", PATIENT, COUNTS)
    inserted = threading.Event()
    outcome: dict[str, Any] = {}

    def waiting_on_a_lock() -> bool:
        rows = table(
            admin,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'",
        )
        return bool(rows[0][0])

    def commit_once_the_delete_waits(name: str) -> None:
        if name != "before_target_commit" or threading.current_thread() is not inserter:
            return
        inserted.set()  # the card is written (its board held FOR KEY SHARE), not committed
        wait_until(waiting_on_a_lock, 30, "the board's delete to wait for the card's transaction")

    def insert_card() -> None:
        try:
            outcome["card"] = cards.apply(event("card", Op.CREATE, 0, (100, 101), {"id": 50, "board": 5}))
        except Exception as exc:  # the test reports it, whatever it is
            outcome["error"] = exc

    inserter = threading.Thread(target=insert_card)
    monkeypatch.setattr(failpoints, "hit", commit_once_the_delete_waits)
    try:
        inserter.start()
        assert inserted.wait(30), "the card's batch did not reach its commit"
        result = boards.apply(event("board", Op.DELETE, 0, (300, 301), {"id": 5}))
        inserter.join(60)
        assert "error" not in outcome, f"the card's batch failed: {outcome.get('error')!r}"
        assert result.held == 1, "the delete waits: the card's move is not applied yet"
        assert table(admin, "SELECT id, board FROM cp.card") == [(50, 5)]
        assert table(admin, "SELECT id FROM cp.board ORDER BY id") == [(5,), (6,)]
    finally:
        inserter.join(60)
        cards.close()
        boards.close()
