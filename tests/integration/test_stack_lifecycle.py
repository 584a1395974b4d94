"""`deploy/local/stack` lifecycle on a second, throw-away stack (own dir and ports).

Proves: `up` twice is harmless, `status` reports each component with its
address and health, `down` leaves no process of that stack behind.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from tests.integration.throwaway import ThrowawayStack

PORT_VARS = (
    "STACK_SOURCE_PG_PORT",
    "STACK_TARGET_PG_PORT",
    "STACK_KAFKA_PORT",
    "STACK_KAFKA_CONTROLLER_PORT",
    "STACK_CONNECT_PORT",
    "STACK_REGISTRY_PORT",
    "STACK_REGISTRY_MANAGEMENT_PORT",
    "STACK_TOXIPROXY_PORT",
    "STACK_KAFKA_PROXIED_PORT",
    "STACK_KAFKA_PROXY_PORT",
    "STACK_TARGET_PG_PROXY_PORT",
)


def free_ports(n: int) -> list[int]:
    """Ports nobody listens on now (fixed ports collide with stacks other people configured on them)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def stack_processes(state_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(state_dir) in line and "ps -ww" not in line]


def test_up_twice_status_and_down_leave_nothing() -> None:
    # Its state is not under pytest's tmp_path: another pytest session resets that tree to 0700,
    # which would lock the postgres user out and make `down` fail (see throwaway.py).
    ports = dict(zip(PORT_VARS, free_ports(len(PORT_VARS)), strict=True))
    stack = ThrowawayStack.create("lifecycle", ports, extra={"STACK_REGISTRY": "on"})
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
    finally:
        down = stack.cmd("down")
    assert down.returncode == 0, down.stderr
    assert stack_processes(state) == []
    after = stack.cmd("status")
    assert after.returncode == 1
    assert after.stdout.count("down") == 6
    shutil.rmtree(state.parent, ignore_errors=True)
