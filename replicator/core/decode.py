"""Debezium change events (Kafka bytes) -> `ChangeEvent` / `Tombstone` / `NotTableData`.

Invariants:
- Pure: bytes + `KafkaRef` in, a `Decoded` value out; no I/O except the Avro
  schema look-up callable the caller injects.
- Every input yields exactly one outcome: a `ChangeEvent`, a `Tombstone`
  (null value: delete follow-up, not an error), a `NotTableData` (heartbeat,
  transaction metadata, logical-decoding message `m`), or a `DecodeError`
  whose one-line `message` says what is wrong and how to fix it.  The same
  bytes always give the same outcome (errors are deterministic and become
  error records upstream).  Transient failures (schema registry down) are the
  only exceptions that are not `DecodeError`; they propagate for a retry.
- Values are converted by schema (see values.py); unchanged-TOAST
  placeholders become `UNAVAILABLE`; nothing is rounded or dropped.
- Every event of a schema carries that schema's one `SourceShape` (its row
  columns, types, nullability: what `core.schema_change` judges), built when
  the schema is compiled; a schemaless event carries its row's column names
  (one shape per column list; types unknown, never known to be nullable).
- Streaming events get a `SourcePosition` from `source.sequence`
  (`(seq0 or 0, seq1, transaction.total_order or 0)`, falling back to
  `(0, source.lsn)`); snapshot rows (`source.snapshot` not false/null) get
  none. A snapshot row's `lsn` is `source.lsn` (an initial snapshot's LSN);
  an incremental-snapshot row has none, and gets the larger element of its
  `source.sequence`: the stream position at which Debezium emitted its chunk
  (the window's close, written to the WAL after the chunk was read).
- Schemas are compiled once: JSON by the exact schema text (a per-topic
  fast path skips re-parsing an unchanged schema), Avro by schema id.
- The JSON format (schemas enabled or not) is detected per message.  Without
  schemas only JSON-native types survive (see `SchemalessRowConverter`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Generic, TypeVar

import orjson

from replicator.core import avro
from replicator.core.errors import ReplicatorError
from replicator.core.model import (
    ChangeEvent,
    KafkaRef,
    Op,
    SourceColumn,
    SourcePosition,
    SourceShape,
    TableRef,
    new_tuple,
)
from replicator.core.values import (
    DEFAULT_PLACEHOLDER,
    ColumnType,
    InexactNumber,
    RowConverter,
    SchemalessRowConverter,
    ValueConversionError,
)

Headers = Sequence[tuple[str, bytes | None]] | None
RowFn = Callable[[Any], dict[str, Any]]

HEARTBEAT_PREFIX: Final = "__debezium-heartbeat."
SNAPSHOT_TRUE: Final = frozenset(
    ("true", "first", "first_in_data_collection", "last_in_data_collection", "last", "incremental")
)
_OPS: Final = {op.value: op for op in Op}
_MAX_PLANS: Final = 4096


class DecodeError(ReplicatorError):
    """A message that cannot be decoded; deterministic, becomes an error record."""

    def __init__(self, ref: KafkaRef, message: str) -> None:
        super().__init__(f"{ref}: {message}")
        self.ref = ref
        self.message = message


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Null-valued record following a delete (log compaction marker); not an error."""

    ref: KafkaRef
    raw_key: bytes | None


@dataclass(frozen=True, slots=True)
class NotTableData:
    """A valid message that carries no table change (heartbeat, transaction, `m`)."""

    ref: KafkaRef
    reason: str


Decoded = ChangeEvent | Tombstone | NotTableData


# --------------------------------------------------------------------------- shared envelope logic


@dataclass(frozen=True, slots=True)
class _EnvelopePlan:
    before: RowFn
    after: RowFn
    shape: SourceShape | None = None  # the row struct's columns (None: no schema)


