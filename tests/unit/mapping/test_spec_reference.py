"""docs/mapping-spec.md stays the complete reference of the spec format.

Fails when the page falls behind the code:
- every pydantic model reachable from `Spec` (table and column rules, every transform union
  member, the predicates) has one reference table marked `<!-- model: Name ... -->` whose keys
  are exactly the model's fields (YAML names), whose `default` cell states the model's default
  (`required`, `none ...`, or the value in backticks) and whose row names every allowed value
  of a Literal field;
- fenced blocks: ```yaml spec``` is a complete spec that loads, compiles and checks without
  errors or warnings against the catalogs below (the tables the page's text describes);
  ```yaml table``` loads as a one-table spec; ```yaml columns``` is a mapping of column rules
  that validate and whose transforms build; every yaml block carries one of these tags;
  ```text explain``` is `mapping explain` of the page's first spec;
- a few recipe outcomes the page states, its internal links, and the links to it from
  README.md and MIGRATION-ARTIFACTS.md.
"""

from __future__ import annotations

import re
import sys
import typing
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Literal, NamedTuple, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from replicator.core.mapping import (
    RowError,
    TablePlan,
    catalog_from_dict,
    check,
    compile_spec,
    load_spec_text,
)
from replicator.core.mapping.compiler import build_transform
from replicator.core.mapping.spec import ColumnRule, Spec, parse_yaml
from tests.unit.mapping.demo_catalogs import ROOT, CatalogSpec

DOC = ROOT / "docs" / "mapping-spec.md"
DOC_LINK = "docs/mapping-spec.md"

# The tables the page's specs name, as its text describes them.
SOURCE: CatalogSpec = {
    "app.users": {
        "columns": {
            "id": "bigint not null",
            "login": "text not null",
            "karma": "bigint",
            "bio": "text",
            "created_at": "timestamptz not null",
        },
        "pk": ["id"],
    },
    "app.devices": {"columns": {"id": "text not null", "name": "text"}, "pk": ["id"]},
    "app.sensors": {"columns": {"id": "bigint not null", "label": "text"}, "pk": ["id"]},
    "app.people": {"columns": {"id": "bigint not null", "full_name": "text not null"}, "pk": ["id"]},
    "app.tickets": {
        "columns": {
            "id": "bigint not null",
            "status": "enum(open,pending,closed,spam) not null",
            "priority": "text",
        },
        "pk": ["id"],
    },
    "app.customers": {"columns": {"id": "bigint not null", "email": "text", "name": "text"}, "pk": ["id"]},
    "app.orders": {
        "columns": {
            "id": "bigint not null",
            "status": "text",
            "total": "numeric(12,2)",
            "is_test": "boolean not null",
            "placed_at": "timestamptz",
        },
        "pk": ["id"],
    },
    "app.members": {
        "columns": {"id": "bigint not null", "email": "text not null", "phone": "text", "nickname": "text"},
        "pk": ["id"],
    },
    "app.addresses": {
        "columns": {"id": "bigint not null", "country_id": "integer", "city": "text"},
        "pk": ["id"],
    },
    "app.profiles": {"columns": {"id": "bigint not null", "prefs": "jsonb"}, "pk": ["id"]},
    "app.events": {
        "columns": {
            "id": "bigint not null",
            "happened_at": "timestamp not null",
            "logged_at": "timestamp",
            "day": "text",
        },
        "pk": ["id"],
    },
}
TARGET: CatalogSpec = {
    "accounts.user_account": {
        "columns": {
            "user_id": "bigint not null",
            "username": "varchar(40) not null",
            "karma": "integer",
            "bio": "varchar(500)",
            "created_at": "timestamptz not null",
        },
        "pk": ["user_id"],
    },
    "iot.device": {"columns": {"id": "uuid not null", "name": "text"}, "pk": ["id"]},
    "iot.sensor": {
        "columns": {"id": "uuid not null default", "legacy_id": "bigint not null", "label": "text"},
        "pk": ["id"],
        "unique": [["legacy_id"]],
    },
    "crm.person": {
        "columns": {"person_id": "bigint not null", "first_name": "text not null", "last_name": "text"},
        "pk": ["person_id"],
    },
    "support.ticket": {
        "columns": {"ticket_id": "bigint not null", "state": "text not null", "priority": "smallint"},
        "pk": ["ticket_id"],
    },
    "crm.client": {
        "columns": {
            "client_id": "bigint not null",
            "email": "text",
            "name": "text",
            "is_deleted": "boolean not null default",
            "deleted_at": "timestamptz",
        },
        "pk": ["client_id"],
    },
    "sales.live_order": {
        "columns": {
            "order_id": "bigint not null",
            "status": "text",
            "total": "numeric(12,2)",
            "placed_at": "timestamptz",
        },
        "pk": ["order_id"],
    },
    "crm.member": {"columns": {"member_id": "bigint not null", "nickname": "text"}, "pk": ["member_id"]},
    "vault.member_contact": {
        "columns": {
            "member_id": "bigint not null",
            "email_sha256": "text not null",
            "phone_masked": "text",
        },
        "pk": ["member_id"],
        "fks": [{"columns": ["member_id"], "references": "crm.member", "ref_columns": ["member_id"]}],
    },
    "geo.address": {
        "columns": {"id": "bigint not null", "country_id": "uuid", "city": "text"},
        "pk": ["id"],
    },
    "geo.country_map": {
        "columns": {"old_id": "integer not null", "new_id": "uuid not null"},
        "pk": ["old_id"],
    },
    "crm.profile_flat": {
        "columns": {
            "profile_id": "bigint not null",
            "city": "text",
            "zip": "varchar(10)",
            "age": "integer",
            "newsletter": "boolean not null",
            "first_tag": "text",
        },
        "pk": ["profile_id"],
    },
    "audit.event": {
        "columns": {
            "event_id": "bigint not null",
            "happened_at": "timestamptz not null",
            "logged_at": "timestamptz",
            "day": "date",
        },
        "pk": ["event_id"],
    },
}

