"""`replicator run` (and the engine under `shadow`): assemble the loop and run it.

Start: a run id, the checked plan (refuses a spec that does not check, except
the tables the source changed under, see `run.assembly.run_plan`), the schema
guard that stops a table whose events no longer match (`run.schema_guard`), the
control schema (live mode owns it), the partition counts recorded (a topic
whose count changed since is logged here and stopped by the loop when
assigned, `run.partition_watch`; other topics run), the run row. End: totals
in the run log and the run row; a halt re-raises its `Fatal` with its cause.
"""

from __future__ import annotations

import gc
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from replicator import compiled
from replicator.config import Settings
from replicator.connect.client import ConnectClient
from replicator.core.decode import DecodeError
from replicator.core.errors import ConfigError, Fatal, ReplicatorError, Transient, one_line
from replicator.core.intents import Intent, to_intents, with_targets
from replicator.core.layout import changes
from replicator.core.mapping import topic_for
from replicator.core.mapping.plan import Plan
from replicator.core.model import ChangeEvent, Failure, Partition, Record, TableRef
from replicator.core.schema_change import SourceNow
from replicator.kafka.clients import Metadata
from replicator.kafka.consumer import Fenced, KafkaSource
from replicator.kafka.logs import route_kafka_logs
from replicator.pg.logs import route_psycopg_logs
from replicator.run.assembly import capture, decoder, live_catalogs, run_plan, source_now
from replicator.run.capture_check import capture_gap_warnings
from replicator.run.heartbeat import Heartbeat
from replicator.run.loop import ConsumerLoop, Decoder, LoopOptions, Sink, undecodable
from replicator.run.marks import CaptureMarks
from replicator.run.metrics import Metrics, MetricsServer
from replicator.run.observer import Health, LoopObserver, observe_all
from replicator.run.partition_watch import PartitionWatch
from replicator.run.progress import progress_observer
from replicator.run.schema_guard import SchemaGuard, topics_of
from replicator.runlog import RunLog, new_run_id
from replicator.target.live import LiveTables
from replicator.target.store import ControlStore
from replicator.target.writer import BatchWriter, ErrorPolicy, Marks, Remap


@dataclass(frozen=True, slots=True)
class WriterParts:
    """What a batch writer needs from the run beside its target: holding machinery."""

    remap: Remap
    marks: Marks
    partition_counts: Mapping[str, int]
    on_holding: Callable[[bool], None]


# The apply thread waits on the target many times per batch; when a reply arrives it needs the
# interpreter lock, which the fetch/decode thread holds for up to the switch interval (5 ms by
# default) before it must let go. 1 ms: 12.5-12.8k -> 16.1-16.8k msg/s in bench/peer.py (rep1).
GIL_SWITCH_INTERVAL_S = 0.001
# A batch allocates hundreds of thousands of short-lived objects, nearly none of them in a reference
# cycle (their counts free them); at the default generation-0 threshold (700 allocations) the cycle
# collector ran every few events and took 11% of the fetch/decode thread. 50,000: -13% CPU and
# -9% wall in bench/peer.py (rep1, compiled); memory stays bounded by the batch.
GC_GEN0_THRESHOLD = 50_000

SinkFactory = Callable[[Plan, str, str, WriterParts], Sink]  # (plan, group, run id, parts) -> sink


def remap(
    records: Sequence[Record], dec: Decoder, plan: Plan, now: SourceNow | None = None
) -> tuple[Mapping[TableRef, list[Intent]], list[Failure]]:
    """Held records decoded and mapped again (the spec may have been fixed since they were held);
    `now`, the source catalog read since, maps those older than a source schema change
    (`core.schema_change.older`)."""
    events: list[ChangeEvent] = []
    failures: list[Failure] = []
    for r in records:
        try:
            decoded = dec.decode(r.ref, r.key, r.value, r.headers)
        except DecodeError as exc:
            failures.append(with_targets(undecodable(dec, r, exc), plan))  # as `prepare` names it
            continue
        if isinstance(decoded, ChangeEvent):
            events.append(decoded)
    intents = to_intents(events, plan, now)
    return intents.by_table, [*failures, *intents.failures]


def capture_marks(settings: Settings, plan: Plan, log: RunLog) -> CaptureMarks:
    """Marks from the configured connector's committed offset and the mapped topics' end offsets."""
    client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
    source = capture(settings)

    def end_offsets() -> dict[Partition, int]:
        with Metadata(settings.kafka) as metadata:
            return metadata.end_offsets(plan.topics)

    return CaptureMarks(
        lambda: client.committed_lsn(source.need_connector("holding rows for a lagging table")),
        end_offsets,
        settings.hold.mark_interval_s,
        lambda kind, **fields: log.event(kind, **fields),
    )