def _type_text(ct: ColumnType) -> str:
    """A column's Connect type as one comparable string: type, semantic name, parameters, items."""
    text = ct.type + (f"/{ct.name}" if ct.name else "")
    if ct.parameters:
        text += "(" + ",".join(f"{k}={v}" for k, v in sorted(ct.parameters.items())) + ")"
    if ct.items is not None:
        text += f"<{_type_text(ct.items)}>"
    return text


_ROW_SHAPES: dict[tuple[str, ...], SourceShape] = {}


def _row_shape(row: Mapping[str, Any] | None) -> SourceShape | None:
    """The shape of a schemaless row: its column names (JsonConverter writes every field, nulls
    included), type unknown (""), never known to be nullable; one object per column list."""
    if row is None:
        return None
    names = tuple(row)
    shape = _ROW_SHAPES.get(names)
    if shape is None:
        if len(_ROW_SHAPES) >= _MAX_PLANS:
            _ROW_SHAPES.clear()
        shape = _ROW_SHAPES[names] = SourceShape(tuple(SourceColumn(n, "", False) for n in names))
    return shape


def _shape(env: ColumnType) -> SourceShape | None:
    """The columns of the envelope's row struct (`after`, else `before`), as its schema declares them."""
    fields = dict(env.fields)
    for side in ("after", "before"):
        row = fields.get(side)
        if row is not None and row.type == "struct":
            return SourceShape(tuple(SourceColumn(n, _type_text(c), c.optional) for n, c in row.fields))
    return None


def _identity_row(row: Any) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise TypeError(f"expected a struct, got {type(row).__name__}")
    return dict(row)


def _envelope_plan(env: ColumnType | None, placeholder: str, *, binary_base64: bool) -> _EnvelopePlan:
    if env is None:
        schemaless = SchemalessRowConverter(placeholder)
        return _EnvelopePlan(schemaless, schemaless)
    fields = dict(env.fields)

    def row(name: str) -> RowFn:
        ct = fields.get(name)
        if ct is None or ct.type != "struct":
            return _identity_row
        return RowConverter(ct, placeholder=placeholder, binary_base64=binary_base64)

    return _EnvelopePlan(row("before"), row("after"), _shape(env))


def _key_plan(ct: ColumnType | None, *, binary_base64: bool) -> RowFn:
    if ct is None or ct.type != "struct":
        return _identity_row
    return RowConverter(ct, placeholder=None, binary_base64=binary_base64)


class _ControlTopics:
    def __init__(self, heartbeat_prefix: str, transaction_topics: Collection[str]) -> None:
        self.heartbeat_prefix = heartbeat_prefix
        self.transaction_topics = frozenset(transaction_topics)

    def reason(self, topic: str) -> str | None:
        if topic.startswith(self.heartbeat_prefix):
            return "heartbeat topic"
        if topic in self.transaction_topics:
            return "transaction metadata topic"
        return None


def _not_table_reason(payload: Mapping[str, Any]) -> str | None:
    """Recognise heartbeat / transaction messages by content (no `op`)."""
    if payload.get("status") in ("BEGIN", "END") and "id" in payload:
        return "transaction metadata (BEGIN/END)"
    if set(payload) == {"ts_ms"}:
        return "heartbeat"
    return None


def _int_or_none(v: Any) -> int | None:
    if type(v) is int or v is None:  # the common cases first: this runs several times per event
        return v
    if isinstance(v, bool):
        raise ValueError(f"expected an integer, got {v!r}")
    return int(v)


def _is_mapping(v: Any) -> bool:
    return type(v) is dict or isinstance(v, Mapping)


def _is_snapshot(ref: KafkaRef, v: Any) -> bool:
    if v is None or v is False or v == "false":
        return False
    if v is True or v in SNAPSHOT_TRUE:
        return True
    raise DecodeError(
        ref,
        f"unknown source.snapshot value {v!r}; expected one of true, first, "
        "first_in_data_collection, last_in_data_collection, last, incremental, false",
    )


