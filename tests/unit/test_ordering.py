"""The ordering rule (replicator.core.ordering.compare) as a table of cases."""

from __future__ import annotations

import pytest

from replicator.core.model import SourcePosition as P
from replicator.core.ordering import Verdict, Version, compare

T = "demo.shop.products"

CASES = [
    ("no stored version: apply", Version(T, 0, 5, P(1, 2)), None, Verdict.NEWER),
    (
        "newer offset and newer position: apply",
        Version(T, 0, 6, P(2, 3)),
        Version(T, 0, 5, P(1, 2)),
        Verdict.NEWER,
    ),
    ("replay: same offset is a no-op", Version(T, 0, 5, P(1, 2)), Version(T, 0, 5, P(1, 2)), Verdict.OLDER),
    ("replay: older offset is a no-op", Version(T, 0, 4, P(0, 1)), Version(T, 0, 5, P(1, 2)), Verdict.OLDER),
    (
        "redelivery: newer offset, older position is a no-op",
        Version(T, 0, 9, P(1, 1)),
        Version(T, 0, 5, P(1, 2)),
        Verdict.OLDER,
    ),
    (
        "redelivery: newer offset, equal position is a no-op",
        Version(T, 0, 9, P(1, 2)),
        Version(T, 0, 5, P(1, 2)),
        Verdict.OLDER,
    ),
    (
        "same transaction: higher lsn wins",
        Version(T, 0, 6, P(1, 3)),
        Version(T, 0, 5, P(1, 2)),
        Verdict.NEWER,
    ),
    (
        "same lsn: total_order breaks the tie",
        Version(T, 0, 6, P(1, 2, 8)),
        Version(T, 0, 5, P(1, 2, 7)),
        Verdict.NEWER,
    ),
    (
        "snapshot row after streaming follows Kafka order",
        Version(T, 0, 6, None),
        Version(T, 0, 5, P(1, 2)),
        Verdict.NEWER,
    ),
    (
        "streaming after snapshot row follows Kafka order",
        Version(T, 0, 6, P(0, 2)),
        Version(T, 0, 5, None),
        Verdict.NEWER,
    ),
    (
        "deleted row: an older insert does not resurrect it",
        Version(T, 0, 3, P(0, 1)),
        Version(T, 0, 5, P(1, 2), deleted=True),
        Verdict.OLDER,
    ),
    (
        "other partition: positions decide (newer)",
        Version(T, 1, 1, P(2, 3)),
        Version(T, 0, 5, P(1, 2)),
        Verdict.NEWER,
    ),
    (
        "other partition: positions decide (older)",
        Version(T, 1, 99, P(0, 1)),
        Version(T, 0, 5, P(1, 2)),
        Verdict.OLDER,
    ),
    (
        "other partition without positions: unordered, counted",
        Version(T, 1, 1, None),
        Version(T, 0, 5, None),
        Verdict.UNORDERED,
    ),
]


@pytest.mark.parametrize(("name", "event", "stored", "verdict"), CASES, ids=[c[0] for c in CASES])
def test_ordering_rule(name: str, event: Version, stored: Version | None, verdict: Verdict) -> None:
    assert compare(event, stored) is verdict
