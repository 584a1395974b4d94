"""When a held row is a real error (`core.holding`), bisection cost (`core.isolate`), one event all
targets or none (`core.intents`), and verify never calling a held or errored row clean."""

from __future__ import annotations

import math
from collections.abc import Sequence

from replicator.core.holding import (
    CaptureMark,
    Hold,
    Progress,
    Refusal,
    Row,
    against_parent,
    covered_through,
    due_for_error,
    judgement_lsn,
    settle,
)
from replicator.core.intents import to_intents
from replicator.core.isolate import isolate
from replicator.core.mapping import catalog_from_dict, compile_spec, load_spec_text
from replicator.core.model import ChangeEvent, KafkaRef, Op, SourcePosition, TableRef
from replicator.core.ordering import Version
from replicator.core.verify import TableDiff
from tests.events import change

PARENT = [("parent", 0), ("parent", 1)]
OWN = ("child", 0)


def hold(judged_at: int, positioned: bool = True, held_at: float = 100.0) -> Hold:
    return Hold(OWN, TableRef("s", "parent"), judged_at, held_at, positioned)


def test_progress_covers_what_was_committed_before_the_applied_events() -> None:
    """A partition that applied an event with seq0 = c has applied every transaction committed by c."""
    assert covered_through(("parent", 0), Progress(10, 500), ()) == 500
    assert covered_through(("parent", 0), None, ()) == 0


def test_a_mark_covers_an_idle_partition_once_its_end_offset_is_applied() -> None:
    mark = CaptureMark(lsn_commit=900, ends={("parent", 0): 10}, taken_at=0)
    assert covered_through(("parent", 0), Progress(10, 500), [mark]) == 900
    assert covered_through(("parent", 0), Progress(9, 500), [mark]) == 500  # not caught up to the mark
    # a partition the mark saw empty is covered by it even with nothing applied
    assert covered_through(("parent", 2), None, [mark]) == 900


def test_a_held_row_is_an_error_only_when_every_feeder_and_its_own_partition_passed_it() -> None:
    h = hold(judged_at=700)
    progress = {("parent", 0): Progress(5, 800), ("parent", 1): Progress(3, 650), OWN: Progress(9, 900)}
    assert not due_for_error(h, PARENT, progress, ())  # parent[1] lags: the parent may still come
    progress[("parent", 1)] = Progress(3, 701)
    assert due_for_error(h, PARENT, progress, ())
    progress[OWN] = Progress(9, 700)  # its own partition not past it (a later delete may supersede it)
    assert not due_for_error(h, PARENT, progress, ())


def test_judged_strictly_after_the_row_s_own_transaction() -> None:
    """Coverage equal to seq0 of the held row is its own predecessor's commit: not enough."""
    progress = {p: Progress(1, 700) for p in (*PARENT, OWN)}
    assert not due_for_error(hold(judged_at=700), PARENT, progress, ())


def test_a_row_is_judged_at_its_parents_later_delete_and_not_while_its_parent_reads_present() -> None:
    """Point 4: a parent deleted later moves the judgement there; one whose version says present
    (the target lost it to a cascade, its own delete still to come) leaves the row unjudged."""
    h = hold(judged_at=100)
    assert against_parent(h, None) == h  # no version: judged by coverage at its own position
    deleted = Version("parent", 0, 7, SourcePosition(300, 301), deleted=True)
    assert against_parent(h, deleted) == hold(judged_at=300)
    assert against_parent(hold(judged_at=400), deleted) == hold(judged_at=400)  # never earlier
    assert against_parent(h, Version("parent", 0, 5, SourcePosition(100, 101))) is None


def test_rows_without_a_position_are_judged_only_by_marks_read_after_they_were_held() -> None:
    h = hold(judged_at=50, positioned=False, held_at=100.0)
    ends = {("parent", 0): 0, ("parent", 1): 0, OWN: 0}
    old = CaptureMark(lsn_commit=999, ends=ends, taken_at=99.0)
    new = CaptureMark(lsn_commit=999, ends=ends, taken_at=101.0)
    assert not due_for_error(h, PARENT, {}, [old])
    assert due_for_error(h, PARENT, {}, [new])


