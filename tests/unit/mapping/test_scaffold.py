"""`replicator mapping scaffold` (`core.mapping.scaffold`): an identity spec that `mapping check`
passes against a target made from the same DDL."""

from __future__ import annotations

from replicator.core.mapping import catalog_from_dict, check, load_spec_text
from replicator.core.mapping.scaffold import scaffold
from replicator.core.model import TableRef
from tests.unit.mapping.demo_catalogs import CatalogSpec

SOURCE: CatalogSpec = {
    "app.orders": {
        "columns": {"id": "bigint", "note": "text", "total": "numeric(12,2) not null"},
        "pk": ["id"],
    },
    "app.lines": {
        "columns": {
            "order_id": "bigint",
            "no": "integer",
            "cents": "integer",
            "dollars": "numeric generated",
        },
        "pk": ["order_id", "no"],
    },
    "app.codes": {  # no primary key: keyed on its NOT NULL unique constraint, not the nullable one
        "columns": {"alias": "text", "code": "text not null", "v": "text"},
        "unique": [["alias"], ["code"]],
        "replica_identity": "full",
    },
    "app.log": {"columns": {"at": "timestamptz", "line": "text"}},  # no key at all
    "app.only_key": {"columns": {"id": "uuid"}, "pk": ["id"]},
    "app.debezium_signal": {"columns": {"id": "varchar(42)", "type": "text", "data": "text"}, "pk": ["id"]},
    "billing.orders": {"columns": {"id": "bigint", "v": "text"}, "pk": ["id"]},
    "app.2024.archive": {"columns": {"id": "bigint", "v": "text"}, "pk": ["id"]},
    # trial 14: both ids made valid are dup_x (and Debezium gives both one topic)
    "app.dup x": {"columns": {"id": "bigint", "label": "text"}, "pk": ["id"]},
    "app.dup_x": {"columns": {"id": "bigint", "amount": "bigint"}, "pk": ["id"]},
}


def made() -> tuple[str, tuple[str, ...]]:
    catalog = catalog_from_dict(SOURCE)
    done = scaffold(
        catalog,
        list(catalog.tables),
        topic_prefix="legacy",
        connector="legacy-pg",
        signal_table=TableRef("app", "debezium_signal"),
        schemas={"app": "app_new"},
    )
    return done.text(), done.skipped


def test_the_scaffold_is_a_spec_that_checks_clean_against_the_same_ddl() -> None:
    text, skipped = made()
    spec = load_spec_text(text, "scaffold.yaml")
    renamed = {
        (k.replace("app.", "app_new.", 1) if k.startswith("app.") else k): v
        for k, v in SOURCE.items()
        if k != "app.log"
    }
    target = catalog_from_dict(
        {k: {**v, "columns": {c: t for c, t in v["columns"].items()}} for k, v in renamed.items()}
    )
    problems = check(spec, catalog_from_dict(SOURCE), target)
    assert [str(p) for p in problems if p.severity == "error"] == []
    assert spec.topic_prefix == "legacy" and spec.capture.connector == "legacy-pg"
    assert str(spec.capture.signal_table) == "app.debezium_signal"
    assert skipped == (
        "app.log: no primary key or unique constraint, so its rows cannot be matched in the target;"
        " fix: add a primary key to app.log (or a unique constraint on NOT NULL columns, with REPLICA"
        " IDENTITY FULL) and scaffold it again",
    )
    assert "# SKIPPED app.log: no primary key" in text


def test_each_table_is_keyed_copied_column_for_column_and_named_uniquely() -> None:
    spec = load_spec_text(made()[0], "scaffold.yaml")
    rules = {t.id: t for t in spec.tables}
    assert sorted(rules) == [
        "app_orders", "billing_orders", "codes", "dup_x", "dup_x_2", "lines", "only_key", "t_2024_archive",
    ]  # fmt: skip
    assert (str(rules["dup_x"].source), str(rules["dup_x_2"].source)) == ("app.dup x", "app.dup_x")
    lines = rules["lines"]
    assert str(lines.source) == "app.lines" and str(lines.target) == "app_new.lines"
    assert dict(lines.key) == {"order_id": "order_id", "no": "no"}
    assert list(lines.columns) == ["cents"] and list(lines.ignore_source_columns) == ["dollars"]  # never read
    assert dict(rules["codes"].key) == {"code": "code"}
    assert list(rules["only_key"].columns) == ["id"]  # columns needs one entry
    assert lines.delete.policy == "hard" and lines.truncate.policy == "error"
    archive = rules["t_2024_archive"]
    assert (archive.source.schema, archive.source.name) == ("app", "2024.archive")  # the mapping form
    assert str(rules["billing_orders"].target) == "billing.orders"  # no schema mapping asked


def test_columns_debezium_does_not_carry_are_left_out_and_named() -> None:
    """A box column (never in Debezium's events) and a name column (null when streamed) go under
    ignore_source_columns, each named in a header line; the spec still checks clean."""
    source: CatalogSpec = {
        "app.shapes": {"columns": {"id": "bigint", "area": "box", "label": "name", "v": "text"}, "pk": ["id"]}
    }
    catalog = catalog_from_dict(source)
    done = scaffold(catalog, list(catalog.tables), topic_prefix="legacy")
    spec = load_spec_text(done.text(), "scaffold.yaml")
    (rule,) = spec.tables
    assert list(rule.columns) == ["v"] and list(rule.ignore_source_columns) == ["area", "label"]
    assert done.skipped == (
        "column app.shapes.area (box): Debezium's PostgreSQL connector leaves box columns out of its change"
        " events; it is under ignore_source_columns, copy it another way",
        "column app.shapes.label (name): Debezium's streamed change events carry null for name columns"
        " (snapshot rows have the value); it is under ignore_source_columns, copy it another way",
    )
    assert [p for p in check(spec, catalog, catalog) if p.severity == "error"] == []
