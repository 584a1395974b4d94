"""A decoded value psycopg cannot write (a struct with no conversion: a dict) is one error record
for its row, never a stopped daemon: the stage refuses it as a row-level error (SQLSTATE 22000),
and the rows beside it land. Found with PostGIS geometry before it had a conversion: "cannot adapt
type 'dict'" halted the daemon."""

from __future__ import annotations

import psycopg

from replicator.core.intents import prepare
from replicator.core.mapping.compiler import compile_spec
from replicator.core.mapping.spec import load_spec_text
from replicator.core.model import Batch, Op, SourcePosition
from replicator.pg.catalog import read_catalog
from tests.events import change
from tests.integration.pipeline import HandFed, fresh_target
from tests.integration.stack import Stack
from tests.integration.test_stage_storage import SCHEMA, SPEC  # store.doc (id, body, note)


def test_a_value_with_no_text_form_is_one_error_record_and_its_batch_lands(stack: Stack) -> None:
    dbname = fresh_target("unwritable")
    admin = stack.target_admin(dbname)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(SCHEMA)
        plan = compile_spec(load_spec_text(SPEC), read_catalog(conn, ["store"]))
    fed = HandFed(stack, dbname, plan, "unwritable")
    try:
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
        result = fed.writer.apply(prepare(batch, plan))
        (error,) = result.errors
        assert error.ref.offset == 5 and error.key == "[5]" and error.sqlstate == "22000", error
        assert "column(s) note" in error.message and "dict" in error.message, error.message
        with psycopg.connect(admin) as conn:
            rows = conn.execute("SELECT id, note FROM store.doc ORDER BY id").fetchall()
        assert rows == [(n, f"note {n}") for n in notes if n != 5]
    finally:
        fed.close()
