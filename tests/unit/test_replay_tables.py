"""`replay --tables` takes source or target table names, as `reload --table` does (trial 8:
`replay --tables sales.customer`, the target of sales."Customer", was refused as "not a source
table of the spec" while `reload --table sales.customer` took it), and names the other target
tables the rewound topics feed (trial 9: it did not say they read the events again too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config import Settings
from replicator.core.errors import ConfigError
from replicator.run.replay import also_fed, replay_topics

SPEC = """\
version: 1
topic_prefix: t8
capture: {connector: t8-postgres, signal_table: ops.debezium_signal}
tables:
  - id: customer
    source: sales.Customer
    target: sales.customer
    key: {customer_id: customer_id}
    delete: {policy: hard}
    truncate: {policy: error}
    columns:
      full_name: {from: FullName}
  - id: customer_pii
    source: sales.Customer
    target: crm.customer_pii
    key: {customer_id: customer_id}
    delete: {policy: hard}
    truncate: {policy: error}
    columns:
      full_name: {from: FullName}
  - id: product
    source: sales.product
    target: sales.product
    key: {sku: sku}
    delete: {policy: hard}
    truncate: {policy: error}
    columns:
      price: {from: price}
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    return Settings(mapping=spec)


def test_a_target_name_selects_the_topic_of_its_source(settings: Settings) -> None:
    assert replay_topics(settings, ("sales.customer",)) == ["t8.sales.Customer"]


def test_a_source_name_still_selects_its_topic(settings: Settings) -> None:
    assert replay_topics(settings, ("sales.Customer", "sales.product")) == [
        "t8.sales.Customer",
        "t8.sales.product",
    ]


def test_an_unknown_name_is_refused_naming_the_source_tables(settings: Settings) -> None:
    with pytest.raises(ConfigError) as refused:
        replay_topics(settings, ("sales.nope",))
    assert str(refused.value) == (
        "--tables: sales.nope is not a source or target table of the spec"
        " (its source tables: sales.Customer, sales.product)"
    )


def test_the_other_target_tables_of_a_rewound_topic_are_named(settings: Settings) -> None:
    assert also_fed(settings, ("sales.customer",)) == ["crm.customer_pii"]
    assert also_fed(settings, ("sales.customer", "sales.product")) == ["crm.customer_pii"]
    assert also_fed(settings, ("sales.customer", "crm.customer_pii")) == []
    # a source table names every target it feeds; no --tables rewinds every table
    assert also_fed(settings, ("sales.Customer",)) == []
    assert also_fed(settings, ("sales.product",)) == []
    assert also_fed(settings, ()) == []