def _sequence(text: str) -> Any:
    """`source.sequence` text, `["<lsn>","<lsn>"]` (either may be null); the common shape parsed
    without a JSON parser, to ints."""
    if text.startswith('["') and text.endswith('"]'):
        first, sep, second = text[2:-2].partition('","')
        if sep and first.isdigit() and second.isdigit():
            return [int(first), int(second)]
    return json.loads(text)


def _emitted_at(seq: Any) -> int | None:
    """An incremental-snapshot row's `source.sequence` (both elements the stream position of the
    window's close, in Debezium 3.x): the larger LSN in it, None when it holds none."""
    if seq is None:
        return None
    items = _sequence(seq) if type(seq) is str else seq
    if not isinstance(items, list):
        return None
    lsns = [n for n in map(_int_or_none, items) if n is not None]
    return max(lsns) if lsns else None


def _position(ref: KafkaRef, source: Mapping[str, Any], transaction: Any, lsn: int | None) -> SourcePosition:
    total_order = 0
    if transaction is not None and _is_mapping(transaction):
        total_order = _int_or_none(transaction.get("total_order")) or 0
    seq = source.get("sequence")
    if seq is not None:
        items = _sequence(seq) if type(seq) is str else seq
        if not isinstance(items, list) or len(items) != 2:
            raise DecodeError(ref, f"source.sequence {seq!r} is not a two-element list [commit_lsn, lsn]")
        commit = _int_or_none(items[0]) or 0
        change = _int_or_none(items[1])
        if change is None:
            change = lsn
        if change is not None:
            return new_tuple(SourcePosition, (commit, change, total_order))
    elif lsn is not None:
        return SourcePosition(0, lsn, total_order)
    raise DecodeError(
        ref,
        "streaming event has neither source.sequence nor source.lsn; cannot order it "
        "(check the connector is the Debezium PostgreSQL connector)",
    )


_TABLES: dict[tuple[str, str], TableRef] = {}


def _table_ref(schema: str, table: str) -> TableRef:
    """One TableRef per source table (they are immutable; a dict hit is cheaper than a new one)."""
    ref = _TABLES.get((schema, table))
    if ref is None:
        if len(_TABLES) >= _MAX_PLANS:
            _TABLES.clear()
        ref = _TABLES[(schema, table)] = TableRef(schema, table)
    return ref


