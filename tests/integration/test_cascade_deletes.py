"""Two instances, one deleting a parent whose rows the target's ON DELETE CASCADE keys delete, the
other deleting those children directly (trial 8: 52 `deadlock detected` retries between two
daemons). The second deletes a cascading key's parent before its child
(`core.mapping.plan.delete_order`), the order the first's cascade locks the rows in, so the first
waits for it instead of deadlocking with it.

The second instance is held after its first table's deletes until the first instance's cascade
waits on a row lock; then it goes on. Children first, it would then wait for a row the cascade
holds while the cascade waits for it: a deadlock, one of the two rolled back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from replicator.core.mapping.compiler import compile_spec
from replicator.core.mapping.spec import load_spec_text
from replicator.core.model import Op, SourcePosition
from replicator.pg.catalog import read_catalog
from tests.events import change
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


@pytest.fixture
def target(stack: Stack) -> Iterator[tuple[str, HandFed, HandFed]]:
    dbname = fresh_target("cascade")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(SCHEMA)
        plan = compile_spec(load_spec_text(SPEC), read_catalog(conn, ["casc"]))
    parents, children = HandFed(stack, dbname, plan, "cascade-a"), HandFed(stack, dbname, plan, "cascade-b")
    yield stack.target_admin(dbname), parents, children
    parents.close()
    children.close()


def delete(table: str, key: int, offset: int, at: int) -> Any:
    """The delete of `key` at `offset` of its table's topic, at source position `at`."""
    return change(
        f"cd.app.{table}",
        Op.DELETE,
        f"app.{table}",
        offset=offset,
        position=SourcePosition(at, at),
        key={"id": key},
        before={"id": key},
    )


def test_a_cascade_and_direct_deletes_of_its_rows_do_not_deadlock(
    target: tuple[str, HandFed, HandFed],
) -> None:
    admin, parents, children = target
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

    writer = children.writer
    real = writer._deletes
    tables: list[str] = []
    parent = threading.Thread(target=delete_parent)

    def held_after_the_first_table(conn: Any, writes: Any, run: Any) -> None:
        real(conn, writes, run)
        tables.append(writes.table.target.name)
        if len(tables) == 1:  # the first table's rows are deleted (and locked): now the cascade
            parent.start()
            wait_until(waiting_on_a_lock, 30, "the parent's cascade to wait on a row lock")

    writer._deletes = held_after_the_first_table  # type: ignore[method-assign]
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
