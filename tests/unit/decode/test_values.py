"""Semantic-type conversion (schemas enabled) and unchanged-TOAST placeholders."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from replicator.core.decode import DecodeError, JsonDecoder
from replicator.core.model import UNAVAILABLE, ChangeEvent
from replicator.core.values import NEG_INFINITY, POS_INFINITY, Bits, JsonText, PgText

from . import builders as b

PH = "__debezium_unavailable_value"
UTC = dt.UTC


def b64int(v: int) -> str:
    n = (v.bit_length() + 8) // 8
    return base64.b64encode(v.to_bytes(n, "big", signed=True)).decode()


def one(column: dict[str, Any], wire: Any, *, dec: JsonDecoder | None = None) -> Any:
    t = b.Table([b.int32("id", optional=False), column])
    rec = b.update(t, None, {"id": 1, column["field"]: wire})
    ev = (dec or JsonDecoder()).decode(rec.ref(), rec.key, rec.value)
    assert isinstance(ev, ChangeEvent) and ev.after is not None
    return ev.after[column["field"]]


@pytest.mark.parametrize(
    ("scale", "wire", "expected"),
    [
        (2, "MDk=", Decimal("123.45")),
        (2, "nA==", Decimal("-1.00")),
        (0, "/w==", Decimal("-1")),
        (0, "AIA=", Decimal("128")),
        (3, "AA==", Decimal("0.000")),
        (
            20,
            b64int(-(10**60) - 7),
            Decimal("-10000000000000000000000000000000000000000.00000000000000000007"),
        ),
    ],
)
def test_decimal_base64_two_complement_with_scale(scale: int, wire: str, expected: Decimal) -> None:
    got = one(b.decimal("v", scale, 80), wire)
    assert got == expected and got.as_tuple() == expected.as_tuple()


def test_decimal_numeric_format_keeps_full_precision() -> None:
    """decimal.format=NUMERIC: JSON number parsed as Decimal, never via float."""
    t = b.Table([b.int32("id", optional=False), b.decimal("v", 30, 60)])
    rec = b.create(t, {"id": 1, "v": 0})
    raw = (rec.value or b"").replace(b'"v":0', b'"v":12345678901234567890.123456789012345678901234567890')
    decoder = JsonDecoder()
    for offset in range(3):  # the first message takes the full parse; the next ones the fast path
        ev = decoder.decode(rec.ref(offset), rec.key, raw)
        assert isinstance(ev, ChangeEvent) and ev.after is not None
        assert ev.after["v"] == Decimal("12345678901234567890.123456789012345678901234567890")


def test_fast_path_keeps_floats_and_falls_back_for_nan_tokens() -> None:
    """Payloads after the first are parsed with orjson: doubles stay floats; a NaN token (which
    orjson refuses) falls back to the full parser instead of failing."""
    t = b.Table([b.int32("id", optional=False), b.float64("f")])
    rec = b.create(t, {"id": 1, "f": 0.1})
    decoder = JsonDecoder()
    first, second = (decoder.decode(rec.ref(o), rec.key, rec.value) for o in (0, 1))
    assert isinstance(second, ChangeEvent) and second.after == {"id": 1, "f": 0.1}
    assert isinstance(first, ChangeEvent) and first.after == second.after
    nan = (rec.value or b"").replace(b'"f":0.1', b'"f":NaN')
    ev = decoder.decode(rec.ref(2), rec.key, nan)
    assert isinstance(ev, ChangeEvent) and ev.after is not None and ev.after["f"] != ev.after["f"]


def test_variable_scale_decimal() -> None:
    assert one(b.var_decimal("v"), {"scale": 3, "value": b64int(-12345)}) == Decimal("-12.345")
    assert one(b.var_decimal("v"), {"scale": 0, "value": "AA=="}) == Decimal(0)


def test_money_is_decimal_scale_2() -> None:
    assert one(b.decimal("m", 2), "MDk=") == Decimal("123.45")


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (0, dt.date(1970, 1, 1)),
        (-1, dt.date(1969, 12, 31)),
        (-719162, dt.date(1, 1, 1)),
        (19723, dt.date(2024, 1, 1)),
    ],
)
def test_date_days_since_epoch_incl_before_epoch(days: int, expected: dt.date) -> None:
    assert one(b.date("d"), days) == expected


@pytest.mark.parametrize(
    ("days", "text"),  # PostgreSQL's `'1970-01-01'::date + days` (ISO DateStyle)
    [
        (-735160, "0044-03-15 BC"),
        (-719528, "0001-01-01 BC"),
        (-719163, "0001-12-31 BC"),
        (-2440550, "4713-01-01 BC"),
        (2932897, "10000-01-01"),
        (2145042905, "5874897-12-31"),
    ],
)
def test_a_date_python_cannot_hold_is_carried_as_postgresqls_text(days: int, text: str) -> None:
    """Trial 13: BC dates (and years past 9999) were error records; PostgreSQL reads its own text."""
    value = one(b.date("d"), days)
    assert isinstance(value, PgText) and value == text


@pytest.mark.parametrize(
    ("col", "wire", "expected"),
    [
        (b.time_ms("t"), 45_296_789, dt.time(12, 34, 56, 789000)),
        (b.micro_time("t"), 45_296_789_012, dt.time(12, 34, 56, 789012)),
        (b.nano_time("t"), 45_296_789_012_000, dt.time(12, 34, 56, 789012)),
        (b.micro_time("t"), 0, dt.time(0, 0)),
    ],
)
def test_time_types(col: dict[str, Any], wire: int, expected: dt.time) -> None:
    assert one(col, wire) == expected


def test_time_24_00_is_carried_as_postgres_text_not_clamped() -> None:
    """PostgreSQL's time '24:00:00' has no Python time: it travels as the text PostgreSQL reads."""
    got = one(b.micro_time("t"), 86_400_000_000)
    assert isinstance(got, PgText) and got == "24:00:00"
    with pytest.raises(DecodeError, match=r"outside 00:00:00\.\.24:00:00"):
        one(b.micro_time("t"), 86_400_000_001)


