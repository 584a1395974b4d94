"""The ordering rule: when is an event newer than what a target row reflects?

Per target row we keep the `Version` of the last event applied to it: its Kafka
partition and offset, its source position (streaming events only) and whether
it deleted the row. An event is applied only if it is newer:

- same partition: its offset is greater, AND when both are streaming events
  its source position is greater too. Offsets make explicit replays no-ops
  (every replayed event sits at or before the stored offset); positions make
  Debezium's at-least-once redeliveries no-ops (they arrive at newer offsets
  carrying older positions). Snapshot rows carry no comparable position and
  follow Kafka order.
- different partition: offsets are incomparable. When both are streaming
  events their positions decide. Otherwise:
  - another partition of the same topic (its partition count changed, see
    `core.layout`): the higher layout rank is newer (records of a higher
    rank were appended after every record of a lower one). At the same
    rank the event is `UNDECIDED`: it is not applied and becomes an error
    record, never silently newer (an old snapshot row replayed over a newer
    row would regress it for good) nor silently older (a valid newer row
    would be lost);
  - another topic (one target key fed from two topics): the event is
    treated as newer and the case is counted (`Verdict.UNORDERED`) so it is
    visible, never silent.

Pure: no I/O.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from replicator.core.layout import NO_LAYOUTS, Layouts
from replicator.core.model import KafkaRef, SourcePosition, new_tuple


class Version(NamedTuple):
    topic: str
    partition: int
    offset: int
    position: SourcePosition | None
    deleted: bool = False

    @staticmethod
    def of(ref: KafkaRef, position: SourcePosition | None, deleted: bool) -> Version:
        return new_tuple(Version, (ref.topic, ref.partition, ref.offset, position, deleted))


class Verdict(enum.Enum):
    NEWER = "newer"
    OLDER = "older"  # at or before the stored version: a no-op
    UNORDERED = "unordered"  # another topic, incomparable; applied, and counted
    UNDECIDED = "undecided"  # another partition of the same layout, incomparable: an error record


def compare(event: Version, stored: Version | None, layouts: Layouts = NO_LAYOUTS) -> Verdict:
    """Is `event` newer than `stored` (the version the target row reflects)? `layouts`: the
    accepted partition layouts of the topics (`core.layout`)."""
    if stored is None:
        return Verdict.NEWER
    mine, theirs = event.position, stored.position
    if event.partition == stored.partition and event.topic == stored.topic:
        if event.offset <= stored.offset:
            return Verdict.OLDER
        if mine is not None and theirs is not None and mine <= theirs:
            return Verdict.OLDER
        return Verdict.NEWER
    if mine is not None and theirs is not None:
        return Verdict.NEWER if mine > theirs else Verdict.OLDER
    if event.topic != stored.topic:
        return Verdict.UNORDERED
    mine_rank = layouts.rank(event.topic, event.partition, event.offset)
    their_rank = layouts.rank(stored.topic, stored.partition, stored.offset)
    if mine_rank != their_rank:
        return Verdict.NEWER if mine_rank > their_rank else Verdict.OLDER
    return Verdict.UNDECIDED
