"""`replicator mapping check|explain`: a spec against the live catalogs, and its compiled plan."""

from __future__ import annotations

from pathlib import Path

from replicator.config import Settings
from replicator.core.mapping import Plan, Problem, check, compile_spec, load_spec
from replicator.run.assembly import catalogs


def check_spec(settings: Settings, path: Path) -> list[Problem]:
    spec = load_spec(path)
    source, target = catalogs(spec, settings)
    return check(spec, source, target)


def explain_spec(settings: Settings, path: Path) -> Plan:
    spec = load_spec(path)
    _source, target = catalogs(spec, settings)
    return compile_spec(spec, target)
