"""Catalog: what a PostgreSQL database's tables look like, as plain immutable data.

Invariants:
- A `Catalog` is a frozen snapshot: tables, columns (type, nullability, default,
  length / precision / scale, enum labels), primary key, unique constraints,
  foreign keys and replica identity. Compiler and check are pure over it.
- Types are parsed once into `PgType`, whose `str()` is the canonical spelling
  used everywhere in plans and messages (`varchar(120)`, `numeric(12,2)`,
  `timestamp without time zone`, `text[]`).
- Pure: the live reader is `replicator.pg.catalog.read_catalog`.
- `catalog_from_dict` builds a catalog from a compact dict so unit tests and
  the demo fixtures need no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from replicator.core.model import TableRef

ReplicaIdentity = Literal["default", "full", "index", "nothing"]

_ALIASES: dict[str, str] = {
    "character varying": "varchar",
    "varchar": "varchar",
    "character": "char",
    "char": "char",
    "bpchar": "char",
    "int": "integer",
    "int4": "integer",
    "integer": "integer",
    "int8": "bigint",
    "bigint": "bigint",
    "int2": "smallint",
    "smallint": "smallint",
    "decimal": "numeric",
    "numeric": "numeric",
    "bool": "boolean",
    "boolean": "boolean",
    "float8": "double precision",
    "double precision": "double precision",
    "float4": "real",
    "real": "real",
    "timestamptz": "timestamp with time zone",
    "timestamp with time zone": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "timestamp without time zone": "timestamp without time zone",
    "timetz": "time with time zone",
    "time with time zone": "time with time zone",
    "time": "time without time zone",
    "time without time zone": "time without time zone",
    "varbit": "bit varying",
    "bit varying": "bit varying",
    "bit": "bit",
}

INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}

_TYPE_RE = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_ .\"]*?)\s*"
    r"(?:\(\s*(?P<a>\d+)\s*(?:,\s*(?P<b>-?\d+)\s*)?\))?"
    r"(?P<tail>\s+(?:with|without) time zone)?\s*(?P<array>(?:\[\])*)\s*$"
)


@dataclass(frozen=True, slots=True)
class PgType:
    """A parsed column type. `name` is canonical (see `_ALIASES`); `length` is
    the character limit of varchar/char and the bit count of bit/bit varying,
    `precision`/`scale` of numeric."""

    name: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    is_array: bool = False
    is_enum: bool = False
    # "composite" or "range" for a user-defined composite or range type (of the column, of its
    # domain's base or of its array's elements), as the live catalog says; a spelling cannot.
    user_kind: str | None = None

    @classmethod
    def parse(cls, text: str, *, is_enum: bool = False) -> PgType:
        """Parse a PostgreSQL type spelling (format_type output or DDL alias)."""
        m = _TYPE_RE.match(text)
        if m is None:
            raise ValueError(f"cannot parse type {text!r}")
        name = " ".join(m["name"].lower().split())
        if m["tail"]:
            name = f"{name} {' '.join(m['tail'].split())}"
        name = _ALIASES.get(name, name)
        a = int(m["a"]) if m["a"] is not None else None
        b = int(m["b"]) if m["b"] is not None else None
        is_array = bool(m["array"])
        if name in ("varchar", "char"):
            if b is not None:
                raise ValueError(f"type {text!r}: {name} takes one length")
            length = a if a is not None else (1 if name == "char" else None)
            return cls(name, length=length, is_array=is_array)
        if name in ("bit", "bit varying"):
            if b is not None:
                raise ValueError(f"type {text!r}: {name} takes one length")
            length = a if a is not None else (1 if name == "bit" else None)
            return cls(name, length=length, is_array=is_array)
        if name == "numeric":
            if a is None and b is not None:
                raise ValueError(f"type {text!r}: scale without precision")
            if a is not None and not 1 <= a <= 1000:
                raise ValueError(f"type {text!r}: numeric precision must be 1..1000")
            scale = (b if b is not None else 0) if a is not None else None
            if scale is not None and a is not None and not 0 <= scale <= a:
                raise ValueError(f"type {text!r}: numeric scale must be 0..precision")
            return cls(name, precision=a, scale=scale, is_array=is_array)
        if a is not None and name.startswith(("timestamp", "time")):
            # fractional-second precision: irrelevant for mapping checks
            return cls(name, precision=a, is_array=is_array, is_enum=is_enum)
        if a is not None:
            raise ValueError(f"type {text!r}: unexpected modifier")
        return cls(name, is_array=is_array, is_enum=is_enum)

    @property
    def element(self) -> PgType:
        """The scalar type (itself when not an array)."""
        if not self.is_array:
            return self
        return replace(self, is_array=False)

    def __str__(self) -> str:
        if self.name in ("varchar", "char", "bit", "bit varying") and self.length is not None:
            base = f"{self.name}({self.length})"
        elif self.name == "numeric" and self.precision is not None:
            base = f"numeric({self.precision},{self.scale})"
        else:
            base = self.name
        return base + ("[]" if self.is_array else "")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: PgType
    nullable: bool = True
    has_default: bool = False  # DEFAULT, identity or generated: an INSERT may omit it
    enum_labels: tuple[str, ...] = ()
    generated: bool = False  # GENERATED ALWAYS AS (...) STORED: computed, never written


@dataclass(frozen=True, slots=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    references: TableRef
    ref_columns: tuple[str, ...]
    deferrable: bool = False
    cascades: bool = False  # ON DELETE CASCADE: a delete of the referenced row deletes this one


@dataclass(frozen=True, slots=True)
class Table:
    ref: TableRef
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    replica_identity: ReplicaIdentity = "default"
    deferrable_unique: tuple[tuple[str, ...], ...] = ()  # the unique constraints declared DEFERRABLE
    _by_name: dict[str, Column] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({c.name: c for c in self.columns})

    def column(self, name: str) -> Column | None:
        return self._by_name.get(name)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def is_unique_key(self, cols: Iterable[str]) -> bool:
        """True when `cols` is exactly the primary key or a unique constraint."""
        wanted = frozenset(cols)
        keys = ((self.primary_key,) if self.primary_key else ()) + self.unique
        return any(frozenset(k) == wanted for k in keys)


@dataclass(frozen=True, slots=True)
class Catalog:
    tables: Mapping[TableRef, Table]

    def table(self, ref: TableRef) -> Table | None:
        return self.tables.get(ref)


def catalog_from_dict(spec: Mapping[str, Mapping[str, Any]]) -> Catalog:
    """Build a catalog from plain data, e.g.::

        {"crm.customer": {
            "columns": {"customer_id": "bigint not null", "email": "text not null",
                        "is_deleted": "boolean not null default",
                        "tier": "enum(bronze,silver) not null"},
            "pk": ["customer_id"], "unique": [["email"]], "deferrable_unique": [["email"]],
            "fks": [{"columns": ["x"], "references": "crm.other", "ref_columns": ["id"],
                     "cascades": true}],
            "replica_identity": "default"}}

    Column strings are `<type> [not null] [default | generated]` (generated: a stored generated
    column); `enum(a,b,...)` declares an enum type with its labels. Primary key columns are
    implicitly NOT NULL.
    """
    tables: dict[TableRef, Table] = {}
    for dotted, t in spec.items():
        ref = TableRef.parse(dotted)
        pk = tuple(t.get("pk", ()))
        cols: list[Column] = []
        for name, text in t["columns"].items():
            cols.append(_column_from_text(name, text, in_pk=name in pk))
        fks = tuple(
            ForeignKey(
                name=fk.get("name", f"{ref.name}_{'_'.join(fk['columns'])}_fkey"),
                columns=tuple(fk["columns"]),
                references=TableRef.parse(fk["references"]),
                ref_columns=tuple(fk["ref_columns"]),
                deferrable=bool(fk.get("deferrable", False)),
                cascades=bool(fk.get("cascades", False)),
            )
            for fk in t.get("fks", ())
        )
        tables[ref] = Table(
            ref=ref,
            columns=tuple(cols),
            primary_key=pk,
            unique=tuple(tuple(u) for u in t.get("unique", ())),
            foreign_keys=fks,
            replica_identity=t.get("replica_identity", "default"),
            deferrable_unique=tuple(tuple(u) for u in t.get("deferrable_unique", ())),
        )
    return Catalog(tables)


def _column_from_text(name: str, text: str, *, in_pk: bool) -> Column:
    words = text.strip()
    low = words.lower()
    generated = low.endswith(" generated")
    if generated:
        words = words[: -len(" generated")].rstrip()
        low = words.lower()
    has_default = generated or low.endswith(" default")
    if has_default and low.endswith(" default"):
        words = words[: -len(" default")].rstrip()
        low = words.lower()
    not_null = low.endswith(" not null")
    if not_null:
        words = words[: -len(" not null")].rstrip()
    labels: tuple[str, ...] = ()
    m = re.fullmatch(r"enum\((.*)\)(\[\])?", words)
    if m:
        labels = tuple(x.strip() for x in m[1].split(","))
        typ = PgType("enum", is_enum=True, is_array=bool(m[2]))
    else:
        typ = PgType.parse(words)
    return Column(
        name,
        typ,
        nullable=not (not_null or in_pk),
        has_default=has_default,
        enum_labels=labels,
        generated=generated,
    )


# --- live reader -------------------------------------------------------------


def parse_or_opaque(text: str) -> PgType:
    try:
        return PgType.parse(text)
    except ValueError:
        # A type we do not model (domain, composite, ...): keep its spelling.
        return PgType(text, is_array=text.endswith("[]"))
