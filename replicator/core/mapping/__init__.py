"""Mapping: the declarative spec, its compilation into an immutable plan, and its check.

Flow: `load_spec(path)` -> `compile_spec(spec, target_catalog)` -> `Plan`;
`check(spec, source_catalog, target_catalog)` lists problems for
`replicator mapping check`. Live catalogs come from `replicator.pg.catalog`.
"""

from replicator.core.mapping.catalog import Catalog, PgType, catalog_from_dict
from replicator.core.mapping.check import check
from replicator.core.mapping.compiler import compile_spec, topic_for
from replicator.core.mapping.plan import (
    ColumnPlan,
    DeletePolicy,
    Narrowing,
    Plan,
    RowError,
    TablePlan,
    TruncatePolicy,
)
from replicator.core.mapping.spec import Problem, Spec, SpecError, load_spec, load_spec_text
from replicator.core.mapping.statements import TableStatements

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
    "topic_for",
]