@pytest.mark.parametrize(
    ("col", "wire", "expected"),
    [
        (
            b.micro_timestamp("ts"),
            1_700_000_000_123_456,
            dt.datetime(2023, 11, 14, 22, 13, 20, 123456),
        ),
        (b.micro_timestamp("ts"), -1, dt.datetime(1969, 12, 31, 23, 59, 59, 999999)),
        (b.timestamp_ms("ts"), 1_700_000_000_123, dt.datetime(2023, 11, 14, 22, 13, 20, 123000)),
        (
            b.nano_timestamp("ts"),
            1_700_000_000_123_456_000,
            dt.datetime(2023, 11, 14, 22, 13, 20, 123456),
        ),
    ],
)
def test_timestamps_are_naive_and_micro_precise(
    col: dict[str, Any], wire: int, expected: dt.datetime
) -> None:
    got = one(col, wire)
    assert got == expected and got.tzinfo is None


@pytest.mark.parametrize(
    ("wire", "expected"),
    [(9223372036825200000, POS_INFINITY), (-9223372036832400000, NEG_INFINITY)],
)
def test_micro_timestamp_infinity_sentinels(wire: int, expected: object) -> None:
    got = one(b.micro_timestamp("ts"), wire)
    assert got is expected
    assert str(got) in ("infinity", "-infinity")


def test_zoned_timestamp_iso_with_z_and_offsets() -> None:
    got = one(b.zoned_timestamp("z"), "2024-02-29T23:59:59.123456Z")
    assert got == dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)
    off = one(b.zoned_timestamp("z"), "2024-01-01T10:00:00+05:30")
    assert off == dt.datetime(2024, 1, 1, 4, 30, tzinfo=UTC)
    assert off.utcoffset() == dt.timedelta(hours=5, minutes=30)


@pytest.mark.parametrize(("wire", "expected"), [("infinity", POS_INFINITY), ("-infinity", NEG_INFINITY)])
def test_zoned_timestamp_infinity_strings(wire: str, expected: object) -> None:
    assert one(b.zoned_timestamp("z"), wire) is expected


def test_zoned_time() -> None:
    assert one(b.zoned_time("t"), "12:34:56.5Z") == dt.time(12, 34, 56, 500000, tzinfo=UTC)


def test_micro_duration_is_refused_as_approximate() -> None:
    """interval.handling.mode=numeric is Debezium's approximation (a month is 30.4375 days): an
    error naming the connector setting that carries intervals exactly, never a changed value."""
    with pytest.raises(DecodeError, match=r"interval\.handling\.mode=string"):
        one(b.micro_duration("i"), 2_629_800_000_000)  # what '1 mon' arrives as


def test_interval_string_mode_passes_the_iso_text() -> None:
    iso = "P1Y2M3DT4H5M6.789S"
    assert one(b.semantic("i", "string", "io.debezium.time.Interval"), iso) == iso


