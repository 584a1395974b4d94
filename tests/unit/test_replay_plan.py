"""Where `replicator replay` moves positions: back only, inside the log, one move per partition."""

from __future__ import annotations

import pytest

from replicator.core.replay import Move, ReplayRefused, parse_offset, plan_moves

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


def test_a_target_past_the_log_end_is_clamped_to_the_end() -> None:
    (move,) = plan_moves({B: 999}, {B: 80}, MARKS)
    assert move.to == 80 and move.events == 0


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
