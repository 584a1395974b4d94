"""The cutover state machine, its gates and sequence plans (replicator.core.cutover): pure, table-driven."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from replicator.core.cutover import (
    FINAL,
    Bounds,
    CutoverError,
    Facts,
    SequencePlan,
    State,
    Step,
    advance,
    evaluate_gates,
    next_action,
    resume_step,
    target_only_gate,
    verify_gate,
)
from replicator.core.intents import FENCE_PREFIX, split_signals
from replicator.core.mapping import catalog_from_dict, compile_spec, load_spec_text
from replicator.core.model import Op, SourcePosition, TableRef
from replicator.core.verify import diff
from tests.events import change

HAPPY_PATH = [
    (State.PLANNED, Step.GATES_PASSED, State.GATED),
    (State.GATED, Step.FENCE, State.FENCED),
    (State.FENCED, Step.DRAIN, State.DRAINING),
    (State.DRAINING, Step.DRAINED, State.DRAINED),
    (State.DRAINED, Step.SEQUENCES, State.SEQUENCES),
    (State.SEQUENCES, Step.FLIP, State.FLIPPED),
    (State.SEQUENCES, Step.PAUSE, State.PAUSED),
    (State.PAUSED, Step.FLIP, State.FLIPPED),
    (State.FLIPPED, Step.ROLLBACK, State.ROLLED_BACK),
]


@pytest.mark.parametrize(("state", "step", "after"), HAPPY_PATH)
def test_advance_follows_the_persisted_order(state: State, step: Step, after: State) -> None:
    assert advance(state, step) is after


@pytest.mark.parametrize("state", [s for s in State if s not in FINAL])
def test_every_unfinished_state_can_abort(state: State) -> None:
    assert advance(state, Step.ABORT) is State.ABORTED


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (State.PLANNED, Step.FLIP),  # no flip without gates, fence and drain
        (State.GATED, Step.DRAIN),  # no drain before the fence
        (State.DRAINING, Step.FLIP),  # no flip before the drain ends
        (State.FLIPPED, Step.ABORT),  # a flip is undone by rollback, not abort
        (State.ABORTED, Step.ROLLBACK),
        (State.ROLLED_BACK, Step.FLIP),
    ],
)
def test_advance_refuses_a_step_the_state_does_not_allow(state: State, step: Step) -> None:
    with pytest.raises(CutoverError, match=f"state '{state.value}' cannot {step.value}"):
        advance(state, step)


@pytest.mark.parametrize(
    ("state", "pause", "step"),
    [
        (State.PLANNED, False, Step.GATES_PASSED),
        (State.GATED, False, Step.FENCE),
        (State.FENCED, False, Step.DRAIN),
        (State.DRAINING, False, Step.DRAINED),
        (State.DRAINED, False, Step.SEQUENCES),
        (State.SEQUENCES, False, Step.FLIP),
        (State.SEQUENCES, True, Step.PAUSE),
        (State.PAUSED, False, Step.FLIP),
        (State.FLIPPED, False, None),
        (State.ABORTED, False, None),
        (State.ROLLED_BACK, False, None),
    ],
)
def test_resume_goes_on_from_the_recorded_state(state: State, pause: bool, step: Step | None) -> None:
    assert resume_step(state, pause) == step
    if step is not None:
        advance(state, step)  # what resume does is always a legal step


def test_every_state_tells_the_operator_what_next() -> None:
    for state in State:
        assert next_action(state)


def good_facts(**changes: Any) -> Facts:
    facts = Facts(
        connector="c",
        connector_state="RUNNING",
        task_states=("RUNNING",),
        slot="s",
        slot_active=True,
        retained_wal_bytes=100,
        lag={"t[0]": 3, "t[1]": 0},
        held_rows=0,
        error_records=0,
        partition_changes={},
        consumers=1,
        group="g",
        fence_grants=4,
        fence_problems=(),
        signal_table="shop.debezium_signal",
        signal_table_exists=True,
    )
    return dataclasses.replace(facts, **changes)


BOUNDS = Bounds(max_lag_events=10, max_retained_wal_bytes=1000)


def failed(facts: Facts, accept_errors: bool = False) -> list[str]:
    return [g.name for g in evaluate_gates(facts, BOUNDS, accept_errors) if not g.ok]


def test_every_gate_passes_on_a_healthy_migration() -> None:
    gates = evaluate_gates(good_facts(), BOUNDS, accept_errors=False)
    assert [g.name for g in gates] == [
        "connector", "slot", "lag", "held_rows", "stopped_tables", "error_records", "partitions",
        "replicator", "fence", "signal_table", "sequences", "app_target",
    ]  # fmt: skip
    assert all(g.ok and not g.warning for g in gates)


@pytest.mark.parametrize(
    ("changes", "gate", "says"),
    [
        ({"connector_state": "PAUSED"}, "connector", "c is PAUSED"),
        ({"task_states": ("FAILED",)}, "connector", "tasks FAILED"),
        ({"connector_state": None, "task_states": ()}, "connector", "missing"),
        ({"slot_active": None}, "slot", "does not exist"),
        ({"slot_active": False}, "slot", "INACTIVE"),
        ({"retained_wal_bytes": 1001}, "slot", "retains 1001 bytes"),
        ({"lag": {"t[0]": 11, "t[1]": 0}}, "lag", "behind: t[0]"),
        ({"held_rows": 2}, "held_rows", "2 rows held back"),
        (
            {"stopped_tables": ("crm.customer stopped at t[0]@7 (customer.on_schema_change): x; fix: y",)},
            "stopped_tables",
            "crm.customer stopped at t[0]@7",
        ),
        ({"error_records": 5}, "error_records", "--accept-errors"),
        ({"partition_changes": {"t": (3, 4)}}, "partitions", "t: 3 -> 4"),
        ({"consumers": 0}, "replicator", "start `replicator run`"),
        ({"fence_grants": 0}, "fence", "REPLICATOR_CUTOVER__APP_ROLES"),
        ({"fence_problems": ("role x does not exist",)}, "fence", "role x does not exist"),
        ({"signal_table_exists": False}, "signal_table", "REPLICATOR_SIGNAL_TABLE"),
        ({"shadow_errors": -1}, "shadow", "no finished shadow run"),
        ({"shadow_errors": 3}, "shadow", "predicts 3 error records"),
    ],
)
def test_each_gate_fails_alone_on_its_own_fault_with_one_line(
    changes: dict[str, Any], gate: str, says: str
) -> None:
    gates = evaluate_gates(good_facts(**changes), BOUNDS, accept_errors=False)
    bad = [g for g in gates if not g.ok]
    assert [g.name for g in bad] == [gate]
    assert says in bad[0].line() and bad[0].line().startswith(f"FAIL {gate}: ")
    assert "\n" not in bad[0].line()


def test_an_application_role_that_cannot_write_the_target_is_a_warning_not_a_stop() -> None:
    """The flip does not need the application's grants in the target, but the application does
    right after it: the gate passes and names what each role lacks."""
    lines = ("role app lacks INSERT on s.t in the target: x", "role other does not exist in the target: y")
    gates = evaluate_gates(good_facts(app_target_problems=lines), BOUNDS, accept_errors=False)
    gate = next(g for g in gates if g.name == "app_target")
    assert gate.ok and gate.warning
    assert gate.line() == f"WARN app_target: WARNING: {lines[0]} | {lines[1]}"
    assert failed(good_facts(app_target_problems=lines)) == []


def test_error_records_pass_only_when_accepted_and_the_line_says_so() -> None:
    assert failed(good_facts(error_records=5)) == ["error_records"]
    gates = evaluate_gates(good_facts(error_records=5), BOUNDS, accept_errors=True)
    gate = next(g for g in gates if g.name == "error_records")
    assert gate.ok and "5 error records (accepted with --accept-errors)" in gate.detail


def test_a_lag_at_the_bound_passes() -> None:
    assert failed(good_facts(lag={"t[0]": 10})) == []


def test_target_only_rows_block_unless_accepted() -> None:
    assert target_only_gate({}, accept=False).ok
    blocked = target_only_gate({"s.parent": 1, "s.child": 0}, accept=False)
    assert not blocked.ok and "s.parent=1" in blocked.detail and "s.child" not in blocked.detail
    assert "--accept-target-only" in blocked.detail
    accepted = target_only_gate({"s.parent": 1}, accept=True)
    assert accepted.ok and "accepted" in accepted.detail


def test_verify_gate_names_the_unclean_tables() -> None:
    assert verify_gate([], clean=True).ok
    gate = verify_gate(["FAIL s.parent: missing=1", "FAIL s.child: extra=2"], clean=False)
    assert not gate.ok and gate.detail == "FAIL s.parent: missing=1 | FAIL s.child: extra=2"


@pytest.mark.parametrize(
    ("target_max", "source_value", "margin", "value"),
    [
        (100, 50, 10, 110),  # past the mapped keys
        (50, 100, 10, 110),  # past the source sequence
        (None, None, 1000, 1000),  # empty table, unused sequence
        (None, 7, 0, 7),
    ],
)
def test_a_sequence_is_set_past_the_target_keys_and_the_source_sequence(
    target_max: int | None, source_value: int | None, margin: int, value: int
) -> None:
    assert SequencePlan("s.seq", "s.t", "id", target_max, source_value, margin).value == value


def test_signal_events_are_split_out_and_only_fence_rows_are_fences() -> None:
    pos = SourcePosition(1, 1, 0)
    fence_row = change(
        "p.s.debezium_signal", Op.CREATE, "s.debezium_signal", offset=1, position=pos,
        after={"id": f"{FENCE_PREFIX}abc", "type": "log", "data": "{}"},
    )  # fmt: skip
    snapshot_signal = change(
        "p.s.debezium_signal", Op.CREATE, "s.debezium_signal", offset=2, position=pos,
        after={"id": "snap-1", "type": "execute-snapshot", "data": "{}"},
    )  # fmt: skip
    deleted_fence = change(
        "p.s.debezium_signal", Op.DELETE, "s.debezium_signal", offset=3, position=pos,
        before={"id": f"{FENCE_PREFIX}abc"},
    )  # fmt: skip
    row = change("p.s.items", Op.CREATE, "s.items", offset=4, position=pos, after={"id": 1})
    events, fences, signals = split_signals(
        [fence_row, snapshot_signal, deleted_fence, row], TableRef.parse("s.debezium_signal")
    )
    assert events == [row]
    assert [(f.fence_id, f.ref.offset) for f in fences] == [(f"{FENCE_PREFIX}abc", 1)]
    assert signals == 3
    assert split_signals([fence_row, row], None) == ([fence_row, row], [], 0)


OWNED_SPEC = """
version: 1
topic_prefix: t
tables:
  - id: items
    source: src.items
    target: dst.items
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: ignore}}
    target_owned_rows: {owned}
    columns: {{id: {{from: id}}, name: {{from: name}}}}