def test_json_stays_its_exact_text() -> None:
    """json keeps key order, duplicate keys and spacing; numbers are not reparsed."""
    text = '{"b": 1, "a": [1.50, 2e3], "a": 2}'
    got = one(b.json_("j"), text)
    assert isinstance(got, JsonText) and got == text


@pytest.mark.parametrize(
    "col",
    [b.uuid_("s"), b.enum("s", "a,b"), b.xml("s"), b.string("s")],
)
def test_string_like_types_pass_through(col: dict[str, Any]) -> None:
    assert one(col, "ünïcode 😀 \u0000x") == "ünïcode 😀 \u0000x"


def test_empty_string_and_null_are_distinct() -> None:
    assert one(b.string("s"), "") == ""
    assert one(b.string("s"), None) is None


def test_bytea_base64() -> None:
    assert one(b.bytea("bin"), "AAH/") == b"\x00\x01\xff"
    assert one(b.bytea("bin"), "") == b""


def test_bad_base64_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="'bin'"):
        one(b.bytea("bin"), "!!!")


def test_float_int_bool_pass_through_with_float_type() -> None:
    assert one(b.float64("f"), 0.1) == 0.1 and isinstance(one(b.float64("f"), 0.1), float)
    assert one(b.int64("n"), 2**62) == 2**62
    assert one(b.boolean("x"), False) is False


def test_arrays_convert_elements_and_keep_nulls() -> None:
    assert one(b.array("a", b.date("x")), [0, None, -1]) == [
        dt.date(1970, 1, 1),
        None,
        dt.date(1969, 12, 31),
    ]
    assert one(b.array("a", b.decimal("x", 1)), ["AQ==", None]) == [Decimal("0.1"), None]
    assert one(b.array("a", b.string("x")), ["a", "b"]) == ["a", "b"]


def test_key_decimal_is_converted_too() -> None:
    t = b.Table([b.decimal("id", 2), b.string("name")])
    rec = b.create(t, {"id": "MDk=", "name": "a"})
    ev = JsonDecoder().decode(rec.ref(), rec.key, rec.value)
    assert isinstance(ev, ChangeEvent)
    assert ev.key == {"id": Decimal("123.45")}


# --------------------------------------------------------------------------- TOAST placeholder


@pytest.mark.parametrize(
    ("col", "wire"),
    [
        (b.string("v"), PH),
        (b.json_("v"), PH),
        (b.xml("v"), PH),
        (b.bytea("v"), base64.b64encode(PH.encode()).decode()),
        (b.array("v", b.string("x")), [PH]),
        (b.array("v", b.json_("x")), [PH]),
        (b.array("v", b.int32("x")), list(PH.encode())),
        (b.array("v", b.int64("x")), list(PH.encode())),
        (b.array("v", b.date("x")), list(PH.encode())),
    ],
)
def test_toast_placeholder_shapes_become_unavailable(col: dict[str, Any], wire: Any) -> None:
    assert one(col, wire) is UNAVAILABLE


def test_toast_check_is_type_aware() -> None:
    """The placeholder's base64 in a text column is real text, not a placeholder."""
    b64 = base64.b64encode(PH.encode()).decode()
    assert one(b.string("v"), b64) == b64
    assert one(b.array("v", b.string("x")), [PH, PH]) == [PH, PH]


def test_custom_placeholder_is_honoured() -> None:
    dec = JsonDecoder(unavailable_placeholder="~~toast~~")
    assert one(b.string("v"), "~~toast~~", dec=dec) is UNAVAILABLE
    assert one(b.string("v"), PH, dec=dec) == PH


# --------------------------------------------------------------------------- shapes seen on the stack
# Wire values below were captured from Debezium 3.6.1 on our local stack (MIGRATION-ARTIFACTS.md,
# "Type coverage"); each test names the PostgreSQL value that produced them.


@pytest.mark.parametrize(
    ("col", "wire", "expected"),
    [
        (b.float64("f"), "NaN", "nan"),
        (b.float64("f"), "Infinity", "inf"),
        (b.float64("f"), "-Infinity", "-inf"),
        (b.float32("f"), "NaN", "nan"),
        (b.float64("f"), -0.0, "-0.0"),
    ],
)
def test_float_nan_and_infinities_are_floats(col: dict[str, Any], wire: Any, expected: str) -> None:
    """Jackson writes double 'NaN' / 'Infinity' as JSON strings: they become the float itself."""
    got = one(col, wire)
    assert isinstance(got, float) and repr(got) == expected


