#!/usr/bin/env python3
"""The demo shop: databases, roles, publication, seed data and a workload.

    python deploy/demo/demo.py setup [--customers N] [--reset]
    python deploy/demo/demo.py workload [--rate OPS_PER_S] [--seconds S] [--seed N]

The workload writes as the application role `shop_app` (password
CDC_APP_PASSWORD): the role `replicator cutover` fences.

Addresses come from the same environment the replicator reads
(REPLICATOR_SOURCE__HOST/PORT/DBNAME, REPLICATOR_TARGET__HOST/PORT/DBNAME/USER/PASSWORD),
the administrator from STACK_PG_ADMIN_USER/STACK_PG_ADMIN_PASSWORD, the
connector role's password from CDC_DEBEZIUM_PASSWORD. Defaults match
deploy/local/stack.

`setup` is idempotent. Roles get least privilege: the Debezium role has
REPLICATION, SELECT on the captured tables and INSERT on the signal table (no
superuser; the publication is pre-created by the administrator); the
application role `shop_app` has DML on the shop tables and nothing else; the
replicator role owns nothing in the source and has DML on the target tables,
the target's sequences (cutover moves them) and CREATE on the target database
for its control schema.

`setup` also undoes an earlier demo cutover, so the demo can run again: the
application role gets its writes back and authority returns to the source.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

HERE = Path(__file__).resolve().parent
PUBLICATION = os.environ.get("CDC_PUBLICATION", "cdc_shop")
CAPTURED = ("customers", "products", "orders", "order_lines", "debezium_signal")
APP_TABLES = CAPTURED[:-1]
APP_ROLE = "shop_app"
CONTROL_SCHEMA = os.environ.get("REPLICATOR_CONTROL_SCHEMA", "replicator")


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def admin_conninfo(side: str, dbname: str) -> str:
    defaults = {"SOURCE": "55432", "TARGET": "55433"}
    return psycopg.conninfo.make_conninfo(
        host=env(f"REPLICATOR_{side}__HOST", "127.0.0.1"),
        port=env(f"REPLICATOR_{side}__PORT", defaults[side]),
        dbname=dbname,
        user=env("STACK_PG_ADMIN_USER", "postgres"),
        password=env("STACK_PG_ADMIN_PASSWORD", "postgres"),
        application_name="cdc-demo",
    )


def source_db() -> str:
    return env("REPLICATOR_SOURCE__DBNAME", "shop")


def target_db() -> str:
    return env("REPLICATOR_TARGET__DBNAME", "shop_target")


def reset_capture() -> None:
    """`--reset` recreates the source database, so the demo connector's stored LSN and its topics
    describe a database that is gone: stop the connector, forget its offsets, delete it and its
    topics (`replicator connectors apply` then starts a fresh snapshot). Nothing to do when Connect
    or the connector is absent."""
    from confluent_kafka.admin import AdminClient

    from replicator.connect.client import ConnectClient, ConnectError

    name = env("CDC_CONNECTOR_NAME", "demo-postgres")
    prefix = env("CDC_TOPIC_PREFIX", "demo")
    client = ConnectClient(env("REPLICATOR_CONNECT__URL", "http://127.0.0.1:58083"), 30)
    try:
        state = client.state(name)
        if state is not None:
            client.stop(name)
            wait_for(
                lambda: (s := client.state(name)) is not None and s.connector == "STOPPED", f"{name} to stop"
            )
            client.reset_offsets(name)
            client.delete(name)
            wait_for(lambda: client.state(name) is None, f"{name} to be deleted")
            print(
                f"demo: connector {name} removed with its offsets (re-apply it: replicator connectors apply)"
            )
    except ConnectError as exc:
        print(f"demo: {exc}; the connector was left alone", file=sys.stderr)
    admin = AdminClient({"bootstrap.servers": env("REPLICATOR_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:59092")})

    def ours() -> list[str]:
        names = admin.list_topics(timeout=10).topics
        return sorted(t for t in names if t.startswith(f"{prefix}.") or t == f"__debezium-heartbeat.{prefix}")

    topics = ours()
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result()
        wait_for(lambda: not ours(), "the demo topics to be deleted")
        print(f"demo: deleted topics {', '.join(topics)}")


def wait_for(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.25)  # polling interval while the condition is checked


def ensure_database(side: str, dbname: str, reset: bool) -> None:
    with psycopg.connect(admin_conninfo(side, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists and reset:
            if side == "SOURCE":
                for (slot,) in conn.execute(
                    "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (dbname,)
                ).fetchall():
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
            exists = None
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def ensure_role(conn: psycopg.Connection[Any], role: str, password: str, *attrs: str) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    extra = sql.SQL(" ").join(sql.SQL(a) for a in attrs)  # attrs are literals of this file
    conn.execute(
        sql.SQL("{} ROLE {} WITH LOGIN {} PASSWORD {}").format(
            sql.SQL(verb), sql.Identifier(role), extra, sql.Literal(password)
        )
    )


def setup_source(reset: bool) -> None:
    dbname = source_db()
    ensure_database("SOURCE", dbname, reset)
    with psycopg.connect(admin_conninfo("SOURCE", dbname), autocommit=True) as conn:
        conn.execute((HERE / "source.sql").read_text())
        ensure_role(conn, "debezium", env("CDC_DEBEZIUM_PASSWORD", "debezium"), "REPLICATION")
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO debezium").format(sql.Identifier(dbname)))
        conn.execute("GRANT USAGE ON SCHEMA shop TO debezium")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA shop TO debezium")
        conn.execute("GRANT INSERT ON shop.debezium_signal TO debezium")
        # The application: DML on its tables (re-granted here, so a demo cutover's fence is undone).
        ensure_role(conn, APP_ROLE, env("CDC_APP_PASSWORD", APP_ROLE))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(APP_ROLE)
            )
        )
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA shop TO {}").format(sql.Identifier(APP_ROLE)))
        tables = sql.SQL(", ").join(sql.Identifier("shop", t) for t in APP_TABLES)
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {} TO {}").format(
                tables, sql.Identifier(APP_ROLE)
            )
        )
        conn.execute(
            sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA shop TO {}").format(sql.Identifier(APP_ROLE))
        )
        reset_authority(conn)
        if not conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (PUBLICATION,)).fetchone():
            tables = sql.SQL(", ").join(sql.Identifier("shop", t) for t in CAPTURED)
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)").format(
                    sql.Identifier(PUBLICATION), tables
                )
            )


def setup_target(reset: bool, dbname: str | None = None) -> None:
    dbname = dbname or target_db()
    ensure_database("TARGET", dbname, reset)
    user = env("REPLICATOR_TARGET__USER", "replicator")
    with psycopg.connect(admin_conninfo("TARGET", dbname), autocommit=True) as conn:
        ensure_role(conn, user, env("REPLICATOR_TARGET__PASSWORD", "replicator"))
        conn.execute((HERE / "target.sql").read_text())
        conn.execute(
            sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(user)
            )
        )
        # Shadow mode's role: reads the data, writes only its own control rows
        # (`replicator init --shadow-role replicator_shadow` grants those).
        ensure_role(conn, "replicator_shadow", env("CDC_SHADOW_PASSWORD", "shadow"))
        conn.execute(
            sql.SQL("GRANT CONNECT, TEMP ON DATABASE {} TO replicator_shadow").format(sql.Identifier(dbname))
        )
        # The application after a cutover's flip writes the target (the `app_target` gate checks it).
        ensure_role(conn, APP_ROLE, env("CDC_APP_PASSWORD", APP_ROLE))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(APP_ROLE)
            )
        )
        for schema in ("crm", "catalog", "sales"):
            conn.execute(
                sql.SQL(
                    "GRANT USAGE ON SCHEMA {0} TO {1}; "
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {0} TO {1}; "
                    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {0} TO {1}"
                ).format(sql.Identifier(schema), sql.Identifier(APP_ROLE))
            )
            conn.execute(
                sql.SQL(
                    "GRANT USAGE ON SCHEMA {0} TO replicator_shadow; "
                    "GRANT SELECT ON ALL TABLES IN SCHEMA {0} TO replicator_shadow"
                ).format(sql.Identifier(schema))
            )
            conn.execute(
                sql.SQL(
                    "GRANT USAGE ON SCHEMA {0} TO {1}; "
                    "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {0} TO {1}; "
                    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {0} TO {1}"
                ).format(sql.Identifier(schema), sql.Identifier(user))
            )
        reset_authority(conn)


def reset_authority(conn: psycopg.Connection[Any]) -> None:
    """A demo re-run after a demo cutover: authority back to the source (on either side)."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"{CONTROL_SCHEMA}.authority",)).fetchone()
    if exists and exists[0] is not None:
        conn.execute(
            sql.SQL("UPDATE {} SET authority = 'source' WHERE authority <> 'source'").format(
                sql.Identifier(CONTROL_SCHEMA, "authority")
            )
        )


