"""FK and unique violations get bounded retries before they become error records.

A child can reach the target before its parent when they travel on different
partitions or topics (fault matrix 18). The writer rolls the batch back and
retries with growing pauses; when the parent lands meanwhile (another
instance applies it), the child lands too; when it never does, the child
becomes an error record with SQLSTATE 23503 and its neighbours land.
"""

from __future__ import annotations

import threading
import time

import psycopg
from psycopg import sql

from replicator.core.intents import prepare
from replicator.core.mapping import compile_spec, load_spec_text
from replicator.core.mapping.plan import Plan
from replicator.core.model import Batch, ChangeEvent, Op, SourcePosition
from replicator.pg.catalog import read_catalog
from replicator.target.writer import BatchWriter
from tests.events import change
from tests.integration.pipeline import fresh_target, live_writer
from tests.integration.stack import Stack, one_row

SPEC = """
version: 1
topic_prefix: fk
defaults: {unmapped_source_columns: ignore}
tables:
  - id: parent
    source: src.parent
    target: fk.parent
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns: {id: {from: id}}
  - id: child
    source: src.child
    target: fk.child
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns: {id: {from: id}, parent_id: {from: parent_id}}
"""


def child(offset: int, cid: int, parent: int) -> ChangeEvent:
    return change(
        "fk.src.child",
        Op.CREATE,
        "src.child",
        offset=offset,
        position=SourcePosition(1, 10 + offset),
        key={"id": cid},
        after={"id": cid, "parent_id": parent},
    )


def setup(stack: Stack, reorder_retries: int = 4) -> tuple[str, BatchWriter, Plan]:
    dbname = fresh_target("fk")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA fk; CREATE TABLE fk.parent (id int PRIMARY KEY);"
            " CREATE TABLE fk.child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES fk.parent);"
            " GRANT USAGE ON SCHEMA fk TO replicator; GRANT ALL ON ALL TABLES IN SCHEMA fk TO replicator"
        )
        plan = compile_spec(load_spec_text(SPEC, "fk.yaml"), read_catalog(conn, ["fk"]))
    return dbname, live_writer(stack, dbname, plan, "fk", "run-fk", reorder_retries), plan


def test_child_before_parent_lands_once_the_parent_arrives(stack: Stack) -> None:
    dbname, writer, plan = setup(stack)

    def parent_arrives_later() -> None:
        time.sleep(0.4)  # the "other instance" applies the parent while the batch retries
        with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
            conn.execute("INSERT INTO fk.parent VALUES (1)")

    other = threading.Thread(target=parent_arrives_later)
    other.start()
    started = time.monotonic()
    result = writer.apply(
        prepare(Batch(events=[child(0, 10, 1)], next_offsets={("fk.src.child", 0): 1}), plan)
    )
    other.join()
    writer.close()
    assert result.errors == []
    assert time.monotonic() - started >= 0.4
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        assert conn.execute("SELECT id, parent_id FROM fk.child").fetchall() == [(10, 1)]


def test_child_whose_parent_never_arrives_becomes_an_error_record_after_bounded_retries(stack: Stack) -> None:
    dbname, writer, plan = setup(stack, reorder_retries=2)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute("INSERT INTO fk.parent VALUES (2)")
    started = time.monotonic()
    result = writer.apply(
        prepare(
            Batch(events=[child(0, 20, 99), child(1, 21, 2)], next_offsets={("fk.src.child", 0): 2}), plan
        )
    )
    elapsed = time.monotonic() - started
    writer.close()
    assert [(f.rule_id, f.sqlstate, f.key) for f in result.errors] == [("child", "23503", "[20]")]
    assert 0.25 + 0.5 <= elapsed < 30  # two pauses, then the record
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        assert conn.execute("SELECT id FROM fk.child").fetchall() == [(21,)]
        (n,) = one_row(
            conn.execute(sql.SQL("SELECT count(*) FROM replicator.error_record WHERE sqlstate = '23503'"))
        )
        assert n == 1