def _to_event(
    ref: KafkaRef,
    payload: Any,
    key_row: dict[str, Any] | None,
    plan: _EnvelopePlan,
    raw_key: bytes | None,
    raw_value: bytes,
    headers: Headers,
) -> Decoded:
    if not _is_mapping(payload):
        raise DecodeError(ref, f"value payload is {type(payload).__name__}, not a Debezium envelope object")
    op_text = payload.get("op")
    if op_text is None:
        reason = _not_table_reason(payload)
        if reason is not None:
            return NotTableData(ref, reason)
        raise DecodeError(ref, "envelope has no 'op' field; is this a Debezium change-event topic?")
    op = _OPS.get(op_text) if isinstance(op_text, str) else None
    if op is None:
        raise DecodeError(ref, f"unknown op {op_text!r}; expected one of c, u, d, r, t, m")
    if op is Op.MESSAGE:
        return NotTableData(ref, "logical decoding message (op 'm')")

    source = payload.get("source")
    if not _is_mapping(source):
        raise DecodeError(ref, f"op {op_text!r} event has no 'source' struct")
    schema, table = source.get("schema"), source.get("table")
    if type(schema) is not str or type(table) is not str or not schema or not table:
        raise DecodeError(ref, "source.schema / source.table missing; cannot tell the table")
    snapshot = _is_snapshot(ref, source.get("snapshot"))

    try:
        before_raw, after_raw = payload.get("before"), payload.get("after")
        after = None if after_raw is None else plan.after(after_raw)
        try:
            before = None if before_raw is None else plan.before(before_raw)
        except (ValueConversionError, TypeError):
            # The old row image only locates a row without a Kafka key (or a delete's row): an
            # update that has both its new row and its key is applied without it (a value Python
            # cannot hold in the old image, e.g. a BC date under REPLICA IDENTITY FULL, is no loss).
            if after is None or key_row is None:
                raise
            before = None
    except ValueConversionError as e:
        raise DecodeError(ref, f"{schema}.{table} {e}") from e
    except TypeError as shape_error:
        raise DecodeError(ref, f"{schema}.{table} before/after: {shape_error}") from shape_error

    if op in (Op.CREATE, Op.UPDATE, Op.READ) and after is None:
        raise DecodeError(ref, f"op {op_text!r} event for {schema}.{table} has no 'after' row")
    if op is Op.DELETE and before is None and key_row is None:
        raise DecodeError(
            ref, f"delete for {schema}.{table} has neither 'before' nor a key; cannot find the row"
        )

    ts_ms = source.get("ts_ms")  # when the source committed it (the envelope's: when Debezium read it)
    if ts_ms is None:
        ts_ms = payload.get("ts_ms")
    try:
        lsn = _int_or_none(source.get("lsn"))
        txid = _int_or_none(source.get("txId"))
        ts = _int_or_none(ts_ms)
        position = None if snapshot else _position(ref, source, payload.get("transaction"), lsn)
        if snapshot and lsn is None:
            lsn = _emitted_at(source.get("sequence"))
    except (ValueError, TypeError) as position_error:
        raise DecodeError(ref, f"malformed source position fields: {position_error}") from position_error
    if ts is None:
        raise DecodeError(ref, "envelope has no ts_ms (neither top-level nor source.ts_ms)")

    # ChangeEvent(ref, op, table, key, before, after, position, snapshot, ts_ms, raw_key, raw_value,
    # txid, lsn, headers, shape), built without the NamedTuple's Python-level __new__ (per event)
    fields = (ref, op, _table_ref(schema, table), key_row, before, after, position, snapshot, ts)
    shape = plan.shape
    if shape is None:  # schemaless: the row's own columns, types and nullability unknown
        shape = _row_shape(after if after is not None else before)
    extra = (txid, lsn, tuple(headers) if headers else (), shape)
    return new_tuple(ChangeEvent, (*fields, raw_key, raw_value, *extra))


def _key_row(ref: KafkaRef, key_plan: RowFn, key_payload: Any) -> dict[str, Any] | None:
    """The converted key struct (None for a null key payload); shared by both decoders."""
    if key_payload is None:
        return None
    try:
        return key_plan(key_payload)
    except ValueConversionError as e:
        raise DecodeError(ref, f"key {e}") from e
    except TypeError as shape_error:
        raise DecodeError(ref, f"key is not a struct: {shape_error}") from shape_error


# --------------------------------------------------------------------------- JSON

_SCHEMA_HEAD: Final = '{"schema":'
_PAYLOAD_SEP: Final = ',"payload":'
P = TypeVar("P")


