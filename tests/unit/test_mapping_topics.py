"""core.mapping.check.missing_topics: the mapped topics Kafka does not have are one warning, at the
spec line naming the first (trial 13: `mapping check` before `connectors apply` printed one
warning per table, 119 lines); a single missing topic keeps its table's rule id."""

from __future__ import annotations

from pathlib import Path

from replicator.core.mapping import load_spec, load_spec_text
from replicator.core.mapping.check import missing_topics, topic_names

SPEC = Path(__file__).resolve().parents[2] / "mappings" / "demo.yaml"


def _many(n: int) -> str:
    """A spec of `n` identity tables under topic_prefix `app` (the last one on its own `topic:`)."""
    rules = "".join(
        f"  - id: t{i}\n    source: s.t{i}\n    target: s.t{i}\n    key: {{id: id}}\n"
        "    delete: {policy: hard}\n    truncate: {policy: error}\n"
        + (f"    topic: other.t{i}\n" if i == n - 1 else "")
        + "    columns: {id: {from: id}}\n"
        for i in range(n)
    )
    return f"version: 1\ntopic_prefix: app\ntables:\n{rules}"


def test_one_missing_topic_is_one_warning_of_its_table_at_the_topic_prefix_line() -> None:
    spec = load_spec(SPEC)
    topics = topic_names(spec)
    assert topics.count("demo.shop.customers") == 2  # customer and customer_pii share it
    problems = missing_topics(spec, frozenset(topics) - {"demo.shop.customers"}, "k:9092")
    assert [(p.rule_id, p.severity, p.line) for p in problems] == [
        ("customer", "warning", spec.line("topic_prefix"))
    ]
    assert "topic demo.shop.customers does not exist in Kafka at k:9092" in str(problems[0])
    assert "expected before `replicator connectors apply`" in problems[0].fix
    assert missing_topics(spec, frozenset(topics), "k:9092") == []


def test_every_topic_missing_before_the_connector_exists_is_one_line_counting_them() -> None:
    """topics.missing: 8 tables, no topic yet: one warning, the count, the first five names in spec
    order, how many more, and the fix saying it is expected before `connectors apply`."""
    spec = load_spec_text(_many(8), "m.yaml")
    problems = missing_topics(spec, frozenset(), "k:9092")
    assert len(problems) == 1
    (p,) = problems
    assert (p.rule_id, p.severity, p.line) == ("topics", "warning", spec.line("topic_prefix"))
    assert p.message == (
        "8 of the 8 mapped topics do not exist in Kafka at k:9092:"
        " app.s.t0, app.s.t1, app.s.t2, app.s.t3, app.s.t4 and 3 more"
    )
    assert p.fix.startswith("expected before `replicator connectors apply`")
    assert "match the connector's topic.prefix" in p.fix


def test_some_topics_missing_are_named_all_when_few() -> None:
    """Two of eight missing (one from a table's own `topic:`): counted of the total, both named,
    no "more"."""
    spec = load_spec_text(_many(8), "m.yaml")
    existing = frozenset(topic_names(spec)) - {"app.s.t3", "other.t7"}
    (p,) = missing_topics(spec, existing, "k:9092")
    assert p.message == "2 of the 8 mapped topics do not exist in Kafka at k:9092: app.s.t3, other.t7"
    # only the table's own topic: missing: located at its `topic:` line, under its rule id
    (alone,) = missing_topics(spec, existing | {"app.s.t3"}, "k:9092")
    assert (alone.rule_id, alone.line) == ("t7", spec.line("tables", 7, "topic"))
    assert alone.message == "topic other.t7 does not exist in Kafka at k:9092"
