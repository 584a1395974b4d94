"""Losses (`core.mapping.losses`): the source column types with a documented lossy case
(MIGRATION-ARTIFACTS.md "Known limitations"), one `mapping check` warning per kind naming the
columns it affects, and the `mapping scaffold` header lines."""

from __future__ import annotations

import copy

import pytest

from replicator.core.mapping import PgType, Problem, catalog_from_dict, check, load_spec_text
from replicator.core.mapping.losses import (
    KINDS,
    MULTI_DIMENSIONAL_ARRAY,
    NUMERIC_NAN,
    NUMERIC_TRAILING_ZEROS,
    SNAPSHOT_BC_DATE,
    TIME_ARRAY_24H,
    TIMESTAMP_RANGE,
    TIMETZ_OFFSET,
    Loss,
    condition,
    loss_warnings,
    losses,
    read_losses,
    scan_statement,
)
from replicator.core.mapping.scaffold import scaffold
from replicator.core.model import TableRef
from tests.unit.mapping.demo_catalogs import CatalogSpec


@pytest.mark.parametrize(
    ("spelling", "kinds"),
    [
        # numeric-nan: NaN (any numeric) and ±Infinity (unconstrained only) arrive as null
        ("numeric(12,2)", [NUMERIC_NAN]),
        # numeric-trailing-zeros: an unconstrained numeric arrives as 449.7 for 449.70
        ("numeric", [NUMERIC_NAN, NUMERIC_TRAILING_ZEROS]),
        ("decimal", [NUMERIC_NAN, NUMERIC_TRAILING_ZEROS]),
        ("numeric(6,2)[]", [NUMERIC_NAN, MULTI_DIMENSIONAL_ARRAY]),
        # snapshot-bc-date: the snapshot writes 0044-03-15 BC as 0044-03-15
        ("date", [SNAPSHOT_BC_DATE]),
        # timestamp-range: BC or after 9999, an error record
        ("timestamp", [TIMESTAMP_RANGE]),
        ("timestamptz(3)", [TIMESTAMP_RANGE]),
        ("timestamp with time zone", [TIMESTAMP_RANGE]),
        # timetz-offset: 10:00:00+02 arrives as 08:00:00+00
        ("timetz", [TIMETZ_OFFSET]),
        ("time with time zone[]", [TIMETZ_OFFSET, MULTI_DIMENSIONAL_ARRAY]),
        # time-array-24h: a time[] element 24:00:00 arrives as 00:00:00 (a scalar keeps it)
        ("time[]", [TIME_ARRAY_24H, MULTI_DIMENSIONAL_ARRAY]),
        ("time", []),
        # multi-dimensional-array: any array type
        ("integer[]", [MULTI_DIMENSIONAL_ARRAY]),
        ("text[]", [MULTI_DIMENSIONAL_ARRAY]),
        # carried exactly (test_type_coverage EXACT): no warning
        ("money", []),
        ("double precision", []),
        ("real", []),
        ("text", []),
        ("uuid", []),
        ("jsonb", []),
        ("interval", []),
        ("bigint", []),
        # refused by `mapping check` already (`captured`): no loss warning beside the error
        ("box", []),
        ("name", []),
        ("interval[]", []),
        ("money[]", []),
    ],
)
def test_each_type_has_its_documented_kinds_of_loss(spelling: str, kinds: list[Loss]) -> None:
    assert list(losses(PgType.parse(spelling))) == kinds


def test_user_composite_and_range_types_are_refused_not_warned() -> None:
    assert losses(PgType("s.addr", user_kind="composite")) == ()
    assert losses(PgType("s.floatrange", user_kind="range")) == ()


def test_every_kind_names_its_known_limitations_entry_and_a_way_to_act() -> None:
    assert len({k.kind for k in KINDS}) == len(KINDS)
    for loss in KINDS:
        assert "Known limitations" in loss.fix, loss.kind
    assert "UPDATE t SET c = c WHERE c < '0001-01-01'" in SNAPSHOT_BC_DATE.fix
    assert "replicator drain" in SNAPSHOT_BC_DATE.fix
    assert "c = 'NaN'" in NUMERIC_NAN.fix
    assert "numeric(p,s)" in NUMERIC_TRAILING_ZEROS.fix
    assert "array_ndims(c) > 1" in MULTI_DIMENSIONAL_ARRAY.fix


