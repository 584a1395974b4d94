"""A small client of Toxiproxy's HTTP API (deploy/toxiproxy): network faults on loopback.

Addresses from the environment (`deploy/local/stack env`): STACK_TOXIPROXY_URL,
STACK_KAFKA_PROXY (host:port of the kafka proxy, advertised by the broker's
PROXIED listener) and STACK_TARGET_PG_PROXY_PORT (the target proxy). A test
points the replicator at a proxy; everything else (the test's own checks,
Connect, drain) keeps the direct addresses.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


class Toxiproxy:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    @classmethod
    def from_env(cls) -> Toxiproxy:
        url = os.environ.get("STACK_TOXIPROXY_URL", "")
        if not url:
            pytest.fail(
                "STACK_TOXIPROXY_URL is not set: start the stack with toxiproxy"
                " (deploy/local/stack up) and export `deploy/local/stack env`",
                pytrace=False,
            )
        return cls(url)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        self._call("POST", "/reset")

    def toxic(self, proxy: str, name: str, kind: str, stream: str = "downstream", **attributes: int) -> None:
        self._call(
            "POST",
            f"/proxies/{proxy}/toxics",
            {"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes},
        )

    def remove(self, proxy: str, name: str) -> None:
        try:
            self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    def enabled(self, proxy: str, on: bool) -> None:
        """Disabling a proxy closes its connections and refuses new ones. Enabling it listens again:
        Toxiproxy answers 500 while its port is taken (an outgoing connection given that ephemeral
        port while it was closed, where the stack could not reserve it): asked again until it binds."""
        deadline = time.monotonic() + 60
        while True:
            try:
                self._call("POST", f"/proxies/{proxy}", {"enabled": on})
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 500 or not on or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)  # until the port is free again

    @contextmanager
    def fault(self, proxy: str, kind: str, **attributes: int) -> Iterator[None]:
        """A toxic on both directions of `proxy` while the block runs."""
        names = [f"{kind}_{stream}" for stream in ("upstream", "downstream")]
        try:
            for name, stream in zip(names, ("upstream", "downstream"), strict=True):
                self.toxic(proxy, name, kind, stream, **attributes)
            yield
        finally:
            for name in names:
                self.remove(proxy, name)


def kafka_proxy() -> str:
    address = os.environ.get("STACK_KAFKA_PROXY", "")
    assert address, "STACK_KAFKA_PROXY is not set (deploy/local/stack env)"
    return address


def target_proxy_port() -> str:
    port = os.environ.get("STACK_TARGET_PG_PROXY_PORT", "")
    assert port, "STACK_TARGET_PG_PROXY_PORT is not set (deploy/local/stack env)"
    return port
