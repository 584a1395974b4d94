"""Assembly of the one pipeline that `run` and `shadow` share: spec -> checked plan, decoder.

The daemon refuses to start on a spec that does not check against the live
source and target catalogs (errors only; warnings are logged), with one
exception (`run_plan`): the errors of a table rule whose topic the group has
applied from already, and whose `on_schema_change` is not `record`. The
source changed under a running migration; refusing would stop every table
(and a restarted group could never stop just that one). The run starts, that
table's events are judged one by one (`run.schema_guard`), and it stops at
the first one that does not match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from replicator.config import PostgresSettings, Settings
from replicator.connect.registry import RegistryClient
from replicator.core.decode import AvroDecoder, JsonDecoder
from replicator.core.errors import Fatal, one_line
from replicator.core.lsn import parse_lsn
from replicator.core.mapping import (
    Catalog,
    Plan,
    Problem,
    Spec,
    SpecError,
    check,
    compile_spec,
    load_spec,
    topic_for,
)
from replicator.core.model import TableRef
from replicator.core.schema_change import SourceNow
from replicator.pg.catalog import read_catalog
from replicator.pg.session import connect


def read_side_catalog(pg: PostgresSettings, schemas: list[str], side: str) -> Catalog:
    try:
        with connect(pg, side) as conn:
            return read_catalog(conn, schemas)
    except psycopg.Error as exc:
        raise Fatal(f"{side}: cannot read the catalog: {one_line(exc)}") from exc


def catalogs(spec: Spec, settings: Settings) -> tuple[Catalog, Catalog]:
    """The live source and target catalogs of the schemas the spec names."""
    source_schemas = sorted({t.source.schema for t in spec.tables})
    target_schemas = spec.target_schemas()
    return (
        read_side_catalog(settings.source, source_schemas, "source"),
        read_side_catalog(settings.target, target_schemas, "target"),
    )


def source_now(settings: Settings, spec: Spec) -> SourceNow | None:
    """The mapped source tables' columns now, with the source's WAL position read before them
    (`core.schema_change.older`: events below it are older than this catalog). None when the source
    has no position to give (a standby: `pg_current_wal_lsn()` refuses during recovery)."""
    schemas = sorted({t.source.schema for t in spec.tables})
    try:
        # autocommit: the catalog's snapshot is taken after the position, whatever the isolation
        with connect(settings.source, "source", autocommit=True) as conn:
            try:
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            except psycopg.errors.ObjectNotInPrerequisiteState:
                return None
            catalog = read_catalog(conn, schemas)
    except psycopg.Error as exc:
        raise Fatal(f"source: cannot read the catalog: {one_line(exc)}") from exc
    assert row is not None
    tables = {t.source for t in spec.tables}
    return SourceNow(
        parse_lsn(row[0]),
        {ref: frozenset(t.column_names) for ref, t in catalog.tables.items() if ref in tables},
    )


def target_plan(settings: Settings, spec_path: Path | None = None) -> Plan:
    """The spec compiled against the live target catalog (no source check: read-only commands)."""
    spec = load_spec(spec_path or settings.mapping)
    schemas = spec.target_schemas()
    return compile_spec(spec, read_side_catalog(settings.target, schemas, "target"))


def checked_plan(settings: Settings, spec_path: Path | None = None) -> tuple[Plan, list[Problem]]:
    """Load, check against live catalogs, compile. Raises Fatal listing every error."""
    spec = load_spec(spec_path or settings.mapping)
    source, target = catalogs(spec, settings)
    problems = check(spec, source, target)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise Fatal(
            f"mapping {spec_path or settings.mapping} does not check ({len(errors)} problems): "
            + " | ".join(str(p) for p in errors)
            + "; run `replicator mapping check` for details"
        )
    return compile_spec(spec, target), problems


@dataclass(frozen=True, slots=True)
class RunPlan:
    """The plan a run starts with, the spec it comes from, the problems it logs (warnings, and the
    errors it tolerates) and the table rules whose errors it tolerated."""

    spec: Spec
    plan: Plan
    problems: list[Problem]
    tolerated: frozenset[str]


def run_plan(settings: Settings, replicating: Callable[[], frozenset[str]]) -> RunPlan:
    """`checked_plan` for `run` and `shadow`: errors of table rules whose topic is in `replicating()`
    (read only when there are errors) and whose policy is not `record` do not refuse the start."""
    spec = load_spec(settings.mapping)
    source, target = catalogs(spec, settings)
    problems = check(spec, source, target)
    errors = [p for p in problems if p.severity == "error"]
    tolerated: set[str] = set()
    if errors:
        topics = replicating()
        tolerable = {
            t.id
            for t in spec.tables
            if spec.schema_change_policy(t) != "record"
            and (t.topic or topic_for(spec.topic_prefix, t.source)) in topics
        }
        tolerated = {p.table for p in errors if p.table in tolerable}
        refused = [p for p in errors if p.table not in tolerated]
        if refused:
            raise Fatal(
                f"mapping {settings.mapping} does not check ({len(refused)} problems): "
                + " | ".join(str(p) for p in refused)
                + "; run `replicator mapping check` for details"
            )
    try:
        plan = compile_spec(spec, target)
    except SpecError as exc:
        raise Fatal(f"mapping {settings.mapping} does not compile: {exc}") from exc
    return RunPlan(spec, plan, problems, frozenset(tolerated))


def live_catalogs(settings: Settings, spec: Spec) -> Callable[[TableRef], tuple[Catalog, Catalog]]:
    """A reader of the live source catalog of one source table's schema and of the target catalog
    (the schema guard's re-check after a source schema change)."""
    target_schemas = spec.target_schemas()

    def read(source: TableRef) -> tuple[Catalog, Catalog]:
        return (
            read_side_catalog(settings.source, [source.schema], "source"),
            read_side_catalog(settings.target, target_schemas, "target"),
        )

    return read


def decoder(settings: Settings) -> JsonDecoder | AvroDecoder:
    """The decoder for the configured value format (JSON, or Avro through the registry)."""
    placeholder = settings.unavailable_placeholder
    if settings.value_format == "avro":
        if not settings.registry_url:
            raise Fatal("value_format=avro needs REPLICATOR_REGISTRY_URL")
        return AvroDecoder(
            RegistryClient(settings.registry_url).schema,
            unavailable_placeholder=placeholder,
            trust_null_defaults=settings.avro_trust_null_defaults,
        )
    return JsonDecoder(unavailable_placeholder=placeholder)


@dataclass(frozen=True, slots=True)
class CaptureSource:
    """The connector and signal table of the configured migration (None: not configured)."""

    connector: str | None
    signal_table: TableRef | None

    def need_connector(self, command: str) -> str:
        if self.connector is None:
            raise Fatal(
                f"{command} needs the Debezium connector's name; fix: set REPLICATOR_CONNECTOR, pass "
                "--connector, or add `capture: {connector: <name>}` to the mapping spec"
            )
        return self.connector

    def need_signal_table(self, command: str) -> TableRef:
        if self.signal_table is None:
            raise Fatal(
                f"{command} needs the connector's signal table; fix: set REPLICATOR_SIGNAL_TABLE, "
                "pass --signal-table, or add `capture: {signal_table: <schema.table>}` to the mapping "
                "spec (`replicator init --print-grants` prints the SQL that creates it)"
            )
        return self.signal_table


def capture(
    settings: Settings, connector: str | None = None, signal_table: str | None = None
) -> CaptureSource:
    """Flags, then settings (`REPLICATOR_CONNECTOR`, `REPLICATOR_SIGNAL_TABLE`), then the spec's
    `capture:` block; no demo defaults."""
    spec = load_spec(settings.mapping)
    table = signal_table or settings.signal_table
    try:
        ref = TableRef.parse(table) if table else spec.capture.signal_table
    except ValueError as exc:
        raise Fatal(f"signal table {table!r}: {exc}; fix: name it as schema.table") from exc
    return CaptureSource(connector or settings.connector or spec.capture.connector, ref)


def spec_topics(settings: Settings) -> list[str]:
    """The Kafka topics the configured spec maps (from the spec alone, no catalog)."""
    return sorted(set(source_topics(settings).values()))


def source_topics(settings: Settings) -> dict[str, str]:
    """Each source table the spec maps (`schema.table`) and its topic."""
    spec = load_spec(settings.mapping)
    return {str(t.source): t.topic or topic_for(spec.topic_prefix, t.source) for t in spec.tables}


def target_topics(settings: Settings) -> list[tuple[str, str]]:
    """Each target table the spec writes (`schema.table`) and the topic feeding it, in spec order."""
    spec = load_spec(settings.mapping)
    return [(str(t.target), t.topic or topic_for(spec.topic_prefix, t.source)) for t in spec.tables]
