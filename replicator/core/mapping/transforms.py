"""The fixed whitelist of value transforms, value maps and casts.

Invariants:
- Only the builders below exist; the spec names them, nothing is evaluated.
  Each builder validates its arguments once (raising ValueError) and returns a
  plain function of one value.
- Every function passes `None` through unchanged (null stays null; the empty
  string is not null) and never receives `UNAVAILABLE` (the compiler
  short-circuits it before any step runs).
- A value a step cannot handle raises `TransformError` with a one-line message
  naming the problem and the fix; the compiler turns it into a RowError
  carrying the column rule id.
- Arithmetic is exact `Decimal` under a private context; a result that loses
  non-zero digits when quantized is rejected unless a rounding mode is given.
- ±infinity datetimes (`values.Infinity`, or `datetime.max` / `datetime.min`
  with or without tzinfo) pass the timezone transforms unchanged.
- A wall time that a DST change skips or repeats is never resolved silently:
  `timezone_assume` rejects it unless the rule declares `earlier` or `later`.
- A cast checks and narrows to the declared target type, and parses text into
  the types it names (`CASTABLE`); a value that does not parse is rejected or
  nulled as the rule declares (`on_invalid`); truncation (strings only, and
  only when declared) is returned as a report, never silent.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from replicator.core.errors import ReplicatorError
from replicator.core.mapping.catalog import INTEGER_RANGES, PgType
from replicator.core.values import NEG_INFINITY, POS_INFINITY, Infinity

Fn = Callable[[Any], Any]
CastFn = Callable[[Any], tuple[Any, str | None]]


class TransformError(ReplicatorError, ValueError):
    """A value a transform cannot handle; the message is one line with a fix."""


def _kind(value: Any) -> str:
    return type(value).__name__


def _need_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TransformError(
            f"{name} needs text, got {_kind(value)} {value!r}; fix: apply it to a text column"
        )
    return value


# --- text --------------------------------------------------------------------


def trim() -> Fn:
    """Strip leading/trailing whitespace (Unicode whitespace, as str.strip)."""

    def fn(v: Any) -> Any:
        return None if v is None else _need_str("trim", v).strip()

    return fn


def case(mode: Literal["upper", "lower"]) -> Fn:
    if mode not in ("upper", "lower"):
        raise ValueError(f"case must be upper or lower, not {mode!r}")

    def fn(v: Any) -> Any:
        if v is None:
            return None
        s = _need_str("case", v)
        return s.upper() if mode == "upper" else s.lower()

    return fn


def nfc() -> Fn:
    """Unicode NFC normalization (composed form)."""

    def fn(v: Any) -> Any:
        return None if v is None else unicodedata.normalize("NFC", _need_str("nfc", v))

    return fn


def sha256() -> Fn:
    """Hex SHA-256 of the UTF-8 bytes of a text value (or of raw bytes)."""

    def fn(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, bytes):
            return hashlib.sha256(v).hexdigest()
        return hashlib.sha256(_need_str("hash", v).encode("utf-8")).hexdigest()

    return fn


def mask(keep_last: int, char: str = "*") -> Fn:
    """Replace every character except the last `keep_last` with `char`.

    A value no longer than `keep_last` is masked entirely (keeping it would
    reveal all of it). Lengths are in characters, not bytes.
    """
    if keep_last < 0:
        raise ValueError("mask.keep_last must be >= 0")
    if len(char) != 1:
        raise ValueError("mask.char must be exactly one character")

    def fn(v: Any) -> Any:
        if v is None:
            return None
        s = _need_str("mask", v)
        if len(s) <= keep_last:
            return char * len(s)
        return char * (len(s) - keep_last) + (s[len(s) - keep_last :] if keep_last else "")

    return fn


# --- time --------------------------------------------------------------------


def _is_infinity(v: datetime) -> bool:
    if v.year not in (1, 9999):  # the cheap test first: this runs for every timestamp
        return False
    return v.replace(tzinfo=None) in (datetime.max, datetime.min)


def timezone_convert(to: str, *, naive: bool, ambiguous: Literal["reject", "keep"]) -> Fn:
    """Convert an aware datetime to zone `to`; with `naive`, drop tzinfo after.

    Dropping tzinfo loses the UTC offset: in a DST overlap two instants share
    one wall time. That is a narrowing and is rejected unless
    `ambiguous: keep`. Naive input is rejected (its zone is unknown).
    """
    zone = _zone(to)

    def fn(v: Any) -> Any:
        if v is None or isinstance(v, Infinity):
            return v  # PostgreSQL's ±infinity as decoded: no zone to convert
        if not isinstance(v, datetime):
            raise TransformError(
                f"timezone needs a timestamp with time zone, got {_kind(v)} {v!r}; "
                "fix: apply it to a timestamptz column"
            )
        if _is_infinity(v):
            return v.replace(tzinfo=None) if naive else v
        if v.tzinfo is None or v.utcoffset() is None:
            raise TransformError(
                f"timezone.to needs an aware timestamp, got naive {v.isoformat()}; "
                "fix: read a naive timestamp with {timezone: {assume: <its zone>}}"
            )
        try:
            out = v.astimezone(zone)
        except OverflowError as exc:
            raise TransformError(
                f"timestamp {v.isoformat()} is out of range in {to}; fix: clean the source value"
            ) from exc
        if not naive:
            return out
        wall = out.replace(tzinfo=None)
        if ambiguous == "reject" and zone is not UTC:
            other = wall.replace(fold=1 - out.fold).replace(tzinfo=zone)
            if other.utcoffset() != out.utcoffset():
                raise TransformError(
                    f"{v.isoformat()} is the ambiguous wall time {wall.isoformat()} in {to} "
                    "(DST overlap), dropping the offset loses which one; fix: convert to UTC "
                    "or declare timezone.ambiguous: keep"
                )
        return wall.replace(fold=0)

    return fn


def _zone(name: str) -> Any:
    try:
        return UTC if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def timezone_assume(
    zone_name: str,
    *,
    nonexistent: Literal["reject", "earlier", "later"],
    ambiguous: Literal["reject", "earlier", "later"],
) -> Fn:
    """Read a naive timestamp as wall clock time in `zone_name`; return the instant (aware, UTC).

    A wall time has two candidate instants when a DST change skips it (a gap: 02:30 on a
    spring-forward night) or repeats it (an overlap: 02:30 on a fall-back night). `earlier` and
    `later` pick the earlier or later instant; `reject` makes the row an error record.
    """
    zone = _zone(zone_name)

    def fn(v: Any) -> Any:
        if v is None or isinstance(v, Infinity):
            return v
        if not isinstance(v, datetime):
            raise TransformError(
                f"timezone.assume needs a timestamp, got {_kind(v)} {v!r}; fix: apply it to a "
                "timestamp (without time zone) column"
            )
        if v.tzinfo is not None:
            raise TransformError(
                f"timezone.assume needs a naive timestamp, got {v.isoformat()} with an offset; "
                "fix: convert timestamptz values with {timezone: {to: <zone>}}"
            )
        if _is_infinity(v):
            return v.replace(tzinfo=UTC)
        if zone is UTC:
            return v.replace(tzinfo=UTC)
        first, second = v.replace(tzinfo=zone, fold=0), v.replace(tzinfo=zone, fold=1)
        try:
            a, b = first.astimezone(UTC), second.astimezone(UTC)
        except OverflowError as exc:
            raise TransformError(
                f"timestamp {v.isoformat()} in {zone_name} is out of range; fix: clean the source value"
            ) from exc
        if a == b:
            return a
        gap = a.astimezone(zone).replace(tzinfo=None) != v
        policy = nonexistent if gap else ambiguous
        if policy == "reject":
            what = "does not exist (skipped by a DST change)" if gap else "occurs twice (DST overlap)"
            key = "nonexistent" if gap else "ambiguous"
            raise TransformError(
                f"wall time {v.isoformat()} {what} in {zone_name}; fix: declare "
                f"timezone.{key}: earlier or later, or clean the source value"
            )
        return min(a, b) if policy == "earlier" else max(a, b)

    return fn


# --- structure ---------------------------------------------------------------

_PATH_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(-?\d+)\]")


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """Parse the supported subset: `$`, then `.key` and `[n]` steps only."""
    if not path.startswith("$"):
        raise ValueError(f"json_path {path!r} must start with '$'")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _PATH_STEP.match(path, pos)
        if m is None:
            raise ValueError(
                f"json_path {path!r}: unsupported syntax at {path[pos:]!r} (only .key and [n] steps)"
            )
        steps.append(m[1] if m[1] is not None else int(m[2]))
        pos = m.end()
    return tuple(steps)


def json_path(path: str) -> Fn:
    """Extract a value; input is decoded JSON (dict/list) or JSON text.
    A missing key or index yields null (so `default` can apply)."""
    steps = parse_json_path(path)

    def fn(v: Any) -> Any:
        if v is None:
            return None
        cur = v
        if isinstance(cur, str):
            try:
                cur = json.loads(cur, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                raise TransformError(
                    f"json_path {path}: value is not valid JSON ({exc.msg}); "
                    "fix: clean the source value or drop json_path"
                ) from exc
        elif not isinstance(cur, dict | list):
            raise TransformError(
                f"json_path needs JSON, got {_kind(v)}; fix: apply it to a json/jsonb column"
            )
        for step in steps:
            if isinstance(step, str):
                if not isinstance(cur, dict) or step not in cur:
                    return None
                cur = cur[step]
            else:
                if not isinstance(cur, list) or not -len(cur) <= step < len(cur):
                    return None
                cur = cur[step]
        return cur

    return fn


# --- numbers -----------------------------------------------------------------

ROUNDING: Mapping[str, str] = {
    "half_even": decimal.ROUND_HALF_EVEN,
    "half_up": decimal.ROUND_HALF_UP,
    "half_down": decimal.ROUND_HALF_DOWN,
    "up": decimal.ROUND_UP,
    "down": decimal.ROUND_DOWN,
    "ceiling": decimal.ROUND_CEILING,
    "floor": decimal.ROUND_FLOOR,
}

_CTX = decimal.Context(
    prec=2000,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)


def _to_decimal(name: str, v: Any) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, int | Decimal):
        raise TransformError(
            f"{name} needs an exact number (integer or numeric), got {_kind(v)} {v!r}; "
            "fix: apply it to an integer or numeric column"
        )
    d = Decimal(v)
    if not d.is_finite():
        raise TransformError(f"{name}: {v} is not a finite number; fix: clean the source value")
    return d


def decimal_op(op: Literal["mul", "div", "add", "sub"], by: str, scale: int, rounding: str | None) -> Fn:
    """Exact `value <op> by`, quantized to `scale` digits after the point."""
    try:
        operand = Decimal(by)
    except decimal.InvalidOperation as exc:
        raise ValueError(f"decimal.by {by!r} is not a decimal number") from exc
    if not operand.is_finite():
        raise ValueError("decimal.by must be finite")
    if op == "div" and operand == 0:
        raise ValueError("decimal.by must not be zero for div")
    if op not in ("mul", "div", "add", "sub"):
        raise ValueError(f"decimal.op must be mul, div, add or sub, not {op!r}")
    if rounding is not None and rounding not in ROUNDING:
        raise ValueError(f"decimal.rounding must be one of {sorted(ROUNDING)}")
    quantum = Decimal(1).scaleb(-scale)

    def fn(v: Any) -> Any:
        if v is None:
            return None
        d = _to_decimal("decimal", v)
        try:
            if op == "mul":
                r = _CTX.multiply(d, operand)
            elif op == "div":
                r = _CTX.divide(d, operand)
            elif op == "add":
                r = _CTX.add(d, operand)
            else:
                r = _CTX.subtract(d, operand)
            exact = r.quantize(quantum, context=_CTX, rounding=decimal.ROUND_DOWN) == r
            if not exact and rounding is None:
                raise TransformError(
                    f"decimal {op} {by}: {v} gives {r}, which does not fit scale {scale}; "
                    "fix: declare decimal.rounding or widen decimal.scale"
                )
            return r.quantize(quantum, context=_CTX, rounding=ROUNDING[rounding or "half_even"])
        except decimal.DecimalException as out_of_range:
            raise TransformError(
                f"decimal {op} {by}: {v} is out of range; fix: clean the source value"
            ) from out_of_range

    return fn


# --- enums -------------------------------------------------------------------


def value_map(
    mapping: Mapping[Any, Any], unmapped: Literal["reject", "null", "keep"] | tuple[Literal["default"], Any]
) -> Fn:
    """Map known values; an unmapped value is rejected, nulled, kept or defaulted.
    Null input stays null (it is not an enum value)."""
    table = dict(mapping)

    def fn(v: Any) -> Any:
        if v is None:
            return None
        try:
            if v in table:
                return table[v]
        except TypeError:  # unhashable (list/dict)
            pass
        if unmapped == "reject":
            raise TransformError(
                f"value {v!r} is not in value_map {sorted(map(str, table))}; "
                "fix: add it to value_map or set unmapped"
            )
        if unmapped == "null":
            return None
        if unmapped == "keep":
            return v
        return unmapped[1]

    return fn


# --- casts -------------------------------------------------------------------

STRING_TYPES = ("text", "varchar", "char")
INTEGER_TYPES = ("smallint", "integer", "bigint")
PARSED_TYPES = (
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
    "uuid",
    "boolean",
)
CASTABLE = (*STRING_TYPES, "numeric", *INTEGER_TYPES, *PARSED_TYPES)
NARROWING_TYPES = ("varchar", "char", "numeric", *INTEGER_TYPES)
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_BOOLEAN_WORDS = {
    **dict.fromkeys(("t", "true", "y", "yes", "on", "1"), True),
    **dict.fromkeys(("f", "false", "n", "no", "off", "0"), False),
}
_INFINITY_WORDS = {"infinity": POS_INFINITY, "+infinity": POS_INFINITY, "-infinity": NEG_INFINITY}


class _Invalid(TransformError):
    """The value is not of the cast's type at all (as opposed to not fitting it)."""


