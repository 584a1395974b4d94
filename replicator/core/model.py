"""Plain data shared by every stage: decoded change events and their positions.

Invariants:
- Values made per record or used as keys everywhere (`TableRef`, `KafkaRef`,
  `SourcePosition`, `ChangeEvent`, `Record`) are NamedTuples: immutable, ordered by their fields, and cheap to
  build on the hot path (a frozen dataclass costs a setattr per field).
- A `ChangeEvent` is immutable and carries everything needed to reproduce it:
  its Kafka coordinates (`KafkaRef`) and the raw key/value bytes.
- Column values are plain Python values (str, int, Decimal, datetime, date,
  bytes, list, dict, ...) or the `UNAVAILABLE` sentinel, which stands for
  Debezium's unchanged-TOAST placeholder and must never be written.
- `SourcePosition` orders streaming events in source commit order; snapshot
  and incremental-snapshot events have none (they follow Kafka order).
- A `Failure` carries the context to reproduce it (Kafka coordinates, raw
  bytes, rule id, SQLSTATE); it is never dropped.
- A `SourceShape` is the column list of an event's row struct as its schema
  declares it (names, Connect types, nullability): built once per schema by
  the decoder and shared by every event of that schema; a schemaless JSON
  event carries its row's column names (types unknown, never nullable).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple


class _Unavailable:
    """Singleton marking a column whose value Debezium did not send (unchanged TOAST)."""

    _instance: _Unavailable | None = None

    def __new__(cls) -> _Unavailable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNAVAILABLE"

    def __reduce__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE: Final = _Unavailable()

# `tuple.__new__(Cls, values)` builds a NamedTuple without its Python-level `__new__` (2.5x faster).
# Hot paths that build several per record use it, with the fields in declaration order.
new_tuple: Final = tuple.__new__

Row = Mapping[str, Any]


class Op(enum.StrEnum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot row
    TRUNCATE = "t"
    MESSAGE = "m"


class TableRef(NamedTuple):
    schema: str
    name: str

    @staticmethod
    def parse(dotted: str) -> TableRef:
        schema, sep, name = dotted.partition(".")
        if not sep or not schema or not name:
            raise ValueError(f"table {dotted!r} must be written schema.table")
        return TableRef(schema, name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


class KafkaRef(NamedTuple):
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class SourcePosition(NamedTuple):
    """Commit-ordered position of a streaming event: (seq0 or 0, seq1, total_order).

    `commit_lsn` is the end LSN of the previously processed commit (constant
    within a transaction), `lsn` this change's LSN, `total_order` the event's
    rank inside its transaction (0 when transaction metadata is off).
    """

    commit_lsn: int
    lsn: int
    total_order: int = 0

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.commit_lsn, self.lsn, self.total_order)


class SourceColumn(NamedTuple):
    """One column of a source row as its event's schema declares it."""

    name: str
    # Connect type, semantic name and parameters, e.g. "bytes/org.apache.kafka.connect.data.Decimal(scale=2)"
    type: str
    optional: bool  # nullable in the source


@dataclass(frozen=True, slots=True)
class SourceShape:
    """The columns of a source table as one event's schema declares them (see `core.schema_change`)."""

    columns: tuple[SourceColumn, ...]
    names: frozenset[str] = field(init=False, compare=False, repr=False)
    _by_name: Mapping[str, SourceColumn] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})
        object.__setattr__(self, "names", frozenset(self._by_name))

    def column(self, name: str) -> SourceColumn | None:
        return self._by_name.get(name)

    def to_json(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "type": c.type, "optional": c.optional} for c in self.columns]

    @staticmethod
    def from_json(data: Any) -> SourceShape:
        return SourceShape(
            tuple(SourceColumn(str(c["name"]), str(c["type"]), bool(c["optional"])) for c in data)
        )

    def __str__(self) -> str:
        return ", ".join(f"{c.name} {c.type}{'' if c.optional else ' not null'}" for c in self.columns)


class ChangeEvent(NamedTuple):
    """One decoded Debezium change event (a table row change, or a truncate)."""

    ref: KafkaRef
    op: Op
    table: TableRef
    key: Row | None
    before: Row | None
    after: Row | None
    position: SourcePosition | None
    snapshot: bool
    ts_ms: int  # source.ts_ms: the source's commit time (the envelope's ts_ms when it is missing)
    raw_key: bytes | None
    raw_value: bytes | None
    txid: int | None = None
    # source.lsn; for an incremental-snapshot row (which has none) the stream position its chunk
    # was emitted at, from source.sequence (`core.decode`, `core.holding` point 3)
    lsn: int | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    shape: SourceShape | None = None  # the row's columns per the event's schema (None: not known)


Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True, slots=True)
class Failure:
    """A record the run could not apply: becomes an error record, never a silent drop."""

    ref: KafkaRef
    rule_id: str
    message: str
    raw_key: bytes | None
    raw_value: bytes | None
    target: TableRef | None = None
    key: str | None = None
    sqlstate: str | None = None
    # The other target rows of the same source event, not applied either: (table, key text).
    also: tuple[tuple[str, str | None], ...] = ()


@dataclass(slots=True)
class Batch:
    """What the consumer accumulates: decoded events, decode failures, next offsets (bounded)."""

    events: list[ChangeEvent] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    next_offsets: dict[Partition, int] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    size_bytes: int = 0

    @property
    def size(self) -> int:
        """Events counted against the batch bound (change events and failures)."""
        return len(self.events) + len(self.failures)

    def __bool__(self) -> bool:
        return bool(self.next_offsets)


@dataclass(slots=True)
class BatchResult:
    """What one applied batch did: rows written per table and operation, no-ops, error records."""

    applied: Counter[str] = field(default_factory=Counter)  # "<table>:<op>" -> rows
    skipped_older: int = 0
    older_refs: set[KafkaRef] = field(default_factory=set)  # the events skipped as older
    unordered: int = 0
    errors: list[Failure] = field(default_factory=list)
    new_error_records: int = 0  # of `errors`, those not open as records already (a replay's are)
    truncated_notes: int = 0
    skipped_by_table: Counter[str] = field(default_factory=Counter)  # "<table>:older|unordered" -> events
    held: int = 0  # events held back, waiting for a table that lags (new or still waiting)
    held_by_table: Counter[str] = field(default_factory=Counter)  # newly held, by target table
    released: int = 0  # held events applied or superseded in this batch
    attempts: int = 0  # set-based statement attempts (bisection included)
    # (table, key text) whose final intent was not written: their versions must not move.
    unwritten: set[tuple[TableRef, str]] = field(default_factory=set)

    def not_written(self, failure: Failure) -> None:
        self.errors.append(failure)
        if failure.target is not None and failure.key is not None:
            self.unwritten.add((failure.target, failure.key))


class Record(NamedTuple):
    """One Kafka record as the loop sees it: coordinates, raw key and value, headers."""

    ref: KafkaRef
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
