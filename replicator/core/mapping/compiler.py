"""Compiler: a validated Spec plus the target catalog become an immutable Plan.

Invariants:
- Pure: no I/O; the same spec and catalog always give an equal plan.
- Every target table and column a rule names exists in the target catalog,
  else SpecError (all problems at once, each with file:line and rule id).
- A column function runs its steps in this fixed order: value source (from /
  const / concat / split / json_object / lookup / source_ts) -> transforms (in
  order) -> value_map -> default (when the value is null) -> cast -> the
  target type's adapter (`targets`). If any source column it reads is
  UNAVAILABLE it returns UNAVAILABLE before running any step.
- `concat` yields null when any column part is null; `split` yields null when
  the index is out of range (so `default` can apply); `json_object` keeps a
  null column as a JSON null; `lookup` yields null for a null source value and
  otherwise a `LookupRef` the writer resolves.
- Plans list columns in target column order; `apply_order` puts FK parents
  before children (ties and cycles broken by table name, deterministically).
- Topic names follow Debezium: `<prefix>.<schema>.<table>` with characters
  outside `[A-Za-z0-9._-]` replaced by `_`, unless the table rule sets `topic`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from replicator.core.mapping import targets
from replicator.core.mapping import transforms as tf
from replicator.core.mapping.catalog import Catalog, PgType, Table
from replicator.core.mapping.notation import flow, transform
from replicator.core.mapping.plan import (
    SOURCE_TS,
    ColumnEval,
    ColumnPlan,
    DeletePolicy,
    ForeignKeyPlan,
    LookupPlan,
    LookupRef,
    Narrowing,
    Plan,
    RowError,
    SchemaChangePolicy,
    TablePlan,
    TruncatePolicy,
)
from replicator.core.mapping.predicates import compile_predicate, describe, predicate_columns
from replicator.core.mapping.spec import (
    Case,
    ColumnRef,
    ColumnRule,
    DecimalT,
    Hash,
    JsonPath,
    Mask,
    Nfc,
    Problem,
    Spec,
    SpecError,
    TableRule,
    Timezone,
    Transform,
    Trim,
    UnmappedDefault,
)
from replicator.core.mapping.statements import (
    NO_EQUALITY,
    LookupStatements,
    TableStatements,
    lookup_stage_name,
    stage_name,
)
from replicator.core.model import UNAVAILABLE, Row, TableRef

_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]")


def topic_for(prefix: str, source: TableRef) -> str:
    """Debezium's default topic name for a source table."""
    return _TOPIC_UNSAFE.sub("_", f"{prefix}.{source.schema}.{source.name}")


def compile_spec(spec: Spec, target_catalog: Catalog) -> Plan:
    """Compile a loaded spec against the target catalog (raises SpecError)."""
    problems: list[Problem] = []
    tables: list[TablePlan] = []
    for i, rule in enumerate(spec.tables):
        table = _compile_table(spec, ("tables", i), rule, target_catalog, problems)
        if table is not None:
            tables.append(table)
    if problems:
        raise SpecError(problems)
    order = apply_order([t.target for t in tables], target_catalog)
    warnings = tuple(
        f"{c.rule_id}: {t.target}.{c.target} truncates values longer than {c.target_type} "
        "(each truncation is reported per row)"
        for t in tables
        for c in t.columns
        if c.truncates
    )
    fks = tuple(
        ForeignKeyPlan(
            fk.name, t.target, fk.columns, fk.references, fk.ref_columns, fk.deferrable, fk.cascades
        )
        for t in tables
        for fk in (target_catalog.table(t.target) or _NO_TABLE).foreign_keys
    )
    return Plan(spec.file, tuple(tables), order, warnings, fks, spec.topic_prefix)


_NO_TABLE = Table(TableRef("", ""), ())


def apply_order(targets: list[TableRef], catalog: Catalog) -> tuple[TableRef, ...]:
    """Targets ordered parents first by FKs among them; deterministic."""
    pending = sorted(set(targets))
    wanted = set(pending)
    deps: dict[TableRef, set[TableRef]] = {}
    for ref in pending:
        table = catalog.table(ref)
        fks = table.foreign_keys if table is not None else ()
        deps[ref] = {fk.references for fk in fks if fk.references in wanted and fk.references != ref}
    done: list[TableRef] = []
    while pending:
        ready = [r for r in pending if deps[r] <= set(done)]
        pick = ready[0] if ready else pending[0]  # a cycle: break it by name
        done.append(pick)
        pending.remove(pick)
    return tuple(done)


