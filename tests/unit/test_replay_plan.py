"""Where `replicator replay` moves positions: back only, inside the log, one move per partition."""

from __future__ import annotations

import pytest

from replicator.core.replay import (
    Move,
    Probe,
    Reader,
    ReplayRefused,
    check_offsets,
    first_at_lsn,
    parse_offset,
    plan_moves,
)

A = ("demo.shop.orders", 0)
B = ("demo.shop.orders", 1)
MARKS = {A: (10, 500), B: (0, 80)}


def test_moves_back_and_counts_the_events_read_again() -> None:
    moves = plan_moves({A: 10, B: 0}, {A: 400, B: 80}, MARKS)
    assert moves == [Move(A, 400, 10), Move(B, 80, 0)]
    assert [m.events for m in moves] == [390, 80]


def test_a_partition_never_applied_gets_a_start_and_nothing_to_read_again() -> None:
    (move,) = plan_moves({B: 5}, {}, MARKS)
    assert move == Move(B, None, 5) and move.events == 0


def test_a_computed_target_past_the_log_end_is_clamped_to_the_end() -> None:
    """--to-timestamp reads the end again when no event is at or after the moment: the log may
    have grown since the marks were read."""
    (move,) = plan_moves({B: 999}, {B: 80}, MARKS)
    assert move.to == 80 and move.events == 0


def test_a_requested_offset_past_the_end_is_refused_naming_the_partition_and_its_end() -> None:
    """Trial 7: `--to-offset ...:0:99999` (end 504) became `504 -> 504 (0 events)`: a typo or the
    wrong partition, hidden by clamping."""
    with pytest.raises(ReplayRefused) as refused:
        check_offsets({A: 400, B: 99999}, MARKS)
    (line,) = str(refused.value).splitlines()
    assert line.startswith("--to-offset demo.shop.orders:1:99999: offset 99999 is past the end offset 80")
    assert "of demo.shop.orders[1]" in line and "--to-offset must be at most 80" in line


def test_a_requested_offset_at_the_end_or_inside_the_log_is_accepted() -> None:
    check_offsets({A: 500, B: 0}, MARKS)  # the end: nothing to read again, but no mistake


def test_a_requested_partition_that_does_not_exist_is_refused_naming_the_ones_that_do() -> None:
    with pytest.raises(
        ReplayRefused,
        match=r"^--to-offset demo\.shop\.orders:7:3: topic demo\.shop\.orders has"
        r" no partition 7 \(its partitions: 0, 1\); name one of those$",
    ):
        check_offsets({("demo.shop.orders", 7): 3}, MARKS)


def test_a_requested_topic_not_replayed_is_refused_naming_the_replayed_topics() -> None:
    with pytest.raises(
        ReplayRefused,
        match=r"demo\.shop\.nope is not a topic of the replayed tables"
        r" \(their topics: demo\.shop\.orders\)",
    ):
        check_offsets({("demo.shop.nope", 0): 3}, MARKS)


def test_moving_forward_is_refused_it_would_skip_events() -> None:
    with pytest.raises(ReplayRefused, match=r"demo\.shop\.orders\[0\].*ahead of the stored position 300"):
        plan_moves({A: 450}, {A: 300}, MARKS)


def test_below_the_log_start_is_refused_those_events_are_gone() -> None:
    with pytest.raises(ReplayRefused, match=r"below the log start 10"):
        plan_moves({A: 3}, {A: 300}, MARKS)


def test_parse_offset_takes_dotted_topics_and_names_the_format() -> None:
    assert parse_offset("demo.shop.orders:2:1200") == (("demo.shop.orders", 2), 1200)
    for bad in ("demo.shop.orders:2", "orders:x:1", ":1:2", "orders:1:-3"):
        with pytest.raises(ValueError, match="TOPIC:PARTITION:OFFSET"):
            parse_offset(bad)


# --------------------------------------------------------------------------- --to-lsn

Txn = tuple[int, int, list[int]]  # (seq0, commit LSN, change LSNs of its events in this partition)


