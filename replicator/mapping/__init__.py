"""Mapping: the declarative spec, its compilation into an immutable plan, and its check.

Flow: `load_spec(path)` -> `compile_spec(spec, target_catalog)` -> `Plan`;
`check(spec, source_catalog, target_catalog)` lists problems for
`replicator mapping check`. Catalogs come from `read_catalog(conn, schemas)`.
"""

from replicator.mapping.catalog import Catalog, PgType, catalog_from_dict, read_catalog
from replicator.mapping.check import check
from replicator.mapping.compiler import compile_spec, topic_for
from replicator.mapping.plan import (
    ColumnPlan,
    DeletePolicy,
    Narrowing,
    Plan,
    RowError,
    TablePlan,
    TruncatePolicy,
)
from replicator.mapping.spec import Problem, Spec, SpecError, load_spec, load_spec_text
from replicator.mapping.statements import TableStatements

__all__ = [
    "Catalog",
    "ColumnPlan",
    "DeletePolicy",
    "Narrowing",
    "PgType",
    "Plan",
    "Problem",
    "RowError",
    "Spec",
    "SpecError",
    "TablePlan",
    "TableStatements",
    "TruncatePolicy",
    "catalog_from_dict",
    "check",
    "compile_spec",
    "load_spec",
    "load_spec_text",
    "read_catalog",
    "topic_for",
]
