"""Type coverage, table-driven, across the whole path: every PostgreSQL type a migration meets
goes source -> Debezium (JSON and Avro) -> Kafka -> decode -> identity map -> apply, and
back out equal (compared as PostgreSQL's own text of each cell); the same events through
`replicator shadow` give complete JSON Lines, summary and Markdown.

`EXACT` lists the types and values carried exactly (one row per value index). `LIMITS` lists
values that cannot be carried exactly: each is its own row and must become an error record
with the message given (MIGRATION-ARTIFACTS.md "Known limitations"), never a crash or a changed
value. `CHANGED` lists what Debezium itself changes before the replicator sees it
(`SNAPSHOT_CHANGED`: in its snapshot only; streamed, those land exactly).
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka import Consumer
from psycopg import sql

from replicator.config import load_settings
from replicator.connect.client import ConnectClient
from replicator.connect.configs import load_connector
from replicator.core.mapping.captured import capture_gap
from replicator.core.mapping.catalog import parse_or_opaque
from replicator.core.model import TableRef
from replicator.pg.catalog import read_catalog
from replicator.source.signal import write_fence
from tests.integration.pipeline import REPO, drop_slot, run_cli, wait_until
from tests.integration.stack import Stack

# column -> (type, values as SQL literals; value i goes into row i + 1)
EXACT: dict[str, tuple[str, list[str]]] = {
    "c_int2": ("smallint", ["-32768", "32767", "0"]),
    "c_int4": ("integer", ["-2147483648", "2147483647"]),
    "c_int8": ("bigint", ["-9223372036854775808", "9223372036854775807"]),
    "c_num": ("numeric(12,4)", ["-99999999.9999", "0.0001", "12.3400"]),
    "c_numu": ("numeric", ["123456789012345678901234567890.123456789", "-0.000000000001", "0"]),
    "c_real": ("real", ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "1.5", "3.4028235e38"]),
    "c_double": (
        "double precision",
        ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "0.1", "1.7976931348623157e308"],
    ),
    "c_money": ("money", ["12.34", "-0.01"]),
    "c_text": ("text", ["''", "'Ünïcödé 🙂'", "E'line\\nbreak\\ttab \\\\ \"q\"'"]),
    "c_varchar": ("varchar(5)", ["'abcde'", "'ééééé'"]),
    "c_char": ("char(4)", ["'ab'", "'abcd'"]),
    "c_bytea": ("bytea", ["'\\x00ff10'::bytea", "''::bytea"]),
    "c_bool": ("boolean", ["true", "false"]),
    "c_date": (
        "date",
        ["'0001-01-01'", "'9999-12-31'", "'infinity'", "'-infinity'", "'2024-02-29'", "'10000-01-01'"],
    ),
    "c_time": ("time", ["'00:00:00'", "'23:59:59.999999'", "'24:00:00'"]),
    "c_timetz": ("timetz", ["'12:00:00+00'"]),
    "c_ts": (
        "timestamp",
        [
            "'0001-01-01 00:00:00'",
            "'9999-12-31 23:59:59.999999'",
            "'infinity'",
            "'-infinity'",
            "'2024-03-31 02:30:00'",
        ],
    ),
    "c_tstz": (
        "timestamptz",
        [
            "'0001-01-01 00:00:00+00'",
            "'9999-12-31 23:59:59.999999+00'",
            "'infinity'",
            "'-infinity'",
            "'2024-10-27 02:30:00+02'",
            "'2024-10-27 02:30:00+01'",
        ],
    ),
    "c_interval": ("interval", ["'1 mon 2 days 03:04:05.678'", "'-1 year'", "'0'"]),
    "c_uuid": ("uuid", ["'6f9619ff-8b86-d011-b42d-00c04fc964ff'"]),
    "c_json": ("json", ['\'{"b":1,  "a":[1,2.50], "b":2}\'', "'null'"]),
    "c_jsonb": ("jsonb", ['\'{"n": 1.2300, "s": "é", "z": [null, true]}\'']),
    "c_inet": ("inet", ["'192.168.0.1/24'", "'::1'"]),
    "c_cidr": ("cidr", ["'10.0.0.0/8'"]),
    "c_macaddr": ("macaddr", ["'08:00:2b:01:02:03'"]),
    "c_int_arr": ("integer[]", ["'{1,NULL,3}'", "'{}'"]),
    "c_text_arr": ("text[]", ['\'{"a","NULL",NULL,"é,x"}\'']),
    "c_num_arr": ("numeric(6,2)[]", ["'{1.50,NULL}'"]),
    "c_enum": ("{schema}.mood", ["'happy'", "'sad'"]),
    "c_domain": ("{schema}.posint", ["5"]),
    "c_int4range": ("int4range", ["'[1,10)'", "'empty'"]),
    "c_tstzrange": ("tstzrange", ["'[2024-01-01 00:00:00+00,infinity)'"]),
    "c_hstore": ("hstore", ["'a=>1, \"b q\"=>NULL'"]),
    "c_citext": ("citext", ["'MiXeD'"]),
    "c_ltree": ("ltree", ["'top.mid.leaf'"]),
    "c_bit": ("bit(4)", ["B'0001'", "B'1010'"]),
    "c_bit1": ("bit(1)", ["B'1'", "B'0'"]),
    "c_xml": ("xml", ["'<a x=\"1\">t &amp; u</a>'"]),
    "c_tsvector": ("tsvector", ["'a fat:2 cat:3B'"]),
    "c_uuid_arr": ("uuid[]", ["'{6f9619ff-8b86-d011-b42d-00c04fc964ff,NULL}'"]),
    "c_jsonb_arr": ("jsonb[]", ['\'{"{\\"a\\": 1}",NULL}\'']),
    "c_int8range": ("int8range", ["'[1,9223372036854775807)'"]),
    "c_numrange": ("numrange", ["'(1.5,2.25]'"]),
    "c_daterange": ("daterange", ["'[2024-01-01,infinity)'"]),
    "c_tsrange": ("tsrange", ["'[2024-01-01 10:00:00,2024-01-02 00:00:00)'"]),
    "c_macaddr8": ("macaddr8", ["'08:00:2b:01:02:03:04:05'"]),
    "c_point": ("point", ["'(1.5,-2)'"]),
    # PostGIS: Debezium's {wkb, srid} struct
    "c_geometry": ("geometry(Point,4326)", ["'SRID=4326;POINT(1.5 2.5)'"]),
    "c_geometry_any": ("geometry", ["'LINESTRING(0 0,1 1)'", "'SRID=3857;POLYGON((0 0,1 0,1 1,0 0))'"]),
    "c_geography": ("geography", ["'SRID=4326;POINT(3 4)'"]),
    "c_time3": ("time(3)", ["'12:34:56.789'"]),
    "c_tstz3": ("timestamptz(3)", ["'2024-05-06 07:08:09.123+00'"]),
    "c_bool_arr": ("boolean[]", ["'{t,f,NULL}'"]),
    "c_date_arr": ("date[]", ["'{2024-01-01,infinity}'", "'{-infinity,NULL}'"]),
    "c_time_arr": ("time[]", ["'{00:00:00,01:02:03.5,NULL}'"]),
    "c_ts_arr": ("timestamp[]", ["'{-infinity,\"2024-01-01 00:00:00\"}'"]),
    "c_tstz_arr": ("timestamptz[]", ["'{\"2024-01-01 00:00:00+00\",infinity}'"]),
    "c_int8_arr": ("bigint[]", ["'{-9223372036854775808,NULL}'"]),
    "c_bytea_arr": ("bytea[]", ["ARRAY['\\x00ff'::bytea, NULL]"]),
    "c_inet_arr": ("inet[]", ["'{10.0.0.1,::1/128}'"]),
    "c_enum_arr": ("{schema}.mood[]", ["'{happy,sad}'"]),
    "c_timetz_arr": ("timetz[]", ["'{12:00:00+00}'"]),
    "c_json_arr": ("json[]", ['\'{"{\\"b\\":1, \\"a\\":2}"}\'']),
    "c_char_arr": ("char(3)[]", ["'{ab,abc}'"]),
    "c_qchar": ('"char"', ["'x'"]),
    "c_oid": ("oid", ["4294967295"]),
    "c_bignum": ("numeric(60,30)", ["'123456789012345678901234567890.123456789012345678901234567891'"]),
    "c_json_nul": ("json", ["'\"a\\u0000b\"'"]),
    "c_varchar_sp": ("varchar(10)", ["'trail   '"]),
    "c_tsv_arr": ("tsvector[]", ["ARRAY['a b'::tsvector]"]),
    "c_mac_arr": ("macaddr[]", ["'{08:00:2b:01:02:03}'"]),
    "c_citext_arr": ("citext[]", ["'{MiXeD,b}'"]),
    "c_range_arr": ("int4range[]", ["ARRAY['[1,2)'::int4range]"]),
    "c_num_nan": ("numeric(6,2)[]", ["'{1.5,NULL}'"]),
    "c_float_arr": ("double precision[]", ["'{1.5,NaN,Infinity}'"]),
    "c_uuid_arr2": ("uuid[]", ["'{}'"]),
}
# value that cannot be carried exactly -> the error record's message names why
LIMITS: dict[str, tuple[str, str, str]] = {
    "c_varbit": ("bit varying", "B'0001'", "leading zero bits"),
    "c_ts": ("timestamp", "'10000-01-01 00:00:00'", "outside years 1..9999"),
    "c_text_arr2": ("text[]", "'{{a,b},{c,NULL}}'", "multi-dimensional array"),
}
# what Debezium changes before the replicator sees it: (column, source literal, target text);
# each is a loss kind `mapping check` warns about (`core.mapping.losses`)
CHANGED: list[tuple[str, str, str | None]] = [
    ("c_timetz", "'10:00:00+02'", "08:00:00+00"),  # ZonedTime normalises to UTC
    ("c_timetz_arr", "'{10:00:00+02}'", "{08:00:00+00}"),  # in arrays too
    # decimal.handling.mode precise: NaN and the infinities arrive as null, and an unconstrained
    # numeric as its value without trailing zeros
    ("c_numu", "'NaN'", None),
    ("c_numu", "'Infinity'", None),
    ("c_numu", "'-Infinity'", None),
    ("c_num", "'NaN'", None),
    ("c_num_arr", "'{NaN,1.50}'", None),
    ("c_numu", "'449.70'", "449.7"),
    # the inner arrays of a multi-dimensional non-text array arrive as nulls, indistinguishable
    # from real null elements (`replicator verify` reports the mismatch)
    ("c_int_arr2", "'{{1,2},{3,NULL}}'", "{NULL,NULL}"),
    # a time[] element 24:00:00 arrives as 00:00:00 (a scalar time keeps it; `verify` reports it)
    ("c_time_arr", "'{24:00:00,01:02:03}'", "{00:00:00,01:02:03}"),
]
# what Debezium's snapshot changes (its JDBC read) while streaming (pgoutput) carries it exactly
SNAPSHOT_CHANGED = [
    ("c_date", "'0044-03-15 BC'", "0044-03-15"),  # a BC date is read as the same date AD
]
GENERATED = "c_gen integer GENERATED ALWAYS AS (c_int4 / 2) STORED"
# what Debezium does not carry as it is (`replicator.core.mapping.captured`): column -> (type,
# literal), in row 1 of the source, never read by the spec. Left out of every event:
LEFT_OUT: dict[str, tuple[str, str]] = {
    "c_box": ("box", "'((0,0),(1,1))'"),
    "c_circle": ("circle", "'<(0,0),1>'"),
    "c_line": ("line", "'{1,-1,0}'"),
    "c_lseg": ("lseg", "'[(0,0),(1,1)]'"),
    "c_path": ("path", "'[(0,0),(1,1),(2,0)]'"),
    "c_polygon": ("polygon", "'((0,0),(1,1),(1,0))'"),
    "c_pglsn": ("pg_lsn", "'16/B374D848'"),
    "c_tsquery": ("tsquery", "'fat & rat'"),
    "c_multirange": ("int4multirange", "'{[1,3),[5,7)}'"),
    "c_interval_arr": ("interval[]", "'{1 day}'"),
    "c_money_arr": ("money[]", "'{1.50}'"),
    "c_point_arr": ("point[]", "ARRAY['(1,2)'::point]"),
    "c_xml_arr": ("xml[]", "ARRAY['<a/>'::xml]"),
    # user-defined composite and range types, also under a domain and as array elements
    "c_composite": ("{schema}.addr", "'(\"Main St\",12345)'"),
    "c_composite_arr": ("{schema}.addr[]", "'{\"(a,1)\"}'"),
    "c_domain_composite": ("{schema}.addr_d", "'(x,2)'"),
    "c_user_range": ("{schema}.floatrange", "'[1.5,2.5)'"),
}
# ... null in every streamed event (the snapshot carries it):
STREAMED_NULL: dict[str, tuple[str, str]] = {"c_name": ("name", "'a_name'")}
NOT_CARRIED = {**LEFT_OUT, **STREAMED_NULL}


def columns(schema: str) -> dict[str, str]:
    out = {c: t.format(schema=schema) for c, (t, _) in EXACT.items()}
    out.update({c: t for c, (t, _, _) in LIMITS.items() if c not in out})
    out.update({"c_int_arr2": "integer[]"})
    return out


def ddl(schema: str) -> sql.Composed:
    s = sql.Identifier(schema)
    every = {**columns(schema), **{c: t.format(schema=schema) for c, (t, _) in NOT_CARRIED.items()}}
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in every.items()
    )
    return sql.SQL(
        "CREATE EXTENSION IF NOT EXISTS hstore; CREATE EXTENSION IF NOT EXISTS citext;"
        " CREATE EXTENSION IF NOT EXISTS ltree; CREATE EXTENSION IF NOT EXISTS postgis; CREATE SCHEMA {s};"
        " CREATE TYPE {s}.mood AS ENUM ('sad', 'happy');"
        " CREATE DOMAIN {s}.posint AS integer CHECK (VALUE > 0);"
        " CREATE TYPE {s}.addr AS (street text, zip integer); CREATE DOMAIN {s}.addr_d AS {s}.addr;"
        " CREATE TYPE {s}.floatrange AS RANGE (subtype = float8);"
        " CREATE TABLE {s}.t (id integer PRIMARY KEY, {cols}, " + GENERATED + ")"
    ).format(s=s, cols=cols)


@dataclass(frozen=True)
class Rows:
    exact: dict[int, dict[str, str]]  # row id -> column -> literal
    limits: dict[int, tuple[str, str]]  # row id -> (column, expected message part)
    changed: dict[int, tuple[str, str | None]]  # row id -> (column, expected target text)
    snapshot_changed: dict[int, tuple[str, str | None]]  # likewise, by the snapshot only


def rows() -> Rows:
    exact: dict[int, dict[str, str]] = {}
    for c, (_, values) in EXACT.items():
        for i, v in enumerate(values):
            exact.setdefault(i + 1, {})[c] = v
    exact[1].update({c: v for c, (_, v) in NOT_CARRIED.items()})
    n = max(exact) + 1
    limits = {}
    for j, (c, (_, v, why)) in enumerate(LIMITS.items()):
        exact[n + j] = {c: v}
        limits[n + j] = (c, why)
    n += len(LIMITS)
    changed: dict[int, tuple[str, str | None]] = {}
    for j, (c, v, text) in enumerate(CHANGED):
        exact[n + j] = {c: v}
        changed[n + j] = (c, text)
    n += len(CHANGED)
    snapshot_changed: dict[int, tuple[str, str | None]] = {}
    for j, (c, v, text) in enumerate(SNAPSHOT_CHANGED):
        exact[n + j] = {c: v}
        snapshot_changed[n + j] = (c, text)
    return Rows(exact, limits, changed, snapshot_changed)


@dataclass(frozen=True)
class World:
    schema: str
    signal: TableRef


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    schema = f"types{uuid.uuid4().hex[:6]}"
    s = sql.Identifier(schema)
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute(ddl(schema))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {s}.debezium_signal (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL,"
                " data varchar(2048));"
                " GRANT USAGE ON SCHEMA {s} TO debezium;"
                " GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO debezium;"
                " CREATE PUBLICATION {p} FOR TABLE {s}.t, {s}.debezium_signal"
            ).format(s=s, p=sql.Identifier(f"cdc_{schema}"))
        )
        for i, values in rows().exact.items():
            names = sql.SQL(", ").join(sql.Identifier(c) for c in ("id", *values))
            literals = sql.SQL(", ").join([sql.Literal(i), *(sql.SQL(v) for v in values.values())])
            conn.execute(sql.SQL("INSERT INTO {}.t ({}) VALUES ({})").format(s, names, literals))
    try:
        yield World(schema, TableRef(schema, "debezium_signal"))
    finally:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(f"cdc_{schema}")))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))


def connector_for(world: World, fmt: str, run: str) -> Any:
    if fmt == "avro":
        registry = os.environ.get("REPLICATOR_REGISTRY_URL")
        if not registry:
            pytest.fail(
                "REPLICATOR_REGISTRY_URL is not set: start the stack with the registry", pytrace=False
            )
        base = load_connector(
            REPO / "tests" / "integration" / "connectors-avro" / "avro-postgres.json",
            {**os.environ, "CDC_REGISTRY_NATIVE_URL": registry.split("/apis/")[0] + "/apis/registry/v2"},
        )
    else:
        base = load_connector(REPO / "connectors" / "demo-postgres.json", dict(os.environ))
    config = {
        **base.config,
        "topic.prefix": f"ty{fmt}{run}",
        "slot.name": f"cdc_ty{fmt}_{run}",
        "publication.name": f"cdc_{world.schema}",
        "table.include.list": f"{world.schema}.t,{world.signal}",
        "signal.data.collection": str(world.signal),
        "interval.handling.mode": "string",
        "hstore.handling.mode": "json",
    }
    return dataclasses.replace(base, name=f"test-types-{fmt}-{run}", config=config)


def spec_file(tmp_path: Path, world: World, prefix: str) -> Path:
    cols = {c: {"from": c} for c in columns(world.schema)}
    spec = {
        "version": 1,
        "topic_prefix": prefix,
        "capture": {"signal_table": str(world.signal)},
        "tables": [
            {
                "id": "types",
                "source": f"{world.schema}.t",
                "target": f"{world.schema}.t",
                "key": {"id": "id"},
                "delete": {"policy": "hard"},
                "truncate": {"policy": "ignore"},
                "ignore_source_columns": ["c_gen", *NOT_CARRIED],
                "columns": cols,
            }
        ],
    }
    path = tmp_path / "types.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def target_db(stack: Stack, world: World) -> str:
    dbname = f"t_types_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.target_admin("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER replicator").format(sql.Identifier(dbname)))
    s = sql.Identifier(world.schema)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(ddl(world.schema))
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {s} TO replicator, replicator_shadow;"
                " GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.t TO replicator;"
                " GRANT SELECT ON {s}.t TO replicator_shadow;"
                " GRANT CONNECT, TEMP ON DATABASE {d} TO replicator_shadow"
            ).format(s=s, d=sql.Identifier(dbname))
        )
    return dbname


def cells(conninfo: str, schema: str, ids: list[int]) -> dict[tuple[int, str], str | None]:
    names = ["c_gen", *columns(schema)]
    query = sql.SQL("SELECT id, {} FROM {}.t WHERE id = ANY(%s) ORDER BY id").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in names),
        sql.Identifier(schema),
    )
    with psycopg.connect(conninfo) as conn:
        return {
            (r[0], c): v
            for r in conn.execute(query, (ids,)).fetchall()
            for c, v in zip(names, r[1:], strict=True)
        }


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_every_type_round_trips_or_is_a_documented_error_record(
    stack: Stack, world: World, fmt: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    connector = connector_for(world, fmt, run)
    client = ConnectClient(stack.connect_url)
    client.apply(connector, wait_s=120)
    try:
        settings = load_settings(None)
        _, lsn = write_fence(settings.source, world.signal)  # the snapshot and the fence are in Kafka
        wait_until(lambda: client.flushed_lsn(connector.name) >= lsn, 180, "the connector to flush")
        dbname = target_db(stack, world)
        env = {
            **os.environ,
            "REPLICATOR_TARGET__DBNAME": dbname,
            "REPLICATOR_MAPPING": str(spec_file(tmp_path, world, connector.config["topic.prefix"])),
            "REPLICATOR_CONNECTOR": connector.name,
            "REPLICATOR_VALUE_FORMAT": fmt,
            "REPLICATOR_BATCH__MAX_MS": "200",
        }
        init = run_cli(env, "init", "--shadow-role", "replicator_shadow")
        assert init.returncode == 0, init.stderr
        expected = rows()

        # shadow first, on the empty target: every row is a predicted insert or an error diff
        shadow_env = {
            **env,
            "REPLICATOR_KAFKA__GROUP_ID": f"types-shadow-{run}",
            "REPLICATOR_TARGET__USER": "replicator_shadow",
            "REPLICATOR_TARGET__PASSWORD": "shadow",
        }
        done = run_cli(shadow_env, "shadow", "--stop-when-caught-up", "--report-dir", str(tmp_path), "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout[done.stdout.index("{") :])
        report = Path(summary["report"])
        diffs = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
        assert not list(tmp_path.glob("*.partial"))
        kinds = sorted(d["kind"] for d in diffs)
        assert kinds.count("error") == len(expected.limits), kinds
        assert len(diffs) == len(expected.exact), kinds
        review = report.with_suffix(".md")
        assert review.exists() and report.with_suffix(".summary.json").exists()
        assert "Error records the live run would write" in review.read_text(encoding="utf-8")

        # the live apply
        live_env = {**env, "REPLICATOR_KAFKA__GROUP_ID": f"types-{run}"}
        applied = run_cli(live_env, "run", "--stop-when-caught-up")
        assert applied.returncode == 0, applied.stderr[-3000:]
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            records = conn.execute(
                "SELECT rule_id, message FROM replicator.error_record WHERE kind = 'error' ORDER BY id"
            ).fetchall()
            (landed,) = conn.execute(
                sql.SQL("SELECT array_agg(id ORDER BY id) FROM {}.t").format(sql.Identifier(world.schema))
            ).fetchone() or ([],)
        # one error record per limitation, naming the column and why; those rows only are absent
        assert len(records) == len(expected.limits), records
        for column, why in expected.limits.values():
            assert any((column in m or r == f"types.{column}") and why in m for r, m in records), (
                column,
                records,
            )
        assert landed == [i for i in expected.exact if i not in expected.limits]

        ids = [i for i in expected.exact if i not in expected.limits]
        source = cells(stack.source_admin(), world.schema, ids)
        target = cells(stack.target_admin(dbname), world.schema, ids)
        for i, (column, text) in (expected.changed | expected.snapshot_changed).items():
            assert target[(i, column)] == text
            source[(i, column)] = text
        wrong = {k: (v, target.get(k)) for k, v in source.items() if target.get(k) != v}
        assert wrong == {}, wrong
    finally:
        client.delete(connector.name)
        drop_slot(stack, connector.config["slot.name"])


STREAMED = 10_000  # streamed copies of the exact rows get ids STREAMED + i


def after_images(stack: Stack, topic: str, ids: set[int]) -> dict[int, dict[str, Any]]:
    """The `after` row of the first change event of each of `ids` in `topic` (JSON with schemas)."""
    consumer = Consumer(
        {
            "bootstrap.servers": stack.kafka,
            "group.id": f"types-read-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    found: dict[int, dict[str, Any]] = {}
    try:
        consumer.subscribe([topic])

        def read() -> bool:
            for message in consumer.consume(500, timeout=1.0):
                if message.error() is None and message.value():
                    row = json.loads(message.value() or b"{}")["payload"]["after"]
                    if row and row["id"] in ids:
                        found.setdefault(row["id"], row)
            return set(found) == ids

        wait_until(read, 60, f"the events of rows {sorted(ids)} in {topic}", every_s=0)
    finally:
        consumer.close()
    return found


def test_streamed_values_round_trip_like_snapshot_ones(stack: Stack, world: World, tmp_path: Path) -> None:
    """The exact rows inserted again while the connector streams (pgoutput, not the snapshot's
    JDBC read): Debezium encodes some values differently there (date 'infinity' arrives as
    -2147472692 days, not -622191234), and every one must still land equal."""
    run = uuid.uuid4().hex[:6]
    connector = connector_for(world, "json", run)
    client = ConnectClient(stack.connect_url)
    client.apply(connector, wait_s=120)
    expected = rows()
    ids = [i for i in expected.exact if i not in expected.limits]
    s = sql.Identifier(world.schema)
    try:
        settings = load_settings(None)
        _, lsn = write_fence(settings.source, world.signal)
        wait_until(lambda: client.flushed_lsn(connector.name) >= lsn, 180, "the snapshot to flush")
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            for i in ids:
                values = expected.exact[i]
                names = sql.SQL(", ").join(sql.Identifier(c) for c in ("id", *values))
                literals = sql.SQL(", ").join(
                    [sql.Literal(STREAMED + i), *(sql.SQL(v) for v in values.values())]
                )
                conn.execute(sql.SQL("INSERT INTO {}.t ({}) VALUES ({})").format(s, names, literals))
        _, lsn = write_fence(settings.source, world.signal)
        wait_until(lambda: client.flushed_lsn(connector.name) >= lsn, 180, "the streamed rows to flush")
        dbname = target_db(stack, world)
        env = {
            **os.environ,
            "REPLICATOR_TARGET__DBNAME": dbname,
            "REPLICATOR_MAPPING": str(spec_file(tmp_path, world, connector.config["topic.prefix"])),
            "REPLICATOR_CONNECTOR": connector.name,
            "REPLICATOR_KAFKA__GROUP_ID": f"types-streamed-{run}",
            "REPLICATOR_BATCH__MAX_MS": "200",
        }
        init = run_cli(env, "init")
        assert init.returncode == 0, init.stderr
        applied = run_cli(env, "run", "--stop-when-caught-up")
        assert applied.returncode == 0, applied.stderr[-3000:]
        streamed = [STREAMED + i for i in ids]
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            records = conn.execute(
                "SELECT rule_id, message FROM replicator.error_record WHERE kind = 'error' ORDER BY id"
            ).fetchall()
        # the snapshot's rows of LIMITS only: no streamed row is an error record
        assert len(records) == len(expected.limits), records
        source = cells(stack.source_admin(), world.schema, streamed)
        target = cells(stack.target_admin(dbname), world.schema, streamed)
        for i, (column, text) in expected.changed.items():
            if STREAMED + i in streamed:
                source[(STREAMED + i, column)] = text
        wrong = {k: (v, target.get(k)) for k, v in source.items() if target.get(k) != v}
        assert wrong == {}, wrong
        assert {k[0] for k in target} == set(streamed)

        # What `mapping check` refuses and `scaffold` leaves out is what Debezium does here.
        after = after_images(stack, f"{connector.config['topic.prefix']}.{world.schema}.t", {1, STREAMED + 1})
        with psycopg.connect(stack.source_admin()) as conn:
            live = read_catalog(conn, [world.schema]).table(TableRef(world.schema, "t"))
        assert live is not None
        for col in live.columns:  # as the source's catalog says (a spelling cannot tell a composite)
            assert (capture_gap(col.type) is not None) == (col.name in NOT_CARRIED), col
        assert not set(LEFT_OUT) & (set(after[1]) | set(after[STREAMED + 1]))
        assert after[1]["c_name"] == "a_name" and after[STREAMED + 1]["c_name"] is None
        exact_types = [parse_or_opaque(t.format(schema="s")) for t, _ in EXACT.values() if '"' not in t]
        assert all(capture_gap(t) is None for t in exact_types)
        reading = yaml.safe_load(spec_file(tmp_path, world, "x").read_text())
        reading["tables"][0]["ignore_source_columns"] = ["c_gen"]
        reading["tables"][0]["columns"].update({c: {"from": c} for c in ("c_box", "c_name")})
        bad = tmp_path / "reads-not-carried.yaml"
        bad.write_text(yaml.safe_dump(reading))
        checked = run_cli(env, "mapping", "check", str(bad))
        assert checked.returncode == 1, checked.stdout + checked.stderr
        out = checked.stdout + checked.stderr
        assert "'c_box'" in out and "leaves box columns out of its change events" in out, out
        assert "'c_name'" in out and "carry null for name columns" in out, out
    finally:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            conn.execute(sql.SQL("DELETE FROM {}.t WHERE id >= %s").format(s), (STREAMED,))
        client.delete(connector.name)
        drop_slot(stack, connector.config["slot.name"])