def test_rows_without_a_position_are_not_judged_by_the_feeders_applied_positions() -> None:
    """Trial 8: an incremental-snapshot row held in a fresh target's first batch is judged at 0 (its
    partition's coverage then); parent partitions that applied any streaming event are past 0, yet
    the parent may come later in them. Without a mark read after the hold it waits."""
    h = hold(judged_at=0, positioned=False, held_at=100.0)
    progress = {
        ("parent", 0): Progress(839, 1465),
        ("parent", 1): Progress(833, 1455),
        OWN: Progress(9, 2071),
    }
    assert not due_for_error(h, PARENT, progress, ())
    ends = {("parent", 0): 8000, ("parent", 1): 8000, OWN: 9}
    behind = CaptureMark(lsn_commit=3000, ends=ends, taken_at=101.0)
    assert not due_for_error(h, PARENT, progress, [behind])  # the parents have not reached it
    progress.update({("parent", 0): Progress(8000, 2900), ("parent", 1): Progress(8000, 2950)})
    assert due_for_error(h, PARENT, progress, [behind])


def test_judgement_lsn_of_streaming_snapshot_and_incremental_rows() -> None:
    streaming = change("t", Op.CREATE, "s.t", offset=0, position=SourcePosition(400, 420), after={"id": 1})
    assert judgement_lsn(streaming, 0) == 400
    snap = ChangeEvent(
        KafkaRef("t", 0, 0), Op.READ, TableRef("s", "t"), None, None, {}, None, True, 0, None, None, lsn=300
    )
    assert judgement_lsn(snap, 0) == 300
    incremental = ChangeEvent(
        KafkaRef("t", 0, 0), Op.READ, TableRef("s", "t"), None, None, {}, None, True, 0, None, None
    )
    assert judgement_lsn(incremental, 777) == 777


def test_bisection_cost_is_about_k_log_n_attempts() -> None:
    """3 bad rows of 5,000: at most 2·k·⌈log2 n⌉+1 attempts, every other row applied."""
    bad = {17, 2500, 4999}
    attempts: list[int] = []

    def attempt(chunk: Sequence[int]) -> str | None:
        attempts.append(len(chunk))
        return "bad" if bad & set(chunk) else None

    out = isolate(list(range(5000)), attempt)
    assert sorted(i for i, _ in out.failed) == sorted(bad)
    assert sorted(out.applied) == [i for i in range(5000) if i not in bad]
    assert out.attempts == len(attempts) <= 2 * len(bad) * math.ceil(math.log2(5000)) + 1
    assert isolate(list(range(5000)), lambda chunk: None).attempts == 1  # a clean batch: one statement


SPEC = """
version: 1
topic_prefix: t
tables:
  - id: customer
    source: s.customers
    target: crm.customer
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    unmapped_source_columns: ignore
    columns:
      id: {from: id}
      tier: {from: tier, value_map: {gold: G}, unmapped: reject}
  - id: pii
    source: s.customers
    target: crm.pii
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    unmapped_source_columns: ignore
    columns: {id: {from: id}, email: {from: email}}
"""


def test_one_event_feeding_two_tables_is_applied_to_none_when_one_rejects_it() -> None:
    catalog = catalog_from_dict(
        {
            "crm.customer": {"columns": {"id": "bigint not null", "tier": "text"}, "pk": ["id"]},
            "crm.pii": {"columns": {"id": "bigint not null", "email": "text"}, "pk": ["id"]},
        }
    )
    plan = compile_spec(load_spec_text(SPEC, "two.yaml"), catalog)
    good = change(
        "t.s.customers",
        Op.CREATE,
        "s.customers",
        offset=0,
        position=SourcePosition(1, 2),
        after={"id": 1, "tier": "gold", "email": "a@x"},
    )
    bad = change(
        "t.s.customers",
        Op.CREATE,
        "s.customers",
        offset=1,
        position=SourcePosition(1, 3),
        after={"id": 2, "tier": "tin", "email": "b@x"},
    )
    out = to_intents([good, bad], plan)
    assert [i.key for i in out.by_table[TableRef("crm", "customer")]] == [(1,)]
    assert [i.key for i in out.by_table[TableRef("crm", "pii")]] == [(1,)]  # not (2,): all or none
    (failure,) = out.failures
    assert failure.target == TableRef("crm", "customer") and failure.rule_id == "customer.tier"
    assert failure.also == (("crm.pii", "[2]"),)
    assert "not applied to crm.pii either" in failure.message


