"""A second, throw-away local stack (own state directory and ports) for tests that must change
the worker's configuration or the databases' roles, which the shared stack must never see.

`ThrowawayStack.create()` makes its state directory, `up()` starts it with small heaps and the
shared jar cache, `exports()` are its `deploy/local/stack env` lines as a dict, and `down()` stops
it and removes the directory; the test always calls `down`.

The state is not under pytest's `tmp_path`: every pytest session started on the machine resets
`/tmp/pytest-of-<user>` to mode 0700, which would lock the `postgres` user out of a running
stack's data directory whenever someone else starts a test run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "local" / "stack"


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


LISTENER_PORTS = (
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
    """Ports nobody listens on now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class ThrowawayStack:
    state: Path
    ports: dict[str, int]  # STACK_*_PORT variable -> port
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, ports: dict[str, int], extra: dict[str, str] | None = None) -> ThrowawayStack:
        base = Path(tempfile.mkdtemp(prefix=f"cdc-{name}-"))
        base.chmod(0o755)  # the postgres user must reach its data directory
        # Every listener of the stack gets a port of its own: ports not given are free ones, never
        # the defaults (nor the caller's environment), which the stack under test holds.
        missing = [v for v in LISTENER_PORTS if v not in ports]
        return cls(
            base / "stack",
            {**dict(zip(missing, free_ports(len(missing)), strict=True)), **ports},
            extra or {},
        )

    @property
    def env(self) -> dict[str, str]:
        main_dir = Path(os.environ.get("STACK_DIR", REPO / ".stack"))
        return {
            **os.environ,
            "STACK_DIR": str(self.state),
            "STACK_DIST": os.environ.get("STACK_DIST", str(main_dir / "dist")),  # reuse the jar cache
            "STACK_REGISTRY": "off",
            "STACK_TOXIPROXY": "off",
            "STACK_CONNECT_HEAP": "512m",
            "STACK_KAFKA_HEAP": "384m",
            **{name: str(port) for name, port in self.ports.items()},
            **self.extra,
        }

    def cmd(self, command: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STACK), command], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def up(self) -> None:
        busy = sorted(f"{name}={port}" for name, port in self.ports.items() if port_in_use(port))
        assert not busy, f"ports of the throw-away stack are in use: {', '.join(busy)}"
        started = self.cmd("up")
        assert started.returncode == 0, started.stderr[-3000:]

    def exports(self) -> dict[str, str]:
        """`deploy/local/stack env` of this stack: what a client exports to use it."""
        out = self.cmd("env", timeout=60)
        assert out.returncode == 0, out.stderr
        found: dict[str, str] = {}
        for line in out.stdout.splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                found[name] = value  # the stack prints plain values (paths, host:port)
        return found

    def down(self) -> subprocess.CompletedProcess[str]:
        """Stop it; remove its state only when nothing of it is left running."""
        stopped = self.cmd("down")
        if stopped.returncode == 0:
            shutil.rmtree(self.state.parent, ignore_errors=True)
        return stopped
