"""core.mapping.check.missing_topics: a mapped topic Kafka does not have is one warning, at the
spec line that names it, once per topic."""

from __future__ import annotations

from pathlib import Path

from replicator.core.mapping import load_spec
from replicator.core.mapping.check import missing_topics, topic_names

SPEC = Path(__file__).resolve().parents[2] / "mappings" / "demo.yaml"


def test_one_warning_per_missing_topic_at_the_topic_prefix_line() -> None:
    spec = load_spec(SPEC)
    topics = topic_names(spec)
    assert topics.count("demo.shop.customers") == 2  # customer and customer_pii share it
    problems = missing_topics(spec, frozenset(topics) - {"demo.shop.customers"}, "k:9092")
    assert [(p.rule_id, p.severity, p.line) for p in problems] == [
        ("customer", "warning", spec.line("topic_prefix"))
    ]
    assert "topic demo.shop.customers does not exist in Kafka at k:9092" in str(problems[0])
    assert missing_topics(spec, frozenset(topics), "k:9092") == []
