#!/usr/bin/env python3
"""Health probes for the local stack, standard library only (runs before pip install).

    probe.py kafka HOST:PORT      broker answers a Metadata request with >= 1 broker
    probe.py connect URL PLUGIN   Connect REST answers and lists PLUGIN (a class name)

Exit 0 when healthy, 1 otherwise, with a one-line reason on stderr.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import urllib.error
import urllib.request


def kafka_metadata_brokers(address: str, timeout: float = 3.0) -> int:
    """Send Metadata v0 (all topics) and return the number of brokers in the answer."""
    host, _, port = address.rpartition(":")
    client_id = b"cdc-stack-probe"
    body = struct.pack(">hhih", 3, 0, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _read_exact(sock, 4))[0]
        payload = _read_exact(sock, size)
    correlation_id, brokers = struct.unpack(">ii", payload[:8])
    if correlation_id != 1:
        raise ValueError(f"unexpected correlation id {correlation_id}")
    return int(brokers)


def _read_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def connect_plugins(url: str, timeout: float = 3.0) -> list[str]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/connector-plugins", timeout=timeout) as r:  # noqa: S310
        return [p["class"] for p in json.load(r)]


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["kafka"] and len(argv) == 2:
            n = kafka_metadata_brokers(argv[1])
            if n < 1:
                print(f"kafka at {argv[1]} answered metadata with no broker", file=sys.stderr)
                return 1
            return 0
        if argv[:1] == ["connect"] and len(argv) == 3:
            plugins = connect_plugins(argv[1])
            if argv[2] not in plugins:
                print(f"connect at {argv[1]} does not list plugin {argv[2]}", file=sys.stderr)
                return 1
            return 0
    except (OSError, ValueError, urllib.error.URLError, struct.error) as exc:
        print(f"{argv[0]} probe failed: {exc}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