class _JsonSide(Generic[P]):
    """Parses one side (key or value) of JsonConverter messages, caching compiled plans.

    JsonConverter writes `{"schema":S,"payload":V}` compactly.  The first time
    a schema text S is seen it is parsed and compiled; afterwards a message
    whose bytes start with the same `{"schema":S,"payload":` (checked per
    topic) only has V parsed, with orjson.  Any other layout falls back to one
    full parse.  JSON numbers with a fraction must stay exact where a rule
    reads them as decimals (`decimal.format=NUMERIC`): orjson would give a
    float, the decimal converter raises `InexactNumber`, and from then on that
    topic's payloads are parsed with `parse_float=Decimal` (`exact`).
    """

    def __init__(self, decoder: json.JSONDecoder, compile_plan: Callable[[Any], P]) -> None:
        self._decoder = decoder
        self._compile = compile_plan
        self._last_prefix: dict[str, tuple[bytes, P]] = {}
        self._plans: dict[str, P] = {}
        self.exact: set[str] = set()  # topics whose numbers must be parsed as Decimal

    def parse(self, topic: str, data: bytes) -> tuple[P, Any]:
        last = self._last_prefix.get(topic)
        if last is not None and data.startswith(last[0]) and data.endswith(b"}"):
            body = data[len(last[0]) : -1]  # the payload (orjson reads a bytes copy faster than a memoryview)
            try:
                if topic in self.exact:
                    return last[1], self._decoder.decode(body.decode("utf-8"))
                return last[1], orjson.loads(body)
            except ValueError:
                pass  # NaN tokens, huge integers, extra top-level keys: the general path
        return self._parse_slow(topic, data.decode("utf-8"))

    def _parse_slow(self, topic: str, text: str) -> tuple[P, Any]:
        if text.startswith(_SCHEMA_HEAD):
            try:
                schema, end = self._decoder.raw_decode(text, len(_SCHEMA_HEAD))
                if text.startswith(_PAYLOAD_SEP, end):
                    payload, pend = self._decoder.raw_decode(text, end + len(_PAYLOAD_SEP))
                    if text[pend:].strip() == "}":
                        prefix = text[:end] + _PAYLOAD_SEP
                        plan = self._plan(prefix, schema)
                        self._last_prefix[topic] = (prefix.encode("utf-8"), plan)
                        return plan, payload
            except ValueError:
                pass
        doc = self._decoder.decode(text)  # ValueError propagates: not JSON
        if isinstance(doc, dict) and set(doc) == {"schema", "payload"}:
            schema = doc["schema"]
            cache_key = json.dumps(schema, sort_keys=True, default=str)
            return self._plan(cache_key, schema), doc["payload"]
        return self._plan("", None), doc

    def _plan(self, cache_key: str, schema: Any) -> P:
        plan = self._plans.get(cache_key)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
                self._last_prefix.clear()
            plan = self._compile(schema)
            self._plans[cache_key] = plan
        return plan


class JsonDecoder:
    """Decodes JsonConverter messages (schemas.enable true or false, detected per message).

    `transaction_topics`: exact names of `<prefix>.transaction` topics (they
    cannot be told from a table named `transaction` by name alone; their
    content is recognised too).  Heartbeat topics are recognised by prefix.
    """

    def __init__(
        self,
        *,
        unavailable_placeholder: str = DEFAULT_PLACEHOLDER,
        heartbeat_prefix: str = HEARTBEAT_PREFIX,
        transaction_topics: Collection[str] = (),
    ) -> None:
        self.unavailable_placeholder = unavailable_placeholder
        self._control = _ControlTopics(heartbeat_prefix, transaction_topics)
        decoder = json.JSONDecoder(parse_float=Decimal)
        self._values: _JsonSide[_EnvelopePlan] = _JsonSide(decoder, self._compile_value)
        self._keys: _JsonSide[RowFn] = _JsonSide(decoder, self._compile_key)

    def _compile_value(self, schema: Any) -> _EnvelopePlan:
        env = ColumnType.from_connect(schema) if schema is not None else None
        return _envelope_plan(env, self.unavailable_placeholder, binary_base64=True)

    @staticmethod
    def _compile_key(schema: Any) -> RowFn:
        ct = ColumnType.from_connect(schema) if schema is not None else None
        return _key_plan(ct, binary_base64=True)

    def decode(
        self, ref: KafkaRef, key: bytes | None, value: bytes | None, headers: Headers = None
    ) -> Decoded:
        """Decode one Kafka record; raises `DecodeError`."""
        reason = self._control.reason(ref.topic)
        if reason is not None:
            return NotTableData(ref, reason)
        if value is None:
            return Tombstone(ref, key)
        try:
            return self._decode(ref, key, value, headers)
        except InexactNumber:  # a decimal arrived as a JSON number: parse this topic exactly
            self._values.exact.add(ref.topic)
            self._keys.exact.add(ref.topic)
            return self._decode(ref, key, value, headers)

    def key_row(self, ref: KafkaRef, key: bytes | None) -> dict[str, Any] | None:
        """The record's key alone (for the error record of a value that cannot be decoded); None
        when there is no key or it cannot be decoded either."""
        if key is None:
            return None
        try:
            key_plan, key_payload = self._parse(ref, self._keys, key, "key")
            return _key_row(ref, key_plan, key_payload)
        except (DecodeError, InexactNumber):
            return None

    def _decode(self, ref: KafkaRef, key: bytes | None, value: bytes, headers: Headers) -> Decoded:
        plan, payload = self._parse(ref, self._values, value, "value")
        if payload is None:
            return Tombstone(ref, key)  # {"schema":..., "payload":null}
        key_row: dict[str, Any] | None = None
        if key is not None:
            key_plan, key_payload = self._parse(ref, self._keys, key, "key")
            key_row = _key_row(ref, key_plan, key_payload)
        return _to_event(ref, payload, key_row, plan, key, value, headers)

    def _parse(self, ref: KafkaRef, side: _JsonSide[P], data: bytes, what: str) -> tuple[P, Any]:
        try:
            return side.parse(ref.topic, data)
        except UnicodeDecodeError as e:
            raise DecodeError(ref, f"{what} is not UTF-8 ({e}); expected JsonConverter JSON") from e
        except ValueError as parse_error:
            first = str(parse_error).splitlines()[0] if str(parse_error) else type(parse_error).__name__
            raise DecodeError(
                ref,
                f"{what} is not valid Kafka Connect JSON ({first}); check the connector's "
                f"{what}.converter is JsonConverter",
            ) from parse_error
        except (KeyError, TypeError) as schema_error:
            raise DecodeError(ref, f"{what} schema is malformed: {schema_error!r}") from schema_error