def test_float_text_other_than_nan_or_infinity_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="'f'"):
        one(b.float64("f"), "1.5")


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (-622191234, POS_INFINITY),  # snapshot
        (-625821272, NEG_INFINITY),
        (-2147472692, POS_INFINITY),  # streaming
        (-2147472691, NEG_INFINITY),
    ],
)
def test_date_infinity_day_counts(wire: int, expected: object) -> None:
    """date 'infinity' / '-infinity' arrive as these day counts (outside PostgreSQL's range),
    different in the snapshot and while streaming."""
    assert one(b.date("d"), wire) is expected
    assert one(b.array("a", b.date("x")), [19782, wire]) == [dt.date(2024, 2, 29), expected]


def test_timestamptz_minus_infinity_inside_an_array() -> None:
    """timestamptz[] '{-infinity}' arrives as a year-292269055 instant; 'infinity' as 'infinity'."""
    col = b.array("a", b.zoned_timestamp("x"))
    assert one(col, ["+292269055-12-02T23:00:00.000000Z", "infinity"]) == [NEG_INFINITY, POS_INFINITY]


def test_timestamptz_before_year_1_in_utc_is_a_decode_error_naming_the_limit() -> None:
    """'0001-01-01 00:30:00+01' is year 0 in UTC: Python cannot hold it (an error record)."""
    with pytest.raises(DecodeError, match=r"outside years 1\.\.9999"):
        one(b.zoned_timestamp("z"), "0000-12-31T23:30:00.000000Z")


def test_timestamp_beyond_python_range_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"outside years 1\.\.9999"):
        one(b.micro_timestamp("ts"), -62135600400000000)  # 0001-12-31 23:00:00 BC


@pytest.mark.parametrize(
    ("length", "wire", "expected"),
    [(4, "Cg==", (10, 4)), (4, "", (0, 4)), (16, "//8=", (65535, 16)), (16, "AQ==", (1, 16))],
)
def test_bits_keep_the_value_and_the_declared_length(
    length: int, wire: str, expected: tuple[int, int]
) -> None:
    """bit(4) B'1010' arrives as base64 of little-endian bytes, length in the schema."""
    got = one(b.bits("b", length), wire)
    assert isinstance(got, Bits) and (got.value, got.declared) == expected


def test_bits_text_pads_to_the_column_length() -> None:
    assert Bits(10, 4).text(4) == "1010"
    assert Bits(5, 4).text(4) == "0101"
    assert Bits(0, 4).text(4) == "0000"
    with pytest.raises(ValueError, match="do not fit bit"):
        Bits(16, 8).text(4)


def test_point_struct_becomes_postgres_point_text() -> None:
    got = one(b.point("p"), {"x": 1.5, "y": -2.25, "wkb": "AQE=", "srid": None})
    assert isinstance(got, PgText) and got == "(1.5,-2.25)"
    assert one(b.point("p"), {"x": -0.0, "y": 1e300, "wkb": None, "srid": None}) == "(-0.0,1e+300)"
    assert one(b.point("p"), {"x": "NaN", "y": "-Infinity", "wkb": None, "srid": None}) == "(NaN,-Infinity)"


def test_postgis_struct_becomes_hex_ewkb_text() -> None:
    """Debezium's {wkb, srid} (as sent for a POINT with SRID 4326 and a LINESTRING without one)."""
    point = "AQEAACDmEAAAAAAAAAAA+D8AAAAAAAAEQA=="  # EWKB: the SRID is inside
    got = one(b.geometry("g"), {"wkb": point, "srid": 4326})
    assert isinstance(got, PgText) and got == "0101000020e6100000000000000000f83f0000000000000440"
    line = "AQIAAAACAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAPA/AAAAAAAA8D8="
    bare = "01020000000200000000000000000000000000000000000000000000000000f03f000000000000f03f"
    assert one(b.geometry("g", "io.debezium.data.geometry.Geography"), {"wkb": line, "srid": None}) == bare
    assert one(b.geometry("g"), {"wkb": line, "srid": 3857}) == f"SRID=3857;{bare}"  # not inside: in front
    with pytest.raises(DecodeError, match="wkb"):
        one(b.geometry("g"), {"wkb": "AQ==", "srid": None})


def test_multidimensional_text_array_java_names_are_a_decode_error() -> None:
    """text[][] '{{a,b},{c,d}}' arrives as Java object names: refused, never written."""
    with pytest.raises(DecodeError, match="multi-dimensional"):
        one(b.array("a", b.string("x")), ["[Ljava.lang.String;@1ef20ccc", "[Ljava.lang.String;@78684dc2"])
    assert one(b.array("a", b.string("x")), ["[L", "x;@"]) == ["[L", "x;@"]
