"""Identity and generated columns, on the real stack: a target made from the source's DDL (as
`pg_dump --schema-only` gives it) keeps `GENERATED ALWAYS AS IDENTITY` keys and stored generated
columns. The replicator writes the source's identity values as they are (`OVERRIDING SYSTEM
VALUE`), and `mapping check` refuses a rule that writes a generated column (PostgreSQL computes
it, and refuses a written value).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from tests.integration.own_capture import OwnSchema, own_source, own_target, running_connector
from tests.integration.pipeline import run_cli
from tests.integration.stack import Stack

# the same DDL on both sides, as a schema dump carries it
DDL = (
    "CREATE TABLE {t} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,"
    " cents integer NOT NULL, dollars numeric GENERATED ALWAYS AS (cents / 100.0) STORED)"
)


def table_ddl(s: sql.Identifier) -> sql.Composed:
    return sql.SQL(DDL).format(t=sql.SQL("{}.acct").format(s))


@pytest.fixture
def world(stack: Stack) -> Iterator[OwnSchema]:
    def ddl(s: sql.Identifier) -> sql.Composed:
        return table_ddl(s) + sql.SQL(
            "; INSERT INTO {}.acct (name, cents) VALUES ('one', 100), ('two', 250)"
        ).format(s)

    with own_source(stack, "gen", ["acct"], ddl) as own:
        yield own


def spec(tmp_path: Path, world: OwnSchema, *, write_generated: bool) -> Path:
    columns = ["name", "cents", "dollars"] if write_generated else ["name", "cents"]
    return world.spec(
        tmp_path / f"gen-{write_generated}.yaml",
        [world.rule("acct", "acct", columns, ignore=[] if write_generated else ["dollars"])],
    )


def target_db(stack: Stack, world: OwnSchema) -> str:
    return own_target(stack, world, ["acct"], table_ddl)


def rows(conninfo: str, world: OwnSchema) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            sql.SQL("SELECT id, name, cents, dollars FROM {} ORDER BY id").format(
                sql.Identifier(world.schema, "acct")
            )
        ).fetchall()


def test_identity_keys_are_written_as_the_source_has_them_and_generated_columns_are_computed(
    stack: Stack, world: OwnSchema, tmp_path: Path
) -> None:
    dbname = target_db(stack, world)
    env = world.env(dbname, spec(tmp_path, world, write_generated=False))
    writes = run_cli(
        {**env, "REPLICATOR_MAPPING": str(spec(tmp_path, world, write_generated=True))}, "mapping", "check"
    )
    assert writes.returncode == 1, writes.stderr
    assert (
        f"acct.dollars: target column 'dollars' of {world.schema}.acct is a generated column" in writes.stderr
    )
    checked = run_cli(env, "mapping", "check")
    assert checked.returncode == 0, checked.stderr
    # the scaffold of the source's schema is that spec: it checks clean, and the run below uses it
    made = run_cli(
        env,
        "mapping",
        "scaffold",
        "--topic-prefix",
        world.prefix,
        "--schemas",
        world.schema,
        "--signal-table",
        str(world.signal),
    )
    assert made.returncode == 0 and made.stderr == "", made.stderr
    (rule,) = yaml.safe_load(made.stdout)["tables"]
    assert rule["key"] == {"id": "id"} and rule["ignore_source_columns"] == ["dollars"]
    assert rule["columns"] == {"name": {"from": "name"}, "cents": {"from": "cents"}}
    scaffolded = tmp_path / "scaffold.yaml"
    scaffolded.write_text(made.stdout)
    env["REPLICATOR_MAPPING"] = str(scaffolded)
    checked = run_cli(env, "mapping", "check")
    assert checked.returncode == 0, checked.stderr
    with running_connector(stack, world) as flush:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            t = sql.Identifier(world.schema, "acct")
            conn.execute(sql.SQL("INSERT INTO {} (name, cents) VALUES ('three', 399)").format(t))
            conn.execute(sql.SQL("UPDATE {} SET cents = 175 WHERE name = 'one'").format(t))
            conn.execute(sql.SQL("DELETE FROM {} WHERE name = 'two'").format(t))
        flush("the changes")
        assert run_cli(env, "init").returncode == 0
        applied = run_cli(env, "run", "--stop-when-caught-up")
        assert applied.returncode == 0, applied.stderr[-3000:]
        expected = rows(stack.source_admin(), world)
        assert [(n, c) for _, n, c, _ in expected] == [("one", 175), ("three", 399)]
        assert rows(stack.target_admin(dbname), world) == expected  # ids as the source's, dollars computed
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            assert conn.execute("SELECT count(*) FROM replicator.error_record").fetchone() == (0,)
        verified = run_cli(env, "verify")
        assert verified.returncode == 0, verified.stdout
