"""Every whitelisted transform, value_map policy and cast, with boundary properties."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.core.mapping import transforms as tf
from replicator.core.mapping.catalog import PgType

FAST = settings(max_examples=100, deadline=None)
BERLIN = ZoneInfo("Europe/Berlin")


# --- trim / case / nfc ------------------------------------------------------------


def test_trim_strips_and_keeps_empty_string_and_null() -> None:
    """transform trim: empty string is not null; null stays null."""
    f = tf.trim()
    assert f("  a b \t") == "a b"
    assert f("   ") == ""
    assert f(None) is None


def test_case_upper_lower() -> None:
    """transform case: upper and lower, non-ASCII included."""
    assert tf.case("upper")("straße") == "STRASSE"
    assert tf.case("lower")("ÄBC") == "äbc"
    assert tf.case("lower")(None) is None


def test_text_transforms_reject_non_text() -> None:
    """transform trim/case/nfc: a non-text value is a clear error, not a str() guess."""
    with pytest.raises(tf.TransformError, match="needs text"):
        tf.trim()(5)


def test_nfc_composes_nfd() -> None:
    """transform nfc: NFD 'é' (e + combining acute) becomes the single NFC code point."""
    nfd = "Jose\u0301"
    assert len(nfd) == 5
    out = tf.nfc()(nfd)
    assert out == "José" and len(out) == 4


@FAST
@given(st.text())
def test_nfc_is_idempotent_and_canonical(s: str) -> None:
    """transform nfc: output is NFC and applying it twice changes nothing."""
    once = tf.nfc()(s)
    assert unicodedata.is_normalized("NFC", once)
    assert tf.nfc()(once) == once
    assert tf.nfc()(unicodedata.normalize("NFD", s)) == once


# --- hash / mask -------------------------------------------------------------------


def test_hash_sha256_of_utf8() -> None:
    """transform hash: hex sha256 of the UTF-8 bytes."""
    assert tf.sha256()("ä") == hashlib.sha256("ä".encode()).hexdigest()
    assert tf.sha256()("") == hashlib.sha256(b"").hexdigest()
    assert tf.sha256()(None) is None


@pytest.mark.parametrize(
    ("value", "keep", "expected"),
    [
        ("alice@example.com", 4, "*************.com"),
        ("abcd", 4, "****"),
        ("ab", 4, "**"),
        ("", 4, ""),
        ("secret", 0, "******"),
        ("äöüß12", 2, "****12"),
    ],
)
def test_mask_keep_last(value: str, keep: int, expected: str) -> None:
    """transform mask: keeps the last N characters; short values are fully masked."""
    assert tf.mask(keep, "*")(value) == expected


@FAST
@given(st.text(), st.integers(min_value=0, max_value=10))
def test_mask_preserves_length_and_reveals_at_most_keep_last(s: str, keep: int) -> None:
    """transform mask: same length in characters; never reveals the whole value."""
    out = tf.mask(keep, "#")(s)
    assert len(out) == len(s)
    if len(s) <= keep:
        assert out == "#" * len(s)
    else:
        assert out.endswith(s[len(s) - keep :]) and out[: len(s) - keep] == "#" * (len(s) - keep)


# --- timezone ----------------------------------------------------------------------


def test_timezone_to_utc_naive() -> None:
    """transform timezone: aware -> UTC wall time without tzinfo (order.placed_at_utc)."""
    f = tf.timezone_convert("UTC", naive=True, ambiguous="reject")
    v = datetime(2024, 7, 1, 12, 0, tzinfo=BERLIN)
    assert f(v) == datetime(2024, 7, 1, 10, 0)
    assert f(v).tzinfo is None


def test_timezone_rejects_naive_input() -> None:
    """transform timezone: a naive value has no known zone -> error."""
    with pytest.raises(tf.TransformError, match="naive"):
        tf.timezone_convert("UTC", naive=True, ambiguous="reject")(datetime(2024, 1, 1))


def test_timezone_dst_overlap_rejected_unless_keep() -> None:
    """transform timezone: Berlin 2024-10-27 02:30 happens twice; naive output is ambiguous."""
    f = tf.timezone_convert("Europe/Berlin", naive=True, ambiguous="reject")
    first = datetime(2024, 10, 27, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = datetime(2024, 10, 27, 1, 30, tzinfo=UTC)  # 02:30 CET
    for v in (first, second):
        with pytest.raises(tf.TransformError, match="ambiguous"):
            f(v)
    keep = tf.timezone_convert("Europe/Berlin", naive=True, ambiguous="keep")
    assert keep(first) == keep(second) == datetime(2024, 10, 27, 2, 30)


def test_timezone_dst_gap_never_produced() -> None:
    """transform timezone: Berlin 2024-03-31 02:00-03:00 does not exist; UTC 01:00 -> 03:00."""
    f = tf.timezone_convert("Europe/Berlin", naive=True, ambiguous="reject")
    assert f(datetime(2024, 3, 31, 0, 59, tzinfo=UTC)) == datetime(2024, 3, 31, 1, 59)
    assert f(datetime(2024, 3, 31, 1, 0, tzinfo=UTC)) == datetime(2024, 3, 31, 3, 0)


def test_timezone_aware_output_keeps_instant() -> None:
    """transform timezone: naive false keeps the instant (aware result)."""
    v = datetime(2024, 10, 27, 1, 30, tzinfo=UTC)
    out = tf.timezone_convert("Europe/Berlin", naive=False, ambiguous="reject")(v)
    # (PEP 495: inter-zone == is always False for fold=1 times; compare instants)
    assert out.timestamp() == v.timestamp() and out.utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    "inf", [datetime.max, datetime.min, datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)]
)
def test_timezone_infinity_passes_through(inf: datetime) -> None:
    """transform timezone: ±infinity (datetime.max/min) pass unchanged, tz dropped if naive."""
    assert tf.timezone_convert("Europe/Berlin", naive=True, ambiguous="reject")(inf) == inf.replace(
        tzinfo=None
    )
    assert tf.timezone_convert("UTC", naive=False, ambiguous="reject")(inf) is inf


def test_timezone_unknown_zone_refused() -> None:
    """transform timezone: an unknown zone name fails at compile time."""
    with pytest.raises(ValueError, match="unknown time zone"):
        tf.timezone_convert("Mars/Olympus", naive=True, ambiguous="reject")


@FAST
@given(st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_timezone_berlin_roundtrip_or_reject(v: datetime) -> None:
    """transform timezone: naive Berlin output maps back to the same instant, or is rejected
    because it is ambiguous (DST overlap) - never a silently different instant."""
    f = tf.timezone_convert("Europe/Berlin", naive=True, ambiguous="reject")
    try:
        wall = f(v)
    except tf.TransformError:
        return
    assert wall.replace(tzinfo=BERLIN) == v


# --- json_path ---------------------------------------------------------------------


def test_json_path_dict_list_and_text() -> None:
    """transform json_path: dotted keys and [n] indexes, on decoded JSON or JSON text."""
    doc = {"a": {"b": [10, {"c": True}]}, "newsletter": False}
    assert tf.json_path("$.a.b[0]")(doc) == 10
    assert tf.json_path("$.a.b[1].c")(doc) is True
    assert tf.json_path("$.newsletter")('{"newsletter": true}') is True
    assert tf.json_path("$")(doc) == doc
    assert tf.json_path("$.missing")(doc) is None
    assert tf.json_path("$.a.b[5]")(doc) is None
    assert tf.json_path("$.a.b[-1].c")(doc) is True


@pytest.mark.parametrize("bad", ["a.b", "$..a", "$[?(@.x)]", "$.a[*]", "$['a']", "$.a b"])
def test_json_path_refuses_unsupported_syntax(bad: str) -> None:
    """transform json_path: only the safe subset parses."""
    with pytest.raises(ValueError):
        tf.parse_json_path(bad)


def test_json_path_invalid_json_text() -> None:
    """transform json_path: invalid JSON text is a row error, not null."""
    with pytest.raises(tf.TransformError, match="not valid JSON"):
        tf.json_path("$.a")("{nope")


# --- decimal -----------------------------------------------------------------------


def test_decimal_mul_price_cents() -> None:
    """transform decimal: price * 100 scale 0 (product.price_cents)."""
    f = tf.decimal_op("mul", "100", 0, None)
    assert f(Decimal("19.99")) == Decimal("1999")
    assert f(7) == Decimal("700")


def test_decimal_div_weight_kg() -> None:
    """transform decimal: grams / 1000 scale 3 (product.weight_kg) is exact for integers."""
    f = tf.decimal_op("div", "1000", 3, None)
    assert f(1234) == Decimal("1.234")
    assert f(2**31 - 1) == Decimal("2147483.647")


def test_decimal_narrowing_rejected_without_rounding() -> None:
    """transform decimal: losing non-zero digits is a narrowing -> reject, unless rounding."""
    with pytest.raises(tf.TransformError, match="rounding"):
        tf.decimal_op("mul", "100", 0, None)(Decimal("0.125"))
    assert tf.decimal_op("mul", "100", 0, "half_even")(Decimal("0.125")) == Decimal("12")
    assert tf.decimal_op("mul", "100", 0, "half_up")(Decimal("0.125")) == Decimal("13")
    assert tf.decimal_op("div", "3", 2, "down")(Decimal("1")) == Decimal("0.33")


def test_decimal_trailing_zeros_are_not_narrowing() -> None:
    """transform decimal: 1.50 * 1 scale 1 loses only zeros -> fine."""
    assert tf.decimal_op("mul", "1", 1, None)(Decimal("1.50")) == Decimal("1.5")


def test_decimal_refuses_floats_and_bools() -> None:
    """transform decimal: floats are inexact and refused."""
    f = tf.decimal_op("add", "1", 0, None)
    for bad in (1.5, True, "1"):
        with pytest.raises(tf.TransformError):
            f(bad)


@FAST
@given(
    st.decimals(
        allow_nan=False,
        allow_infinity=False,
        places=2,
        min_value=Decimal("-9999999999.99"),
        max_value=Decimal("9999999999.99"),
    )
)
def test_decimal_mul_100_scale_0_is_exact_for_numeric_12_2(d: Decimal) -> None:
    """transform decimal: every numeric(12,2) value * 100 is an exact integer."""
    out = tf.decimal_op("mul", "100", 0, None)(d)
    assert out == d * 100 and out.as_tuple().exponent == 0


@FAST
@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=Decimal("-1e6"), max_value=Decimal("1e6")
    )
)
def test_decimal_scale_2_rejects_exactly_when_digits_lost(d: Decimal) -> None:
    """transform decimal: without rounding, reject iff quantizing to scale 2 changes the value."""
    f = tf.decimal_op("add", "0", 2, None)
    if d == d.quantize(Decimal("0.01")):
        assert f(d) == d
    else:
        with pytest.raises(tf.TransformError):
            f(d)


# --- value_map ---------------------------------------------------------------------

TIERS = {"bronze": "B", "silver": "S", "gold": "G", "platinum": "P"}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("null", None), ("keep", "diamond"), (("default", "X"), "X")],
)
def test_value_map_unmapped_policies(policy: object, expected: object) -> None:
    """value_map unmapped: null | keep | {default: X} on an unknown enum value."""
    f = tf.value_map(TIERS, policy)  # type: ignore[arg-type]
    assert f("gold") == "G"
    assert f("diamond") == expected
    assert f(None) is None


def test_value_map_unmapped_reject() -> None:
    """value_map unmapped: reject names the value and the fix."""
    with pytest.raises(tf.TransformError, match="'diamond' is not in value_map"):
        tf.value_map(TIERS, "reject")("diamond")


def test_value_map_empty_string_is_a_value_not_null() -> None:
    """value_map: '' is looked up like any value (rejected here), not treated as null."""
    with pytest.raises(tf.TransformError):
        tf.value_map(TIERS, "reject")("")


@FAST
@given(st.text(max_size=12))
def test_value_map_reject_or_mapped(s: str) -> None:
    """value_map unmapped reject: either a mapped code or an error - never a pass-through."""
    f = tf.value_map(TIERS, "reject")
    if s in TIERS:
        assert f(s) == TIERS[s]
    else:
        with pytest.raises(tf.TransformError):
            f(s)


# --- casts -------------------------------------------------------------------------


def test_cast_varchar_exact_and_over_length_multibyte() -> None:
    """cast varchar(n): n characters fit (even multibyte), n+1 reject or truncate+report."""
    t = PgType.parse("varchar(3)")
    reject = tf.cast(t, "reject")
    assert reject("äöü") == ("äöü", None)
    with pytest.raises(tf.TransformError, match="4 characters do not fit varchar\\(3\\)"):
        reject("äöüß")
    value, note = tf.cast(t, "truncate")("äöüß")
    assert value == "äöü" and note is not None and "truncated 4 to 3" in note


@FAST
@given(st.text(min_size=0, max_size=20), st.integers(min_value=1, max_value=10))
def test_cast_varchar_boundary(s: str, n: int) -> None:
    """cast varchar(n): reject exactly when len(s) > n; truncation always reported."""
    t = PgType("varchar", length=n)
    if len(s) <= n:
        assert tf.cast(t, "reject")(s) == (s, None)
        assert tf.cast(t, "truncate")(s) == (s, None)
    else:
        with pytest.raises(tf.TransformError):
            tf.cast(t, "reject")(s)
        value, note = tf.cast(t, "truncate")(s)
        assert value == s[:n] and note is not None


def test_cast_char_counts_characters() -> None:
    """cast char(n): length in characters."""
    assert tf.cast(PgType.parse("char(2)"), "reject")("ÄÖ") == ("ÄÖ", None)


def test_cast_numeric_precision_and_scale() -> None:
    """cast numeric(p,s): integer digits <= p-s and no lost fraction digits."""
    f = tf.cast(PgType.parse("numeric(5,2)"), "reject")
    assert f(Decimal("999.99")) == (Decimal("999.99"), None)
    assert f(Decimal("1.5")) == (Decimal("1.50"), None)
    assert f(Decimal("1.500")) == (Decimal("1.50"), None)
    with pytest.raises(tf.TransformError, match="integer digits"):
        f(Decimal("1000.00"))
    with pytest.raises(tf.TransformError, match="decimal places"):
        f(Decimal("1.005"))
    with pytest.raises(tf.TransformError):
        f(Decimal("Infinity"))


@FAST
@given(
    st.integers(min_value=1, max_value=12).flatmap(
        lambda p: st.tuples(st.just(p), st.integers(min_value=0, max_value=p))
    ),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=Decimal("-1e10"), max_value=Decimal("1e10")
    ),
)
def test_cast_numeric_property(ps: tuple[int, int], d: Decimal) -> None:
    """cast numeric(p,s): accepts exactly the values PostgreSQL stores unchanged."""
    p, s = ps
    f = tf.cast(PgType("numeric", precision=p, scale=s), "reject")
    q = d.quantize(Decimal(1).scaleb(-s)) if d == d.quantize(Decimal(1).scaleb(-s)) else None
    fits = q is not None and abs(q) < Decimal(10) ** (p - s)
    if fits:
        assert f(d)[0] == d
    else:
        with pytest.raises(tf.TransformError):
            f(d)


def test_cast_numeric_truncate_refused() -> None:
    """cast on_narrowing truncate: strings only; numeric narrowing can only reject."""
    with pytest.raises(ValueError, match="strings only"):
        tf.cast(PgType.parse("numeric(5,2)"), "truncate")


@pytest.mark.parametrize("name", ["smallint", "integer", "bigint"])
def test_cast_integer_ranges(name: str) -> None:
    """cast smallint/integer/bigint: range limits exactly; integral Decimal becomes int."""
    lo, hi = {"smallint": (-32768, 32767), "integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}[
        name
    ]
    f = tf.cast(PgType(name), "reject")
    assert f(hi) == (hi, None) and f(lo) == (lo, None)
    assert f(Decimal(hi)) == (hi, None) and type(f(Decimal(hi))[0]) is int
    for bad in (hi + 1, lo - 1, Decimal("1.5"), True, 1.0):
        with pytest.raises(tf.TransformError):
            f(bad)
    assert f(" 42 ") == (42, None)
    with pytest.raises(tf.TransformError):
        f("4x2")


def test_cast_unsupported_type() -> None:
    """cast: only the documented types."""
    with pytest.raises(ValueError, match="cast supports"):
        tf.cast(PgType.parse("inet"), "reject")


def test_timezone_fixed_offset_input() -> None:
    """transform timezone: any aware tzinfo works (fixed offsets included)."""
    v = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    assert tf.timezone_convert("UTC", naive=True, ambiguous="reject")(v) == datetime(2024, 1, 1, 17)
