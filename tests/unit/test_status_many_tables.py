"""`status` for a schema of many tables (trial 13: 119 tables, 357 partitions, 488 lines, a halted
run's reason of about 600 characters once per table): the totals count every table by state,
`--table` globs choose tables by target, topic or source, and a reason shared by several tables is
printed once with how many and which."""

from __future__ import annotations

from typing import Any

from replicator.run.status import (
    after_flip,
    held_problems,
    select_tables,
    shown_line,
    status_totals,
    stuck_held,
    table_lines,
    totals_line,
)

HALT = "run r1 halted at 2026-12-07T10:00:00+00:00: " + "the target refused the batch " * 20
FIX = "fix the cause, then start that run's instance again (REPLICATOR_KAFKA__INSTANCE_ID=one)"


def _table(name: str, state: str = "running", reason: str | None = None, fix: str | None = None,
           **more: Any) -> dict[str, Any]:  # fmt: skip
    return {"table": name, "topic": f"app.{name}", "state": state, "reason": reason, "fix": fix, **more}


def _partition(topic: str, lag: int = 0, errors: int = 0, stopped: bool = False) -> dict[str, Any]:
    return {"topic": topic, "partition": 0, "lag": lag, "errors": errors, "stopped": stopped,
            "kafka_ahead": False}  # fmt: skip


def _halted(n: int) -> list[dict[str, Any]]:
    return [_table(f"s.t{i}", "halted", HALT, FIX, run_id="r1") for i in range(n)]


def test_totals_count_every_table_by_state_and_the_partitions_lag_held_rows_and_errors() -> None:
    tables = [
        *_halted(3),
        _table("s.a"),
        _table("s.b", "held", "2 rows wait for s.a (oldest 1.0s)"),
        _table("s.c", "stopped", "a column was added", "edit the spec", at="app.s.c[0]@5", rule_id="c.x"),
    ]
    partitions = [_partition("app.s.a", lag=7, errors=2), _partition("app.s.c", lag=5, stopped=True)]
    held = [{"table": "s.b", "held": 2, "oldest_s": "1.0", "waiting_for": "s.a"}]
    totals = status_totals(tables, partitions, held)
    assert totals == {
        "tables": 6,
        "by_state": {"running": 1, "held": 1, "stopped": 1, "halted": 3, "cut_over": 0},
        "partitions": 2,
        "partitions_stopped": 1,
        "partitions_kafka_ahead": 0,
        "lag": 12,
        "held_rows": 2,
        "held_tables": 1,
        "open_error_records": 2,
    }
    assert totals_line(totals) == (
        "totals: 6 tables (running 1, held 1, stopped 1, halted 3); 2 partitions (1 stopped), lag 12;"
        " held rows 2 in 1 table; open error records 2"
    )
    quiet = status_totals([_table("s.a")], [_partition("app.s.a")], [])
    assert totals_line(quiet) == (
        "totals: 1 table (running 1, held 0, stopped 0, halted 0); 1 partition, lag 0;"
        " held rows 0 in 0 tables; open error records 0"
    )


def test_table_patterns_match_the_target_the_topic_or_a_source_table() -> None:
    mapped = [("crm.customer", "demo.shop.customers"), ("crm.customer_pii", "demo.shop.customers"),
              ("sales.order", "demo.shop.orders"), ("sales.order_line", "demo.shop.order_lines")]  # fmt: skip
    sources = {"demo.shop.customers": ["shop.customers"], "demo.shop.orders": ["shop.orders"]}
    assert select_tables(["sales.*"], mapped, sources) == (frozenset({"sales.order", "sales.order_line"}), [])
    # a source table chooses every target its topic feeds; a topic glob, every table of those topics
    assert select_tables(["shop.customers"], mapped, sources)[0] == {"crm.customer", "crm.customer_pii"}
    assert select_tables(["demo.shop.order*"], mapped, sources)[0] == {"sales.order", "sales.order_line"}
    # exact names, several patterns, case-sensitive; a pattern matching nothing is returned
    chosen, unmatched = select_tables(["crm.customer", "CRM.*", "nope.*"], mapped, sources)
    assert chosen == {"crm.customer"} and unmatched == ["CRM.*", "nope.*"]
    assert shown_line(["sales.*"], 2, 119) == (
        "showing 2 of 119 tables (--table sales.*): the sections below list only those; the totals and"
        " the exit code cover all 119"
    )