def refuse_when_target_authoritative(authority: Mapping[str, Any]) -> None:
    if authority["authority"] != "source":
        raise target_authoritative(authority, "nothing was started")


def target_authoritative(authority: Mapping[str, Any], outcome: str) -> Fatal:
    return Fatal(
        f"the target is authoritative since {authority['since']:%Y-%m-%d %H:%M:%S%z} (cutover "
        f"{authority['cutover_id']}): a forward replicator must not write to it; {outcome} "
        "(`replicator cutover status`; `replicator cutover rollback` makes the source authoritative)"
    )


def signal_options(settings: Settings, plan: Plan, mode: str) -> dict[str, Any]:
    """The live run also consumes the signal table's topic, to record the drain fences it sees."""
    table = capture(settings).signal_table
    if table is None or mode != "run" or any(t.source == table for t in plan.tables):
        return {}
    return {"signal_table": table, "signal_topic": topic_for(plan.topic_prefix, table)}


#: The one fix for a mapped topic, or every topic under the prefix, missing from Kafka.
_TOPIC_FIX = (
    "Fix, if it should exist: make the spec's topic_prefix (or the rule's topic:) match the connector's"
    " topic.prefix, and check that the connector is running (`replicator connectors status`)"
)


def topic_waits(
    plan: Plan, counts: Mapping[str, int], under_prefix: Sequence[str], where: str, stop_when_caught_up: bool
) -> list[str]:
    """One warning naming every mapped topic Kafka does not have (Debezium creates a table's topic
    with its first event, so an empty table has none), saying what the run does about them. No
    mapped topic and none under the prefix with `stop_when_caught_up`: a Fatal, as that run could
    only wait forever (a wrong topic_prefix, the connector not running, its topics deleted). Each
    ends with the same fix (`_TOPIC_FIX`)."""
    if not counts and not under_prefix:
        if stop_when_caught_up:
            raise Fatal(
                f"no topic under the topic prefix {plan.topic_prefix!r} exists in Kafka at {where}, nor"
                f" any of the spec's {len(set(plan.topics))} mapped topics: nothing to catch up with."
                f" {_TOPIC_FIX}"
            )
        waiting = [
            f"no topic under the topic prefix {plan.topic_prefix!r} exists in Kafka at {where} yet: the run"
            f" waits for the connector to create its topics. {_TOPIC_FIX}"
        ]
    else:
        waiting = []
    missing = sorted(set(plan.topics) - set(counts))
    if missing:  # one line for one or for all: a spec of many empty tables is not a page of warnings
        tables = ", ".join(sorted({str(t.source) for topic in missing for t in plan.tables_for_topic(topic)}))
        one = len(missing) == 1
        head = (
            f"topic {missing[0]} does not exist in Kafka at {where}; table {tables}"
            if one
            else f"{len(missing)} mapped topics do not exist in Kafka at {where}: {', '.join(missing)};"
            f" their tables {tables}"
        )
        if stop_when_caught_up:
            what = (
                "has nothing to read and counts as caught up"
                if one
                else "have nothing to read and count as caught up"
            )
        else:
            what = (
                "waits for it (the run reads it once it exists)"
                if one
                else "wait for them (the run reads each once it exists)"
            )
        waiting.append(
            f"{head} {what}: Debezium creates a table's topic with its first change event, an empty"
            f" table has none. {_TOPIC_FIX}"
        )
    return waiting


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One run of the pipeline: what to consume, where it ends, where it writes."""

    mode: Literal["run", "shadow"] = "run"
    group: str | None = None  # default: the configured group
    stop_when_caught_up: bool = False
    on_error: Literal["record", "halt"] = "record"
    stop_at: Mapping[Partition, int] = field(default_factory=dict)  # a range's end (exclusive)
    sink: SinkFactory | None = None  # default: the live target writer
    progress: bool = False  # progress on stderr (a line redrawn on a terminal, log events otherwise)


def run_daemon(settings: Settings, request: RunRequest) -> dict[str, Any]:
    """Run the pipeline until stopped (SIGTERM/SIGINT) or caught up; return the run's totals."""
    stop = _StopRequest()  # a SIGTERM while the daemon starts stops it cleanly once its loop exists
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    thresholds = gc.get_threshold()
    gc.freeze()  # what was loaded before the run (modules, settings) is never scanned again
    gc.set_threshold(GC_GEN0_THRESHOLD, *thresholds[1:])
    try:
        return _run_daemon(settings, request, stop)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        sys.setswitchinterval(switch_interval)
        for s, handler in previous.items():
            signal.signal(s, handler)


