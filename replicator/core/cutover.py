"""The cutover state machine and its gates. Pure: facts in, verdicts and next states out.

A cutover moves authority from the source to the target in steps, each one
persisted before the next starts (`target.store`), so a cutover process that
dies anywhere can be resumed or aborted from where it stopped:

    planned -> gated -> fenced -> draining -> drained -> sequences -> [paused] -> flipped
       \\________\\_______\\__________\\__________\\___________\\___________/--> aborted
    flipped -> rolled_back   (only while nothing was written to the target since the flip)

Invariants:
- `advance(state, step)` is the only way to a next state; anything else is a
  `CutoverError` naming the state and what can be done from it.
- Before `fenced` nothing has changed anywhere; from `fenced` until `flipped`
  the source is fenced, and `aborted` is reached only after it is unfenced
  again (the driver unfences, then records `aborted`).
- Authority flips once, in `flipped`; `aborted` never flips it.
- Every gate gives one line: its name, ok or not, what was measured and the
  bound; a cutover starts only when every gate passes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from replicator.core.errors import ReplicatorError


class State(enum.StrEnum):
    PLANNED = "planned"
    GATED = "gated"
    FENCED = "fenced"
    DRAINING = "draining"
    DRAINED = "drained"
    SEQUENCES = "sequences"
    PAUSED = "paused"  # waiting for `cutover --resume` before the flip
    FLIPPED = "flipped"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


class Step(enum.StrEnum):
    GATES_PASSED = "gates_passed"
    FENCE = "fence"
    DRAIN = "drain"
    DRAINED = "drained"
    SEQUENCES = "sequences"
    PAUSE = "pause"
    FLIP = "flip"
    ABORT = "abort"
    ROLLBACK = "rollback"


FINAL: frozenset[State] = frozenset({State.FLIPPED, State.ABORTED, State.ROLLED_BACK})
FENCED_STATES: frozenset[State] = frozenset(
    {State.FENCED, State.DRAINING, State.DRAINED, State.SEQUENCES, State.PAUSED}
)

_NEXT: Mapping[tuple[State, Step], State] = {
    (State.PLANNED, Step.GATES_PASSED): State.GATED,
    (State.GATED, Step.FENCE): State.FENCED,
    (State.FENCED, Step.DRAIN): State.DRAINING,
    (State.DRAINING, Step.DRAINED): State.DRAINED,
    (State.DRAINED, Step.SEQUENCES): State.SEQUENCES,
    (State.SEQUENCES, Step.PAUSE): State.PAUSED,
    (State.SEQUENCES, Step.FLIP): State.FLIPPED,
    (State.PAUSED, Step.FLIP): State.FLIPPED,
    (State.FLIPPED, Step.ROLLBACK): State.ROLLED_BACK,
    **{(s, Step.ABORT): State.ABORTED for s in State if s not in FINAL},
}


class CutoverError(ReplicatorError):
    """A step that the current state does not allow, or a cutover that cannot go on."""


def advance(state: State, step: Step) -> State:
    """The state after `step`; raises CutoverError when `state` does not allow it."""
    nxt = _NEXT.get((state, step))
    if nxt is None:
        allowed = sorted(s.value for (st, s) in _NEXT if st is state)
        raise CutoverError(
            f"a cutover in state {state.value!r} cannot {step.value}; "
            + (f"it can: {', '.join(allowed)}" if allowed else "it is finished")
        )
    return nxt


def resume_step(state: State, pause_before_flip: bool) -> Step | None:
    """What `cutover --resume` does next from `state` (None: nothing, it is finished)."""
    return {
        State.PLANNED: Step.GATES_PASSED,
        State.GATED: Step.FENCE,
        State.FENCED: Step.DRAIN,
        State.DRAINING: Step.DRAINED,
        State.DRAINED: Step.SEQUENCES,
        State.SEQUENCES: Step.PAUSE if pause_before_flip else Step.FLIP,
        State.PAUSED: Step.FLIP,
    }.get(state)


def next_action(state: State) -> str:
    """What the operator can do next, in one line (for `cutover status`)."""
    return {
        State.PLANNED: "run `replicator cutover --resume` (checks the gates) or `--abort`",
        State.GATED: "run `replicator cutover --resume` (fences the source) or `--abort`",
        State.FENCED: "the source is fenced: `replicator cutover --resume` drains, `--abort` unfences",
        State.DRAINING: "the source is fenced: `replicator cutover --resume` drains, `--abort` unfences",
        State.DRAINED: "the source is fenced: `replicator cutover --resume` sets sequences and flips",
        State.SEQUENCES: "the source is fenced: `replicator cutover --resume` flips, `--abort` unfences",
        State.PAUSED: "paused before the flip: `replicator cutover --resume` flips, `--abort` unfences",
        State.FLIPPED: "the target is authoritative; `replicator cutover rollback` only while nothing"
        " was written to it",
        State.ABORTED: "the source is authoritative and writable; start a new cutover when ready",
        State.ROLLED_BACK: "the source is authoritative and writable again",
    }[state]


# --------------------------------------------------------------------------- gates


@dataclass(frozen=True, slots=True)
class Bounds:
    max_lag_events: int
    max_retained_wal_bytes: int
    max_held_age_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Facts:
    """What the driver measured before the fence."""

    connector: str
    connector_state: str | None  # None: the connector does not exist
    task_states: tuple[str, ...]
    slot: str | None
    slot_active: bool | None  # None: no such slot
    retained_wal_bytes: int | None
    lag: Mapping[str, int]  # "topic[partition]" -> events the group has not applied
    held_rows: int
    error_records: int
    partition_changes: Mapping[str, tuple[int, int]]  # topic -> (recorded, now)
    consumers: int  # members of the replicator's consumer group (the drain needs one)
    group: str
    fence_grants: int  # write grants the fence would revoke
    fence_problems: tuple[str, ...]  # why the fence could not hold (a role missing, a foreign grant)
    signal_table: str
    signal_table_exists: bool
    # The latest shadow run's would-be error records: None = not required, -1 = no shadow run yet.
    shadow_errors: int | None = None
    # One line per target table a source schema change stopped (`core.schema_change`).
    stopped_tables: tuple[str, ...] = ()
    # Of `held_rows`, those held longer than `Bounds.max_held_age_s` (None: not measured, all count).
    held_stuck: int | None = None
    # Standalone sequences (`core.sequence_pairs`): pairs carried, warning lines, problem lines.
    sequence_pairs: int = 0
    sequence_warnings: tuple[str, ...] = ()
    sequence_problems: tuple[str, ...] = ()
    # Per application role, what it lacks to write the mapped tables in the target (`app_access`).
    app_target_problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Gate:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # passes, but names something the operator must look at

    def line(self) -> str:
        return f"{'FAIL' if not self.ok else 'WARN' if self.warning else 'ok  '} {self.name}: {self.detail}"


def evaluate_gates(facts: Facts, bounds: Bounds, accept_errors: bool) -> list[Gate]:
    """Every gate's verdict, one line each (all are evaluated, whatever fails first)."""
    tasks = ", ".join(facts.task_states) or "none"
    running = (
        facts.connector_state == "RUNNING"
        and bool(facts.task_states)
        and all(t == "RUNNING" for t in facts.task_states)
    )
    gates = [
        Gate(
            "connector",
            running,
            f"{facts.connector} is {facts.connector_state or 'missing'}, tasks {tasks}"
            + ("" if running else "; fix: `replicator connectors status`, restart the connector"),
        )
    ]
    if facts.slot_active is None:
        gates.append(Gate("slot", False, f"replication slot {facts.slot or '?'} does not exist"))
    else:
        retained = facts.retained_wal_bytes or 0
        ok = facts.slot_active and retained <= bounds.max_retained_wal_bytes
        gates.append(
            Gate(
                "slot",
                ok,
                f"{facts.slot} {'active' if facts.slot_active else 'INACTIVE'}, retains {retained}"
                f" bytes of WAL (bound {bounds.max_retained_wal_bytes})",
            )
        )
    worst = max(facts.lag.values(), default=0)
    behind = sorted(p for p, n in facts.lag.items() if n > bounds.max_lag_events)
    gates.append(
        Gate(
            "lag",
            not behind,
            f"largest lag {worst} events (bound {bounds.max_lag_events})"
            + (f"; behind: {', '.join(behind[:5])}" if behind else ""),
        )
    )
    # Rows in motion (a child whose parent is a few events behind on another partition) are
    # normal while the application writes; the drain after the fence waits until none is held.
    stuck = facts.held_rows if facts.held_stuck is None else facts.held_stuck
    gates.append(
        Gate(
            "held_rows",
            stuck == 0,
            f"{facts.held_rows} rows held back waiting for a lagging table"
            + (
                f", {stuck} of them for longer than {bounds.max_held_age_s:g} s;"
                " see `replicator status` (REPLICATOR_CUTOVER__MAX_HELD_AGE_S)"
                if stuck
                else (
                    f", none for longer than {bounds.max_held_age_s:g} s (in motion: the drain"
                    " after the fence waits for them)"
                    if facts.held_rows
                    else ""
                )
            ),
        )
    )
    gates.append(
        Gate(
            "stopped_tables",
            not facts.stopped_tables,
            "; ".join(facts.stopped_tables[:3])
            + (f" (and {len(facts.stopped_tables) - 3} more)" if len(facts.stopped_tables) > 3 else "")
            if facts.stopped_tables
            else "no table stopped by a source schema change or a partition count change",
        )
    )
    errors_ok = facts.error_records == 0 or accept_errors
    gates.append(
        Gate(
            "error_records",
            errors_ok,
            f"{facts.error_records} error records"
            + (" (accepted with --accept-errors)" if facts.error_records and accept_errors else "")
            + ("" if errors_ok else "; fix them (`replicator errors list`) or pass --accept-errors"),
        )
    )
    changed = ", ".join(f"{t}: {a} -> {b}" for t, (a, b) in sorted(facts.partition_changes.items()))
    gates.append(
        Gate(
            "partitions",
            not changed,
            f"{changed}; fix: `replicator partitions accept --topic <topic> --yes`, then `replicator reload`"
            if changed
            else "partition counts as recorded",
        )
    )
    gates.append(
        Gate(
            "replicator",
            facts.consumers > 0,
            f"{facts.consumers} consumers of group {facts.group} running"
            + ("" if facts.consumers else "; fix: start `replicator run` (the drain needs it)"),
        )
    )
    gates.append(
        Gate(
            "fence",
            not facts.fence_problems and facts.fence_grants > 0,
            "; ".join(facts.fence_problems)
            if facts.fence_problems
            else f"{facts.fence_grants} write grants to revoke"
            + ("" if facts.fence_grants else "; fix: REPLICATOR_CUTOVER__APP_ROLES (no role can write)"),
        )
    )
    gates.append(
        Gate(
            "signal_table",
            facts.signal_table_exists,
            f"{facts.signal_table} exists"
            if facts.signal_table_exists
            else f"{facts.signal_table} is missing; fix: create it, or set REPLICATOR_SIGNAL_TABLE",
        )
    )
    gates.append(sequences_gate(facts))
    gates.append(app_target_gate(facts))
    if facts.shadow_errors is not None:
        gates.append(
            Gate(
                "shadow",
                facts.shadow_errors == 0,
                "no finished shadow run; fix: `replicator shadow` first"
                if facts.shadow_errors < 0
                else f"the latest shadow preview predicts {facts.shadow_errors} error records",
            )
        )
    return gates


