"""From decoded events to per-table intents: the mapping stage of a batch. Pure.

`prepare(batch, plan)` runs before the target transaction: each change event
becomes, for every target table the spec feeds from its topic, an `Intent`
(upsert / delete / soft delete / ignore / truncate) or a `Failure` naming the
mapping rule. Filtered-out rows become deletes, so the target always holds
exactly filter(map(source)). The writer then only locks, resolves
(`core.resolve`), writes and checkpoints.

Invariants: nothing is dropped silently: every event is counted as applied,
skipped as older, filtered, not table data, or a Failure with its context.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import orjson

from replicator.core.mapping.plan import Narrowing, Plan, RowError, TablePlan
from replicator.core.model import (
    UNAVAILABLE,
    Batch,
    ChangeEvent,
    Failure,
    KafkaRef,
    Op,
    Partition,
    TableRef,
    new_tuple,
)
from replicator.core.ordering import Version
from replicator.core.schema_change import SourceNow, Stop, ignored_columns, older
from replicator.core.switch import point as switch_point

Key = tuple[Any, ...]


class Kind(enum.Enum):
    UPSERT = "upsert"
    DELETE = "delete"  # hard delete
    SOFT_DELETE = "soft_delete"
    IGNORE = "ignore"  # a delete the spec ignores: no write, the version still advances
    TRUNCATE = "truncate"


class Intent(NamedTuple):
    table: TablePlan
    kind: Kind
    key: Key
    values: Mapping[str, Any]  # target column -> value (UNAVAILABLE allowed outside the key)
    version: Version
    event: ChangeEvent
    notes: tuple[Narrowing, ...] = ()
    unavailable: frozenset[str] = frozenset()  # target columns holding UNAVAILABLE (unchanged TOAST)
    # target columns the event predates (the source added their columns after it: `schema_change.
    # older`): not in `values`; an insert leaves them to the target's DEFAULT, an update untouched
    absent: frozenset[str] = frozenset()


_DELETES: Final[frozenset[Kind]] = frozenset({Kind.DELETE, Kind.SOFT_DELETE, Kind.IGNORE})


def left_by_filter(intent: Intent) -> bool:
    """A delete made because the spec's filter leaves the row out (a snapshot read, an insert or an
    update that fails it), not because the source deleted it: counted as `filtered`, not `delete`."""
    return intent.kind in _DELETES and intent.event.op is not Op.DELETE


def unavailable_columns(values: Mapping[str, Any]) -> frozenset[str]:
    for v in values.values():  # by identity: `in` would call every value's __eq__
        if v is UNAVAILABLE:
            return frozenset(c for c, v in values.items() if v is UNAVAILABLE)
    return _NONE


_NONE: Final[frozenset[str]] = frozenset()


# What json.dumps(..., default=str, ensure_ascii=False, separators=(",", ":")) builds on every
# call, built once: the same text, without a new encoder per key.
_KEY_ENCODER: Final = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))
# Key parts orjson writes exactly as that encoder does (checked by tests/unit/test_batching.py).
_FAST_KEY_TYPES: Final = frozenset({str, int, bool, type(None), uuid.UUID})


def key_text(key: Key) -> str:
    """Canonical text of a target key (stable per key type), used in the control schema."""
    if all(type(v) in _FAST_KEY_TYPES for v in key):
        try:
            return orjson.dumps(key).decode()
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate
            pass
    return _KEY_ENCODER.encode(list(key))


def _target_key(table: TablePlan | None, event: ChangeEvent) -> str | None:
    """The target key of the event's row when the key rules can compute it (for error records)."""
    row = event.after or event.before or event.key
    if table is None or not row:
        return None
    try:
        return key_text(table.map_key(row))
    except RowError:
        return None


def _failure(event: ChangeEvent, table: TablePlan | None, err: RowError | str, rule: str = "") -> Failure:
    rule_id, message = (err.rule_id, err.message) if isinstance(err, RowError) else (rule, err)
    return Failure(
        ref=event.ref,
        rule_id=rule_id,
        message=message,
        raw_key=event.raw_key,
        raw_value=event.raw_value,
        target=table.target if table else None,
        key=_target_key(table, event),
    )