def partition_log(txns: list[Txn], tombstone_after: frozenset[int] = frozenset()) -> list[Probe]:
    """A partition's events: each transaction's events in LSN order, transactions in commit order;
    a tombstone (no position) after the events whose change LSN is in `tombstone_after`."""
    out: list[Probe] = []
    for seq0, _commit, lsns in txns:
        for lsn in lsns:
            out.append(Probe(len(out), seq0, lsn))
            if lsn in tombstone_after:
                out.append(Probe(len(out), None, None))
    return out


def reader(log: list[Probe], reads: list[int] | None = None) -> Reader:
    def read(offset: int) -> Probe | None:
        if reads is not None:
            reads.append(offset)
        return log[offset] if offset < len(log) else None

    return read


# Transactions interleave in the WAL: t2 starts (lsn 150) before t1 commits (200), commits at 300.
TXNS: list[Txn] = [(0, 100, [10, 20]), (100, 200, [120, 140]), (200, 300, [150, 250, 260]), (300, 400, [310])]


def committed_at_or_after(log: list[Probe], txns: list[Txn], lsn: int) -> list[int]:
    offsets, n = [], 0
    for _seq0, commit, lsns in txns:
        for _ in lsns:
            if commit >= lsn:
                offsets.append(n)
            n += 1
    return offsets


def transaction_of(txns: list[Txn], offset: int) -> int:
    n = 0
    for i, (_seq0, _commit, lsns) in enumerate(txns):
        n += len(lsns)
        if offset < n:
            return i
    return len(txns)


@pytest.mark.parametrize("lsn", [0, 10, 100, 101, 150, 200, 201, 255, 300, 301, 400, 401])
def test_first_at_lsn_skips_no_transaction_committed_at_or_after(lsn: int) -> None:
    log = partition_log(TXNS)
    start = first_at_lsn(0, len(log), lsn, reader(log))
    wanted = committed_at_or_after(log, TXNS, lsn)
    # nothing the replay skips committed at or after the LSN ...
    assert all(o >= start for o in wanted)
    # ... and it reads again at most one transaction more than needed
    first = wanted[0] if wanted else len(log)
    assert transaction_of(TXNS, first) - transaction_of(TXNS, start) <= 1


def test_a_transaction_that_began_before_the_lsn_is_taken_whole() -> None:
    """t2 has events at LSN 150 (< 201) and 250; replaying from 201 takes all three."""
    log = partition_log(TXNS)
    assert first_at_lsn(0, len(log), 201, reader(log)) == 4  # t2's first event (lsn 150)


def test_a_transaction_none_of_whose_events_shows_its_commit_is_taken() -> None:
    """t3 (seq0 300, change 310) commits at 400: only what follows it shows that. Replaying from
    400 must still take t3; here no transaction follows it in the log, so the search needs t4."""
    txns = [*TXNS, (400, 500, [410])]
    log = partition_log(txns)
    assert first_at_lsn(0, len(log), 400, reader(log)) == 7  # t3's event, though F is t4's


def test_tombstones_are_taken_with_their_transaction() -> None:
    """A tombstone after each of t1's events: replaying from 201 starts at t2, after them; from
    150 (t1 commits at 200) it starts at t1's first event."""
    log = partition_log(TXNS, tombstone_after=frozenset({120, 140}))
    assert [p.lsn for p in log[2:6]] == [120, None, 140, None]
    assert first_at_lsn(0, len(log), 201, reader(log)) == 6
    assert first_at_lsn(0, len(log), 150, reader(log)) == 2


def test_past_the_last_commit_only_the_last_transaction_is_read_again() -> None:
    log = partition_log(TXNS)
    assert first_at_lsn(0, len(log), 10_000, reader(log)) == 7  # t3: its commit is not in the log


def test_the_search_reads_about_log2_n_events() -> None:
    txns: list[Txn] = [(i * 10, i * 10 + 10, [i * 10 + 5]) for i in range(10_000)]
    log = partition_log(txns)
    reads: list[int] = []
    assert first_at_lsn(0, len(log), 50_005, reader(log, reads)) == 5000
    assert len(set(reads)) <= 20