def test_a_reason_shared_by_several_tables_is_printed_once_with_their_count_and_first_names() -> None:
    """8 tables held by one halted run: one line each pointing to reason [1], the reason and fix
    once, naming the first five and counting the rest; a reason of one table stays on its line."""
    tables = [
        _table("s.a"),
        *_halted(8),
        _table("s.b", "held", "2 rows wait for s.a (oldest 1.0s)"),
        _table("s.c", "stopped", "a column was added", "edit the spec", at="app.s.c[0]@5", rule_id="c.x"),
    ]
    lines = table_lines(tables)
    assert lines == [
        "tables:",
        f"  {'s.a':34} running",
        *(f"  {f's.t{i}':34} HALTED: reason [1]" for i in range(8)),
        f"  {'s.b':34} held: 2 rows wait for s.a (oldest 1.0s)",
        f"  {'s.c':34} stopped at app.s.c[0]@5 (c.x): a column was added; fix: edit the spec",
        "reasons shared by several tables:",
        f"  [1] HALTED, 8 tables (s.t0, s.t1, s.t2, s.t3, s.t4 and 3 more): {HALT}; fix: {FIX}",
    ]
    assert sum(line.count(HALT) for line in lines) == 1
    assert max(len(line) for line in lines[:-1]) < 120  # the per-table lines stay short


def test_stopped_tables_sharing_a_reason_keep_where_each_stopped() -> None:
    why, fix = "the topic's partition count changed from 3 to 4", "`replicator partitions accept`"
    tables = [
        _table("s.x", "stopped", why, fix, at="app.s.x[3]@0", rule_id="partitions"),
        _table("s.y", "stopped", why, fix, at="app.s.y[3]@0", rule_id="partitions"),
        _table("s.z", "halted", HALT, FIX),  # alone with its reason: inline
    ]
    assert table_lines(tables) == [
        "tables:",
        f"  {'s.x':34} stopped at app.s.x[3]@0 (partitions): reason [1]",
        f"  {'s.y':34} stopped at app.s.y[3]@0 (partitions): reason [1]",
        f"  {'s.z':34} HALTED: {HALT}; fix: {FIX}",
        "reasons shared by several tables:",
        f"  [1] stopped, 2 tables (s.x, s.y): {why}; fix: {fix}",
    ]


def test_rows_held_too_long_in_several_tables_are_one_problem_line() -> None:
    held = [
        {"table": "s.a", "held": 1, "oldest_s": "5.0", "waiting_for": "s.p"},
        {"table": "s.b", "held": 4, "oldest_s": "90.0", "waiting_for": "s.p"},
        {"table": "s.c", "held": 2, "oldest_s": "120.5", "waiting_for": "s.q"},
    ]
    stuck = stuck_held(held, 60.0)
    assert [h["table"] for h in stuck] == ["s.b", "s.c"]
    (line,) = held_problems(stuck, 60.0)
    assert line.startswith(
        "  PROBLEM: 2 tables have rows held longer than 60 s (REPLICATOR_CUTOVER__MAX_HELD_AGE_S):"
        " s.b (waiting for s.p), s.c (waiting for s.q): a lagging or stopped topic,"
    ), line
    assert line.endswith(
        "(its version says it was applied; fix: `replicator reload --table` on the parent's table)"
    )
    (one,) = held_problems(stuck[:1], 60.0)
    assert one.startswith(
        "  PROBLEM: s.b has rows held longer than 60 s (REPLICATOR_CUTOVER__MAX_HELD_AGE_S), waiting for s.p:"
    ), one
    assert held_problems([], 60.0) == []


def test_after_the_flip_the_forward_runs_end_is_cut_over_not_halted() -> None:
    """trial 17: after a cutover every table said HALTED with "start that run's instance again",
    which would only stop again at the flip. A stopped table stays stopped (its change was never
    applied); nothing changes while the source is authoritative."""
    flip = "the target is authoritative since 2026-12-08T01:39:47+00:00 (cutover c1): stops"
    stopped = _table(
        "s.c", "stopped", "a column was added", "edit the spec", at="app.s.c[0]@5", rule_id="c.x"
    )
    tables = [*_halted(2), _table("s.a"), stopped]
    runs = [
        {"run_id": "r1", "mode": "run", "group": "g", "state": "halted", "reason": flip},
        {"run_id": "r2", "mode": "shadow", "group": "g-shadow", "state": "halted", "reason": "x"},
    ]
    source = {"authority": "source", "since": None, "cutover_id": None}
    assert after_flip(source, tables, runs) == (tables, runs)
    target = {"authority": "target", "since": "2026-12-08T01:39:47+00:00", "cutover_id": "c1"}
    shown, ended = after_flip(target, tables, runs)
    assert [t["state"] for t in shown] == ["cut_over", "cut_over", "cut_over", "stopped"]
    assert all(t["fix"] is None and "(cutover c1)" in t["reason"] for t in shown[:3])
    assert shown[3] == tables[3]
    assert [r["state"] for r in ended] == ["cut_over", "halted"]  # a shadow run's halt is its own
    line = totals_line(status_totals(shown, [], []))
    assert line.startswith("totals: 4 tables (running 0, held 0, stopped 1, halted 0, cut_over 3);")
    assert "start that run" not in "\n".join(table_lines(shown))
