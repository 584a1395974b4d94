"""Target ON DELETE CASCADE keys between mapped tables.

1. A parent's delete whose cascade would take child rows waits (held) until the child tables'
   partitions have applied everything up to it (trial 10: cards moved to another board and the old
   board deleted in one transaction; the board's delete, on its own topic, landed first and the
   cascade took the cards and their comments and labels, for good).
2. A batch that holds the source's own cascade (the children's deletes and the parent's) applies
   it at once: a guarded key's children are deleted first, so the guard finds nothing left.
3. Unguarded (rows may not be held: `errors retry`), two instances, one deleting a parent whose
   rows the cascade deletes, the other deleting those children directly (trial 8: 52 `deadlock
   detected` retries between two daemons). The second deletes a cascading key's parent before its
   child (`core.mapping.plan.delete_order`), the order the first's cascade locks the rows in, so
   the first waits for it instead of deadlocking with it. The second instance is held after its
   first table's deletes until the first instance's cascade waits on a row lock; then it goes on.
   Children first, it would then wait for a row the cascade holds while the cascade waits for it:
   a deadlock, one of the two rolled back. (Guarded, the cascade runs only once the children's
   partitions are covered: the other instance's deletes of them are committed by then.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from replicator import failpoints
from replicator.config import HoldSettings
from replicator.core.mapping.compiler import compile_spec
from replicator.core.mapping.spec import load_spec_text
from replicator.core.model import Op, SourcePosition
from replicator.pg.catalog import read_catalog
from replicator.target.store import ControlStore
from tests.events import by_id, change
from tests.integration.pipeline import HandFed, fresh_target, wait_until
from tests.integration.stack import Stack

SCHEMA = """
CREATE SCHEMA casc;
CREATE TABLE casc.cust (id int PRIMARY KEY);
CREATE TABLE casc.ord (id int PRIMARY KEY, cust int NOT NULL REFERENCES casc.cust ON DELETE CASCADE);
CREATE TABLE casc.line (id int PRIMARY KEY, ord int NOT NULL REFERENCES casc.ord ON DELETE CASCADE);
CREATE INDEX ON casc.ord (cust);
CREATE INDEX ON casc.line (ord);
GRANT USAGE ON SCHEMA casc TO replicator;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA casc TO replicator;
INSERT INTO casc.cust VALUES (1);
INSERT INTO casc.ord VALUES (10, 1);
INSERT INTO casc.line VALUES (100, 10), (101, 10);
"""


def rule(name: str, columns: list[str]) -> str:
    cols = "".join(f"\n    {c}: {{from: {c}}}" for c in columns)
    return (
        f"- id: {name}\n  source: app.{name}\n  target: casc.{name}\n  key: {{id: id}}\n"
        f"  delete: {{policy: hard}}\n  truncate: {{policy: error}}\n  columns:{cols}\n"
    )


SPEC = (
    "version: 1\ntopic_prefix: cd\ntables:\n"
    + rule("cust", ["id"])
    + rule("ord", ["id", "cust"])
    + rule("line", ["id", "ord"])
)


COUNTS = {"cd.app.cust": 1, "cd.app.ord": 1, "cd.app.line": 1}
CHECKPOINT = (
    "INSERT INTO replicator.checkpoint (group_id, topic, partition, next_offset, commit_lsn)"
    " VALUES (%s, %s, 0, %s, %s) ON CONFLICT (group_id, topic, partition)"
    " DO UPDATE SET next_offset = EXCLUDED.next_offset, commit_lsn = EXCLUDED.commit_lsn"
)


def covered(admin: str, group: str, topics: list[str]) -> None:
    """The group's partitions of `topics` have applied everything the source committed up to LSN
    10,000 (another instance's checkpoints)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        for topic in topics:
            conn.execute(CHECKPOINT, (group, topic, 50, 10_000))


def writers(stack: Stack, guarded: bool) -> Iterator[tuple[str, HandFed, HandFed]]:
    """Two writers (groups cascade-a, cascade-b) on a fresh target; `guarded` False: neither may
    hold rows (as `errors retry`), so neither guards a cascade."""
    dbname = fresh_target("cascade")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(SCHEMA)
        plan = compile_spec(load_spec_text(SPEC), read_catalog(conn, ["casc"]))
    hold = HoldSettings(retry_after_s=3600)
    parents = HandFed(stack, dbname, plan, "cascade-a", hold, COUNTS, may_hold=guarded)
    children = HandFed(stack, dbname, plan, "cascade-b", hold, COUNTS, may_hold=guarded)
    yield stack.target_admin(dbname), parents, children
    parents.close()
    children.close()


@pytest.fixture
def target(stack: Stack) -> Iterator[tuple[str, HandFed, HandFed]]:
    yield from writers(stack, guarded=True)


@pytest.fixture
def unguarded(stack: Stack) -> Iterator[tuple[str, HandFed, HandFed]]:
    yield from writers(stack, guarded=False)


def rows(admin: str) -> tuple[Any, ...]:
    with psycopg.connect(admin) as conn:
        return tuple(
            conn.execute(
                "SELECT (SELECT array_agg(id ORDER BY id) FROM casc.cust),"
                " (SELECT array_agg((id, cust)::text ORDER BY id) FROM casc.ord),"
                " (SELECT array_agg(id ORDER BY id) FROM casc.line)"
            ).fetchone()
            or ()
        )


def test_a_parents_delete_waits_until_its_cascade_takes_only_what_the_source_deleted(
    target: tuple[str, HandFed, HandFed],
) -> None:
    """Source, one transaction at LSN 200: order 10 moves from customer 1 to customer 2, then
    customer 1 is deleted. The customer's delete arrives first: applied, the cascade would delete
    order 10 and its lines, and the order's move brings the order back but never its lines."""
    admin, parents, _ = target
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("INSERT INTO casc.cust VALUES (2)")
    result = parents.apply(delete("cust", 1, 0, 200))
    assert result.held == 1 and result.errors == []
    assert rows(admin) == ([1, 2], ["(10,1)"], [100, 101]), "nothing cascaded yet"
    with psycopg.connect(admin, autocommit=True) as conn:  # a drain waiting for it makes it due now
        store = ControlStore(conn, "replicator")
        assert store.hasten_held("cascade-a", 200) == 0  # judged at 200: not before a fence at 200
        assert store.hasten_held("cascade-a", 10_000) == 1
        assert one(conn, "SELECT last_try_at = '-infinity' FROM replicator.held_event") is True
    moved = change(
        "cd.app.ord",
        Op.UPDATE,
        "app.ord",
        offset=0,
        position=SourcePosition(200, 199),
        key={"id": 10},
        after={"id": 10, "cust": 2},
    )
    result = parents.apply(moved)  # the held delete is retried with it, after the batch's upserts
    assert result.errors == [] and result.released == 1
    assert rows(admin) == ([2], ["(10,2)"], [100, 101])
    with psycopg.connect(admin) as conn:
        assert one(conn, "SELECT count(*) FROM replicator.held_event") == 0
        assert one(conn, "SELECT count(*) FROM replicator.error_record") == 0


def one(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


def delete(table: str, key: int, offset: int, at: int) -> Any:
    """The delete of `key` at `offset` of its table's topic, at source position `at`."""
    return by_id("cd", table, Op.DELETE, offset, (at, at), {"id": key})


def test_a_parents_delete_cascades_once_the_tables_it_reaches_are_covered(
    target: tuple[str, HandFed, HandFed],
) -> None:
    """Every partition of the orders and the lines has applied what the source committed up to the
    customer's delete: the rows still referencing it are those the source's cascade took too."""
    admin, parents, _ = target
    covered(admin, "cascade-a", ["cd.app.cust", "cd.app.ord"])
    assert parents.apply(delete("cust", 1, 0, 103)).held == 1, "the lines' partition is behind"
    covered(admin, "cascade-a", ["cd.app.line"])
    result = parents.apply(delete("cust", 7, 1, 104))  # any batch: the held delete is retried with it
    assert result.held == 0 and result.released == 1 and result.errors == []
    assert rows(admin) == (None, None, None)


def test_a_batch_with_the_sources_own_cascade_applies_it_at_once(
    target: tuple[str, HandFed, HandFed],
) -> None:
    """The source deleted order 10: its cascade deleted the lines, each an event. The batch deletes
    the lines first (a guarded key: children first), so the order's delete cascades into nothing
    and is not held, though the lines' partition is not covered."""
    admin, _, children = target
    result = children.apply(
        delete("line", 100, 0, 100), delete("line", 101, 1, 101), delete("ord", 10, 0, 102)
    )
    assert result.held == 0 and result.errors == []
    assert rows(admin) == ([1], None, None)


def test_a_held_delete_above_a_held_delete_lands_in_the_batch_that_applies_the_lower_one(
    target: tuple[str, HandFed, HandFed],
) -> None:
    """Source, one transaction at LSN 300: customer 1 deleted, its cascade deleting order 10 and
    its lines, each topic applied on its own, parents first. The customer's delete waits for the
    order, the order's for its lines. The lines' batch retries the order's delete (it waits for the
    lines' table), which lands; the customer's, waiting for the orders' table, is adopted by that
    batch and lands after it, not one retry (and its backoff) later."""
    admin, writer, _ = target
    assert writer.apply(delete("cust", 1, 0, 300)).held == 1, "order 10 still references it"
    result = writer.apply(delete("ord", 10, 0, 300))  # retries the customer's delete: still held
    assert result.held == 2 and result.errors == []
    result = writer.apply(delete("line", 100, 0, 300), delete("line", 101, 1, 300))
    assert result.errors == [] and result.released == 2 and result.held == 0
    assert rows(admin) == (None, None, None)
    with psycopg.connect(admin) as conn:
        assert one(conn, "SELECT count(*) FROM replicator.held_event") == 0


def test_a_cascade_and_direct_deletes_of_its_rows_do_not_deadlock(
    unguarded: tuple[str, HandFed, HandFed], monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, parents, children = unguarded
    outcome: dict[str, Any] = {}

    def delete_parent() -> None:
        try:
            outcome["applied"] = parents.apply(delete("cust", 1, 0, 103))
        except Exception as exc:  # the test reports it, whatever it is
            outcome["error"] = exc

    def waiting_on_a_lock() -> bool:
        with psycopg.connect(admin) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            ).fetchone()
        return bool(row and row[0])

    tables: list[str] = []
    parent = threading.Thread(target=delete_parent)

    def held_after_the_first_table(name: str) -> None:
        if not name.startswith("deleted ") or threading.current_thread() is parent:
            return
        tables.append(name.rpartition(".")[2])
        if len(tables) == 1:  # the first table's rows are deleted (and locked): now the cascade
            parent.start()
            wait_until(waiting_on_a_lock, 30, "the parent's cascade to wait on a row lock")

    monkeypatch.setattr(failpoints, "hit", held_after_the_first_table)
    children.apply(delete("line", 100, 0, 100), delete("line", 101, 1, 101), delete("ord", 10, 0, 102))
    parent.join(60)
    assert "error" not in outcome, f"the cascade failed: {outcome.get('error')!r}"
    assert tables == ["ord", "line"]
    with psycopg.connect(admin) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM casc.cust), (SELECT count(*) FROM casc.ord),"
            " (SELECT count(*) FROM casc.line)"
        ).fetchone()
    assert left == (0, 0, 0)


