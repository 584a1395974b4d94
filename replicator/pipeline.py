"""Assembly of the one pipeline that `run` and `shadow` share: spec -> checked plan, decoder.

The daemon refuses to start on a spec that does not check against the live
source and target catalogs (errors only; warnings are logged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from replicator.avro import RegistryClient
from replicator.config import Settings
from replicator.decode import AvroDecoder, JsonDecoder
from replicator.failures import Fatal, one_line
from replicator.mapping import Catalog, Plan, Problem, Spec, check, compile_spec, load_spec, read_catalog


def _catalog(conninfo: str, schemas: list[str], side: str) -> Catalog:
    try:
        with psycopg.connect(conninfo) as conn:
            return read_catalog(conn, schemas)
    except psycopg.Error as exc:
        raise Fatal(f"{side}: cannot read the catalog: {one_line(exc)}") from exc


def catalogs(spec: Spec, settings: Settings) -> tuple[Catalog, Catalog]:
    source_schemas = sorted({t.source.schema for t in spec.tables})
    target_schemas = sorted({t.target.schema for t in spec.tables})
    return (
        _catalog(settings.source.conninfo(), source_schemas, "source"),
        _catalog(settings.target.conninfo(), target_schemas, "target"),
    )


def checked_plan(settings: Settings, spec_path: Path | None = None) -> tuple[Plan, list[Problem]]:
    """Load, check against live catalogs, compile. Raises Fatal listing every error."""
    spec = load_spec(spec_path or settings.mapping)
    source, target = catalogs(spec, settings)
    problems = check(spec, source, target)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise Fatal(
            f"mapping {spec_path or settings.mapping} does not check ({len(errors)} problems): "
            + " | ".join(str(p) for p in errors)
            + "; run `replicator mapping check` for details"
        )
    return compile_spec(spec, target), problems


def decoder(settings: Settings) -> JsonDecoder | AvroDecoder:
    """The decoder for the configured value format (JSON, or Avro through the registry)."""
    common: dict[str, Any] = {"unavailable_placeholder": settings.unavailable_placeholder}
    if settings.value_format == "avro":
        if not settings.registry_url:
            raise Fatal("value_format=avro needs REPLICATOR_REGISTRY_URL")
        return AvroDecoder(RegistryClient(settings.registry_url).schema, **common)
    return JsonDecoder(**common)