SOURCE: CatalogSpec = {
    "s.a": {
        "columns": {
            "id": "bigint",
            "price": "numeric(12,2)",
            "ratio": "numeric",
            "born": "date",
            "at": "timestamptz",
            "opens": "timetz",
            "note": "text",
            "skipped": "numeric",
        },
        "pk": ["id"],
    },
    "s.b": {
        "columns": {"id": "bigint", "amount": "numeric(10,2)", "day": "date", "x": "numeric"},
        "pk": ["id"],
    },
    "s.c": {"columns": {"id": "date", "cost": "numeric(8,2)", "tax": "numeric(8,2)"}, "pk": ["id"]},
}

SPEC = """\
version: 1
topic_prefix: demo
tables:
  - id: a
    source: s.a
    target: t.a
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    ignore_source_columns: [skipped]
    columns:
      price: {from: price}
      ratio: {from: ratio}
      born: {from: born}
      at: {from: at}
      opens: {from: opens}
      label: {concat: [{column: note}, ' ', {column: ratio}]}
  - id: b
    source: s.b
    target: t.b
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns:
      amount: {from: amount}
      day: {from: day}
      x: {from: x, cast: {on_narrowing: reject}}
  - id: c
    source: s.c
    target: t.c
    key: {day: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns:
      cost: {from: cost}
      tax: {from: tax}
"""


def warnings_of(spec_text: str, target: CatalogSpec) -> dict[str, Problem]:
    spec = load_spec_text(spec_text, "spec.yaml")
    found = loss_warnings(spec, catalog_from_dict(SOURCE), catalog_from_dict(target))
    assert all(p.severity == "warning" for p in found)
    assert len({p.rule_id for p in found}) == len(found)  # one line per kind
    return {p.rule_id.removeprefix("loss."): p for p in found}


TARGET: CatalogSpec = {
    "t.a": {
        "columns": {
            "id": "bigint",
            "price": "numeric(12,2)",
            "ratio": "numeric",
            "born": "date",
            "at": "timestamptz",
            "opens": "timetz",
            "label": "text",
        },
        "pk": ["id"],
    },
    "t.b": {
        "columns": {"id": "bigint", "amount": "numeric(10,2)", "day": "date", "x": "numeric(20,4)"},
        "pk": ["id"],
    },
    "t.c": {"columns": {"day": "date", "cost": "numeric(8,2)", "tax": "numeric(8,2)"}, "pk": ["day"]},
}


def test_one_warning_per_kind_names_the_columns_it_affects() -> None:
    found = warnings_of(SPEC, TARGET)
    assert list(found) == [
        "numeric-nan",
        "numeric-trailing-zeros",
        "snapshot-bc-date",
        "timestamp-range",
        "timetz-offset",
    ]
    nan = found["numeric-nan"]
    # every numeric column read, each once (ratio is read by two rules), the ignored one not
    assert nan.message.startswith(
        "numeric-nan (6 columns: s.a.price, s.a.ratio, s.b.amount and 3 more): numeric 'NaN'"
    ), nan.message
    assert "s.a.skipped" not in nan.message
    assert nan.fix == f"{NUMERIC_NAN.fix}; `replicator mapping check --scan` counts them"
    assert (nan.file, nan.line) == ("spec.yaml", 12)  # at the first column it names (price)
    assert str(nan).startswith("spec.yaml:12: loss.numeric-nan: numeric-nan (6 columns")
    # the key column of table c (a date) counts as any other column it reads
    assert found["snapshot-bc-date"].message.startswith(
        "snapshot-bc-date (3 columns: s.a.born, s.b.day, s.c.id): a BC date"
    )
    assert found["timestamp-range"].message.startswith("timestamp-range (1 column: s.a.at): ")
    assert found["timetz-offset"].line == 16


def test_trailing_zeros_are_not_lost_into_a_declared_scale() -> None:
    """s.b.x (numeric) lands in numeric(20,4), which writes the scale back: only s.a.ratio, read
    into numeric and into text (a concat), loses them."""
    zeros = warnings_of(SPEC, TARGET)["numeric-trailing-zeros"]
    assert zeros.message.startswith("numeric-trailing-zeros (1 column: s.a.ratio): "), zeros.message
    unconstrained = copy.deepcopy(TARGET)
    unconstrained["t.b"]["columns"]["x"] = "numeric"
    assert "s.a.ratio, s.b.x)" in warnings_of(SPEC, unconstrained)["numeric-trailing-zeros"].message
    scaled = SPEC.replace(
        "x: {from: x,", "x: {from: x, transforms: [{decimal: {op: mul, by: '1', scale: 4}}],"
    )
    assert "s.b.x" not in warnings_of(scaled, unconstrained)["numeric-trailing-zeros"].message


