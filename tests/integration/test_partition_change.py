"""A partition added to a topic while `replicator run` applies a workload stops that topic only;
the supported way on ends with `verify` clean; a replay of the old partitions regresses no row.

A source schema of its own (an item table, an independent other table, the
signal table), its own connector and topics (3 partitions each), so the demo's
topics never change for other tests. Two instances of the group run while a
workload writes both tables. Proves:
- `create_partitions` (Kafka's admin API) takes the item topic to 4
  partitions: every partition of it stops (rule `partitions`, all four, the
  new one included), with one line naming the topic, the counts and the fix in
  the run log and in `replicator status` (table stopped, exit 1), and the
  item checkpoints stay where they stopped while the other topic is applied to
  its end; `replicator drain` refuses at once naming the table;
- the way on: `replicator partitions accept --topic T --yes` (records layout 1,
  restarts the connector) and both instances resume the topic by themselves;
  the workload goes on (keys now land on partition 3 too); `replicator reload
  --table` re-emits every item row; `replicator verify` is clean, no error
  record;
- the UNORDERED path: with the group stopped, `replicator replay` moves the
  three old partitions back to offset 0 (their snapshot rows and old updates),
  `replicator run --stop-when-caught-up` reads them again, and every target row
  is field for field what it was (rows that moved to partition 3 and changed
  since included), `verify` still clean. With the old rule (another
  partition, a position missing: applied as newer) those rows regress.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions
from psycopg import sql

from replicator.config import load_settings
from replicator.connect.client import ConnectClient
from replicator.connect.configs import load_connector
from replicator.core.model import TableRef
from replicator.source.signal import write_fence
from tests.integration.pipeline import (
    drop_slot,
    empty_target,
    end_offsets,
    run_cli,
    stored_offsets,
    wait_until,
)
from tests.integration.stack import Stack

CONNECTOR_FILE = Path(__file__).parent / "connectors-partitions" / "partitions-postgres.json"

SPEC = """
version: 1
topic_prefix: {prefix}
capture: {{connector: {connector}, signal_table: {schema}.debezium_signal}}
defaults: {{unmapped_source_columns: fail}}
tables:
  - id: item
    source: {schema}.item
    target: {schema}.item
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: error}}
    columns: {{id: {{from: id}}, name: {{from: name}}, v: {{from: v}}}}
  - id: other
    source: {schema}.other
    target: {schema}.other
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: error}}
    columns: {{id: {{from: id}}, name: {{from: name}}}}