def test_verify_never_calls_a_held_or_errored_row_clean() -> None:
    clean = TableDiff(TableRef("s", "t"), expected=2, actual=2)
    assert clean.clean()
    held = TableDiff(TableRef("s", "t"), expected=2, actual=1, held=["[2]"])
    assert not held.clean() and not held.clean(accept_errors=True)
    errored = TableDiff(TableRef("s", "t"), expected=2, actual=1, errored=["[2]"])
    assert not errored.clean() and errored.clean(accept_errors=True)
    assert "errored=1 (open error records)" in errored.summary() and "held=1" in held.summary()


def test_verify_never_calls_a_row_rejected_by_a_rule_clean_unseen() -> None:
    """A source row the spec cannot map (a cast refuses its value) is an error record, not a row:
    the target lacks it, so verify is not clean until the operator accepts the error records."""
    rejected = TableDiff(TableRef("s", "t"), expected=1, actual=1, rejected=[("[2]", "t.n")])
    assert not rejected.clean() and rejected.clean(accept_errors=True)
    assert "rejected=1 (by a rule)" in rejected.summary()


def test_dense_failures_go_row_by_row_in_one_call_per_chunk() -> None:
    """30% bad rows: the failed batch is cut into leaf chunks, each applied row by row in one call
    (the server-side loop); far fewer calls than bisection's two per bad row."""
    bad = {i for i in range(5000) if i % 10 < 3}
    leaf_calls: list[int] = []

    def attempt(chunk: Sequence[int]) -> str | None:
        return "bad" if bad & set(chunk) else None

    def leaf(chunk: Sequence[int]) -> list[tuple[int, str]]:
        leaf_calls.append(len(chunk))
        return [(i, "bad") for i, item in enumerate(chunk) if item in bad]

    out = isolate(list(range(5000)), attempt, leaf, 256)
    assert sorted(i for i, _ in out.failed) == sorted(bad)
    assert sorted(out.applied) == [i for i in range(5000) if i not in bad]
    assert sum(leaf_calls) == 5000 and max(leaf_calls) <= 256  # every row once, in chunks of 256
    assert out.attempts <= 2 * math.ceil(5000 / 256) + 1


def test_sparse_failures_with_a_leaf_stay_cheap() -> None:
    """3 bad rows of 5,000 with the leaf: one attempt per chunk of 256 and one loop per bad chunk."""
    bad = {17, 2500, 4999}
    out = isolate(
        list(range(5000)),
        lambda chunk: "bad" if bad & set(chunk) else None,
        lambda chunk: [(i, "bad") for i, item in enumerate(chunk) if item in bad],
        256,
    )
    assert sorted(i for i, _ in out.failed) == sorted(bad)
    assert out.attempts == 1 + math.ceil(5000 / 256) + len(bad)


def refusal(event: str, waits_for: tuple[str, str | None] | None, covered: bool = True) -> Refusal:
    return Refusal((event,), waits_for, covered)


# The rows each event writes: a project, its task, the task's comment (and a project's second row).
WRITES: dict[str, list[Row]] = {
    "p": [("s.project", "[1]")],
    "t": [("s.task", "[2]")],
    "c": [("s.comment", "[3]")],
}
CHAIN = [
    refusal("p", ("s.account", "[9]")),  # its account is truly absent: an error record
    refusal("t", ("s.project", "[1]")),
    refusal("c", ("s.task", "[2]")),
]
HELD: dict[Row, int] = {("s.project", "[1]"): 1, ("s.task", "[2]"): 1, ("s.comment", "[3]"): 1}


def test_a_chain_under_an_absent_root_settles_in_one_pass() -> None:
    """The task's project and the comment's task are no longer held once they are error records."""
    assert settle(CHAIN, HELD, WRITES, ["p", "t", "c"]) == [True, True, True]
    # the same chain arriving in one batch (no event held before): only coverage keeps them waiting
    assert settle(CHAIN, {}, WRITES, []) == [True, True, True]


def test_a_row_waits_while_an_event_outside_the_batch_still_holds_its_parent() -> None:
    held = {**HELD, ("s.project", "[1]"): 2}  # another event for project 1, held, not retried here
    assert settle(CHAIN, held, WRITES, ["p", "t", "c"]) == [True, False, False]
    held = {**HELD, ("s.project", None): 1}  # an event for a project whose key is not known
    assert settle(CHAIN, held, WRITES, ["p", "t", "c"]) == [True, False, False]


