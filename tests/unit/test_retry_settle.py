"""core.retry.settle: a retried record closes unless its event failed again for its table."""

from __future__ import annotations

from replicator.core.model import Failure, KafkaRef, TableRef
from replicator.core.retry import Chosen, settle

A = KafkaRef("demo.shop.products", 0, 10)
B = KafkaRef("demo.shop.products", 0, 11)


def failure(ref: KafkaRef, target: TableRef | None, message: str = "still bad") -> Failure:
    return Failure(ref=ref, rule_id="product", message=message, raw_key=None, raw_value=None, target=target)


def test_a_record_whose_event_failed_again_for_its_table_stays_open_with_the_new_reason() -> None:
    chosen = [Chosen(1, A, "catalog.product"), Chosen(2, B, "catalog.product")]
    settled = settle(chosen, [failure(A, TableRef("catalog", "product"), "CHECK again")])
    assert settled.closed == (2,)
    assert {i: f.message for i, f in settled.failing.items()} == {1: "CHECK again"}


def test_a_failure_for_another_table_of_the_same_event_does_not_keep_the_record_open() -> None:
    settled = settle([Chosen(1, A, "catalog.product")], [failure(A, TableRef("catalog", "price"))])
    assert settled.closed == (1,) and not settled.failing


def test_a_decode_record_matches_a_decode_failure_of_the_same_event() -> None:
    settled = settle([Chosen(7, A, None)], [failure(A, None)])
    assert settled.closed == () and set(settled.failing) == {7}
    assert settle([Chosen(7, A, None)], [failure(B, None)]).closed == (7,)


def test_a_decode_record_whose_event_now_fails_for_a_table_stays_open_as_that_failure() -> None:
    """A decode record retried after a decoder fix: the event decodes, but its row is refused by
    the target (a FK): nothing was written, so the record is failing, not closed."""
    fk = failure(A, TableRef("app", "depot"), "violates foreign key constraint")
    settled = settle([Chosen(7, A, None), Chosen(8, B, None)], [fk])
    assert settled.closed == (8,)
    assert settled.failing == {7: fk}


def test_a_failure_of_another_table_that_names_the_record_in_also_keeps_it_open() -> None:
    """One event, all its rows or none: refused for app.driver_contact, it was not written to
    app.driver either (`also`), so the app.driver record stays open."""
    other = Failure(
        ref=A,
        rule_id="driver_contact",
        message="unique violation",
        raw_key=None,
        raw_value=None,
        target=TableRef("app", "driver_contact"),
        also=(("app.driver", "[1]"),),
    )
    settled = settle([Chosen(1, A, "app.driver")], [other])
    assert settled.closed == () and settled.failing == {1: other}


def test_records_of_one_key_folded_into_a_failing_write_all_stay_open() -> None:
    """Retried together, the events of one key are folded into one write and a refusal is
    reported under the last of them: none was written, so none of their records is closed."""
    c = KafkaRef("fleet.ops.shipment", 2, 3188)
    fold = Failure(
        ref=c,
        rule_id="shipment.manifest",
        message="unchanged TOAST values and the row is absent",
        raw_key=None,
        raw_value=None,
        target=TableRef("shipping", "shipment"),
        key='["cb6a"]',
    )
    chosen = [
        Chosen(1087, A, "shipping.shipment", '["cb6a"]'),
        Chosen(2198, B, "shipping.shipment", '["cb6a"]'),
        Chosen(3953, c, "shipping.shipment", '["cb6a"]'),
        Chosen(9, B, "shipping.shipment", '["other"]'),
    ]
    settled = settle(chosen, [fold])
    assert settled.closed == (9,)
    assert set(settled.failing) == {1087, 2198, 3953}