# ---------------------------------------------------------------- data
FIRST = [
    "Anna",
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
    "Chloé",
    "Björk",
    "李",
    "Ана",
    "Mårten",
    "O'Brien",
    "Ñandú",
]
LAST = ["Müller", "Núñez", "小龍", "Smith", "Ōta", "Ivanova", "van der Berg", "Dvořák", "🙂 Emoji", "Ng"]
COUNTRIES = ["DE", "FR", "PL", "US", "JP", "ES", None, "X "]  # "X " is a padded char(2)
TIERS = ["bronze", "silver", "gold", "platinum"]


def customer_row(rng: random.Random, n: int) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name = f"{first} {last}"
    if rng.random() < 0.2:
        name = unicodedata.normalize("NFD", name)  # decomposed accents arrive too
    return {
        "email": f"user{n}.{uuid.uuid4().hex[:12]}@example.com",  # unique across runs
        "full_name": name,
        "country": rng.choice(COUNTRIES),
        "tier": rng.choice(TIERS),
        "tags": rng.choice([None, [], ["vip"], ["new", "ünïcode"], ["a,b", 'quo"te']]),
        "profile": rng.choice(
            [None, Jsonb({"newsletter": True}), Jsonb({"newsletter": False, "x": [1, 2]}), Jsonb({})]
        ),
    }


