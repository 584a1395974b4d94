"""`deploy/local/stack` lifecycle on a second, throw-away stack (own dir and ports).

Proves: `up` twice is harmless, `status` reports each component with its
address and health, `down` leaves no process of that stack behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

STACK = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack"


def stack_cmd(cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STACK), cmd], env=env, capture_output=True, text=True, timeout=400, check=False
    )


def stack_processes(state_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(state_dir) in line and "ps -ww" not in line]


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


def free_ports(n: int) -> list[str]:
    """Ports nobody listens on now (fixed ports collide with stacks other people configured on them)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [str(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def test_up_twice_status_and_down_leave_nothing(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    main_dir = Path(os.environ.get("STACK_DIR", STACK.parents[2] / ".stack"))
    env = {
        **os.environ,
        "STACK_DIR": str(state),
        "STACK_DIST": os.environ.get("STACK_DIST", str(main_dir / "dist")),  # reuse the jar cache
        **dict(zip(PORT_VARS, free_ports(len(PORT_VARS)), strict=True)),
        "STACK_CONNECT_HEAP": "512m",
        "STACK_KAFKA_HEAP": "384m",
    }
    if os.geteuid() == 0:
        os.chmod(tmp_path, 0o755)  # the postgres user must reach its data directory
        for parent in tmp_path.parents:
            if parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o005)
    try:
        first = stack_cmd("up", env)
        assert first.returncode == 0, first.stderr[-2000:]
        second = stack_cmd("up", env)
        assert second.returncode == 0, second.stderr[-2000:]
        assert "already up" in second.stderr
        for component in ("postgres-source", "postgres-target", "kafka", "connect", "registry", "toxiproxy"):
            assert component in second.stdout
        status = stack_cmd("status", env)
        assert status.returncode == 0
        assert f"127.0.0.1:{env['STACK_KAFKA_PORT']}" in status.stdout and "up" in status.stdout
        assert stack_processes(state), "the stack should be running before down"
    finally:
        down = stack_cmd("down", env)
    assert down.returncode == 0, down.stderr
    assert stack_processes(state) == []
    after = stack_cmd("status", env)
    assert after.returncode == 1
    assert after.stdout.count("down") == 6
