"""`replicator connectors apply|status`: connector config files to the Connect worker and back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from replicator.config import Settings
from replicator.connect.client import ConnectClient
from replicator.connect.configs import (
    ConnectorConfigError,
    load_connector_dir,
    mask_secrets,
    silent_loss_settings,
)


def _client(settings: Settings) -> ConnectClient:
    return ConnectClient(settings.connect.url, settings.connect.timeout_s)


def apply_dir(settings: Settings, directory: Path, restart_failed: bool = False) -> list[dict[str, Any]]:
    """Validate, create or update (only when changed) and wait until RUNNING, per config file;
    `restart_failed`: restart a FAILED connector or task once first. A config under which
    Debezium would change values unseen (`silent_loss_settings`) is refused before any is sent."""
    client = _client(settings)
    results: list[dict[str, Any]] = []
    specs = load_connector_dir(directory, os.environ)
    losses = [line for spec in specs for line in silent_loss_settings(spec)]
    if losses:
        raise ConnectorConfigError(
            f"{len(losses)} connector setting(s) would change values without an error: "
            + " | ".join(losses)
            + " (nothing was applied)"
        )
    for spec in specs:
        action, state = client.apply(
            spec,
            wait_s=settings.connect.wait_running_s,
            restart_failed=restart_failed,
            settle_s=settings.connect.settle_s,
        )
        results.append(
            {
                "name": spec.name,
                "action": action,
                "connector": state.connector,
                "tasks": list(state.tasks),
                "settled_s": settings.connect.settle_s,
            }
        )
    return results


def connector_states(settings: Settings, verbose: bool) -> list[dict[str, Any]]:
    """Every connector on the worker: state, tasks, the first trace line, the config (masked)."""
    client = _client(settings)
    rows: list[dict[str, Any]] = []
    for name in sorted(client.connectors()):
        state = client.state(name)
        config = client.config(name) or {}
        rows.append(
            {
                "name": name,
                "connector": state.connector if state else "absent",
                "tasks": list(state.tasks) if state else [],
                "trace": state.cause if state and state.trace else None,
                "config": mask_secrets(config) if verbose else None,
            }
        )
    return rows