def test_a_row_not_covered_keeps_the_rows_awaiting_it_waiting() -> None:
    chain = [CHAIN[0], refusal("t", ("s.project", "[1]"), covered=False), CHAIN[2]]
    assert settle(chain, HELD, WRITES, ["p", "t", "c"]) == [True, False, False]
    # a row that cannot be held is an error record whatever it waits for
    assert settle([refusal("x", None), *CHAIN[1:]], HELD, {**WRITES, "x": WRITES["p"]}, ["t", "c"]) == [
        True,
        False,  # the project's held event "p" is not in this batch
        False,
    ]


def test_every_row_of_a_held_event_is_held() -> None:
    """A split: the user's event writes its account and its profile; held for its profile, a project
    awaiting its account waits for it."""
    writes: dict[str, list[Row]] = {
        "u": [("s.profile", "[1]"), ("s.account", "[1]")],
        "p": [("s.project", "[5]")],
    }
    held: dict[Row, int] = {("s.profile", "[1]"): 1, ("s.account", "[1]"): 1}
    rows = [refusal("u", ("s.plan", "[7]"), covered=False), refusal("p", ("s.account", "[1]"))]
    assert settle(rows, held, writes, ["u"]) == [False, False]
    rows = [refusal("u", ("s.plan", "[7]")), refusal("p", ("s.account", "[1]"))]  # the plan is absent
    assert settle(rows, held, writes, ["u"]) == [True, True]


def test_rows_waiting_for_any_row_of_a_table_or_any_table() -> None:
    rows = [*CHAIN, refusal("d", ("s.task", None)), refusal("e", ("*.*", None))]
    writes: dict[str, list[Row]] = {
        **WRITES,
        "d": [("s.x", "[1]")],
        "e": [("s.y", "[1]")],
    }  # new events: not counted
    assert settle(rows, HELD, writes, ["p", "t", "c"]) == [True] * 5
    held: dict[Row, int] = {**HELD, ("s.other", "[1]"): 1}  # held elsewhere: "e" waits for any held row
    assert settle(rows, held, writes, ["p", "t", "c"]) == [True, True, True, True, False]
    held = {**HELD, ("s.task", "[8]"): 1}  # another task held: "d" waits for any task
    assert settle(rows, held, writes, ["p", "t", "c"]) == [True, True, True, False, False]


def test_an_event_held_by_one_of_its_rows_stays_held() -> None:
    """An event in two refused rows, one of them still held: what awaits its other row waits."""
    writes: dict[str, list[Row]] = {"u": [("s.a", "[1]"), ("s.b", "[1]")], "k": [("s.k", "[1]")]}
    rows = [
        refusal("u", ("s.x", "[1]")),
        refusal("u", ("s.y", "[1]"), covered=False),
        refusal("k", ("s.a", "[1]")),
    ]
    assert settle(rows, {("s.a", "[1]"): 1, ("s.b", "[1]"): 1}, writes, ["u"]) == [True, False, False]


def test_a_row_never_waits_for_its_own_held_event() -> None:
    """Trial 18: a customer reusing another's vat_no (a row that never changes), held once while
    not covered, waited for "any row of its table" for good: its own held event was such a row."""
    writes: dict[str, list[Row]] = {"v": [("s.customer", "[7]")], "w": [("s.customer", "[8]")]}
    row = refusal("v", ("s.customer", None))
    assert settle([row], {("s.customer", "[7]"): 1}, writes, ["v"]) == [True]
    assert settle([refusal("v", ("*.*", None))], {("s.customer", "[7]"): 1}, writes, ["v"]) == [True]
    # another held event of the table (a swap's other half) is waited for
    held: dict[Row, int] = {("s.customer", "[7]"): 1, ("s.customer", "[9]"): 1}
    assert settle([row], held, writes, ["v"]) == [False]
    # and the wait ends in the same pass once that one becomes an error record (its account absent)
    held = {("s.customer", "[7]"): 1, ("s.customer", "[8]"): 1}
    assert settle([refusal("w", ("s.account", "[1]")), row], held, writes, ["v", "w"]) == [True, True]
