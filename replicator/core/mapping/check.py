"""Check: a spec against the source and target catalogs, as a list of problems.

Invariants:
- Pure over catalogs (see `catalog.read_catalog` for the live edge); never
  raises for a bad spec: every finding is a `Problem` with file, line, rule id,
  what is wrong and how to fix it. Severity `error` blocks a run, `warning`
  needs a human look, `info` reports (the FK apply order).
- Types are judged on what a rule produces (source type, then transforms,
  value_map, const) against the target type. A narrowing without
  `cast.on_narrowing` is an error: a value would be rejected or changed by
  PostgreSQL instead of by a declared rule.
- When no catalog-level error is found, the spec is also compiled, so a spec
  that checks clean compiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from replicator.core.mapping.captured import capture_gap
from replicator.core.mapping.catalog import INTEGER_RANGES, Catalog, Column, ForeignKey, PgType, Table
from replicator.core.mapping.compiler import apply_order, compile_spec, topic_for
from replicator.core.mapping.predicates import predicate_columns
from replicator.core.mapping.spec import (
    Case,
    ColumnRule,
    DecimalT,
    Hash,
    JsonPath,
    Mask,
    Nfc,
    Problem,
    Severity,
    Spec,
    SpecError,
    TableRule,
    Timezone,
    Trim,
    UnmappedDefault,
)
from replicator.core.mapping.transforms import PARSED_TYPES
from replicator.core.model import TableRef

_INT_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}
_FAMILY = {
    "text": "text",
    "varchar": "text",
    "char": "text",
    "enum": "text",
    "citext": "text",
    "smallint": "int",
    "integer": "int",
    "bigint": "int",
    "numeric": "numeric",
    "real": "float",
    "double precision": "float",
    "json": "json",
    "jsonb": "json",
}


@dataclass(frozen=True, slots=True)
class Produced:
    """What a rule produces: a type, plus enum labels when known. `None` type = unknown."""

    type: PgType | None
    labels: tuple[str, ...] = ()
    nullable_any: bool = False  # a null constant: fits any type


def check(spec: Spec, source_catalog: Catalog, target_catalog: Catalog) -> list[Problem]:
    """Every problem found, errors first then warnings then info."""
    problems: list[Problem] = []
    for i, rule in enumerate(spec.tables):
        _check_table(spec, ("tables", i), rule, source_catalog, target_catalog, problems)
    if not any(p.severity == "error" for p in problems):
        try:
            compile_spec(spec, target_catalog)
        except SpecError as exc:
            problems.extend(exc.problems)
    problems += _immediate_cycles(spec, target_catalog)
    problems += _cascades(spec, target_catalog)
    order = apply_order([t.target for t in spec.tables], target_catalog)
    problems.append(
        Problem(
            spec.file,
            spec.line("tables"),
            "spec",
            "apply order (FK parents first): " + ", ".join(map(str, order)),
            "",
            "info",
        )
    )
    rank = {"error": 0, "warning": 1, "info": 2}
    return sorted(problems, key=lambda p: (rank[p.severity], p.line))


_CYCLE_DEPTH = 6


def _immediate_cycles(spec: Spec, catalog: Catalog) -> list[Problem]:
    """Mapped target tables that reference each other in a cycle with a NOT DEFERRABLE
    constraint: rows a source writes together (its own constraints deferred) fit in no order."""
    mapped = {t.target for t in spec.tables}
    edges: dict[TableRef, list[tuple[TableRef, ForeignKey]]] = {}
    for ref in sorted(mapped):
        table = catalog.table(ref)
        for fk in table.foreign_keys if table is not None else ():
            if fk.references in mapped and fk.references != ref:
                edges.setdefault(ref, []).append((fk.references, fk))
    problems: list[Problem] = []
    said: set[frozenset[TableRef]] = set()
    for start in sorted(edges):
        for cycle in _cycles_from(start, edges):
            tables = frozenset(child for child, _ in cycle)
            immediate = [f"{child}.{fk.name}" for child, fk in cycle if not fk.deferrable]
            if tables in said or not immediate:
                continue
            said.add(tables)
            rule = next(t for t in spec.tables if t.target == start)
            names = " -> ".join(str(child) for child, _ in cycle) + f" -> {cycle[0][0]}"
            problems.append(
                Problem(
                    spec.file,
                    spec.line("tables"),
                    rule.id,
                    f"foreign keys form a cycle in the target ({names}) with NOT DEFERRABLE"
                    f" {', '.join(immediate)}: rows the source writes in one transaction (its constraints"
                    " deferred) fit in no order and stay held",
                    "make them DEFERRABLE INITIALLY DEFERRED in the target (ALTER TABLE ... ALTER"
                    " CONSTRAINT ...), unless the source's own are immediate too",
                    "warning",
                )
            )
    return problems


def _cascades(spec: Spec, catalog: Catalog) -> list[Problem]:
    """ON DELETE CASCADE between mapped target tables on another unique than the parent's key.
    Each topic (and partition) is applied on its own, so a parent's delete can land before the
    events of its children that the source wrote earlier, e.g. children re-parented in the same
    transaction: the cascade then deletes rows the source kept, and no event brings them back.
    The writer holds such a delete until the child tables have applied everything up to it when
    the key references the parent's key (`target.writer`, `_cascade_waits`); on any other columns
    it cannot tell which parent row a delete leaves, so it is a warning. The source's own cascade
    sends every child delete, so the target needs none; NO ACTION makes such a delete wait (held)
    for its children."""
    keys = {rule.target: frozenset(rule.key) for rule in spec.tables}
    problems: list[Problem] = []
    for i, rule in enumerate(spec.tables):
        table = catalog.table(rule.target)
        for fk in table.foreign_keys if table is not None else ():
            if (
                not fk.cascades
                or fk.references not in keys
                or frozenset(fk.ref_columns) == keys[fk.references]
            ):
                continue
            problems.append(
                spec.problem(
                    ("tables", i, "target"),
                    rule.id,
                    f"foreign key {fk.name} of {rule.target} is ON DELETE CASCADE from {fk.references}"
                    f" ({', '.join(fk.ref_columns)}, not its key): a delete of a {fk.references} row"
                    f" applied before earlier events of its {rule.target} rows (another topic or"
                    " partition; e.g. rows moved to another parent in the same source transaction)"
                    " deletes rows the source kept, with no error record (`verify` reports them"
                    " missing); the source's child deletes arrive as events anyway",
                    f"make it ON DELETE NO ACTION in the target (ALTER TABLE {rule.target} DROP"
                    f" CONSTRAINT {fk.name}, ADD CONSTRAINT {fk.name} FOREIGN KEY ... REFERENCES"
                    f" {fk.references} ...): a parent's delete is then held until its children have"
                    " moved or gone",
                    "warning",
                )
            )
    return problems


def _immediate_swaps(
    add: Callable[[tuple[Any, ...], str, str, str, Severity], None],
    rule: TableRule,
    rules: Mapping[str, ColumnRule],
    src: Table,
    tgt: Table,
) -> None:
    """A target unique constraint that is NOT DEFERRABLE where the source's (on the columns its
    rules read) is DEFERRABLE: the source can swap values between two rows in one statement, which
    the target refuses in either order, so both rows stay held and `drain` never ends."""
    for tcols in tgt.unique:
        if tcols in tgt.deferrable_unique or any(c not in rules for c in tcols):
            continue
        reads = frozenset(c for t in tcols for c in rules[t].source_columns())
        scols = next((u for u in src.deferrable_unique if frozenset(u) == reads), None)
        if scols is None:
            continue
        cols = ", ".join(tcols)
        add(
            ("target",),
            rule.id,
            f"the unique constraint on ({cols}) of {rule.target} is NOT DEFERRABLE, while the source's"
            f" on ({', '.join(scols)}) is DEFERRABLE: two rows swapping values in one source statement"
            " fit in no order in the target and stay held (`drain` never ends)",
            f"make it DEFERRABLE INITIALLY DEFERRED in the target (ALTER TABLE {rule.target} DROP"
            f" CONSTRAINT <name>, ADD CONSTRAINT <name> UNIQUE ({cols}) DEFERRABLE INITIALLY DEFERRED;"
            " ALTER CONSTRAINT changes foreign keys only)",
            "warning",
        )


def _cycles_from(
    start: TableRef, edges: Mapping[TableRef, list[tuple[TableRef, ForeignKey]]]
) -> list[list[tuple[TableRef, ForeignKey]]]:
    """Simple cycles through `start` (each as (child, its FK) steps) of at most `_CYCLE_DEPTH`
    tables, depth-first (bounded: a schema with hundreds of tables and FKs stays quick)."""
    found: list[list[tuple[TableRef, ForeignKey]]] = []

    def walk(node: TableRef, path: list[tuple[TableRef, ForeignKey]], seen: set[TableRef]) -> None:
        if len(path) >= _CYCLE_DEPTH or len(found) >= _CYCLE_DEPTH:
            return
        for parent, fk in edges.get(node, ()):
            step = [*path, (node, fk)]
            if parent == start:
                found.append(step)
            elif parent not in seen and parent > start:  # each cycle once, from its smallest table
                walk(parent, step, {*seen, parent})

    walk(start, [], {start})
    return found


def check_tables(
    spec: Spec, table_ids: Iterable[str], source_catalog: Catalog, target_catalog: Catalog
) -> list[Problem]:
    """The problems of some table rules only (a re-check after a source schema change)."""
    wanted = set(table_ids)
    problems: list[Problem] = []
    for i, rule in enumerate(spec.tables):
        if rule.id in wanted:
            _check_table(spec, ("tables", i), rule, source_catalog, target_catalog, problems)
    return problems


def _check_table(
    spec: Spec, path: tuple[Any, ...], rule: TableRule, src_cat: Catalog, tgt_cat: Catalog, out: list[Problem]
) -> None:
    def add(
        where: tuple[Any, ...], rule_id: str, message: str, fix: str, severity: Severity = "error"
    ) -> None:
        out.append(spec.problem((*path, *where), rule_id, message, fix, severity))

    src = src_cat.table(rule.source)
    tgt = tgt_cat.table(rule.target)
    if src is None:
        add(
            ("source",),
            rule.id,
            f"source table {rule.source} does not exist",
            "correct source, or create the table on the source",
        )
    if tgt is None:
        add(
            ("target",),
            rule.id,
            f"target table {rule.target} does not exist",
            "correct target, or create the table on the target",
        )
    if src is None or tgt is None:
        return

    # keys and identity
    if not src.primary_key and src.replica_identity not in ("full", "index"):
        add(
            ("source",),
            rule.id,
            f"source table {rule.source} has no primary key or replica identity",
            "add a primary key (or ALTER TABLE ... REPLICA IDENTITY FULL)",
        )
    if src.primary_key and set(rule.key.values()) != set(src.primary_key):
        add(
            ("key",),
            rule.key_rule_id,
            f"key sources {list(rule.key.values())} are not the source primary key "
            f"{list(src.primary_key)} that Debezium puts in event keys",
            "key the rule on the source primary key columns",
        )
    if not src.primary_key and not src.is_unique_key(rule.key.values()):
        add(
            ("key",),
            rule.key_rule_id,
            f"source table {rule.source} has no primary key, and the key sources "
            f"{list(rule.key.values())} are not a unique constraint of it: source rows with equal "
            "keys would collapse into one target row",
            f"add a primary key to {rule.source} (or a unique constraint on {', '.join(rule.key.values())})",
        )
    if not tgt.is_unique_key(rule.key):
        add(
            ("key",),
            rule.key_rule_id,
            f"target key {list(rule.key)} is neither the primary key nor a unique constraint "
            f"of {rule.target}",
            "key on the target primary key, or add a unique constraint on these columns",
        )

    rules: dict[str, ColumnRule] = dict(rule.columns)
    for target_key, source_key in rule.key.items():
        rules.setdefault(target_key, ColumnRule.model_validate({"from": source_key}))

    _immediate_swaps(add, rule, rules, src, tgt)

    # columns
    for name, crule in rules.items():
        where = ("columns", name) if name in rule.columns else ("key", name)
        _check_column(add, where, rule.column_rule_id(name), name, crule, src, tgt, tgt_cat)
    for name, crule in rule.delete.set.items():
        rid = f"{rule.id}.delete.{name}"
        _check_column(add, ("delete", "set", name), rid, name, crule, src, tgt, tgt_cat)
        if name not in rules:
            add(
                ("delete", "set", name),
                rid,
                f"soft-delete column {name!r} is not reset by any column rule, so a re-inserted "
                "row stays deleted",
                f"add a column rule for {name} (e.g. const)",
                "warning",
            )
        non_key = [c for c in crule.source_columns() if c not in src.primary_key]
        if non_key and src.replica_identity != "full":
            add(
                ("delete", "set", name),
                rid,
                f"delete events carry only key columns, but this reads {non_key}",
                f"ALTER TABLE {rule.source} REPLICA IDENTITY FULL, or read key columns only",
                "warning",
            )
    if rule.filter is not None:
        for c in sorted(predicate_columns(rule.filter)):
            if src.column(c) is None:
                add(
                    ("filter",),
                    rule.filter_rule_id,
                    f"filter column {c!r} does not exist in {rule.source}",
                    f"use one of {', '.join(src.column_names)}",
                )
    for j, c in enumerate(rule.ignore_source_columns):
        if src.column(c) is None:
            add(
                ("ignore_source_columns", j),
                rule.id,
                f"ignored source column {c!r} does not exist in {rule.source}",
                "if the source dropped it, keep it listed until no event from before the DROP is left"
                " (rows held, open error records, partitions behind it): it tells those events' mapping"
                " the column was dropped, not renamed; else remove it from ignore_source_columns",
                "warning",
            )

    # NOT NULL target columns nobody writes
    for col in tgt.columns:
        if not col.nullable and not col.has_default and col.name not in rules:
            add(
                ("columns",),
                rule.id,
                f"target column {col.name!r} is NOT NULL, has no default and no rule writes it",
                f"add a rule for {col.name} (e.g. const) or a default on the target",
            )

    # unmapped source columns
    policy = spec.schema_change_policy(rule)
    if spec.unmapped_policy(rule) == "fail":
        known = {c for r in rules.values() for c in r.source_columns()}
        known |= {c for r in rule.delete.set.values() for c in r.source_columns()}
        known |= set(rule.ignore_source_columns)
        if rule.filter is not None:
            known |= predicate_columns(rule.filter)
        for col in src.columns:
            if col.name in known:
                continue
            if policy == "ignore_new_columns" and col.nullable:
                add(
                    ("on_schema_change",) if rule.on_schema_change else ("columns",),
                    rule.schema_change_rule_id,
                    f"source column {col.name!r} is not mapped: ignored"
                    " (on_schema_change: ignore_new_columns)",
                    "map it, or list it in ignore_source_columns",
                    "warning",
                )
                continue
            add(
                ("columns",),
                rule.id,
                f"source column {col.name!r} is not mapped (unmapped_source_columns: fail)",
                "map it, or list it in ignore_source_columns"
                + (" (it is NOT NULL: ignore_new_columns does not ignore it)" if not col.nullable else ""),
            )
    if policy == "record":
        add(
            ("on_schema_change",) if rule.on_schema_change else ("tables",),
            rule.schema_change_rule_id,
            "on_schema_change: record: after a source schema change every event of this table that no"
            " longer maps becomes an error record (the table is never stopped)",
            "use stop (the default) to hold its events in Kafka until the spec is fixed",
            "info",
        )

    # truncate vs FKs
    if rule.truncate.policy == "truncate":
        for other in tgt_cat.tables.values():
            if other.ref != tgt.ref and any(fk.references == tgt.ref for fk in other.foreign_keys):
                add(
                    ("truncate",),
                    rule.truncate_rule_id,
                    f"{other.ref} references {rule.target}: TRUNCATE will fail",
                    "use truncate policy delete or error",
                    "warning",
                )


def _check_column(
    add: Any,
    where: tuple[Any, ...],
    rule_id: str,
    name: str,
    rule: ColumnRule,
    src: Table,
    tgt: Table,
    tgt_cat: Catalog,
) -> None:
    target = tgt.column(name)
    if target is None:
        add(
            where,
            rule_id,
            f"target column {name!r} does not exist in {tgt.ref}",
            f"use one of {', '.join(tgt.column_names)}",
        )
        return
    if target.generated:
        add(
            where,
            rule_id,
            f"target column {name!r} of {tgt.ref} is a generated column: PostgreSQL computes it and"
            " refuses a written value",
            f"remove {name!r} from the rule (the target computes it from the columns the rule writes)",
        )
        return
    missing = [c for c in rule.source_columns() if src.column(c) is None]
    for c in missing:
        add(
            where,
            rule_id,
            f"source column {c!r} does not exist in {src.ref}",
            f"use one of {', '.join(src.column_names)}",
        )
    if missing:
        return
    for c in rule.source_columns():
        col = src.column(c)
        gap = capture_gap(col.type) if col is not None else None
        if gap is not None:
            add(
                where,
                rule_id,
                f"source column {c!r} of {src.ref} is {col.type if col else '?'}: {gap}",
                f"list {c!r} under ignore_source_columns and copy it another way, or change its type in"
                " the source (e.g. to text) before the migration",
            )
        if col is not None and col.generated:
            add(
                where,
                rule_id,
                f"source column {c!r} of {src.ref} is a generated column: logical replication (PostgreSQL"
                " before 18) does not carry it, so only the snapshot would have its values",
                f"compute it on the target instead (a generated column there) and list {c!r} under"
                " ignore_source_columns",
            )
    if target.type.name == "bit varying" and not target.type.is_array and rule.source_columns():
        add(
            where,
            rule_id,
            f"target column {name!r} is bit varying: Debezium drops a value's leading zero bits"
            " (B'0011' and B'11' arrive alike), so every non-null value would be an error record",
            f"leave {name!r} out of the rule (and its source column under ignore_source_columns) and"
            " copy it another way",
            "warning",  # loud at run time too: each such value is an error record naming why
        )
        return
    produced = _produced(rule, src, tgt_cat)
    verdict = _compat(produced, target)
    if verdict == "unknown" and _json_into_text(rule, target.type):
        verdict = "ok"  # json_path values are written as ->> gives them (`targets.json_as_text`)
    casted = rule.cast is not None
    if verdict == "incompatible" and not (casted and _cast_converts(produced, target.type)):
        add(
            where,
            rule_id,
            f"{_show(produced)} does not convert to {target.type}",
            _conversion_fix(produced, target.type, casted),
        )
    elif verdict == "narrowing" and not casted:
        add(
            where,
            rule_id,
            f"{_show(produced)} may not fit {target.type} (narrowing)",
            "declare cast: {on_narrowing: reject} (or truncate for strings), or widen the target",
        )
    elif verdict == "unknown" and not casted:
        add(
            where,
            rule_id,
            f"cannot tell whether the value fits {target.type}",
            "declare cast: {on_narrowing: reject}",
            "warning",
        )
    source = src.column(rule.from_) if rule.from_ is not None else None
    if (
        source is not None
        and source.nullable
        and not target.nullable
        and not (rule.has_default and rule.default is not None)
        and rule.value_map is None
    ):
        add(
            where,
            rule_id,
            f"source column {rule.from_!r} of {src.ref} may be NULL and target column {name!r} is NOT NULL:"
            " a row with a NULL there is an error record (23502; the target's own DEFAULT does not apply"
            " to a NULL written)",
            f"give the rule a default (default: <value>), make {name!r} nullable in the target, or fill the"
            " source's NULLs",
            "warning",
        )
    absent_labels = _labels_the_target_lacks(verdict, produced, target)
    if absent_labels:
        add(
            where,
            rule_id,
            f"enum labels {absent_labels} of the source are not in the enum of target column {name!r}:"
            " every row with one would be an error record (22P02)",
            "add them to the target column's enum type (ALTER TYPE ... ADD VALUE in the target),"
            " before the source writes them",
        )
    if (
        rule.value_map is not None
        and rule.unmapped == "reject"
        and produced.labels == ()
        and rule.from_ is not None
    ):
        col = src.column(rule.from_)
        labels = col.enum_labels if col is not None else ()
        absent = [lb for lb in labels if lb not in rule.value_map]
        if absent:
            add(
                where,
                rule_id,
                f"enum labels {absent} are not in value_map: such rows are rejected",
                "add them to value_map",
                "warning",
            )


def _labels_the_target_lacks(verdict: str, produced: Produced, target: Column) -> list[str]:
    """Source enum labels an enum target column does not have (a source `ALTER TYPE ... ADD VALUE`
    not made in the target too): PostgreSQL refuses such values, so a table copying them must stop
    (a schema-change re-check) rather than write error records."""
    if verdict != "ok" or not produced.labels or not target.enum_labels:
        return []
    if target.type.element.name != "enum":
        return []
    have = set(target.enum_labels)
    return [label for label in produced.labels if label not in have]


def _show(p: Produced) -> str:
    return f"value of type {p.type}" if p.type is not None else "value"


def _py_type(v: Any) -> PgType | None:
    if isinstance(v, bool):
        return PgType("boolean")
    if isinstance(v, int):
        for name in ("smallint", "integer", "bigint"):
            lo, hi = INTEGER_RANGES[name]
            if lo <= v <= hi:
                return PgType(name)
        return PgType("numeric")
    if isinstance(v, str):
        return PgType("varchar", length=len(v))
    if isinstance(v, float | Decimal):
        return PgType("numeric")
    return None


def _union(types: list[PgType | None]) -> PgType | None:
    if not types or any(t is None for t in types):
        return None
    real = [t for t in types if t is not None]
    if all(t.name in ("varchar", "char", "text") and not t.is_array for t in real):
        if any(t.length is None for t in real):
            return PgType("text")
        return PgType("varchar", length=max(t.length or 0 for t in real))
    if all(t.name == "boolean" for t in real):
        return PgType("boolean")
    if all(_FAMILY.get(t.name) == "int" for t in real):
        return PgType(max((t.name for t in real), key=lambda n: _INT_DIGITS[n]))
    return None


def _produced(rule: ColumnRule, src: Table, tgt_cat: Catalog) -> Produced:
    labels: tuple[str, ...] = ()
    if rule.lookup is not None:
        table = tgt_cat.table(rule.lookup.table)
        took = table.column(rule.lookup.take) if table is not None else None
        return Produced(took.type if took is not None else None)  # a missing table: compile says so
    if rule.json_object is not None:
        return Produced(PgType("jsonb"))
    if rule.from_ is not None:
        col: Column | None = src.column(rule.from_)
        t: PgType | None = col.type if col else None
        labels = col.enum_labels if col else ()
    elif rule.split is not None:
        col = src.column(rule.split.from_)
        t = col.type if col else None
    elif rule.concat is not None:
        t = PgType("text")
    elif rule.source_ts:
        t = PgType("timestamp with time zone")
    else:
        if rule.const is None:
            return Produced(None, nullable_any=True)
        t = _py_type(rule.const)
    for tr in rule.transforms:
        if isinstance(tr, Trim | Nfc | Case | Mask):
            # nfc can change length; trim/case/mask keep it at most the same
            if isinstance(tr, Nfc) and t is not None and t.length is not None:
                t = PgType("text")
            labels = ()
        elif isinstance(tr, Hash):
            t, labels = PgType("varchar", length=64), ()
        elif isinstance(tr, JsonPath):
            t, labels = None, ()
        elif isinstance(tr, Timezone):
            naive = tr.timezone.to is not None and tr.timezone.naive
            t = PgType("timestamp without time zone" if naive else "timestamp with time zone")
        elif isinstance(tr, DecimalT):
            t = PgType("numeric", precision=None, scale=tr.decimal.scale)
    if rule.value_map is not None:
        outs = [_py_type(v) for v in rule.value_map.values() if v is not None]
        if isinstance(rule.unmapped, UnmappedDefault) and rule.unmapped.default is not None:
            outs.append(_py_type(rule.unmapped.default))
        if rule.unmapped == "keep":
            outs.append(t if not labels else PgType("varchar", length=max(map(len, labels))))
        t, labels = _union(outs), ()
    if rule.has_default and rule.default is not None and t is not None:
        t = _union([t, _py_type(rule.default)]) or t
    return Produced(t, labels)


def _compat(p: Produced, target: Column) -> str:
    """ok | narrowing | incompatible | unknown."""
    if p.nullable_any:
        return "ok" if target.nullable else "incompatible"
    s, t = p.type, target.type
    if s is None:
        return "unknown"
    if s.is_array != t.is_array:
        return "incompatible"
    s, t = s.element, t.element
    if s.name == "enum" and p.labels:
        s = PgType("varchar", length=max(map(len, p.labels)))
    fs, ft = _FAMILY.get(s.name, s.name), _FAMILY.get(t.name, t.name)
    if ft == "text" and t.name == "enum":
        return "ok" if fs == "text" else "incompatible"  # PostgreSQL checks labels
    if fs == "text" and ft == "text":
        if t.length is None:
            return "ok"
        return "ok" if s.length is not None and s.length <= t.length else "narrowing"
    if fs in ("int", "numeric") and ft in ("int", "numeric"):
        return _numeric_compat(s, t)
    if fs in ("int", "numeric") and ft == "text":
        return "ok" if t.length is None else "narrowing"
    if fs == ft:
        return "ok"
    return "incompatible"


def _digits(t: PgType) -> tuple[int | None, int | None]:
    """(integer digits, scale); None = unbounded."""
    if t.name in _INT_DIGITS:
        return _INT_DIGITS[t.name], 0
    if t.precision is None:
        return None, t.scale
    return t.precision - (t.scale or 0), t.scale or 0


def _numeric_compat(s: PgType, t: PgType) -> str:
    if t.name in INTEGER_RANGES:
        if s.name in INTEGER_RANGES:
            return "ok" if INTEGER_RANGES[s.name][1] <= INTEGER_RANGES[t.name][1] else "narrowing"
        return "narrowing"
    si, ss = _digits(s)
    ti, ts = _digits(t)
    if ti is None:
        return "ok"
    if si is None or ss is None or si > ti or ss > (ts or 0):
        return "narrowing"
    return "ok"


def _cast_converts(p: Produced, target: PgType) -> bool:
    """A cast also parses text into the types it names (`transforms.CASTABLE`)."""
    return (
        p.type is not None
        and not p.type.is_array
        and not target.is_array
        and _FAMILY.get(p.type.name) == "text"
        and (_FAMILY.get(target.name) in ("int", "numeric") or target.name in PARSED_TYPES)
    )


def _json_into_text(rule: ColumnRule, target: PgType) -> bool:
    """A json_path rule (last typing step) into an unbounded text column: always fits."""
    typing = [t for t in rule.transforms if not isinstance(t, Trim | Nfc | Case)]
    return (
        bool(typing)
        and isinstance(typing[-1], JsonPath)
        and rule.value_map is None
        and not target.is_array
        and target.name in ("text", "citext", "varchar")
        and target.length is None
    )


_NAIVE, _AWARE = "timestamp without time zone", "timestamp with time zone"


def _conversion_fix(p: Produced, target: PgType, casted: bool) -> str:
    """The fix for a value that does not convert: only ever a rule the spec has."""
    if target.user_kind is not None:  # no transform builds a composite or range value
        return (
            f"no rule produces a value of a user-defined {target.user_kind} type: give the target"
            " column a type a rule can fill (text, jsonb, or the type's fields as columns)"
        )
    s = p.type
    if s is not None and not s.is_array and not target.is_array:
        if s.name == _NAIVE and target.name == _AWARE:
            return (
                "read the wall clock in its zone: transforms: [{timezone: {assume: UTC}}] "
                "(or the zone it was written in, e.g. Europe/Paris, with nonexistent/ambiguous)"
            )
        if s.name == _AWARE and target.name == _NAIVE:
            return "take the wall clock of a zone: transforms: [{timezone: {to: UTC, naive: true}}]"
        if _FAMILY.get(s.name) == "text" and (
            _FAMILY.get(target.name) in ("int", "numeric") or target.name in PARSED_TYPES
        ):
            return "declare cast: {on_invalid: reject} (or null), which parses the text"
        if s.name == "date" and target.name in (_NAIVE, _AWARE):
            midnight = "T00:00:00" + ("+00:00" if target.name == _AWARE else "")
            return (
                f"build the text and parse it: concat: [{{column: <date column>}}, '{midnight}'] "
                "with cast: {on_invalid: reject}"
            )
        if _FAMILY.get(target.name) == "json":
            return "build the document with json_object: {key: {column: <source column>}}"
    if _FAMILY.get(target.name) == "text" and target.name != "enum":
        return "render it as text: concat: [{column: <source column>}]"
    return "add a value_map producing the target type" + (
        "" if casted else f", or map a column of type {target}"
    )


def topic_names(spec: Spec) -> list[str]:
    return [rule.topic or topic_for(spec.topic_prefix, rule.source) for rule in spec.tables]


SHOWN_TOPICS = 5  # missing topics named in the one warning; the others are counted


def missing_topics(spec: Spec, existing: frozenset[str], where: str) -> list[Problem]:
    """One warning for the mapped topics that do not exist in Kafka (at `where`), at the spec line
    naming the first: a wrong topic_prefix or `topic:` would otherwise pass the check and then
    wait forever. Before `connectors apply` every topic is missing, which is expected: a warning
    per table (119 lines in trial 13) buried the rest, so several are counted in one line naming
    the first SHOWN_TOPICS; a single one keeps its table's rule id."""
    names = topic_names(spec)
    first: dict[str, int] = {}  # each missing topic, at its first table
    for i, topic in enumerate(names):
        if topic not in existing:
            first.setdefault(topic, i)
    if not first:
        return []
    missing = list(first)
    at = first[missing[0]]
    rule = spec.tables[at]
    fix = (
        "expected before `replicator connectors apply` (the connector creates a table's topic with its"
        " first event; an empty table has none): check again once the connector runs; otherwise make"
        " topic_prefix (or the table's topic:) match the connector's topic.prefix"
        " (`replicator connectors status`)"
    )
    if len(missing) == 1:
        rule_id, message = rule.id, f"topic {missing[0]} does not exist in Kafka at {where}"
    else:
        shown = ", ".join(missing[:SHOWN_TOPICS])
        more = f" and {len(missing) - SHOWN_TOPICS} more" if len(missing) > SHOWN_TOPICS else ""
        rule_id = "topics"
        message = (
            f"{len(missing)} of the {len(set(names))} mapped topics do not exist in Kafka at {where}:"
            f" {shown}{more}"
        )
    return [
        spec.problem(
            ("tables", at, "topic") if rule.topic else ("topic_prefix",), rule_id, message, fix, "warning"
        )
    ]
