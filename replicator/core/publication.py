"""Does the connector's publication and table filter carry every table the spec maps? (pure)

A mapped table that PostgreSQL does not publish, or that the connector's
`table.include.list` / `table.exclude.list` filters out, is snapshotted (a
snapshot reads with SELECT) but its later changes never reach Kafka: a silent
loss that only a verify would show, late. A partitioned table published
without `publish_via_partition_root` is the same loss in disguise: PostgreSQL
publishes its changes as its partitions', under names no rule maps and the
include list (naming the partitioned table) filters out.

Invariants:
- One problem line per table, each naming the table and its fix.
- Debezium matches its filters as case-insensitive regular expressions
  against the whole schema name (`schema.include.list` / `schema.exclude.list`)
  and the whole `schema.table` name (`table.include.list` /
  `table.exclude.list`); a table must pass both; so do we (a pattern that
  Python cannot compile is skipped: the connector's own validation judges it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from psycopg import sql

from replicator.core.model import TableRef


@dataclass(frozen=True, slots=True)
class Publication:
    """A publication as the source's catalog shows it."""

    name: str
    via_root: bool  # publish_via_partition_root
    tables: frozenset[TableRef]  # what pg_publication_tables lists (partitions, unless via_root)


def _patterns(text: str | None) -> list[re.Pattern[str]] | None:
    if not text:
        return None
    out: list[re.Pattern[str]] = []
    for item in text.split(","):
        try:
            out.append(re.compile(item.strip(), re.IGNORECASE))
        except re.error:
            continue
    return out


def _kept(name: str, include: str | None, exclude: str | None) -> bool:
    """Debezium's rule for one include/exclude pair: an include list keeps only what it matches
    (the exclude list is then not used); else an exclude list drops what it matches."""
    included, excluded = _patterns(include), _patterns(exclude)
    if included is not None:
        return any(p.fullmatch(name) for p in included)
    return excluded is None or not any(p.fullmatch(name) for p in excluded)


def filtered_out(table: TableRef, config: Mapping[str, str]) -> bool:
    """Whether the connector's schema or table filters drop `table`'s events."""
    schema_kept = _kept(table.schema, config.get("schema.include.list"), config.get("schema.exclude.list"))
    return not (
        schema_kept
        and _kept(
            f"{table.schema}.{table.name}", config.get("table.include.list"), config.get("table.exclude.list")
        )
    )


def capture_gaps(
    tables: Iterable[TableRef],
    partitioned: frozenset[TableRef],
    publication: Publication | None,
    publication_name: str,
    config: Mapping[str, str],
) -> list[str]:
    """One line per captured table whose changes would not reach Kafka, with the fix."""
    if publication is None:
        return [
            f"publication {publication_name} does not exist on the source: no change is captured;"
            " fix: create it (`replicator init --print-grants` prints the statement)"
        ]
    problems: list[str] = []
    pub = sql.Identifier(publication.name)
    for table in sorted(set(tables), key=str):
        if filtered_out(table, config):
            problems.append(
                f"{table} is filtered out by the connector's schema or table include/exclude lists:"
                " its changes never reach Kafka; fix: add it to the connector's table.include.list"
                " (and its schema to schema.include.list, if set) and apply the connector again"
            )
        elif table in partitioned and not publication.via_root:
            fix = sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)").format(pub)
            problems.append(
                f"{table} is partitioned and publication {publication.name} publishes its changes as"
                f" its partitions' (under names no rule maps); fix: {fix.as_string()}"
            )
        elif table not in publication.tables:
            fix = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                pub, sql.Identifier(table.schema, table.name)
            )
            problems.append(
                f"{table} is not in publication {publication.name}: its changes never reach Kafka;"
                f" fix: {fix.as_string()}"
            )
    return problems