def _source_ts(event: ChangeEvent) -> datetime:
    return datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC)


def _intent_for(table: TablePlan, event: ChangeEvent, now: SourceNow | None = None) -> Intent | Failure:
    deleted = False
    try:
        if event.op in (Op.CREATE, Op.UPDATE, Op.READ):
            row = event.after or {}
            then = older(table, event, row, now) if now is not None else None
            if table.unmapped == "fail":
                unknown = table.unknown_columns(row)
                if unknown and event.shape is not None:  # new nullable columns the policy ignores
                    unknown -= ignored_columns(table, event.shape)
                if unknown and then is not None:  # dropped since the event: the spec left them out
                    unknown -= then.gone
                if unknown:
                    return _failure(
                        event,
                        table,
                        f"source columns {sorted(unknown)} are not named in the spec "
                        "(unmapped_source_columns: fail); fix: map or ignore them in the spec",
                        f"{table.rule_id}.unmapped",
                    )
            if not table.accepts(row):
                return _delete_intent(table, event, row)
            if then is not None and then.added:
                return _predating(table, event, row, then.added)
            values, notes = table.map_row_noted(row)
            key = tuple(values[k] for k in table.key)
            if event.key is None and event.before and event.op is Op.UPDATE:
                moved = _moved_key(table, event.before, key)
                if moved is not None:
                    return _failure(event, table, moved, f"{table.rule_id}.key")
            version = Version.of(event.ref, event.position, deleted)
            return new_tuple(
                Intent,
                (table, Kind.UPSERT, key, values, version, event, notes, unavailable_columns(values), _NONE),
            )
        if event.op == Op.DELETE:
            row = event.before or event.key or {}
            return _delete_intent(table, event, row)
    except RowError as err:
        return _failure(event, table, err)
    return _failure(event, table, f"operation {event.op.value!r} has no table mapping", "decode.op")


def _predating(table: TablePlan, event: ChangeEvent, row: Mapping[str, Any], added: frozenset[str]) -> Intent:
    """The upsert of an event older than the source columns `added` (`schema_change.older`): the
    target columns computed from them are left out (`Intent.absent`), never given a value the row
    did not have. A key column reading one stays an error (`map_row_noted` refuses it)."""
    values, notes = table.map_row_noted({**row, **dict.fromkeys(added, UNAVAILABLE)})
    absent = frozenset(c.target for c in table.columns if not c.is_key and not added.isdisjoint(c.sources))
    values = {c: v for c, v in values.items() if c not in absent}
    notes = tuple(n for n in notes if n.target not in absent)
    key = tuple(values[k] for k in table.key)
    if event.key is None and event.before and event.op is Op.UPDATE:
        moved = _moved_key(table, event.before, key)
        if moved is not None:
            raise RowError(f"{table.rule_id}.key", moved)
    version = Version.of(event.ref, event.position, False)
    return Intent(table, Kind.UPSERT, key, values, version, event, notes, unavailable_columns(values), absent)


def _moved_key(table: TablePlan, before: Mapping[str, Any], key: Key) -> str | None:
    """Why an update without a Kafka key cannot be applied, or None. Debezium sends such events for
    a table with neither a primary key nor a unique index, and a change of the key columns as one
    update (with either it sends a delete and a create): upserting the new key would leave the
    old row."""
    try:
        old = table.map_key(before)
    except RowError:
        return None  # `before` lacks the key columns (no REPLICA IDENTITY FULL): nothing to compare
    if old == key:
        return None
    return (
        f"update moves the row from key {key_text(old)} to {key_text(key)}, and the source table has "
        "no primary key (the event has no Kafka key), so the old row would stay in the target; fix: "
        "add a primary key to the source table (or set the connector's message.key.columns to the "
        "key columns), then reload the table"
    )


def _delete_intent(table: TablePlan, event: ChangeEvent, row: Mapping[str, Any]) -> Intent:
    key = table.map_key(row if row else (event.key or {}))
    key_values = dict(zip(table.key, key, strict=True))
    policy = table.delete.kind
    if policy == "hard":
        return Intent(table, Kind.DELETE, key, key_values, Version.of(event.ref, event.position, True), event)
    if policy == "soft":
        values = {**key_values, **table.delete.values(row, _source_ts(event))}
        return Intent(
            table, Kind.SOFT_DELETE, key, values, Version.of(event.ref, event.position, True), event
        )
    # The row stays in the target, but its version remembers the source deleted it.
    return Intent(table, Kind.IGNORE, key, key_values, Version.of(event.ref, event.position, True), event)


