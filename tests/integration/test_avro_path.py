"""The Avro path end to end: Debezium with the Apicurio Avro converter (Confluent wire
format) and a real registry, decoded by the replicator's AvroDecoder.

A second connector (its own name, slot and topic prefix per run, removed at the
end, so a restarted in-memory registry never meets old Avro topics) captures
customers and products as Avro; the replicator runs the demo rules for those
tables with REPLICATOR_VALUE_FORMAT=avro, and the target is compared with the
mapped source cell by cell: decimals, bytea, text[], jsonb, enums,
timestamptz, nulls and non-ASCII text all arrive intact through Avro.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from replicator.config import load_settings
from replicator.connect.client import ConnectClient
from replicator.connect.configs import load_connector
from replicator.core.mapping import compile_spec, load_spec
from replicator.pg.catalog import read_catalog
from replicator.run.drain import drain
from replicator.run.verify import verify
from tests.integration.pipeline import SPEC, daemon, drop_slot, env_for, fresh_target
from tests.integration.stack import Stack

CONNECTOR = Path(__file__).parent / "connectors-avro" / "avro-postgres.json"


@pytest.fixture(scope="module")
def avro_connector(stack: Stack) -> Iterator[tuple[str, str]]:
    """(connector name, topic prefix) of a fresh Avro connector; deleted with its slot afterwards."""
    registry = os.environ.get("REPLICATOR_REGISTRY_URL")
    if not registry:
        pytest.fail(
            "REPLICATOR_REGISTRY_URL is not set: start the registry (deploy/local/stack up with"
            " STACK_REGISTRY=on) and export `deploy/local/stack env`",
            pytrace=False,
        )
    native = registry.split("/apis/")[0] + "/apis/registry/v2"
    run = uuid.uuid4().hex[:6]
    prefix, slot = f"avro{run}", f"cdc_avro_{run}"
    environ = {
        **os.environ,
        "CDC_REGISTRY_NATIVE_URL": native,
        "CDC_AVRO_CONNECTOR": f"test-avro-{run}",
        "CDC_AVRO_PREFIX": prefix,
        "CDC_AVRO_SLOT": slot,
    }
    spec = load_connector(CONNECTOR, environ)
    client = ConnectClient(stack.connect_url)
    client.apply(spec, wait_s=120)
    try:
        yield spec.name, prefix
    finally:
        client.delete(spec.name)
        drop_slot(stack, slot)


def avro_spec(tmp_path: Path, prefix: str) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["topic_prefix"] = prefix
    spec["tables"] = [t for t in spec["tables"] if t["id"] in ("customer", "customer_pii", "product")]
    path = tmp_path / "avro.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def test_avro_events_reach_the_target_exactly(
    stack: Stack, avro_connector: tuple[str, str], tmp_path: Path
) -> None:
    connector, prefix = avro_connector
    dbname = fresh_target("avro")
    group = f"avro-{uuid.uuid4().hex[:6]}"
    spec_path = avro_spec(tmp_path, prefix)
    env = env_for(stack, dbname, group, REPLICATOR_MAPPING=str(spec_path), REPLICATOR_VALUE_FORMAT="avro")
    tag = uuid.uuid4().hex[:6]
    with daemon(env, tmp_path / "d.log") as proc:
        with psycopg.connect(stack.source_admin()) as conn:  # streaming changes on top of the snapshot
            conn.execute(
                "INSERT INTO shop.customers (email, full_name, country, tier, tags, profile)"
                " VALUES (%s, 'Ünïcode Avro', 'DE', 'platinum', ARRAY['a','ü'], '{\"newsletter\": true}')",
                (f"avro-{tag}@example.com",),
            )
            conn.execute(
                "INSERT INTO shop.products (sku, name, description, price, image)"
                " VALUES (%s, 'avro', repeat('x', 5000), 12.34, '\\x00ff'::bytea)",
                (f"AVRO-{tag}",),
            )
            conn.execute("UPDATE shop.products SET price = 13.57 WHERE sku = %s", (f"AVRO-{tag}",))
        settings = load_settings(None)
        settings.target.dbname = dbname
        topics = [f"{prefix}.shop.customers", f"{prefix}.shop.products"]
        drain(settings, topics, connector, "shop.debezium_signal", 180, group=group)
    assert proc.returncode == 0, (tmp_path / "d.log").read_text()[-3000:]
    log = (tmp_path / "d.log").read_text()
    assert "event=batch" in log and "errors=0" in log
    spec = load_spec(spec_path)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        plan = compile_spec(spec, read_catalog(conn, ["crm", "catalog"]))
    diffs = verify(plan, stack.source_admin(), stack.target_admin(dbname), "replicator")
    # The shared demo source may hold products other tests left that the demo spec refuses on any
    # path (a sku over 64 characters, a negative price: test_shadow.py's SNEG-* rows before it
    # cleaned up after itself). Only those may be error records here; any other is the Avro path's.
    with psycopg.connect(stack.source_admin()) as conn:
        too_long = {r[0] for r in conn.execute("SELECT sku FROM shop.products WHERE length(sku) > 64")}
        negative = {r[0] for r in conn.execute("SELECT sku FROM shop.products WHERE price < 0")}
    for d in diffs:
        assert d.clean(accept_errors=True), d.summary()
        refused = (too_long, negative) if str(d.target) == "catalog.product" else (set(), set())
        assert {json.loads(k)[0] for k, _ in d.rejected} == refused[0], d.rejected
        assert {json.loads(k)[0] for k in d.errored} == refused[1], d.errored
    assert all(d.expected > 0 for d in diffs)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        row = conn.execute(
            "SELECT price_cents, image, length(description) FROM catalog.product WHERE sku = %s",
            (f"AVRO-{tag}",),
        ).fetchone()
    assert row == (1357, b"\x00\xff", 5000)
