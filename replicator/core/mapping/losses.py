"""Losses: source column types whose values Debezium's PostgreSQL connector does not always carry
exactly, as documented in MIGRATION-ARTIFACTS.md "Known limitations". Pure.

Unlike `captured` (types left out of the events altogether, which `mapping check` refuses), a
column of these types is carried, but some of its values are changed, nulled or refused on the
way; which values depends on the data, so `mapping check` warns (one line per kind of loss,
naming the columns and the way to count and fix them) and `mapping scaffold` heads its spec with
the same lines. Each kind is measured on the stack (Debezium 3.6.1.Final, pgoutput, the shipped
connector settings; `tests/integration/test_type_coverage.py` `CHANGED`, `SNAPSHOT_CHANGED` and
`LIMITS`, `replicator.core.values`):
- `numeric-nan`: numeric 'NaN' (and '±Infinity', which only an unconstrained numeric holds)
  arrive as null with `decimal.handling.mode: precise` (a numeric[] holding one: the whole array);
- `numeric-trailing-zeros`: an unconstrained numeric arrives without its trailing zeros
  (449.70 as 449.7); a target column with a declared scale writes them back;
- `snapshot-bc-date`: Debezium's snapshot (and so a reload) reads a BC date as the same date AD
  (streamed ones land exactly, `values._far_date`);
- `timestamp-range`: a timestamp before year 1 or after 9999 cannot be held by Python: an event
  carrying one is an error record (`values._timestamp`, `values._zoned_timestamp`);
- `timetz-offset`: timetz values (scalars and array elements) arrive normalised to UTC (the
  offset is lost);
- `time-array-24h`: a time[] element 24:00:00 arrives as 00:00:00;
- `multi-dimensional-array`: the inner arrays of a multi-dimensional value arrive as nulls
  (text[]: Java object names, an error record).
A type not named here (money, float NaN and ±infinity, date/timestamp ±infinity, ...) is carried
exactly as far as measured: no warning.

`mapping check --scan` counts, per column, the source rows holding such a value (`condition`,
one `scan_statement` per table): a kind no row holds is then a note, not a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from psycopg import sql

from replicator.core.mapping.captured import capture_gap
from replicator.core.mapping.catalog import Catalog, PgType, Table
from replicator.core.mapping.spec import ColumnRule, DecimalT, Problem, Severity, Spec
from replicator.core.model import TableRef

_LIMITS = "MIGRATION-ARTIFACTS.md, Known limitations"


@dataclass(frozen=True, slots=True)
class Loss:
    """A kind of loss: its stable name, a few words for a spec's comment, what happens to such
    values, and what to do."""

    kind: str
    brief: str
    what: str
    fix: str


NUMERIC_NAN = Loss(
    "numeric-nan",
    "numeric NaN and ±Infinity arrive as NULL",
    "numeric 'NaN' (and 'Infinity'/'-Infinity' in an unconstrained numeric) arrive as null with the"
    " connector's decimal.handling.mode precise (the shipped setting; a numeric[] holding one arrives as"
    " a null array): the target gets NULL (an error record in a NOT NULL column); `verify` reports those"
    " rows and the cutover's verify gate refuses them",
    "count them on the source first (SELECT count(*) FROM t WHERE c = 'NaN' OR c IN ('Infinity',"
    f" '-Infinity')) and fix the data or carry the column another way ({_LIMITS}: Types)",
)
NUMERIC_TRAILING_ZEROS = Loss(
    "numeric-trailing-zeros",
    "unconstrained numeric loses trailing zeros (449.70 arrives as 449.7)",
    "an unconstrained numeric loses its trailing zeros (449.70 arrives as 449.7): equal values,"
    " `verify` calls them clean, but the text differs",
    f"declare the target column numeric(p,s) where the written scale matters ({_LIMITS}: Types)",
)
SNAPSHOT_BC_DATE = Loss(
    "snapshot-bc-date",
    "the snapshot writes BC dates as AD",
    "a BC date is written as the same date AD by Debezium's snapshot (and by a `reload`, a snapshot"
    " too; streamed ones land exactly); `verify` reports such rows",
    "count them first (SELECT count(*) FROM t WHERE c < '0001-01-01'); once the snapshot is applied,"
    " run UPDATE t SET c = c WHERE c < '0001-01-01' on the source (it streams those rows again, with"
    f" the era), then `replicator drain` ({_LIMITS}: Dates before year 1)",
)
TIMESTAMP_RANGE = Loss(
    "timestamp-range",
    "timestamps before year 1 or after 9999 are error records",
    "a timestamp before year 1 (BC) or after 9999 cannot be held in Python: an event whose row carries"
    " one is an error record ('outside years 1..9999')",
    "count them first (SELECT count(*) FROM t WHERE c < '0001-01-01' OR c >= '10000-01-01'); no rule"
    f" carries them: change such values on the source or copy those rows another way ({_LIMITS}: Dates"
    " before year 1, Types)",
)
TIMETZ_OFFSET = Loss(
    "timetz-offset",
    "timetz arrives in UTC, its offset lost",
    "timetz values arrive in UTC: 10:00:00+02 is written as 08:00:00+00 (the same instant, the offset"
    " lost); `verify` compares them in UTC, so they do not hold a cutover back",
    f"none when only the instant matters; the offset itself is not carried ({_LIMITS}: Types)",
)
TIME_ARRAY_24H = Loss(
    "time-array-24h",
    "a time[] element 24:00:00 arrives as 00:00:00",
    "a time[] element 24:00:00 arrives as 00:00:00 (a scalar time keeps it); `verify` reports the row",
    "count them first (SELECT count(*) FROM t WHERE '24:00:00'::time = ANY(c)); such elements are not"
    f" carried: change them on the source or copy those rows another way ({_LIMITS}: Types)",
)
MULTI_DIMENSIONAL_ARRAY = Loss(
    "multi-dimensional-array",
    "multi-dimensional array values are not carried",
    "an array value of more than one dimension is not carried: its inner arrays arrive as nulls (the"
    " target gets {NULL,NULL}, which `verify` reports), a text[] one is an error record",
    "count them first (SELECT count(*) FROM t WHERE array_ndims(c) > 1); avoid them or map them from a"
    f" text cast on the source ({_LIMITS}: Types)",
)
KINDS: tuple[Loss, ...] = (
    NUMERIC_NAN,
    NUMERIC_TRAILING_ZEROS,
    SNAPSHOT_BC_DATE,
    TIMESTAMP_RANGE,
    TIMETZ_OFFSET,
    TIME_ARRAY_24H,
    MULTI_DIMENSIONAL_ARRAY,
)
_TIMESTAMPS = frozenset({"timestamp without time zone", "timestamp with time zone"})
_FEW = 3  # columns named in a line; the rest are counted


def losses(t: PgType) -> tuple[Loss, ...]:
    """The kinds of loss a source column of type `t` is open to (a domain is judged by its base
    type: the catalog reader gives that); none for a type Debezium leaves out (`capture_gap`:
    `mapping check` refuses those) or carries exactly."""
    if capture_gap(t) is not None:
        return ()
    if t.is_array:
        found = [MULTI_DIMENSIONAL_ARRAY]
        if t.name == "time without time zone":
            found.insert(0, TIME_ARRAY_24H)
        elif t.name == "time with time zone":
            found.insert(0, TIMETZ_OFFSET)
        elif t.name == "numeric":
            found.insert(0, NUMERIC_NAN)
        return tuple(found)
    if t.name == "numeric":
        return (NUMERIC_NAN,) if t.precision is not None else (NUMERIC_NAN, NUMERIC_TRAILING_ZEROS)
    if t.name == "date":
        return (SNAPSHOT_BC_DATE,)
    if t.name in _TIMESTAMPS:
        return (TIMESTAMP_RANGE,)
    if t.name == "time with time zone":
        return (TIMETZ_OFFSET,)
    return ()


# The rows of a column holding a value open to each kind, by (kind, array column); `{c}` is the
# column. ±infinity dates and timestamps are carried exactly: `isfinite` leaves them out.
_SPECIAL = "('NaN', 'Infinity', '-Infinity')"  # numeric's values Debezium sends as null
_CONDITIONS: dict[tuple[str, bool], str] = {
    ("numeric-nan", False): "{c}::text IN " + _SPECIAL,
    ("numeric-nan", True): "EXISTS (SELECT FROM unnest({c}) AS e WHERE e::text IN " + _SPECIAL + ")",
    ("numeric-trailing-zeros", False): "{c}::text ~ '\\.[0-9]*0$'",
    ("snapshot-bc-date", False): "isfinite({c}) AND {c} < '0001-01-01'",
    ("timestamp-range", False): "isfinite({c}) AND ({c} < '0001-01-01' OR {c} >= '10000-01-01')",
    ("timetz-offset", False): "extract(timezone FROM {c}) <> 0",
    ("timetz-offset", True): "EXISTS (SELECT FROM unnest({c}) AS e WHERE extract(timezone FROM e) <> 0)",
    ("time-array-24h", True): "'24:00:00'::time = ANY({c})",
    ("multi-dimensional-array", True): "array_ndims({c}) > 1",
}


def condition(loss: Loss, column: str, t: PgType) -> sql.Composed:
    """The source rows whose `column` (of type `t`, open to `loss`) holds such a value."""
    return sql.SQL(_CONDITIONS[(loss.kind, t.is_array)]).format(c=sql.Identifier(column))


def scan_statement(table: TableRef, conditions: Sequence[sql.Composable]) -> sql.Composed:
    """One scan of `table` counting the rows of each condition (one result column each)."""
    counts = sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(c) for c in conditions)
    return sql.SQL("SELECT {} FROM {}").format(counts, sql.Identifier(table.schema, table.name))


def summary(loss: Loss, columns: Iterable[str]) -> str:
    """One line: the kind, what happens, and the columns (count, then the first few)."""
    return f"{loss.kind} ({_columns(list(columns))}): {loss.what}"


def _columns(names: list[str]) -> str:
    shown = ", ".join(names[:_FEW]) + (f" and {len(names) - _FEW} more" if len(names) > _FEW else "")
    return f"{len(names)} {'column' if len(names) == 1 else 'columns'}: {shown}"


def comment(loss: Loss, columns: Iterable[str]) -> str:
    """A short line for a spec's header: the kind, the columns (count, first few), a few words."""
    return f"{loss.kind} ({_columns(list(columns))}): {loss.brief}; `mapping check` gives the fix ({_LIMITS})"


