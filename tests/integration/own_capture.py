"""A test's own capture, for schemas that are not the demo's: a source schema of its own with a
signal table, its own publication and Debezium connector (the demo connector's settings), and a
fresh target database holding a schema of the same name.

Everything is named after a fresh run id, so tests never share a topic, slot or group; the
source schema and the publication are dropped when the test ends (the connector and its slot by
the test, which starts it).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from replicator.config import load_settings
from replicator.connect.client import ConnectClient
from replicator.connect.configs import ConnectorSpec, load_connector
from replicator.core.model import TableRef
from replicator.source.signal import write_fence
from tests.integration.pipeline import REPO, drop_slot, empty_target, wait_until
from tests.integration.stack import Stack

Ddl = Callable[[sql.Identifier], sql.Composed]  # the schema's tables (and rows), given the schema
SIGNAL_COLUMNS = "id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048)"


@dataclass(frozen=True)
class OwnSchema:
    schema: str
    prefix: str  # the connector's topic.prefix, slot `cdc_<prefix>`
    tables: tuple[str, ...]  # the captured tables (besides the signal table)

    @property
    def signal(self) -> TableRef:
        return TableRef(self.schema, "debezium_signal")

    @property
    def publication(self) -> str:
        return f"cdc_{self.schema}"

    def table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{self.schema}.{name}"

    def rule(
        self,
        rule_id: str,
        source: str,
        columns: Sequence[str],
        *,
        target: str | None = None,
        key: Sequence[str] = ("id",),
        truncate: str = "ignore",
        ignore: Sequence[str] = (),
    ) -> dict[str, Any]:
        """An identity rule: this schema's `source` into `target` (the same name unless given), key
        and `columns` copied by name, hard deletes, `ignore`d source columns."""
        rule: dict[str, Any] = {
            "id": rule_id,
            "source": f"{self.schema}.{source}",
            "target": f"{self.schema}.{target or source}",
            "key": {k: k for k in key},
            "delete": {"policy": "hard"},
            "truncate": {"policy": truncate},
            "columns": {c: {"from": c} for c in columns},
        }
        if ignore:
            rule["ignore_source_columns"] = list(ignore)
        return rule

    def spec(self, path: Path, rules: Sequence[Mapping[str, Any]]) -> Path:
        """A mapping spec of `rules` for this capture's topics and signal table, written to `path`."""
        document = {
            "version": 1,
            "topic_prefix": self.prefix,
            "capture": {"signal_table": str(self.signal)},
            "tables": [dict(r) for r in rules],
        }
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def env(self, dbname: str, spec: Path) -> dict[str, str]:
        """The replicator's environment: `spec` into `dbname`, this capture's connector, a group of
        its own, short batches."""
        return {
            **os.environ,
            "REPLICATOR_TARGET__DBNAME": dbname,
            "REPLICATOR_MAPPING": str(spec),
            "REPLICATOR_CONNECTOR": self.connector().name,
            "REPLICATOR_KAFKA__GROUP_ID": f"group-{self.prefix}",
            "REPLICATOR_BATCH__MAX_MS": "200",
        }

    def connector(self) -> ConnectorSpec:
        """The demo connector's settings, capturing the tables and the signal table."""
        base = load_connector(REPO / "connectors" / "demo-postgres.json", dict(os.environ))
        config = {
            **base.config,
            "topic.prefix": self.prefix,
            "slot.name": f"cdc_{self.prefix}",
            "publication.name": self.publication,
            "table.include.list": ",".join([*(f"{self.schema}.{t}" for t in self.tables), str(self.signal)]),
            "signal.data.collection": str(self.signal),
        }
        return dataclasses.replace(base, name=f"test-{self.prefix}", config=config)


@contextmanager
def own_source(
    stack: Stack, kind: str, tables: Sequence[str], ddl: Ddl, *, via_root: bool = True
) -> Iterator[OwnSchema]:
    """Schema `<kind><run id>` on the source with `ddl`'s tables and the signal table, readable by
    the connector role, in a publication of its own (`publish_via_partition_root` unless
    `via_root` is false)."""
    run = uuid.uuid4().hex[:6]
    own = OwnSchema(f"{kind}{run}", f"{kind[:2]}{run}", tuple(tables))
    s = sql.Identifier(own.schema)
    published = sql.SQL(", ").join([*(own.table(t) for t in tables), own.table("debezium_signal")])
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
        conn.execute(ddl(s))
        conn.execute(sql.SQL("CREATE TABLE {}.debezium_signal (" + SIGNAL_COLUMNS + ")").format(s))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {s} TO debezium").format(s=s))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO debezium").format(s=s))
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}{}").format(
                sql.Identifier(own.publication),
                published,
                sql.SQL(" WITH (publish_via_partition_root = true)" if via_root else ""),
            )
        )
    try:
        yield own
    finally:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(own.publication)))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))


@contextmanager
def running_connector(stack: Stack, own: OwnSchema) -> Iterator[Callable[[str], None]]:
    """The capture's connector, applied and RUNNING; yields `flush(what)`: a fence row into the
    signal table, then a wait until the connector has flushed past it (everything the source
    committed before is in Kafka). Deleted, and its slot dropped, at the end."""
    client = ConnectClient(stack.connect_url)
    connector = own.connector()
    client.apply(connector, wait_s=120)

    def flush(what: str) -> None:
        _, lsn = write_fence(load_settings(None).source, own.signal)
        wait_until(lambda: client.flushed_lsn(connector.name) >= lsn, 180, f"{what} to flush")

    try:
        yield flush
    finally:
        client.delete(connector.name)
        drop_slot(stack, connector.config["slot.name"])


def own_target(stack: Stack, own: OwnSchema, tables: Sequence[str], ddl: Ddl) -> str:
    """A fresh target database owned by the replicator role, with schema `own.schema` holding
    `ddl`'s tables, on which the role may read and write `tables`."""
    dbname = f"t_{own.schema}"
    empty_target(stack, dbname)
    s = sql.Identifier(own.schema)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
        conn.execute(ddl(s))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO replicator").format(s))
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO replicator").format(
                sql.SQL(", ").join(own.table(t) for t in tables)
            )
        )
    return dbname
