"""`replicator mapping check|explain|scaffold`: a spec against the live catalogs, its compiled
plan, and an identity spec of the source's tables to start from (`core.mapping.scaffold`).

`check` also judges the spec against the events that stopped tables of the configured group
(`core.schema_change`): a stopped table the spec still does not match is an error naming what
to change; one it matches now is a note saying a restart applies its held events. It also warns,
once per kind, about the documented losses of the source columns the spec reads
(`core.mapping.losses`): warnings, never a failing exit. With `scan`, it counts the source rows
holding such values (one read-only scan per table; a table it cannot scan is said, not fatal).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from replicator.config import Settings
from replicator.core.errors import ReplicatorError, one_line
from replicator.core.mapping import Catalog, Plan, Problem, Spec, SpecError, check, compile_spec, load_spec
from replicator.core.mapping.check import missing_topics, topic_names
from replicator.core.mapping.losses import Counts, condition, loss_warnings, read_losses, scan_statement
from replicator.core.mapping.scaffold import Scaffold, scaffold
from replicator.core.model import SourceShape, TableRef
from replicator.core.schema_change import judge
from replicator.kafka.clients import Metadata
from replicator.pg.catalog import partitions, read_catalog
from replicator.pg.session import connect
from replicator.run.assembly import catalogs
from replicator.target.store import ControlStore


def check_spec(
    settings: Settings, path: Path, scan: bool = False, say: Callable[[str], None] = lambda _: None
) -> list[Problem]:
    """The spec against both catalogs, a warning per kind of documented loss among the source
    columns it reads (`core.mapping.losses`; with `scan`, the source rows holding such values
    counted, `say` telling each table's scan), against the events that stopped tables, and one
    warning for the mapped topics Kafka does not have."""
    spec = load_spec(path)
    source, target = catalogs(spec, settings)
    counts = scan_losses(settings, spec, source, target, say) if scan else None
    rank = {"error": 0, "warning": 1, "info": 2}
    problems = sorted(
        check(spec, source, target) + loss_warnings(spec, source, target, counts),
        key=lambda p: rank[p.severity],
    )
    failing = {p.table for p in problems if p.severity == "error"}
    problems += stopped_tables(settings, spec, target, failing)
    try:
        with Metadata(settings.kafka) as metadata:
            existing = frozenset(metadata.partition_counts(topic_names(spec)))
    except ReplicatorError as exc:  # the catalogs decide the verdict; the topics are a warning
        fix = "check REPLICATOR_KAFKA__BOOTSTRAP_SERVERS, then check again"
        return [
            *problems,
            spec.problem(("topic_prefix",), "topics", f"topics not checked: {exc}", fix, "warning"),
        ]
    return [*problems, *missing_topics(spec, existing, settings.kafka.bootstrap_servers)]


def scan_losses(
    settings: Settings, spec: Spec, source: Catalog, target: Catalog, say: Callable[[str], None]
) -> Counts:
    """The source rows holding a value open to each loss of a column the spec reads, per (kind,
    column): one scan per table, in a read-only transaction; a table whose scan fails counts as
    not counted (None), and `say` names it with the reason."""
    by_table: dict[TableRef, dict[tuple[str, str], psycopg.sql.Composed]] = {}
    for r in read_losses(spec, source, target):
        by_table.setdefault(r.table, {})[(r.loss.kind, r.label)] = condition(r.loss, r.column, r.type)
    counts: dict[tuple[str, str], int | None] = {}
    with connect(settings.source, "source", autocommit=True) as conn:
        for table, conditions in sorted(by_table.items()):
            keys = list(conditions)
            say(f"scanning {table} ({len(keys)} column {'check' if len(keys) == 1 else 'checks'})")
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION READ ONLY")
                    row = conn.execute(scan_statement(table, list(conditions.values()))).fetchone()
            except psycopg.Error as exc:
                say(f"scanning {table}: {one_line(exc)} (its columns are not counted)")
                row = None
            counts.update(zip(keys, row if row is not None else [None] * len(keys), strict=True))
    return counts


def stopped_tables(settings: Settings, spec: Spec, target: Catalog, failing: set[str]) -> list[Problem]:
    """Each table of the configured group stopped by a source schema change, judged with `spec`
    (a table in `failing` has errors against the live catalog already: no note that it matches)."""
    try:
        plan = compile_spec(spec, target)
    except SpecError:
        return []  # the check lists why it does not compile
    group = settings.kafka.group_id
    with ControlStore.open(settings) as store:
        stops = store.stops(group) if store.initialized() else []
    out: list[Problem] = []
    seen: set[str] = set()
    for stop in stops:
        if stop["topic"] in seen or stop["columns"] is None:
            continue
        seen.add(stop["topic"])
        shape = SourceShape.from_json(stop["columns"])
        at = f"{stop['topic']}[{stop['partition']}]@{stop['kafka_offset']}"
        for i, rule in enumerate(spec.tables):
            table = next((t for t in plan.tables if t.rule_id == rule.id), None)
            if table is None or table.topic != stop["topic"]:
                continue
            where = ("tables", i, "on_schema_change") if rule.on_schema_change else ("tables", i)
            drift = judge(table, shape, spec.file)
            if drift is not None:
                out.append(
                    spec.problem(
                        where,
                        drift.rule_id,
                        f"{table.target} is stopped (group {group}) at {at}: {drift.reason}",
                        drift.fix,
                    )
                )
            elif rule.id not in failing:
                out.append(
                    spec.problem(
                        where,
                        table.schema_change.rule_id,
                        f"{table.target} is stopped (group {group}) at {at}; this spec matches the event"
                        " that stopped it",
                        "restart `replicator run`: it applies the events held in Kafka",
                        "info",
                    )
                )
    return out


def explain_spec(settings: Settings, path: Path) -> Plan:
    spec = load_spec(path)
    _source, target = catalogs(spec, settings)
    return compile_spec(spec, target)


def scaffold_spec(
    settings: Settings,
    schemas: list[str],
    tables: list[TableRef],
    topic_prefix: str,
    target_schemas: dict[str, str],
    connector: str | None,
    signal_table: TableRef | None,
) -> Scaffold:
    """The identity spec of `tables`, or of every table of `schemas` (partitions excepted: their
    partitioned table stands for them), read from the source's catalog."""
    wanted = sorted({*schemas, *(t.schema for t in tables)})
    with connect(settings.source, "source") as conn:
        catalog = read_catalog(conn, wanted)
        leaves = partitions(conn, wanted)
    missing = [t for t in tables if t not in catalog.tables]
    if missing:
        raise ReplicatorError(
            f"scaffold: {', '.join(map(str, missing))} not found in the source database"
            f" {settings.source.dbname}; fix: name existing tables as schema.table"
        )
    chosen = list(tables) or [t for t in catalog.tables if t.schema in schemas and t not in leaves]
    if not chosen:
        raise ReplicatorError(
            f"scaffold: no table in schema(s) {', '.join(schemas)} of the source database"
            f" {settings.source.dbname}; fix: name the schemas that hold the tables to migrate"
        )
    return scaffold(
        catalog,
        chosen,
        topic_prefix=topic_prefix,
        connector=connector,
        signal_table=signal_table,
        schemas=target_schemas,
    )
