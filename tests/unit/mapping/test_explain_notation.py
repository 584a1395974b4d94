"""`mapping explain` prints rule parts in the spec's own notation (YAML flow), not as Python
values: a new user saw `split {'from': 'full_name', ...}`, `is_test eq False` and `{"trim": true}`.
Every part printed reads back (YAML) as what the spec says."""

from __future__ import annotations

import re
from typing import Any

import yaml

from replicator.core.mapping import catalog_from_dict, compile_spec, load_spec_text
from replicator.core.mapping.notation import flow

SPEC = """\
version: 1
topic_prefix: app
tables:
  - id: users
    source: legacy.users
    target: crm.accounts
    key: {id: id}
    filter: {all: [{column: is_test, op: eq, value: false}, {column: country, op: ne, value: "XX"}]}
    delete: {policy: soft, set: {deleted: true}}
    truncate: {policy: ignore}
    columns:
      first_name:
        split: {from: full_name, sep: " ", index: 0, maxsplit: 1}
        transforms: [trim, {case: upper}, {mask: {keep_last: 2}}]
      origin: {const: legacy}
      code: {const: "42"}
      tier: {from: tier, value_map: {"1": gold}, unmapped: {default: basic}, default: "none"}
      profile: {json_object: {first: {column: first}, n: {const: 3}}}
      deleted: {const: false}
"""
CATALOG = {
    "legacy.users": {
        "columns": {
            "id": "bigint",
            "is_test": "boolean",
            "country": "text",
            "full_name": "text",
            "tier": "text",
            "first": "text",
        },
        "pk": ["id"],
    },
    "crm.accounts": {
        "columns": {
            "id": "bigint",
            "first_name": "text",
            "origin": "text",
            "code": "text",
            "tier": "text",
            "profile": "jsonb",
            "deleted": "boolean",
        },
        "pk": ["id"],
    },
}


def explained() -> list[str]:
    return compile_spec(load_spec_text(SPEC, "users.yaml"), catalog_from_dict(CATALOG)).explain().splitlines()


def test_filters_splits_transforms_and_values_are_printed_as_the_spec_writes_them() -> None:
    lines = explained()
    assert '  filter [users.filter]: (is_test eq false AND country ne "XX")' in lines
    assert "    set deleted = const true" in lines
    assert (
        '  first_name text <- split {from: full_name, sep: " ", index: 0, maxsplit: 1} | trim'
        " | {case: upper} | {mask: {keep_last: 2}} [users.first_name]"
    ) in lines
    assert '  origin text <- const "legacy" [users.origin]' in lines
    assert '  code text <- const "42" [users.code]' in lines  # a string, not the number 42
    assert (
        '  tier text <- from tier | value_map(1 values, unmapped default "basic") | default "none"'
        " [users.tier]"
    ) in lines
    assert "  profile jsonb <- json_object {first: first, n: const 3} [users.profile]" in lines
    assert "  deleted boolean <- const false [users.deleted]" in lines
    assert not [line for line in lines if "'" in line or "True" in line or "False" in line], lines
    # one space before a rule id, on every line that names one (column lines had two)
    assert not [line for line in lines if re.search(r"\S {2,}\[", line)], lines


def test_flow_reads_back_as_the_value() -> None:
    values: list[Any] = [
        None,
        True,
        0,
        -1.5,
        "legacy",
        " ",
        "42",
        "true",
        "No",
        "a: b",
        "$.address.city",
        "Europe/Paris",
        {"from": "full_name", "sep": ",", "index": 1},
        ["trim", {"case": "upper"}],
    ]
    for value in values:
        assert yaml.safe_load(flow(value)) == value, flow(value)
        assert yaml.safe_load(flow(value, quote=True)) == value, flow(value, quote=True)
    assert flow("legacy") == "legacy" and flow("legacy", quote=True) == '"legacy"'
