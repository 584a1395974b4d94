"""`target.versions.VersionTable.lock_or_claim` against real PostgreSQL: two transactions claiming
the same new key. The second waits for the first; it then reads the first's version (committed) or
claims the key itself (rolled back). Either way every key ends claimed or stored, never neither."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from replicator.core.model import SourcePosition, TableRef
from replicator.core.ordering import Version
from replicator.target import control
from replicator.target.versions import VersionTable
from tests.integration.pipeline import CONTROL, fresh_target, wait_until
from tests.integration.stack import Stack

TABLE = TableRef("shop", "items")


def version(offset: int) -> Version:
    return Version("t", 0, offset, SourcePosition(100 + offset, 200 + offset), False)


@pytest.fixture
def versions(stack: Stack) -> Iterator[tuple[VersionTable, str]]:
    dbname = fresh_target("claims")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        control.ensure(conn, CONTROL)
    yield VersionTable(control.table(CONTROL, "row_version")), dbname


def session(stack: Stack, dbname: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(stack.target_admin(dbname), autocommit=True)
    VersionTable.prepare_session(conn)
    return conn


@pytest.mark.parametrize("first_commits", [True, False], ids=["first-commits", "first-rolls-back"])
def test_a_key_claimed_by_another_transaction_is_waited_for_then_read_or_claimed(
    stack: Stack, versions: tuple[VersionTable, str], first_commits: bool
) -> None:
    table, dbname = versions
    with session(stack, dbname) as first, session(stack, dbname) as second:
        with first.transaction(force_rollback=not first_commits):
            stored, claimed = table.lock_or_claim(first, {TABLE: {'["a"]': version(1), '["b"]': None}})
            assert stored == {TABLE: {}} and claimed == {TABLE: {'["a"]', '["b"]'}}
            outcome: dict[str, Any] = {}
            release = threading.Event()

            def claim_second() -> None:
                with second.transaction():
                    outcome["result"] = table.lock_or_claim(
                        second, {TABLE: {'["a"]': version(5), '["c"]': version(6)}}
                    )
                    release.wait(30)

            thread = threading.Thread(target=claim_second)
            thread.start()
            wait_until(lambda: blocked_on_lock(stack, dbname), 30, "the second claim to wait on the first")
            assert "result" not in outcome  # it waits for the first transaction's end
        wait_until(lambda: "result" in outcome, 30, "the second claim to return")
        if first_commits:  # a key read, not claimed, is locked by the second until it ends
            assert locked(stack, dbname, '["a"]')
        release.set()
        thread.join(30)
        stored2, claimed2 = outcome["result"]
        if first_commits:  # '["a"]' was claimed by the first with version 1: read, locked, not claimed
            assert stored2 == {TABLE: {'["a"]': version(1)}} and claimed2 == {TABLE: {'["c"]'}}
        else:  # the first's claim is gone: the second claims both
            assert stored2 == {TABLE: {}} and claimed2 == {TABLE: {'["a"]', '["c"]'}}
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            rows = conn.execute(
                "SELECT key, kafka_offset FROM replicator.row_version WHERE target_table = %s ORDER BY key",
                (str(TABLE),),
            ).fetchall()
        expected = (
            [('["a"]', 1), ('["b"]', None), ('["c"]', 6)] if first_commits else [('["a"]', 5), ('["c"]', 6)]
        )
        assert rows == expected


def test_stored_versions_are_read_and_placeholders_left_out(
    stack: Stack, versions: tuple[VersionTable, str]
) -> None:
    """Keys already stored come back with their versions (a placeholder counts as none, and is not
    claimed again); a batch of new keys only claims."""
    table, dbname = versions
    with session(stack, dbname) as conn:
        with conn.transaction():
            table.lock_or_claim(conn, {TABLE: {'["a"]': version(1), '["p"]': None}})
        with conn.transaction():
            stored, claimed = table.lock_or_claim(
                conn, {TABLE: {'["a"]': version(9), '["p"]': version(9), '["n"]': version(9)}}
            )
    assert stored == {TABLE: {'["a"]': version(1)}}
    assert claimed == {TABLE: {'["n"]'}}


def test_keys_with_copy_escapes_round_trip(stack: Stack, versions: tuple[VersionTable, str]) -> None:
    """Keys holding what COPY's text format escapes (tab, newline, CR, backslash, a lone `\\.`) are
    claimed, then read back and moved by the same text: the session table's COPY is exact."""
    table, dbname = versions
    keys = ['["tab\there"]', "new\nline", "cr\rlf", "back\\slash", "\\.", '["ünï"]']
    with session(stack, dbname) as conn:
        with conn.transaction():
            _, claimed = table.lock_or_claim(conn, {TABLE: {k: version(n) for n, k in enumerate(keys)}})
        assert claimed == {TABLE: set(keys)}
        moved = {k: version(10 + n) for n, k in enumerate(keys)}
        with conn.transaction():
            stored, claimed = table.lock_or_claim(conn, {TABLE: dict(moved)})
            assert stored == {TABLE: {k: version(n) for n, k in enumerate(keys)}}
            assert claimed == {TABLE: set()}
            table.update_many(conn, {TABLE: moved})
        rows = conn.execute(
            "SELECT key, kafka_offset FROM replicator.row_version WHERE target_table = %s", (str(TABLE),)
        ).fetchall()
    assert dict(rows) == {k: 10 + n for n, k in enumerate(keys)}


