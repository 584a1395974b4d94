"""`replicator run` (and the engine under `shadow`): assemble the loop and run it.

Start: a run id, the checked plan (refuses a spec that does not check), the
control schema (live mode owns it), a refusal if a topic's partition count
changed since the last run (a key would move partition and lose its
ordering), the run row. End: totals in the run log and the run row; a halt
re-raises its `Fatal` with its cause.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from replicator.config import Settings
from replicator.core.errors import Fatal, ReplicatorError, one_line
from replicator.core.mapping.plan import Plan
from replicator.core.model import Partition
from replicator.kafka.clients import Metadata
from replicator.kafka.consumer import KafkaSource
from replicator.run.assembly import checked_plan, decoder
from replicator.run.loop import ConsumerLoop, LoopOptions, Sink
from replicator.runlog import RunLog, new_run_id
from replicator.target.store import ControlStore
from replicator.target.writer import BatchWriter, ErrorPolicy, LiveTables

SinkFactory = Callable[[Plan, str, str], Sink]  # (plan, group, run id) -> sink


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One run of the pipeline: what to consume, where it ends, where it writes."""

    mode: Literal["run", "shadow"] = "run"
    group: str | None = None  # default: the configured group
    stop_when_caught_up: bool = False
    on_error: Literal["record", "halt"] = "record"
    stop_at: Mapping[Partition, int] = field(default_factory=dict)  # a range's end (exclusive)
    sink: SinkFactory | None = None  # default: the live target writer


def run_daemon(settings: Settings, request: RunRequest) -> dict[str, Any]:
    """Run the pipeline until stopped (SIGTERM/SIGINT) or caught up; return the run's totals."""
    run_id = new_run_id()
    log = RunLog(run_id, settings.log_format)
    started = time.monotonic()
    group = request.group or settings.kafka.group_id
    log.event(
        "start",
        mode=request.mode,
        stop_when_caught_up=request.stop_when_caught_up,
        on_error=request.on_error,
        **{**settings.summary(), "group_id": group},
    )
    plan, problems = checked_plan(settings)
    for p in problems:
        if p.severity == "warning":
            log.event("mapping_warning", problem=str(p))
    with ControlStore.open(settings) as store:
        if request.mode == "run":
            store.ensure()
            with Metadata(settings.kafka) as metadata:
                store.guard_partition_counts(metadata.partition_counts(plan.topics))
        else:
            store.require()
        store.start_run(run_id, request.mode, group, settings.summary())
    if request.sink is not None:
        sink = request.sink(plan, group, run_id)
    else:
        live = LiveTables(plan, settings.control_schema, group, run_id, settings.batch.reorder_retries)
        sink = BatchWriter(
            settings.target, live, settings.control_schema, group, run_id, ErrorPolicy(request.on_error)
        )
    source = KafkaSource(
        settings.kafka,
        group,
        on_error=lambda msg, retriable: log.event("kafka_error", error=msg, retriable=retriable),
    )
    loop = ConsumerLoop(
        source,
        sink,
        decoder(settings),
        plan,
        log,
        LoopOptions(
            limits=settings.batch,
            auto_offset_reset=settings.kafka.auto_offset_reset,
            stop_when_caught_up=request.stop_when_caught_up,
            stop_at=request.stop_at,
        ),
    )
    previous = {s: signal.signal(s, loop.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    status, halt = "done", None
    try:
        loop.run()
    except Fatal as exc:
        status, halt = "halted", exc
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    summary = {**loop.totals.as_dict(), "runtime_s": round(time.monotonic() - started, 3)}
    reason = str(halt) if halt else None
    log.event("end", status=status, reason=reason or "-", **summary)
    try:
        with ControlStore.open(settings) as store:
            store.end_run(run_id, status, {**summary, "reason": reason})
    except ReplicatorError as exc:
        log.event("warning", message=f"could not record the run end: {one_line(exc)}")
    if halt is not None:
        raise halt
    return {"run_id": run_id, **summary}