class _StopRequest:
    """The SIGTERM/SIGINT handler: remembered until the loop can take it, then passed on."""

    def __init__(self) -> None:
        self.requested = False
        self._target: Callable[[], None] | None = None

    def __call__(self, *_: Any) -> None:
        self.requested = True
        if self._target is not None:
            self._target()

    def forward_to(self, target: Callable[[], None]) -> None:
        self._target = target
        if self.requested:
            target()


def _run_daemon(settings: Settings, request: RunRequest, stop: _StopRequest) -> dict[str, Any]:
    run_id = new_run_id()
    log = RunLog(run_id, settings.log_format)
    route_kafka_logs(log.event)  # librdkafka's lines as rate-limited events of this run
    route_psycopg_logs(log.event)  # and psycopg's own warnings as events, not raw lines
    started = time.monotonic()
    group = request.group or settings.kafka.group_id
    try:
        connector = capture(settings).connector  # the setting, else the spec's capture block
    except ReplicatorError:
        connector = settings.connector  # a spec that does not load is reported by checked_plan below
    log.event(
        "start",
        mode=request.mode,
        stop_when_caught_up=request.stop_when_caught_up,
        on_error=request.on_error,
        **{**settings.summary(), "group_id": group, "connector": connector},
        per_event_modules=compiled.state(),
    )
    metrics, server = bind_metrics(settings, run_id, group, request.mode)  # a taken port fails here

    def replicating() -> frozenset[str]:
        with ControlStore.open(settings) as store:
            return store.replicating_topics(group)

    checked = run_plan(settings, replicating)
    plan = checked.plan
    for p in checked.problems:
        if p.severity == "warning":
            log.event("mapping_warning", problem=str(p))
        elif p.severity == "error":  # tolerated: the table is judged event by event
            log.event(
                "mapping_warning",
                problem=f"{p} (the spec and the source disagree on table {p.table}: a spec error, or the"
                " source changed under it; it stops at its first event that does not match; check with"
                " `replicator mapping check`)",
            )
    now = source_now(settings, checked.spec)  # read after every event held before this start
    guard = SchemaGuard(
        checked.spec,
        plan,
        live_catalogs(settings, checked.spec),
        suspect=topics_of(plan, checked.tolerated),
        log=log.event,
        now=now,
    )
    signals = signal_options(settings, plan, request.mode)
    with Metadata(settings.kafka) as metadata:
        counts = metadata.partition_counts(plan.topics)
        under_prefix = [] if counts else metadata.topics_under(plan.topic_prefix)
        signal_topic = signals.get("signal_topic")
        signal_exists = bool(signal_topic and metadata.partition_counts([signal_topic]))
        readable = bool(counts) or signal_exists
    for line in topic_waits(
        plan, counts, under_prefix, settings.kafka.bootstrap_servers, request.stop_when_caught_up
    ):  # subscribed anyway: picked up once it exists
        log.event("warning", message=line)
    for line in capture_gap_warnings(settings):
        log.event("warning", message=line)
    with ControlStore.open(settings) as store:
        if request.mode == "run":
            store.ensure()
            refuse_when_target_authoritative(store.authority())
            recorded = store.record_partitions(counts)
        else:
            store.require()
            recorded = store.recorded_partitions()
        store.start_run(run_id, request.mode, group, settings.summary())
    for change in changes(counts, recorded).values():  # stopped by the loop when assigned
        sources = [t.source for t in plan.tables_for_topic(change.topic)]
        log.event(
            "warning", message=f"{change.reason()}; its tables stop when assigned; fix: {change.fix(sources)}"
        )
    dec = decoder(settings)
    marks = capture_marks(settings, plan, log)
    parts = WriterParts(
        remap=lambda records: remap(records, dec, plan, now),
        marks=marks.current,
        partition_counts=counts,
        on_holding=lambda held: marks.wanted.set() if held else marks.wanted.clear(),
    )
    if request.sink is not None:
        sink = request.sink(plan, group, run_id, parts)
    else:
        sink = BatchWriter(
            settings.target,
            LiveTables(plan, settings.control_schema, group, run_id),
            settings.control_schema,
            group,
            run_id,
            ErrorPolicy(request.on_error),
            remap=parts.remap,
            marks=parts.marks,
            partition_counts=parts.partition_counts,
            holding=settings.hold,
            on_holding=parts.on_holding,
        )
    source = KafkaSource(
        settings.kafka,
        group,
        on_error=lambda msg, retriable: log.event("kafka_error", error=msg, retriable=retriable),
        # the mapped topics are in `topic_waits`' line; the signal table's topic is expected to be
        # missing until the first drain writes a fence row (trial 17: a kafka_error at every start)
        said_missing=(set(plan.topics) - set(counts))
        | ({signal_topic} if signal_topic and not signal_exists else set()),
    )
    watch = PartitionWatch(source.partition_counts, partial(recorded_counts, settings, request.mode))
    observers: list[LoopObserver] = [metrics] if metrics is not None else []
    if request.progress:
        label = "shadow" if request.mode == "shadow" else "catch-up"
        observers.append(progress_observer(label, log, caps=request.stop_at))
    observer = observe_all(observers)
    loop = ConsumerLoop(
        source,
        sink,
        dec,
        plan,
        log,
        LoopOptions(
            limits=settings.batch,
            auto_offset_reset=settings.kafka.auto_offset_reset,
            stop_when_caught_up=request.stop_when_caught_up,
            nothing_to_read=not readable,
            stop_at=request.stop_at,
            source_now=now,
            **signals,
        ),
        observer=observer,
        verdict=guard,
        watch=watch,
    )
    stop.forward_to(loop.request_stop)
    status, halt = "done", None
    flipped: list[Mapping[str, Any]] = []  # the authority row, once a cutover flipped while running

    def on_flipped(authority: Mapping[str, Any]) -> None:
        flipped.append(authority)
        loop.request_stop()

    heartbeat = Heartbeat(
        settings,
        run_id,
        lambda message: log.event("warning", message=message),
        on_flipped if request.mode == "run" else None,
    )
    heartbeat.start()
    marks.start()
    if server is not None:
        server.start()
        log.event("metrics", url=f"http://{settings.metrics.host}:{server.port}/metrics")
    try:
        loop.run()
    except Fatal as exc:
        status, halt = end_of(exc)
        if halt is None:  # the newer member has the partitions now: this process ends as stopped
            log.event("fenced", message=one_line(exc))
        elif metrics is not None:
            metrics.halted(one_line(exc))
    finally:
        marks.stop()
        heartbeat.stop()
        if server is not None:
            server.stop()
    if halt is None and flipped:  # an idle daemon learns of the flip from its heartbeat
        status, halt = "halted", target_authoritative(flipped[0], "this forward replicator stops")
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
    return {"run_id": run_id, **summary, "stopped": sorted({s.line() for s in loop.stopped.values()})}


