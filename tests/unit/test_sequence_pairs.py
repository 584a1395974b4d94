"""Standalone sequences at cutover (replicator.core.sequence_pairs) and their gate: pure, table-driven."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from replicator.core.cutover import Facts, SequencePlan, sequences_gate
from replicator.core.mapping import load_spec
from replicator.core.mapping.grants import Roles, grants_sql
from replicator.core.model import TableRef
from replicator.core.sequence_pairs import (
    SourceSequence,
    TargetSequence,
    pair,
    parse_pairs,
    schema_map,
)
from tests.unit.mapping.demo_catalogs import DEMO_SPEC

T = TableRef.parse
BIG = 2**63 - 1
# the demo's shape: shop's tables go to crm, catalog and sales
MAP = schema_map([(T("shop.customers"), T("crm.customer")), (T("shop.orders"), T("sales.order"))])


def src(name: str, last: int | None = 500, readable: bool = True, of_column: bool = False) -> SourceSequence:
    return SourceSequence(T(name), last, readable, of_column)


def tgt(name: str, increment: int = 1, max_value: int = BIG, settable: bool = True) -> TargetSequence:
    return TargetSequence(T(name), increment, max_value, settable)


def carried(
    sources: list[SourceSequence],
    targets: list[TargetSequence],
    named: list[tuple[TableRef, TableRef]] | None = None,
) -> dict[str, str]:
    result = pair(sources, targets, MAP, named or [], 1000)
    return {str(p.source.name): str(p.target.name) for p in result.pairs}


def test_a_same_named_sequence_is_carried_past_the_source_value_plus_the_margin() -> None:
    result = pair([src("shop.invoice_no", 500)], [tgt("shop.invoice_no")], MAP, [], 1000)
    assert [(p.plan.sequence, p.plan.source_value, p.plan.value) for p in result.pairs] == [
        ("shop.invoice_no", 500, 1500)
    ]
    assert result.pairs[0].plan.what == "standalone, from source shop.invoice_no"
    assert result.warnings == () and result.problems == ()


def test_an_unused_source_sequence_still_gets_the_margin() -> None:
    result = pair([src("shop.invoice_no", None)], [tgt("shop.invoice_no")], MAP, [], 1000)
    assert result.pairs[0].plan.value == 1000


def test_the_counterpart_may_sit_in_a_schema_the_spec_maps_the_source_schema_to() -> None:
    assert carried([src("shop.invoice_no")], [tgt("sales.invoice_no")]) == {
        "shop.invoice_no": "sales.invoice_no"
    }
    # a schema the spec does not map shop into is no counterpart
    assert carried([src("shop.invoice_no")], [tgt("billing.invoice_no")]) == {}


def test_several_counterparts_are_ambiguous_named_and_not_carried() -> None:
    result = pair([src("shop.n")], [tgt("crm.n"), tgt("sales.n")], MAP, [], 1000)
    assert result.pairs == () and result.problems == ()
    assert result.warnings == (
        "source sequence shop.n matches several target sequences (crm.n, sales.n): not carried;"
        " fix: name the pair in REPLICATOR_CUTOVER__SEQUENCES",
    )


def test_a_source_sequence_without_a_counterpart_is_named_with_the_fix_and_does_not_block() -> None:
    result = pair([src("shop.a_no"), src("shop.b_no"), src("shop.c_no")], [tgt("shop.b_no")], MAP, [], 1000)
    assert carried([src("shop.b_no")], [tgt("shop.b_no")]) == {"shop.b_no": "shop.b_no"}
    assert result.problems == ()
    assert result.warnings == (
        "source sequences without a target counterpart, not carried: shop.a_no, shop.c_no; fix: create"
        " each in the target (same schema and name, or a schema the spec maps to) or name the pair in"
        " REPLICATOR_CUTOVER__SEQUENCES",
    )


def test_a_column_sequence_goes_with_its_table_not_here() -> None:
    result = pair([src("shop.customers_id_seq", of_column=True)], [], MAP, [], 1000)
    assert result == pair([], [], MAP, [], 1000)


def test_a_named_pair_carries_sequences_whose_names_differ_and_replaces_the_automatic_match() -> None:
    named = [(T("shop.invoice_no"), T("billing.invoice_number"))]
    assert carried(
        [src("shop.invoice_no")], [tgt("shop.invoice_no"), tgt("billing.invoice_number")], named=named
    ) == {"shop.invoice_no": "billing.invoice_number"}
    # a column's sequence too, when the operator names it
    assert carried(
        [src("shop.x_seq", of_column=True)], [tgt("crm.y_seq")], named=[(T("shop.x_seq"), T("crm.y_seq"))]
    ) == {"shop.x_seq": "crm.y_seq"}


def test_a_named_pair_that_does_not_exist_blocks() -> None:
    result = pair([], [], MAP, [(T("shop.nope"), T("crm.nope"))], 1000)
    assert result.problems == (
        "REPLICATOR_CUTOVER__SEQUENCES names source sequence shop.nope, which does not exist in the source",
        "REPLICATOR_CUTOVER__SEQUENCES names target sequence crm.nope, which does not exist in the target",
    )


def test_an_unreadable_source_or_unsettable_target_blocks_with_the_grant() -> None:
    """pg_sequences shows NULL for a sequence the role may not read: set from it, the target would
    hand out numbers the source already did. Refused, with the grant that fixes it."""
    result = pair(
        [src("shop.invoice_no", None, readable=False)],
        [tgt("shop.invoice_no", settable=False)],
        MAP,
        [],
        1000,
        ("repl_src", "repl"),
    )
    assert result.problems == (
        "source sequence shop.invoice_no is not readable by repl_src (its last value is hidden);"
        " fix: GRANT SELECT ON SEQUENCE shop.invoice_no TO repl_src",
        "target sequence shop.invoice_no cannot be set by repl;"
        " fix: GRANT USAGE, SELECT, UPDATE ON SEQUENCE shop.invoice_no TO repl",
    )


def test_a_value_past_the_target_maximum_blocks_and_a_descending_target_is_left_alone() -> None:
    result = pair([src("shop.n", 32767)], [tgt("shop.n", max_value=32767)], MAP, [], 1000)
    assert result.problems and "past its maximum 32767" in result.problems[0]
    result = pair([src("shop.n")], [tgt("shop.n", increment=-1)], MAP, [], 1000)
    assert result.pairs == () and result.warnings == ("target sequence shop.n descends: left alone",)


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("", []),
        ("shop.a=crm.b", [(T("shop.a"), T("crm.b"))]),
        (" shop.a = crm.b , x.y=z.w,", [(T("shop.a"), T("crm.b")), (T("x.y"), T("z.w"))]),
    ],
)
def test_the_setting_parses_source_equals_target_pairs(
    text: str, pairs: list[tuple[TableRef, TableRef]]
) -> None:
    assert parse_pairs(text) == pairs


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("shop.a", "must be written source_schema.sequence=target_schema.sequence"),
        ("a=crm.b", "sequence 'a' must be written schema.name"),
        ("shop.a=b", "sequence 'b' must be written schema.name"),
        ("shop.a=crm.b,shop.a=crm.c", "named twice"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_pair(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_pairs(text)


def test_the_sequences_gate_fails_on_a_problem_and_warns_on_a_warning() -> None:
    facts = Facts("c", "RUNNING", ("RUNNING",), "s", True, 0, {}, 0, 0, {}, 1, "g", 1, (), "x.y", True)
    assert sequences_gate(facts).line() == "ok   sequences: 0 standalone sequences to carry"
    warned = sequences_gate(dataclasses.replace(facts, sequence_pairs=1, sequence_warnings=("w1", "w2")))
    assert warned.ok and warned.line() == "WARN sequences: 1 standalone sequences to carry; WARNING: w1 | w2"
    failed = sequences_gate(dataclasses.replace(facts, sequence_warnings=("w",), sequence_problems=("p",)))
    assert not failed.ok and failed.line() == "FAIL sequences: p"


def test_a_plan_recorded_before_standalone_sequences_still_reads() -> None:
    recorded: dict[str, Any] = dict(
        sequence="s.t_id_seq", table="s.t", column="id", target_max=5, source_value=7, margin=10
    )
    plan = SequencePlan(**recorded)
    assert plan.what == "s.t.id" and plan.value == 17


def test_print_grants_covers_the_named_pairs() -> None:
    roles = Roles("app", "app_new", "debezium", "repl_src", "repl", None, "cdc_app", "replicator")
    text = grants_sql(
        load_spec(DEMO_SPEC),
        TableRef("shop", "debezium_signal"),
        roles,
        [(T("legacy.invoice_no"), T("billing.invoice_number"))],
    )
    assert 'GRANT SELECT ON ALL SEQUENCES IN SCHEMA "shop" TO "repl_src";' in text
    assert 'GRANT USAGE ON SCHEMA "legacy" TO "repl_src";' in text
    assert 'GRANT SELECT ON SEQUENCE "legacy"."invoice_no" TO "repl_src";' in text
    assert 'GRANT USAGE ON SCHEMA "billing" TO "repl";' in text
    assert 'GRANT USAGE, SELECT, UPDATE ON SEQUENCE "billing"."invoice_number" TO "repl";' in text
    assert "legacy" not in grants_sql(load_spec(DEMO_SPEC), TableRef("shop", "debezium_signal"), roles)
