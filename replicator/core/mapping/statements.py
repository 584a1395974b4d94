"""Prebuilt SQL for one target table, composed only with psycopg.sql.

Invariants:
- Every name goes through `sql.Identifier`; no SQL text is built from
  identifiers with string formatting. Hostile names (quotes, `;`, `%s`, `{}`,
  MixedCase, reserved words) are quoted, never interpreted.
- The statements take no query parameters: values travel through COPY into the
  stage table. Execute them with `params=None` (psycopg would otherwise read a
  `%s` inside a quoted identifier as a placeholder).
- `cols`-parameterised builders are memoized per `cols` tuple, so the hot loop
  never rebuilds SQL; `cols` must be target columns known to the plan, and
  every builder that writes rows requires the key columns.
- The stage is a per-session TEMP table (emptied before each use, not at commit) named
  `stage_<hash of the table rule id>`: unique per rule, always < 63 bytes. It
  carries a row number column (`ROW_NUMBER`). A builder's `within` picks the
  staged rows a statement reads: all (None); `ONE_ROW`, the one whose ctid is
  the PL/pgSQL variable `ROW_VARIABLE` (inside the server-side loop that
  isolates bad rows); or `(first, last)`, the rows numbered first..last (a
  bisection chunk of a batch staged once; these are not memoized).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from psycopg import sql

from replicator.core.model import TableRef

ROW_NUMBER = "__replicator_row"  # the stage's row number column (a target column of that name is refused)
ROW_VARIABLE = "replicator_row_"  # the loop variable (a stage row's ctid) of the isolation function


def stage_name(rule_id: str) -> str:
    """Safe, unique, short stage table name for a table rule id."""
    return "stage_" + hashlib.sha256(rule_id.encode("utf-8")).hexdigest()[:16]


def _ids(names: tuple[str, ...], prefix: str | None = None) -> sql.Composed:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


def _row(
    names: tuple[str, ...], prefix: sql.Composable, as_text: frozenset[str] = frozenset()
) -> sql.Composable:
    """`(p.a, p.b, ...)`; columns in `as_text` are compared by their text (`p.a::text`): types
    such as json and point have no equality operator."""
    return sql.SQL("({})").format(
        sql.SQL(", ").join(
            sql.SQL("{}.{}" + ("::text" if n in as_text else "")).format(prefix, sql.Identifier(n))
            for n in names
        )
    )


#: Types without an equality operator: a changed-value check compares their text instead.
NO_EQUALITY = frozenset({"json", "point", "line", "lseg", "box", "path", "polygon", "circle", "xml"})


_T = sql.Identifier("t")
_S = sql.Identifier("s")


#: Which staged rows a statement reads: all (None), the one whose ctid is `ROW_VARIABLE` ("one"),
#: or those numbered first..last.
ONE_ROW: Literal["one"] = "one"
Within = tuple[int, int] | Literal["one"] | None


def _restrict(within: Within, joiner: str) -> sql.Composable:
    """The predicate that restricts a statement to the staged rows `within` selects."""
    if within is None:
        return sql.SQL("")
    if isinstance(within, str):  # ONE_ROW
        return sql.SQL(joiner) + sql.SQL("s.ctid = {}").format(sql.Identifier(ROW_VARIABLE))
    first, last = within
    return sql.SQL(joiner) + sql.SQL("s.{} BETWEEN {} AND {}").format(
        sql.Identifier(ROW_NUMBER), sql.Literal(int(first)), sql.Literal(int(last))
    )


def _key_join(key: tuple[str, ...], left: str, right: str) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k)) for k in key
    )


def _assign(cols: tuple[str, ...], src: sql.Composable) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} = {}.{}").format(sql.Identifier(c), src, sql.Identifier(c)) for c in cols
    )


@dataclass(frozen=True, slots=True)
class TableStatements:
    """SQL for one target table and its stage. `columns` are every target column
    the plan may write (row columns and soft-delete columns), in target order."""

    target: TableRef
    key: tuple[str, ...]
    columns: tuple[str, ...]
    stage: str
    text_compared: frozenset[str] = frozenset()  # columns of a type in NO_EQUALITY
    _cache: dict[tuple[str, tuple[str, ...]], sql.Composed] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError(f"{self.target}: a target key is required")
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"{self.target}: key columns {missing} not among columns")
        if ROW_NUMBER in self.columns:
            raise ValueError(f"{self.target}: a column named {ROW_NUMBER!r} is reserved by the replicator")

    @property
    def _target(self) -> sql.Identifier:
        return sql.Identifier(self.target.schema, self.target.name)

    @property
    def _stage(self) -> sql.Identifier:
        return sql.Identifier(self.stage)

    def _memo(
        self,
        kind: str,
        cols: tuple[str, ...],
        build: Callable[[tuple[str, ...]], sql.Composed],
        *,
        need_key: bool = True,
        cached: bool = True,
    ) -> sql.Composed:
        hit = self._cache.get((kind, cols)) if cached else None
        if hit is not None:
            return hit
        unknown = [c for c in cols if c not in self.columns]
        if unknown or len(set(cols)) != len(cols) or not cols:
            raise ValueError(f"{self.target}: bad column list {cols!r} (unknown: {unknown})")
        if need_key and not set(self.key) <= set(cols):
            raise ValueError(f"{self.target}: column list {cols!r} lacks key {self.key!r}")
        stmt = build(cols)
        if cached:
            self._cache[(kind, cols)] = stmt
        return stmt

    # -- fixed statements ----------------------------------------------------
    @property
    def create_stage(self) -> sql.Composed:
        return sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {}, NULL::int AS {} FROM {} WITH NO DATA"
        ).format(self._stage, _ids(self.columns), sql.Identifier(ROW_NUMBER), self._target)

    @property
    def delete_keys(self) -> sql.Composed:
        return self.delete_keys_within(None)

    def delete_keys_within(self, within: Within) -> sql.Composed:
        """`delete_keys` for the staged rows `within` selects."""
        return self._memo(
            f"delete_{within}",
            self.key,
            lambda c: sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}{}").format(
                self._target, self._stage, _key_join(c, "t", "s"), _restrict(within, " AND ")
            ),
            cached=not isinstance(within, tuple),
        )

    @property
    def truncate(self) -> sql.Composed:
        return sql.SQL("TRUNCATE {}").format(self._target)

    @property
    def delete_all(self) -> sql.Composed:
        return sql.SQL("DELETE FROM {}").format(self._target)

    @property
    def all_keys(self) -> sql.Composed:
        """The key of every target row (a truncate that spares the rows written after it)."""
        return sql.SQL("SELECT {} FROM {}").format(_ids(self.key), self._target)

    # -- memoized, per column list -------------------------------------------
    def copy_stage(self, cols: tuple[str, ...], numbered: bool = False) -> sql.Composed:
        """COPY into the stage; `numbered`: each row ends with its row number (1, 2, ...)."""
        return self._memo(
            "copy_numbered" if numbered else "copy",
            cols,
            lambda c: sql.SQL("COPY {} ({}) FROM STDIN").format(
                self._stage, _ids((*c, ROW_NUMBER) if numbered else c)
            ),
            need_key=False,
        )

    def upsert(self, cols: tuple[str, ...], within: Within = None) -> sql.Composed:
        """INSERT from the stage rows `within` selects; on key conflict update only rows that
        change."""

        def build(c: tuple[str, ...]) -> sql.Composed:
            # OVERRIDING SYSTEM VALUE: the source's value of a GENERATED ALWAYS identity column
            # is written as it is (no effect on other columns and tables)
            head = sql.SQL(
                "INSERT INTO {} AS t ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} AS s{} ON CONFLICT ({}) "
            ).format(
                self._target, _ids(c), _ids(c), self._stage, _restrict(within, " WHERE "), _ids(self.key)
            )
            rest = tuple(x for x in c if x not in self.key)
            if not rest:
                return head + sql.SQL("DO NOTHING")
            excluded = sql.SQL("EXCLUDED")
            return head + sql.SQL("DO UPDATE SET {} WHERE {} IS DISTINCT FROM {}").format(
                _assign(rest, excluded),
                _row(rest, _T, self.text_compared),
                _row(rest, excluded, self.text_compared),
            )

        return self._memo(f"upsert_{within}", cols, build, cached=not isinstance(within, tuple))

    def update_only(self, cols: tuple[str, ...], within: Within = None) -> sql.Composed:
        """UPDATE existing rows from the stage rows `within` selects (some columns UNAVAILABLE)."""
        return self._memo(
            f"update_{within}", cols, lambda c: self._update(c, within), cached=not isinstance(within, tuple)
        )

    def soft_delete(self, cols: tuple[str, ...], within: Within = None) -> sql.Composed:
        """UPDATE the soft-delete columns of existing rows from the stage rows `within` selects."""
        return self._memo(
            f"soft_delete_{within}",
            cols,
            lambda c: self._update(c, within),
            cached=not isinstance(within, tuple),
        )

    def _update(self, c: tuple[str, ...], within: Within) -> sql.Composed:
        rest = tuple(x for x in c if x not in self.key)
        if not rest:
            raise ValueError(f"{self.target}: nothing to update besides the key")
        return sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE {} AND {} IS DISTINCT FROM {}{}").format(
            self._target,
            _assign(rest, sql.Identifier("s")),
            self._stage,
            _key_join(self.key, "t", "s"),
            _row(rest, _T, self.text_compared),
            _row(rest, _S, self.text_compared),
            _restrict(within, " AND "),
        )

    def select_keys(self, cols: tuple[str, ...]) -> sql.Composed:
        """Current target values of the staged keys (for shadow-mode diffs)."""

        def build(c: tuple[str, ...]) -> sql.Composed:
            rest = tuple(x for x in c if x not in self.key)
            return sql.SQL("SELECT {} FROM {} AS t JOIN {} AS s ON {}").format(
                _ids(self.key + rest, "t"), self._target, self._stage, _key_join(self.key, "t", "s")
            )

        return self._memo("select", cols, build, need_key=False)


def lookup_stage_name(rule_id: str) -> str:
    """Safe, unique, short stage table name for a lookup rule id."""
    return "lookup_" + hashlib.sha256(rule_id.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class LookupStatements:
    """SQL of one lookup rule: a per-session stage shaped like the lookup table's match columns
    (so COPY parses the values as those types) plus a row number, emptied before every fill, and
    the join that reads the `take` value (as text, written back as text) and the number of rows
    each staged match finds."""

    table: TableRef
    match: tuple[str, ...]
    take: str
    stage: str

    @property
    def create_stage(self) -> sql.Composed:
        return sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {}, NULL::int AS {} FROM {} WITH NO DATA"
        ).format(
            sql.Identifier(self.stage),
            _ids(self.match),
            sql.Identifier(ROW_NUMBER),
            sql.Identifier(self.table.schema, self.table.name),
        )

    @property
    def clear_stage(self) -> sql.Composed:
        """Empties the stage before every fill: it is not ON COMMIT DELETE ROWS (such a table costs
        every commit of the session), and TRUNCATE, not DELETE, leaves no dead rows behind (a
        temporary table is never vacuumed)."""
        return sql.SQL("TRUNCATE {}").format(sql.Identifier(self.stage))

    @property
    def copy_stage(self) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(self.stage), _ids((*self.match, ROW_NUMBER))
        )

    @property
    def select(self) -> sql.Composed:
        """Per staged row number: the `take` value as text (the smallest, when several rows
        match) and how many rows matched."""
        joined = sql.SQL(" AND ").join(sql.SQL("l.{0} = s.{0}").format(sql.Identifier(m)) for m in self.match)
        return sql.SQL(
            "SELECT s.{0}, min(l.{1}::text), count(l.*) FROM {2} AS s LEFT JOIN {3} AS l ON {4}"
            " GROUP BY s.{0}"
        ).format(
            sql.Identifier(ROW_NUMBER),
            sql.Identifier(self.take),
            sql.Identifier(self.stage),
            sql.Identifier(self.table.schema, self.table.name),
            joined,
        )
