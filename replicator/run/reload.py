"""`replicator reload --table T`: a table reloaded through Debezium's incremental snapshot.

An `execute-snapshot` signal goes into the connector's signal table for the source tables behind
the named ones (a target table names its source). Debezium reads them in chunks, interleaved with
streaming and deduplicated against it, into the same topics; the running replicator applies the
rows through the guarded path (a snapshot row at a later offset of the key's partition is newer
than what the target holds, so a row missing or damaged in the target is written again, and a row
changed since is not regressed: streaming after the chunk wins). Done when the connector's offsets
no longer carry an incremental snapshot and a drain has seen everything up to then applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from replicator.config import Settings
from replicator.connect.client import ConnectClient
from replicator.core.errors import ConfigError, Fatal
from replicator.core.mapping.catalog import Catalog
from replicator.core.mapping.plan import Plan
from replicator.core.model import TableRef
from replicator.pg.catalog import read_catalog
from replicator.pg.session import connect
from replicator.run.assembly import capture, target_plan
from replicator.run.drain import check_capture, drain, held_text
from replicator.run.status import group_members, run_status, runs_beating
from replicator.source.signal import write_snapshot_signal
from replicator.target.store import ControlStore

POLL_S = 1.0
SAY_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Reloaded:
    signal_id: str
    sources: tuple[str, ...]
    snapshot_s: float
    applied_s: float
    held_elsewhere: tuple[tuple[str, int, str], ...] = ()  # (table, rows, waiting for): not reloaded


def reload_sources(plan: Plan, names: list[str]) -> list[TableRef]:
    """The source tables to snapshot for `names` (source or target tables of the spec)."""
    out: list[TableRef] = []
    for name in names:
        try:
            ref = TableRef.parse(name)
        except ValueError as exc:
            raise ConfigError(f"--table {name!r}: {exc}; name it as schema.table") from exc
        found = [t.source for t in plan.tables if ref in (t.source, t.target)]
        if not found:
            mapped = ", ".join(sorted({str(t.target) for t in plan.tables}))
            raise ConfigError(
                f"--table {name}: the spec maps no such source or target table (targets: {mapped})"
            )
        out += [s for s in dict.fromkeys(found) if s not in out]  # a source table two rules read: once
    return out


def without_primary_key(catalog: Catalog, sources: list[TableRef]) -> list[TableRef]:
    """The tables Debezium's incremental snapshot skips (it reads in primary-key order)."""
    return [s for s in sources if (t := catalog.table(s)) is not None and not t.primary_key]


def snapshot_running(offsets: Mapping[str, Any] | None) -> bool:
    """Whether the connector's committed offsets carry an incremental snapshot in progress."""
    return any(
        key.startswith("incremental_snapshot")
        for entry in (offsets or {}).get("offsets", [])
        for key in (entry.get("offset") or {})
    )


def no_applier(group: str, members: list[str | None]) -> str:
    """Why a reload does not start when no `replicator run` of the group beats in the target (the
    same count `status` prints); Kafka's `members` only explain a group that still looks alive."""
    listed = (
        f" (Kafka still lists {len(members)} member{'s' if len(members) != 1 else ''} of it: a member"
        " stays listed for its session.timeout.ms after its process ended, and a static one also"
        " after it halted or stopped; `replicator status` shows both)"
        if members
        else ""
    )
    return (
        f"reload: no `replicator run` of group {group} beats in the target to apply the snapshot{listed};"
        " start it first"
    )


def reload_tables(
    settings: Settings, names: list[str], timeout_s: float, say: Callable[[str], None]
) -> Reloaded:
    plan = target_plan(settings)
    sources = reload_sources(plan, names)
    with connect(settings.source, "source") as conn:
        keyless = without_primary_key(read_catalog(conn, sorted({s.schema for s in sources})), sources)
    if keyless:
        raise ConfigError(
            f"reload: {', '.join(map(str, keyless))} has no primary key, and Debezium's incremental "
            "snapshot skips such a table (it would report done having read nothing); fix: add a "
            "primary key to it, then reload"
        )
    cap = capture(settings)
    connector = cap.need_connector("reload")
    signal_table = cap.need_signal_table("reload")
    group = settings.kafka.group_id
    with ControlStore.open(settings) as store:
        store.require()
        beating = runs_beating(run_status(store, settings.heartbeat_s), group, "run")
    if not beating:  # before anything is asked of the capture: nothing would apply what it sends
        raise Fatal(no_applier(group, group_members(settings, group)))
    client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
    check_capture(client, connector)
    started = time.monotonic()
    deadline = started + timeout_s
    signal_id, lsn = write_snapshot_signal(settings.source, signal_table, sources)
    say(f"reload: incremental snapshot of {', '.join(map(str, sources))} requested (signal {signal_id})")
    said = started
    while True:
        check_capture(client, connector)
        if client.flushed_lsn(connector) >= lsn and not snapshot_running(client.offsets(connector)):
            break
        now = time.monotonic()
        if now > deadline:
            raise Fatal(
                f"reload timed out (--timeout {timeout_s:.0f}s) with the snapshot of "
                f"{', '.join(map(str, sources))} still running; it goes on in the connector: run reload again"
                " with a longer --timeout to wait for it, or watch `replicator connectors status`"
            )
        if now - said >= SAY_EVERY_S:
            say(f"reload: snapshot running for {now - started:.0f}s")
            said = now
        time.sleep(POLL_S)  # polling Connect's offsets until the snapshot is done
    snapshot_s = time.monotonic() - started
    say(f"reload: snapshot done in {snapshot_s:.1f}s; waiting for the group to apply it")
    drained = drain(
        settings,
        list(plan.topics),
        connector,
        str(signal_table),
        max(1.0, deadline - time.monotonic()),
        group,
        # rows held in other tables are not the reload's to wait for (they kept it waiting until
        # --timeout, an hour by default, though the reloaded rows had landed)
        frozenset(str(t.target) for t in plan.tables if t.source in sources),
    )
    if drained.held_elsewhere:
        say(
            f"reload: note: rows of tables not reloaded are held back ({held_text(drained.held_elsewhere)});"
            " see `replicator status`"
        )
    return Reloaded(signal_id, tuple(map(str, sources)), snapshot_s, drained.seconds, drained.held_elsewhere)