# --------------------------------------------------------------------------- Avro

SchemaLookup = Callable[[int], Any]


def _refuse_null_defaults(ref: KafkaRef, payload: Any, null_defaults: Mapping[str, Any]) -> None:
    """DecodeError when the row an event writes (`after`; a delete's `before`) holds a column's
    DEFAULT that the converter also writes for a NULL (`avro.null_defaults`)."""
    if not _is_mapping(payload):
        return
    row = payload.get("after")
    if row is None:
        row = payload.get("before")
    if not _is_mapping(row):
        return
    for column, default in null_defaults.items():
        value = row.get(column)
        if value is None or (default is not avro.UNKNOWN_DEFAULT and value != default):
            continue
        said = "a value" if default is avro.UNKNOWN_DEFAULT else f"{value!r}, its DEFAULT"
        source = payload.get("source")
        table = f"{source.get('schema')}.{source.get('table')}" if _is_mapping(source) else "its table"
        raise DecodeError(
            ref,
            f"column {column} of {table} holds {said}, which the Avro converter also writes for a NULL"
            " (a nullable column with a DEFAULT: KAFKA-8713); fix: the JSON converter with"
            " value.converter.replace.null.with.default=false (as connectors/demo-postgres.json), or"
            f" drop the column's DEFAULT on the source, then `replicator reload --table {table}`; if the"
            " column never holds NULL: REPLICATOR_AVRO_TRUST_NULL_DEFAULTS=true and"
            " `replicator errors retry`",
        )


