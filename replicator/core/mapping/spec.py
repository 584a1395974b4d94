"""The mapping spec: its format (pydantic models) and safe loading with line numbers.

Invariants:
- YAML is parsed by a SafeLoader subclass that refuses every explicit tag
  (`!!python/object...`, `!!str`, `!foo`), anchors/aliases and duplicate keys,
  and resolves only YAML 1.2 core scalars (`NO`, `on`, `1:30`, `2024-01-01`
  stay strings). Nothing in a spec is ever evaluated.
- Unknown keys are errors (`extra="forbid"`); every problem is reported as
  `file:line: rule_id: message; fix: ...`, all problems at once (`SpecError`).
- Identifiers are non-empty, NUL-free and at most 63 bytes of UTF-8: PostgreSQL
  would silently truncate longer names, so two long names could collide.
- Every rule has a stable id: the table `id`, `<table id>.<target column>` for
  a column (or its explicit `id`), `<table id>.key|filter|delete|truncate`,
  `<table id>.delete.<column>` for soft-delete assignments,
  `<table id>.on_schema_change` for what a source schema change does
  (`stop`, `ignore_new_columns` or `record`; `core.schema_change`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    model_validator,
)

from replicator.core.errors import ReplicatorError
from replicator.core.mapping.transforms import ROUNDING, parse_json_path
from replicator.core.model import TableRef

MAX_IDENTIFIER_BYTES = 63
Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a spec, located in its file and tied to a rule id."""

    file: str
    line: int
    rule_id: str
    message: str
    fix: str = ""
    severity: Severity = "error"
    table: str = ""  # the id of the table rule it is about ("" for the spec as a whole)

    def __str__(self) -> str:
        tail = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.file}:{self.line}: {self.rule_id}: {self.message}{tail}"