# Models the walk must reach: guards against a walk that silently finds nothing.
EXPECTED_MODELS = {
    "Spec",
    "Capture",
    "Defaults",
    "TableRule",
    "DeleteRule",
    "TruncateRule",
    "ColumnRule",
    "Cast",
    "Lookup",
    "Split",
    "UnmappedDefault",
    "Compare",
    "AllOf",
    "AnyOf",
    "NotOf",
    "Trim",
    "Nfc",
    "Case",
    "Timezone",
    "TimezoneArgs",
    "Hash",
    "Mask",
    "MaskArgs",
    "JsonPath",
    "DecimalT",
    "DecimalArgs",
}


# --- the models -----------------------------------------------------------------------------


def _hints(model: type[BaseModel]) -> dict[str, Any]:
    """Field annotations with forward references (the recursive predicates) resolved."""
    module = vars(sys.modules[model.__module__])
    return typing.get_type_hints(model, globalns=module, include_extras=True)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Literal:
        return []
    if get_origin(annotation) is Annotated:
        return _models_in(get_args(annotation)[0])
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


@cache
def spec_models() -> dict[str, type[BaseModel]]:
    """Every model reachable from Spec through field annotations (unions, lists, dicts)."""
    found: dict[str, type[BaseModel]] = {}
    pending: list[type[BaseModel]] = [Spec]
    while pending:
        model = pending.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        hints = _hints(model)
        for name in model.model_fields:
            pending.extend(_models_in(hints[name]))
    return found


def yaml_name(model: type[BaseModel], field: str) -> str:
    return model.model_fields[field].alias or field


def literal_values(annotation: Any) -> list[Any]:
    """The allowed values of the Literal types in a field's annotation (not inside sub-models)."""
    if isinstance(annotation, type):
        return []
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    if get_origin(annotation) is Annotated:
        return literal_values(get_args(annotation)[0])
    return [v for arg in get_args(annotation) for v in literal_values(arg)]


def as_yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- the page -------------------------------------------------------------------------------


class Row(NamedTuple):
    key: str
    cells: tuple[str, ...]
    line: int


class RefTable(NamedTuple):
    models: tuple[str, ...]
    rows: tuple[Row, ...]
    line: int


class Block(NamedTuple):
    info: str
    text: str
    line: int