"""

TABLES = """
CREATE TABLE {s}.item (id bigint PRIMARY KEY, name text NOT NULL, v int NOT NULL);
CREATE TABLE {s}.other (id bigint PRIMARY KEY, name text NOT NULL);
"""
ITEMS = 300


@dataclass(frozen=True)
class World:
    schema: str
    prefix: str
    connector: str
    dbname: str
    spec: Path

    @property
    def item_topic(self) -> str:
        return f"{self.prefix}.{self.schema}.item"

    @property
    def other_topic(self) -> str:
        return f"{self.prefix}.{self.schema}.other"


@pytest.fixture(scope="module")
def world(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    run = uuid.uuid4().hex[:6]
    schema, prefix, slot = f"pc{run}", f"pc{run}", f"cdc_pc_{run}"
    s = sql.Identifier(schema)
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
        conn.execute(sql.SQL(TABLES).format(s=s))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.debezium_signal (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL,"
                " data varchar(2048))"
            ).format(s)
        )
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {0} TO debezium; GRANT SELECT ON ALL TABLES IN SCHEMA {0} TO debezium;"
                " GRANT INSERT ON {0}.debezium_signal TO debezium"
            ).format(s)
        )
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}.item, {}.other, {}.debezium_signal").format(
                sql.Identifier(f"cdc_{schema}"), s, s, s
            )
        )
        for i in range(1, ITEMS + 1):
            conn.execute(sql.SQL("INSERT INTO {}.item VALUES (%s, %s, 0)").format(s), (i, f"seed {i}"))
        for i in range(1, 31):
            conn.execute(sql.SQL("INSERT INTO {}.other VALUES (%s, %s)").format(s), (i, f"seed {i}"))
    dbname = f"t_pc_{run}"
    empty_target(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION replicator").format(s))
        conn.execute(sql.SQL(TABLES).format(s=s))
        conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO replicator").format(s))
    environ = {
        **os.environ,
        "CDC_PC_CONNECTOR": f"test-pc-{run}",
        "CDC_PC_PREFIX": prefix,
        "CDC_PC_SLOT": slot,
        "CDC_PC_PUBLICATION": f"cdc_{schema}",
        "CDC_PC_SCHEMA": schema,
    }
    connector = load_connector(CONNECTOR_FILE, environ)
    spec = tmp_path_factory.mktemp("pc") / "pc.yaml"
    spec.write_text(SPEC.format(prefix=prefix, connector=connector.name, schema=schema))
    client = ConnectClient(stack.connect_url)
    client.apply(connector, wait_s=120)
    try:
        yield World(schema, prefix, connector.name, dbname, spec)
    finally:
        client.delete(connector.name)
        drop_slot(stack, slot)


@dataclass
class Load:
    """Updates and inserts on both tables from a thread of its own (about 40 statements a second)."""

    stack: Stack
    schema: str
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    errors: list[BaseException] = field(default_factory=list)
    statements: int = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.halt()
        assert not self.errors, self.errors

    def halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _run(self) -> None:
        rng = random.Random(self.schema)
        s = sql.Identifier(self.schema)
        next_item = ITEMS + 1
        try:
            with psycopg.connect(self.stack.source_admin(), autocommit=True) as conn:
                while not self._stop.is_set():
                    n = self.statements
                    conn.execute(
                        sql.SQL("UPDATE {}.item SET name = %s, v = v + 1 WHERE id = %s").format(s),
                        (f"u{n}", rng.randint(1, ITEMS)),
                    )
                    if n % 4 == 0:
                        conn.execute(
                            sql.SQL("INSERT INTO {}.item VALUES (%s, %s, 0)").format(s), (next_item, "new")
                        )
                        next_item += 1
                    conn.execute(
                        sql.SQL("UPDATE {}.other SET name = %s WHERE id = %s").format(s),
                        (f"u{n}", rng.randint(1, 30)),
                    )
                    self.statements += 1
                    self._stop.wait(0.05)  # the workload's pace
        except BaseException as exc:  # reported by stop() in the test's thread
            self.errors.append(exc)


def env(w: World, group: str) -> dict[str, str]:
    return {
        **os.environ,
        "REPLICATOR_TARGET__DBNAME": w.dbname,
        "REPLICATOR_KAFKA__GROUP_ID": group,
        "REPLICATOR_MAPPING": str(w.spec),
        "REPLICATOR_BATCH__MAX_MS": "200",
        "REPLICATOR_HEARTBEAT_S": "2",
    }


def start(environ: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", *args], env=environ, stdout=out, stderr=out
        )


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return proc.returncode


def applied_to_end(stack: Stack, w: World, group: str, topics: list[str]) -> bool:
    try:
        ends = {p: o for p, o in end_offsets(stack, topics).items() if o > 0}
    except KeyError:  # a topic appears with its first event
        return False
    stored = stored_offsets(stack, w.dbname, group)
    return bool(ends) and all(stored.get(p, 0) >= o for p, o in ends.items())


def flushed(stack: Stack, w: World) -> None:
    """Everything the source committed so far is in Kafka (a fence row, Connect's offset past it)."""
    _, lsn = write_fence(load_settings(None).source, TableRef(w.schema, "debezium_signal"))
    client = ConnectClient(stack.connect_url)
    wait_until(lambda: client.flushed_lsn(w.connector) >= lsn, 120, "the connector to flush past the fence")


def query(stack: Stack, w: World, text: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack.target_admin(w.dbname)) as conn:
        return conn.execute(sql.SQL(text).format(s=sql.Identifier(w.schema)), params).fetchall()


def stops(stack: Stack, w: World) -> list[tuple[Any, ...]]:
    return query(
        stack,
        w,
        "SELECT topic, partition, kafka_offset, rule_id, reason, fix FROM replicator.schema_stop"
        " ORDER BY 1, 2",
    )


def test_a_partition_added_while_running_stops_its_topic_and_the_way_on_ends_clean(
    stack: Stack, world: World, tmp_path: Path
) -> None:
    w = world
    group = f"pc-{uuid.uuid4().hex[:6]}"
    environ = env(w, group)
    topics = [w.item_topic, w.other_topic]
    logs = [tmp_path / "run-1.log", tmp_path / "run-2.log"]
    daemons = [start(environ, log) for log in logs]
    load = Load(stack, w.schema)
    try:
        wait_until(lambda: applied_to_end(stack, w, group, topics), 180, "the snapshot to be applied")
        load.start()
        wait_until(lambda: load.statements > 50, 60, "the workload to run")

        admin = AdminClient({"bootstrap.servers": stack.kafka})
        admin.create_partitions([NewPartitions(w.item_topic, 4)])[w.item_topic].result(timeout=60)

        # every partition of the item topic stops, the new one included, one line each in the log
        wait_until(lambda: len(stops(stack, w)) == 4, 60, "the item topic's four partitions to stop")
        found = stops(stack, w)
        assert {(t, p) for t, p, *_ in found} == {(w.item_topic, p) for p in range(4)}
        reason = f"topic {w.item_topic} has 4 partitions, 3 recorded"
        assert all(r == "partitions" and reason in why for *_, r, why, _ in found), found
        assert all(
            f"replicator partitions accept --topic {w.item_topic} --yes" in fix for *_, fix in found
        ), found
        lines = [line for log in logs for line in log.read_text().splitlines() if "event=stopped" in line]
        assert lines and all(reason in line and "fix:" in line for line in lines), lines
        assert [proc.poll() for proc in daemons] == [None, None], [log.read_text()[-3000:] for log in logs]

        # the other topic flows to its end while the item checkpoints stay where they stopped
        stopped_at = {(t, p): o for t, p, o, *_ in found}
        flushed(stack, w)
        wait_until(lambda: applied_to_end(stack, w, group, [w.other_topic]), 120, "the other topic to flow")
        stored = stored_offsets(stack, w.dbname, group)
        assert {p: o for p, o in stored.items() if p[0] == w.item_topic} == {
            p: o for p, o in stopped_at.items() if p[1] < 3
        }
        ends = end_offsets(stack, [w.item_topic])
        assert sum(ends.values()) > sum(stopped_at.values())  # the workload went on: the stop holds back

        status = run_cli(environ, "status", "--json")
        assert status.returncode == 1, status.stderr
        table = next(t for t in json.loads(status.stdout)["tables"] if t["table"] == f"{w.schema}.item")
        assert (table["state"], table["rule_id"]) == ("stopped", "partitions") and reason in table["reason"]
        other = next(t for t in json.loads(status.stdout)["tables"] if t["table"] == f"{w.schema}.other")
        assert other["state"] == "running"
        text = run_cli(environ, "status").stdout
        assert any(
            f"{w.schema}.item" in line and "stopped" in line and reason in line for line in text.splitlines()
        )
        drained = run_cli(environ, "drain", "--timeout", "60")
        assert drained.returncode == 1 and f"{w.schema}.item" in drained.stderr and reason in drained.stderr

        # the way on: accept, the instances resume by themselves, reload, verify
        seen = [len(log.read_text().splitlines()) for log in logs]
        accepted = run_cli(environ, "partitions", "accept", "--topic", w.item_topic, "--yes")
        assert accepted.returncode == 0, accepted.stderr
        assert accepted.stdout.startswith(f"accepted {w.item_topic}: 3 -> 4 partitions (layout 1;")
        assert stops(stack, w) == []
        assert query(
            stack, w, "SELECT partitions FROM replicator.topic_partitions WHERE topic = %s", w.item_topic
        ) == [(4,)]

        def resumed(log: Path, before: int) -> bool:
            """The instance said `resumed` for the topic: on seeing the accept itself, or when the
            other's rejoin assigned it the topic's partitions again."""
            lines = log.read_text().splitlines()[before:]
            return any("event=resumed" in line and w.item_topic in line for line in lines)

        wait_until(
            lambda: all(resumed(log, before) for log, before in zip(logs, seen, strict=True)),
            180,
            "both instances to resume",
        )
        statements = load.statements
        wait_until(lambda: load.statements > statements + 200, 120, "more of the workload")
        reload = run_cli(environ, "reload", "--table", f"{w.schema}.item", "--timeout", "300")
        assert reload.returncode == 0, reload.stderr
        wait_until(lambda: load.statements > statements + 300, 120, "more of the workload after the reload")
        load.stop()
        drained = run_cli(environ, "drain", "--timeout", "180")
        assert drained.returncode == 0, drained.stderr
        verified = run_cli(environ, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert query(stack, w, "SELECT count(*) FROM replicator.error_record") == [(0,)]
        moved = query(
            stack,
            w,
            "SELECT count(*) FROM replicator.row_version v JOIN {s}.item i ON v.key = format('[%%s]', i.id)"
            " WHERE v.target_table = %s AND v.partition = 3 AND i.id <= %s"
            " AND (i.v > 0 OR i.name <> 'seed ' || i.id)",
            f"{w.schema}.item",
            ITEMS,
        )
        # rows that now live on the new partition and changed since their snapshot: what a replay risks
        assert moved[0][0] >= 5, moved
    finally:
        load.halt()
        codes = [stop(proc) for proc in daemons]
    assert codes == [0, 0], [log.read_text()[-3000:] for log in logs]

    # the UNORDERED path: replay the old partitions from their start; no row regresses
    before = query(stack, w, "SELECT id, name, v FROM {s}.item ORDER BY id")
    moves = [f"--to-offset={w.item_topic}:{p}:0" for p in range(3)]
    replayed = run_cli(environ, "replay", *moves)
    assert replayed.returncode == 0, replayed.stderr
    log = tmp_path / "replay.log"
    again = start(environ, log, "--stop-when-caught-up")
    assert again.wait(timeout=300) == 0, log.read_text()[-3000:]
    end = next(line for line in log.read_text().splitlines() if "event=end" in line)
    assert "skipped_older=0" not in end, end  # the old events were read again, and skipped
    after = query(stack, w, "SELECT id, name, v FROM {s}.item ORDER BY id")
    regressed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert len(after) == len(before) and regressed == [], regressed[:10]
    verified = run_cli(environ, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert query(stack, w, "SELECT count(*) FROM replicator.error_record") == [(0,)]