def cast(
    typ: PgType,
    on_narrowing: Literal["reject", "truncate"] | None,
    on_invalid: Literal["reject", "null"] | None = None,
) -> CastFn:
    """Check (and convert) a value to fit `typ`; return (value, truncation report).

    Strings: length in characters (code points), as PostgreSQL counts them.
    Numbers: numeric(p,s) precision/scale and integer ranges; integral Decimals
    become int for integer types; numeric narrowing can only be rejected.
    Text is parsed into numbers, dates, timestamps, uuids and booleans; a value
    that does not parse is an error naming the fix, or null with `on_invalid: null`.
    """
    if typ.is_array or typ.name not in CASTABLE:
        raise ValueError(f"cast supports {', '.join(CASTABLE)}; not {typ}")
    if typ.name not in ("varchar", "char") and on_narrowing == "truncate":
        raise ValueError(f"on_narrowing: truncate applies to strings only, not {typ}")
    narrows = typ.name in NARROWING_TYPES and not (typ.name == "numeric" and typ.precision is None)
    if narrows and on_narrowing is None:
        raise ValueError(f"a cast to {typ} declares on_narrowing: reject (or truncate for strings)")
    if typ.name in STRING_TYPES:
        inner = _string_cast(typ, on_narrowing or "reject")
    elif typ.name == "numeric":
        inner = _numeric_cast(typ)
    elif typ.name in INTEGER_TYPES:
        inner = _integer_cast(typ)
    else:
        inner = _parse_cast(typ)
    if on_invalid != "null":
        return inner

    def lenient(v: Any) -> tuple[Any, str | None]:
        try:
            return inner(v)
        except _Invalid:
            return None, None

    return lenient


