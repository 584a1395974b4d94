"""`compare_since` (the cutover's verify inside the window) against a full `compare`, on real
PostgreSQL: after a baseline, each kind of change on either side is found exactly as a full
verify finds it, while unchanged rows are not compared again.

Its own source and target databases (no Kafka needed: verify reads only the databases). The
spec renames, filters and rejects, so keys, filters and rule ids all take part.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from replicator.core.mapping import compile_spec, load_spec
from replicator.core.mapping.plan import Plan
from replicator.core.verify import TableDiff
from replicator.pg.catalog import read_catalog
from replicator.run.verify import compare, compare_marked, compare_since
from replicator.target.store import ControlStore
from tests.integration.stack import Stack

CONTROL = "replicator"
SPEC = """
version: 1
topic_prefix: vs
defaults: {unmapped_source_columns: fail}
tables:
  - id: item
    source: app.item
    target: app.product
    key: {product_id: id}
    filter: {all: [{column: hidden, op: ne, value: true}]}
    delete: {policy: hard}
    truncate: {policy: error}
    unmapped_source_columns: ignore
    columns:
      product_id: {from: id}
      title: {from: name, cast: {type: "varchar(8)", on_narrowing: reject}}
      price: {from: price}
  - id: line
    source: app.line
    target: app.line
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: error}
    columns: {id: {from: id}, item_id: {from: item_id}, qty: {from: qty}}
