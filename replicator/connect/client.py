"""Kafka Connect REST client (I/O edge): validate, create or update, wait, status.

Invariants: `apply` is idempotent (an unchanged config is not re-submitted);
errors are one line naming the connector and, for invalid configs, each field
with Connect's message. Secrets are masked in everything printed.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from replicator.connect.configs import ConnectorSpec, config_differs, validation_errors
from replicator.core.errors import ReplicatorError


class ConnectError(ReplicatorError):
    """Connect refused or failed; the message is one line with the fix where known."""


@dataclass(frozen=True, slots=True)
class ConnectorState:
    name: str
    connector: str
    tasks: tuple[str, ...]
    trace: str | None

    @property
    def running(self) -> bool:
        return self.connector == "RUNNING" and bool(self.tasks) and all(t == "RUNNING" for t in self.tasks)

    @property
    def failed(self) -> bool:
        return self.connector == "FAILED" or any(t == "FAILED" for t in self.tasks)

    @property
    def cause(self) -> str:
        """The trace in one line: its first line and, when it has one, its innermost `Caused by:`
        (a task's first line is often only "Unrecoverable exception from producer send callback";
        the RecordTooLargeException that says what to change is the cause)."""
        lines = [line.strip() for line in (self.trace or "no trace").strip().splitlines()]
        causes = [line.removeprefix("Caused by:").strip() for line in lines if line.startswith("Caused by:")]
        return lines[0] if not causes else f"{lines[0]} (caused by {causes[-1]})"


class ConnectClient:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - URL comes from settings (http/https)
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("message", detail)
            raise ConnectError(
                f"Connect {method} {path} answered {exc.code}: {' '.join(str(detail).split())}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectError(
                f"Connect at {self.url} is unreachable ({reason}); "
                "is the worker up? (deploy/local/stack status) or set REPLICATOR_CONNECT__URL"
            ) from exc
        return json.loads(payload) if payload else None

    def validate(self, spec: ConnectorSpec) -> list[str]:
        klass = urllib.parse.quote(spec.connector_class, safe="")
        body = {**spec.config, "name": spec.name}
        result = self._request("PUT", f"/connector-plugins/{klass}/config/validate", body)
        return validation_errors(result or {})

    def config(self, name: str) -> dict[str, str] | None:
        result = self._request("GET", f"/connectors/{urllib.parse.quote(name, safe='')}/config")
        return None if result is None else dict(result)

    def put_config(self, spec: ConnectorSpec) -> None:
        name = urllib.parse.quote(spec.name, safe="")
        self._request("PUT", f"/connectors/{name}/config", dict(spec.config))

    def state(self, name: str) -> ConnectorState | None:
        result = self._request("GET", f"/connectors/{urllib.parse.quote(name, safe='')}/status")
        if result is None:
            return None
        tasks = result.get("tasks", [])
        trace = next((t.get("trace") for t in tasks if t.get("trace")), None)
        trace = trace or result.get("connector", {}).get("trace")
        return ConnectorState(
            name=name,
            connector=result.get("connector", {}).get("state", "UNKNOWN"),
            tasks=tuple(t.get("state", "UNKNOWN") for t in tasks),
            trace=trace,
        )

    def connectors(self) -> list[str]:
        return list(self._request("GET", "/connectors") or [])

    def delete(self, name: str) -> None:
        self._request("DELETE", f"/connectors/{urllib.parse.quote(name, safe='')}")

    def stop(self, name: str) -> None:
        """STOPPED: no tasks, offsets kept (Connect's offsets API needs a stopped connector)."""
        self._request("PUT", f"/connectors/{urllib.parse.quote(name, safe='')}/stop")

    def resume(self, name: str) -> None:
        """A PAUSED or STOPPED connector runs again (a stopped one gets new tasks)."""
        self._request("PUT", f"/connectors/{urllib.parse.quote(name, safe='')}/resume")

    def reset_offsets(self, name: str) -> None:
        """Forget the (stopped) connector's source offsets, so one created again with this name starts
        with a fresh snapshot instead of resuming at an LSN a recreated database no longer has."""
        self._request("DELETE", f"/connectors/{urllib.parse.quote(name, safe='')}/offsets")

    def restart(self, name: str) -> None:
        self._request("POST", f"/connectors/{urllib.parse.quote(name, safe='')}/restart?includeTasks=true")

    def offsets(self, name: str) -> Any:
        return self._request("GET", f"/connectors/{urllib.parse.quote(name, safe='')}/offsets")

    def committed_lsn(self, name: str) -> int:
        """Connect's committed `lsn_commit` of the connector: every transaction committed at or
        before it is durably in Kafka (0 while it only snapshotted)."""
        result = self.offsets(name)
        if result is None:
            raise ConnectError(f"connector {name} does not exist on {self.url}; fix: REPLICATOR_CONNECTOR")
        lsns = [int(o["offset"].get("lsn_commit") or 0) for o in result.get("offsets", [])]
        return max(lsns, default=0)

    def flushed_lsn(self, name: str) -> int:
        """The source LSN up to which the connector's records are durably in Kafka (0 if none)."""
        result = self.offsets(name) or {}
        lsns = [
            int(o["offset"].get("lsn_proc") or o["offset"].get("lsn") or 0) for o in result.get("offsets", [])
        ]
        return max(lsns, default=0)

    def apply(
        self,
        spec: ConnectorSpec,
        wait_s: float,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
        restart_failed: bool = False,
        settle_s: float = 0.0,
    ) -> tuple[str, ConnectorState]:
        """Validate, create or update (only when changed), wait until RUNNING; `restart_failed`:
        a FAILED connector or task is restarted once (connector and tasks) before it counts.
        `settle_s`: RUNNING counts once it held that long (polled throughout): a task fails on its
        first records (e.g. RecordTooLargeException), seconds after Connect reported it RUNNING.

        Returns ("created" | "updated" | "unchanged", with " and restarted" after a restart; state).
        """
        errors = self.validate(spec)
        if errors:
            raise ConnectError(f"connector {spec.name} ({spec.path}) is invalid: " + "; ".join(errors))
        current = self.config(spec.name)
        if current is None:
            action = "created"
            self.put_config(spec)
        elif config_differs(spec.config, current):
            action = "updated"
            self.put_config(spec)
        else:
            action = "unchanged"
        deadline = clock() + wait_s
        running_since: float | None = None
        while True:
            state = self.state(spec.name)
            if state is not None and state.running:
                now = clock()
                running_since = now if running_since is None else running_since
                if now - running_since >= settle_s:
                    return action, state
                pause(0.5)  # still RUNNING: polled again until it has held for settle_s
                continue
            running_since = None
            if state is not None and state.failed:
                if restart_failed and not action.endswith("restarted"):
                    self.restart(spec.name)
                    action += " and restarted"
                    deadline = clock() + wait_s
                    pause(0.5)
                    continue
                first = state.cause
                hint = (
                    ""
                    if restart_failed
                    else "; fix the cause, then `replicator connectors apply --restart-failed`"
                )
                raise ConnectError(f"connector {spec.name} FAILED: {first}{hint}")
            if clock() >= deadline:
                shown = state.connector if state else "absent"
                raise ConnectError(
                    f"connector {spec.name} not RUNNING after {wait_s:.0f}s (state {shown}); "
                    "see deploy/local/stack logs connect"
                )
            pause(0.5)  # polling Connect's status endpoint until the condition holds