def test_a_spec_reading_no_lossy_column_gets_no_warning() -> None:
    spec = SPEC.split("  - id: b")[0].replace(
        """      price: {from: price}
      ratio: {from: ratio}
      born: {from: born}
      at: {from: at}
      opens: {from: opens}
      label: {concat: [{column: note}, ' ', {column: ratio}]}""",
        "      label: {from: note}",
    )
    assert warnings_of(spec, TARGET) == {}


def test_losses_are_warnings_only_and_check_itself_is_unchanged() -> None:
    """The warnings come beside `check` (`run.mapping.check_spec`), never as errors: a spec that
    checks clean still does, and `run`'s own check logs no extra lines."""
    spec = load_spec_text(SPEC, "spec.yaml")
    problems = check(spec, catalog_from_dict(SOURCE), catalog_from_dict(TARGET))
    assert [p for p in problems if p.severity == "error"] == []
    assert not any(p.rule_id.startswith("loss.") for p in problems)


def test_scaffold_heads_the_spec_with_a_line_per_kind() -> None:
    catalog = catalog_from_dict(SOURCE)
    done = scaffold(catalog, list(catalog.tables), topic_prefix="demo")
    assert [line.split(" ", 1)[0] for line in done.lossy] == [
        "numeric-nan",
        "numeric-trailing-zeros",
        "snapshot-bc-date",
        "timestamp-range",
        "timetz-offset",
    ]
    assert done.lossy[0] == (
        "numeric-nan (7 columns: s.a.price, s.a.ratio, s.a.skipped and 4 more): numeric NaN and ±Infinity"
        " arrive as NULL; `mapping check` gives the fix (MIGRATION-ARTIFACTS.md, Known limitations)"
    )
    text = done.text()
    assert "\n# LOSSY snapshot-bc-date (3 columns: s.a.born, s.b.day, s.c.id): the snapshot writes BC" in text
    assert load_spec_text(text, "scaffold.yaml").tables  # still a spec


def test_scaffold_of_tables_without_lossy_columns_has_no_such_line() -> None:
    catalog = catalog_from_dict(
        {"s.t": {"columns": {"id": "bigint", "v": "text", "m": "money"}, "pk": ["id"]}}
    )
    done = scaffold(catalog, list(catalog.tables), topic_prefix="demo")
    assert done.lossy == () and "LOSSY" not in done.text()


def test_every_loss_a_column_type_can_have_has_a_scan_condition() -> None:
    """`mapping check --scan` has a condition for each (kind, scalar or array) `losses` gives."""
    types = ["numeric", "numeric(10,2)", "date", "timestamp", "timestamptz", "timetz", "time"]
    for text in [*types, *(f"{t}[]" for t in types), "text[]", "int[]"]:
        t = PgType.parse(text)
        for loss in losses(t):
            said = condition(loss, 'we"ird', t).as_string(None)
            assert '"we""ird"' in said, (text, loss.kind, said)


def test_scan_statement_counts_each_condition_in_one_scan() -> None:
    t = PgType.parse("numeric")
    conditions = [condition(loss, "c", t) for loss in losses(t)]
    assert scan_statement(TableRef("s", "t"), conditions).as_string(None) == (
        "SELECT count(*) FILTER (WHERE \"c\"::text IN ('NaN', 'Infinity', '-Infinity')),"
        ' count(*) FILTER (WHERE "c"::text ~ \'\\.[0-9]*0$\') FROM "s"."t"'
    )


def test_scanned_counts_make_a_kind_no_row_holds_a_note_and_name_the_rows_found() -> None:
    spec = load_spec_text(SPEC, "spec.yaml")
    source, target = catalog_from_dict(SOURCE), catalog_from_dict(TARGET)
    found = {p.rule_id.removeprefix("loss."): p for p in loss_warnings(spec, source, target, {})}
    assert all(p.severity == "warning" and "not counted: s.a." in p.message for p in found.values())
    nan_columns = [r.label for r in read_losses(spec, source, target) if r.loss is NUMERIC_NAN]
    counts = {("numeric-nan", c): 0 for c in nan_columns} | {("numeric-nan", "s.a.ratio"): 3}
    counts |= {("snapshot-bc-date", r.label): 0 for r in read_losses(spec, source, target)}
    scanned = {p.rule_id.removeprefix("loss."): p for p in loss_warnings(spec, source, target, counts)}
    nan, bc = scanned["numeric-nan"], scanned["snapshot-bc-date"]
    assert nan.severity == "warning" and nan.message.endswith("; scanned: s.a.ratio 3 rows"), nan.message
    assert bc.severity == "info" and bc.message.startswith("snapshot-bc-date (3 columns: s.a.born, s.b.day")
    assert bc.message.endswith("; scanned: no source row holds such a value"), bc.message
    assert nan.fix == NUMERIC_NAN.fix  # the scan ran: no advice to run it
