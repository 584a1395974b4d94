"""Compiler: spec + target catalog -> immutable plan, prebuilt SQL, column functions."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from replicator.core.mapping import (
    RowError,
    SpecError,
    catalog_from_dict,
    compile_spec,
    load_spec,
    load_spec_text,
)
from replicator.core.mapping.plan import Plan
from replicator.core.mapping.statements import stage_name
from replicator.core.model import UNAVAILABLE, TableRef
from tests.unit.mapping.demo_catalogs import DEMO_SPEC, TARGET, CatalogSpec


def spec_for(target: str, key: str, columns: str, extra: str = "") -> str:
    return f"""\
version: 1
topic_prefix: demo
tables:
  - id: t
    source: s.src
    target: {target}
    key: {key}
    delete: {{policy: hard}}
    truncate: {{policy: ignore}}
{extra}    columns:
{columns}
"""


def compile_text(text: str, catalog: CatalogSpec) -> Plan:
    return compile_spec(load_spec_text(text, "m.yaml"), catalog_from_dict(catalog))


STAGE = stage_name("t")

SQL_CASES = [
    pytest.param(
        spec_for("a.b", "{id: id}", "      v: {from: v}"),
        {"a.b": {"columns": {"id": "bigint", "v": "text"}, "pk": ["id"]}},
        ("id", "v"),
        {
            "create_stage": f'CREATE TEMP TABLE IF NOT EXISTS "{STAGE}" '
            'AS SELECT "id", "v", NULL::int AS "__replicator_row" FROM "a"."b" WITH NO DATA',
            "copy": f'COPY "{STAGE}" ("id", "v") FROM STDIN',
            "upsert": f'INSERT INTO "a"."b" AS t ("id", "v") OVERRIDING SYSTEM VALUE '
            f'SELECT "id", "v" FROM "{STAGE}" AS s '
            'ON CONFLICT ("id") DO UPDATE SET "v" = EXCLUDED."v" '
            'WHERE ("t"."v") IS DISTINCT FROM (EXCLUDED."v")',
            "update_only": f'UPDATE "a"."b" AS t SET "v" = "s"."v" FROM "{STAGE}" AS s '
            'WHERE "t"."id" = "s"."id" AND ("t"."v") IS DISTINCT FROM ("s"."v")',
            "delete_keys": f'DELETE FROM "a"."b" AS t USING "{STAGE}" AS s WHERE "t"."id" = "s"."id"',
            "select_keys": f'SELECT "t"."id", "t"."v" FROM "a"."b" AS t JOIN "{STAGE}" AS s '
            'ON "t"."id" = "s"."id"',
            "truncate": 'TRUNCATE "a"."b"',
            "delete_all": 'DELETE FROM "a"."b"',
        },
        id="simple",
    ),
    pytest.param(
        spec_for(
            "sales.order_line", "{order_id: order_id, line_no: line_no}", "      order_id: {from: order_id}"
        ),
        {
            "sales.order_line": {
                "columns": {"order_id": "bigint", "line_no": "integer"},
                "pk": ["order_id", "line_no"],
            }
        },
        ("order_id", "line_no"),
        {
            "upsert": f'INSERT INTO "sales"."order_line" AS t ("order_id", "line_no") '
            f'OVERRIDING SYSTEM VALUE SELECT "order_id", "line_no" FROM "{STAGE}" AS s '
            'ON CONFLICT ("order_id", "line_no") DO NOTHING',
            "delete_keys": f'DELETE FROM "sales"."order_line" AS t USING "{STAGE}" AS s '
            'WHERE "t"."order_id" = "s"."order_id" '
            'AND "t"."line_no" = "s"."line_no"',
        },
        id="composite-key-only-do-nothing",
    ),
    pytest.param(
        spec_for(
            '{schema: "Sales;", table: "order"}', '{"select": id}', '      "we\\"ird %s {} Col": {from: v}'
        ),
        {"Sales;.order": {"columns": {"select": "bigint", 'we"ird %s {} Col': "text"}, "pk": ["select"]}},
        ("select", 'we"ird %s {} Col'),
        {
            "upsert": f'INSERT INTO "Sales;"."order" AS t ("select", "we""ird %s {{}} Col") '
            f'OVERRIDING SYSTEM VALUE SELECT "select", "we""ird %s {{}} Col" FROM "{STAGE}" AS s '
            'ON CONFLICT ("select") DO UPDATE SET '
            '"we""ird %s {} Col" = EXCLUDED."we""ird %s {} Col" '
            'WHERE ("t"."we""ird %s {} Col") IS DISTINCT FROM '
            '(EXCLUDED."we""ird %s {} Col")'.replace("{{}}", "{}"),
            "truncate": 'TRUNCATE "Sales;"."order"',
        },
        id="hostile-identifiers-quoted",
    ),
]


@pytest.mark.parametrize(("text", "catalog", "cols", "expected"), SQL_CASES)
def test_compiled_sql(
    text: str, catalog: CatalogSpec, cols: tuple[str, ...], expected: dict[str, str]
) -> None:
    """statements: spec -> expected SQL text (offline as_string), incl. hostile names."""
    st = compile_text(text, catalog).tables[0].statements
    built = {
        "create_stage": st.create_stage,
        "copy": st.copy_stage(cols),
        "upsert": st.upsert(cols),
        "delete_keys": st.delete_keys,
        "select_keys": st.select_keys(cols),
        "truncate": st.truncate,
        "delete_all": st.delete_all,
    }
    if any(c not in st.key for c in cols):
        built["update_only"] = st.update_only(cols)
    for name, sql_text in expected.items():
        assert built[name].as_string(None) == sql_text, name


def test_statements_memoized_and_validated() -> None:
    """statements: per-cols builders are memoized; unknown columns or missing key refused."""
    plan = compile_text(
        spec_for("a.b", "{id: id}", "      v: {from: v}"),
        {"a.b": {"columns": {"id": "bigint", "v": "text"}, "pk": ["id"]}},
    )
    st = plan.tables[0].statements
    assert st.upsert(("id", "v")) is st.upsert(("id", "v"))
    with pytest.raises(ValueError, match="unknown"):
        st.upsert(("id", "nope"))
    with pytest.raises(ValueError, match="lacks key"):
        st.upsert(("v",))


def test_stage_name_is_short_and_unique() -> None:
    """statements: stage names are <= 63 bytes and differ per table rule id."""
    a, b = stage_name("x" * 200), stage_name("x" * 199 + "y")
    assert a != b and len(a.encode()) <= 63 and a.startswith("stage_")


def test_unknown_target_table_and_column() -> None:
    """compiler: unknown target table / column -> SpecError with line and rule id."""
    text = spec_for("a.b", "{id: id}", "      nope: {from: v}")
    with pytest.raises(SpecError) as exc:
        compile_text(text, {"a.b": {"columns": {"id": "bigint"}, "pk": ["id"]}})
    assert str(exc.value).startswith("m.yaml:11: t.nope: target column 'nope' does not exist")
    with pytest.raises(SpecError, match=r"m\.yaml:6: t: target table a\.b does not exist"):
        compile_text(text, {})


def test_cast_type_must_match_target() -> None:
    """compiler cast: a cast type other than the target column type is refused."""
    text = spec_for(
        "a.b", "{id: id}", "      v: {from: v, cast: {type: 'varchar(10)', on_narrowing: reject}}"
    )
    with pytest.raises(SpecError, match="differs from the target column type varchar\\(5\\)"):
        compile_text(text, {"a.b": {"columns": {"id": "bigint", "v": "varchar(5)"}, "pk": ["id"]}})


# --- demo plan -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_plan() -> Plan:

    return compile_spec(load_spec(DEMO_SPEC), catalog_from_dict(TARGET))


def customer_row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 7,
        "email": "  Alice@Example.COM ",
        "full_name": "Jose\u0301 de la Cruz",
        "country": "uk",
        "tier": "gold",
        "tags": ["a"],
        "profile": {"newsletter": "yes"},
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
    }
    row.update(over)
    return row


def test_demo_plan_shape(demo_plan: Plan) -> None:
    """demo: topics, apply order parents first, immutable plan."""
    assert demo_plan.topics == (
        "demo.shop.customers",
        "demo.shop.order_lines",
        "demo.shop.orders",
        "demo.shop.products",
    )
    assert [t.rule_id for t in demo_plan.tables_for_topic("demo.shop.customers")] == [
        "customer",
        "customer_pii",
    ]
    order = demo_plan.apply_order
    assert order.index(TableRef("crm", "customer")) < order.index(TableRef("crm", "customer_pii"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        demo_plan.tables[0].rule_id = "x"  # type: ignore[misc]
    assert isinstance(demo_plan.tables[0].columns, tuple)
    assert demo_plan.to_json()["tables"][0]["id"] == "customer"
    assert "[customer.tier_code]" in demo_plan.explain()
    assert any("product.title" in w for w in demo_plan.warnings)


def test_demo_customer_row(demo_plan: Plan) -> None:
    """demo rules customer.*: rename, trim+case, split+nfc, value_map keep/reject, json_path
    with value_map null + default, const."""
    t = demo_plan.tables_for_topic("demo.shop.customers")[0]
    out = t.map_row(customer_row())
    assert list(out) == [
        "customer_id",
        "email",
        "first_name",
        "last_name",
        "country_code",
        "tier_code",
        "tags",
        "newsletter",
        "signed_up_at",
        "is_deleted",
        "deleted_at",
    ]
    assert out["email"] == "alice@example.com"
    assert out["first_name"] == "José" and out["last_name"] == "de la Cruz"
    assert out["country_code"] == "GB" and out["tier_code"] == "G"
    assert out["newsletter"] is True and out["is_deleted"] is False and out["deleted_at"] is None
    assert t.map_row(customer_row(profile=None))["newsletter"] is False
    assert t.map_row(customer_row(profile={"newsletter": "maybe"}))["newsletter"] is False
    assert t.map_row(customer_row(country="de"))["country_code"] == "DE"
    assert t.map_row(customer_row(full_name="Cher"))["last_name"] is None
    assert t.map_key({"id": 7}) == (7,)


def test_demo_customer_tier_reject_names_rule(demo_plan: Plan) -> None:
    """demo rule customer.tier_code: unmapped enum value -> RowError naming the rule."""
    t = demo_plan.tables_for_topic("demo.shop.customers")[0]
    with pytest.raises(RowError) as exc:
        t.map_row(customer_row(tier="diamond"))
    assert exc.value.rule_id == "customer.tier_code"
    assert "'diamond' is not in value_map" in exc.value.message


def test_demo_customer_filter(demo_plan: Plan) -> None:
    """demo rule customer.filter: test country XX is skipped; null country is kept."""
    t = demo_plan.tables_for_topic("demo.shop.customers")[0]
    assert not t.accepts(customer_row(country="XX"))
    assert t.accepts(customer_row(country=None))
    with pytest.raises(RowError, match=r"customer\.filter"):
        t.accepts(customer_row(country=UNAVAILABLE))


def test_unavailable_is_never_transformed(demo_plan: Plan) -> None:
    """UNAVAILABLE (unchanged TOAST): every rule reading it yields UNAVAILABLE untouched."""
    t = demo_plan.tables_for_topic("demo.shop.products")[0]
    row = {
        "sku": "S1",
        "name": "Chair",
        "description": UNAVAILABLE,
        "price": Decimal("1.00"),
        "weight_grams": None,
        "image": UNAVAILABLE,
    }
    out = t.map_row(row)
    assert out["description"] is UNAVAILABLE and out["image"] is UNAVAILABLE
    assert out["price_cents"] == 100 and out["weight_kg"] is None
    assert out["source_system"] == "legacy"
    with pytest.raises(RowError, match=r"key column 'sku' is unavailable"):
        t.map_row({**row, "sku": UNAVAILABLE})


def test_a_column_combining_an_unavailable_value_with_others_is_left_and_reported() -> None:
    """A concat of a short column and a TOASTed one: with the TOASTed input an unchanged
    placeholder and the other present, the column is left as it was (UNAVAILABLE) and an
    `unavailable` report names the rule; with every input unavailable nothing changed: no report."""
    plan = compile_text(
        spec_for("a.b", "{id: id}", '      v: {concat: [{column: title}, ": ", {column: body}]}'),
        {"a.b": {"columns": {"id": "bigint", "v": "text"}, "pk": ["id"]}},
    )
    (t,) = plan.tables
    out, notes = t.map_row_noted({"id": 1, "title": "T", "body": UNAVAILABLE})
    assert out["v"] is UNAVAILABLE
    (note,) = notes
    assert (note.rule_id, note.kind) == ("t.v", "unavailable")
    assert "body arrived unchanged" in note.message and "REPLICA IDENTITY FULL" in note.message
    out, notes = t.map_row_noted({"id": 1, "title": UNAVAILABLE, "body": UNAVAILABLE})
    assert out["v"] is UNAVAILABLE and notes == ()
    assert t.map_row_noted({"id": 1, "title": "T", "body": "B"})[0]["v"] == "T: B"


def test_demo_product_title_truncate_is_reported(demo_plan: Plan) -> None:
    """demo rule product.title: cast truncate applies AND reports a Narrowing."""
    t = demo_plan.tables_for_topic("demo.shop.products")[0]
    row = {
        "sku": "S1",
        "name": "x" * 121,
        "description": None,
        "price": Decimal("2.50"),
        "weight_grams": 1500,
        "image": None,
    }
    values, notes = t.map_row_noted(row)
    assert values["title"] == "x" * 120
    assert [(n.rule_id, n.target) for n in notes] == [("product.title", "title")]
    assert values["price_cents"] == 250 and values["weight_kg"] == Decimal("1.500")


def test_demo_product_sku_cast_reject(demo_plan: Plan) -> None:
    """demo rule product.sku: a 65-character sku is rejected (varchar(64))."""
    t = demo_plan.tables_for_topic("demo.shop.products")[0]
    with pytest.raises(RowError) as exc:
        t.map_row(
            {
                "sku": "s" * 65,
                "name": "n",
                "description": None,
                "price": Decimal(1),
                "weight_grams": None,
                "image": None,
            }
        )
    assert exc.value.rule_id == "product.sku"


def test_demo_order_rules(demo_plan: Plan) -> None:
    """demo rules order.status (unmapped default) and order.placed_at_utc (timezone UTC naive)."""
    t = demo_plan.tables_for_topic("demo.shop.orders")[0]
    from zoneinfo import ZoneInfo

    row = {
        "id": 1,
        "customer_id": 7,
        "status": "cancelled",
        "placed_at": datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),
        "total": None,
        "note": "  Cafe\u0301 ",
    }
    out = t.map_row(row)
    assert out["status"] == "OTHER"
    assert out["placed_at_utc"] == datetime(2024, 10, 27, 1, 30)
    assert out["note"] == "Café"
    assert t.map_row({**row, "status": "paid"})["status"] == "PAID"
    assert t.delete.kind == "ignore"


def test_demo_order_line_rules(demo_plan: Plan) -> None:
    """demo rules order_line.line_ref (concat), order_line.filter (qty > 0), hard delete."""
    t = demo_plan.tables_for_topic("demo.shop.order_lines")[0]
    row = {"order_id": 5, "line_no": 2, "sku": "S1", "qty": 3, "unit_price": Decimal("1.00")}
    assert t.map_row(row)["line_ref"] == "5-2"
    assert t.accepts(row) and not t.accepts({**row, "qty": 0})
    assert t.map_key({"order_id": 5, "line_no": 2}) == (5, 2)
    assert t.delete.kind == "hard" and t.truncate.kind == "delete"


def test_demo_customer_soft_delete(demo_plan: Plan) -> None:
    """demo rule customer.delete: soft delete sets is_deleted and deleted_at = source_ts."""
    t = demo_plan.tables_for_topic("demo.shop.customers")[0]
    ts = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert t.delete.kind == "soft"
    assert t.delete.values({"id": 7}, ts) == {"is_deleted": True, "deleted_at": ts}
    assert t.truncate.kind == "error"
    assert "is_deleted" in t.statements.columns
    assert (
        t.statements.soft_delete(("customer_id", "is_deleted", "deleted_at"))
        .as_string(None)
        .startswith('UPDATE "crm"."customer" AS t SET "is_deleted" = "s"."is_deleted"')
    )


def test_demo_customer_pii(demo_plan: Plan) -> None:
    """demo rules customer_pii.email_sha256 (hash) and customer_pii.email_masked (mask)."""
    import hashlib

    t = demo_plan.tables_for_topic("demo.shop.customers")[1]
    out = t.map_row(customer_row())
    assert out["email_sha256"] == hashlib.sha256(b"alice@example.com").hexdigest()
    assert out["email_masked"] == "*" * 13 + ".COM"


def test_unmapped_policy_known_columns(demo_plan: Plan) -> None:
    """unmapped_source_columns: a new source column is detected; ignored ones are known."""
    t = demo_plan.tables_for_topic("demo.shop.customers")[0]
    assert t.unmapped == "fail"
    assert t.unknown_columns(customer_row()) == set()
    assert t.unknown_columns(customer_row(phone="1")) == {"phone"}
    assert demo_plan.tables_for_topic("demo.shop.customers")[1].unmapped == "ignore"


def test_missing_source_column_is_row_error() -> None:
    """compiler: a source column absent from the event is a RowError naming the rule."""
    plan = compile_text(
        spec_for("a.b", "{id: id}", "      v: {from: v}"),
        {"a.b": {"columns": {"id": "bigint", "v": "text"}, "pk": ["id"]}},
    )
    with pytest.raises(RowError, match=r"t\.v: source column 'v' is missing"):
        plan.tables[0].map_row({"id": 1})


def test_empty_string_is_not_null_for_default() -> None:
    """compiler default: applies to null only; '' is a value."""
    plan = compile_text(
        spec_for("a.b", "{id: id}", "      v: {from: v, default: d}"),
        {"a.b": {"columns": {"id": "bigint", "v": "text"}, "pk": ["id"]}},
    )
    t = plan.tables[0]
    assert t.map_row({"id": 1, "v": ""})["v"] == ""
    assert t.map_row({"id": 1, "v": None})["v"] == "d"


def test_types_without_equality_are_compared_as_text() -> None:
    """t.doc: json and point have no = operator, so the changed-value checks of the upsert and
    the update compare their text (jsonb keeps its own equality)."""
    cat: CatalogSpec = {
        "a.b": {"columns": {"id": "bigint", "doc": "json", "p": "point", "jb": "jsonb"}, "pk": ["id"]}
    }
    cols = "      doc: {from: doc}\n      p: {from: p}\n      jb: {from: jb}"
    st = compile_text(spec_for("a.b", "{id: id}", cols), cat).tables[0].statements
    upsert = st.upsert(("id", "doc", "p", "jb")).as_string()
    assert '("t"."doc"::text, "t"."p"::text, "t"."jb") IS DISTINCT FROM' in upsert
    assert '(EXCLUDED."doc"::text, EXCLUDED."p"::text, EXCLUDED."jb")' in upsert
    update = st.update_only(("id", "doc")).as_string()
    assert '("t"."doc"::text) IS DISTINCT FROM ("s"."doc"::text)' in update


def test_a_column_missing_from_an_older_event_names_the_reload_way_on() -> None:
    """Trial 11: after `ADD COLUMN priority` the spec reads it, and an error record (or a held row)
    from before the ALTER is retried: its event has no such column. The error names that case and
    the way on (reload the table, resolve the record), not only "check the rule's from"."""
    plan = compile_text(
        spec_for("a.b", "{id: id}", "      priority: {from: priority}"),
        {"a.b": {"columns": {"id": "bigint", "priority": "integer"}, "pk": ["id"]}},
    )
    t = plan.tables_for_topic("demo.s.src")[0]
    assert t.map_row({"id": 1, "priority": 3})["priority"] == 3
    with pytest.raises(RowError) as exc:
        t.map_row({"id": 1})
    assert exc.value.rule_id == "t.priority"
    message = exc.value.message
    assert "source column 'priority' is missing from the event" in message
    assert "written before it was added" in message
    assert "replicator reload --table" in message and "replicator errors resolve" in message
