"""The mapping spec is the contract: every rule id of the demo spec is named by a test.

Collects every rule id of the compiled demo plan (tables, columns, keys,
filters, delete and truncate policies, schema-change policies, soft-delete set columns) and fails for
any id that no test file under tests/ mentions.
"""

from __future__ import annotations

from pathlib import Path

from replicator.core.mapping import catalog_from_dict, compile_spec, load_spec
from tests.unit.mapping.demo_catalogs import TARGET

ROOT = Path(__file__).resolve().parents[2]


def demo_rule_ids() -> set[str]:
    plan = compile_spec(load_spec(ROOT / "mappings" / "demo.yaml"), catalog_from_dict(TARGET))
    ids: set[str] = set()
    for t in plan.tables:
        ids |= {t.rule_id, f"{t.rule_id}.key", t.delete.rule_id, t.truncate.rule_id, t.schema_change.rule_id}
        if t.filter is not None:
            ids.add(t.filter_rule_id)
        ids |= {c.rule_id for c in t.columns}
        ids |= {c.rule_id for c in t.delete.set_columns}
    return ids


def test_every_demo_rule_is_named_by_a_test() -> None:
    corpus = "\n".join(
        p.read_text(encoding="utf-8")
        for p in (ROOT / "tests").rglob("test_*.py")
        if p.name != Path(__file__).name
    )
    missing = sorted(rule for rule in demo_rule_ids() if rule not in corpus)
    assert missing == [], f"rules without a test naming them: {missing}"