def big_text(rng: random.Random, size: int) -> str:
    # Random words do not compress well, so the value is TOASTed out of line.
    words = ["alpha", "β-beta", "gamma", "δέλτα", "epsilon", "zeta", "ηta", "theta", "✓"]
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < size:
        out.append(rng.choice(words) + str(rng.randrange(10**6)))
    return " ".join(out)


def product_row(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "sku": f"SKU-{n:05d}",
        "name": rng.choice(["Kaffeemühle", "Tea pot", "Chair — oak", "Lamp"]) + f" {n}",
        "description": big_text(rng, rng.choice([10, 3000, 12000])),
        "price": Decimal(rng.randrange(0, 10_000_00)) / 100,
        "weight_grams": rng.choice([None, rng.randrange(1, 50_000)]),
        "image": rng.choice([None, bytes(rng.randrange(256) for _ in range(32))]),
    }


def seed(conn: psycopg.Connection[Any], rng: random.Random, customers: int) -> None:
    with conn.transaction():
        if conn.execute("SELECT count(*) FROM shop.customers").fetchone() != (0,):
            return
        for n in range(customers):
            insert_customer(conn, rng, n)
        for n in range(max(10, customers // 4)):
            insert_product(conn, rng, n)
        for _ in range(customers):
            insert_order(conn, rng)


def insert_customer(conn: psycopg.Connection[Any], rng: random.Random, n: int) -> None:
    conn.execute(
        "INSERT INTO shop.customers (email, full_name, country, tier, tags, profile)"
        " VALUES (%(email)s, %(full_name)s, %(country)s, %(tier)s, %(tags)s, %(profile)s)",
        customer_row(rng, n),
    )


def insert_product(conn: psycopg.Connection[Any], rng: random.Random, n: int) -> None:
    conn.execute(
        "INSERT INTO shop.products (sku, name, description, price, weight_grams, image)"
        " VALUES (%(sku)s, %(name)s, %(description)s, %(price)s, %(weight_grams)s, %(image)s)"
        " ON CONFLICT (sku) DO NOTHING",
        product_row(rng, n),
    )


def insert_order(conn: psycopg.Connection[Any], rng: random.Random) -> None:
    customer = conn.execute("SELECT id FROM shop.customers ORDER BY random() LIMIT 1").fetchone()
    skus = conn.execute("SELECT sku, price FROM shop.products ORDER BY random() LIMIT 3").fetchall()
    if customer is None or not skus:
        return
    placed = datetime(2024, 3, 31, 0, 30, tzinfo=UTC) + timedelta(minutes=rng.randrange(10**6))
    row = conn.execute(
        "INSERT INTO shop.orders (customer_id, status, placed_at, total, note)"
        " VALUES (%s, %s, %s, 0, %s) RETURNING id",
        (
            customer[0],
            rng.choice(["draft", "placed", "paid", "shipped"]),
            placed,
            rng.choice([None, "", "Bitte klingeln", "  padded  "]),
        ),
    ).fetchone()
    assert row is not None
    for line_no, (sku, price) in enumerate(skus, start=1):
        conn.execute(
            "INSERT INTO shop.order_lines (order_id, line_no, sku, qty, unit_price)"
            " VALUES (%s, %s, %s, %s, %s)",
            (row[0], line_no, sku, rng.randrange(1, 5), price),
        )
    conn.execute(
        "UPDATE shop.orders SET total ="
        " (SELECT sum(qty * unit_price) FROM shop.order_lines WHERE order_id = %s)"
        " WHERE id = %s",
        (row[0], row[0]),
    )


def one_operation(conn: psycopg.Connection[Any], rng: random.Random, n: int) -> str:
    """One random business operation in its own transaction; returns its name."""
    choice = rng.random()
    with conn.transaction():
        if choice < 0.25:
            insert_order(conn, rng)
            return "insert order"
        if choice < 0.40:
            insert_customer(conn, rng, 10**6 + n)
            return "insert customer"
        if choice < 0.60:
            conn.execute(
                "UPDATE shop.orders SET status = %s"
                " WHERE id = (SELECT id FROM shop.orders ORDER BY random() LIMIT 1)",
                (rng.choice(["paid", "shipped", "cancelled"]),),
            )
            return "update order status"
        if choice < 0.72:
            # Touches price only: the TOASTed description is unchanged in the event.
            conn.execute(
                "UPDATE shop.products SET price = price + 1 WHERE sku ="
                " (SELECT sku FROM shop.products WHERE price < 1000000 ORDER BY random() LIMIT 1)"
            )
            return "update product price"
        if choice < 0.84:
            conn.execute(
                "UPDATE shop.customers SET tier = %s, tags = array_append(coalesce(tags, '{}'), 'upd')"
                " WHERE id = (SELECT id FROM shop.customers ORDER BY random() LIMIT 1)",
                (rng.choice(TIERS),),
            )
            return "update customer"
        if choice < 0.94:
            conn.execute(
                "DELETE FROM shop.order_lines WHERE (order_id, line_no) = "
                "(SELECT order_id, line_no FROM shop.order_lines ORDER BY random() LIMIT 1)"
            )
            return "delete order line"
        conn.execute(
            "DELETE FROM shop.orders WHERE id = (SELECT id FROM shop.orders ORDER BY random() LIMIT 1)"
        )
        return "delete order"


def app_conninfo() -> str:
    """The application's own connection: the role a cutover fences."""
    return psycopg.conninfo.make_conninfo(
        admin_conninfo("SOURCE", source_db()),
        user=APP_ROLE,
        password=env("CDC_APP_PASSWORD", APP_ROLE),
        application_name="shop-app",
    )


def workload(rate: float, seconds: float, seed_value: int) -> dict[str, int]:
    """Operations as the application role; a fenced source refuses them and the workload goes on
    trying (counted as `refused`), as an application would during a cutover."""
    rng = random.Random(seed_value)  # noqa: S311 (demo data, reproducible by seed; not a secret)
    counts: dict[str, int] = {}
    interval = 1.0 / rate if rate > 0 else 0.0
    conn = psycopg.connect(app_conninfo(), autocommit=True)
    try:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            try:
                name = one_operation(conn, rng, n)
            except psycopg.errors.InsufficientPrivilege:
                name = "refused"
            except psycopg.OperationalError:  # the fence ended our session; an application reconnects
                name = "refused"
                conn.close()
                conn = psycopg.connect(app_conninfo(), autocommit=True)
            counts[name] = counts.get(name, 0) + 1
            n += 1
            if interval:
                next_at = start + n * interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the generator, not waiting on a condition
    finally:
        conn.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_setup = sub.add_parser("setup", help="create databases, roles, publication and seed data")
    p_setup.add_argument("--customers", type=int, default=200)
    p_setup.add_argument(
        "--reset",
        action="store_true",
        help="drop and recreate both demo databases; remove the demo connector, its offsets and topics",
    )
    p_setup.add_argument("--seed", type=int, default=42)
    p_target = sub.add_parser("target", help="create (or --reset) one demo target database")
    p_target.add_argument("--dbname", required=True)
    p_target.add_argument("--reset", action="store_true")
    p_work = sub.add_parser("workload", help="inserts, updates and deletes at a rate for a time")
    p_work.add_argument(
        "--rate", type=float, default=20.0, help="operations per second (0 = as fast as possible)"
    )
    p_work.add_argument("--seconds", type=float, default=10.0)
    p_work.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            if args.reset:
                reset_capture()
            setup_source(args.reset)
            setup_target(args.reset)
            with psycopg.connect(admin_conninfo("SOURCE", source_db()), autocommit=True) as conn:
                seed(conn, random.Random(args.seed), args.customers)  # noqa: S311 (demo data)
                counts = {
                    t: conn.execute(
                        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("shop", t))
                    ).fetchone()[0]  # type: ignore[index]
                    for t in CAPTURED
                }
            print("demo ready:", ", ".join(f"shop.{t}={n}" for t, n in counts.items()))
        elif args.command == "target":
            setup_target(args.reset, args.dbname)
            print(f"demo target {args.dbname} ready")
        else:
            counts = workload(args.rate, args.seconds, args.seed)
            print("workload done:", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    except psycopg.OperationalError as exc:
        print(
            f"demo: cannot reach PostgreSQL: {str(exc).splitlines()[0]};"
            " is the stack up? (deploy/local/stack status)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