def _compile_table(
    spec: Spec, path: tuple[Any, ...], rule: TableRule, catalog: Catalog, problems: list[Problem]
) -> TablePlan | None:
    table = catalog.table(rule.target)
    if table is None:
        problems.append(
            spec.problem(
                (*path, "target"),
                rule.id,
                f"target table {rule.target} does not exist",
                "create it or correct target",
            )
        )
        return None
    rules: dict[str, ColumnRule] = dict(rule.columns)
    for target_key, source_key in rule.key.items():
        rules.setdefault(target_key, ColumnRule.model_validate({"from": source_key}))
    unknown = [c for c in [*rules, *rule.delete.set] if table.column(c) is None]
    for c in unknown:
        where = (*path, "columns", c) if c in rules else (*path, "delete", "set", c)
        problems.append(
            spec.problem(
                where,
                rule.column_rule_id(c) if c in rules else f"{rule.id}.delete.{c}",
                f"target column {c!r} does not exist in {rule.target}",
                f"use one of {', '.join(table.column_names)}",
            )
        )
    if unknown:
        return None

    columns: list[ColumnPlan] = []
    for col in table.columns:
        if col.name not in rules:
            continue
        cp = _column(
            spec,
            (*path, "columns", col.name),
            rule.column_rule_id(col.name),
            col.name,
            col.type,
            rules[col.name],
            col.name in rule.key,
            problems,
            catalog,
        )
        if cp is not None:
            columns.append(cp)
    set_columns: list[ColumnPlan] = []
    for col in table.columns:
        if col.name in rule.delete.set:
            cp = _column(
                spec,
                (*path, "delete", "set", col.name),
                f"{rule.id}.delete.{col.name}",
                col.name,
                col.type,
                rule.delete.set[col.name],
                False,
                problems,
                catalog,
            )
            if cp is not None:
                set_columns.append(cp)
    if len(columns) != len(rules) or len(set_columns) != len(rule.delete.set):
        return None

    key = tuple(rule.key)
    filt = None
    filter_cols: frozenset[str] = frozenset()
    if rule.filter is not None:
        filt = compile_predicate(rule.filter, rule.filter_rule_id)
        filter_cols = predicate_columns(rule.filter)
    known = (
        {s for c in columns for s in c.sources}
        | {s for c in set_columns for s in c.sources}
        | set(rule.key.values())
        | set(rule.ignore_source_columns)
        | filter_cols
    )
    readers: dict[str, list[str]] = {}
    for rid, sources in (
        *((c.rule_id, c.sources) for c in (*columns, *set_columns)),
        (rule.key_rule_id, tuple(rule.key.values())),
        (rule.filter_rule_id, tuple(sorted(filter_cols))),
    ):
        for source in sources:
            if rid not in readers.setdefault(source, []):
                readers[source].append(rid)
    written = {c.target for c in columns} | {c.target for c in set_columns}
    statements = TableStatements(
        target=rule.target,
        key=key,
        columns=tuple(c for c in table.column_names if c in written),
        stage=stage_name(rule.id),
        text_compared=frozenset(
            c.name for c in table.columns if c.name in written and c.type.name in NO_EQUALITY
        ),
    )
    return TablePlan(
        rule_id=rule.id,
        source=rule.source,
        topic=rule.topic or topic_for(spec.topic_prefix, rule.source),
        target=rule.target,
        key=key,
        key_sources=tuple(rule.key.values()),
        columns=tuple(columns),
        filter=filt,
        filter_rule_id=rule.filter_rule_id,
        delete=DeletePolicy(rule.delete.policy, rule.delete_rule_id, tuple(set_columns)),
        truncate=TruncatePolicy(rule.truncate.policy, rule.truncate_rule_id),
        unmapped=spec.unmapped_policy(rule),
        known_source_columns=frozenset(known),
        statements=statements,
        filter_describe=describe(rule.filter) if rule.filter is not None else "",
        target_owned_rows=rule.target_owned_rows,
        schema_change=SchemaChangePolicy(spec.schema_change_policy(rule), rule.schema_change_rule_id),
        read_by={c: tuple(r) for c, r in sorted(readers.items())},
    )


