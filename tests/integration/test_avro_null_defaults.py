"""A NULL in a nullable column with a DEFAULT, through the Avro converter, is never applied as
the default.

The Apicurio Avro converter writes such a NULL as the column's DEFAULT (KAFKA-8713: it reads
the row with `Struct.get`; it has no `ignore.default.for.nullables`). The replicator cannot tell
that value from a real one, so an event holding it becomes an error record naming the column and
the fix; other values of the column land. With REPLICATOR_AVRO_TRUST_NULL_DEFAULTS=true, `errors
retry` takes the value as written (the operator's word that the column holds no NULL).

Own source schema, publication, slot and Avro connector per run (removed at the end).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from replicator.connect.client import ConnectClient
from replicator.connect.configs import load_connector
from tests.integration.pipeline import CONTROL, daemon, drop_slot, empty_target, env_for, run_cli, wait_until
from tests.integration.stack import Stack

CONNECTOR = Path(__file__).parent / "connectors-avro" / "avro-postgres.json"
SPEC = """
version: 1
topic_prefix: {prefix}
tables:
  - id: item
    source: {schema}.item
    target: {schema}.item
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: error}}
    columns: {{id: {{from: id}}, status: {{from: status}}, note: {{from: note}}}}
"""


@dataclasses.dataclass(frozen=True)
class Source:
    schema: str
    prefix: str


@pytest.fixture
def source(stack: Stack) -> Iterator[Source]:
    registry = os.environ.get("REPLICATOR_REGISTRY_URL")
    if not registry:
        pytest.fail("REPLICATOR_REGISTRY_URL is not set: export `deploy/local/stack env`", pytrace=False)
    run = uuid.uuid4().hex[:6]
    schema, slot, publication = f"avrodef_{run}", f"cdc_avrodef_{run}", f"cdc_avrodef_{run}"
    s = sql.Identifier(schema)
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.item (id int PRIMARY KEY, status text DEFAULT 'open', note text)"
            ).format(s)
        )
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {0} TO debezium; GRANT SELECT ON {0}.item TO debezium").format(s)
        )
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}.item").format(sql.Identifier(publication), s)
        )
        # in the snapshot: a NULL (the converter writes 'open') and a real 'open'
        conn.execute(sql.SQL("INSERT INTO {}.item VALUES (1, NULL, 'snap'), (2, 'open', 'snap')").format(s))
    connector = load_connector(
        CONNECTOR,
        {
            **os.environ,
            "CDC_REGISTRY_NATIVE_URL": registry.split("/apis/")[0] + "/apis/registry/v2",
            "CDC_AVRO_CONNECTOR": f"test-avrodef-{run}",
            "CDC_AVRO_PREFIX": schema,
            "CDC_AVRO_SLOT": slot,
            "CDC_PUBLICATION": publication,
        },
    )
    config = {k: v for k, v in connector.config.items() if k != "signal.data.collection"}
    connector = dataclasses.replace(connector, config={**config, "table.include.list": f"{schema}.item"})
    client = ConnectClient(stack.connect_url)
    client.apply(connector, wait_s=120)
    try:
        yield Source(schema, schema)
    finally:
        client.delete(connector.name)
        drop_slot(stack, slot)
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication)))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))


def test_a_value_the_avro_converter_may_have_made_from_a_null_is_an_error_record_not_the_default(
    stack: Stack, source: Source, tmp_path: Path
) -> None:
    dbname = f"t_avrodef_{uuid.uuid4().hex[:6]}"
    empty_target(stack, dbname)
    s = sql.Identifier(source.schema)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION replicator").format(s))
        conn.execute(sql.SQL("CREATE TABLE {}.item (id int PRIMARY KEY, status text, note text)").format(s))
        conn.execute(sql.SQL("ALTER TABLE {}.item OWNER TO replicator").format(s))
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(prefix=source.prefix, schema=source.schema))
    group = f"avrodef-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group, REPLICATOR_MAPPING=str(spec), REPLICATOR_VALUE_FORMAT="avro")
    init = run_cli(env, "init")
    assert init.returncode == 0, init.stderr

    def target() -> dict[int, tuple[str | None, str]]:
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            rows = conn.execute(sql.SQL("SELECT id, status, note FROM {}.item").format(s)).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def open_records() -> list[tuple[str, str]]:
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            return conn.execute(
                sql.SQL(
                    "SELECT key, message FROM {}.error_record WHERE resolved_at IS NULL ORDER BY id"
                ).format(sql.Identifier(CONTROL))
            ).fetchall()

    with daemon(env, tmp_path / "d.log"):
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:  # streamed
            conn.execute(
                sql.SQL("INSERT INTO {}.item VALUES (3, NULL, 'stream'), (4, 'shipped', 'stream')").format(s)
            )
            conn.execute(sql.SQL("UPDATE {}.item SET status = NULL, note = 'nulled' WHERE id = 4").format(s))
            conn.execute(sql.SQL("INSERT INTO {}.item VALUES (5, 'paid', 'last')").format(s))
        wait_until(lambda: 5 in target(), 180, "the last row applied")
    records = open_records()
    assert len(records) == 4, records  # ids 1, 2, 3 and id 4's update: each 'open', maybe a NULL
    assert all("column status of" in m and "also writes for a NULL" in m for _, m in records), records
    assert target() == {4: ("shipped", "stream"), 5: ("paid", "last")}  # nothing written as 'open'

    again = run_cli(env, "errors", "retry", "--all")  # the same events, still ambiguous: kept open
    assert "closed 0 " in again.stdout and "still failing 4" in again.stdout, again.stdout
    assert open_records() == records

    trusted = run_cli({**env, "REPLICATOR_AVRO_TRUST_NULL_DEFAULTS": "true"}, "errors", "retry", "--all")
    assert trusted.returncode == 0, trusted.stderr
    assert open_records() == []
    assert target() == {
        1: ("open", "snap"),
        2: ("open", "snap"),
        3: ("open", "stream"),
        4: ("open", "nulled"),
        5: ("paid", "last"),
    }