def _string_cast(typ: PgType, on_narrowing: str) -> CastFn:
    limit = typ.length

    def fn(v: Any) -> tuple[Any, str | None]:
        if v is None:
            return None, None
        if isinstance(v, bool) or not isinstance(v, str | int | Decimal):
            raise _Invalid(f"cannot cast {_kind(v)} {v!r} to {typ}; fix: map a text or numeric value")
        s = v if isinstance(v, str) else str(v)
        if limit is None or len(s) <= limit:
            return s, None
        if on_narrowing == "truncate":
            return s[:limit], f"truncated {len(s)} to {limit} characters for {typ}"
        raise TransformError(
            f"{len(s)} characters do not fit {typ}; fix: widen the target column or "
            "declare cast: {on_narrowing: truncate}"
        )

    return fn


def _numeric_cast(typ: PgType) -> CastFn:
    def fn(v: Any) -> tuple[Any, str | None]:
        try:
            return check(v)
        except decimal.DecimalException as exc:
            raise TransformError(f"{v} does not fit {typ}; fix: clean the source value") from exc

    def check(v: Any) -> tuple[Any, str | None]:
        if v is None:
            return None, None
        d = _parse_number(v, typ)
        if d.is_nan():
            return d, None
        if not d.is_finite():
            if typ.precision is None:
                return d, None
            raise TransformError(f"{v} does not fit {typ}; fix: clean the source value")
        if typ.precision is None:
            return d, None
        scale = typ.scale or 0
        q = d.quantize(Decimal(1).scaleb(-scale), context=_CTX, rounding=decimal.ROUND_DOWN)
        if q != d:
            raise TransformError(
                f"{v} has more than {scale} decimal places for {typ}; fix: add a decimal "
                "transform with an explicit rounding, or widen the target scale"
            )
        if q.adjusted() + 1 > typ.precision - scale and q != 0:
            raise TransformError(
                f"{v} has more than {typ.precision - scale} integer digits for {typ}; "
                "fix: widen the target precision"
            )
        return q, None

    return fn