def build_transform(t: Transform) -> tf.Fn:
    """The function for one whitelisted transform (ValueError on bad arguments)."""
    if isinstance(t, Trim):
        return tf.trim()
    if isinstance(t, Nfc):
        return tf.nfc()
    if isinstance(t, Case):
        return tf.case(t.case)
    if isinstance(t, Timezone):
        a = t.timezone
        if a.assume is not None:
            assert a.ambiguous != "keep"  # the spec refuses keep with assume
            return tf.timezone_assume(a.assume, nonexistent=a.nonexistent or "reject", ambiguous=a.ambiguous)
        assert a.to is not None and a.ambiguous in ("reject", "keep")
        return tf.timezone_convert(a.to, naive=a.naive, ambiguous=a.ambiguous)
    if isinstance(t, Hash):
        return tf.sha256()
    if isinstance(t, Mask):
        return tf.mask(t.mask.keep_last, t.mask.char)
    if isinstance(t, JsonPath):
        return tf.json_path(t.json_path)
    if isinstance(t, DecimalT):
        d = t.decimal
        return tf.decimal_op(d.op, d.by, d.scale, d.rounding)
    raise AssertionError(f"unhandled transform {t!r}")


def _source_reader(rule: ColumnRule, rule_id: str) -> Callable[[Row], Any]:
    def read(row: Row, name: str) -> Any:
        try:
            return row[name]
        except KeyError:
            raise _missing(rule_id, name) from None

    if rule.from_ is not None:
        name = rule.from_
        return lambda row: read(row, name)
    if rule.source_ts:
        return lambda row: read(row, SOURCE_TS)
    if rule.split is not None:
        sp = rule.split
        maxsplit = -1 if sp.maxsplit is None else sp.maxsplit

        def split(row: Row) -> Any:
            v = read(row, sp.from_)
            if v is None:
                return None
            if not isinstance(v, str):
                raise tf.TransformError(f"split needs text, got {type(v).__name__}; fix: split a text column")
            parts = v.split(sp.sep, maxsplit)
            return parts[sp.index] if -len(parts) <= sp.index < len(parts) else None

        return split
    if rule.json_object is not None:
        members = tuple(rule.json_object.items())

        def json_object(row: Row) -> Any:
            return {k: read(row, m.column) if isinstance(m, ColumnRef) else m.const for k, m in members}

        return json_object
    if rule.concat is not None:
        parts = tuple(rule.concat)

        def concat(row: Row) -> Any:
            out: list[str] = []
            for p in parts:
                if isinstance(p, ColumnRef):
                    v = read(row, p.column)
                    if v is None:
                        return None
                    out.append(tf.render_part(v))
                else:
                    out.append(p)
            return "".join(out)

        return concat
    value = rule.const
    return lambda row: value


def _describe_rule(rule: ColumnRule) -> str:
    """The rule's steps in the spec's notation (`notation.flow`), joined by ` | `."""
    if rule.from_ is not None:
        parts = [f"from {rule.from_}"]
    elif rule.source_ts:
        parts = ["source_ts"]
    elif rule.split is not None:
        parts = [f"split {flow(rule.split)}"]
    elif rule.concat is not None:
        parts = [
            "concat "
            + " + ".join(p.column if isinstance(p, ColumnRef) else flow(p, quote=True) for p in rule.concat)
        ]
    elif rule.json_object is not None:
        members = ", ".join(
            f"{flow(k)}: {m.column if isinstance(m, ColumnRef) else 'const ' + flow(m.const, quote=True)}"
            for k, m in rule.json_object.items()
        )
        parts = [f"json_object {{{members}}}"]
    elif rule.lookup is not None:
        lk = rule.lookup
        pairs = ", ".join(f"{m} = {src}" for m, src in lk.match.items())
        parts = [f"lookup {lk.take} from {lk.table} where {pairs}, on_missing {lk.on_missing}"]
    else:
        parts = [f"const {flow(rule.const, quote=True)}"]
    parts += [transform(t) for t in rule.transforms]
    if rule.value_map is not None:
        um = rule.unmapped
        um_text = f"default {flow(um.default, quote=True)}" if isinstance(um, UnmappedDefault) else um
        parts.append(f"value_map({len(rule.value_map)} values, unmapped {um_text})")
    if rule.has_default:
        parts.append(f"default {flow(rule.default, quote=True)}")
    if rule.cast is not None:
        policies = [
            f"{k} {v}"
            for k, v in (("on_narrowing", rule.cast.on_narrowing), ("on_invalid", rule.cast.on_invalid))
            if v is not None
        ]
        parts.append(f"cast {rule.cast.type or 'target type'} " + " ".join(policies))
    return " | ".join(parts)


