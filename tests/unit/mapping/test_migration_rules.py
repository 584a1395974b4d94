"""The spec rules real migrations need, each named by its rule id in the spec below:
timezone assume (naive wall clock -> timestamptz, DST gap/overlap policy) and its
reverse, casts that parse text with an on_invalid policy, surrogate-key lookups,
json_object (a jsonb built from columns), json_path into unbounded text, and
check fixes that only ever suggest a rule the spec has.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from replicator.core.mapping import (
    Problem,
    RowError,
    SpecError,
    catalog_from_dict,
    check,
    compile_spec,
    load_spec_text,
)
from replicator.core.mapping.plan import LookupRef, Plan, TablePlan
from replicator.core.serialize import json_document
from replicator.core.values import NEG_INFINITY, POS_INFINITY
from tests.unit.mapping.demo_catalogs import CatalogSpec, TableSpec

SPEC = """\
version: 1
topic_prefix: legacy
tables:
  - id: legacy
    source: old.account
    target: new.account
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns:
      created_at: {from: created_at, transforms: [{timezone: {assume: UTC}}]}
      local_at:
        from: local_at
        transforms: [{timezone: {assume: Europe/Paris, nonexistent: later, ambiguous: earlier}}]
      strict_at: {from: local_at, transforms: [{timezone: {assume: Europe/Paris}}]}
      seen_local: {from: seen_at, transforms: [{timezone: {to: Europe/Paris, naive: true}}]}
      signup_date: {from: signup_date, cast: {on_invalid: null}}
      ext_id: {from: ext_id, cast: {on_invalid: reject}}
      active: {from: active, cast: {on_invalid: reject}}
      qty: {from: qty, cast: {on_narrowing: reject, on_invalid: null}}
      country_uuid:
        lookup: {table: new.country_map, match: {old_id: country_id}, take: new_id, on_missing: reject}
      profile:
        json_object: {first: {column: first}, amount: {column: amount}, source: {const: legacy}}
      city: {from: prefs, transforms: [{json_path: $.address.city}]}