def _integer_cast(typ: PgType) -> CastFn:
    lo, hi = INTEGER_RANGES[typ.name]

    def fn(v: Any) -> tuple[Any, str | None]:
        if v is None:
            return None, None
        if isinstance(v, int) and not isinstance(v, bool):
            i = v
        else:
            d = _parse_number(v, typ)
            if not d.is_finite() or d != d.to_integral_value():
                raise TransformError(
                    f"{v} is not an integer for {typ}; fix: add a decimal transform with "
                    "scale 0 and a rounding"
                )
            i = int(d)
        if not lo <= i <= hi:
            raise TransformError(f"{v} is outside the {typ} range [{lo}, {hi}]; fix: widen the target column")
        return i, None

    return fn


def _parse_number(v: Any, typ: PgType) -> Decimal:
    if isinstance(v, bool):
        raise _Invalid(f"cannot cast boolean {v} to {typ}; fix: use a value_map")
    if isinstance(v, int | Decimal):
        return Decimal(v)
    if isinstance(v, str):
        text = v.strip()
        if typ.name != "numeric" and not _INT_TEXT.fullmatch(text):
            raise _Invalid(
                f"text {v!r} is not an integer for {typ}; fix: clean the source value or declare "
                "cast: {on_invalid: null}"
            )
        try:
            return Decimal(text)
        except decimal.InvalidOperation as exc:
            raise _Invalid(
                f"text {v!r} is not a number for {typ}; fix: clean the source value or declare "
                "cast: {on_invalid: null}"
            ) from exc
    raise _Invalid(f"cannot cast {_kind(v)} {v!r} to {typ}; fix: map an exact number (floats are inexact)")