def sequences_gate(facts: Facts) -> Gate:
    """Standalone sequences: a problem fails (the target would hand out numbers the source already
    did); a source sequence left uncarried only warns (the application may not use it)."""
    carried = f"{facts.sequence_pairs} standalone sequences to carry"
    if facts.sequence_problems:
        return Gate("sequences", False, " | ".join(facts.sequence_problems))
    if facts.sequence_warnings:
        return Gate("sequences", True, f"{carried}; WARNING: {' | '.join(facts.sequence_warnings)}", True)
    return Gate("sequences", True, carried)


def app_target_gate(facts: Facts) -> Gate:
    """A warning, never a stop: the application may write the target as roles of its own, which
    the replicator is not told about; the flip itself does not need their grants."""
    if facts.app_target_problems:
        return Gate("app_target", True, "WARNING: " + " | ".join(facts.app_target_problems), True)
    return Gate("app_target", True, "the application roles can write every mapped table in the target")


def verify_gate(lines: Sequence[str], clean: bool) -> Gate:
    """The target equals the mapped source after the drain (`replicator verify`, the fenced source)."""
    return Gate("verify", clean, "clean" if clean else " | ".join(lines))


def target_only_gate(target_only: Mapping[str, int], accept: bool) -> Gate:
    """Rows that exist only in the target (dual writes) after the drain: listed, accepted only
    when the spec declares them target-owned (not counted here) or the operator accepts them."""
    total = sum(target_only.values())
    detail = ", ".join(f"{t}={n}" for t, n in sorted(target_only.items()) if n) or "none"
    return Gate(
        "target_only_rows",
        total == 0 or accept,
        f"rows only in the target: {detail}"
        + (" (accepted with --accept-target-only)" if total and accept else "")
        + (
            ""
            if total == 0 or accept
            else "; declare them `target_owned_rows: true` or pass --accept-target-only"
        ),
    )


