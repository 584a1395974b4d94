"""Large values keep the target column's own storage: the writer's stage never compresses them.

Values travel through a per-session stage table. With the stage's default storage (EXTENDED) every
large value was compressed on its way in, the target kept that compressed copy even where its column
says STORAGE EXTERNAL (seen: pglz in such a column), and an incompressible value cost a failed
compression attempt in the stage (5,000 rows of 10 kB: 1.0 s instead of 0.12 s).

A value psycopg cannot write into the stage (a struct with no conversion: a dict) is one error
record for its row, never a stopped daemon: the stage refuses it as a row-level error (SQLSTATE
22000), and the rows beside it land. Found with PostGIS geometry before it had a conversion:
"cannot adapt type 'dict'" halted the daemon."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from replicator.core.intents import prepare
from replicator.core.mapping.compiler import compile_spec
from replicator.core.mapping.spec import load_spec_text
from replicator.core.model import Batch, Op, SourcePosition
from replicator.pg.catalog import read_catalog
from tests.events import change
from tests.integration.pipeline import HandFed, fresh_target
from tests.integration.stack import Stack, one_row

SCHEMA = """
CREATE SCHEMA store;
CREATE TABLE store.doc (id int PRIMARY KEY, body text, note text);
ALTER TABLE store.doc ALTER COLUMN body SET STORAGE EXTERNAL;
GRANT USAGE ON SCHEMA store TO replicator;
GRANT SELECT, INSERT, UPDATE, DELETE ON store.doc TO replicator;
"""

SPEC = """
version: 1
topic_prefix: st
tables:
- id: doc
  source: app.doc
  target: store.doc
  key: {id: id}
  delete: {policy: hard}
  truncate: {policy: error}
  columns:
    id: {from: id}
    body: {from: body}
    note: {from: note}
"""

BIG = "a compressible line of text, repeated; " * 1000  # ~39 kB, compresses to well under 2 kB


@pytest.fixture
def docs(stack: Stack) -> Iterator[tuple[HandFed, str]]:
    dbname = fresh_target("stagestorage")
    admin = stack.target_admin(dbname)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(SCHEMA)
        plan = compile_spec(load_spec_text(SPEC), read_catalog(conn, ["store"]))
    fed = HandFed(stack, dbname, plan, "stagestorage")
    yield fed, admin
    fed.close()


def test_a_large_value_is_stored_as_the_target_column_says(docs: tuple[HandFed, str]) -> None:
    fed, admin = docs
    row = {"id": 1, "body": BIG, "note": BIG}
    fed.apply(
        change(
            "st.app.doc",
            Op.CREATE,
            "app.doc",
            offset=0,
            position=SourcePosition(10, 10),
            key={"id": 1},
            after=row,
        )
    )
    with psycopg.connect(admin) as conn:
        stored = conn.execute(
            "SELECT body = %s, note = %s, pg_column_compression(body), pg_column_compression(note)"
            " FROM store.doc WHERE id = 1",
            (BIG, BIG),
        ).fetchone()
    assert stored is not None
    body_equal, note_equal, body_compression, note_compression = stored
    assert (body_equal, note_equal) == (True, True)
    assert body_compression is None, "STORAGE EXTERNAL column holds a compressed value"
    assert note_compression is not None, "the EXTENDED column compresses as the target's own storage does"


def test_a_stage_holds_one_batch_and_its_file_stays_bounded(docs: tuple[HandFed, str]) -> None:
    """Stages are emptied before each use, not at commit (an ON COMMIT DELETE ROWS table costs
    every commit of the session, touched or not): DELETE between batches, TRUNCATE once
    `TRUNCATE_PAST_ROWS` rows went through, so the dead rows a DELETE leaves (a temporary table
    is never vacuumed) do not pile up. 40 batches of 300 rows: every row lands once, and the
    stage's file stays under the size of 4,000 rows (12,000 went through it)."""
    fed, admin = docs
    batches, rows = 40, 300
    for b in range(batches):
        fed.apply(
            *(
                change(
                    "st.app.doc",
                    Op.CREATE,
                    "app.doc",
                    offset=b * rows + i,
                    position=SourcePosition(100 + b * rows + i, 100 + b * rows + i),
                    key={"id": b * rows + i},
                    after={"id": b * rows + i, "body": f"body {b}", "note": "n" * 100},
                )
                for i in range(rows)
            )
        )
    conn = fed.writer.connect()
    stage = sql.Identifier("pg_temp", fed.plan.tables[0].statements.stage)
    (size,) = one_row(
        conn.execute(
            sql.SQL("SELECT pg_relation_size({}::regclass)").format(sql.Literal(stage.as_string(conn)))
        )
    )
    (per_row,) = one_row(conn.execute("SELECT pg_column_size(ROW(1, 'body 39', repeat('n', 100), 1))"))
    conn.rollback()
    assert size < 4000 * per_row, f"the stage's file is {size} bytes after {batches * rows} rows"
    with psycopg.connect(admin) as check:
        counted = check.execute(
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM store.doc"
        ).fetchone()
        bodies = check.execute(
            "SELECT count(*) FROM store.doc WHERE body <> 'body ' || (id / 300)"
        ).fetchone()
    assert counted == (batches * rows, batches * rows, 0, batches * rows - 1)
    assert bodies == (0,)


def test_a_value_with_no_text_form_is_one_error_record_and_its_batch_lands(docs: tuple[HandFed, str]) -> None:
    fed, admin = docs
    notes: dict[int, object] = {n: f"note {n}" for n in range(1, 9)}
    notes[5] = {"wkb": "AQE=", "srid": None}  # what an unconverted struct decodes to
    events = [
        change(
            "st.app.doc",
            Op.CREATE,
            "app.doc",
            offset=n,
            position=SourcePosition(10 + n, 10 + n),
            key={"id": n},
            after={"id": n, "body": None, "note": note},
        )
        for n, note in notes.items()
    ]
    batch = Batch(events=events, next_offsets={("st.app.doc", 0): 9})
    result = fed.writer.apply(prepare(batch, fed.plan))
    (error,) = result.errors
    assert error.ref.offset == 5 and error.key == "[5]" and error.sqlstate == "22000", error
    assert "column(s) note" in error.message and "dict" in error.message, error.message
    with psycopg.connect(admin) as conn:
        rows = conn.execute("SELECT id, note FROM store.doc ORDER BY id").fetchall()
    assert rows == [(n, f"note {n}") for n in notes if n != 5]
