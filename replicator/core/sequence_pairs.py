"""Standalone sequences at cutover: which source sequence the target's same-named one must pass.

A standalone sequence is one no column owns and no column default calls (an
invoice number the application draws with `nextval('...')` in its own SQL).
The cutover carries those of the spec's source schemas, and the pairs the
operator names (`REPLICATOR_CUTOVER__SEQUENCES`), past the source's last value
plus the margin, exactly like the column sequences (`target.sequences`).
Pure: catalog facts in, pairs, warnings and problems out.

Invariants:
- A source sequence `s.n` pairs with the target sequence `s.n`, or `t.n` where
  `t` is a target schema the spec maps a table of `s` into; exactly one such
  target sequence, else it is named as a warning (missing or ambiguous) and not
  carried. Named pairs come first and replace the automatic match.
- Warnings do not block a cutover; problems do: a carried pair whose source
  value the source role cannot read (pg_sequences hides it: the target would be
  set as if the source had handed out nothing), a target the target role cannot
  set, a named sequence that does not exist, a value past the target's maximum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from replicator.core.cutover import SequencePlan
from replicator.core.model import TableRef

SETTING = "REPLICATOR_CUTOVER__SEQUENCES"


@dataclass(frozen=True, slots=True)
class SourceSequence:
    name: TableRef  # schema and sequence name
    last_value: int | None  # None: never used, or not readable
    readable: bool  # the source role may read its last value (SELECT or USAGE)
    of_column: bool  # a column owns it or a column default calls it: it goes with its table


@dataclass(frozen=True, slots=True)
class TargetSequence:
    name: TableRef
    increment: int
    max_value: int
    settable: bool  # the target role may setval() it (UPDATE)


@dataclass(frozen=True, slots=True)
class Pair:
    source: SourceSequence
    target: TargetSequence
    plan: SequencePlan


@dataclass(frozen=True, slots=True)
class Pairing:
    pairs: tuple[Pair, ...]
    warnings: tuple[str, ...]  # one line each: named, not carried, the cutover goes on
    problems: tuple[str, ...]  # one line each: the cutover must not go on

    @property
    def plans(self) -> list[SequencePlan]:
        return [p.plan for p in self.pairs]


def parse_pairs(text: str) -> list[tuple[TableRef, TableRef]]:
    """`src.seq=tgt.seq, ...` (the setting) as (source, target) pairs; ValueError names a bad one."""
    out: list[tuple[TableRef, TableRef]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        source, sep, target = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} must be written source_schema.sequence=target_schema.sequence")
        out.append((_qualified(source.strip(), item), _qualified(target.strip(), item)))
    sources = [s for s, _ in out]
    if len(set(sources)) != len(sources):
        raise ValueError("a source sequence is named twice")
    return out


def _qualified(name: str, item: str) -> TableRef:
    schema, sep, rest = name.partition(".")
    if not sep or not schema or not rest:
        raise ValueError(f"{item!r}: sequence {name!r} must be written schema.name")
    return TableRef(schema, rest)


def standalone_plan(source: SourceSequence, target: TargetSequence, margin: int) -> SequencePlan:
    """Past the source's last value plus the margin (no column: no key to pass)."""
    return SequencePlan(str(target.name), "", "", None, source.last_value, margin, str(source.name))


def pair(
    sources: Iterable[SourceSequence],
    targets: Iterable[TargetSequence],
    schema_map: Mapping[str, Iterable[str]],
    named: Sequence[tuple[TableRef, TableRef]],
    margin: int,
    roles: tuple[str, str] = ("the source role", "the target role"),
) -> Pairing:
    """The standalone pairs to carry; `schema_map`: source schema -> target schemas the spec maps
    its tables into; `named`: the operator's pairs; `roles`: (source role, target role) for fixes."""
    by_source = {s.name: s for s in sources}
    by_target = {t.name: t for t in targets}
    pairs: list[tuple[SourceSequence, TargetSequence]] = []
    warnings: list[str] = []
    problems: list[str] = []
    for src, tgt in named:
        if src not in by_source:
            problems.append(f"{SETTING} names source sequence {src}, which does not exist in the source")
        if tgt not in by_target:
            problems.append(f"{SETTING} names target sequence {tgt}, which does not exist in the target")
        if src in by_source and tgt in by_target:
            pairs.append((by_source[src], by_target[tgt]))
    taken = {src for src, _ in named}
    missing: list[str] = []
    for s in sorted(by_source.values(), key=lambda s: s.name):
        if s.of_column or s.name in taken:
            continue
        schemas = sorted({s.name.schema, *schema_map.get(s.name.schema, ())})
        found = [by_target[c] for c in (TableRef(x, s.name.name) for x in schemas) if c in by_target]
        if len(found) == 1:
            pairs.append((s, found[0]))
        elif found:
            warnings.append(
                f"source sequence {s.name} matches several target sequences"
                f" ({', '.join(str(t.name) for t in found)}): not carried; fix: name the pair in {SETTING}"
            )
        else:
            missing.append(str(s.name))
    if missing:
        warnings.append(
            f"source sequences without a target counterpart, not carried: {', '.join(missing)}; fix: create"
            f" each in the target (same schema and name, or a schema the spec maps to) or name the pair in"
            f" {SETTING}"
        )
    out: list[Pair] = []
    for s, t in pairs:
        if t.increment < 0:
            warnings.append(f"target sequence {t.name} descends: left alone")
            continue
        plan = standalone_plan(s, t, margin)
        if not s.readable:
            problems.append(
                f"source sequence {s.name} is not readable by {roles[0]} (its last value is hidden);"
                f" fix: GRANT SELECT ON SEQUENCE {s.name} TO {roles[0]}"
            )
        if not t.settable:
            problems.append(
                f"target sequence {t.name} cannot be set by {roles[1]};"
                f" fix: GRANT USAGE, SELECT, UPDATE ON SEQUENCE {t.name} TO {roles[1]}"
            )
        if plan.value > t.max_value:
            problems.append(
                f"target sequence {t.name} would be set to {plan.value}, past its maximum {t.max_value};"
                f" fix: ALTER SEQUENCE {t.name} AS bigint MAXVALUE ..."
            )
        out.append(Pair(s, t, plan))
    return Pairing(tuple(out), tuple(warnings), tuple(problems))


def schema_map(tables: Iterable[tuple[TableRef, TableRef]]) -> dict[str, frozenset[str]]:
    """Source schema -> the target schemas the spec maps its tables into ((source, target) pairs)."""
    out: dict[str, set[str]] = {}
    for source, target in tables:
        out.setdefault(source.schema, set()).add(target.schema)
    return {k: frozenset(v) for k, v in out.items()}
