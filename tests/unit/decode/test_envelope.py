"""Envelope decoding: ops, tables, snapshot flag, positions, control messages, errors."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from replicator.core.decode import DecodeError, JsonDecoder, NotTableData, Tombstone
from replicator.core.model import ChangeEvent, KafkaRef, Op, SourcePosition, TableRef

from . import builders as b

T = b.Table([b.int32("id", optional=False), b.string("name")])


def decode(rec: b.Record, dec: JsonDecoder | None = None, offset: int = 7) -> object:
    return (dec or JsonDecoder()).decode(rec.ref(offset), rec.key, rec.value, rec.headers)


def event(rec: b.Record, dec: JsonDecoder | None = None) -> ChangeEvent:
    ev = decode(rec, dec)
    assert isinstance(ev, ChangeEvent)
    return ev


def test_create_decodes_op_table_key_after_and_raw_bytes() -> None:
    rec = b.create(T, {"id": 1, "name": "a"})
    ev = event(rec)
    assert ev.op is Op.CREATE
    assert ev.table == TableRef("public", "items")
    assert ev.key == {"id": 1}
    assert ev.before is None
    assert ev.after == {"id": 1, "name": "a"}
    assert ev.snapshot is False
    assert ev.ts_ms == 1_700_000_000_000  # source.ts_ms (the commit), not the envelope's (_123)
    assert ev.raw_key == rec.key and ev.raw_value == rec.value
    assert ev.ref == KafkaRef(T.topic, 0, 7)
    assert ev.txid == 771 and ev.lsn == 24023960


def test_update_carries_before_and_after() -> None:
    ev = event(b.update(T, {"id": 1, "name": "a"}, {"id": 1, "name": "b"}))
    assert ev.op is Op.UPDATE
    assert ev.before == {"id": 1, "name": "a"}
    assert ev.after == {"id": 1, "name": "b"}


def test_update_with_null_before_is_accepted() -> None:
    """REPLICA IDENTITY DEFAULT updates carry before=null."""
    ev = event(b.update(T, None, {"id": 1, "name": "b"}))
    assert ev.before is None


def test_delete_with_key_only_before() -> None:
    ev = event(b.delete(T, {"id": 1, "name": None}))
    assert ev.op is Op.DELETE
    assert ev.after is None
    assert ev.before == {"id": 1, "name": None}
    assert ev.key == {"id": 1}


def test_tombstone_is_not_an_error_and_keeps_the_key() -> None:
    rec = b.tombstone(T, {"id": 1})
    out = decode(rec)
    assert out == Tombstone(rec.ref(7), rec.key)


def test_truncate_has_null_key_and_no_rows() -> None:
    ev = event(b.truncate(T))
    assert ev.op is Op.TRUNCATE
    assert ev.key is None and ev.before is None and ev.after is None
    assert ev.position == SourcePosition(24023928, 24023960, 0)


def test_snapshot_read_has_no_position_but_keeps_lsn() -> None:
    ev = event(b.read(T, {"id": 1, "name": "a"}))
    assert ev.op is Op.READ
    assert ev.snapshot is True
    assert ev.position is None
    assert ev.lsn == 24023960


@pytest.mark.parametrize(
    "flag",
    ["true", "first", "first_in_data_collection", "last_in_data_collection", "last", "incremental"],
)
def test_snapshot_flag_values_mean_snapshot(flag: str) -> None:
    assert event(b.read(T, {"id": 1, "name": "a"}, snapshot=flag)).snapshot is True


@pytest.mark.parametrize("flag", ["false", None])
def test_snapshot_false_or_null_means_streaming(flag: str | None) -> None:
    ev = event(b.create(T, {"id": 1, "name": "a"}, snapshot=flag))
    assert ev.snapshot is False
    assert ev.position is not None


def test_unknown_snapshot_value_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"source\.snapshot"):
        decode(b.create(T, {"id": 1, "name": "a"}, snapshot="maybe"))


def test_incremental_snapshot_row_without_lsn_has_no_position() -> None:
    ev = event(b.read(T, {"id": 1, "name": "a"}, snapshot="incremental", lsn=None, txid=None, sequence=None))
    assert ev.position is None and ev.lsn is None and ev.txid is None


def test_incremental_snapshot_row_is_at_the_stream_position_it_was_emitted_at() -> None:
    """Debezium 3.6 (trial 8's topics): `"lsn": null, "sequence": "[\"1851934488\",\"1851934488\"]"`.
    The row's `lsn` is that position (`core.holding` judges a held row there); it stays unordered
    (no position), and an initial snapshot row keeps its own source.lsn."""
    seq = json.dumps(["1851934488", "1851934488"])
    ev = event(b.read(T, {"id": 1, "name": "a"}, snapshot="incremental", lsn=None, txid=None, sequence=seq))
    assert ev.position is None and ev.lsn == 1851934488
    uneven = json.dumps([None, "1851934500"])
    assert event(b.read(T, {"id": 1}, snapshot="incremental", lsn=None, sequence=uneven)).lsn == 1851934500
    initial = event(b.read(T, {"id": 1}, snapshot="true", lsn=42, sequence=seq))
    assert initial.position is None and initial.lsn == 42


# --------------------------------------------------------------------------- positions


def test_position_from_sequence_and_transaction_total_order() -> None:
    rec = b.create(
        T,
        {"id": 1, "name": "a"},
        lsn=500,
        commit_lsn=400,
        transaction={"id": "771:500", "total_order": 3, "data_collection_order": 2},
    )
    assert event(rec).position == SourcePosition(400, 500, 3)


def test_position_null_seq0_counts_as_zero() -> None:
    """First streamed transaction after a snapshot has sequence [null, lsn]."""
    assert event(b.create(T, {"id": 1, "name": "a"}, commit_lsn=None, lsn=900)).position == (
        SourcePosition(0, 900, 0)
    )


def test_position_null_seq1_falls_back_to_source_lsn() -> None:
    rec = b.create(T, {"id": 1, "name": "a"}, sequence='["10",null]', lsn=77)
    assert event(rec).position == SourcePosition(10, 77, 0)


def test_position_without_sequence_falls_back_to_lsn() -> None:
    rec = b.create(T, {"id": 1, "name": "a"}, sequence=None, lsn=77)
    assert event(rec).position == SourcePosition(0, 77, 0)


def test_positions_order_by_commit_then_lsn_not_raw_lsn() -> None:
    """Interleaved transactions: a later commit with a lower change LSN still sorts later."""
    early = event(b.create(T, {"id": 1, "name": "a"}, commit_lsn=100, lsn=300)).position
    late = event(b.create(T, {"id": 2, "name": "b"}, commit_lsn=200, lsn=250)).position
    assert early is not None and late is not None and early < late


def test_streaming_event_without_sequence_or_lsn_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"neither source\.sequence nor source\.lsn"):
        decode(b.create(T, {"id": 1, "name": "a"}, sequence=None, lsn=None))


def test_malformed_sequence_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="sequence"):
        decode(b.create(T, {"id": 1, "name": "a"}, sequence='["1"]'))


# --------------------------------------------------------------------------- control messages


def test_logical_decoding_message_is_not_table_data() -> None:
    rec = b.envelope(T, "m", key={"id": 1})
    out = decode(rec)
    assert isinstance(out, NotTableData) and "'m'" in out.reason


def test_heartbeat_topic_is_not_table_data_by_name() -> None:
    out = JsonDecoder().decode(KafkaRef("__debezium-heartbeat.srv", 0, 1), b"{}", b"{}")
    assert isinstance(out, NotTableData) and out.reason == "heartbeat topic"


def test_heartbeat_message_is_recognised_by_content() -> None:
    value = b.wrap({"type": "struct", "fields": [{"type": "int64", "field": "ts_ms"}]}, {"ts_ms": 1}, True)
    out = JsonDecoder().decode(KafkaRef("hb", 0, 1), None, value)
    assert isinstance(out, NotTableData) and out.reason == "heartbeat"


def test_configured_transaction_topic_is_not_table_data() -> None:
    dec = JsonDecoder(transaction_topics={"srv.transaction"})
    out = dec.decode(KafkaRef("srv.transaction", 0, 1), None, b"{}")
    assert isinstance(out, NotTableData)


def test_transaction_metadata_is_recognised_by_content() -> None:
    payload = {
        "status": "END",
        "id": "571:53195832",
        "ts_ms": 1,
        "event_count": 2,
        "data_collections": [],
    }
    out = JsonDecoder().decode(KafkaRef("srv.transaction", 0, 1), None, b.dumps(payload))
    assert isinstance(out, NotTableData) and "transaction" in out.reason


def test_table_named_transaction_is_still_table_data() -> None:
    t = b.Table([b.int32("id", optional=False)], name="transaction")
    assert event(b.create(t, {"id": 1})).table == TableRef("public", "transaction")


# --------------------------------------------------------------------------- headers


def test_pk_change_headers_are_accepted() -> None:
    """PK update = d(__debezium.newkey) + tombstone + c(__debezium.oldkey); each decodes alone."""
    d = b.delete(T, {"id": 1, "name": None}, headers=(("__debezium.newkey", b'{"id":2}'),))
    c = b.create(T, {"id": 2, "name": "a"}, headers=(("__debezium.oldkey", b'{"id":1}'),))
    assert event(d).op is Op.DELETE
    assert event(c).key == {"id": 2}


# --------------------------------------------------------------------------- errors


def test_bad_json_is_a_one_line_decode_error() -> None:
    with pytest.raises(DecodeError) as err:
        JsonDecoder().decode(KafkaRef("t", 0, 5), None, b'{"schema":')
    assert "not valid Kafka Connect JSON" in err.value.message
    assert "\n" not in err.value.message
    assert err.value.ref == KafkaRef("t", 0, 5)


def test_non_utf8_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="UTF-8"):
        JsonDecoder().decode(KafkaRef("t", 0, 5), None, b"\xff\xfe")


def test_unknown_op_is_named_in_the_error() -> None:
    with pytest.raises(DecodeError, match="unknown op 'x'"):
        decode(b.envelope(T, "x", after={"id": 1, "name": "a"}))


def test_missing_op_is_a_decode_error() -> None:
    payload = json.loads(b.create(T, {"id": 1, "name": "a"}).value or b"")
    del payload["payload"]["op"]
    with pytest.raises(DecodeError, match="no 'op'"):
        JsonDecoder().decode(KafkaRef("t", 0, 0), None, b.dumps(payload))


def test_missing_source_is_a_decode_error() -> None:
    payload = {"op": "c", "after": {"id": 1}, "ts_ms": 1}
    with pytest.raises(DecodeError, match="'source'"):
        JsonDecoder().decode(KafkaRef("t", 0, 0), None, b.dumps(payload))


def test_create_without_after_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="no 'after'"):
        decode(b.envelope(T, "c", key={"id": 1}))


def test_value_that_is_not_an_object_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not a Debezium envelope"):
        JsonDecoder().decode(KafkaRef("t", 0, 0), None, b"[1,2]")


def test_schema_change_mid_topic_uses_the_new_schema() -> None:
    """A column added later (no DDL in the stream) appears with its own conversion."""
    dec = JsonDecoder()
    event(b.create(T, {"id": 1, "name": "a"}), dec)
    t2 = b.Table([*T.columns, b.date("d")])
    ev = event(b.create(t2, {"id": 2, "name": "b", "d": 1}), dec)
    assert str(ev.after["d"] if ev.after else None) == "1970-01-02"
    ev = event(b.create(T, {"id": 3, "name": "c"}), dec)
    assert ev.after == {"id": 3, "name": "c"}


def test_fast_path_and_slow_path_agree() -> None:
    """Second message with the same schema (fast path) decodes like the first."""
    dec = JsonDecoder()
    rec = b.create(T, {"id": 1, "name": "a"})
    first, second = event(rec, dec), event(rec, dec)
    assert first == second


def test_non_compact_json_layout_still_decodes() -> None:
    rec = b.create(T, {"id": 1, "name": "a"})
    pretty = json.dumps(json.loads(rec.value or b""), indent=2).encode()
    ev = JsonDecoder().decode(rec.ref(), rec.key, pretty)
    assert isinstance(ev, ChangeEvent) and ev.after == {"id": 1, "name": "a"}


def test_payload_with_extra_top_level_key_falls_back_correctly() -> None:
    dec = JsonDecoder()
    rec = b.create(T, {"id": 1, "name": "a"})
    event(rec, dec)
    doc = json.loads(rec.value or b"")
    doc["extra"] = 1
    with pytest.raises(DecodeError, match="no 'op'"):
        dec.decode(rec.ref(), rec.key, b.dumps(doc))


STAMPED = b.Table([b.int32("id", optional=False), b.micro_timestamp("t")])


def test_an_update_whose_old_image_python_cannot_hold_is_applied_by_its_key() -> None:
    """Trial 5: under REPLICA IDENTITY FULL an update whose old row image held a BC value was an
    error record, although its new row and its key were fine (the update repairing the value was
    refused). The old image is dropped then; without a key, or for a delete, it is still an error."""
    bc = -62135600400000000  # 0001-12-31 23:00:00 BC in microseconds since 1970-01-01
    e = event(b.update(STAMPED, {"id": 4, "t": bc}, {"id": 4, "t": 0}))
    assert (e.op, e.key, e.before, e.after) == (
        Op.UPDATE,
        {"id": 4},
        None,
        {"id": 4, "t": dt.datetime(1970, 1, 1)},
    )
    with pytest.raises(DecodeError, match=r"outside years 1\.\.9999"):
        decode(b.delete(STAMPED, {"id": 4, "t": bc}))
    keyless = b.Table([b.int32("id", optional=False), b.micro_timestamp("t")], key=[])
    with pytest.raises(DecodeError, match=r"outside years 1\.\.9999"):
        decode(b.update(keyless, {"id": 4, "t": bc}, {"id": 4, "t": 0}))