def table_losses(table: Table, columns: Iterable[str]) -> list[tuple[Loss, str]]:
    """(loss, schema.table.column) for each of `columns` of `table` open to a loss."""
    out: list[tuple[Loss, str]] = []
    for name in columns:
        col = table.column(name)
        if col is not None:
            out += [(loss, f"{table.ref}.{name}") for loss in losses(col.type)]
    return out


def grouped(found: Iterable[tuple[Loss, str]]) -> list[tuple[Loss, list[str]]]:
    """The columns of each kind (each column once, in first-seen order), kinds in `KINDS` order."""
    by_kind: dict[str, list[str]] = {}
    for loss, column in found:
        names = by_kind.setdefault(loss.kind, [])
        if column not in names:
            names.append(column)
    return [(loss, by_kind[loss.kind]) for loss in KINDS if loss.kind in by_kind]


@dataclass(frozen=True, slots=True)
class ReadLoss:
    """A source column a rule reads, open to a kind of loss; `path` locates the rule in the spec."""

    loss: Loss
    table: TableRef
    column: str
    type: PgType
    path: tuple[str | int, ...]

    @property
    def label(self) -> str:
        return f"{self.table}.{self.column}"


def read_losses(spec: Spec, source: Catalog, target: Catalog) -> list[ReadLoss]:
    """The losses of the source columns the spec's rules read (its key and column rules). Trailing
    zeros are not lost where the rule writes into a numeric(p,s) column or sets the scale
    (`decimal`)."""
    found: list[ReadLoss] = []
    for i, rule in enumerate(spec.tables):
        src, tgt = source.table(rule.source), target.table(rule.target)
        if src is None:
            continue  # `check` says so
        rules: dict[str, ColumnRule] = dict(rule.columns)
        for target_key, source_key in rule.key.items():
            rules.setdefault(target_key, ColumnRule.model_validate({"from": source_key}))
        for name, crule in rules.items():
            written = tgt.column(name) if tgt is not None else None
            scaled = any(isinstance(tr, DecimalT) for tr in crule.transforms) or (
                written is not None
                and written.type.name == "numeric"
                and not written.type.is_array
                and written.type.precision is not None
            )
            path = ("tables", i, "columns", name) if name in rule.columns else ("tables", i, "key", name)
            for column in crule.source_columns():
                col = src.column(column)
                if col is None:
                    continue  # `check` says so
                for loss in losses(col.type):
                    if loss is not NUMERIC_TRAILING_ZEROS or not scaled:
                        found.append(ReadLoss(loss, src.ref, column, col.type, path))
    return found


