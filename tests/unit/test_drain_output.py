"""`replicator drain` shows its fence LSN as PostgreSQL prints it (`X/Y`), as cutover does, in its
text line and its timeout errors; the JSON keeps the number scripts read and adds the text."""

from __future__ import annotations

from replicator.run.drain import Drained, applied_timeout, behind, drained_report, held_timeout

FENCE = 850327168  # trial 7's fence: 0/32AEF680


def test_the_drained_line_shows_the_fence_lsn_as_postgresql_prints_it() -> None:
    _, text = drained_report(Drained(FENCE, {("demo.shop.orders", 0): 504}, 2.04))
    assert text == "drained: fence LSN 0/32AEF680 applied in 2.0s"


def test_the_json_keeps_the_numeric_fence_lsn_and_adds_its_text() -> None:
    data, _ = drained_report(Drained(FENCE, {("demo.shop.orders", 0): 504}, 2.0))
    assert data == {
        "fence_lsn": FENCE,
        "fence_lsn_text": "0/32AEF680",
        "seconds": 2.0,
        "end_offsets": {"demo.shop.orders[0]": 504},
    }


def test_the_held_rows_timeout_names_the_fence_lsn_as_postgresql_prints_it() -> None:
    line = held_timeout("g1", FENCE, [("sales.order", 3, "crm.customer")])
    assert line.startswith("drain timed out: group g1 applied past the fence LSN 0/32AEF680 but holds")
    assert "(sales.order: 3 rows wait for crm.customer)" in line
    assert str(FENCE) not in line and "\n" not in line


def test_the_apply_timeout_names_the_partitions_behind_not_every_end_offset() -> None:
    """Trial 7: the timeout printed the raw Python dict of every end offset. It names the partitions
    whose stored offset is short of its end, where each stands, and what to check."""
    ends = {("t", 0): 10, ("t", 1): 5, ("u", 0): 0, ("u", 1): 7}
    lagging = behind(ends, {("t", 0): 10, ("t", 1): 3})
    assert lagging == ["t[1] at 3 of 5", "u[1] at 0 of 7"]
    line = applied_timeout("g1", lagging)
    assert line == (
        "group g1 to apply up to the end offsets read after the fence; behind: t[1] at 3 of 5,"
        " u[1] at 0 of 7 (is a `replicator run` of this group running? see `replicator status`)"
    )
    assert applied_timeout("g1", [f"t[{i}] at 0 of 1" for i in range(12)]).count(" of 1") == 10
    assert "and 2 more" in applied_timeout("g1", [f"t[{i}] at 0 of 1" for i in range(12)])