class SpecError(ReplicatorError):
    """A spec that cannot be used; `str()` is one line per problem."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


# --- field types ---------------------------------------------------------------


def check_identifier(name: str) -> str:
    if not name:
        raise ValueError("identifier must not be empty")
    if "\x00" in name:
        raise ValueError("identifier must not contain NUL")
    size = len(name.encode("utf-8"))
    if size > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"identifier {name[:20]!r}... is {size} bytes; PostgreSQL would truncate it to "
            f"{MAX_IDENTIFIER_BYTES} bytes (names could collide): use a shorter name"
        )
    return name


def _table_ref(value: Any) -> Any:
    if isinstance(value, str):
        if value.count(".") != 1:
            raise ValueError(
                f"table {value!r} must be written schema.table; for names containing '.' "
                "use {schema: ..., table: ...}"
            )
        ref = TableRef.parse(value)
    elif isinstance(value, dict) and set(value) == {"schema", "table"}:
        ref = TableRef(str(value["schema"]), str(value["table"]))
    else:
        raise ValueError("table must be 'schema.table' or {schema: ..., table: ...}")
    check_identifier(ref.schema)
    check_identifier(ref.name)
    return ref


_RULE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*")


def _rule_id(value: str) -> str:
    if not _RULE_ID.fullmatch(value):
        raise ValueError(f"rule id {value!r} must match {_RULE_ID.pattern}")
    return value


Ident = Annotated[str, AfterValidator(check_identifier)]
RuleId = Annotated[str, AfterValidator(_rule_id)]
TableName = Annotated[TableRef, BeforeValidator(_table_ref)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


# --- transforms -----------------------------------------------------------------


class Trim(_Model):
    trim: Literal[True]


class Nfc(_Model):
    nfc: Literal[True]


class Case(_Model):
    case: Literal["upper", "lower"]


class TimezoneArgs(_Model):
    """`to`: an aware timestamp (timestamptz) converted to zone `to`, with `naive: true` its wall
    clock there (a timestamp); `ambiguous` is `reject` or `keep` for a wall time that occurs
    twice. `assume`: a naive timestamp read as wall clock time in zone `assume`, giving an
    instant (timestamptz); `nonexistent` (a wall time skipped by a DST gap) and `ambiguous` (one
    that occurs twice) are `reject` (the row becomes an error record), `earlier` or `later`
    (the earlier or later of the two instants the wall time could mean)."""

    to: str | None = None
    assume: str | None = None
    naive: bool = False
    ambiguous: Literal["reject", "keep", "earlier", "later"] = "reject"
    nonexistent: Literal["reject", "earlier", "later"] | None = None

    @model_validator(mode="after")
    def _one_direction(self) -> TimezoneArgs:
        if (self.to is None) == (self.assume is None):
            raise ValueError(
                "timezone takes exactly one of to (timestamptz -> zone) or assume (timestamp -> timestamptz)"
            )
        if self.assume is not None:
            if self.naive:
                raise ValueError("timezone.naive goes with to, not assume (assume gives a timestamptz)")
            if self.ambiguous == "keep":
                raise ValueError("timezone.assume takes ambiguous: reject, earlier or later")
        else:
            if self.nonexistent is not None:
                raise ValueError(
                    "timezone.nonexistent goes with assume (only a wall time can fall in a DST gap)"
                )
            if self.ambiguous in ("earlier", "later"):
                raise ValueError("timezone.to takes ambiguous: reject or keep")
        return self


class Timezone(_Model):
    timezone: TimezoneArgs


class Hash(_Model):
    hash: Literal["sha256"]


class MaskArgs(_Model):
    keep_last: int = Field(ge=0)
    char: str = Field("*", min_length=1, max_length=1)


class Mask(_Model):
    mask: MaskArgs


def _json_path(value: str) -> str:
    parse_json_path(value)
    return value


class JsonPath(_Model):
    json_path: Annotated[str, AfterValidator(_json_path)]


def _decimal_text(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("write decimal.by as a quoted string (floats are inexact)")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class DecimalArgs(_Model):
    op: Literal["mul", "div", "add", "sub"]
    by: Annotated[str, BeforeValidator(_decimal_text)]
    scale: int = Field(ge=0, le=1000)
    rounding: Literal["half_even", "half_up", "half_down", "up", "down", "ceiling", "floor"] | None = None

    @model_validator(mode="after")
    def _by_is_number(self) -> DecimalArgs:
        try:
            d = Decimal(self.by)
        except InvalidOperation as exc:
            raise ValueError(f"decimal.by {self.by!r} is not a number") from exc
        if not d.is_finite() or (self.op == "div" and d == 0):
            raise ValueError("decimal.by must be finite (and non-zero for div)")
        assert self.rounding is None or self.rounding in ROUNDING
        return self


class DecimalT(_Model):
    decimal: DecimalArgs


_TRANSFORM_NAMES = ("trim", "nfc", "case", "timezone", "hash", "mask", "json_path", "decimal")


def _bare_transform(value: Any) -> Any:
    if isinstance(value, str) and value in ("trim", "nfc"):
        return {value: True}
    return value


def _transform_tag(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return key if key in _TRANSFORM_NAMES else None
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


Transform = Annotated[
    Annotated[Trim, Tag("trim")]
    | Annotated[Nfc, Tag("nfc")]
    | Annotated[Case, Tag("case")]
    | Annotated[Timezone, Tag("timezone")]
    | Annotated[Hash, Tag("hash")]
    | Annotated[Mask, Tag("mask")]
    | Annotated[JsonPath, Tag("json_path")]
    | Annotated[DecimalT, Tag("decimal")],
    Discriminator(
        _transform_tag,
        custom_error_type="unknown_transform",
        custom_error_message="unknown transform; use one of " + ", ".join(_TRANSFORM_NAMES),
    ),
    BeforeValidator(_bare_transform),
]


# --- column rules -----------------------------------------------------------------


class ColumnRef(_Model):
    column: Ident


class Split(_Model):
    from_: Ident = Field(alias="from")
    sep: str = Field(min_length=1)
    index: int
    maxsplit: int | None = Field(None, ge=1)


def _null_policy(value: Any) -> Any:
    return "null" if value is None else value  # `unmapped: null` (YAML null) means "null"


class Cast(_Model):
    """Check and convert the value to the target column's type. `on_narrowing`: a value that
    does not fit (too long, too many digits, out of range) is rejected, or truncated (strings).
    `on_invalid`: a value that is not of the type at all (text that does not parse as a date,
    uuid, boolean, number, ...) is rejected (an error record naming the rule) or becomes null."""

    type: str | None = None  # defaults to the target column's type
    on_narrowing: Literal["reject", "truncate"] | None = None
    on_invalid: Annotated[Literal["reject", "null"] | None, BeforeValidator(_null_policy)] = None

    @model_validator(mode="after")
    def _a_policy(self) -> Cast:
        if self.on_narrowing is None and self.on_invalid is None:
            raise ValueError(
                "a cast declares on_narrowing (reject | truncate) and/or on_invalid (reject | null)"
            )
        return self


class ConstRef(_Model):
    const: Any


JsonMember = ColumnRef | ConstRef


class Lookup(_Model):
    """A target value read from a table in the target at apply time: the `take` column of the
    row of `table` whose `match` columns equal the source columns (`{lookup column: source
    column}`). A null source column gives null without a lookup; `on_missing` decides a
    non-null value without a row: `reject` (an error record naming the rule) or `null`."""

    table: TableName
    match: dict[Ident, Ident] = Field(min_length=1)
    take: Ident
    on_missing: Annotated[Literal["reject", "null"], BeforeValidator(_null_policy)]


class UnmappedDefault(_Model):
    default: Any


Unmapped = Literal["reject", "null", "keep"] | UnmappedDefault


_SOURCES = ("from_", "const", "concat", "split", "json_object", "lookup", "source_ts")


class ColumnRule(_Model):
    """One target column: a value source, then transforms, value_map, default, cast."""

    id: RuleId | None = None
    from_: Ident | None = Field(None, alias="from")
    const: Any = None
    concat: list[str | ColumnRef] | None = Field(None, min_length=1)
    split: Split | None = None
    json_object: dict[str, JsonMember] | None = Field(None, min_length=1)
    lookup: Lookup | None = None
    source_ts: Literal[True] | None = None  # only in delete.set
    transforms: list[Transform] = []
    value_map: dict[Any, Any] | None = None
    unmapped: Annotated[Unmapped | None, BeforeValidator(_null_policy)] = None
    default: Any = None
    cast: Cast | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ColumnRule:
        given = [k for k in _SOURCES if k in self.model_fields_set]
        if len(given) != 1:
            names = [g.rstrip("_") for g in given]
            raise ValueError(
                "a column needs exactly one value source (from, const, concat, split, json_object, "
                f"lookup), got {names or 'none'}"
            )
        if (self.value_map is None) != (self.unmapped is None):
            raise ValueError("value_map and unmapped go together: declare both")
        if self.lookup is not None and (
            self.transforms or self.value_map is not None or self.cast is not None or self.has_default
        ):
            raise ValueError(
                "a lookup takes no transforms, value_map, default or cast (its value is read from "
                "the target at apply time)"
            )
        return self

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set

    @property
    def is_const(self) -> bool:
        return "const" in self.model_fields_set

    def source_columns(self) -> tuple[str, ...]:
        """Source columns this rule reads, in first-use order."""
        if self.from_ is not None:
            return (self.from_,)
        if self.split is not None:
            return (self.split.from_,)
        if self.concat is not None:
            out: list[str] = []
            for part in self.concat:
                if isinstance(part, ColumnRef) and part.column not in out:
                    out.append(part.column)
            return tuple(out)
        if self.json_object is not None:
            return tuple(
                dict.fromkeys(m.column for m in self.json_object.values() if isinstance(m, ColumnRef))
            )
        if self.lookup is not None:
            return tuple(dict.fromkeys(self.lookup.match.values()))
        return ()


def _set_shorthand(value: Any) -> Any:
    return value if isinstance(value, dict) else {"const": value}


SetRule = Annotated[ColumnRule, BeforeValidator(_set_shorthand)]


# --- predicates -------------------------------------------------------------------


class Compare(_Model):
    column: Ident
    op: Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "is_null", "not_null"]
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Compare:
        has = "value" in self.model_fields_set
        if self.op in ("is_null", "not_null"):
            if has:
                raise ValueError(f"op {self.op} takes no value")
        elif not has:
            raise ValueError(f"op {self.op} needs a value")
        elif self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op} needs a list value")
        elif isinstance(self.value, dict | list) and self.op not in ("in", "not_in"):
            raise ValueError(f"op {self.op} needs a scalar value")
        return self


class AllOf(_Model):
    all: list[Predicate] = Field(min_length=1)


class AnyOf(_Model):
    any: list[Predicate] = Field(min_length=1)


class NotOf(_Model):
    not_: Predicate = Field(alias="not")


def _predicate_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        return "column"
    if isinstance(value, AllOf):
        return "all"
    if isinstance(value, AnyOf):
        return "any"
    if isinstance(value, NotOf):
        return "not"
    return "column" if isinstance(value, Compare) else None


Predicate = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[Compare, Tag("column")],
    Discriminator(
        _predicate_tag,
        custom_error_type="bad_predicate",
        custom_error_message="a filter is {all: [...]}, {any: [...]}, {not: ...} or "
        "{column: c, op: o, value: v}",
    ),
]


# --- tables -------------------------------------------------------------------------


class DeleteRule(_Model):
    policy: Literal["hard", "soft", "ignore"]
    set: dict[Ident, SetRule] = {}

    @model_validator(mode="after")
    def _set_iff_soft(self) -> DeleteRule:
        if (self.policy == "soft") != bool(self.set):
            raise ValueError("delete.set is required for policy soft and only allowed there")
        return self


class TruncateRule(_Model):
    policy: Literal["truncate", "delete", "ignore", "error"]


SchemaChange = Literal["stop", "ignore_new_columns", "record"]


class TableRule(_Model):
    id: RuleId
    source: TableName
    target: TableName
    topic: str | None = None  # default: <topic_prefix>.<schema>.<table>
    key: dict[Ident, Ident] = Field(min_length=1)
    filter: Predicate | None = None
    delete: DeleteRule
    truncate: TruncateRule
    unmapped_source_columns: Literal["fail", "ignore"] | None = None
    ignore_source_columns: list[Ident] = []
    # When the source table's columns stop matching this rule (added, dropped, renamed, retyped):
    # stop its partitions before the first such event (default), ignore new nullable columns, or
    # make error records of the events (record). See replicator/core/schema_change.py.
    on_schema_change: SchemaChange | None = None
    # Rows only in the target are the application's own (written there directly, dual writes):
    # `verify` lists them apart and the cutover gate accepts them.
    target_owned_rows: bool = False
    columns: dict[Ident, ColumnRule] = Field(min_length=1)

    def column_rule_id(self, target: str) -> str:
        rule = self.columns.get(target)
        if rule is not None and rule.id is not None:
            return rule.id
        return f"{self.id}.{target}"

    @property
    def filter_rule_id(self) -> str:
        return f"{self.id}.filter"

    @property
    def delete_rule_id(self) -> str:
        return f"{self.id}.delete"

    @property
    def truncate_rule_id(self) -> str:
        return f"{self.id}.truncate"

    @property
    def key_rule_id(self) -> str:
        return f"{self.id}.key"

    @property
    def schema_change_rule_id(self) -> str:
        return f"{self.id}.on_schema_change"


class Defaults(_Model):
    unmapped_source_columns: Literal["fail", "ignore"] = "fail"
    on_schema_change: SchemaChange = "stop"


class Capture(_Model):
    """Where the mapped topics come from: the Debezium connector (Kafka Connect name) and its
    signal table in the source (`drain` writes its fence row there). Settings
    (`REPLICATOR_CONNECTOR`, `REPLICATOR_SIGNAL_TABLE`) and flags override these."""

    connector: str | None = Field(None, min_length=1)
    signal_table: TableName | None = None


class Spec(_Model):
    version: Literal[1]
    topic_prefix: str = Field(min_length=1)
    capture: Capture = Capture()
    defaults: Defaults = Defaults()
    tables: list[TableRule] = Field(min_length=1)

    _file: str = PrivateAttr("<spec>")
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)

    @property
    def file(self) -> str:
        return self._file

    def line(self, *path: str | int) -> int:
        """Line (1-based) of the deepest recorded node on `path`; 0 if unknown."""
        return _line_for(self._lines, path)

    def problem(
        self, path: tuple[str | int, ...], rule_id: str, message: str, fix: str, severity: Severity = "error"
    ) -> Problem:
        return Problem(self._file, self.line(*path), rule_id, message, fix, severity, self.table_of(path))

    def unmapped_policy(self, table: TableRule) -> Literal["fail", "ignore"]:
        return table.unmapped_source_columns or self.defaults.unmapped_source_columns

    def schema_change_policy(self, table: TableRule) -> SchemaChange:
        return table.on_schema_change or self.defaults.on_schema_change

    def target_schemas(self) -> list[str]:
        """The target schemas whose catalog the spec needs: its target tables' and its lookup
        tables' (a lookup table may sit in a schema no rule writes)."""
        lookups = {
            c.lookup.table.schema for t in self.tables for c in t.columns.values() if c.lookup is not None
        }
        return sorted({t.target.schema for t in self.tables} | lookups)

    def table_of(self, path: tuple[str | int, ...]) -> str:
        """The id of the table rule a spec path lies in ("" outside the tables)."""
        if len(path) >= 2 and path[0] == "tables" and isinstance(path[1], int) and path[1] < len(self.tables):
            return self.tables[path[1]].id
        return ""


