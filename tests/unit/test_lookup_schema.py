"""A lookup table in a target schema no rule writes (`ref.country` beside `crm.org`) is read
with the target catalog, so `mapping check`, `explain`, `run` and the schema guard find it
instead of calling it missing (trial 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config import PostgresSettings, load_settings
from replicator.core.mapping import load_spec_text
from replicator.core.mapping.catalog import Catalog
from replicator.core.model import TableRef
from replicator.run import assembly

SPEC = """\
version: 1
topic_prefix: app
tables:
  - id: org
    source: legacy.orgs
    target: crm.org
    key: {org_id: id}
    delete: {policy: hard}
    truncate: {policy: error}
    columns:
      country_id:
        lookup: {table: ref.country, match: {iso2: country}, take: id, on_missing: reject}
"""


def test_target_schemas_include_lookup_schemas() -> None:
    assert load_spec_text(SPEC).target_schemas() == ["crm", "ref"]


def test_every_target_catalog_read_covers_the_lookup_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, list[str]]] = []

    def fake(pg: PostgresSettings, schemas: list[str], side: str) -> Catalog:
        asked.append((side, list(schemas)))
        return Catalog(tables={})

    spec_file = tmp_path / "app.yaml"
    spec_file.write_text(SPEC)
    monkeypatch.setenv("REPLICATOR_MAPPING", str(spec_file))
    monkeypatch.setattr(assembly, "read_side_catalog", fake)
    monkeypatch.setattr(assembly, "compile_spec", lambda spec, catalog: None)
    settings = load_settings()
    spec = load_spec_text(SPEC)
    assembly.catalogs(spec, settings)
    assembly.target_plan(settings)
    assembly.live_catalogs(settings, spec)(TableRef.parse("legacy.orgs"))
    targets = [schemas for side, schemas in asked if side == "target"]
    assert targets == [["crm", "ref"]] * 3
