"""`core.publication`: every mapped table's changes reach Kafka, or status names the gap and its fix."""

from __future__ import annotations

from replicator.core.model import TableRef
from replicator.core.publication import Publication, capture_gaps, filtered_out

ORDERS, EVENTS, SIGNAL = TableRef("app", "orders"), TableRef("app", "Events"), TableRef("ops", "signal")
LEAVES = frozenset({TableRef("app", "Events_2025"), TableRef("app", "Events_2026")})
CONFIG = {"table.include.list": "app.orders,app.Events,ops.signal"}


def test_a_publication_carrying_every_table_has_no_gap() -> None:
    pub = Publication("cdc", True, frozenset({ORDERS, EVENTS, SIGNAL}))
    assert capture_gaps([ORDERS, EVENTS, SIGNAL], frozenset({EVENTS}), pub, "cdc", CONFIG) == []


def test_a_missing_publication_is_one_problem_naming_it() -> None:
    (problem,) = capture_gaps([ORDERS], frozenset(), None, "cdc", CONFIG)
    assert problem.startswith("publication cdc does not exist on the source")


def test_a_table_left_out_of_the_publication_is_named_with_the_statement_that_adds_it() -> None:
    pub = Publication("cdc", True, frozenset({ORDERS, SIGNAL}))
    (problem,) = capture_gaps([ORDERS, EVENTS, SIGNAL], frozenset(), pub, "cdc", CONFIG)
    assert problem.startswith("app.Events is not in publication cdc")
    assert problem.endswith('fix: ALTER PUBLICATION "cdc" ADD TABLE "app"."Events"')


def test_a_partitioned_table_published_through_its_partitions_is_a_gap() -> None:
    pub = Publication("cdc", False, frozenset({ORDERS, SIGNAL, *LEAVES}))
    (problem,) = capture_gaps([ORDERS, EVENTS, SIGNAL], frozenset({EVENTS}), pub, "cdc", CONFIG)
    assert problem.startswith("app.Events is partitioned and publication cdc publishes its changes as its")
    assert problem.endswith('fix: ALTER PUBLICATION "cdc" SET (publish_via_partition_root = true)')


def test_the_connector_filters_match_whole_names_as_case_insensitive_patterns() -> None:
    assert not filtered_out(EVENTS, {"table.include.list": r"app\.events"})
    assert filtered_out(EVENTS, {"table.include.list": "app.Event"})  # whole name, not a prefix
    assert not filtered_out(EVENTS, {"table.include.list": "app.Ev.*, ops.signal"})
    assert filtered_out(ORDERS, {"table.exclude.list": "app.orders"})
    assert not filtered_out(ORDERS, {})
    pub = Publication("cdc", True, frozenset({ORDERS, EVENTS, SIGNAL}))
    (problem,) = capture_gaps(
        [ORDERS, EVENTS, SIGNAL], frozenset(), pub, "cdc", {"table.include.list": "app.*"}
    )
    assert problem.startswith("ops.signal is filtered out by the connector's schema or table include/exclude")


def test_the_schema_filters_apply_before_the_table_filters() -> None:
    assert filtered_out(ORDERS, {"schema.include.list": "ops"})
    assert not filtered_out(ORDERS, {"schema.include.list": "APP,ops"})  # case-insensitive
    assert filtered_out(ORDERS, {"schema.exclude.list": "app"})
    assert filtered_out(ORDERS, {"schema.include.list": "app", "table.include.list": "app.lines"})
    assert not filtered_out(
        ORDERS, {"schema.include.list": "app", "schema.exclude.list": "app"}
    )  # include wins