def _column(
    spec: Spec,
    path: tuple[Any, ...],
    rule_id: str,
    target: str,
    target_type: PgType,
    rule: ColumnRule,
    is_key: bool,
    problems: list[Problem],
    catalog: Catalog | None = None,
) -> ColumnPlan | None:
    if rule.lookup is not None:
        return _lookup_column(spec, path, rule_id, target, target_type, rule, is_key, problems, catalog)
    try:
        steps = [build_transform(t) for t in rule.transforms]
    except ValueError as bad_step:
        problems.append(
            spec.problem((*path, "transforms"), rule_id, str(bad_step), "correct the transform arguments")
        )
        return None
    if rule.value_map is not None and rule.unmapped is not None:
        um = rule.unmapped
        steps.append(
            tf.value_map(rule.value_map, ("default", um.default) if isinstance(um, UnmappedDefault) else um)
        )
    cast_fn: tf.CastFn | None = None
    if rule.cast is not None:
        try:
            ctype = PgType.parse(rule.cast.type) if rule.cast.type else target_type
            if str(ctype) != str(target_type):
                raise ValueError(f"cast type {ctype} differs from the target column type {target_type}")
            cast_fn = tf.cast(ctype, rule.cast.on_narrowing, rule.cast.on_invalid)
        except ValueError as bad_cast:
            problems.append(
                spec.problem(
                    (*path, "cast"),
                    rule_id,
                    str(bad_cast),
                    f"cast to the target type {target_type} (or omit cast.type)",
                )
            )
            return None
    read = _source_reader(rule, rule_id)
    sources = rule.source_columns()
    has_default, default = rule.has_default, rule.default
    pipeline = tuple(steps)
    adapt = targets.adapter(target_type, json_to_text=any(isinstance(t, JsonPath) for t in rule.transforms))
    if rule.from_ is not None and not pipeline and not has_default and cast_fn is None and adapt is None:
        copy = _copy_column(rule.from_, rule_id)  # the common rule, on the hot path: one lookup
        return ColumnPlan(
            rule_id=rule_id,
            target=target,
            target_type=str(target_type),
            sources=sources,
            fn=_drop_notes(copy),
            is_key=is_key,
            evaluate=copy,
            describe=_describe_rule(rule),
        )

    def evaluate(row: Row, notes: list[Narrowing] | None) -> Any:
        missing = [s for s in sources if row.get(s) is UNAVAILABLE]
        if missing:
            if notes is not None and len(missing) < len(sources):
                notes.append(_left_unchanged(rule_id, target, missing, sources))
            return UNAVAILABLE
        try:
            v = read(row)
            for step in pipeline:
                v = step(v)
            if v is None and has_default:
                v = default
            if cast_fn is not None:
                v, note = cast_fn(v)
                if note is not None and notes is not None:
                    notes.append(Narrowing(rule_id, target, note))
            if adapt is not None and v is not None:
                v = adapt(v)
        except (tf.TransformError, targets.AdaptError) as exc:
            raise RowError(rule_id, str(exc)) from None
        return v

    return ColumnPlan(
        rule_id=rule_id,
        target=target,
        target_type=str(target_type),
        sources=sources,
        fn=_drop_notes(evaluate),
        is_key=is_key,
        evaluate=evaluate,
        truncates=rule.cast is not None and rule.cast.on_narrowing == "truncate",
        describe=_describe_rule(rule),
    )


