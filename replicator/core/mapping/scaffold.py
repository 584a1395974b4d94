"""`replicator mapping scaffold`: an identity spec for the source's tables, to start from (pure).

Each table becomes one rule that copies it column for column into the table of the same name
(in the same schema, or the one `schemas` maps it to). The result is a starting point that
`mapping check` then judges against both live catalogs; nothing here guesses a transformation.

Invariants:
- Deterministic: tables sorted by name; columns in the table's order.
- Keyed on the primary key, else on a unique constraint (NOT NULL columns first, then the
  shortest: Debezium keys such a table's events on a unique index). A table with neither is
  left out and named in `skipped` with its fix; never keyed on a guess.
- Generated columns are never read (logical replication does not carry them): they go to
  `ignore_source_columns`; the target computes its own. So do columns of a type Debezium does
  not carry as it is (`captured`), each named in a header line.
- Columns it copies whose type has a documented loss (`losses`: numeric NaN, BC dates in the
  snapshot, timetz offsets, ...) are named in a header line per kind, as `mapping check` warns.
- Deletes are hard deletes; a source TRUNCATE stops the run (`error`) until a human chooses.
- Rule ids are the table names made valid (`[A-Za-z][A-Za-z0-9_-]*`), `<schema>_<table>` where
  two schemas share a name, `_2`, `_3`... after an id already given (`"dup x"` and `dup_x` both
  make `dup_x`); unique by construction.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from replicator.core.mapping.captured import capture_gap
from replicator.core.mapping.catalog import Catalog, Table
from replicator.core.mapping.losses import Loss, comment, grouped, table_losses
from replicator.core.model import TableRef


@dataclass(frozen=True, slots=True)
class Scaffold:
    document: dict[str, Any]  # the spec, as YAML would load it
    skipped: tuple[str, ...]  # one line per table or column left out: why, and the fix
    lossy: tuple[str, ...] = ()  # one line per kind of loss among the copied columns

    def text(self) -> str:
        """The spec as YAML, headed by comments saying what it is and what was left out."""
        header = [
            "# the identity mapping of the source's tables, made by `replicator mapping scaffold`:",
            "# a start. Edit it, then `replicator mapping check` it against both databases.",
            *(f"# SKIPPED {line}" for line in self.skipped),
            *(f"# LOSSY {line}" for line in self.lossy),
        ]
        body = yaml.safe_dump(self.document, sort_keys=False, allow_unicode=True, default_flow_style=None)
        return "\n".join(header) + "\n" + body


def _rule_id(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_\-]", "_", text)
    return cleaned if cleaned[:1].isalpha() else f"t_{cleaned}"


def _key(table: Table) -> tuple[str, ...] | None:
    if table.primary_key:
        return table.primary_key
    nullable = {c.name for c in table.columns if c.nullable}
    uniques = sorted(table.unique, key=lambda u: (bool(nullable & set(u)), len(u), u))
    return uniques[0] if uniques else None


def _name(ref: TableRef) -> str | dict[str, str]:
    """`schema.table`, or the mapping form when a part holds a dot."""
    if "." in ref.schema or "." in ref.name:
        return {"schema": ref.schema, "table": ref.name}
    return f"{ref.schema}.{ref.name}"


def _not_carried(table: Table) -> list[str]:
    """One line per column Debezium does not carry as it is (`captured.capture_gap`)."""
    return [
        f"{table.ref}.{c.name} ({c.type}): {gap}; it is under ignore_source_columns, copy it another way"
        for c in table.columns
        if (gap := capture_gap(c.type)) is not None
    ]


def _rule(rule_id: str, table: Table, key: tuple[str, ...], target: TableRef) -> dict[str, Any]:
    generated = [c.name for c in table.columns if c.generated or capture_gap(c.type) is not None]
    copied = [c.name for c in table.columns if c.name not in generated and c.name not in key]
    rule: dict[str, Any] = {
        "id": rule_id,
        "source": _name(table.ref),
        "target": _name(target),
        "key": {k: k for k in key},
        "delete": {"policy": "hard"},
        "truncate": {"policy": "error"},
    }
    if generated:
        rule["ignore_source_columns"] = generated
    rule["columns"] = {c: {"from": c} for c in copied or key[:1]}
    return rule


def scaffold(
    catalog: Catalog,
    tables: Sequence[TableRef],
    *,
    topic_prefix: str,
    connector: str | None = None,
    signal_table: TableRef | None = None,
    schemas: Mapping[str, str] | None = None,
) -> Scaffold:
    """The identity spec of `tables` (each must be in `catalog`), the signal table excepted."""
    chosen = sorted({t for t in tables if t != signal_table}, key=lambda t: (t.schema, t.name))
    shared = Counter(t.name for t in chosen)
    taken: set[str] = set()
    rules: list[dict[str, Any]] = []
    skipped: list[str] = []
    lossy: list[tuple[Loss, str]] = []
    for ref in chosen:
        table = catalog.tables[ref]
        key = _key(table)
        if key is None:
            skipped.append(
                f"{ref}: no primary key or unique constraint, so its rows cannot be matched in the"
                f" target; fix: add a primary key to {ref} (or a unique constraint on NOT NULL columns,"
                " with REPLICA IDENTITY FULL) and scaffold it again"
            )
            continue
        skipped += [f"column {line}" for line in _not_carried(table)]
        rule_id = _rule_id(ref.name if shared[ref.name] == 1 else f"{ref.schema}_{ref.name}")
        base, n = rule_id, 1
        while rule_id in taken:  # "dup x" and dup_x: one id made valid, told apart by a number
            n += 1
            rule_id = f"{base}_{n}"
        taken.add(rule_id)
        target = TableRef((schemas or {}).get(ref.schema, ref.schema), ref.name)
        rule = _rule(rule_id, table, key, target)
        rules.append(rule)
        lossy += table_losses(table, [*rule["key"], *(c for c in rule["columns"] if c not in rule["key"])])
    document: dict[str, Any] = {"version": 1, "topic_prefix": topic_prefix}
    capture = {
        k: v
        for k, v in (("connector", connector), ("signal_table", signal_table and _name(signal_table)))
        if v is not None
    }
    if capture:
        document["capture"] = capture
    document["tables"] = rules
    lines = tuple(comment(loss, columns) for loss, columns in grouped(lossy))
    return Scaffold(document, tuple(skipped), lines)
