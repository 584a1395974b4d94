"""A target column widened while the group runs (the runbook's error-record step), on the real
stack: own source table and connector, a target `varchar(10)` column fed from `text` with
`cast: {on_narrowing: reject}`.

What is true, and what the runbook says: a running `replicator run` compiled its plan (the target
column types a cast checks against) at start and keeps refusing longer values after
`ALTER TABLE ... TYPE varchar(200)`, until it is restarted; `replicator errors retry`, a process of
its own, reads the target's catalog when it starts, so with the daemon still running it applies
every open record, those the daemon made after the widening too. After a restart the daemon
writes such values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.integration.own_capture import OwnSchema, own_source, own_target, running_connector
from tests.integration.pipeline import daemon, run_cli, wait_until
from tests.integration.stack import Stack

LONG = "fifteen-chars!!"  # 15 characters: does not fit varchar(10)
REFUSED = "15 characters do not fit varchar(10); fix: widen the target column or declare cast:"


@pytest.fixture
def world(stack: Stack) -> Iterator[OwnSchema]:
    ddl = "CREATE TABLE {}.item (id int PRIMARY KEY, code text); INSERT INTO {}.item VALUES (1, 'short')"
    with own_source(stack, "widen", ["item"], lambda s: sql.SQL(ddl).format(s, s)) as own:
        yield own


def test_a_widened_column_is_used_by_errors_retry_at_once_and_by_the_daemon_after_a_restart(
    stack: Stack, world: OwnSchema, tmp_path: Path
) -> None:
    narrow = "CREATE TABLE {}.item (id bigint PRIMARY KEY, code varchar(10))"
    dbname = own_target(stack, world, ["item"], lambda s: sql.SQL(narrow).format(s))
    rule = world.rule("item", "item", ["code"])
    rule["columns"] = {"code": {"from": "code", "cast": {"on_narrowing": "reject"}}}
    env = world.env(dbname, world.spec(tmp_path / "widen.yaml", [rule]))
    item = world.table("item")

    def source(statement: str, *args: Any) -> None:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(item), args)

    def rows() -> dict[int, str]:
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            return dict(conn.execute(sql.SQL("SELECT id, code FROM {}").format(item)).fetchall())

    def records() -> list[dict[str, Any]]:
        done = run_cli(env, "errors", "list", "--state", "all", "--json")
        return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else []

    def open_ids() -> list[int]:  # the source ids of the open records, from their keys
        return sorted(json.loads(r["key"])[0] for r in records() if r["resolved_at"] is None)

    def applied(ids: set[int], also_open: list[int]) -> bool:  # rows landed, records made
        return ids <= set(rows()) and open_ids() == also_open

    with running_connector(stack, world) as flush:
        with daemon(env, tmp_path / "before.log"):
            source("INSERT INTO {} VALUES (2, %s), (3, 'x')", LONG)
            flush("the first long value")
            wait_until(lambda: applied({1, 3}, [2]), 180, "row 3 and the record of row 2")
            assert all(r["message"].startswith(REFUSED) for r in records()), records()
            with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN code TYPE varchar(200)").format(item))
            source("INSERT INTO {} VALUES (4, %s), (5, 'y')", LONG)
            flush("a long value after the widening")
            # the running daemon still refuses it: its plan has the column as it was at start
            wait_until(lambda: applied({5}, [2, 4]), 60, "row 5 and the record of row 4")
            retried = run_cli(env, "errors", "retry", "--rule", "item.code", "--json")
            assert retried.returncode == 0, retried.stderr
            assert sorted(json.loads(retried.stdout)["closed"]) == sorted(r["id"] for r in records())
            assert rows()[2] == LONG and rows()[4] == LONG and open_ids() == []
        with daemon(env, tmp_path / "after.log"):  # restarted: it reads the widened column
            source("INSERT INTO {} VALUES (6, %s), (7, 'z')", LONG)
            flush("a long value after the restart")
            wait_until(lambda: 7 in rows(), 120, "row 7")
            assert rows()[6] == LONG and open_ids() == []
