"""`replicator status` tells the truth about capture and runs, on the real stack: the demo's
connector RUNNING with its slot active (exit 0); a run killed with kill -9 shown DEAD once silent
(and `reload` refusing, though Kafka may still list its member);
a connector whose task FAILED (a publication that does not exist) and a connector that does not
exist each named in a PROBLEM line with exit 1."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from replicator import cli
from replicator.connect.client import ConnectClient
from replicator.connect.configs import ConnectorSpec
from replicator.pg.session import connect
from tests.integration.pipeline import (
    CONNECTOR,
    SPEC,
    TOPICS,
    daemon,
    drop_slot,
    end_offsets,
    env_for,
    fresh_target,
    run_cli,
    wait_until,
)
from tests.integration.stack import Stack


def status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = run_cli(env, "status", "--json")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_status_shows_a_killed_run_dead_and_a_failed_or_missing_connector(
    stack: Stack, tmp_path: Path
) -> None:
    dbname = fresh_target("status")
    group = f"status-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group, REPLICATOR_HEARTBEAT_S="1", REPLICATOR_CONNECTOR=CONNECTOR)
    with open(tmp_path / "d.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "replicator", "run"], env=env, stdout=out, stderr=out)
    try:

        def ours(state: str) -> list[dict[str, Any]]:
            done = run_cli(env, "status", "--json")  # fails in one line until the run made the control schema
            runs = json.loads(done.stdout)["runs"] if done.stdout else []
            return [r for r in runs if r["group"] == group and r["state"] == state]

        (live,) = wait_until(lambda: ours("running"), 120, "the run to show as running")
        code, shown = status(env)
        assert code == 0 and shown["capture"]["problems"] == [], shown["capture"]
        assert shown["capture"]["state"] == "RUNNING" and shown["capture"]["tasks"] == ["RUNNING"]
        assert shown["capture"]["slot"]["active"] is True
        assert shown["members"] == 1 and shown["runs_beating"] == 1
        assert shown["authority"]["authority"] == "source" and shown["authority"]["cutover_id"] is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (dead,) = wait_until(lambda: ours("dead"), 60, "the killed run to show as dead")
    # dead means silent for more than 3 beats of 1 s; the report rounds silence to 0.1 s (3.04 shows 3.0)
    assert dead["run_id"] == live["run_id"] and dead["silent_s"] >= 3
    # judged by the daemon's own heartbeat interval (recorded with its run), not this command's:
    # a `status` run with a 600 s heartbeat still sees the 1 s daemon dead, and says by whose beats
    text = run_cli({**env, "REPLICATOR_HEARTBEAT_S": "600"}, "status").stdout
    assert f"run {live['run_id']} run group={group} DEAD (silent " in text, text
    assert "more than 3 heartbeats of 1s, and never recorded its end" in text, text
    # Kafka may still list the killed member (until its session timeout): not a running consumer
    assert f"group {group}: 0 runs beating (target heartbeats), " in text, text
    # reload decides from the same heartbeats, not from Kafka's members (it went ahead while the
    # killed member was listed, and waited for nothing to apply the snapshot); it refuses before
    # asking Connect anything (this connector does not exist)
    refused = run_cli(
        {**env, "REPLICATOR_CONNECTOR": "no-such-connector"}, "reload", "--table", "crm.customer_pii"
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    said = refused.stderr
    assert f"reload: no `replicator run` of group {group} beats in the target" in said, said

    missing = run_cli({**env, "REPLICATOR_CONNECTOR": "no-such-connector"}, "status")
    assert missing.returncode == 1
    assert "PROBLEM: connector no-such-connector does not exist" in missing.stdout, missing.stdout
    # no config, so no slot name: none is guessed (trial 4: "slot debezium does not exist")
    assert "slot debezium" not in missing.stdout
    assert "note: replication slot and publication not checked" in missing.stdout, missing.stdout

    client = ConnectClient(stack.connect_url)
    base = client.config(CONNECTOR)
    assert base is not None
    name, slot = f"status-bad-{uuid.uuid4().hex[:6]}", f"status_bad_{uuid.uuid4().hex[:6]}"
    bad = {
        **base,
        "name": name,
        "topic.prefix": name,
        "slot.name": slot,
        "publication.name": "no_such_publication",
    }
    client.put_config(ConnectorSpec(name, bad, tmp_path / "bad.json"))
    try:
        failed_env = {**env, "REPLICATOR_CONNECTOR": name}
        wait_until(lambda: "FAILED" in status(failed_env)[1]["capture"]["tasks"], 120, "the task to fail")
        code, shown = status(failed_env)
        assert code == 1
        (problem,) = [p for p in shown["capture"]["problems"] if name in p]
        assert "FAILED" in problem and "Publication autocreation is disabled" in problem, problem
        assert f"/connectors/{name}/restart?includeTasks=true" in problem
    finally:
        client.delete(name)
        drop_slot(stack, slot)


def test_status_names_a_halted_run_until_it_is_started_again(stack: Stack) -> None:
    """Trial 4: after the daemon halted on a fatal error, `status` exited 0 and listed nothing
    (the run had recorded its end). A halted run is listed with its reason, exit 1, until its
    instance starts again. Trial 7: a peer that started beside it (a few ms later) hid it, and so
    would another instance restarted after the halt."""
    dbname = fresh_target("halted")
    group = f"halted-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group, REPLICATOR_CONNECTOR=CONNECTOR, REPLICATOR_KAFKA__INSTANCE_ID="one")
    halting = run_cli({**env, "REPLICATOR_KAFKA__AUTO_OFFSET_RESET": "error"}, "run", "--stop-when-caught-up")
    assert halting.returncode == 1 and "auto_offset_reset=error" in halting.stderr, halting.stderr[-2000:]
    code, shown = status(env)
    (halted,) = [r for r in shown["runs"] if r["group"] == group]
    assert code == 1 and halted["state"] == "halted" and "auto_offset_reset=error" in halted["reason"]
    # its tables too (trial 7: they showed `running`): its static member still owns their partitions
    assert {(t["state"], t.get("run_id")) for t in shown["tables"]} == {("halted", halted["run_id"])}, shown
    text = run_cli(env, "status").stdout
    assert f"run {halted['run_id']} run group={group} HALTED at " in text, text

    # instance "two": one run started 1 ms after the halted one, one restarted after the halt
    peers = (
        "INSERT INTO replicator.run (run_id, mode, group_id, started_at, settings, status, ended_at)"
        " SELECT p.id, 'run', %s, p.at + interval '1 millisecond', '{\"instance_id\": \"two\"}',"
        " 'stopped', now() FROM replicator.run AS r,"
        " LATERAL (VALUES ('beside', r.started_at), ('restarted', r.ended_at)) AS p (id, at)"
        " WHERE r.run_id = %s"
    )
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(peers, (group, halted["run_id"]))
    code, shown = status(env)
    assert code == 1 and [r["run_id"] for r in shown["runs"] if r["group"] == group] == [halted["run_id"]]

    applied = run_cli(env, "run", "--stop-when-caught-up")
    assert applied.returncode == 0, applied.stderr[-2000:]
    code, shown = status(env)
    assert [r for r in shown["runs"] if r["group"] == group] == []
    assert code == 0 and {t["state"] for t in shown["tables"]} == {"running"}, shown

    # killed runs (never ended, silent): one of instance "one", started again since, is not a gone
    # member (trial 7: every killed run stayed listed DEAD); one of instance "three" is
    killed = (
        "INSERT INTO replicator.run (run_id, mode, group_id, started_at, settings)"
        " VALUES (%s, 'run', %s, now() - interval '1 hour', jsonb_build_object('instance_id', %s::text))"
    )
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(killed, ("killed-one", group, "one"))
        conn.execute(killed, ("killed-three", group, "three"))
    code, shown = status(env)
    listed = [(r["run_id"], r["state"]) for r in shown["runs"] if r["group"] == group]
    assert listed == [("killed-three", "dead")], listed


def test_the_tables_of_a_halted_run_are_halted_until_a_live_member_takes_them(
    stack: Stack, tmp_path: Path
) -> None:
    """Trial 7: one of two daemons halted and `status` showed every table `running`; only the
    HALTED run line said otherwise. A table whose partitions no member owns and whose last applying
    run halted is `halted`, with that run and its reason (exit 1); once a live member (another
    instance) owns them it is `running`, while the halted run stays listed (exit 1) until its own
    instance starts again."""
    dbname = fresh_target("halttables")
    group = f"halttables-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group, REPLICATOR_CONNECTOR=CONNECTOR)
    assert run_cli(env, "init").returncode == 0
    ends = end_offsets(stack, TOPICS)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO replicator.run"
            " (run_id, mode, group_id, started_at, ended_at, status, settings, totals)"
            " VALUES ('halted-one', 'run', %s, now() - interval '1 minute', now(), 'halted',"
            ' \'{"instance_id": "one"}\', \'{"reason": "boom: a fatal error"}\')',
            (group,),
        )
        with conn.cursor() as cur:  # every partition last applied by that run, up to its end
            cur.executemany(
                "INSERT INTO replicator.checkpoint (group_id, topic, partition, next_offset, run_id)"
                " VALUES (%s, %s, %s, %s, 'halted-one')",
                [(group, t, p, o) for (t, p), o in ends.items()],
            )
    code, shown = status(env)
    assert code == 1 and shown["members"] == 0
    assert {(t["state"], t.get("run_id")) for t in shown["tables"]} == {("halted", "halted-one")}, shown
    (table, *_) = shown["tables"]
    assert "boom: a fatal error" in table["reason"] and "REPLICATOR_KAFKA__INSTANCE_ID=one" in table["fix"]
    text = run_cli(env, "status").stdout
    # every table held by the one run: each points to the reason, printed once (trial 13)
    assert f"  {table['table']:34} HALTED: reason [1]" in text, text
    assert f"  [1] HALTED, {len(shown['tables'])} tables (" in text and text.count(table["reason"]) == 1, text

    with daemon({**env, "REPLICATOR_KAFKA__INSTANCE_ID": "two"}, tmp_path / "two.log"):
        wait_until(
            lambda: {t["state"] for t in status(env)[1]["tables"]} == {"running"},
            120,
            "instance two to own every partition",
        )
        code, shown = status(env)
        assert code == 1 and [r["run_id"] for r in shown["runs"] if r["state"] == "halted"] == ["halted-one"]


def test_rows_held_longer_than_the_cutover_gate_allows_are_a_problem(stack: Stack) -> None:
    """Trial 5: rows held for 381 s (each half of a NOT DEFERRABLE FK cycle waiting for the other)
    and `status` exited 0. A table whose oldest held row is older than the cutover gate's limit
    is a PROBLEM line, exit 1; rows held for less are lag in motion, exit 0."""
    dbname = fresh_target("stuck")
    group = f"stuck-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group, REPLICATOR_CONNECTOR=CONNECTOR)
    assert run_cli(env, "init").returncode == 0
    hold = (
        "INSERT INTO replicator.held_event (group_id, topic, partition, kafka_offset, target_table, key,"
        " blocked_by, judged_at, positioned, held_at) VALUES (%s, 'demo.shop.orders', 0, %s, 'sales.order',"
        " '[1]', 'crm.customer', 1, true, now() - make_interval(secs => %s))"
    )
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(hold, (group, 1, 5))
    code, shown = status(env)
    assert code == 0 and [h["table"] for h in shown["held"]] == ["sales.order"], shown
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(hold, (group, 2, 120))
    code, _ = status(env)
    text = run_cli(env, "status").stdout
    assert code == 1
    assert (
        "PROBLEM: sales.order has rows held longer than 60 s" in text and "waiting for crm.customer" in text
    )


def test_status_of_many_tables_has_totals_a_table_filter_and_each_shared_reason_once(
    stack: Stack, tmp_path: Path
) -> None:
    """Trial 14 (119 tables): no totals, no table filter, a halted run's reason once per table.
    The demo spec under its own topic prefix (2 partitions per topic, no connector): four tables
    held by a halted run, one with held rows. The totals line counts them all; the halted reason
    is printed once; `--table` (target, topic or source glob) narrows the table, partition and
    held sections, says what it shows, and leaves the totals, the JSON totals and the exit code
    whole; `--json` keeps each table's reason; a pattern matching nothing is one error line."""
    prefix = f"many{uuid.uuid4().hex[:8]}"
    spec = yaml.safe_load(SPEC.read_text())
    spec["topic_prefix"] = prefix
    spec.pop("capture", None)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    topics = [f"{prefix}.shop.{t}" for t in ("customers", "products", "orders", "order_lines")]
    admin = AdminClient({"bootstrap.servers": stack.kafka})
    for made in admin.create_topics(
        [NewTopic(t, num_partitions=2, replication_factor=1) for t in topics]
    ).values():
        made.result(30)
    try:
        dbname = fresh_target("many")
        group = f"many-{prefix}"
        env = env_for(stack, dbname, group, REPLICATOR_MAPPING=str(tmp_path / "spec.yaml"))
        assert run_cli(env, "init").returncode == 0
        lines_topic = f"{prefix}.shop.order_lines"
        with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO replicator.run (run_id, mode, group_id, started_at, ended_at, status, settings,"
                " totals) VALUES ('halted-one', 'run', %s, now() - interval '2 minutes',"
                " now() - interval '1 minute', 'halted', %s, %s),"
                " ('later', 'run', %s, now() - interval '30 seconds', now(), 'stopped', %s, '{}')",
                (
                    group,
                    '{"instance_id": "one"}',
                    '{"reason": "boom: a fatal error"}',
                    group,
                    '{"instance_id": "two"}',
                ),
            )
            with conn.cursor() as cur:  # order_lines applied since the halt (by instance two): not halted
                cur.executemany(
                    "INSERT INTO replicator.checkpoint (group_id, topic, partition, next_offset, run_id)"
                    " VALUES (%s, %s, %s, 0, 'later')",
                    [(group, lines_topic, p) for p in (0, 1)],
                )
            conn.execute(
                "INSERT INTO replicator.held_event (group_id, topic, partition, kafka_offset, target_table,"
                " key, blocked_by, judged_at, positioned) SELECT %s, %s, 0, n, 'sales.order_line',"
                " '[' || n || ']', 'sales.order', 1, true FROM generate_series(1, 3) AS n",
                (group, lines_topic),
            )
        done = run_cli(env, "status", "--json")
        assert done.returncode == 1, done.stderr  # the halted tables
        shown = json.loads(done.stdout)
        assert shown["totals"] == {
            "tables": 5,
            "by_state": {"running": 0, "held": 1, "stopped": 0, "halted": 4, "cut_over": 0},
            "partitions": 8,
            "partitions_stopped": 0,
            "partitions_kafka_ahead": 0,
            "lag": 0,
            "held_rows": 3,
            "held_tables": 1,
            "open_error_records": 0,
        }
        assert shown["filter"] == {"tables": [], "tables_shown": 5, "tables_total": 5}
        halted = [t for t in shown["tables"] if t["state"] == "halted"]
        reason = halted[0]["reason"]
        assert reason.startswith("run halted-one halted at ") and reason.endswith(": boom: a fatal error")
        assert [t["reason"] for t in halted] == [reason] * 4  # each table keeps its reason in JSON

        text = run_cli(env, "status").stdout
        lines = text.splitlines()
        assert lines[1] == (
            "totals: 5 tables (running 0, held 1, stopped 0, halted 4); 8 partitions, lag 0;"
            " held rows 3 in 1 table; open error records 0"
        ), text
        assert text.count(reason) == 1, text
        assert (
            "  [1] HALTED, 4 tables (crm.customer, crm.customer_pii, catalog.product, sales.order):"
            f" {reason};" in text
        ), text
        assert f"  {'sales.order':34} HALTED: reason [1]" in lines, text
        assert f"  {'sales.order_line':34} held: 3 rows wait for sales.order" in text, text
        assert sum(1 for line in lines if line.startswith(f"{prefix}.shop.")) == 8

        # a source table's glob and a target glob: their tables, partitions and held rows only
        done = run_cli(env, "status", "--table", "shop.order*", "--table", "crm.customer_pii")
        assert done.returncode == 1, done.stderr  # the exit code still covers every table
        lines = done.stdout.splitlines()
        assert lines[1] == (
            "totals: 5 tables (running 0, held 1, stopped 0, halted 4); 8 partitions, lag 0;"
            " held rows 3 in 1 table; open error records 0"
        ), done.stdout
        assert lines[2] == (
            "showing 3 of 5 tables (--table shop.order* crm.customer_pii): the sections below list only"
            " those; the totals and the exit code cover all 5"
        )
        listed = [line.split()[0] for line in lines if line.startswith(f"{prefix}.shop.")]
        assert listed == [
            f"{prefix}.shop.{t}[{p}]" for t in ("customers", "order_lines", "orders") for p in (0, 1)
        ]
        assert [line.split()[0] for line in lines[lines.index("tables:") + 1 :] if line.startswith("  ")][
            :3
        ] == [
            "crm.customer_pii",
            "sales.order",
            "sales.order_line",
        ]
        assert "catalog.product" not in done.stdout and "crm.customer " not in done.stdout
        assert done.stdout.count(reason) == 1  # two of the shown tables share it
        done = run_cli(env, "status", "--json", "--table", f"{prefix}.shop.products")
        narrowed = json.loads(done.stdout)
        assert [t["table"] for t in narrowed["tables"]] == ["catalog.product"]
        assert {p["topic"] for p in narrowed["partitions"]} == {f"{prefix}.shop.products"}
        assert narrowed["held"] == [] and narrowed["totals"] == shown["totals"]
        assert narrowed["filter"] == {
            "tables": [f"{prefix}.shop.products"],
            "tables_shown": 1,
            "tables_total": 5,
        }

        typo = run_cli(env, "status", "--table", "sales.*", "--table", "slaes.*")
        assert typo.returncode == 1 and typo.stdout == "", typo.stdout
        assert typo.stderr.strip() == (
            "replicator: error: status: --table slaes.* matches no mapped table (target, topic or source);"
            " fix: a glob on schema.table such as 'crm.*' (the spec maps crm.customer, crm.customer_pii,"
            " catalog.product, sales.order, sales.order_line)"
        ), typo.stderr
    finally:
        admin.delete_topics(topics)