def _invalid(v: Any, typ: PgType, expected: str) -> _Invalid:
    return _Invalid(
        f"{_kind(v)} {v!r} is not {expected} for {typ}; fix: clean the source value or declare "
        "cast: {on_invalid: null}"
    )


def _parse_cast(typ: PgType) -> CastFn:
    """Text (and the value's own type) into date, timestamp, timestamptz, uuid or boolean."""
    name = typ.name

    def parse(v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if name in ("date", "timestamp without time zone", "timestamp with time zone"):
                inf = _INFINITY_WORDS.get(text.lower())
                if inf is not None:
                    return inf
            try:
                if name == "date":
                    return date.fromisoformat(text)
                if name == "uuid":
                    return str(uuid.UUID(text))
                if name == "boolean":
                    return _BOOLEAN_WORDS[text.lower()]
                moment = datetime.fromisoformat(text)
            except (ValueError, KeyError):
                raise _invalid(v, typ, _EXPECTED[name]) from None
            aware = moment.tzinfo is not None and moment.utcoffset() is not None
            if name == "timestamp with time zone" and not aware:
                raise _Invalid(
                    f"text {v!r} has no UTC offset, so it is not a timestamptz; fix: cast to "
                    "timestamp and read it with {timezone: {assume: <its zone>}}, or declare "
                    "cast: {on_invalid: null}"
                )
            if name == "timestamp without time zone" and aware:
                raise _Invalid(
                    f"text {v!r} has a UTC offset, so it is not a naive timestamp; fix: cast to "
                    "timestamptz, or convert it with {timezone: {to: <zone>, naive: true}}"
                )
            return moment
        if name == "boolean" and isinstance(v, int) and not isinstance(v, bool) and v in (0, 1):
            return bool(v)
        if isinstance(v, Infinity) and name != "uuid" and name != "boolean":
            return v
        if _fits(v, name):
            return v
        raise _invalid(v, typ, _EXPECTED[name])

    def fn(v: Any) -> tuple[Any, str | None]:
        return (None, None) if v is None else (parse(v), None)

    return fn


_EXPECTED = {
    "date": "an ISO date (YYYY-MM-DD)",
    "timestamp without time zone": "an ISO timestamp",
    "timestamp with time zone": "an ISO timestamp with a UTC offset",
    "uuid": "a uuid",
    "boolean": "a boolean (true/false, t/f, yes/no, on/off, 1/0)",
}


def _fits(v: Any, name: str) -> bool:
    if name == "boolean":
        return isinstance(v, bool)
    if name == "uuid":
        return isinstance(v, uuid.UUID)
    if name == "date":
        return isinstance(v, date) and not isinstance(v, datetime)
    if isinstance(v, datetime):
        aware = v.tzinfo is not None and v.utcoffset() is not None
        return aware == (name == "timestamp with time zone")
    return False


# --- value sources -----------------------------------------------------------


def render_part(v: Any) -> str:
    """Text of one concat part: str as is, int/Decimal in canonical form."""
    if isinstance(v, str):
        return v
    if isinstance(v, int | Decimal) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, date | datetime | time):
        return v.isoformat()
    if isinstance(v, timedelta):
        return str(v)
    raise TransformError(f"concat cannot render {_kind(v)} {v!r}; fix: concat text or numbers")