def _left_unchanged(rule_id: str, target: str, missing: list[str], sources: tuple[str, ...]) -> Narrowing:
    """The report of a column combining several source columns when some arrive as unchanged TOAST
    placeholders: it cannot be computed, so it keeps its old value, which is stale if the others
    changed (the event cannot tell)."""
    others = [s for s in sources if s not in missing]
    return Narrowing(
        rule_id,
        target,
        f"{target} left as it was: {', '.join(missing)} arrived unchanged (a TOAST placeholder), so the"
        f" value combining it with {', '.join(others)} cannot be computed; fix: REPLICA IDENTITY FULL on"
        " the source table, then `replicator reload --table` for rows already affected",
        kind="unavailable",
    )


def _lookup_column(
    spec: Spec,
    path: tuple[Any, ...],
    rule_id: str,
    target: str,
    target_type: PgType,
    rule: ColumnRule,
    is_key: bool,
    problems: list[Problem],
    catalog: Catalog | None,
) -> ColumnPlan | None:
    lk = rule.lookup
    assert lk is not None
    table = catalog.table(lk.table) if catalog is not None else None
    if table is None:
        problems.append(
            spec.problem(
                (*path, "lookup", "table"),
                rule_id,
                f"lookup table {lk.table} does not exist in the target",
                "create it (and fill it) before the migration, or correct lookup.table",
            )
        )
        return None
    unknown = [c for c in (*lk.match, lk.take) if table.column(c) is None]
    if unknown:
        problems.append(
            spec.problem(
                (*path, "lookup"),
                rule_id,
                f"lookup columns {unknown} do not exist in {lk.table}",
                f"use columns of {lk.table}: {', '.join(table.column_names)}",
            )
        )
        return None
    if is_key:
        problems.append(
            spec.problem(
                path, rule_id, "a key column cannot come from a lookup", "map the key 1:1 from the source key"
            )
        )
        return None
    match = tuple(lk.match)
    plan = LookupPlan(
        rule_id=rule_id,
        table=lk.table,
        match=match,
        sources=tuple(lk.match[m] for m in match),
        take=lk.take,
        on_missing=lk.on_missing,
        statements=LookupStatements(lk.table, match, lk.take, lookup_stage_name(rule_id)),
    )
    sources = rule.source_columns()
    columns = plan.sources

    def evaluate(row: Row, notes: list[Narrowing] | None) -> Any:
        values = []
        for c in columns:
            try:
                v = row[c]
            except KeyError:
                raise _missing(rule_id, c) from None
            if v is UNAVAILABLE:
                return UNAVAILABLE
            if v is None:
                return None  # nothing to look up: null, as SQL's join would give
            values.append(v)
        return LookupRef(plan, tuple(values))

    return ColumnPlan(
        rule_id=rule_id,
        target=target,
        target_type=str(target_type),
        sources=sources,
        fn=_drop_notes(evaluate),
        is_key=False,
        evaluate=evaluate,
        describe=_describe_rule(rule),
        lookup=plan,
    )


def _copy_column(name: str, rule_id: str) -> ColumnEval:
    """`{from: name}` with nothing else: the value as it is (UNAVAILABLE included)."""

    def evaluate(row: Row, notes: list[Narrowing] | None) -> Any:
        try:
            return row[name]
        except KeyError:
            raise _missing(rule_id, name) from None

    return evaluate


def _missing(rule_id: str, name: str) -> RowError:
    return RowError(
        rule_id,
        f"source column {name!r} is missing from the event (the source dropped or renamed it, or the"
        " event was written before it was added: an error record or held row from before an ALTER"
        " TABLE ... ADD COLUMN); fix: check the source table or the rule's from; an event older than"
        " a column the source has now maps without it, unless the key or the filter reads it or the"
        " event carries a column the source dropped since that the spec does not list in"
        " ignore_source_columns (it may have been renamed to this one): if it was dropped, list it"
        " there and `replicator errors retry`; else `replicator reload --table` the table (its rows'"
        " current state), then `replicator errors resolve` the record",
    )


def _drop_notes(evaluate: ColumnEval) -> Callable[[Row], Any]:
    return lambda row: evaluate(row, None)
