"""`deploy/local/stack` lifecycle on a second, throw-away stack (own dir and ports).

Proves: `up` twice is harmless, `status` reports each component with its
address and health, the broker and worker files carry the message size limits and a broker running
with other limits makes `up` ask for a restart, `down` leaves no process of that stack behind.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.integration.throwaway import LISTENER_PORTS, ThrowawayStack, free_ports


def stack_processes(state_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(state_dir) in line and "ps -ww" not in line]


def test_up_twice_status_and_down_leave_nothing() -> None:
    # Its state is not under pytest's tmp_path: another pytest session resets that tree to 0700,
    # which would lock the postgres user out and make `down` fail (see throwaway.py).
    ports = dict(zip(LISTENER_PORTS, free_ports(len(LISTENER_PORTS)), strict=True))
    stack = ThrowawayStack.create("lifecycle", ports, extra={"STACK_REGISTRY": "on", "STACK_TOXIPROXY": "on"})
    state = stack.state
    try:
        stack.up()
        second = stack.cmd("up")
        assert second.returncode == 0, second.stderr[-2000:]
        assert "already up" in second.stderr
        for component in ("postgres-source", "postgres-target", "kafka", "connect", "registry", "toxiproxy"):
            assert component in second.stdout
        status = stack.cmd("status")
        assert status.returncode == 0
        assert f"127.0.0.1:{ports['STACK_KAFKA_PORT']}" in status.stdout and "up" in status.stdout
        assert stack_processes(state), "the stack should be running before down"
        # the message size limits are in the files the running broker and worker read
        server = (state / "conf" / "server.properties").read_text().splitlines()
        assert "message.max.bytes=67108864" in server
        worker = (state / "conf" / "connect.properties").read_text().splitlines()
        assert "producer.max.request.size=67108864" in worker
        # a broker running with other limits than `up` would write is named, not kept silently
        stack.extra["STACK_MAX_MESSAGE_BYTES"] = "1048588"
        stale = stack.cmd("up")
        del stack.extra["STACK_MAX_MESSAGE_BYTES"]
        assert stale.returncode != 0
        changed = "broker configuration (changed: message.max.bytes replica.fetch.max.bytes )"
        assert f"runs with an out-of-date {changed}" in stale.stderr, stale.stderr[-2000:]
        assert (state / "conf" / "server.properties").read_text().splitlines() == server
    finally:
        down = stack.cmd("down")
    assert down.returncode == 0, down.stderr
    assert stack_processes(state) == []
    after = stack.cmd("status")
    assert after.returncode == 1
    assert after.stdout.count("down") == 6
    shutil.rmtree(state.parent, ignore_errors=True)
