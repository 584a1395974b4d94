"""`replicator init --print-grants`: the setup SQL derived from the spec (no connection)."""

from __future__ import annotations

import pytest

from replicator.config import load_settings
from replicator.core.mapping import load_spec, load_spec_text
from replicator.core.mapping.grants import Roles, grants_sql
from replicator.core.model import TableRef
from replicator.run.init import print_grants
from tests.unit.mapping.demo_catalogs import DEMO_SPEC
from tests.unit.mapping.test_migration_rules import SPEC as LEGACY_SPEC

ROLES = Roles(
    source_db="app",
    target_db="app_new",
    connector_role="debezium",
    source_role="repl_src",
    target_role="repl",
    shadow_role="repl_shadow",
    publication="cdc_app",
    control_schema="replicator",
)


def test_demo_grants_cover_every_captured_and_mapped_table() -> None:
    """demo: the publication holds every captured table and the signal table; the target role
    gets DML on every mapped table and TRUNCATE only where a truncate policy needs it."""
    text = grants_sql(load_spec(DEMO_SPEC), TableRef("shop", "debezium_signal"), ROLES)
    assert (
        'CREATE PUBLICATION "cdc_app" FOR TABLE "shop"."customers", "shop"."order_lines", '
        '"shop"."orders", "shop"."products", "shop"."debezium_signal"'
        " WITH (publish_via_partition_root = true);"  # a partitioned table's changes as its own
    ) in text
    assert 'GRANT INSERT ON "shop"."debezium_signal" TO "repl_src";' in text
    # Debezium writes an incremental snapshot's window markers into the signal table: without
    # INSERT, `replicator reload` waits for a snapshot the connector skipped ("permission denied")
    assert f'GRANT INSERT ON "shop"."debezium_signal" TO "{ROLES.connector_role}";' in text
    assert 'GRANT CONNECT, CREATE, TEMP ON DATABASE "app_new" TO "repl";' in text
    assert 'GRANT TRUNCATE ON "catalog"."product" TO "repl";' in text
    assert 'GRANT CONNECT, TEMP ON DATABASE "app_new" TO "repl_shadow";' in text
    assert text.rstrip().endswith("-- then, as repl: replicator init --shadow-role repl_shadow")
    assert "PASSWORD '<secret>'" in text and "TO PUBLIC" not in text
    # what a cutover needs: end the application's transactions, the source mirror, sequences
    assert 'GRANT pg_signal_backend TO "repl_src";' in text
    assert 'GRANT CREATE ON DATABASE "app" TO "repl_src";' in text
    assert (
        'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "catalog", "crm", "sales" TO "repl";' in text
    )
    assert "REPLICATOR_CUTOVER__APP_ROLES" in text  # no application roles configured: says how
    assert "then print again for their grants in the target" in text


def test_cutover_probe_grants_name_the_application_roles() -> None:
    text = grants_sql(
        load_spec(DEMO_SPEC),
        TableRef("shop", "debezium_signal"),
        Roles(
            ROLES.source_db,
            ROLES.target_db,
            ROLES.connector_role,
            ROLES.source_role,
            ROLES.target_role,
            ROLES.shadow_role,
            ROLES.publication,
            ROLES.control_schema,
            app_roles=("shop_app", "batch_app"),
        ),
    )
    assert 'GRANT "shop_app", "batch_app" TO "repl_src";' in text
    # after the flip the application writes the target: its own section, in the target database
    after = text.split("-- for the application after the flip")[1]
    assert after.startswith(" (target database app_new, as the owner):")
    assert 'GRANT USAGE ON SCHEMA "catalog", "crm", "sales" TO "shop_app", "batch_app";' in after
    assert (
        'GRANT SELECT, INSERT, UPDATE, DELETE ON "catalog"."product", "crm"."customer", "crm"."customer_pii",'
        ' "sales"."order", "sales"."order_line" TO "shop_app", "batch_app";'
    ) in after
    sequences = 'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "catalog", "crm", "sales" TO "shop_app", "batch_app";'
    assert sequences in after


def test_lookup_tables_are_readable_by_the_writer_and_the_shadow() -> None:
    """legacy.country_uuid: the lookup table gets SELECT for the target and shadow roles, no DML."""
    spec = load_spec_text(LEGACY_SPEC, "legacy.yaml")
    text = grants_sql(spec, TableRef("ops", "signal"), ROLES)
    assert 'GRANT SELECT ON "new"."country_map" TO "repl";' in text
    assert 'GRANT SELECT ON "new"."account", "new"."country_map" TO "repl_shadow";' in text
    assert 'CREATE TABLE IF NOT EXISTS "ops"."signal" (id varchar(42) PRIMARY KEY' in text
    assert 'GRANT USAGE ON SCHEMA "old", "ops" TO "debezium";' in text
    assert "TRUNCATE" not in text  # no truncate policy asks for it


def test_each_section_runs_in_the_one_database_its_heading_names() -> None:
    """Trial 5: the target's sequence grant sat at the end of the source's cutover section, so that
    section failed when run on the source. Every blank-line section names its database once, and a
    section for the source names no target role's grant; every role has a CREATE ROLE hint."""
    text = grants_sql(load_spec(DEMO_SPEC), TableRef("shop", "debezium_signal"), ROLES)
    sections = [s for s in text.split("\n\n") if "GRANT" in s or "CREATE" in s]
    for section in sections:
        databases = {db for db in ("source database app,", "target database app_new,") if db in section}
        assert len(databases) == 1, section
        if "source database" in section:
            assert 'TO "repl";' not in section and 'TO "repl_shadow";' not in section, section
    for role in ("debezium", "repl_src", "repl", "repl_shadow"):
        assert f"CREATE ROLE {role} WITH LOGIN" in text


def test_print_grants_grants_only_application_roles_the_operator_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trial 7: with REPLICATOR_CUTOVER__APP_ROLES unset, `init --print-grants` printed
    `GRANT "shop_app" TO <source role>` (the demo's default role) for another migration; pasted,
    it hands the demo application's role to that migration's role. Unset: it says to set it."""
    monkeypatch.delenv("REPLICATOR_CUTOVER__APP_ROLES", raising=False)
    text = print_grants(load_settings(), None, "debezium", None)
    assert '"shop_app"' not in text and "set REPLICATOR_CUTOVER__APP_ROLES" in text
    monkeypatch.setenv("REPLICATOR_CUTOVER__APP_ROLES", "orders_app, billing_app")
    text = print_grants(load_settings(), None, "debezium", None)
    assert 'GRANT "orders_app", "billing_app" TO' in text


def test_each_database_part_prints_alone() -> None:
    """`--print-grants source|target`: each part holds only its own database's statements (one
    psql session can run it), and the two parts together are everything `both` prints."""
    spec, signal = load_spec(DEMO_SPEC), TableRef("shop", "debezium_signal")
    both = grants_sql(spec, signal, ROLES)
    source = grants_sql(spec, signal, ROLES, database="source")
    target = grants_sql(spec, signal, ROLES, database="target")
    assert both == source + "\n" + target
    assert 'ON DATABASE "app_new"' not in source and 'ON DATABASE "app" ' not in target
    assert "CREATE PUBLICATION" in source and "pg_signal_backend" in source
    assert "CREATE PUBLICATION" not in target and "pg_signal_backend" not in target
    assert all('"crm"."customer"' not in line for line in source.splitlines())  # a target table
    assert all('"shop"."customers"' not in line for line in target.splitlines())  # a source table
    assert target.rstrip().endswith("-- then, as repl: replicator init --shadow-role repl_shadow")