Counts = Mapping[tuple[str, str], int | None]  # (kind, schema.table.column) -> rows; None: not counted


def loss_warnings(
    spec: Spec, source: Catalog, target: Catalog, counts: Counts | None = None
) -> list[Problem]:
    """One line per kind of loss among the source columns the spec reads (`read_losses`), at the
    first such column: the columns, what happens, and the fix. With `counts` (`mapping check
    --scan`), the rows found per column; a kind no scanned row holds is a note, not a warning."""
    found = read_losses(spec, source, target)
    where: dict[str, tuple[str | int, ...]] = {}
    for r in found:
        where.setdefault(r.loss.kind, r.path)
    out: list[Problem] = []
    for loss, columns in grouped((r.loss, r.label) for r in found):
        said = summary(loss, columns)
        severity: Severity = "warning"
        if counts is not None:
            scanned, severity = _scanned(loss, columns, counts)
            said += f"; {scanned}"
        fix = loss.fix if counts is not None else f"{loss.fix}; `replicator mapping check --scan` counts them"
        out.append(Problem(spec.file, spec.line(*where[loss.kind]), f"loss.{loss.kind}", said, fix, severity))
    return out


def _scanned(loss: Loss, columns: Sequence[str], counts: Counts) -> tuple[str, Severity]:
    """What the scan found for one kind, and the line's severity."""
    rows = [(c, counts.get((loss.kind, c))) for c in columns]
    hit = [f"{c} {n:,} {'row' if n == 1 else 'rows'}" for c, n in rows if n]
    uncounted = [c for c, n in rows if n is None]
    if not hit and not uncounted:
        return "scanned: no source row holds such a value", "info"
    said = "scanned: " + (", ".join(hit) if hit else "none found")
    return said + (f"; not counted: {', '.join(uncounted)}" if uncounted else ""), "warning"
