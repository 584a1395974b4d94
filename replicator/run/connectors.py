"""`replicator connectors apply|status|delete`: connector config files to the Connect worker and back,
and a connector removed for good."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from replicator.config import Settings
from replicator.connect.client import ConnectClient
from replicator.connect.configs import (
    ConnectorConfigError,
    load_connector_dir,
    mask_secrets,
    silent_loss_settings,
)
from replicator.core.errors import Fatal, ReplicatorError, one_line
from replicator.pg.session import connect
from replicator.run.assembly import capture
from replicator.target.store import ControlStore


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


def delete_connector(
    settings: Settings,
    name: str,
    drop_slot: bool,
    dry_run: bool,
    say: Callable[[str], None],
    force: bool = False,
) -> dict[str, Any]:
    """Remove a connector for good: delete it from Connect and, with `drop_slot`, drop its
    replication slot on the source once its task let go of it (a slot left behind pins WAL).
    Its publication is named, not dropped (other connectors may publish through it). Connect
    keeps the deleted connector's source offsets: one created again with that name would resume
    at a position the dropped slot no longer has. The migration's own connector (the one the
    settings name) is refused while the source is authoritative, unless `force`."""
    client = _client(settings)
    config = client.config(name)
    if config is None:
        raise ReplicatorError(
            f"connector {name} does not exist in Connect at {settings.connect.url};"
            " `replicator connectors status` lists the connectors there"
        )
    if not force:
        refuse_before_cutover(settings, name)
    slot = config.get("slot.name", "debezium")  # Debezium's defaults
    publication = config.get("publication.name", "dbz_publication")
    done = {"name": name, "slot": slot, "publication": publication, "deleted": False, "slot_dropped": False}
    if dry_run:
        say(
            f"would delete connector {name}"
            + (f" and drop its slot {slot} on the source" if drop_slot else "")
        )
        return done
    client.delete(name)
    done["deleted"] = True
    say(f"deleted connector {name}")
    if drop_slot:
        _drop_slot(settings, slot, settings.connect.wait_running_s)
        done["slot_dropped"] = True
        say(f"dropped replication slot {slot} on the source")
    else:
        say(f"its replication slot {slot} stays on the source and pins WAL: --drop-slot drops it")
    say(
        f"left: publication {publication} on the source (DROP PUBLICATION when nothing else uses it);"
        f" Connect's stored offsets of {name} (create it again under a new name for a fresh snapshot)"
    )
    return done


def refuse_before_cutover(settings: Settings, name: str) -> None:
    """Deleting the connector that captures the migration's changes (the one the settings or the
    spec's `capture:` name) before a cutover stops capture: nothing fails, the target just stops
    following the source. Refused while the target's authority row says `source` (or cannot be
    read); any other connector, or after the cutover, passes."""
    try:
        migration = capture(settings).connector
    except ReplicatorError:  # no readable spec: only the settings can name it
        migration = settings.connector
    if name != migration:
        return
    why = (
        f"connector {name} captures this migration's changes (the settings or the spec name it) and {{}}:"
        " deleting it stops capture and the target silently stops following the source; cut over first"
        " (`replicator cutover`), or pass --force to delete it anyway"
    )
    try:
        with ControlStore.open(settings) as store:
            authority = store.authority()["authority"] if store.initialized() else "source"
    except ReplicatorError as exc:
        raise Fatal(why.format(f"the target's authority could not be read ({one_line(exc)})")) from exc
    if authority == "source":
        raise Fatal(why.format("the source is still authoritative (no cutover)"))


def _drop_slot(settings: Settings, slot: str, wait_s: float) -> None:
    """Drop `slot` once no process holds it (the deleted connector's task lets go within seconds)."""
    deadline = time.monotonic() + wait_s
    try:
        with connect(settings.source, "source", autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (slot,)
                ).fetchone()
                if row is None:
                    return  # never created, or dropped already
                if not row[0]:
                    conn.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (slot,))
                    return
                if time.monotonic() > deadline:
                    raise Fatal(
                        f"replication slot {slot} is still in use {wait_s:g}s after its connector was"
                        " deleted; fix: find its holder in pg_stat_replication, then"
                        f" SELECT pg_drop_replication_slot('{slot}') on the source"
                    )
                time.sleep(0.5)  # until the task's walsender exits
    except psycopg.Error as exc:
        raise Fatal(
            f"source: dropping replication slot {slot}: {one_line(exc)}; fix: run"
            f" SELECT pg_drop_replication_slot('{slot}') as a role with REPLICATION"
        ) from exc
