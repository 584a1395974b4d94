"""`replicator errors ...`: the error records in the target's control schema; `retry` applies
chosen records again through the guarded apply, `resolve` closes them without applying."""

from __future__ import annotations

import getpass
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from replicator.config import Settings
from replicator.core.errors import ConfigError, Fatal, Transient
from replicator.core.intents import PreparedBatch
from replicator.core.mapping import load_spec
from replicator.core.model import BatchResult, KafkaRef, Record
from replicator.core.retry import Chosen
from replicator.run.assembly import checked_plan, decoder, source_now
from replicator.run.daemon import refuse_when_target_authoritative, remap
from replicator.runlog import RunLog, new_run_id
from replicator.target.retry import RetryTables
from replicator.target.store import ControlStore
from replicator.target.writer import BatchWriter


def error_line(r: Mapping[str, Any]) -> str:
    """One record of `errors list` in one line; a part it lacks (a rule's rejection has no
    SQLSTATE) is left out with its space (trial 9: a lookup's line had a double space)."""
    parts = [
        f"#{r['id']} {r['kind']} {r['topic']}[{r['partition']}]@{r['kafka_offset']}",
        r["target_table"] or "-",
        f"key={r['key'] or '-'}",
        r["rule_id"],
        r["sqlstate"],
        r["message"],
        f"[{r['resolution']}]" if r["resolved_at"] else None,
    ]
    return " ".join(str(p) for p in parts if p)


def list_errors(
    settings: Settings, kind: str | None, limit: int, state: str = "all", **filters: str | None
) -> list[dict[str, Any]]:
    """The newest error records; `filters`: table, rule, sqlstate, run; `state`: open, resolved, all."""
    with ControlStore.open(settings) as store:
        store.require()
        return store.error_records(kind, limit, state=state, **filters)


def count_errors(
    settings: Settings, kind: str | None, state: str = "all", **filters: str | None
) -> list[dict[str, Any]]:
    """How many error records match, per target table, rule and SQLSTATE (`errors list --counts`)."""
    with ControlStore.open(settings) as store:
        store.require()
        return store.record_counts(kind, state=state, **filters)


def count_line(r: Mapping[str, Any]) -> str:
    """One group of `errors list --counts`: records, target table, rule, SQLSTATE (if any)."""
    return " ".join(
        str(p) for p in (r["records"], r["target_table"] or "-", r["rule_id"], r["sqlstate"]) if p
    )


@dataclass(slots=True)
class RetryResult:
    """What `errors retry` did: the records it closed, those still failing (id -> this attempt's
    reason), the rows it wrote per table and op, and the events that were older than their row."""

    run_id: str
    chosen: int = 0
    closed: list[int] = field(default_factory=list)
    failing: dict[int, str] = field(default_factory=dict)
    applied: Counter[str] = field(default_factory=Counter)
    skipped_older: int = 0
    closed_older: int = 0  # of `closed`, the records whose event was older than its row (no-ops)

    def counts(self, dry_run: bool = False) -> str:
        """`closed N (A applied as R target rows, O older than their row: no-ops), still failing F`:
        A + O = N, in records; R counts rows, fewer than A when several events of one row fold into
        one write (trial 11 printed "closed 101; rows written 50, older than their row 40")."""
        failing = f"still failing {len(self.failing)}"
        if dry_run:
            return f"would close {len(self.closed)}, {failing}"
        rows = sum(self.applied.values())
        applied = len(self.closed) - self.closed_older
        return (
            f"closed {len(self.closed)} ({applied} applied as {rows} target row{'' if rows == 1 else 's'},"
            f" {self.closed_older} older than their row: no-ops), {failing}"
        )


def _chosen(
    store: ControlStore, ids: Sequence[int], every: bool, limit: int, filters: dict[str, str | None]
) -> list[dict[str, Any]]:
    if not (ids or every or any(v is not None for v in filters.values())):
        raise ConfigError(
            "name the error records: ids, or --table/--rule/--sqlstate/--run, or --all for every open one"
        )
    rows = store.open_errors(ids, limit, **filters)
    missing = sorted(set(ids) - {r["id"] for r in rows})
    if missing:
        raise ConfigError(
            f"not open error records: {', '.join(f'#{i}' for i in missing)} "
            "(`replicator errors list --state all` shows them and their resolution)"
        )
    return rows


