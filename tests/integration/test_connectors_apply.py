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

from replicator.connect.client import ConnectClient
from replicator.connect.configs import load_connector
from tests.integration.pipeline import drop_slot
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