def _line_for(lines: Mapping[tuple[str | int, ...], int], path: tuple[Any, ...]) -> int:
    best = lines.get((), 0)
    cur: tuple[Any, ...] = ()
    for step in path:
        nxt = (*cur, step)
        if nxt in lines:
            cur = nxt
            best = lines[nxt]
        # else: a pydantic union tag or alias-less step; skip it
    return best


# --- YAML ----------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader refusing tags, anchors and aliases; YAML 1.2 core scalars only."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag
        not in (
            "tag:yaml.org,2002:bool",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
            "tag:yaml.org,2002:timestamp",
        )
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
# YAML 1.2 core: `010` is ten (PyYAML's 1.1 constructor reads it as octal, and `08` not at all).
_Loader.add_constructor(
    "tag:yaml.org,2002:int",
    lambda loader, node: int(str(loader.construct_scalar(node)), 10),  # type: ignore[arg-type]
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


class _YamlRefused(Exception):
    def __init__(self, line: int, message: str, fix: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.fix = fix


def _to_python(
    loader: _Loader, node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise _YamlRefused(
                    knode.start_mark.line + 1, "mapping keys must be scalars", "write a plain key"
                )
            key = loader.construct_object(knode)
            if isinstance(key, float) or key in out:
                what = "duplicate key" if key in out else "float key"
                raise _YamlRefused(
                    knode.start_mark.line + 1, f"{what} {key!r}", "each key once, as text or integer"
                )
            out[key] = _to_python(loader, vnode, (*path, key), lines)
            lines[(*path, key)] = knode.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(loader, item, (*path, i), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node)


def _check_events(text: str) -> None:
    """Refuse explicit tags, anchors and aliases before building anything."""
    for event in yaml.parse(text, Loader=_Loader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _YamlRefused(
                line, "YAML anchors and aliases are not allowed", "repeat the value explicitly"
            )
        tag = getattr(event, "tag", None)
        if tag is not None and isinstance(event, yaml.NodeEvent):
            raise _YamlRefused(
                line, f"YAML tag {tag!r} is not allowed", "remove the tag; specs hold plain data only"
            )


def parse_yaml(text: str, file: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Plain data and a path -> line map; raises SpecError on refused YAML."""
    lines: dict[tuple[Any, ...], int] = {}
    try:
        _check_events(text)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            data = None if node is None else _to_python(loader, node, (), lines)
        finally:
            loader.dispose()
    except _YamlRefused as exc:
        raise SpecError([Problem(file, exc.line, "spec", exc.message, exc.fix)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise SpecError(
            [Problem(file, line, "spec", f"invalid YAML: {exc.problem}", "fix the YAML syntax")]
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(file, 0, "spec", f"invalid YAML: {exc}", "fix the YAML syntax")]) from None
    return data, lines


# --- loading -------------------------------------------------------------------------


def _rule_id_for(data: Any, loc: tuple[Any, ...]) -> str:
    if len(loc) < 2 or loc[0] != "tables" or not isinstance(loc[1], int):
        return "spec"
    tables = data.get("tables") if isinstance(data, dict) else None
    raw = tables[loc[1]] if isinstance(tables, list) and loc[1] < len(tables) else None
    tid = raw.get("id") if isinstance(raw, dict) else None
    tid = tid if isinstance(tid, str) else f"tables[{loc[1]}]"
    if len(loc) >= 4 and loc[2] == "columns":
        cols = raw.get("columns") if isinstance(raw, dict) else None
        col = cols.get(loc[3]) if isinstance(cols, dict) else None
        if isinstance(col, dict) and isinstance(col.get("id"), str):
            return str(col["id"])
        return f"{tid}.{loc[3]}"
    if len(loc) >= 3 and loc[2] == "on_schema_change":
        return f"{tid}.on_schema_change"
    if len(loc) >= 3 and loc[2] in ("filter", "delete", "truncate", "key"):
        if loc[2] == "delete" and len(loc) >= 5 and loc[3] == "set":
            return f"{tid}.delete.{loc[4]}"
        return f"{tid}.{loc[2]}"
    return tid


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    loc = err["loc"]
    where = ".".join(str(x) for x in loc) or "spec"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r} at {where}", "remove it or correct its spelling"
    if kind == "missing":
        return f"missing required key {loc[-1]!r} at {where}", f"add {loc[-1]}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{msg} (at {where})", "see the spec format in docs/mapping-spec.md"


def spec_from_data(data: Any, lines: dict[tuple[Any, ...], int], file: str) -> Spec:
    """Validate plain data into a Spec; raises SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(
            [Problem(file, 1, "spec", "a spec must be a YAML mapping", "start with 'version: 1'")]
        )
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg, fix = _describe(err)
            problems.append(Problem(file, _line_for(lines, loc), _rule_id_for(data, loc), msg, fix))
        raise SpecError(sorted(problems, key=lambda p: p.line)) from None
    spec._file = file
    spec._lines = lines
    problems = semantic_problems(spec)
    if problems:
        raise SpecError(problems)
    return spec


def load_spec_text(text: str, file: str = "<spec>") -> Spec:
    data, lines = parse_yaml(text, file)
    return spec_from_data(data, lines, file)


def load_spec(path: str | Path) -> Spec:
    """Load and validate a spec file; raises SpecError (all problems, with lines)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            [
                Problem(
                    str(p), 0, "spec", f"cannot read spec: {exc}", "check the path and that the file is UTF-8"
                )
            ]
        ) from None
    return load_spec_text(text, str(p))


# --- catalog-free semantic checks --------------------------------------------------


def semantic_problems(spec: Spec) -> list[Problem]:
    """Problems visible without any catalog: ids, keys, sources, ignores."""
    problems: list[Problem] = []
    seen_ids: dict[str, int] = {}
    seen_targets: dict[TableRef, str] = {}

    def claim(rule_id: str, path: tuple[Any, ...]) -> None:
        if rule_id in seen_ids:
            problems.append(
                spec.problem(
                    path,
                    rule_id,
                    f"rule id {rule_id!r} is already used at line {seen_ids[rule_id]}",
                    "give every rule a unique id",
                )
            )
        else:
            seen_ids[rule_id] = spec.line(*path)

    for i, t in enumerate(spec.tables):
        tp: tuple[Any, ...] = ("tables", i)
        claim(t.id, (*tp, "id"))
        if t.target in seen_targets:
            problems.append(
                spec.problem(
                    (*tp, "target"),
                    t.id,
                    f"target {t.target} is already written by rule {seen_targets[t.target]!r}",
                    "map each target table from one table rule",
                )
            )
        seen_targets.setdefault(t.target, t.id)
        for col in t.columns:
            claim(t.column_rule_id(col), (*tp, "columns", col))
        for col, rule in t.columns.items():
            if rule.source_ts:
                problems.append(
                    spec.problem(
                        (*tp, "columns", col),
                        t.column_rule_id(col),
                        "source_ts is only available in delete.set",
                        "use from/const/concat/split",
                    )
                )
        for col, rule in t.delete.set.items():
            claim(f"{t.id}.delete.{col}", (*tp, "delete", "set", col))
            if rule.source_ts and (rule.transforms or rule.value_map is not None):
                problems.append(
                    spec.problem(
                        (*tp, "delete", "set", col),
                        f"{t.id}.delete.{col}",
                        "source_ts takes no transforms or value_map",
                        "remove them",
                    )
                )
        for target_key, source_key in t.key.items():
            key_rule = t.columns.get(target_key)
            path = (*tp, "key", target_key)
            if key_rule is None:
                continue  # the compiler adds {from: source_key}
            if key_rule.from_ != source_key:
                problems.append(
                    spec.problem(
                        path,
                        t.key_rule_id,
                        f"key column {target_key!r} must come from source key {source_key!r}, "
                        f"but its rule reads {list(key_rule.source_columns())}",
                        f"write {target_key}: {{from: {source_key}}} or drop it (the key implies it)",
                    )
                )
            elif key_rule.value_map is not None or key_rule.has_default or key_rule.lookup is not None:
                problems.append(
                    spec.problem(
                        path,
                        t.key_rule_id,
                        f"key column {target_key!r} must not use value_map, default or lookup",
                        "map the key 1:1 (a cast is fine)",
                    )
                )
        mapped = {c for rule in t.columns.values() for c in rule.source_columns()}
        mapped |= set(t.key.values())
        for j, ignored in enumerate(t.ignore_source_columns):
            if ignored in mapped:
                problems.append(
                    spec.problem(
                        (*tp, "ignore_source_columns", j),
                        t.id,
                        f"source column {ignored!r} is both mapped and ignored",
                        "remove it from ignore_source_columns",
                    )
                )
    return problems