@dataclass(slots=True)
class Intents:
    """Stage-1 result for a batch: intents per target table in Kafka order."""

    by_table: dict[TableRef, list[Intent]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    # the `OTHER_TABLE` events again, by (topic, partition, source table): stored per partition
    unread: Counter[tuple[str, int, str]] = field(default_factory=Counter)


OTHER_TABLE = "other_table:"  # count key prefix: events of a source table no rule of their topic reads


def other_tables(counts: Mapping[str, int]) -> dict[str, int]:
    """Per source table (`schema.table`), the events of `counts` (a batch's) that arrived on a topic
    the spec reads but that no rule reads (`OTHER_TABLE` keys, see `to_intents`): not applied.
    The loop's warning, the metrics and the control schema's `unread_table` all read them here."""
    return {k[len(OTHER_TABLE) :]: n for k, n in counts.items() if k.startswith(OTHER_TABLE) and n > 0}


def other_table_fix(table: str) -> str:
    """What to do about a source table `other_tables` names (the loop's warning, `status`)."""
    return (
        f"add a rule for {table} to the spec to replicate it, or drop it from the connector's"
        " table.include.list (and the publication) to stop capturing it"
    )


def to_intents(events: Iterable[ChangeEvent], plan: Plan, now: SourceNow | None = None) -> Intents:
    """Map change events to the intents of `plan`'s rules; `now`, the source catalog read after
    the events (held ones, error records), maps the events older than a source schema change the
    way the spec fixed for it means (`schema_change.older`).

    An event feeds only the rules of its own source table (`Plan.tables_for`, by
    `ChangeEvent.table`, Debezium's `source.schema`/`source.table`): a rule fed another table's
    rows of a shared topic would write them into its target (trial 14). Another table's
    events are counted (`other_table:<schema.table>`, and per partition in `unread`), not mapped:
    the spec does not replicate that table (the loop says so once per table; the metrics count
    them, the control schema's `unread_table` keeps them for `status`).

    One source event, all its target rows or none: when a rule rejects the event
    for one target table, it writes none of them, and its one Failure names the
    other targets (`Failure.also`).
    """
    out = Intents()
    for event in events:
        switch_point()  # compiled, this loop would keep the interpreter lock for a whole batch
        tables = plan.tables_for(event.ref.topic, event.table)
        if not tables:
            if plan.tables_for_topic(event.ref.topic):
                out.counts[f"{OTHER_TABLE}{event.table}"] += 1
                out.unread[(event.ref.topic, event.ref.partition, str(event.table))] += 1
            else:
                out.counts["unmapped_topic"] += 1
            continue
        made: list[Intent] = []
        failed: list[Failure] = []
        for table in tables:
            if event.op == Op.TRUNCATE:
                version = Version.of(event.ref, event.position, True)
                made.append(Intent(table, Kind.TRUNCATE, (), {}, version, event))
                continue
            intent = _intent_for(table, event, now)
            if isinstance(intent, Failure):
                failed.append(intent)
            else:
                made.append(intent)
        if failed:
            out.failures.append(_one_failure(failed, made))
            continue
        for intent in made:
            out.by_table.setdefault(intent.table.target, []).append(intent)
    return out


def _one_failure(failed: Sequence[Failure], applied_otherwise: Sequence[Intent]) -> Failure:
    """The single error record of an event some target rejected: the first failure, naming the rest."""
    first = failed[0]
    message = first.message + "".join(f"; also {f.target}: {f.rule_id}: {f.message}" for f in failed[1:])
    also = tuple((str(f.target), f.key) for f in failed[1:]) + tuple(
        (str(i.table.target), key_text(i.key)) for i in applied_otherwise
    )
    if also:
        message += f" (the event is not applied to {', '.join(t for t, _ in also)} either)"
    return dataclasses.replace(first, message=message, also=also)


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch mapped before the target transaction: the writer's whole input."""

    by_table: Mapping[TableRef, list[Intent]]
    failures: tuple[Failure, ...]  # decode and mapping failures, in Kafka order per partition
    next_offsets: Mapping[Partition, int]
    counts: Counter[str]
    events: int
    # Per partition, the highest seq0 of the batch's streaming events (see core.holding).
    commit_lsns: Mapping[Partition, int] = dataclasses.field(default_factory=dict)
    # Drain fences (rows of the source's signal table) read in this batch: stored with it.
    fences: tuple[Fence, ...] = ()
    # Per partition, the newest event time (the envelope's ts_ms, milliseconds): end-to-end lag.
    source_ts_ms: Mapping[Partition, int] = dataclasses.field(default_factory=dict)
    # Partitions stopped in front of an event that does not match the spec (`core.schema_change`):
    # stored with the batch, whose next offset for them is that event's offset.
    stops: tuple[Stop, ...] = ()
    # Events of a source table no rule reads, on a topic the spec reads (`other_tables`), by
    # (topic, partition, source table): stored with the batch (the control schema's `unread_table`).
    unread: Mapping[tuple[str, int, str], int] = dataclasses.field(default_factory=dict)


class Fence(NamedTuple):
    """A drain fence as the replicator read it: its id and where it was in Kafka."""

    fence_id: str
    ref: KafkaRef


FENCE_PREFIX: Final = "fence-"


def split_signals(
    events: Sequence[ChangeEvent], signal_table: TableRef | None
) -> tuple[list[ChangeEvent], list[Fence], int]:
    """(table events, the fences among the signal-table events, how many signal events there were)."""
    if signal_table is None:
        return list(events), [], 0
    table_events: list[ChangeEvent] = []
    fences: list[Fence] = []
    signals = 0
    for e in events:
        if e.table != signal_table:
            table_events.append(e)
            continue
        signals += 1
        fence_id = (e.after or {}).get("id")
        if e.op in (Op.CREATE, Op.READ) and isinstance(fence_id, str) and fence_id.startswith(FENCE_PREFIX):
            fences.append(Fence(fence_id, e.ref))
    return table_events, fences, signals


def with_targets(failure: Failure, plan: Plan) -> Failure:
    """A record that could not be decoded names the target tables its topic feeds (the first as
    its table, the others in `also`), so `errors list --table` finds it and a retry that fails to
    decode it again keeps it open (`core.retry.settle` matches by table); its key stays unknown."""
    if failure.target is not None:
        return failure
    tables = plan.tables_for_topic(failure.ref.topic)
    if not tables:
        return failure
    also = tuple((str(t.target), None) for t in tables[1:])
    return dataclasses.replace(failure, target=tables[0].target, also=also)


def prepare(
    batch: Batch,
    plan: Plan,
    signal_table: TableRef | None = None,
    stops: tuple[Stop, ...] = (),
    now: SourceNow | None = None,
) -> PreparedBatch:
    """Decode failures plus the mapping of every event: all of a batch's work outside the target.
    Events of `signal_table` are never mapped; the fences among them are carried to the writer.
    `stops`: the partitions `core.schema_change.cut` stopped (already cut out of `batch`); `now`:
    see `to_intents`."""
    events, fences, signals = split_signals(batch.events, signal_table)
    intents = to_intents(events, plan, now)
    counts = Counter(batch.counts)
    counts.update(intents.counts)
    if signals:
        counts["signal"] += signals
    commit_lsns: dict[Partition, int] = {}
    source_ts_ms: dict[Partition, int] = {}
    for e in batch.events:
        p = (e.ref.topic, e.ref.partition)
        source_ts_ms[p] = max(source_ts_ms.get(p, 0), e.ts_ms)
        if e.position is not None:
            commit_lsns[p] = max(commit_lsns.get(p, 0), e.position.commit_lsn)
    return PreparedBatch(
        by_table=intents.by_table,
        failures=(*(with_targets(f, plan) for f in batch.failures), *intents.failures),
        next_offsets=dict(batch.next_offsets),
        counts=counts,
        events=batch.size,
        commit_lsns=commit_lsns,
        fences=tuple(fences),
        source_ts_ms=source_ts_ms,
        stops=stops,
        unread=dict(intents.unread),
    )
