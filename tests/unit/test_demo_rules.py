"""Every rule of mappings/demo.yaml, one case each, named by its rule id.

Column rules: a source row in, the target value out. Table rules (key,
filter, delete, truncate): a change event in, the intent out (batching).
Behaviour across the pipeline is proven by the integration tests; this table
pins what each rule of the contract does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from replicator.core.intents import Kind, to_intents
from replicator.core.mapping import Plan, TablePlan, catalog_from_dict, compile_spec, load_spec
from replicator.core.model import ChangeEvent, Op, SourcePosition
from tests.events import change
from tests.unit.mapping.demo_catalogs import TARGET

ROOT = Path(__file__).resolve().parents[2]
CUSTOMER: dict[str, Any] = {
    "id": 7,
    "email": "  Zoe@Example.COM ",
    "full_name": "Zoe\u0308 Mu\u0308ller",
    "country": "uk",
    "tier": "gold",
    "tags": ["vip", "ünï"],
    "profile": {"newsletter": True},
    "created_at": datetime(2024, 3, 31, 1, 30, tzinfo=UTC),
}
PRODUCT: dict[str, Any] = {
    "sku": "SKU-1",
    "name": " Lamp ",
    "description": "long text",
    "price": Decimal("12.34"),
    "weight_grams": 1500,
    "image": b"\x00\xff",
}
ORDER: dict[str, Any] = {
    "id": 42,
    "customer_id": 7,
    "status": "paid",
    "placed_at": datetime(2024, 1, 1, tzinfo=UTC),
    "total": Decimal("99.90"),
    "note": "  Bitte klingeln  ",
}
LINE: dict[str, Any] = {"order_id": 42, "line_no": 3, "sku": "SKU-1", "qty": 2, "unit_price": Decimal("1.50")}


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_spec(load_spec(ROOT / "mappings" / "demo.yaml"), catalog_from_dict(TARGET))


def table(plan: Plan, rule_id: str) -> TablePlan:
    return next(t for t in plan.tables if t.rule_id == rule_id)


COLUMN_CASES = [
    ("customer.customer_id", "customer", CUSTOMER, "customer_id", 7),
    ("customer.email", "customer", CUSTOMER, "email", "zoe@example.com"),
    ("customer.first_name", "customer", CUSTOMER, "first_name", "Zoë"),  # NFC of an NFD input
    ("customer.last_name", "customer", CUSTOMER, "last_name", "Müller"),
    ("customer.country_code", "customer", CUSTOMER, "country_code", "GB"),  # upper, then UK -> GB
    ("customer.tier_code", "customer", CUSTOMER, "tier_code", "G"),
    ("customer.tags", "customer", CUSTOMER, "tags", ["vip", "ünï"]),
    ("customer.newsletter", "customer", CUSTOMER, "newsletter", True),
    ("customer.signed_up_at", "customer", CUSTOMER, "signed_up_at", datetime(2024, 3, 31, 1, 30, tzinfo=UTC)),
    ("customer.is_deleted", "customer", CUSTOMER, "is_deleted", False),
    ("customer.deleted_at", "customer", CUSTOMER, "deleted_at", None),
    ("customer_pii.customer_id", "customer_pii", CUSTOMER, "customer_id", 7),
    ("product.sku", "product", PRODUCT, "sku", "SKU-1"),
    ("product.title", "product", PRODUCT, "title", "Lamp"),
    ("product.description", "product", PRODUCT, "description", "long text"),
    ("product.price_cents", "product", PRODUCT, "price_cents", 1234),
    ("product.weight_kg", "product", PRODUCT, "weight_kg", Decimal("1.500")),
    ("product.image", "product", PRODUCT, "image", b"\x00\xff"),
    ("product.source_system", "product", PRODUCT, "source_system", "legacy"),
    ("order.order_id", "order", ORDER, "order_id", 42),
    ("order.customer_id", "order", ORDER, "customer_id", 7),
    ("order.status", "order", ORDER, "status", "PAID"),
    ("order.placed_at_utc", "order", ORDER, "placed_at_utc", datetime(2024, 1, 1)),
    ("order.total", "order", ORDER, "total", Decimal("99.90")),
    ("order.note", "order", ORDER, "note", "Bitte klingeln"),
    ("order_line.order_id", "order_line", LINE, "order_id", 42),
    ("order_line.line_no", "order_line", LINE, "line_no", 3),
    ("order_line.line_ref", "order_line", LINE, "line_ref", "42-3"),
    ("order_line.sku", "order_line", LINE, "sku", "SKU-1"),
    ("order_line.quantity", "order_line", LINE, "quantity", 2),
    ("order_line.unit_price", "order_line", LINE, "unit_price", Decimal("1.50")),
]


@pytest.mark.parametrize(
    ("rule_id", "table_id", "row", "column", "expected"), COLUMN_CASES, ids=[c[0] for c in COLUMN_CASES]
)
def test_column_rule(
    plan: Plan, rule_id: str, table_id: str, row: dict[str, Any], column: str, expected: Any
) -> None:
    t = table(plan, table_id)
    assert next(c for c in t.columns if c.target == column).rule_id == rule_id
    assert t.map_row(row)[column] == expected


def event(
    op: Op, source: str, before: dict[str, Any] | None, after: dict[str, Any] | None, offset: int = 10
) -> ChangeEvent:
    return change(
        f"demo.{source}",
        op,
        source,
        offset=offset,
        position=SourcePosition(100, 200 + offset),
        before=before,
        after=after,
        ts_ms=1_700_000_000_000,
    )


def intents(plan: Plan, ev: ChangeEvent) -> dict[str, Any]:
    out = to_intents([ev], plan)
    assert not out.failures, out.failures
    return {
        next(t.rule_id for t in plan.tables if t.target == target): items[0]
        for target, items in out.by_table.items()
    }


def test_key_rules_customer_key_customer_pii_key_product_key_order_key_order_line_key(plan: Plan) -> None:
    assert intents(plan, event(Op.CREATE, "shop.customers", None, CUSTOMER))["customer"].key == (7,)
    assert intents(plan, event(Op.CREATE, "shop.customers", None, CUSTOMER))["customer_pii"].key == (7,)
    assert intents(plan, event(Op.CREATE, "shop.products", None, PRODUCT))["product"].key == ("SKU-1",)
    assert intents(plan, event(Op.CREATE, "shop.orders", None, ORDER))["order"].key == (42,)
    assert intents(plan, event(Op.CREATE, "shop.order_lines", None, LINE))["order_line"].key == (42, 3)
    assert {"customer.key", "customer_pii.key", "product.key", "order.key", "order_line.key"} <= {
        f"{t.rule_id}.key" for t in plan.tables
    }


def test_delete_rules(plan: Plan) -> None:
    """customer.delete (soft: customer.delete.is_deleted, customer.delete.deleted_at),
    customer_pii.delete (hard), product.delete (hard), order.delete (ignore), order_line.delete (hard)."""
    got = intents(plan, event(Op.DELETE, "shop.customers", {"id": 7}, None))
    soft = got["customer"]
    assert soft.kind is Kind.SOFT_DELETE
    assert soft.values["is_deleted"] is True
    assert soft.values["deleted_at"] == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert {c.rule_id for c in table(plan, "customer").delete.set_columns} == {
        "customer.delete.is_deleted",
        "customer.delete.deleted_at",
    }
    assert got["customer_pii"].kind is Kind.DELETE
    assert (
        intents(plan, event(Op.DELETE, "shop.products", {"sku": "SKU-1"}, None))["product"].kind
        is Kind.DELETE
    )
    assert intents(plan, event(Op.DELETE, "shop.orders", {"id": 42}, None))["order"].kind is Kind.IGNORE
    line = intents(plan, event(Op.DELETE, "shop.order_lines", {"order_id": 42, "line_no": 3}, None))
    assert line["order_line"].kind is Kind.DELETE and line["order_line"].key == (42, 3)
    assert {t.rule_id: t.delete.rule_id for t in plan.tables}["order"] == "order.delete"


def test_truncate_rules(plan: Plan) -> None:
    """customer.truncate and customer_pii.truncate: error; product.truncate: truncate;
    order.truncate: ignore; order_line.truncate: delete."""
    kinds = {t.truncate.rule_id: t.truncate.kind for t in plan.tables}
    assert kinds == {
        "customer.truncate": "error",
        "customer_pii.truncate": "error",
        "product.truncate": "truncate",
        "order.truncate": "ignore",
        "order_line.truncate": "delete",
    }
    got = intents(plan, event(Op.TRUNCATE, "shop.products", None, None))
    assert got["product"].kind is Kind.TRUNCATE


def test_filter_rules_customer_filter_customer_pii_filter_order_line_filter(plan: Plan) -> None:
    """Rows the filter rejects become deletes, so the target holds filter(map(source))."""
    test_account = {**CUSTOMER, "country": "XX"}
    got = intents(plan, event(Op.CREATE, "shop.customers", None, test_account))
    assert got["customer"].kind is Kind.SOFT_DELETE  # customer.filter
    assert got["customer_pii"].kind is Kind.DELETE  # customer_pii.filter
    zero = intents(plan, event(Op.UPDATE, "shop.order_lines", None, {**LINE, "qty": 0}))
    assert zero["order_line"].kind is Kind.DELETE  # order_line.filter
