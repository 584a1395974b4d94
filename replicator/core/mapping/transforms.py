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
- ±infinity datetimes are represented by `datetime.max` / `datetime.min`
  (with or without tzinfo) and pass the timezone transform unchanged.
- A cast only checks and narrows to the declared target type; truncation
  (strings only, and only when declared) is returned as a report, never silent.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from replicator.core.errors import ReplicatorError
from replicator.core.mapping.catalog import INTEGER_RANGES, PgType
from replicator.core.values import Infinity

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
    try:
        zone = UTC if to.upper() == "UTC" else ZoneInfo(to)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {to!r}") from exc

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
                f"timezone needs an aware timestamp, got naive {v.isoformat()}; "
                "fix: convert only timestamptz source columns"
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
                cur = json.loads(cur)
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
        except decimal.DecimalException as exc:
            raise TransformError(
                f"decimal {op} {by}: {v} is out of range; fix: clean the source value"
            ) from exc

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

CASTABLE = ("text", "varchar", "char", "numeric", "smallint", "integer", "bigint")
_INT_TEXT = re.compile(r"[+-]?[0-9]+")


def cast(typ: PgType, on_narrowing: Literal["reject", "truncate"]) -> CastFn:
    """Check (and convert) a value to fit `typ`; return (value, truncation report).

    Strings: length in characters (code points), as PostgreSQL counts them.
    Numbers: numeric(p,s) precision/scale and integer ranges; integral Decimals
    become int for integer types. Numeric narrowing can only be rejected.
    """
    if typ.is_array or typ.name not in CASTABLE:
        raise ValueError(f"cast supports {', '.join(CASTABLE)}; not {typ}")
    if typ.name not in ("varchar", "char") and on_narrowing == "truncate":
        raise ValueError(f"on_narrowing: truncate applies to strings only, not {typ}")
    if typ.name in ("text", "varchar", "char"):
        return _string_cast(typ, on_narrowing)
    if typ.name == "numeric":
        return _numeric_cast(typ)
    return _integer_cast(typ)


def _string_cast(typ: PgType, on_narrowing: str) -> CastFn:
    limit = typ.length

    def fn(v: Any) -> tuple[Any, str | None]:
        if v is None:
            return None, None
        if isinstance(v, bool) or not isinstance(v, str | int | Decimal):
            raise TransformError(f"cannot cast {_kind(v)} {v!r} to {typ}; fix: map a text or numeric value")
        s = v if isinstance(v, str) else str(v)
        if limit is None or len(s) <= limit:
            return s, None
        if on_narrowing == "truncate":
            return s[:limit], f"truncated {len(s)} to {limit} characters for {typ}"
        raise TransformError(
            f"{len(s)} characters do not fit {typ}; fix: widen the target column or "
            "declare cast.on_narrowing: truncate"
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
        raise TransformError(f"cannot cast boolean {v} to {typ}; fix: use a value_map")
    if isinstance(v, int | Decimal):
        return Decimal(v)
    if isinstance(v, str):
        text = v.strip()
        if typ.name != "numeric" and not _INT_TEXT.fullmatch(text):
            raise TransformError(f"text {v!r} is not an integer for {typ}; fix: clean the source")
        try:
            return Decimal(text)
        except decimal.InvalidOperation as exc:
            raise TransformError(
                f"text {v!r} is not a number for {typ}; fix: clean the source value"
            ) from exc
    raise TransformError(
        f"cannot cast {_kind(v)} {v!r} to {typ}; fix: map an exact number (floats are inexact)"
    )


# --- value sources -----------------------------------------------------------


def render_part(v: Any) -> str:
    """Text of one concat part: str as is, int/Decimal in canonical form."""
    if isinstance(v, str):
        return v
    if isinstance(v, int | Decimal) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, date | datetime | timedelta):
        return v.isoformat() if not isinstance(v, timedelta) else str(v)
    raise TransformError(f"concat cannot render {_kind(v)} {v!r}; fix: concat text or numbers")
