"""The mapping spec against live catalogs (`replicator mapping check`) and a real database.

Proves: the demo spec checks clean, with one warning per kind of documented loss among the
columns it reads; planted mistakes (a misspelled column, a
narrowing without a policy, a key that is not unique in the target) give the
expected one-line problems with file:line and rule id; `replicator run`
refuses a spec that does not check; hostile identifiers (quotes, semicolons,
MixedCase, reserved words, `%s`) are quoted correctly by the compiled
statements when the writer runs them against PostgreSQL, and names over 63
bytes that PostgreSQL would truncate into a collision are rejected.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from replicator.config import Settings
from replicator.core.intents import prepare
from replicator.core.mapping import SpecError, check, compile_spec, load_spec_text
from replicator.core.mapping.losses import loss_warnings
from replicator.core.model import Batch, ChangeEvent, Op, SourcePosition, TableRef
from replicator.pg.catalog import read_catalog
from replicator.run.mapping import scan_losses
from replicator.target import control
from tests.events import change
from tests.integration.pipeline import SPEC, env_for, fresh_target, live_writer, run_cli
from tests.integration.stack import Stack, one_row


def planted(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = SPEC.read_text()
    assert old in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new))
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_demo_spec_checks_clean_against_live_catalogs(stack: Stack) -> None:
    done = run_cli(env_for(stack, "shop_target", "check"), "mapping", "check", str(SPEC))
    assert done.returncode == 0, done.stderr
    assert "0 errors" in done.stdout


def test_documented_losses_are_one_warning_per_kind_and_leave_the_exit_code(stack: Stack) -> None:
    """The demo reads three numeric columns, two timestamps and a text[]: `mapping check` says so
    once per kind of loss (Known limitations), naming the columns and the fix, in its text and in
    its --json output, and still exits 0 (`core.mapping.losses`)."""
    env = env_for(stack, "shop_target", "check")
    done = run_cli(env, "mapping", "check", str(SPEC))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if ": loss." in line]
    assert [line.split(": loss.")[1].split(":")[0] for line in lines] == [
        "numeric-nan",
        "timestamp-range",
        "multi-dimensional-array",
    ], done.stdout
    nan, stamps, arrays = lines
    assert nan.startswith(
        f"warning: {SPEC}:{line_of(SPEC, 'price_cents:')}: loss.numeric-nan: numeric-nan (3 columns:"
        " shop.products.price, shop.orders.total, shop.order_lines.unit_price): numeric 'NaN'"
    ), nan
    assert "fix: count them on the source first (SELECT count(*) FROM t WHERE c = 'NaN'" in nan
    assert "(2 columns: shop.customers.created_at, shop.orders.placed_at)" in stamps
    assert "(1 column: shop.customers.tags)" in arrays and "array_ndims(c) > 1" in arrays
    as_json = run_cli(env, "mapping", "check", "--json", str(SPEC))
    assert as_json.returncode == 0, as_json.stderr
    found = {p["rule_id"]: p for p in json.loads(as_json.stdout) if p["rule_id"].startswith("loss.")}
    assert sorted(found) == ["loss.multi-dimensional-array", "loss.numeric-nan", "loss.timestamp-range"]
    assert {p["severity"] for p in found.values()} == {"warning"}
    assert found["loss.numeric-nan"]["message"] in nan and found["loss.numeric-nan"]["fix"] in nan


def test_losses_are_judged_on_the_live_catalog_types(stack: Stack) -> None:
    """Each kind from the types the catalog reader gives: a domain by its base type, timetz,
    time[], date, unconstrained numeric; money and time carry no warning."""
    dbname = fresh_target("losses")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA l; CREATE DOMAIN l.amount AS numeric(10,2);"
            " CREATE TABLE l.t (id bigint PRIMARY KEY, a l.amount, r numeric, d date, tz timetz,"
            "   ts timestamp(3), times time[], m money, t time)"
        )
        catalog = read_catalog(conn, ["l"])
    spec = load_spec_text(
        "version: 1\ntopic_prefix: l\ntables:\n  - id: t\n    source: l.t\n    target: l.t\n"
        "    key: {id: id}\n    delete: {policy: hard}\n    truncate: {policy: ignore}\n    columns:\n"
        + "".join(f"      {c}: {{from: {c}}}\n" for c in ("a", "r", "d", "tz", "ts", "times", "m", "t")),
        "losses.yaml",
    )
    assert [p.message.split(": ")[0] for p in loss_warnings(spec, catalog, catalog)] == [
        "numeric-nan (2 columns",
        "numeric-trailing-zeros (1 column",
        "snapshot-bc-date (1 column",
        "timestamp-range (1 column",
        "timetz-offset (1 column",
        "time-array-24h (1 column",
        "multi-dimensional-array (1 column",
    ]


def test_scan_counts_the_source_rows_holding_each_kind_of_loss(stack: Stack) -> None:
    """`mapping check --scan` (`run.mapping.scan_losses`) counts, per column the spec reads, the rows
    holding a value of each kind; ±infinity dates and timestamps (carried exactly) are not counted."""
    dbname = f"scan_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        with psycopg.connect(stack.source_admin(dbname), autocommit=True) as conn:
            conn.execute(
                "CREATE SCHEMA l; CREATE TABLE l.t (id int PRIMARY KEY, r numeric, n numeric(6,2),"
                " d date, ts timestamp, tz timetz, times time[], na numeric[]);"
                "INSERT INTO l.t VALUES"
                " (1, 'NaN', 1.50, '0044-03-15 BC', '0010-01-01 BC', '10:00+02', '{24:00:00}', '{NaN,1}'),"
                " (2, 1.50, 'NaN', '-infinity', 'infinity', '10:00+00', '{{01:00},{02:00}}', '{1}'),"
                " (3, 'Infinity', 2, '2020-01-01', '10000-01-01', NULL, '{10:00}', NULL)"
            )
            catalog = read_catalog(conn, ["l"])
        columns = ("r", "n", "d", "ts", "tz", "times", "na")
        spec = load_spec_text(
            "version: 1\ntopic_prefix: l\ntables:\n  - id: t\n    source: l.t\n    target: l.t\n"
            "    key: {id: id}\n    delete: {policy: hard}\n    truncate: {policy: ignore}\n    columns:\n"
            + "".join(f"      {c}: {{from: {c}}}\n" for c in columns),
            "scan.yaml",
        )
        settings = Settings.model_validate(
            {
                "source": {
                    "host": stack.source_host,
                    "port": stack.source_port,
                    "dbname": dbname,
                    "user": stack.admin_user,
                    "password": stack.admin_password,
                }
            }
        )
        said: list[str] = []
        counts = scan_losses(settings, spec, catalog, catalog, said.append)
    finally:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(dbname)))
    assert said == ["scanning l.t (10 column checks)"]
    assert counts == {
        ("numeric-nan", "l.t.r"): 2,  # NaN, Infinity
        ("numeric-trailing-zeros", "l.t.r"): 1,  # 1.50
        ("numeric-nan", "l.t.n"): 1,  # numeric(6,2): no trailing-zeros loss (the scale is declared)
        ("snapshot-bc-date", "l.t.d"): 1,  # 44 BC, not -infinity
        ("timestamp-range", "l.t.ts"): 2,  # 10 BC and year 10000, not infinity
        ("timetz-offset", "l.t.tz"): 1,  # +02, not +00
        ("time-array-24h", "l.t.times"): 1,
        ("multi-dimensional-array", "l.t.times"): 1,
        ("numeric-nan", "l.t.na"): 1,
        ("multi-dimensional-array", "l.t.na"): 0,
    }


def test_a_wrong_topic_prefix_is_one_warning_counting_the_topics(stack: Stack, tmp_path: Path) -> None:
    """Every topic missing (a wrong prefix, or before `connectors apply`) is one warning line with
    the count, the names and the fix (trial 13: one line per table, 119 of them)."""
    wrong = planted(tmp_path, "prefix", "topic_prefix: demo", "topic_prefix: dmeo")
    done = run_cli(env_for(stack, "shop_target", "check"), "mapping", "check", str(wrong))
    assert done.returncode == 0, done.stderr  # a topic may not exist yet: a warning, not an error
    warnings = [line for line in done.stdout.splitlines() if "not exist in Kafka" in line]
    line = line_of(wrong, "topic_prefix: dmeo")
    assert warnings == [
        f"warning: {wrong}:{line}: topics: 4 of the 4 mapped topics do not exist in Kafka at {stack.kafka}:"
        " dmeo.shop.customers, dmeo.shop.products, dmeo.shop.orders, dmeo.shop.order_lines; fix: expected"
        " before `replicator connectors apply` (the connector creates a table's topic with its first event;"
        " an empty table has none): check again once the connector runs; otherwise make topic_prefix (or"
        " the table's topic:) match the connector's topic.prefix (`replicator connectors status`)"
    ], done.stdout
    clean = run_cli(env_for(stack, "shop_target", "check"), "mapping", "check", str(SPEC))
    assert "not exist in Kafka" not in clean.stdout, clean.stdout


def test_planted_mistakes_give_the_expected_lines(stack: Stack, tmp_path: Path) -> None:
    env = env_for(stack, "shop_target", "check")
    typo = planted(tmp_path, "typo", "from: full_name, sep", "from: full_nmae, sep")
    narrow = planted(tmp_path, "narrow", ', cast: {type: "varchar(120)", on_narrowing: truncate}', "")
    key = planted(tmp_path, "key", "key: {sku: sku}", "key: {title: name}")
    cases = [
        (typo, "full_nmae", "customer.first_name", "source column 'full_nmae' does not exist"),
        (narrow, "title: {from: name", "product.title", "may not fit varchar(120) (narrowing)"),
        (key, "key: {title: name}", "product.key", "is neither the primary key nor a unique constraint"),
    ]
    for path, needle, rule, message in cases:
        done = run_cli(env, "mapping", "check", str(path))
        assert done.returncode == 1
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        expected_prefix = f"error: {path}:{line_of(path, needle)}: {rule}: "
        assert any(e.startswith(expected_prefix) and message in e and "fix:" in e for e in errors), (
            done.stderr
        )


def test_daemon_refuses_a_spec_that_does_not_check(stack: Stack, tmp_path: Path) -> None:
    bad = planted(tmp_path, "typo", "from: full_name, sep", "from: full_nmae, sep")
    done = run_cli(
        env_for(stack, "shop_target", f"refuse-{uuid.uuid4().hex[:6]}", REPLICATOR_MAPPING=str(bad)),
        "run",
        "--stop-when-caught-up",
        timeout=120,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "does not check" in last and "full_nmae" in last


def test_domain_columns_are_judged_by_their_base_type(stack: Stack) -> None:
    """Trial 4: `mapping check` refused every column of a DOMAIN type (and suggested a value_map).
    A domain is its base type with a CHECK; the CHECK refuses bad rows when they are written."""
    dbname = fresh_target("domain")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA dom; CREATE DOMAIN dom.email AS text CHECK (VALUE LIKE '%@%');"
            " CREATE DOMAIN dom.cents AS numeric(10,2) NOT NULL;"
            " CREATE TABLE dom.src (id bigint PRIMARY KEY, mail text, amount numeric(10,2) NOT NULL);"
            " CREATE TABLE dom.dst (id bigint PRIMARY KEY, mail dom.email, amount dom.cents)"
        )
        catalog = read_catalog(conn, ["dom"])
    dst = catalog.table(TableRef("dom", "dst"))
    assert dst is not None
    assert [(c.name, str(c.type), c.nullable) for c in dst.columns] == [
        ("id", "bigint", False),
        ("mail", "text", True),
        ("amount", "numeric(10,2)", False),  # the domain's NOT NULL
    ]
    spec = load_spec_text(
        "version: 1\ntopic_prefix: d\ntables:\n  - id: t\n    source: dom.src\n    target: dom.dst\n"
        "    key: {id: id}\n    delete: {policy: hard}\n    truncate: {policy: ignore}\n"
        "    columns: {mail: {from: mail}, amount: {from: amount}}\n",
        "domain.yaml",
    )
    assert [str(p) for p in check(spec, catalog, catalog) if p.severity == "error"] == []


def test_deferrable_uniques_and_cascades_are_read_from_the_live_catalog(stack: Stack) -> None:
    """Trial 10: a source swapping unique slugs in one statement (DEFERRABLE) into a NOT
    DEFERRABLE target unique, and an ON DELETE CASCADE between mapped target tables on the slug
    (not the key): the live catalog carries both, and `check` warns about each."""
    dbname = fresh_target("deferuq")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA s; CREATE SCHEMA t;"
            " CREATE TABLE s.boards (id bigint PRIMARY KEY, slug text NOT NULL,"
            "   CONSTRAINT s_slug UNIQUE (slug) DEFERRABLE INITIALLY IMMEDIATE);"
            " CREATE TABLE s.cards (id bigint PRIMARY KEY,"
            "   board_id bigint NOT NULL REFERENCES s.boards, board_slug text);"
            " CREATE TABLE t.boards (id bigint PRIMARY KEY, slug text NOT NULL,"
            "   CONSTRAINT t_slug UNIQUE (slug));"
            " CREATE TABLE t.cards (id bigint PRIMARY KEY,"
            "   board_id bigint NOT NULL REFERENCES t.boards ON DELETE CASCADE,"
            "   board_slug text REFERENCES t.boards (slug) ON DELETE CASCADE)"
        )
        catalog = read_catalog(conn, ["s", "t"])
    src, dst = catalog.table(TableRef("s", "boards")), catalog.table(TableRef("t", "boards"))
    assert src is not None and dst is not None
    assert (src.unique, src.deferrable_unique) == ((("slug",),), (("slug",),))
    assert (dst.unique, dst.deferrable_unique) == ((("slug",),), ())
    spec = load_spec_text(
        "version: 1\ntopic_prefix: d\ntables:\n"
        "  - id: board\n    source: s.boards\n    target: t.boards\n    key: {id: id}\n"
        "    delete: {policy: hard}\n    truncate: {policy: ignore}\n    columns: {slug: {from: slug}}\n"
        "  - id: card\n    source: s.cards\n    target: t.cards\n    key: {id: id}\n"
        "    delete: {policy: hard}\n    truncate: {policy: ignore}\n"
        "    columns: {board_id: {from: board_id}, board_slug: {from: board_slug}}\n",
        "saas.yaml",
    )
    warned = sorted(
        (p.rule_id, p.message.split(":")[0]) for p in check(spec, catalog, catalog) if p.severity == "warning"
    )
    assert warned == [
        (
            "board",
            "the unique constraint on (slug) of t.boards is NOT DEFERRABLE,"
            " while the source's on (slug) is DEFERRABLE",
        ),
        # the key-referencing cascade is not: the writer holds its deletes (test_cascade_deletes.py)
        (
            "card",
            "foreign key cards_board_slug_fkey of t.cards is ON DELETE CASCADE from t.boards"
            " (slug, not its key)",
        ),
    ]


HOSTILE_SCHEMA = 'Weird "Schema"'
HOSTILE_TABLE = "select; DROP TABLE x;--"
HOSTILE_SPEC = """
version: 1
topic_prefix: hostile
defaults: {unmapped_source_columns: ignore}
tables:
  - id: hostile
    source: {schema: src, table: t}
    target: {schema: 'Weird "Schema"', table: 'select; DROP TABLE x;--'}
    key: {MixedCase: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns:
      MixedCase: {from: id}
      '%s': {from: name}
      'a"b': {const: quoted}
      order: {from: note}
"""


def test_hostile_identifiers_are_quoted_against_a_real_database(stack: Stack) -> None:
    dbname = fresh_target("hostile")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(HOSTILE_SCHEMA)))
        conn.execute(
            sql.SQL(
                'CREATE TABLE {} ("MixedCase" bigint PRIMARY KEY, "%s" text, "a""b" text, "order" text)'
            ).format(sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE))
        )
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {0} TO replicator; GRANT ALL ON ALL TABLES IN SCHEMA {0} TO replicator"
            ).format(sql.Identifier(HOSTILE_SCHEMA))
        )
        plan = compile_spec(
            load_spec_text(HOSTILE_SPEC, "hostile.yaml"), read_catalog(conn, [HOSTILE_SCHEMA])
        )
    writer = live_writer(stack, dbname, plan, "hostile", "run-hostile")
    topic = "hostile.src.t"

    def event(offset: int, op: Op, row: dict[str, Any]) -> ChangeEvent:
        return change(
            topic,
            op,
            "src.t",
            offset=offset,
            position=SourcePosition(1, 100 + offset),
            key={"id": row["id"]},
            before=row if op is Op.DELETE else None,
            after=None if op is Op.DELETE else row,
        )

    rows = [
        {"id": 1, "name": "'; DROP TABLE x; --", "note": "%s %(x)s {}"},
        {"id": 2, "name": "b", "note": None},
    ]
    result = writer.apply(
        prepare(
            Batch(events=[event(i, Op.CREATE, r) for i, r in enumerate(rows)], next_offsets={(topic, 0): 2}),
            plan,
        )
    )
    writer.apply(prepare(Batch(events=[event(2, Op.DELETE, rows[1])], next_offsets={(topic, 0): 3}), plan))
    writer.close()
    assert not result.errors
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        got = conn.execute(
            sql.SQL('SELECT "MixedCase", "%s", "a""b", "order" FROM {} ORDER BY 1').format(
                sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE)
            )
        ).fetchall()
        (stored,) = one_row(
            conn.execute(
                sql.SQL("SELECT next_offset FROM {} WHERE group_id = 'hostile'").format(
                    control.table("replicator", "checkpoint")
                )
            )
        )
    assert got == [(1, "'; DROP TABLE x; --", "quoted", "%s %(x)s {}")]
    assert stored == 3


def test_bad_rows_of_a_hostile_table_are_isolated_server_side(stack: Stack) -> None:
    """The row-by-row loop that isolates bad rows is a PL/pgSQL function wrapping the prebuilt
    statement: with hostile identifiers (quotes, `;`, `%s`, `$`-quotes) it is still quoted right."""
    dbname = fresh_target("hostile_loop")
    table = sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(HOSTILE_SCHEMA)))
        conn.execute(
            sql.SQL(
                'CREATE TABLE {} ("MixedCase" bigint PRIMARY KEY, "%s" text, "a""b" text,'
                ' "order" text CHECK ("order" <> \'$replicator$ boom\'))'
            ).format(table)
        )
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {0} TO replicator; GRANT ALL ON ALL TABLES IN SCHEMA {0} TO replicator"
            ).format(sql.Identifier(HOSTILE_SCHEMA))
        )
        plan = compile_spec(
            load_spec_text(HOSTILE_SPEC, "hostile.yaml"), read_catalog(conn, [HOSTILE_SCHEMA])
        )
    writer = live_writer(stack, dbname, plan, "hostile", "run-hostile-loop")
    topic = "hostile.src.t"
    events = [
        change(
            topic,
            Op.CREATE,
            "src.t",
            offset=i,
            position=SourcePosition(1, 100 + i),
            key={"id": i},
            after={"id": i, "name": f"n{i}", "note": "$replicator$ boom" if i % 3 == 0 else "ok"},
        )
        for i in range(30)
    ]
    result = writer.apply(prepare(Batch(events=events, next_offsets={(topic, 0): 30}), plan))
    writer.close()
    assert sorted(int(str(f.key).strip("[]")) for f in result.errors) == list(range(0, 30, 3))
    assert {f.sqlstate for f in result.errors} == {"23514"}
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        ids = [r[0] for r in conn.execute(sql.SQL('SELECT "MixedCase" FROM {} ORDER BY 1').format(table))]
    assert ids == [i for i in range(30) if i % 3]


def test_names_that_postgres_would_truncate_into_a_collision_are_rejected() -> None:
    long_a, long_b = "c" * 63 + "_a", "c" * 63 + "_b"  # equal in their first 63 bytes
    spec = HOSTILE_SPEC.replace(
        "      order: {from: note}", f"      {long_a}: {{from: note}}\n      {long_b}: {{from: note}}"
    )
    with pytest.raises(SpecError, match="63"):
        load_spec_text(spec, "long.yaml")
