"""`replicator connectors apply` against the real Connect worker.

Proves: applying twice gives one connector with the same config (idempotent);
a wrong password is a one-line error naming the field and the fix, and creates
nothing. (That the shipped configs keep the password out of Connect is
`test_connector_secrets.py`.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from replicator.connect.client import ConnectClient
from replicator.connect.configs import load_connector
from tests.integration.pipeline import drop_slot, fresh_target
from tests.integration.stack import Stack

CONNECTORS = Path(__file__).parent / "connectors"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_apply_twice_gives_one_connector_with_the_same_config(stack: Stack, probe_source: str) -> None:
    # A name of its own per run: Connect keeps a deleted connector's source offsets, and a later
    # run under the same name would resume from an LSN whose slot this test dropped (the task
    # fails "no longer available on the server" once apply waits for RUNNING to hold).
    run = uuid.uuid4().hex[:6]
    name, slot = f"test-idempotent-{run}", f"cdc_probe_idem_{run}"
    env = {"CDC_PROBE_CONNECTOR": name, "CDC_PROBE_SLOT": slot, "REPLICATOR_CONNECT__URL": stack.connect_url}
    client = ConnectClient(stack.connect_url)
    try:
        first = run_cli("connectors", "apply", "--dir", str(CONNECTORS), env=env)
        assert first.returncode == 0, first.stderr
        assert f"{name}: created; connector RUNNING, tasks RUNNING (held 5s" in first.stdout
        config_after_first = client.config(name)
        assert config_after_first is not None, "the connector exists after apply"
        second = run_cli("connectors", "apply", "--dir", str(CONNECTORS), env=env)
        assert second.returncode == 0, second.stderr
        assert f"{name}: unchanged" in second.stdout
        assert client.connectors().count(name) == 1
        assert client.config(name) == config_after_first
        wanted = load_connector(CONNECTORS / "probe-postgres.json", {**os.environ, **env})
        assert {k: v for k, v in config_after_first.items() if k != "name"} == dict(wanted.config)
    finally:
        client.delete(name)
        drop_slot(stack, slot)


def test_wrong_password_is_one_line_error_naming_the_field(tmp_path: Path, stack: Stack) -> None:
    # The shipped configs take the password from the worker's secrets file; a config that still
    # inlines one (from the environment) must fail the same way without printing it.
    inline = json.loads((CONNECTORS / "probe-postgres.json").read_text())
    inline["config"]["database.password"] = "${CDC_DEBEZIUM_PASSWORD}"
    (tmp_path / "probe-inline.json").write_text(json.dumps(inline))
    env = {
        "CDC_PROBE_CONNECTOR": "test-badpw",
        "CDC_DEBEZIUM_PASSWORD": "sentinel-wrong-pw-4711",
        "REPLICATOR_CONNECT__URL": stack.connect_url,
    }
    result = run_cli("connectors", "apply", "--dir", str(tmp_path), env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "database.password" in lines[0]
    assert "password authentication failed" in lines[0]
    assert "sentinel-wrong-pw-4711" not in result.stderr + result.stdout
    assert "test-badpw" not in ConnectClient(stack.connect_url).connectors()


def test_missing_variable_without_default_names_it(tmp_path: Path, stack: Stack) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"name": "x", "config": {"connector.class": "C", "database.password": "${CDC_NOT_SET_ANYWHERE}"}}'
    )
    result = run_cli("connectors", "apply", "--dir", str(tmp_path), env={})
    assert result.returncode == 1
    assert "CDC_NOT_SET_ANYWHERE" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_delete_removes_the_connector_and_drops_its_slot(stack: Stack, probe_source: str) -> None:
    """`connectors delete NAME --drop-slot`: a dry run changes nothing; then the connector is gone
    from Connect and its slot from the source (once its task let go of it), and the publication is
    named as left. A name Connect does not have is a one-line error."""
    run = uuid.uuid4().hex[:6]
    name, slot = f"test-delete-{run}", f"cdc_probe_del_{run}"
    env = {"CDC_PROBE_CONNECTOR": name, "CDC_PROBE_SLOT": slot, "REPLICATOR_CONNECT__URL": stack.connect_url}
    client = ConnectClient(stack.connect_url)

    def slot_exists() -> bool:
        with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            return found.fetchone() is not None

    try:
        assert run_cli("connectors", "apply", "--dir", str(CONNECTORS), env=env).returncode == 0
        assert slot_exists()
        dry = run_cli("connectors", "delete", name, "--drop-slot", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.strip() == f"would delete connector {name} and drop its slot {slot} on the source"
        assert client.config(name) is not None and slot_exists()
        done = run_cli("connectors", "delete", name, "--drop-slot", env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[:2] == [
            f"deleted connector {name}",
            f"dropped replication slot {slot} on the source",
        ]
        assert f"left: publication {probe_source} on the source" in done.stdout
        assert client.config(name) is None and not slot_exists()
        missing = run_cli("connectors", "delete", name, env=env)
        assert missing.returncode == 1 and missing.stdout == ""
        assert f"connector {name} does not exist in Connect at {stack.connect_url}" in missing.stderr
        assert len(missing.stderr.strip().splitlines()) == 1
    finally:
        if client.config(name) is not None:
            client.delete(name)
        drop_slot(stack, slot)


def test_delete_refuses_the_migrations_connector_before_the_cutover(stack: Stack, probe_source: str) -> None:
    """The connector the settings name feeds the migration: deleting it while the source is
    authoritative stops capture with no error anywhere, so `connectors delete` refuses it in one
    line naming why and `--force` (a dry run alike; `--force --dry-run` says what it would do).
    After the cutover (the target's authority row says `target`) it deletes it as any other."""
    run = uuid.uuid4().hex[:6]
    name, slot = f"test-delmig-{run}", f"cdc_probe_delmig_{run}"
    dbname = fresh_target("delmig")
    env = {
        "CDC_PROBE_CONNECTOR": name,
        "CDC_PROBE_SLOT": slot,
        "REPLICATOR_CONNECT__URL": stack.connect_url,
        "REPLICATOR_CONNECTOR": name,
        "REPLICATOR_TARGET__DBNAME": dbname,
    }
    client = ConnectClient(stack.connect_url)
    try:
        assert run_cli("connectors", "apply", "--dir", str(CONNECTORS), env=env).returncode == 0
        for dry in ([], ["--dry-run"]):  # before `replicator init`: no authority row, the source's
            refused = run_cli("connectors", "delete", name, "--drop-slot", *dry, env=env)
            assert refused.returncode == 1 and refused.stdout == "", refused.stderr
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(
                f"replicator: error: connector {name} captures this migration's changes"
            ), lines
            assert "the source is still authoritative" in lines[0] and "--force" in lines[0]
        assert run_cli("init", env=env).returncode == 0
        refused = run_cli("connectors", "delete", name, env=env)
        assert refused.returncode == 1 and "the source is still authoritative" in refused.stderr
        forced = run_cli("connectors", "delete", name, "--force", "--dry-run", env=env)
        assert forced.returncode == 0 and forced.stdout.strip() == f"would delete connector {name}", (
            forced.stderr
        )
        assert client.config(name) is not None
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            conn.execute(
                "UPDATE replicator.authority SET authority = 'target', cutover_id = 'c-test', since = now()"
            )
        done = run_cli("connectors", "delete", name, "--drop-slot", env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == f"deleted connector {name}"
        assert client.config(name) is None
    finally:
        if client.config(name) is not None:
            client.delete(name)
        drop_slot(stack, slot)
