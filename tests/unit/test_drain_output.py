"""`replicator drain` shows its fence LSN as PostgreSQL prints it (`X/Y`), as cutover does, in its
text line and its timeout errors; the JSON keeps the number scripts read and adds the text."""

from __future__ import annotations

from replicator.run.drain import Drained, drained_report, held_timeout

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