def test_an_unreachable_kafka_is_one_error_line(stack: Stack) -> None:
    """Trial 7: with Kafka unreachable the CLI's one-line error came with librdkafka's own line
    beside it. `status` prints exactly one line naming the address, librdkafka's reason and the
    fix; `run` prints its start event and that line (no `kafka_log` line)."""
    dbname = fresh_target("nokafka")
    env = env_for(stack, dbname, f"nokafka-{uuid.uuid4().hex[:6]}", REPLICATOR_CONNECTOR=CONNECTOR)
    assert run_cli(env, "init").returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket is closed
    env["REPLICATOR_KAFKA__BOOTSTRAP_SERVERS"] = address
    said = (
        f"replicator: error: kafka at {address}: Failed to get metadata: Local: Broker transport failure"
        f" ({address}/bootstrap: Connect to ipv4#{address} failed: Connection refused"
    )
    fix = "; fix: check REPLICATOR_KAFKA__BOOTSTRAP_SERVERS and that the broker is up"
    done = run_cli(env, "status")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(said) and done.stderr.rstrip().endswith(fix), done.stderr
    done = run_cli(env, "run", "--stop-when-caught-up")
    start, error = done.stderr.splitlines()
    assert done.returncode == 1 and " event=start " in start and error.startswith(said), done.stderr