"""

SOURCE: CatalogSpec = {
    "old.account": {
        "columns": {
            "id": "bigint",
            "created_at": "timestamp",
            "local_at": "timestamp",
            "seen_at": "timestamptz",
            "signup_date": "text",
            "ext_id": "text",
            "active": "text",
            "qty": "text",
            "country_id": "integer",
            "first": "text",
            "amount": "numeric(12,2)",
            "prefs": "jsonb",
        },
        "pk": ["id"],
    }
}
TARGET: CatalogSpec = {
    "new.account": {
        "columns": {
            "id": "bigint",
            "created_at": "timestamptz",
            "local_at": "timestamptz",
            "strict_at": "timestamptz",
            "seen_local": "timestamp",
            "signup_date": "date",
            "ext_id": "uuid",
            "active": "boolean",
            "qty": "integer",
            "country_uuid": "uuid",
            "profile": "jsonb",
            "city": "text",
        },
        "pk": ["id"],
    },
    "new.country_map": {"columns": {"old_id": "integer", "new_id": "uuid"}, "pk": ["old_id"]},
}


def plan_for(text: str = SPEC, target: CatalogSpec = TARGET) -> Plan:
    return compile_spec(load_spec_text(text, "legacy.yaml"), catalog_from_dict(target))


def problems_for(text: str, target: CatalogSpec = TARGET) -> list[Problem]:
    return check(load_spec_text(text, "legacy.yaml"), catalog_from_dict(SOURCE), catalog_from_dict(target))


def table() -> TablePlan:
    return plan_for().tables[0]


def row(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 1,
        "created_at": datetime(2024, 1, 15, 12, 0),
        "local_at": datetime(2024, 7, 1, 9, 30),
        "seen_at": datetime(2024, 7, 1, 7, 30, tzinfo=UTC),
        "signup_date": "2024-01-15",
        "ext_id": "6F9619FF-8B86-D011-B42D-00C04FC964FF",
        "active": "yes",
        "qty": "42",
        "country_id": 7,
        "first": "Zoë",
        "amount": Decimal("12.50"),
        "prefs": '{"address": {"city": "Lyon", "zip": 69001}}',
    }
    return {**base, **over}


def test_legacy_spec_checks_clean() -> None:
    """legacy.*: every rule of the spec passes check with no error or warning (json_path into an
    unbounded text column included: legacy.city needs no no-op cast)."""
    found = [p for p in problems_for(SPEC) if p.severity != "info"]
    assert found == [], [str(p) for p in found]


def test_timezone_assume_utc_reads_naive_wall_clock_as_instant() -> None:
    """legacy.created_at: {timezone: {assume: UTC}} maps a naive timestamp to a timestamptz;
    ±infinity stays ±infinity."""
    t = table()
    assert t.map_row(row())["created_at"] == datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
    assert t.map_row(row(created_at=POS_INFINITY))["created_at"] is POS_INFINITY
    assert t.map_row(row(created_at=NEG_INFINITY))["created_at"] is NEG_INFINITY
    assert t.map_row(row(created_at=None))["created_at"] is None


def test_timezone_assume_paris_dst_gap_and_overlap_policy() -> None:
    """legacy.local_at (nonexistent: later, ambiguous: earlier) and legacy.strict_at (default
    reject): 02:30 on 2024-03-31 does not exist in Paris, 02:30 on 2024-10-27 occurs twice."""
    t = table()
    summer = t.map_row(row())
    assert summer["local_at"] == datetime(2024, 7, 1, 7, 30, tzinfo=UTC)  # CEST is UTC+2
    assert summer["strict_at"] == summer["local_at"]
    gap, overlap = datetime(2024, 3, 31, 2, 30), datetime(2024, 10, 27, 2, 30)
    lenient = plan_for(SPEC.replace("      strict_at: {from: local_at", "      strict_at: {from: created_at"))
    # gap: read with the offset before (+01) or after (+02) the change, the wall time is 01:30 or
    # 00:30 UTC; "later" takes the later instant (03:30 CEST)
    assert lenient.tables[0].map_row(row(local_at=gap))["local_at"] == datetime(
        2024, 3, 31, 1, 30, tzinfo=UTC
    )
    # overlap: 00:30 UTC (+02, first) or 01:30 UTC (+01, second); "earlier" takes the first
    assert lenient.tables[0].map_row(row(local_at=overlap))["local_at"] == datetime(
        2024, 10, 27, 0, 30, tzinfo=UTC
    )
    with pytest.raises(RowError) as exc:
        t.map_row(row(local_at=gap))
    assert exc.value.rule_id == "legacy.strict_at"
    assert "does not exist (skipped by a DST change) in Europe/Paris" in exc.value.message
    assert "timezone.nonexistent: earlier or later" in exc.value.message
    with pytest.raises(RowError, match="occurs twice") as exc:
        t.map_row(row(local_at=overlap))
    assert exc.value.rule_id == "legacy.strict_at"


def test_timezone_to_naive_is_the_reverse() -> None:
    """legacy.seen_local: {timezone: {to: Europe/Paris, naive: true}} gives the Paris wall clock."""
    assert table().map_row(row())["seen_local"] == datetime(2024, 7, 1, 9, 30)


@pytest.mark.parametrize(
    "args, error",
    [
        ("{assume: UTC, to: UTC}", "exactly one of to"),
        ("{}", "exactly one of to"),
        ("{assume: UTC, naive: true}", "naive goes with to"),
        ("{assume: UTC, ambiguous: keep}", "ambiguous: reject, earlier or later"),
        ("{to: UTC, nonexistent: later}", "nonexistent goes with assume"),
        ("{assume: Mars/Olympus}", "unknown time zone"),
    ],
)
def test_timezone_rule_shape_is_checked(args: str, error: str) -> None:
    """legacy.created_at: a timezone transform declares one direction and its own policies."""
    bad = SPEC.replace("{timezone: {assume: UTC}}", f"{{timezone: {args}}}")
    with pytest.raises(SpecError, match=error):
        plan_for(bad)


def test_cast_parses_text_into_date_uuid_boolean_integer() -> None:
    """legacy.signup_date, legacy.ext_id, legacy.active, legacy.qty: cast parses text into the
    target type (uuid normalised to lower case)."""
    out = table().map_row(row())
    assert out["signup_date"] == date(2024, 1, 15)
    assert out["ext_id"] == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    assert out["active"] is True and out["qty"] == 42
    assert table().map_row(row(active="off"))["active"] is False
    assert table().map_row(row(signup_date="infinity"))["signup_date"] is POS_INFINITY


def test_cast_on_invalid_null_and_reject() -> None:
    """legacy.signup_date / legacy.qty (on_invalid: null) give null for text that does not parse;
    legacy.ext_id / legacy.active (on_invalid: reject) make the row an error naming the rule.
    Narrowing is still rejected under on_invalid: null (legacy.qty)."""
    t = table()
    assert t.map_row(row(signup_date="15/01/2024"))["signup_date"] is None
    assert t.map_row(row(qty="forty"))["qty"] is None
    with pytest.raises(RowError) as exc:
        t.map_row(row(qty="99999999999"))
    assert exc.value.rule_id == "legacy.qty" and "integer" in exc.value.message
    for column, bad in (("ext_id", "not-a-uuid"), ("active", "perhaps")):
        with pytest.raises(RowError) as exc:
            t.map_row(row(**{column: bad}))
        assert exc.value.rule_id == f"legacy.{column}"
        assert "on_invalid: null" in exc.value.message


def test_cast_timestamptz_needs_an_offset() -> None:
    """cast to timestamptz: text without a UTC offset is refused, naming the assume rule."""
    text = SPEC.replace(
        "created_at: {from: created_at, transforms: [{timezone: {assume: UTC}}]}",
        "created_at: {from: signup_date, cast: {on_invalid: reject}}",
    )
    t = plan_for(text).tables[0]
    assert t.map_row(row(signup_date="2024-01-15T10:00:00+02:00"))["created_at"] == datetime(
        2024, 1, 15, 8, 0, tzinfo=UTC
    )
    with pytest.raises(RowError, match=r"timezone: \{assume"):
        t.map_row(row(signup_date="2024-01-15T10:00:00"))


def test_lookup_yields_a_reference_the_writer_resolves() -> None:
    """legacy.country_uuid: a lookup column maps to a LookupRef (which lookup, which values);
    a null source value is null without a lookup; explain shows the rule."""
    plan = plan_for()
    t = plan.tables[0]
    ref = t.map_row(row())["country_uuid"]
    assert isinstance(ref, LookupRef) and ref.values == (7,)
    assert ref.lookup.table.name == "country_map" and ref.lookup.take == "new_id"
    assert ref.lookup.on_missing == "reject" and ref.lookup.rule_id == "legacy.country_uuid"
    assert t.map_row(row(country_id=None))["country_uuid"] is None
    assert plan.lookups == (ref.lookup,)
    assert (
        "country_uuid uuid <- lookup new_id from new.country_map where old_id = country_id, "
        "on_missing reject [legacy.country_uuid]" in plan.explain()
    )


def test_lookup_problems_are_spec_errors() -> None:
    """legacy.country_uuid: a missing lookup table or column is an error naming the rule; a
    lookup takes no transforms; a key cannot come from a lookup."""
    target = {k: v for k, v in TARGET.items() if k != "new.country_map"}
    with pytest.raises(SpecError, match=r"legacy\.country_uuid: lookup table new\.country_map does not"):
        plan_for(SPEC, target)
    with pytest.raises(SpecError, match=r"lookup columns \['uuid'\] do not exist"):
        plan_for(SPEC.replace("take: new_id", "take: uuid"))
    with pytest.raises(SpecError, match="a lookup takes no transforms"):
        plan_for(SPEC.replace("on_missing: reject}", "on_missing: reject}\n        transforms: [trim]"))


def test_json_object_builds_a_document_with_exact_numbers() -> None:
    """legacy.profile: json_object builds a jsonb from columns and constants; decimals keep
    their digits (12.50, not 12.5) and a null column is a JSON null."""
    t = table()
    doc = t.map_row(row())["profile"]
    assert json_document(doc) == '{"first": "Zoë", "amount": 12.50, "source": "legacy"}'
    assert json.loads(json_document(t.map_row(row(first=None))["profile"]))["first"] is None


def test_json_path_into_text_is_the_text_postgres_gives() -> None:
    """legacy.city: json_path into text writes strings as they are and other JSON values as
    JSON text (like ->>)."""
    t = table()
    assert t.map_row(row())["city"] == "Lyon"
    assert t.map_row(row(prefs='{"address": {"city": 75001}}'))["city"] == "75001"
    assert t.map_row(row(prefs='{"address": {"city": {"a": 1.50}}}'))["city"] == '{"a": 1.50}'
    assert t.map_row(row(prefs='{"address": {}}'))["city"] is None


def test_json_path_into_bounded_varchar_still_warns() -> None:
    """legacy.city: into varchar(n) a json_path value may not fit: a warning with the cast fix."""
    account: TableSpec = {
        "columns": {**TARGET["new.account"]["columns"], "city": "varchar(20)"},
        "pk": ["id"],
    }
    target: CatalogSpec = {**TARGET, "new.account": account}
    warnings = [str(p) for p in problems_for(SPEC, target) if p.severity == "warning"]
    assert any("legacy.city: cannot tell whether the value fits varchar(20)" in w for w in warnings)


@pytest.mark.parametrize(
    "rule, fix_names, suggested",
    [
        (
            "created_at: {from: created_at}",
            "{timezone: {assume: UTC}}",
            "created_at: {from: created_at, transforms: [{timezone: {assume: UTC}}]}",
        ),
        (
            "seen_local: {from: seen_at}",
            "{timezone: {to: UTC, naive: true}}",
            "seen_local: {from: seen_at, transforms: [{timezone: {to: UTC, naive: true}}]}",
        ),
        (
            "ext_id: {from: ext_id}",
            "cast: {on_invalid: reject}",
            "ext_id: {from: ext_id, cast: {on_invalid: reject}}",
        ),
        (
            "signup_date: {from: signup_date}",
            "cast: {on_invalid: reject}",
            "signup_date: {from: signup_date, cast: {on_invalid: reject}}",
        ),
        (
            "active: {from: active}",
            "cast: {on_invalid: reject}",
            "active: {from: active, cast: {on_invalid: reject}}",
        ),
        (
            "profile: {from: first}",
            "json_object:",
            "profile: {json_object: {first: {column: first}, amount: {column: amount}}}",
        ),
    ],
)
def test_check_fix_suggests_only_rules_that_exist(rule: str, fix_names: str, suggested: str) -> None:
    """legacy.created_at, legacy.seen_local, legacy.ext_id, legacy.signup_date, legacy.active,
    legacy.profile: a type error's fix names a rule the spec has, and applying it clears the error."""
    column = rule.split(":")[0]
    kept, dropping = [], False
    for ln in SPEC.splitlines():
        dropping = ln.startswith(f"      {column}:") or (dropping and ln.startswith("        "))
        if not dropping:
            kept.append(ln)
    base = "\n".join(kept) + "\n"
    errors = [
        p for p in problems_for(base + f"      {rule}\n") if p.severity == "error" and p.rule_id != "legacy"
    ]
    assert len(errors) == 1, [str(p) for p in errors]
    assert errors[0].rule_id == f"legacy.{column}" and fix_names in errors[0].fix, errors[0].fix
    fixed = [p for p in problems_for(base + f"      {suggested}\n") if p.severity == "error"]
    assert fixed == [], [str(p) for p in fixed]


def test_explain_labels_the_topic() -> None:
    """legacy: `mapping explain` names the table rule and labels its topic."""
    text = plan_for().explain()
    assert "[legacy] old.account -> new.account\n  topic: legacy.old.account\n" in text


def test_lookup_is_typed_by_its_take_column() -> None:
    """legacy.country_uuid: check types the lookup by its take column (uuid into uuid: clean);
    a take column of another type is an error."""
    target: CatalogSpec = {
        **TARGET,
        "new.country_map": {"columns": {"old_id": "integer", "new_id": "bytea"}, "pk": ["old_id"]},
    }
    errors = [str(p) for p in problems_for(SPEC, target) if p.severity == "error"]
    assert any("legacy.country_uuid: value of type bytea does not convert to uuid" in e for e in errors)