def retry_errors(
    settings: Settings,
    ids: Sequence[int],
    limit: int,
    every: bool = False,
    dry_run: bool = False,
    **filters: str | None,
) -> RetryResult:
    """Apply the chosen open error records again with the current spec, in transactions of at most
    `batch.max_events` events. A row refused again is an error record at once (never held)."""
    run_id = new_run_id()
    group = settings.kafka.group_id
    log = RunLog(run_id, settings.log_format)
    plan, _ = checked_plan(settings)
    now = source_now(settings, load_spec(settings.mapping))  # read after every record's event
    dec = decoder(settings)
    with ControlStore.open(settings) as store:
        store.require(upgrade=not dry_run)  # its writes need this version's columns (resolved_by)
        refuse_when_target_authoritative(store.authority())
        rows = _chosen(store, ids, every, limit, dict(filters))
        if not dry_run:
            store.start_run(run_id, "retry", group, settings.summary())
    result = RetryResult(run_id, chosen=len(rows))
    step = settings.batch.max_events
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        chosen = [Chosen(r["id"], _ref(r), r["target_table"], r["key"]) for r in chunk]
        records = [
            Record(c.ref, _raw(r["raw_key"]), _raw(r["raw_value"]))
            for c, r in zip(chosen, chunk, strict=True)
        ]
        by_table, failures = remap(records, dec, plan, now)
        if dry_run:  # the spec alone: the target's constraints are checked only by a real retry
            mapped = {(f.ref, str(f.target) if f.target else None): f.message for f in failures}
            for c in chosen:
                reason = mapped.get((c.ref, c.target_table))
                if reason is None:
                    result.closed.append(c.record_id)
                else:
                    result.failing[c.record_id] = reason
            continue
        target = RetryTables(plan, settings.control_schema, group, run_id, chosen)
        writer = BatchWriter(settings.target, target, settings.control_schema, group, run_id, may_hold=False)
        batch = PreparedBatch(
            by_table=by_table,
            failures=tuple(failures),
            next_offsets={},
            counts=Counter(),
            events=len(records),
        )
        try:
            applied = _with_retry(partial(writer.apply, batch), log)
        finally:
            writer.close()
        result.closed += target.settled.closed
        refs = {c.record_id: c.ref for c in chosen}
        result.closed_older += sum(1 for i in target.settled.closed if refs[i] in applied.older_refs)
        result.failing.update({i: f.message for i, f in target.settled.failing.items()})
        result.applied.update(applied.applied)
        result.skipped_older += applied.skipped_older
    if not dry_run:
        totals = {
            "closed": len(result.closed),
            "failing": len(result.failing),
            "applied": dict(result.applied),
        }
        with ControlStore.open(settings) as store:
            store.end_run(run_id, "done", totals)
        log.event("errors_retried", chosen=result.chosen, **totals)
    return result


def resolve_errors(
    settings: Settings,
    ids: Sequence[int],
    reason: str,
    limit: int,
    every: bool = False,
    **filters: str | None,
) -> list[int]:
    """Close the chosen open error records without applying them; returns their ids."""
    if not reason.strip():
        raise ConfigError("--reason is required: say why these records are closed without applying them")
    operator = settings.cutover.operator or getpass.getuser()
    with ControlStore.open(settings) as store:
        store.require(upgrade=True)  # its write needs this version's columns (resolved_by)
        rows = _chosen(store, ids, every, limit, dict(filters))
        return store.resolve_errors([r["id"] for r in rows], f"resolved by {operator}: {reason.strip()}")


def _with_retry(action: Callable[[], BatchResult], log: RunLog, attempts: int = 6) -> BatchResult:
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Transient as exc:
            if attempt == attempts:
                raise Fatal(f"errors retry: the target keeps failing: {exc}") from exc
            log.event("retry", what="errors retry", attempt=attempt, error=str(exc), wait_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


def _ref(row: dict[str, Any]) -> KafkaRef:
    return KafkaRef(row["topic"], row["partition"], row["kafka_offset"])


def _raw(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def show_error(settings: Settings, record_id: int) -> dict[str, Any]:
    """One error record, its raw key and value readable: JSON as JSON, other bytes as hex."""
    with ControlStore.open(settings) as store:
        store.require()
        row = store.error_record(record_id)
    if row is None:
        raise ConfigError(f"no error record #{record_id}; `replicator errors list` shows the ids")
    for column in ("raw_key", "raw_value"):
        row[column] = readable(row[column])
    return row


def readable(raw: bytes | memoryview | None) -> Any:
    """A raw Kafka key or value as the operator reads it: parsed JSON, else `{"hex": ...}` (e.g. the
    Avro wire format, which starts with byte 0 and a schema id)."""
    if raw is None:
        return None
    data = bytes(raw)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return {"hex": data.hex(), "bytes": len(data)}