def test_status_reads_the_control_store_on_one_session(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every control-store read of one `replicator status` (offsets, held rows, halts, tables,
    runs, authority) goes through one target session, not one per reader."""
    dbname = fresh_target("statusone")
    env = env_for(stack, dbname, f"statusone-{uuid.uuid4().hex[:6]}", REPLICATOR_CONNECTOR=CONNECTOR)
    assert run_cli(env, "init").returncode == 0
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    opened: list[str] = []

    def counting(settings: Any, side: str, **kwargs: Any) -> Any:
        opened.append(side)
        return connect(settings, side, **kwargs)

    monkeypatch.setattr("replicator.target.store.connect", counting)
    code = cli.main(["status", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code in (0, 1) and shown["authority"]["authority"] == "source" and shown["partitions"], shown
    assert opened == ["target"]


def test_verify_reads_the_target_on_one_session(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`replicator verify` compares the tables and reads their state (`table_status`: a stopped
    table is not clean) on one target session (it opened a second for the table states)."""
    dbname = fresh_target("verifyone")
    env = env_for(stack, dbname, f"verifyone-{uuid.uuid4().hex[:6]}")
    assert run_cli(env, "init").returncode == 0
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    opened: list[str] = []

    def counting(settings: Any, side: str, **kwargs: Any) -> Any:
        opened.append(side)
        return connect(settings, side, **kwargs)

    monkeypatch.setattr("replicator.target.store.connect", counting)
    monkeypatch.setattr("replicator.run.verify.connect", counting)
    code = cli.main(["verify", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 1 and shown and all(r["stopped"] is None for r in shown), shown  # nothing applied yet
    assert sorted(opened) == ["source", "target"]