# --------------------------------------------------------------------------- sequences


@dataclass(frozen=True, slots=True)
class SequencePlan:
    """One target sequence (identity, serial or default of a column; or standalone, paired with a
    source sequence: no table, no column) and where it must be set."""

    sequence: str
    table: str
    column: str
    target_max: int | None
    source_value: int | None
    margin: int
    source_sequence: str | None = None  # standalone: the source sequence it is carried from

    @property
    def what(self) -> str:
        """What the sequence serves, for one line of output."""
        if self.source_sequence:
            return f"standalone, from source {self.source_sequence}"
        return f"{self.table}.{self.column}"

    @property
    def value(self) -> int:
        """Past every mapped key and past the source sequence, plus the margin."""
        return max(self.target_max or 0, self.source_value or 0) + self.margin


# --------------------------------------------------------------------------- report


@dataclass(slots=True)
class Report:
    """What `cutover status` and the cutover report show."""

    cutover_id: str | None
    authority: str
    state: State | None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (at, to_state, operator)
    fence_lsn: int | None = None
    fenced_at: str | None = None
    flipped_at: str | None = None
    window_s: float | None = None
    gates: Sequence[Gate] = ()
    sequences: Sequence[SequencePlan] = ()
    reason: str | None = None

    @property
    def next_action(self) -> str:
        return (
            next_action(self.state)
            if self.state is not None
            else "no cutover yet: `replicator cutover --dry-run`"
        )