class AvroDecoder:
    """Decodes Confluent AvroConverter messages; `schema_lookup(id)` returns a parsed schema.

    A look-up raising `LookupError` (e.g. `avro.SchemaNotFoundError`,
    `KeyError`) means the id is unknown: `DecodeError`.  Any other exception
    (e.g. `avro.RegistryUnavailableError`) is transient and propagates.
    A row value equal to the DEFAULT the converter writes for a NULL (`avro.null_defaults`) is
    ambiguous: `DecodeError`, unless `trust_null_defaults` (the operator knows those columns
    never hold NULL).
    """

    def __init__(
        self,
        schema_lookup: SchemaLookup,
        *,
        unavailable_placeholder: str = DEFAULT_PLACEHOLDER,
        heartbeat_prefix: str = HEARTBEAT_PREFIX,
        transaction_topics: Collection[str] = (),
        trust_null_defaults: bool = False,
    ) -> None:
        self._lookup = schema_lookup
        self.unavailable_placeholder = unavailable_placeholder
        self._control = _ControlTopics(heartbeat_prefix, transaction_topics)
        self._trust_null_defaults = trust_null_defaults
        # per value schema id: (schema, plan, the row's columns whose NULL arrives as their default)
        self._value_plans: dict[int, tuple[Any, _EnvelopePlan, dict[str, Any]]] = {}
        self._key_plans: dict[int, tuple[Any, RowFn]] = {}

    def decode(
        self, ref: KafkaRef, key: bytes | None, value: bytes | None, headers: Headers = None
    ) -> Decoded:
        """Decode one Kafka record; raises `DecodeError`."""
        reason = self._control.reason(ref.topic)
        if reason is not None:
            return NotTableData(ref, reason)
        if value is None:
            return Tombstone(ref, key)
        schema, plan, null_defaults = self._value_plan(ref, value)
        payload = self._read(ref, value, schema, "value")
        if null_defaults and not self._trust_null_defaults:
            _refuse_null_defaults(ref, payload, null_defaults)
        key_row: dict[str, Any] | None = None
        if key is not None:
            key_schema, key_plan = self._key_plan(ref, key)
            key_row = _key_row(ref, key_plan, self._read(ref, key, key_schema, "key"))
        return _to_event(ref, payload, key_row, plan, key, value, headers)

    def key_row(self, ref: KafkaRef, key: bytes | None) -> dict[str, Any] | None:
        """The record's key alone (for the error record of a value that cannot be decoded); None
        when there is no key or it cannot be decoded either (the registry down included: the
        value's error is what the record reports)."""
        if key is None:
            return None
        try:
            key_schema, key_plan = self._key_plan(ref, key)
            return _key_row(ref, key_plan, self._read(ref, key, key_schema, "key"))
        except Exception:
            return None

    def _schema_id(self, ref: KafkaRef, data: bytes, what: str) -> int:
        try:
            return avro.split_wire(data)[0]
        except avro.WireFormatError as e:
            raise DecodeError(ref, f"{what}: {e}") from e

    def _schema(self, ref: KafkaRef, schema_id: int, what: str) -> Any:
        try:
            return self._lookup(schema_id)
        except LookupError as e:
            raise DecodeError(
                ref, f"{what} schema id {schema_id} is unknown to the schema registry ({e})"
            ) from e

    def _value_plan(self, ref: KafkaRef, value: bytes) -> tuple[Any, _EnvelopePlan, dict[str, Any]]:
        schema_id = self._schema_id(ref, value, "value")
        cached = self._value_plans.get(schema_id)
        if cached is None:
            schema = self._schema(ref, schema_id, "value")
            try:
                env = avro.column_type_from_avro(schema, avro.named_schemas(schema))
            except (ValueError, KeyError, TypeError) as e:
                raise DecodeError(ref, f"value schema id {schema_id} is not usable: {e}") from e
            plan = _envelope_plan(env, self.unavailable_placeholder, binary_base64=False)
            cached = (schema, plan, avro.null_defaults(schema))
            self._value_plans[schema_id] = cached
        return cached

    def _key_plan(self, ref: KafkaRef, key: bytes) -> tuple[Any, RowFn]:
        schema_id = self._schema_id(ref, key, "key")
        cached = self._key_plans.get(schema_id)
        if cached is None:
            schema = self._schema(ref, schema_id, "key")
            try:
                ct = avro.column_type_from_avro(schema, avro.named_schemas(schema))
            except (ValueError, KeyError, TypeError) as e:
                raise DecodeError(ref, f"key schema id {schema_id} is not usable: {e}") from e
            cached = (schema, _key_plan(ct, binary_base64=False))
            self._key_plans[schema_id] = cached
        return cached

    @staticmethod
    def _read(ref: KafkaRef, data: bytes, schema: Any, what: str) -> Any:
        try:
            return avro.read_body(data[avro.HEADER_LEN :], schema)
        except Exception as e:
            raise DecodeError(
                ref, f"{what} Avro body does not match its schema ({type(e).__name__}: {e})"
            ) from e