def test_versions_move_from_the_claims_already_staged_and_others_by_copy(
    stack: Stack, versions: tuple[VersionTable, str]
) -> None:
    """`update_many` with the batch's claims: a stored key moving to the version claimed for it is
    moved from the session table `lock_or_claim` filled (it still holds all three claims after);
    a key moving to another version goes by a COPY of its own. Both end with their versions."""
    table, dbname = versions
    with session(stack, dbname) as conn:
        with conn.transaction():
            table.lock_or_claim(conn, {TABLE: {'["a"]': version(1), '["b"]': version(1)}})
        claims: dict[TableRef, dict[str, Version | None]] = {
            TABLE: {'["a"]': version(7), '["b"]': version(8), '["n"]': version(9)}
        }
        with conn.transaction():
            stored, claimed = table.lock_or_claim(conn, claims)
            assert set(stored[TABLE]) == {'["a"]', '["b"]'} and claimed == {TABLE: {'["n"]'}}
            table.update_many(conn, {TABLE: {'["a"]': version(7)}}, claims)
            staged = conn.execute("SELECT count(*) FROM pg_temp.replicator_batch_versions").fetchone()
            assert staged == (3,)  # moved from the claims in place: no second COPY
            table.update_many(conn, {TABLE: {'["b"]': version(4)}}, claims)
        rows = conn.execute(
            "SELECT key, kafka_offset, lsn FROM replicator.row_version WHERE target_table = %s ORDER BY key",
            (str(TABLE),),
        ).fetchall()
    assert rows == [('["a"]', 7, 207), ('["b"]', 4, 204), ('["n"]', 9, 209)]


def test_the_session_table_holds_only_the_batch_in_hand(
    stack: Stack, versions: tuple[VersionTable, str]
) -> None:
    """The session's versions table is not emptied at commit but before every fill: what a
    committed batch and a rolled-back one left in it never reaches a later batch. A key claimed
    and dropped (its row not written) is not claimed again by the next batch, and a version moved
    by COPY moves only the keys given."""
    table, dbname = versions
    staged = "SELECT key FROM pg_temp.replicator_batch_versions ORDER BY key"
    with session(stack, dbname) as conn:
        with conn.transaction():
            table.lock_or_claim(conn, {TABLE: {'["a"]': version(1), '["d"]': version(2)}})
            table.drop(conn, {TABLE: ['["d"]']})
        assert conn.execute(staged).fetchall() == [('["a"]',), ('["d"]',)]  # left by the commit
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            table.lock_or_claim(conn, {TABLE: {'["x"]': version(3)}})
            conn.execute("SELECT 1 / 0")
        with conn.transaction():
            stored, claimed = table.lock_or_claim(conn, {TABLE: {'["a"]': version(4), '["n"]': version(5)}})
            assert conn.execute(staged).fetchall() == [('["a"]',), ('["n"]',)]
            table.update_many(conn, {TABLE: {'["n"]': version(6)}})
            assert conn.execute(staged).fetchall() == [('["n"]',)]
        assert stored == {TABLE: {'["a"]': version(1)}} and claimed == {TABLE: {'["n"]'}}
        rows = conn.execute(
            "SELECT key, kafka_offset FROM replicator.row_version WHERE target_table = %s ORDER BY key",
            (str(TABLE),),
        ).fetchall()
    assert rows == [('["a"]', 1), ('["n"]', 6)]


def blocked_on_lock(stack: Stack, dbname: str) -> bool:
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO %%row_version%%'"
        ).fetchone()
    return bool(row and row[0])


def locked(stack: Stack, dbname: str, key: str) -> bool:
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        try:
            conn.execute(
                "SELECT 1 FROM replicator.row_version WHERE target_table = %s AND key = %s FOR UPDATE NOWAIT",
                (str(TABLE), key),
            )
        except psycopg.errors.LockNotAvailable:
            return True
    return False