"""


@pytest.mark.parametrize("owned", [False, True])
def test_rows_only_in_the_target_are_extra_unless_the_spec_declares_them_target_owned(owned: bool) -> None:
    catalog = catalog_from_dict(
        {"dst.items": {"columns": {"id": "bigint not null", "name": "text"}, "pk": ["id"]}}
    )
    plan = compile_spec(load_spec_text(OWNED_SPEC.format(owned=str(owned).lower()), "items.yaml"), catalog)
    table = plan.tables[0]
    expected = {"[1]": {"id": 1, "name": "a"}}
    actual = {"[1]": {"id": 1, "name": "a"}, "[2]": {"id": 2, "name": "made in the target"}}
    result = diff(table, expected, [], actual, "__debezium_unavailable_value")
    assert (result.extra, result.target_owned) == (([], ["[2]"]) if owned else (["[2]"], []))
    assert result.clean(accept_errors=False) is owned


def test_rows_held_briefly_are_in_motion_and_do_not_refuse_the_cutover() -> None:
    """Trial 2: under 60 tx/s with FK chains across partitions, 8 to 24 rows were always held for
    a second or two, so the held_rows gate refused every cutover while the application wrote.
    Only rows held longer than `max_held_age_s` refuse it; the drain after the fence still waits
    until nothing is held."""
    moving = good_facts(held_rows=12, held_stuck=0)
    gate = next(g for g in evaluate_gates(moving, BOUNDS, accept_errors=False) if g.name == "held_rows")
    assert gate.ok and "12 rows held back" in gate.detail and "in motion" in gate.detail
    stuck = good_facts(held_rows=12, held_stuck=3)
    gate = next(g for g in evaluate_gates(stuck, BOUNDS, accept_errors=False) if g.name == "held_rows")
    assert not gate.ok and "3 of them for longer than 60 s" in gate.detail
