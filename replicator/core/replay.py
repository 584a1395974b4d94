"""Where a replay moves a group's positions (pure): one move per partition, checked.

A replay only moves positions back (or sets a start where none is stored):
moving a stored position forward would skip events, which is not a replay and
is refused. A target below the log start is refused, since those events are
gone. An offset the user named (`--to-offset`) must name a partition of the
replayed topics and lie inside its log (`check_offsets`): one past the end is
a mistake (a typo, the wrong partition), refused rather than clamped, which
would hide it. Computed targets (`--to-timestamp`, `--to-lsn`) are clamped to
the end read at the start (the log may have grown since).

`first_at_lsn` finds where a partition's events of the transactions that
committed at or after a source LSN begin (`replay --to-lsn`). Within a
partition, events are in the order Debezium delivered their transactions,
i.e. commit order, and a transaction's events are contiguous and in LSN
order. For a streaming event E of transaction T, `seq0(E)` (the commit LSN of
the transaction delivered before T) and `lsn(E)` are both at most commit(T),
so `seq0(E) >= X or lsn(E) >= X` proves commit(T) >= X; the predicate only
turns from false to true along the partition (a later transaction's seq0 is
at least commit(T)), so a binary search finds its first true event F. F's
transaction may have begun before X: its earlier events (same seq0) are
stepped back over. Or F's seq0 >= X: then the transaction delivered just
before F's committed at or after X although none of its own events may show
it (all its changes, and its seq0, below X); it is the only such one, so the
events of the transaction before F in this partition are taken too (at worst
one transaction more than needed); with no F, the partition's last
transaction is taken for the same reason. Snapshot rows are judged by their
snapshot's LSN; events that carry no
position (tombstones, incremental snapshot rows) take the next positioned
event's answer. Starting earlier is always safe: replayed events the target
already reflects are no-ops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from replicator.core.model import Partition


class ReplayRefused(ValueError):
    """The requested replay would skip or lose events; the message names the partition."""


@dataclass(frozen=True, slots=True)
class Move:
    partition: Partition
    stored: int | None  # the target-stored next offset now (None: never applied)
    to: int  # the next offset the group reads after the replay

    @property
    def events(self) -> int:
        """Events read again (0 where nothing was applied yet)."""
        return 0 if self.stored is None else max(0, self.stored - self.to)


def check_offsets(wanted: Mapping[Partition, int], marks: Mapping[Partition, tuple[int, int]]) -> None:
    """Refuse a requested offset (`--to-offset`) of a partition not in `marks` (the replayed
    topics' partitions, with their log start and end) or past its partition's end offset."""
    topics = sorted({t for t, _ in marks})
    for (topic, number), offset in sorted(wanted.items()):
        given = f"--to-offset {topic}:{number}:{offset}"
        if (topic, number) not in marks:
            numbers = sorted(n for t, n in marks if t == topic)
            if numbers:
                raise ReplayRefused(
                    f"{given}: topic {topic} has no partition {number} (its partitions:"
                    f" {', '.join(map(str, numbers))}); name one of those"
                )
            raise ReplayRefused(
                f"{given}: {topic} is not a topic of the replayed tables (their topics:"
                f" {', '.join(topics) or '-'}); name one of those"
            )
        low, high = marks[(topic, number)]
        if offset > high:
            raise ReplayRefused(
                f"{given}: offset {offset} is past the end offset {high} of {topic}[{number}] (the"
                f" next offset it will write); --to-offset must be at most {high} (log start {low}):"
                " check the partition and the offset"
            )


def plan_moves(
    wanted: Mapping[Partition, int],
    stored: Mapping[Partition, int],
    marks: Mapping[Partition, tuple[int, int]],
) -> list[Move]:
    """The moves for `wanted` (next offset per partition); raises ReplayRefused."""
    moves = []
    for p in sorted(wanted):
        low, high = marks[p]
        to = min(wanted[p], high)  # a computed target; a requested one was checked (check_offsets)
        name = f"{p[0]}[{p[1]}]"
        if to < low:
            raise ReplayRefused(
                f"{name}: offset {to} is below the log start {low} (deleted by retention);"
                f" replay from {low} (--to-earliest), or re-snapshot the table"
            )
        now = stored.get(p)
        if now is not None and to > now:
            raise ReplayRefused(
                f"{name}: offset {to} is ahead of the stored position {now}; a replay only moves"
                " back (moving forward would skip events)"
            )
        moves.append(Move(p, now, to))
    return moves


def parse_offset(text: str) -> tuple[Partition, int]:
    """`TOPIC:PARTITION:OFFSET` (the topic may contain dots, not colons)."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"{text!r} is not TOPIC:PARTITION:OFFSET (e.g. demo.shop.orders:0:1200)")
    return (parts[0], int(parts[1])), int(parts[2])


@dataclass(frozen=True, slots=True)
class Probe:
    """Where the event at an offset sits in the source's commit order (None fields: unknown)."""

    offset: int
    seq0: int | None  # streaming: commit LSN of the transaction delivered before its own
    lsn: int | None  # its change LSN (a snapshot row: its snapshot's LSN)

    @property
    def positioned(self) -> bool:
        return self.lsn is not None

    def at_or_after(self, lsn: int) -> bool:
        """Did its transaction commit at or after `lsn`? (Only for positioned events.)"""
        return (self.seq0 is not None and self.seq0 >= lsn) or (self.lsn is not None and self.lsn >= lsn)


Reader = Callable[[int], Probe | None]  # the first event at or after an offset (None: none before the end)

MAX_UNPOSITIONED = 10_000  # events without a position skipped in a row before giving up


def _positioned(read: Reader, offset: int, high: int) -> Probe | None:
    """The first positioned event at or after `offset` and below `high`."""
    skipped = 0
    while offset < high:
        probe = read(offset)
        if probe is None or probe.offset >= high:
            return None
        if probe.positioned:
            return probe
        skipped += 1
        if skipped > MAX_UNPOSITIONED:
            raise ReplayRefused(
                f"more than {MAX_UNPOSITIONED} events in a row carry no source position near offset"
                f" {offset}; replay by --to-offset or --to-timestamp instead"
            )
        offset = probe.offset + 1
    return None


def first_at_lsn(low: int, high: int, lsn: int, read: Reader) -> int:
    """The first offset in `low..high` of a transaction that committed at or after `lsn` (`high`:
    none did). See the module's argument."""
    lo, hi = low, high
    found: Probe | None = None
    while lo < hi:
        mid = (lo + hi) // 2
        probe = _positioned(read, mid, hi)
        if probe is None:
            hi = mid  # only position-less events up to hi: they follow the answer of what is after
            continue
        if probe.at_or_after(lsn):
            found, hi = probe, mid
        else:
            lo = probe.offset + 1
    if found is None:  # the last transaction here may still have committed at or after `lsn`
        last = _positioned_before(read, low, high)
        return high if last is None or last.seq0 is None else _transaction_start(read, low, high, last.seq0)
    if found.seq0 is None:  # a snapshot row: nothing of its snapshot is before it
        return lo
    if found.seq0 < lsn:  # its transaction began before `lsn`: take it whole
        return _transaction_start(read, low, lo, found.seq0)
    # The transaction delivered before found's committed at found.seq0 >= lsn, with every change
    # and its own seq0 possibly below `lsn`: take the transaction before it here whole too (at
    # worst one more transaction than needed, a no-op on replay).
    before = _positioned_before(read, low, lo)
    return lo if before is None or before.seq0 is None else _transaction_start(read, low, lo, before.seq0)


def _positioned_before(read: Reader, low: int, offset: int) -> Probe | None:
    """The last positioned event below `offset` (None: none down to `low`)."""
    for at in range(offset - 1, low - 1, -1):
        probe = read(at)
        if probe is not None and probe.offset == at and probe.positioned:
            return probe
    return None


def _transaction_start(read: Reader, low: int, offset: int, seq0: int) -> int:
    """Where the run of events with `seq0` (one transaction) that ends just below `offset` (or
    that `offset` is in) begins; position-less events inside it are taken along."""
    start = offset
    at = offset - 1
    while at >= low:
        probe = read(at)
        if probe is None or probe.offset != at:
            break
        if probe.positioned:
            if probe.seq0 != seq0:
                break
            start = at
        at -= 1
    return start
