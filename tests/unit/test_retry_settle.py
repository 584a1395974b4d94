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
