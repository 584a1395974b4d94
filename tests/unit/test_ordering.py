"""The ordering rule (replicator.core.ordering.compare) as a table of cases, without and with
accepted partition layouts (`core.layout`)."""

from __future__ import annotations

import pytest

from replicator.core.layout import Layout, Layouts
from replicator.core.model import SourcePosition as P
from replicator.core.ordering import Verdict, Version, compare

T = "demo.shop.products"
OTHER = "demo.shop.orders"

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
        "other topic without positions: unordered, applied and counted",
        Version(OTHER, 1, 1, None),
        Version(T, 0, 5, None),
        Verdict.UNORDERED,
    ),
    (
        "other partition of the same layout without positions: undecided, never applied as newer",
        Version(T, 1, 1, None),
        Version(T, 0, 5, None),
        Verdict.UNDECIDED,
    ),
    (
        "snapshot row of another partition of the same layout over a streaming version: undecided",
        Version(T, 1, 900, None),
        Version(T, 0, 5, P(7, 8)),
        Verdict.UNDECIDED,
    ),
    (
        "streaming event of another partition of the same layout over a snapshot version: undecided",
        Version(T, 1, 1, P(7, 8)),
        Version(T, 0, 5, None),
        Verdict.UNDECIDED,
    ),
]


@pytest.mark.parametrize(("name", "event", "stored", "verdict"), CASES, ids=[c[0] for c in CASES])
def test_ordering_rule(name: str, event: Version, stored: Version | None, verdict: Verdict) -> None:
    assert compare(event, stored) is verdict


# T went from 3 to 4 partitions: partitions 0-2 are in transition from 60, 150, 250 (where the group
# stopped) and settled from 100, 200, 300 (the ends after the connector restarted).
LAYOUTS = Layouts({T: (Layout(1, 3, 4, (100, 200, 300), (60, 150, 250)),)})

LAYOUT_CASES = [
    (
        "replay: an old snapshot row under a newer row of a new partition is older",
        Version(T, 0, 5, None),
        Version(T, 3, 2, P(9, 9)),
        Verdict.OLDER,
    ),
    (
        "replay: an old streaming event under a reload row of a new partition is older",
        Version(T, 0, 50, P(5, 5)),
        Version(T, 3, 10, None),
        Verdict.OLDER,
    ),
    (
        "replay: an old snapshot row under a reload row of a new partition is older",
        Version(T, 2, 0, None),
        Version(T, 3, 10, None),
        Verdict.OLDER,
    ),
    (
        "a reload row in the new layout over an old-layout version is newer",
        Version(T, 3, 10, None),
        Version(T, 0, 50, P(5, 5)),
        Verdict.NEWER,
    ),
    (
        "a key moved between old partitions: past its partition's start is the new layout, newer",
        Version(T, 1, 250, None),
        Version(T, 0, 50, P(5, 5)),
        Verdict.NEWER,
    ),
    (
        "an old partition before its transition is older than another settled in the new layout",
        Version(T, 1, 140, None),
        Version(T, 0, 120, None),
        Verdict.OLDER,
    ),
    (
        "a record of the transition over a version from before it: newer",
        Version(T, 1, 170, None),
        Version(T, 0, 50, P(5, 5)),
        Verdict.NEWER,
    ),
    (
        "a reload row after the restart over a version of the transition: newer",
        Version(T, 3, 10, None),
        Version(T, 0, 80, P(7, 7)),
        Verdict.NEWER,
    ),
    (
        "replay: a record of the transition under a settled new-layout version: older",
        Version(T, 0, 80, None),
        Version(T, 3, 10, P(9, 9)),
        Verdict.OLDER,
    ),
    (
        "two records of the transition on different partitions, a position missing: undecided",
        Version(T, 0, 80, None),
        Version(T, 1, 160, P(7, 7)),
        Verdict.UNDECIDED,
    ),
    (
        "both positioned across layouts: positions decide (a redelivery is no newer)",
        Version(T, 3, 2, P(5, 5)),
        Version(T, 0, 50, P(5, 5)),
        Verdict.OLDER,
    ),
    (
        "same partition: offsets still decide",
        Version(T, 3, 5, None),
        Version(T, 3, 9, None),
        Verdict.OLDER,
    ),
    (
        "two new-layout records on different partitions without positions: undecided",
        Version(T, 3, 5, None),
        Version(T, 0, 150, None),
        Verdict.UNDECIDED,
    ),
    (
        "a topic without an accepted layout: undecided across its partitions",
        Version(OTHER, 3, 5, None),
        Version(OTHER, 0, 1, None),
        Verdict.UNDECIDED,
    ),
]


@pytest.mark.parametrize(
    ("name", "event", "stored", "verdict"), LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES]
)
def test_ordering_rule_across_partition_layouts(
    name: str, event: Version, stored: Version, verdict: Verdict
) -> None:
    assert compare(event, stored, LAYOUTS) is verdict
