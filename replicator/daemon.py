"""`replicator run`: assemble the pipeline with the target writer as its sink and run it.

Start: a run id, the checked plan (refuses a spec that does not check), the
control schema, a refusal if a topic's partition count changed since the
last run (a key would move partition and lose its ordering). End: totals in
the run log and in the control schema's `run` table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Literal

import psycopg
from confluent_kafka import Consumer
from psycopg import sql

from replicator import control
from replicator.config import Settings
from replicator.consumer import ConsumerLoop
from replicator.failures import Fatal, one_line
from replicator.mapping.plan import Plan
from replicator.pipeline import checked_plan, decoder
from replicator.runlog import RunLog, new_run_id
from replicator.writer import TargetWriter


def partition_counts(settings: Settings, topics: list[str]) -> dict[str, int]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "metadata",
            **settings.kafka.options,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10)
    finally:
        consumer.close()
    return {
        t: len(metadata.topics[t].partitions)
        for t in topics
        if t in metadata.topics and metadata.topics[t].error is None
    }


def guard_partition_counts(conn: psycopg.Connection[Any], schema: str, counts: dict[str, int]) -> None:
    """Record partition counts; refuse to run if one changed (keys would move partitions)."""
    tp = control.table(schema, "topic_partitions")
    with conn.transaction():
        seen = dict(
            conn.execute(sql.SQL("SELECT topic, partitions FROM {} FOR UPDATE").format(tp)).fetchall()
        )
        changed = {t: (seen[t], n) for t, n in counts.items() if t in seen and seen[t] != n}
        if changed:
            detail = ", ".join(f"{t}: {a} -> {b}" for t, (a, b) in sorted(changed.items()))
            raise Fatal(
                f"partition count changed ({detail}); keys moved partitions and per-key order is lost. "
                "Changing partition counts during a migration is unsupported: restore the count, or "
                "re-snapshot into an empty target"
            )
        for t, n in counts.items():
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (topic, partitions) VALUES (%s, %s) ON CONFLICT (topic) DO NOTHING"
                ).format(tp),
                (t, n),
            )


def run_daemon(
    settings: Settings,
    stop_when_caught_up: bool = False,
    on_error: Literal["record", "halt"] = "record",
    mode: Literal["run", "shadow"] = "run",
    make_sink: Callable[[Plan, str, str], TargetWriter] | None = None,
    group: str | None = None,
    before_start: Callable[[psycopg.Connection[Any], str], None] | None = None,
    stop_at: dict[tuple[str, int], int] | None = None,
) -> dict[str, Any]:
    """Run the pipeline until stopped (or caught up). `make_sink(plan, group, run_id)` picks
    the final sink: the live target writer by default, the shadow writer for `shadow`."""
    run_id = new_run_id()
    log = RunLog(run_id, settings.log_format)
    started = time.monotonic()
    group = group or settings.kafka.group_id
    log.event(
        "start",
        mode=mode,
        stop_when_caught_up=stop_when_caught_up,
        on_error=on_error,
        **{**settings.summary(), "group_id": group},
    )
    plan, problems = checked_plan(settings)
    for p in problems:
        if p.severity == "warning":
            log.event("mapping_warning", problem=str(p))
    schema = settings.control_schema
    try:
        with psycopg.connect(settings.target.conninfo()) as conn:
            if mode == "run":
                control.ensure(conn, schema)
                guard_partition_counts(conn, schema, partition_counts(settings, list(plan.topics)))
            if before_start is not None:
                before_start(conn, group)
            conn.execute(
                sql.SQL("INSERT INTO {} (run_id, mode, group_id, settings) VALUES (%s, %s, %s, %s)").format(
                    control.table(schema, "run")
                ),
                (run_id, mode, group, json.dumps(settings.summary(), default=str)),
            )
            conn.commit()
    except psycopg.Error as exc:
        raise Fatal(f"target: {one_line(exc)}") from exc
    if make_sink is None:
        writer = TargetWriter(settings.target.conninfo(), plan, schema, group, run_id)
    else:
        writer = make_sink(plan, group, run_id)
    writer.halt_on_error = on_error == "halt"
    if mode == "run":
        writer.reorder_retries = settings.batch.reorder_retries
    loop = ConsumerLoop(
        settings,
        list(plan.topics),
        writer,
        decoder(settings),
        log,
        group_id=group,
        on_error=on_error,
        stop_at=stop_at,
    )
    status, reason = "done", None
    try:
        totals = loop.run(stop_when_caught_up=stop_when_caught_up)
    except Fatal as exc:
        status, reason = "halted", str(exc)
        totals = loop.totals
    summary = {**totals.as_dict(), "runtime_s": round(time.monotonic() - started, 3)}
    log.event("end", status=status, reason=reason or "-", **summary)
    try:
        with psycopg.connect(settings.target.conninfo()) as conn:
            conn.execute(
                sql.SQL("UPDATE {} SET ended_at = now(), status = %s, totals = %s WHERE run_id = %s").format(
                    control.table(schema, "run")
                ),
                (status, json.dumps({**summary, "reason": reason}, default=str), run_id),
            )
    except psycopg.Error as exc:
        log.event("warning", message=f"could not record the run end: {one_line(exc)}")
    if reason:
        raise Fatal(reason)
    return {"run_id": run_id, **summary}