"""
SOURCE_DDL = """
CREATE SCHEMA app;
CREATE TABLE app.item (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), hidden boolean NOT NULL);
CREATE TABLE app.line (id uuid PRIMARY KEY, item_id int NOT NULL, qty int NOT NULL);
"""
TARGET_DDL = """
CREATE SCHEMA app;
CREATE TABLE app.product (product_id int PRIMARY KEY, title varchar(8) NOT NULL, price numeric(10,2));
CREATE TABLE app.line (id uuid PRIMARY KEY, item_id int NOT NULL, qty int NOT NULL);
"""
ITEMS, LINES = 120, 200


@dataclass
class World:
    source_conninfo: str
    source: psycopg.Connection[Any]
    target: psycopg.Connection[Any]
    plan: Plan

    def fill(self) -> None:
        """Both sides consistent: the target holds exactly the mapped source rows."""
        for conn in (self.source, self.target):
            conn.execute("TRUNCATE app.line")
        self.source.execute("TRUNCATE app.item")
        self.target.execute("TRUNCATE app.product")
        self.source.execute(
            "INSERT INTO app.item SELECT g, 'item' || g, g * 1.5, g %% 10 = 0 FROM generate_series(1, %s) g",
            (ITEMS,),
        )
        self.source.execute("UPDATE app.item SET name = 'far too long a name' WHERE id = 7")  # rejected
        self.target.execute(
            "INSERT INTO app.product SELECT g, 'item' || g, g * 1.5 FROM generate_series(1, %s) g"
            " WHERE g %% 10 <> 0 AND g <> 7",
            (ITEMS,),
        )
        lines = [(uuid.uuid4(), n % ITEMS + 1, n) for n in range(LINES)]
        for conn in (self.source, self.target):
            with conn.cursor().copy("COPY app.line (id, item_id, qty) FROM STDIN") as copy:
                for row in lines:
                    copy.write_row(row)

    def any_line(self) -> Any:
        row = self.source.execute("SELECT id FROM app.line ORDER BY id LIMIT 1").fetchone()
        assert row is not None
        return row[0]


def _database(stack: Stack, side: str, name: str, ddl: str) -> str:
    admin = stack.source_admin() if side == "source" else stack.target_admin()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conninfo = stack.source_admin(name) if side == "source" else stack.target_admin(name)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(ddl)
    return conninfo


@pytest.fixture(scope="module")
def world(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    run = uuid.uuid4().hex[:6]
    source = _database(stack, "source", f"vs_src_{run}", SOURCE_DDL)
    target = _database(stack, "target", f"vs_tgt_{run}", TARGET_DDL)
    spec = Path(tmp_path_factory.mktemp("vs")) / "spec.yaml"
    spec.write_text(SPEC)
    with psycopg.connect(source, autocommit=True) as src, psycopg.connect(target, autocommit=True) as tgt:
        ControlStore(tgt, CONTROL).ensure()
        plan = compile_spec(load_spec(spec), read_catalog(tgt, ["app"]))
        yield World(source, src, tgt, plan)


def _same(a: list[TableDiff], b: list[TableDiff]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x == y, f"{x.summary()}\n!=\n{y.summary()}"


Change = Callable[[World], object]
CHANGES: dict[str, tuple[Change, dict[str, int]]] = {
    # name: (the change after the baseline, what a full verify must then report: kind -> count)
    "nothing": (lambda w: None, {}),
    "replicated update and insert": (
        lambda w: [
            c.execute(q)
            for c, q in (
                (w.source, "UPDATE app.item SET price = price + 1 WHERE id = 3"),
                (w.target, "UPDATE app.product SET price = price + 1 WHERE product_id = 3"),
                (w.source, "INSERT INTO app.item VALUES (999, 'new', 1, false)"),
                (w.target, "INSERT INTO app.product VALUES (999, 'new', 1)"),
            )
        ],
        {},
    ),
    "source update not applied": (
        lambda w: w.source.execute("UPDATE app.item SET price = 0 WHERE id = 5"),
        {"mismatched": 1},
    ),
    "source insert not applied": (
        lambda w: w.source.execute("INSERT INTO app.item VALUES (1000, 'lost', 2, false)"),
        {"missing": 1},
    ),
    "source delete not applied": (
        lambda w: w.source.execute("DELETE FROM app.line WHERE id = %s", (w.any_line(),)),
        {"extra": 1},
    ),
    "row filtered out since": (
        lambda w: w.source.execute("UPDATE app.item SET hidden = true WHERE id = 11"),
        {"extra": 1},
    ),
    "row rejected since": (
        lambda w: w.source.execute("UPDATE app.item SET name = 'much too long' WHERE id = 12"),
        {"extra": 1, "rejected": 2},
    ),
    "target row changed": (
        lambda w: w.target.execute("UPDATE app.line SET qty = -1 WHERE id = %s", (w.any_line(),)),
        {"mismatched": 1},
    ),
    "target row deleted": (
        lambda w: w.target.execute("DELETE FROM app.product WHERE product_id = 13"),
        {"missing": 1},
    ),
    "target-only row": (
        lambda w: w.target.execute("INSERT INTO app.product VALUES (2000, 'dual', 1)"),
        {"extra": 1},
    ),
}


def _counts(diffs: list[TableDiff]) -> dict[str, int]:
    out = {
        "missing": sum(len(d.missing) for d in diffs),
        "extra": sum(len(d.extra) for d in diffs),
        "mismatched": len({(d.target, m[0]) for d in diffs for m in d.mismatched}),
        "rejected": sum(len(d.rejected) for d in diffs),
    }
    # item 7 is always rejected (its name is too long for the target)
    return {k: v for k, v in out.items() if v and not (k == "rejected" and v == 1)}


@pytest.mark.parametrize("name", list(CHANGES))
def test_verify_since_a_baseline_finds_what_a_full_verify_finds(world: World, name: str) -> None:
    change, expected = CHANGES[name]
    world.fill()
    before, baseline = compare_marked(world.plan, world.source, world.target, CONTROL)
    assert all(d.clean(accept_errors=True) for d in before), [d.summary() for d in before]
    assert len(baseline.tables) == 2 and baseline.rows == ITEMS - ITEMS // 10 - 1 + LINES

    change(world)
    full = compare(world.plan, world.source, world.target, CONTROL)
    since, compared = compare_since(world.plan, world.source, world.target, CONTROL, baseline)

    assert _counts(full) == expected
    _same(since, full)
    assert compared <= 4, compared  # only the changed rows were compared value by value


def test_rows_of_a_transaction_running_at_the_baseline_count_as_changed(world: World) -> None:
    """A row inserted by a subtransaction of a transaction that was running when the baseline was
    read (and committed later) is compared: a snapshot does not list subtransactions."""
    world.fill()
    with psycopg.connect(world.source_conninfo) as late:
        late.execute("UPDATE app.item SET price = price WHERE id = 1")  # the transaction has an xid
        with late.transaction():  # a savepoint: the insert gets a subtransaction xid
            late.execute("INSERT INTO app.item VALUES (3000, 'late', 3, false)")
        _, baseline = compare_marked(world.plan, world.source, world.target, CONTROL)
        late.commit()
    full = compare(world.plan, world.source, world.target, CONTROL)
    since, _ = compare_since(world.plan, world.source, world.target, CONTROL, baseline)
    assert _counts(full) == {"missing": 1}
    _same(since, full)


def test_a_difference_at_the_baseline_is_compared_again(world: World) -> None:
    """A row already wrong before the fence, untouched since, is still reported after it."""
    world.fill()
    world.target.execute("UPDATE app.product SET title = 'wrong' WHERE product_id = 21")
    _, baseline = compare_marked(world.plan, world.source, world.target, CONTROL)
    since, compared = compare_since(world.plan, world.source, world.target, CONTROL, baseline)
    assert [m[:2] for d in since for m in d.mismatched] == [("[21]", "title")]
    assert compared == 1