_MARKER = re.compile(r"<!--\s*model:\s*([A-Za-z ]+?)\s*-->")
_KEY_CELL = re.compile(r"`([^`]+)`")
_FENCE = re.compile(r"^```(.*)$")


@cache
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def _cells(line: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in line.strip().strip("|").split("|"))


@cache
def ref_tables() -> tuple[RefTable, ...]:
    lines = doc_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        m = _MARKER.fullmatch(line.strip())
        if m is None:
            continue
        rows = []
        j = i + 1
        assert lines[j].startswith("| key |"), f"line {j + 1}: a model marker must precede a table"
        j += 2  # header and separator
        while j < len(lines) and lines[j].startswith("|"):
            cells = _cells(lines[j])
            key = _KEY_CELL.fullmatch(cells[0])
            assert key is not None, f"line {j + 1}: the first cell must be a key in backticks"
            rows.append(Row(key[1], cells, j + 1))
            j += 1
        out.append(RefTable(tuple(m[1].split()), tuple(rows), i + 1))
    return tuple(out)


@cache
def blocks() -> tuple[Block, ...]:
    out = []
    info: str | None = None
    start, body = 0, list[str]()
    for n, line in enumerate(doc_text().splitlines(), 1):
        m = _FENCE.match(line)
        if info is None and m is not None:
            info, start, body = m[1].strip(), n, []
        elif info is not None and line.strip() == "```":
            out.append(Block(info, "\n".join(body) + "\n", start))
            info = None
        elif info is not None:
            body.append(line)
    assert info is None, "unclosed code block"
    return tuple(out)


def blocks_tagged(info: str) -> list[Block]:
    return [b for b in blocks() if b.info == info]


def table_for(model: str) -> RefTable:
    tables = [t for t in ref_tables() if model in t.models]
    assert len(tables) == 1, f"model {model}: {len(tables)} reference tables (want exactly one)"
    return tables[0]


def row_for(model: type[BaseModel], field: str) -> Row:
    name = yaml_name(model, field)
    rows = [r for r in table_for(model.__name__).rows if r.key == name]
    assert len(rows) == 1, f"{model.__name__}.{name}: {len(rows)} rows in its reference table"
    return rows[0]


def fields() -> list[tuple[str, str]]:
    return [(name, f) for name, model in sorted(spec_models().items()) for f in model.model_fields]


# --- the models are documented ----------------------------------------------------------------


def test_walk_reaches_every_spec_model() -> None:
    assert set(spec_models()) >= EXPECTED_MODELS


def test_every_model_has_one_reference_table() -> None:
    marked = [m for t in ref_tables() for m in t.models]
    assert sorted(marked) == sorted(set(marked)), "a model is marked twice"
    assert set(marked) == set(spec_models()), (
        f"undocumented: {sorted(set(spec_models()) - set(marked))}; "
        f"stale markers: {sorted(set(marked) - set(spec_models()))}"
    )


@pytest.mark.parametrize("table", ref_tables(), ids=lambda t: "+".join(t.models))
def test_reference_table_keys_are_exactly_the_fields(table: RefTable) -> None:
    models = [spec_models()[m] for m in table.models if m in spec_models()]
    want = [yaml_name(m, f) for m in models for f in m.model_fields]
    assert len(want) == len(set(want)), f"models {table.models} share a key: document them apart"
    got = [r.key for r in table.rows]
    assert sorted(got) == sorted(want), f"line {table.line}: keys {got}, fields {want}"


def test_every_field_name_appears_in_code() -> None:
    text = doc_text()
    missing = [
        f"{m}.{yaml_name(spec_models()[m], f)}"
        for m, f in fields()
        if f"`{yaml_name(spec_models()[m], f)}`" not in text
    ]
    assert missing == []


