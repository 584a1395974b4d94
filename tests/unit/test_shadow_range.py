"""The previewed range of a shadow run names only the topics the spec reads."""

from __future__ import annotations

from replicator.run.shadow import previewed_range


def test_range_lists_only_the_spec_topics_not_the_signal_topic() -> None:
    """`--from-group` copies the live group's positions, the signal topic's among them (the live
    run reads its drain fences); the preview never reads it, so its range and review leave it out."""
    first = {("demo.shop.products", 0): 5, ("demo.shop.debezium_signal", 0): 7}
    until = {("demo.shop.products", 0): 9, ("demo.shop.products", 1): 3, ("demo.shop.debezium_signal", 0): 7}
    assert previewed_range(first, until, {"demo.shop.products"}) == {
        "demo.shop.products[0]": [5, 9],
        "demo.shop.products[1]": [0, 3],
    }