def end_of(exc: Fatal) -> tuple[str, Fatal | None]:
    """How a run that raised `exc` ends: (status, the reason it halted). A member fenced by a newer
    one with its instance id ends `done`: that member (its successor, or a second process given the
    same id by mistake) owns its partitions and applies them, so the group's work goes on; ended
    `halted`, `status` called its tables HALTED (exit 1) while the successor applied them, until a
    run with its instance id started again (trials 13 and 14: a restarted `run --processes`, a
    switch to one process). Its `fenced` event names both causes."""
    if isinstance(exc, Fenced):
        return "done", None
    return "halted", exc


def recorded_counts(settings: Settings, mode: str, found: Mapping[str, int]) -> dict[str, int]:
    """The recorded partition counts of `found`'s topics; the live run records a topic seen for the
    first time (the shadow only reads: the live group's record is the one both compare with). A
    target that does not answer is `Transient`: the loop compares again later, it does not halt."""
    try:
        with ControlStore.open(settings) as store:
            if mode == "run":
                return store.record_partitions(found)
            return {t: n for t, n in store.recorded_partitions().items() if t in found}
    except ReplicatorError as exc:
        raise Transient(f"reading the recorded partition counts: {one_line(exc)}") from exc


def bind_metrics(
    settings: Settings, run_id: str, group: str, mode: str
) -> tuple[Metrics | None, MetricsServer | None]:
    """The metrics and health endpoints when `REPLICATOR_METRICS__PORT` is set (else none), bound
    to their port but not serving yet."""
    port, host = settings.metrics.port, settings.metrics.host
    if port == 0:
        return None, None
    # A batch may take up to max.poll.interval.ms before Kafka considers the member stuck: so may the loop.
    health = Health(stale_after_s=settings.kafka.max_poll_interval_ms / 1000)
    metrics = Metrics(run_id, group, mode, health)
    try:
        server = MetricsServer(host, port, metrics)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); fix: REPLICATOR_METRICS__PORT"
            " (a free port, or 0 for off) or REPLICATOR_METRICS__HOST"
        ) from exc
    return metrics, server