@pytest.mark.parametrize(("model", "field"), fields(), ids=lambda v: str(v))
def test_default_is_stated(model: str, field: str) -> None:
    cls = spec_models()[model]
    info = cls.model_fields[field]
    row = row_for(cls, field)
    cell = row.cells[2]
    where = f"line {row.line}: {model}.{row.key} default {cell!r}"
    if cell.startswith("required"):
        assert info.is_required(), f"{where}, but it defaults to {info.default!r}"
        return
    assert not info.is_required(), f"{where}, but it is required"
    if cell.startswith("none"):
        assert info.default is None, f"{where}, but it defaults to {info.default!r}"
        return
    literal = _KEY_CELL.match(cell)
    assert literal is not None, f"{where}: write required, none (...) or a value in backticks"
    value, _ = parse_yaml(literal[1], str(DOC))
    default = info.default
    if isinstance(default, BaseModel):
        value = type(default).model_validate(value)
    assert value == default, f"{where}, but it defaults to {default!r}"


@pytest.mark.parametrize(("model", "field"), fields(), ids=lambda v: str(v))
def test_allowed_values_are_named(model: str, field: str) -> None:
    cls = spec_models()[model]
    allowed = literal_values(_hints(cls)[field])
    row = row_for(cls, field)
    text = " | ".join(row.cells[1:])
    missing = [as_yaml(v) for v in allowed if f"`{as_yaml(v)}`" not in text]
    assert missing == [], f"line {row.line}: {model}.{row.key} does not name {missing}"


# --- the examples load ----------------------------------------------------------------------------


def test_every_yaml_block_is_tagged() -> None:
    tags = {"yaml spec", "yaml table", "yaml columns"}
    untagged = [b.line for b in blocks() if b.info.startswith("yaml") and b.info not in tags]
    assert untagged == [], f"yaml blocks at lines {untagged} need a tag: {sorted(tags)}"
    assert len(blocks_tagged("yaml spec")) >= 10


@pytest.mark.parametrize("block", blocks_tagged("yaml spec"), ids=lambda b: f"line{b.line}")
def test_spec_block_loads_compiles_and_checks_clean(block: Block) -> None:
    spec = load_spec_text(block.text, f"{DOC}:{block.line}")
    compile_spec(spec, catalog_from_dict(TARGET))
    found = check(spec, catalog_from_dict(SOURCE), catalog_from_dict(TARGET))
    assert [str(p) for p in found if p.severity != "info"] == []


@pytest.mark.parametrize("block", blocks_tagged("yaml table"), ids=lambda b: f"line{b.line}")
def test_table_block_loads_as_a_spec(block: Block) -> None:
    body = "".join(f"    {ln}\n" if ln else "\n" for ln in block.text.splitlines())
    text = "version: 1\ntopic_prefix: doc\ntables:\n  -\n" + body
    load_spec_text(text, f"{DOC}:{block.line}")


@pytest.mark.parametrize("block", blocks_tagged("yaml columns"), ids=lambda b: f"line{b.line}")
def test_columns_block_validates(block: Block) -> None:
    data, _ = parse_yaml(block.text, f"{DOC}:{block.line}")
    assert isinstance(data, dict) and data
    for column, raw in data.items():
        try:
            rule = ColumnRule.model_validate(raw)
        except ValidationError as exc:
            pytest.fail(f"line {block.line}: column {column}: {exc}")
        for transform in rule.transforms:
            build_transform(transform)


def test_explain_block_is_the_first_specs_plan() -> None:
    (shown,) = blocks_tagged("text explain")
    first = blocks_tagged("yaml spec")[0]
    plan = compile_spec(load_spec_text(first.text, "mappings/legacy.yaml"), catalog_from_dict(TARGET))
    assert shown.text.rstrip("\n") == plan.explain()


# --- what the recipes say -------------------------------------------------------------------------


def recipe(table_id: str) -> TablePlan:
    """The compiled table rule `table_id` of a spec under the page's "Recipes" heading."""
    start = doc_text().splitlines().index("## Recipes") + 1
    for block in blocks_tagged("yaml spec"):
        if block.line < start:
            continue
        for t in compile_spec(load_spec_text(block.text), catalog_from_dict(TARGET)).tables:
            if t.rule_id == table_id:
                return t
    raise AssertionError(f"no recipe with table rule {table_id!r}")


