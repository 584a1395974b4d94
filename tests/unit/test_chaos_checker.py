"""The chaos checker's self-test: a clean history passes, and each counter catches its planted fault.

A checker is trusted only once it is seen failing (fault-tests.md): every test
here takes one clean history, plants exactly one fault and expects exactly the
counter that names it to move.
"""

from __future__ import annotations

import json

from tests.chaos.history import Key, SourceVersion, TargetWrite, Verdict, check, convergence, percentile
from tests.chaos.runner import count_skipped, count_topic_dups, error_key_text, offset_violations

A: Key = ("bank.account", "1")
B: Key = ("bank.ledger", "7")


def src(*items: int | str) -> list[SourceVersion]:
    """Source versions: an int is a row version, "D<n>" a delete stamped n; times 1, 2, 3, ..."""
    out = []
    for i, item in enumerate(items, start=1):
        if isinstance(item, str):
            out.append(SourceVersion(int(item[1:]), True, float(i)))
        else:
            out.append(SourceVersion(item, False, float(i)))
    return out


def tgt(*items: int | str | None, at: float = 10.0) -> list[TargetWrite]:
    """Target writes: an int is a row write, "D" a hard delete, "S<n>" a soft delete of version n."""
    out = []
    for i, item in enumerate(items):
        when = at + i
        if item == "D":
            out.append(TargetWrite(None, True, when))
        elif isinstance(item, str):
            out.append(TargetWrite(int(item[1:]), True, when))
        else:
            out.append(TargetWrite(item, False, when))
    return out


SOURCE = {A: src(1, 4, 9), B: src(2, 5, "D6")}
TARGET = {A: tgt(1, 9), B: tgt(2, 5, "D")}  # A: version 4 superseded within a batch (allowed)


def only(verdict: Verdict, name: str, n: int = 1) -> None:
    counts = verdict.counts()
    assert counts[name] == n, (name, counts, verdict.examples())
    assert all(v == 0 for k, v in counts.items() if k != name), (name, counts, verdict.examples())


def test_clean_history_passes() -> None:
    verdict = check(SOURCE, TARGET)
    assert verdict.safe(), verdict.examples()
    assert verdict.keys == 2 and verdict.writes == 5


def test_lost_last_version() -> None:
    only(check(SOURCE, {**TARGET, A: tgt(1, 4)}), "lost")


def test_lost_delete() -> None:
    only(check(SOURCE, {**TARGET, B: tgt(2, 5)}), "lost")


def test_lost_row_never_written() -> None:
    only(check(SOURCE, {B: TARGET[B]}), "lost")


def test_a_key_inserted_and_deleted_between_writes_is_not_lost() -> None:
    assert check({B: src(2, "D3")}, {}).safe()


def test_phantom_unknown_version() -> None:
    only(check(SOURCE, {**TARGET, A: tgt(1, 77, 9)}), "phantom")


def test_phantom_delete_never_made() -> None:
    only(check(SOURCE, {**TARGET, A: tgt(1, 9, "D")}), "phantom", 1)


def test_phantom_key_the_source_never_had() -> None:
    only(check(SOURCE, {**TARGET, ("bank.account", "99"): tgt(3)}), "phantom")


def test_effective_duplicate() -> None:
    only(check(SOURCE, {**TARGET, A: tgt(1, 9, 9)}), "effective_dup")


def test_regress() -> None:
    only(check(SOURCE, {**TARGET, A: tgt(1, 9, 4, 9)}), "regress")


def test_resurrect() -> None:
    # the row deleted, then an old version replayed over the delete (and deleted again)
    only(check(SOURCE, {**TARGET, B: tgt(2, 5, "D", 5, "D")}), "resurrect")


def test_soft_delete_counts_as_a_delete() -> None:
    assert check(SOURCE, {**TARGET, B: tgt(2, 5, "S5")}).safe()


def test_error_records_against_the_injected_set() -> None:
    bad: Key = ("bank.ledger", "-3")
    source = {**SOURCE, bad: src(8)}
    clean = check(source, TARGET, error_keys=[bad], expected_errors=[bad])
    assert clean.safe() and not clean.unexpected_errors and not clean.missing_errors
    extra = check(source, TARGET, error_keys=[bad, A], expected_errors=[bad])
    assert extra.unexpected_errors == [A]
    missing = check(source, TARGET, error_keys=[], expected_errors=[bad])
    assert missing.missing_errors == [bad]


def test_an_uninjected_key_absent_from_the_target_is_lost_even_with_an_error_record() -> None:
    verdict = check(SOURCE, {B: TARGET[B]}, error_keys=[A], expected_errors=[])
    assert verdict.unexpected_errors == [A] and verdict.counts()["lost"] == 1


def test_convergence_is_the_time_to_reach_the_source_state_at_a_moment() -> None:
    # At 3.5 the source shows A@9 and B deleted (both written at t=3); the target shows A@9 at
    # t=11 and B's delete at t=12: the slower key decides.
    assert convergence(SOURCE, TARGET, [3.5]) == [12.0 - 3.5]
    assert convergence({A: SOURCE[A]}, {A: TARGET[A]}, [3.5]) == [11.0 - 3.5]
    # before any source write nothing is owed
    assert convergence(SOURCE, TARGET, [0.5]) == [0.0]
    assert percentile([1.0, 2.0, 3.0, 10.0], 50) in (2.0, 3.0) and percentile([1.0, 10.0], 99) == 10.0


def test_offset_violation_is_caught() -> None:
    stored = {("t", 0): 10, ("t", 1): 5}
    assert offset_violations({("t", 0): 10, ("t", 1): 4}, stored) == []
    assert len(offset_violations({("t", 0): 11, ("t", 1): 5}, stored)) == 1
    assert len(offset_violations({("t", 2): 1}, stored)) == 1  # committed where nothing is stored


def test_topic_duplicates_are_counted() -> None:
    def event(op: str, ver: int) -> bytes:
        return json.dumps({"payload": {"op": op, "after": {"aid": 1, "ver": ver}}}).encode()

    once: list[tuple[str, bytes | None, bytes | None]] = [
        ("t", b"k1", event("u", 3)),
        ("t", b"k1", event("u", 4)),
        ("t", b"k1", None),
    ]
    assert count_topic_dups(once) == 0
    assert count_topic_dups([*once, ("t", b"k1", event("u", 3))]) == 1


def test_redelivered_noops_are_read_from_batch_lines() -> None:
    text = "event=batch events=5 applied=- skipped_older=5\nevent=retry\nevent=batch skipped_older=2\n"
    assert count_skipped(text) == 7


def test_error_record_keys_become_history_keys() -> None:
    assert error_key_text('{"entry_id": -3}') == "-3"
    assert error_key_text('{"order_id": 4, "line_no": 2}') == "4|2"
    assert error_key_text("-3") == "-3"
