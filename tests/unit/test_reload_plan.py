"""run.reload's pure parts: which source tables a reload snapshots, and when Connect's offsets
say an incremental snapshot is still running, and why it does not start with no run beating."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.core.errors import ConfigError
from replicator.core.mapping import Plan, catalog_from_dict, compile_spec, load_spec
from replicator.core.model import TableRef
from replicator.run.reload import no_applier, reload_sources, snapshot_running, without_primary_key
from tests.unit.mapping.demo_catalogs import TARGET

ROOT = Path(__file__).resolve().parents[2]


def demo_plan() -> Plan:
    return compile_spec(load_spec(ROOT / "mappings" / "demo.yaml"), catalog_from_dict(TARGET))


def test_a_target_table_names_its_source_and_a_source_names_itself_once() -> None:
    plan = demo_plan()
    assert reload_sources(plan, ["crm.customer_pii", "shop.customers", "crm.customer"]) == [
        TableRef("shop", "customers")
    ]
    # two rules read shop.customers (crm.customer, crm.customer_pii): snapshotted once (trial 9)
    assert reload_sources(plan, ["shop.customers"]) == [TableRef("shop", "customers")]
    with pytest.raises(ConfigError, match="maps no such source or target table"):
        reload_sources(plan, ["crm.nope"])
    with pytest.raises(ConfigError, match=r"schema\.table"):
        reload_sources(plan, ["nodot"])


def test_a_snapshot_runs_while_the_offsets_carry_its_context() -> None:
    running = {
        "offsets": [
            {"partition": {"server": "demo"}, "offset": {"lsn": 1, "incremental_snapshot_collections": "[]"}}
        ]
    }
    assert snapshot_running(running)
    assert not snapshot_running({"offsets": [{"partition": {}, "offset": {"lsn": 1, "lsn_commit": 1}}]})
    assert not snapshot_running(None)


def test_a_table_without_a_primary_key_is_named_before_any_signal() -> None:
    """Debezium's incremental snapshot skips a table without a primary key: reload refuses it."""
    catalog = catalog_from_dict(
        {
            "s.keyed": {"columns": {"id": "bigint"}, "pk": ["id"]},
            "s.keyless": {"columns": {"id": "bigint"}, "unique": [["id"]], "replica_identity": "full"},
        }
    )
    sources = [TableRef("s", "keyed"), TableRef("s", "keyless")]
    assert without_primary_key(catalog, sources) == [TableRef("s", "keyless")]


def test_no_run_beating_is_the_refusal_and_members_kafka_still_lists_explain_it() -> None:
    line = no_applier("g", ["pod-1"])
    assert line.startswith("reload: no `replicator run` of group g beats in the target to apply the snapshot")
    assert "(Kafka still lists 1 member of it: a member stays listed for its session.timeout.ms" in line
    assert line.endswith("; start it first")
    assert no_applier("g", []) == (
        "reload: no `replicator run` of group g beats in the target to apply the snapshot; start it first"
    )
