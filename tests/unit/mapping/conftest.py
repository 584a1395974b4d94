"""Session fixtures: the demo catalogs (see demo_catalogs.py)."""

from __future__ import annotations

import pytest

from replicator.core.mapping import Catalog, catalog_from_dict
from tests.unit.mapping.demo_catalogs import SOURCE, TARGET


@pytest.fixture(scope="session")
def source_catalog() -> Catalog:
    return catalog_from_dict(SOURCE)


@pytest.fixture(scope="session")
def target_catalog() -> Catalog:
    return catalog_from_dict(TARGET)