def test_recipe_split_a_name() -> None:
    t = recipe("person")
    names: dict[str, tuple[str, str | None]] = {
        "Ada Lovelace": ("Ada", "Lovelace"),
        "Jean Paul Sartre": ("Jean", "Paul Sartre"),
        "Ada": ("Ada", None),
        "  Ada Lovelace": ("", "Ada Lovelace"),  # a leading space: an empty first name
    }
    for full, (first, last) in names.items():
        out = t.map_row({"id": 1, "full_name": full})
        assert (out["first_name"], out["last_name"]) == (first, last), full


def test_recipe_enum_with_a_default() -> None:
    t = recipe("ticket")
    out = t.map_row({"id": 1, "status": "spam", "priority": None})
    assert (out["state"], out["priority"]) == ("OTHER", 2)
    assert t.map_row({"id": 1, "status": "pending", "priority": " HIGH "})["state"] == "WAITING"
    with pytest.raises(RowError) as exc:
        t.map_row({"id": 1, "status": "open", "priority": "urgent"})
    assert exc.value.rule_id == "ticket.priority" and "not in value_map" in exc.value.message


def test_recipe_filtered_table() -> None:
    t = recipe("live_order")
    base = {"id": 1, "status": "paid", "total": Decimal("5.00"), "is_test": False, "placed_at": None}
    assert t.accepts(base)
    assert not t.accepts({**base, "status": "cancelled"})
    assert not t.accepts({**base, "is_test": True})
    assert t.accepts({**base, "status": None})
    assert not t.accepts({**base, "total": None})
    assert t.accepts({**base, "total": None, "status": "refunded"})


def test_recipe_jsonb_extraction() -> None:
    t = recipe("profile")

    def row(prefs: str) -> dict[str, Any]:
        return t.map_row({"id": 1, "prefs": prefs})

    out = row('{"address": {"city": "Lyon", "zip": 69001}, "age": "42", "tags": ["a", "b"]}')
    assert (out["city"], out["zip"], out["age"], out["first_tag"]) == ("Lyon", "69001", 42, "a")
    assert out["newsletter"] is False
    assert row('{"age": "forty", "newsletter": "yes"}')["age"] is None
    assert row('{"newsletter": "yes"}')["newsletter"] is True
    with pytest.raises(RowError) as exc:
        row('{"age": 42.5}')
    assert exc.value.rule_id == "profile.age"


def test_recipe_naive_timestamps() -> None:
    t = recipe("event")

    def at(wall: datetime) -> Any:
        row = {"id": 1, "happened_at": wall, "logged_at": None, "day": "2024-07-01"}
        return t.map_row(row)["happened_at"]

    assert at(datetime(2024, 7, 1, 9, 30)) == datetime(2024, 7, 1, 7, 30, tzinfo=UTC)
    assert at(datetime(2024, 3, 31, 2, 30)) == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)
    assert at(datetime(2024, 10, 27, 2, 30)) == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    with pytest.raises(RowError) as exc:
        t.map_row({"id": 1, "happened_at": datetime(2024, 7, 1), "logged_at": None, "day": "01/07/2024"})
    assert exc.value.rule_id == "event.day"


def test_recipe_text_uuid_key_is_normalised() -> None:
    t = recipe("device")
    key = t.map_key({"id": "6F9619FF8B86D011B42D00C04FC964FF"})
    assert key == ("6f9619ff-8b86-d011-b42d-00c04fc964ff",)


# --- links ------------------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = re.match(r"#{1,6} (.+)", line)
        if m and not in_code:
            slug = _slug(m[1])
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_links_resolve() -> None:
    text = doc_text()
    own = _anchors(text)
    pages = {
        f"../{p}": _anchors((ROOT / p).read_text(encoding="utf-8"))
        for p in ("README.md", "MIGRATION-ARTIFACTS.md")
    }
    bad = []
    for target in re.findall(r"\]\(([^)]+)\)", text):
        path, _, anchor = target.partition("#")
        anchors = own if path == "" else pages.get(path, set())
        if not (DOC.parent / path).exists() or (anchor and anchor not in anchors):
            bad.append(target)
    assert bad == []


@pytest.mark.parametrize("page", ["README.md", "MIGRATION-ARTIFACTS.md"])
def test_linked_from(page: str) -> None:
    assert f"({DOC_LINK})" in (ROOT / page).read_text(encoding="utf-8")
