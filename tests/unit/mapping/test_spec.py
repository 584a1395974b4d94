"""Spec loading: safe YAML, line numbers, unknown keys, identifier limits, rule ids."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from replicator.core.mapping import SpecError, load_spec, load_spec_text

BASE = """\
version: 1
topic_prefix: demo
tables:
  - id: t
    source: s.a
    target: s.b
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns:
      name: {from: name}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec_text(dedent(text), "m.yaml")
    return [str(p) for p in exc.value.problems]


def test_minimal_spec_loads_with_rule_ids() -> None:
    """spec: a minimal table rule loads; column rule id defaults to <table>.<column>."""
    spec = load_spec_text(BASE, "m.yaml")
    t = spec.tables[0]
    assert t.column_rule_id("name") == "t.name"
    assert (t.filter_rule_id, t.delete_rule_id, t.truncate_rule_id) == ("t.filter", "t.delete", "t.truncate")
    assert spec.line("tables", 0, "columns", "name") == 11


def test_python_object_tag_refused() -> None:
    """spec YAML: !!python/object/apply is refused with file:line, never constructed."""
    text = BASE + "      evil: !!python/object/apply:os.system ['echo pwned']\n"
    (msg,) = errors(text)
    assert msg.startswith("m.yaml:12: spec: YAML tag")
    assert "not allowed" in msg


@pytest.mark.parametrize("tag", ["!!str 5", "!custom x", "!!binary aGk="])
def test_any_explicit_tag_refused(tag: str) -> None:
    """spec YAML: every explicit tag is refused, even safe ones."""
    (msg,) = errors(BASE.replace("{from: name}", "{from: " + tag + "}"))
    assert "YAML tag" in msg


def test_anchors_and_aliases_refused() -> None:
    """spec YAML: anchors/aliases are refused (no billion laughs, no hidden sharing)."""
    text = BASE.replace("{from: name}", "&a {from: name}") + "      other: *a\n"
    (msg,) = errors(text)
    assert "anchors and aliases" in msg


def test_duplicate_keys_refused() -> None:
    """spec YAML: a duplicate key is an error, not last-one-wins."""
    (msg,) = errors(BASE + "      name: {from: other}\n")
    assert msg.startswith("m.yaml:12: spec: duplicate key 'name'")


def test_yaml12_scalars_norway_stays_text() -> None:
    """spec YAML: NO / on / 1:30 / dates stay strings (YAML 1.2 core schema only)."""
    text = BASE + "    filter: {column: c, op: in, value: [NO, on, '1', 1:30, 2024-01-01, 7]}\n"
    spec = load_spec_text(text)
    pred = spec.tables[0].filter
    assert pred is not None and pred.value == ["NO", "on", "1", "1:30", "2024-01-01", 7]  # type: ignore[union-attr]


def test_yaml12_integers_with_leading_zeros_are_decimal() -> None:
    """spec YAML: 010 is ten and 08 is eight (YAML 1.1 read 010 as octal and failed on 08)."""
    text = BASE + "    filter: {column: c, op: in, value: [010, 08, -007]}\n"
    pred = load_spec_text(text).tables[0].filter
    assert pred is not None and pred.value == [10, 8, -7]  # type: ignore[union-attr]


def test_unknown_keys_refused_with_line_and_rule_id() -> None:
    """spec: unknown keys at table and column level name file:line and the rule id."""
    text = BASE.replace("    key:", "    kee: 1\n    key:").replace("{from: name}", "{from: name, frob: 1}")
    msgs = errors(text)
    assert msgs == [
        "m.yaml:7: t: unknown key 'kee' at tables.0.kee; fix: remove it or correct its spelling",
        "m.yaml:12: t.name: unknown key 'frob' at tables.0.columns.name.frob; "
        "fix: remove it or correct its spelling",
    ]


def test_all_problems_reported_at_once() -> None:
    """spec: SpecError collects every problem (one line each) before raising."""
    text = (
        BASE.replace("{from: name}", "{from: a, const: 1}")
        + "      x: {from: a, transforms: [{eval: '1+1'}]}\n"
    )
    msgs = errors(text)
    assert len(msgs) == 2
    assert "exactly one value source" in msgs[0]
    assert "unknown transform" in msgs[1] and msgs[1].startswith("m.yaml:12: t.x:")


def test_identifier_over_63_bytes_refused() -> None:
    """identifier safety: >63 bytes (UTF-8) would be truncated by PostgreSQL -> refused."""
    long_name = "ä" * 32  # 64 bytes, 32 characters
    (msg,) = errors(BASE.replace("{from: name}", "{from: " + long_name + "}"))
    assert "PostgreSQL would truncate" in msg and "t.name" in msg
    ok = "a" * 63
    load_spec_text(BASE.replace("{from: name}", "{from: " + ok + "}"))


def test_table_name_with_dot_needs_mapping_form() -> None:
    """spec: 'a.b.c' is ambiguous; {schema, table} form accepts any name."""
    (msg,) = errors(BASE.replace("target: s.b", "target: s.b.c"))
    assert "schema.table" in msg
    spec = load_spec_text(BASE.replace("target: s.b", 'target: {schema: s, table: "b.c"}'))
    assert spec.tables[0].target.name == "b.c"


def test_key_column_must_come_from_the_key_source() -> None:
    """spec key: a key column rule reading another column is refused (rule id t.key)."""
    (msg,) = errors(BASE.replace("name: {from: name}", "id: {from: name}"))
    assert ": t.key: key column 'id' must come from source key 'id'" in msg


def test_duplicate_rule_ids_refused() -> None:
    """spec: rule ids are unique across the file."""
    text = BASE + "      other: {from: other, id: t.name}\n"
    (msg,) = errors(text)
    assert "rule id 't.name' is already used at line 11" in msg


def test_value_map_requires_unmapped() -> None:
    """spec value_map: the unmapped policy must be declared."""
    (msg,) = errors(BASE.replace("{from: name}", "{from: name, value_map: {a: b}}"))
    assert "value_map and unmapped go together" in msg


def test_soft_delete_requires_set() -> None:
    """spec delete: soft needs set; hard/ignore must not have it."""
    (msg,) = errors(BASE.replace("{policy: hard}", "{policy: soft}"))
    assert "t.delete" in msg and "delete.set is required" in msg


def test_filter_shape_errors() -> None:
    """spec filter: op needs the right value shape."""
    (msg,) = errors(BASE + "    filter: {column: c, op: in, value: 3}\n")
    assert "t.filter" in msg and "needs a list" in msg


def test_load_spec_missing_file(tmp_path: Path) -> None:
    """spec: an unreadable file is a SpecError with the path."""
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "nope.yaml")


def test_invalid_yaml_syntax_has_line() -> None:
    """spec YAML: syntax errors are reported with their line."""
    (msg,) = errors("version: 1\ntables: [\n")
    assert msg.startswith("m.yaml:3: spec: invalid YAML")
