"""Catalogs matching deploy/demo/source.sql and target.sql exactly, as plain dicts (no DB)."""

from __future__ import annotations

from pathlib import Path
from typing import NotRequired, TypedDict

from replicator.core.mapping.catalog import ReplicaIdentity

ROOT = Path(__file__).resolve().parents[3]
DEMO_SPEC = ROOT / "mappings" / "demo.yaml"

TIERS = "enum(bronze,silver,gold,platinum)"
STATUSES = "enum(draft,placed,paid,shipped,cancelled)"


class ForeignKeySpec(TypedDict):
    """One foreign key, as `catalog_from_dict` reads it."""

    columns: list[str]
    references: str
    ref_columns: list[str]
    name: NotRequired[str]
    deferrable: NotRequired[bool]
    cascades: NotRequired[bool]


class TableSpec(TypedDict):
    """One table, as `catalog_from_dict` reads it: column name -> `<type> [not null] [default]`."""

    columns: dict[str, str]
    pk: NotRequired[list[str]]
    unique: NotRequired[list[list[str]]]
    fks: NotRequired[list[ForeignKeySpec]]
    replica_identity: NotRequired[ReplicaIdentity]
    deferrable_unique: NotRequired[list[list[str]]]


CatalogSpec = dict[str, TableSpec]
"""Plain-data catalog: dotted table name -> table spec (the input of `catalog_from_dict`)."""

SOURCE: CatalogSpec = {
    "shop.customers": {
        "columns": {
            "id": "bigint not null default",
            "email": "text not null",
            "full_name": "text not null",
            "country": "char(2)",
            "tier": f"{TIERS} not null default",
            "tags": "text[]",
            "profile": "jsonb",
            "created_at": "timestamptz not null default",
        },
        "pk": ["id"],
        "unique": [["email"]],
    },
    "shop.products": {
        "columns": {
            "sku": "text not null",
            "name": "text not null",
            "description": "text",
            "price": "numeric(12,2) not null",
            "weight_grams": "integer",
            "image": "bytea",
        },
        "pk": ["sku"],
    },
    "shop.orders": {
        "columns": {
            "id": "bigint not null default",
            "customer_id": "bigint not null",
            "status": f"{STATUSES} not null default",
            "placed_at": "timestamptz not null default",
            "total": "numeric(14,2)",
            "note": "text",
        },
        "pk": ["id"],
        "fks": [{"columns": ["customer_id"], "references": "shop.customers", "ref_columns": ["id"]}],
    },
    "shop.order_lines": {
        "columns": {
            "order_id": "bigint not null",
            "line_no": "integer not null",
            "sku": "text not null",
            "qty": "integer not null",
            "unit_price": "numeric(12,2) not null",
        },
        "pk": ["order_id", "line_no"],
        "fks": [
            {"columns": ["order_id"], "references": "shop.orders", "ref_columns": ["id"]},
            {"columns": ["sku"], "references": "shop.products", "ref_columns": ["sku"]},
        ],
    },
    "shop.debezium_signal": {
        "columns": {"id": "varchar(42) not null", "type": "varchar(32) not null", "data": "varchar(2048)"},
        "pk": ["id"],
    },
}

TARGET: CatalogSpec = {
    "crm.customer": {
        "columns": {
            "customer_id": "bigint not null",
            "email": "text not null",
            "first_name": "text not null",
            "last_name": "text",
            "country_code": "char(2)",
            "tier_code": "char(1) not null",
            "tags": "text[]",
            "newsletter": "boolean",
            "signed_up_at": "timestamptz not null",
            "is_deleted": "boolean not null default",
            "deleted_at": "timestamptz",
        },
        "pk": ["customer_id"],
    },
    "crm.customer_pii": {
        "columns": {
            "customer_id": "bigint not null",
            "email_sha256": "text not null",
            "email_masked": "text not null",
        },
        "pk": ["customer_id"],
        "fks": [{"columns": ["customer_id"], "references": "crm.customer", "ref_columns": ["customer_id"]}],
    },
    "catalog.product": {
        "columns": {
            "sku": "varchar(64) not null",
            "title": "varchar(120) not null",
            "description": "text",
            "price_cents": "bigint not null",
            "weight_kg": "numeric(10,3)",
            "image": "bytea",
            "source_system": "text not null",
        },
        "pk": ["sku"],
    },
    "sales.order": {
        "columns": {
            "order_id": "bigint not null",
            "customer_id": "bigint not null",
            "status": "text not null",
            "placed_at_utc": "timestamp not null",
            "total": "numeric(14,2)",
            "note": "text",
        },
        "pk": ["order_id"],
    },
    "sales.order_line": {
        "columns": {
            "order_id": "bigint not null",
            "line_no": "integer not null",
            "line_ref": "text not null",
            "sku": "varchar(64) not null",
            "quantity": "integer not null",
            "unit_price": "numeric(12,2) not null",
        },
        "pk": ["order_id", "line_no"],
    },
}
