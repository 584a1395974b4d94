"""`replicator mapping check|explain`: a spec against the live catalogs, and its compiled plan."""

from __future__ import annotations

from pathlib import Path

from replicator.config import Settings
from replicator.core.errors import ReplicatorError
from replicator.core.mapping import Plan, Problem, check, compile_spec, load_spec
from replicator.core.mapping.check import missing_topics, topic_names
from replicator.kafka.clients import Metadata
from replicator.run.assembly import catalogs


def check_spec(settings: Settings, path: Path) -> list[Problem]:
    """The spec against both catalogs, and a warning per mapped topic Kafka does not have."""
    spec = load_spec(path)
    source, target = catalogs(spec, settings)
    problems = check(spec, source, target)
    try:
        with Metadata(settings.kafka) as metadata:
            existing = frozenset(metadata.partition_counts(topic_names(spec)))
    except ReplicatorError as exc:  # the catalogs decide the verdict; the topics are a warning
        fix = "check REPLICATOR_KAFKA__BOOTSTRAP_SERVERS, then check again"
        return [
            *problems,
            spec.problem(("topic_prefix",), "topics", f"topics not checked: {exc}", fix, "warning"),
        ]
    return [*problems, *missing_topics(spec, existing, settings.kafka.bootstrap_servers)]


def explain_spec(settings: Settings, path: Path) -> Plan:
    spec = load_spec(path)
    _source, target = catalogs(spec, settings)
    return compile_spec(spec, target)