SWAP_SCHEMA = """
CREATE SCHEMA casc2;
CREATE TABLE casc2.board (id int PRIMARY KEY, slug text NOT NULL UNIQUE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE casc2.card (id int PRIMARY KEY, board int NOT NULL REFERENCES casc2.board ON DELETE CASCADE);
GRANT USAGE ON SCHEMA casc2 TO replicator;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA casc2 TO replicator;
INSERT INTO casc2.board VALUES (1, 'a'), (2, 'b');
INSERT INTO casc2.card VALUES (10, 1);
"""
SWAP_SPEC = """version: 1
topic_prefix: c2
tables:
- id: board
  source: app.board
  target: casc2.board
  key: {id: id}
  delete: {policy: hard}
  truncate: {policy: error}
  columns:
    slug: {from: slug}
- id: card
  source: app.card
  target: casc2.card
  key: {id: id}
  delete: {policy: hard}
  truncate: {policy: error}
  columns:
    board: {from: board}
"""


def test_a_delete_replayed_after_a_held_unique_swap_waits_for_its_cascade_too(stack: Stack) -> None:
    """Trial 10b: a board's slug swap was held (23505), so the board's later events were applied
    one by one (`BatchWriter._replay`), whose delete did not wait: the cascade took the cards the
    same transaction had moved away, with their comments. Now it waits there too."""
    dbname = fresh_target("cascswap")
    admin = stack.target_admin(dbname)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(SWAP_SCHEMA)
        plan = compile_spec(load_spec_text(SWAP_SPEC), read_catalog(conn, ["casc2"]))
    counts = {"c2.app.board": 1, "c2.app.card": 1}
    writer = HandFed(stack, dbname, plan, "cascswap", HoldSettings(retry_after_s=3600), counts)

    def event(table: str, op: Op, offset: int, at: tuple[int, int], row: dict[str, Any]) -> Any:
        return by_id("c2", table, op, offset, at, row)

    try:
        swap = event("board", Op.UPDATE, 0, (100, 101), {"id": 1, "slug": "b"})  # board 2 still has 'b'
        assert writer.apply(swap).held == 1
        gone = event("board", Op.DELETE, 1, (200, 202), {"id": 1})  # after card 10 moved (below)
        result = writer.apply(gone)  # with the held swap step: board 1's events one by one
        assert result.errors == []
        with psycopg.connect(admin) as conn:
            cards = conn.execute("SELECT id, board FROM casc2.card").fetchall()
        assert cards == [(10, 1)], "the delete waits: card 10's move is not applied yet"
        moved = event("card", Op.UPDATE, 0, (200, 201), {"id": 10, "board": 2})
        assert writer.apply(moved).errors == []  # board 1's events are tried before the cards' writes
        # the swap's other step: board 2 takes 'a', so board 1 takes 'b', then its delete cascades
        # into nothing (card 10 has moved)
        other = event("board", Op.UPDATE, 2, (100, 102), {"id": 2, "slug": "a"})
        assert writer.apply(other).errors == []
        with psycopg.connect(admin) as conn:
            assert conn.execute("SELECT id, board FROM casc2.card").fetchall() == [(10, 2)]
            assert conn.execute("SELECT id, slug FROM casc2.board").fetchall() == [(2, "a")]
            assert conn.execute("SELECT count(*) FROM replicator.held_event").fetchall() == [(0,)]
            assert conn.execute("SELECT count(*) FROM replicator.error_record").fetchall() == [(0,)]
    finally:
        writer.close()
