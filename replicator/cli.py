"""Command line: `replicator <command>`; each exits non-zero with one line on failure.

The CLI parses arguments, builds settings and calls one module per command; it
holds no business logic. Secrets are never accepted as flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from replicator.config import Settings, load_settings

Handler = Callable[[argparse.Namespace, Settings], int]


class CliError(Exception):
    """A failure reported as one line on stderr with exit code 1."""


def _emit(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


# ---------------------------------------------------------------- connectors
def cmd_connectors_apply(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.connect_client import ConnectClient
    from replicator.connectors import load_connector_dir

    specs = load_connector_dir(Path(args.dir), os.environ)
    client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
    results: list[dict[str, Any]] = []
    for spec in specs:
        action, state = client.apply(spec, wait_s=settings.connect.wait_running_s)
        results.append(
            {"name": spec.name, "action": action, "connector": state.connector, "tasks": list(state.tasks)}
        )
    text = "\n".join(
        f"{r['name']}: {r['action']}; connector {r['connector']}, tasks {', '.join(r['tasks'])}"
        for r in results
    )
    _emit(results, args.json, text)
    return 0


def cmd_connectors_status(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.connect_client import ConnectClient
    from replicator.connectors import mask_secrets

    client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
    rows: list[dict[str, Any]] = []
    for name in sorted(client.connectors()):
        state = client.state(name)
        config = client.config(name) or {}
        rows.append(
            {
                "name": name,
                "connector": state.connector if state else "absent",
                "tasks": list(state.tasks) if state else [],
                "trace": (state.trace or "").strip().splitlines()[0] if state and state.trace else None,
                "config": mask_secrets(config) if args.verbose else None,
            }
        )
    if not rows:
        _emit(rows, args.json, f"no connectors on {settings.connect.url}")
        return 0
    lines = []
    for r in rows:
        line = f"{r['name']}: connector {r['connector']}, tasks {', '.join(r['tasks']) or 'none'}"
        if r["trace"]:
            line += f" ({r['trace']})"
        lines.append(line)
    _emit(rows, args.json, "\n".join(lines))
    return 0 if all(r["connector"] == "RUNNING" for r in rows) else 1


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replicator",
        description="Change-data-capture replicator for live PostgreSQL migrations.",
    )
    parser.add_argument("--config", type=Path, help="YAML settings file (env REPLICATOR_* wins)")
    sub = parser.add_subparsers(dest="command", required=True)

    connectors = sub.add_parser("connectors", help="Kafka Connect connector configs")
    csub = connectors.add_subparsers(dest="connectors_command", required=True)
    apply = csub.add_parser("apply", help="validate, create or update, wait until RUNNING")
    apply.add_argument("--dir", default="connectors", help="directory of *.json configs")
    apply.add_argument("--json", action="store_true")
    apply.set_defaults(handler=cmd_connectors_apply)
    status = csub.add_parser("status", help="state of every connector on the worker")
    status.add_argument("--json", action="store_true")
    status.add_argument("--verbose", action="store_true", help="include configs (secrets masked)")
    status.set_defaults(handler=cmd_connectors_status)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Commands contributed by other modules register here (kept out of the core parser).
_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        settings = load_settings(args.config)
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, never a traceback with secrets in locals
        if os.environ.get("REPLICATOR_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"replicator: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
