"""`replicator cutover`: gates, fence, drain, sequences, flip; `--resume`, `--abort`, `rollback`, `status`.

The state machine is `core.cutover`. Each step does its work, then records
its transition with an audit event (`ControlStore.move_cutover`, atomic) and
mirrors it on the source (`source.mirror`). Every step is safe to run again
after the process died anywhere: the grants to revoke are recorded before
they are revoked; a fence row is simply written again; waits are waited
again; sequences never move backwards; the flip is one target transaction.
The env-only failpoints `cutover_<state>` kill the process right after a state
is recorded (the kill -9 tests).

Steps, in order:
- gates (`core.cutover.evaluate_gates`): nothing changes before all pass;
- fence: revoke the application roles' writes on the mapped source tables
  and on all their partitions (and inheritance children), end their open
  transactions, and prove by probe that no write is possible on any of them;
- drain: a fence row in the signal table; wait until Connect has flushed past
  it, then until the group's target-stored offsets reach the end offsets of
  the mapped topics and the signal topic, the replicator has recorded the
  fence (`fence_seen`: the path end to end) and nothing is held; then the
  target is verified against the (now still) source row by row, and rows only
  in the target are a gate of their own;
- sequences: every sequence of a mapped target table past the largest key and
  the source's sequence, plus the margin; every standalone source sequence of
  the spec's source schemas (no column owns or calls it) with a target
  counterpart (`core.sequence_pairs`) past the source's, plus the margin; a
  source sequence without one is named (the `sequences` gate warns), an
  unreadable one fails the gate and aborts here; target row counts for `rollback`;
- [pause]; flip: authority = target in one target transaction (with the
  flip's transaction id), then on the source.
Any failure from the gates to the flip aborts: the source is unfenced (the
recorded grants given back, a probe proves the roles can write), `aborted` is
recorded with the reason, and the command exits non-zero. `rollback` flips
back only while no write reached the mapped target tables since the flip
(row counts and row versions, under a SHARE lock), then unfences.
"""

from __future__ import annotations

import getpass
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from replicator import failpoints
from replicator.config import Settings
from replicator.connect.client import ConnectClient, ConnectError
from replicator.core.cutover import (
    FENCED_STATES,
    FINAL,
    Bounds,
    CutoverError,
    Facts,
    Gate,
    Report,
    SequencePlan,
    State,
    Step,
    advance,
    evaluate_gates,
    resume_step,
    target_only_gate,
    verify_gate,
)
from replicator.core.errors import Fatal, ReplicatorError, one_line
from replicator.core.lsn import lsn_text
from replicator.core.mapping import topic_for
from replicator.core.mapping.plan import Plan
from replicator.core.model import Partition, TableRef
from replicator.core.report import mapping_report, render_html, render_markdown
from replicator.core.sequence_pairs import Pairing, pair, schema_map
from replicator.kafka.clients import Metadata
from replicator.pg.session import connect
from replicator.run.assembly import capture as configured_capture
from replicator.run.assembly import target_plan
from replicator.run.drain import HELD_EVERY_S, held_progress, held_text, stop_lines
from replicator.run.verify import Baseline, compare, compare_marked, compare_since
from replicator.source import capture, fence, mirror
from replicator.source.signal import write_fence
from replicator.target import app_access, sequences
from replicator.target.store import ControlStore

POLL_S = 0.25  # between checks of a drain condition


@dataclass(frozen=True, slots=True)
class Options:
    accept_errors: bool = False
    accept_target_only: bool = False
    pause_before_flip: bool = False
    timeout_s: float = 300.0

    @staticmethod
    def of(recorded: Mapping[str, Any]) -> Options:
        return Options(**{k: v for k, v in recorded.items() if k in Options.__slots__})


class _Abort(Exception):
    """A step that must not go on: the cutover aborts with this reason."""


class Cutover:
    """One configured cutover: the spec's tables, the connector, the group, both databases."""

    def __init__(self, settings: Settings, say: Callable[[str], None], operator: str | None = None) -> None:
        self.settings = settings
        self.say = say
        self.operator = operator or settings.cutover.operator or getpass.getuser()
        self.plan: Plan = target_plan(settings)
        self.group = settings.kafka.group_id
        self._capture = configured_capture(settings)
        self.roles = settings.cutover.roles()
        self.source_tables = sorted({t.source for t in self.plan.tables})
        self.target_tables = sorted({t.target for t in self.plan.tables})
        self.connect_client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
        self.mirror_schema = settings.cutover.mirror_schema or settings.control_schema
        self._baseline: Baseline | None = None  # the verify before the fence (this process's)

    @property
    def connector(self) -> str:
        return self._capture.need_connector("cutover")

    @property
    def signal_table(self) -> TableRef:
        return self._capture.need_signal_table("cutover")

    @property
    def signal_topic(self) -> str:
        return topic_for(self.plan.topic_prefix, self.signal_table)

    # ------------------------------------------------------------------ sessions
    @contextmanager
    def _store(self) -> Iterator[ControlStore]:
        with ControlStore.open(self.settings) as store:
            yield store

    @contextmanager
    def _source(self) -> Iterator[psycopg.Connection[Any]]:
        with connect(self.settings.source, "source", autocommit=True) as conn:
            try:
                yield conn
            except psycopg.Error as exc:
                raise Fatal(f"source {self.settings.source.describe()}: {one_line(exc)}") from exc

    # ------------------------------------------------------------------ facts and gates
    def facts(self) -> Facts:
        try:
            state = self.connect_client.state(self.connector)
            config = self.connect_client.config(self.connector) or {}
        except ConnectError as exc:
            state, config = None, {}
            self.say(f"connect: {exc}")
        slot_name = config.get("slot.name", "debezium")
        with self._source() as src:
            slot = capture.slot(src, slot_name)
            problems: list[str] = []
            try:
                fence.check_roles(src, self.roles)
                direct = fence.grants(src, self.source_tables, self.roles)
                problems += fence.foreign_writes(src, self.source_tables, self.roles, direct)
            except Fatal as exc:
                direct, problems = [], [str(exc)]
            signal_exists = src.execute(
                "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", self.signal_table
            ).fetchone()
        with self._store() as store:
            store.require()
            stored = store.checkpoints(self.group)
            held = store.held_count(self.group)
            stuck = store.held_count(self.group, older_than_s=self.settings.cutover.max_held_age_s)
            errors = store.open_error_count()
            stopped = tuple(stop_lines(store.stops(self.group)))
            recorded = store.recorded_partitions()
            shadow = store.latest_shadow_errors() if self.settings.cutover.require_shadow else None
        with (
            self._source() as src,
            connect(self.settings.target, "target", autocommit=True) as tgt,
        ):
            pairing = self._pairing(src, tgt)
            found = sequences.find(tgt, self.target_tables)
            app_target = app_access.lacking(tgt, self.roles, self.target_tables, [q.sequence for q in found])
        lag: dict[str, int] = {}
        with Metadata(self.settings.kafka) as metadata:
            counts = metadata.partition_counts(self.plan.topics)
            for p in metadata.partitions(self.plan.topics):
                low, high = metadata.watermarks(p)
                lag[f"{p[0]}[{p[1]}]"] = max(0, high - stored.get(p, low))
            consumers = metadata.group_members(self.group)
        changes = {t: (recorded[t], n) for t, n in counts.items() if t in recorded and recorded[t] != n}
        return Facts(
            connector=self.connector,
            connector_state=state.connector if state else None,
            task_states=state.tasks if state else (),
            slot=slot_name,
            slot_active=slot.active if slot else None,
            retained_wal_bytes=slot.retained_wal_bytes if slot else None,
            lag=lag,
            held_rows=held,
            held_stuck=stuck,
            error_records=errors,
            partition_changes=changes,
            consumers=consumers,
            group=self.group,
            fence_grants=len(direct),
            fence_problems=tuple(problems),
            signal_table=str(self.signal_table),
            signal_table_exists=bool(signal_exists and signal_exists[0]),
            shadow_errors=None
            if not self.settings.cutover.require_shadow
            else (-1 if shadow is None else shadow),
            stopped_tables=stopped,
            sequence_pairs=len(pairing.pairs),
            sequence_warnings=pairing.warnings,
            sequence_problems=pairing.problems,
            app_target_problems=tuple(app_target),
        )

    def gates(self, accept_errors: bool) -> list[Gate]:
        c = self.settings.cutover
        return evaluate_gates(
            self.facts(), Bounds(c.max_lag_events, c.max_retained_wal_bytes, c.max_held_age_s), accept_errors
        )

    def dry_run(self, options: Options) -> tuple[list[Gate], dict[str, Any]]:
        """Every gate's verdict and what a cutover would do; changes nothing anywhere."""
        gates = self.gates(options.accept_errors)
        with self._source() as src:
            to_revoke = fence.grants(src, self.source_tables, self.roles)
        with connect(self.settings.target, "target", autocommit=True) as tgt:
            planned = self._sequence_plans(tgt)
        plan = {
            "revoke": [asdict(g) for g in to_revoke],
            "drain": {
                "connector": self.connector,
                "group": self.group,
                "topics": [*self.plan.topics, self.signal_topic],
                "signal_table": str(self.signal_table),
            },
            "sequences": [{**asdict(p), "what": p.what, "set_to": p.value} for p in planned],
            "options": asdict(options),
        }
        return gates, plan

    # ------------------------------------------------------------------ commands
    def start(self, options: Options) -> Report:
        """A new cutover, run until flipped (or paused, or aborted)."""
        with self._store() as store:
            store.ensure()
            authority = store.authority()
            if authority["authority"] != "source":
                raise CutoverError(
                    f"the target is already authoritative (cutover {authority['cutover_id']}, since "
                    f"{authority['since']:%Y-%m-%d %H:%M:%S%z}); nothing to cut over"
                )
            latest = store.cutover()
            if latest is not None and State(latest["state"]) not in FINAL:
                raise CutoverError(
                    f"cutover {latest['cutover_id']} is {latest['state']}: finish it first with "
                    "`replicator cutover --resume` or `replicator cutover --abort`"
                )
            cutover_id = f"cutover-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
            store.create_cutover(cutover_id, self.operator, asdict(options))
        self.say(f"{cutover_id}: planned by {self.operator}")
        failpoints.hit("cutover_planned")
        return self.resume(cutover_id)

    def resume(self, cutover_id: str | None = None) -> Report:
        """Go on from where the cutover stopped (the latest one when no id is given)."""
        record = self._record(cutover_id)
        options = Options.of(record["options"] or {})
        state = State(record["state"])
        if state in FINAL:
            self._settle_final(record)
            return self.report(record["cutover_id"])
        resumed_pause = state is State.PAUSED
        while True:
            state = State(record["state"])
            if state in FINAL or (state is State.PAUSED and not resumed_pause):
                break
            step = resume_step(state, options.pause_before_flip and not resumed_pause)
            if step is None:
                break
            try:
                self._step(record, step, options)
            except (_Abort, ReplicatorError, psycopg.Error) as exc:
                reason = str(exc) if isinstance(exc, _Abort | ReplicatorError) else one_line(exc)
                try:
                    self._abort(self._record(record["cutover_id"]), reason)
                except (ReplicatorError, psycopg.Error) as failed:
                    raise CutoverError(
                        f"cutover {record['cutover_id']} stopped ({reason}) and could not be aborted "
                        f"({failed}); the source may still be fenced: run `replicator cutover --abort`"
                    ) from exc
                raise CutoverError(f"cutover {record['cutover_id']} aborted: {reason}") from exc
            record = self._record(record["cutover_id"])
            failpoints.hit(f"cutover_{record['state']}")
        if State(record["state"]) is State.PAUSED:
            self.say(
                "paused before the flip; the source is fenced. `replicator cutover --resume` flips, "
                "`replicator cutover --abort` unfences"
            )
        return self.report(record["cutover_id"])

    def abort(self, reason: str) -> Report:
        record = self._record(None)
        if State(record["state"]) in FINAL:
            raise CutoverError(
                f"cutover {record['cutover_id']} is {record['state']}: nothing to abort"
                + ("; `replicator cutover rollback` flips back" if record["state"] == State.FLIPPED else "")
            )
        self._abort(record, reason)
        return self.report(record["cutover_id"])

    def rollback(self, reason: str) -> Report:
        """Authority back to the source and the source unfenced, only if the target was not written."""
        record = self._record(None)
        advance(State(record["state"]), Step.ROLLBACK)  # refuses unless flipped
        written = self._written_since_flip(record)
        if written:
            raise CutoverError(
                f"rollback refused: the target was written after the flip ({', '.join(written)}); those "
                "writes exist only in the target, so the source cannot take authority back without losing "
                "them (a reverse stream is not built)"
            )
        self._unfence(record)
        with self._source() as src:
            mirror.write(src, self.mirror_schema, "source", record["cutover_id"], State.ROLLED_BACK, None)
        self.say(f"rolled back: the source is authoritative and writable again ({reason})")
        return self.report(record["cutover_id"])

    # ------------------------------------------------------------------ steps
    def _record(self, cutover_id: str | None) -> dict[str, Any]:
        with self._store() as store:
            store.require()
            record = store.cutover(cutover_id)
        if record is None:
            raise CutoverError(
                "no cutover recorded"
                + (f" with id {cutover_id}" if cutover_id else "")
                + "; start one with `replicator cutover`"
            )
        return record

    def _move(self, record: Mapping[str, Any], step: Step, **fields: Any) -> State:
        state = State(record["state"])
        nxt = advance(state, step)
        with self._store() as store:
            store.move_cutover(record["cutover_id"], state, nxt, self.operator, **fields)
        self._mirror(record["cutover_id"], nxt, record.get("fence_lsn") or fields.get("fence_lsn"))
        return nxt

    def _mirror(self, cutover_id: str, state: State, fence_lsn: int | None) -> None:
        """The source's copy, once the fence created it (before that nothing changes on the source)."""
        if state in (State.PLANNED, State.GATED):
            return
        authority = "target" if state is State.FLIPPED else "source"
        with self._source() as src:
            mirror.write(src, self.mirror_schema, authority, cutover_id, state, fence_lsn)

    def _step(self, record: dict[str, Any], step: Step, options: Options) -> None:
        if step is Step.GATES_PASSED:
            self._gates(record, options)
        elif step is Step.FENCE:
            self._fence(record)
        elif step is Step.DRAIN:
            self._write_fence(record)
        elif step is Step.DRAINED:
            self._drain(record, options)
        elif step is Step.SEQUENCES:
            self._sequences(record)
        elif step is Step.PAUSE:
            self._move(record, Step.PAUSE)
        elif step is Step.FLIP:
            self._flip(record)

    def _gates(self, record: Mapping[str, Any], options: Options) -> None:
        gates = self.gates(options.accept_errors)
        for g in gates:
            self.say(g.line())
        failed = [g for g in gates if not g.ok]
        if failed:
            raise _Abort("gates failed (nothing was changed): " + " | ".join(g.line() for g in failed))
        self._pre_verify()
        self._move(record, Step.GATES_PASSED, gates=[asdict(g) for g in gates])

    def _pre_verify(self) -> None:
        """Verify while the source is still writable, so that inside the window only what changed
        since (and what differed now) is compared. Differences now are not a failure: rows are in
        motion. Kept in memory: a resumed cutover verifies in full."""
        started = time.monotonic()
        with (
            self._source() as src,
            connect(self.settings.target, "target", autocommit=True) as tgt,
        ):
            diffs, self._baseline = compare_marked(
                self.plan, src, tgt, self.settings.control_schema, self.settings.unavailable_placeholder
            )
        differ = sum(len(b.differed) for b in self._baseline.tables.values())
        full = [str(d.target) for d in diffs if d.target not in self._baseline.tables]
        self.say(
            f"verified before the fence in {time.monotonic() - started:.1f}s: {self._baseline.rows} rows, "
            f"{differ} differ now (in motion or wrong: compared again after the drain)"
            + (f"; compared in full after the drain: {', '.join(full)}" if full else "")
        )

    def _fence(self, record: Mapping[str, Any]) -> None:
        recorded = [fence.Grant.of(d) for d in record.get("revoked") or []]
        with self._source() as src:
            current = fence.grants(src, self.source_tables, self.roles)
            grants = list(dict.fromkeys([*recorded, *current]))
            with self._store() as store:  # recorded before anything is revoked: the abort gives them back
                store.note_cutover(
                    record["cutover_id"], State.GATED, revoked=[g.as_dict() for g in grants], fenced_at=True
                )
            mirror.ensure(src, self.mirror_schema)
            fence.revoke(src, grants)
            ended = fence.end_transactions(src, self.roles)
            left = fence.writable(src, self.source_tables, self.roles)
        if left:
            raise _Abort(f"the fence does not hold: {'; '.join(left[:5])}")
        self._move(record, Step.FENCE)
        relations = len({(g.schema, g.table) for g in grants})
        self.say(
            f"fenced: revoked {len(grants)} write grants of {', '.join(self.roles)} on {relations} tables "
            f"(the {len(self.source_tables)} mapped ones, their partitions and inheritance children), ended "
            f"{ended} open transactions; probe: no write possible"
        )

    def _write_fence(self, record: Mapping[str, Any]) -> None:
        fence_id, lsn = write_fence(self.settings.source, self.signal_table)
        self._move(record, Step.DRAIN, fence_id=fence_id, fence_lsn=lsn)
        self.say(f"draining: fence {fence_id} at source LSN {lsn_text(lsn)}")

    def _drain(self, record: Mapping[str, Any], options: Options) -> None:
        started = time.monotonic()
        deadline = started + options.timeout_s
        fence_id, lsn = record["fence_id"], int(record["fence_lsn"])

        def flushed() -> bool:
            state = self.connect_client.state(self.connector)
            if state is None or state.failed or state.connector == "PAUSED":
                raise _Abort(
                    f"connector {self.connector} is "
                    f"{'missing' if state is None else state.connector + ' / tasks ' + ','.join(state.tasks)}"
                    " while draining; the fence cannot reach Kafka"
                )
            return self.connect_client.flushed_lsn(self.connector) >= lsn

        self._wait(
            flushed, deadline, f"connector {self.connector} to flush past the fence LSN {lsn_text(lsn)}"
        )
        with Metadata(self.settings.kafka) as metadata:
            ends = metadata.end_offsets([*self.plan.topics, self.signal_topic])

        held: list[tuple[str, int, str]] = []  # the rows held at the last look, once the rest is applied
        waiting: list[float] = []  # when held rows alone started keeping the drain waiting, last said

        with self._store() as store:

            def applied() -> bool:
                nonlocal held
                stopped = stop_lines([s for s in store.stops(self.group) if s["live"]])
                if stopped:
                    raise _Abort(f"a table stopped while draining: {stopped[0]}")
                stored = store.checkpoints(self.group)
                behind = {p: e for p, e in ends.items() if e > 0 and stored.get(p, 0) < e}
                if behind or not store.fence_seen(fence_id):
                    return False
                held = [
                    (h["table"], int(h["held"]), h["waiting_for"]) for h in store.held_summary(self.group)
                ]
                if held:
                    now = time.monotonic()
                    if not waiting:
                        waiting[:] = [now, now - HELD_EVERY_S]
                    if now - waiting[1] >= HELD_EVERY_S:  # why the drain is slow, as it happens
                        waiting[1] = now
                        store.hasten_held(self.group, lsn)  # due at the next retry, not after a backoff
                        self.say(held_progress(lsn, held, now - waiting[0]))
                return not held

            self._wait(
                applied,
                deadline,
                lambda: (
                    f"group {self.group} to apply up to {self._ends_text(ends)} and record the fence"
                    + (f"; applied, but it holds rows back ({held_text(held)})" if held else "")
                ),
            )
        drained_s = time.monotonic() - started
        held_s = f" ({drained_s + started - waiting[0]:.1f}s of it waiting for held rows)" if waiting else ""
        gates = self._verify(options)
        verified_s = time.monotonic() - started - drained_s
        for g in gates:
            self.say(g.line())
        failed = [g for g in gates if not g.ok]
        if failed:
            raise _Abort("after the drain: " + " | ".join(g.line() for g in failed))
        self._move(record, Step.DRAINED, gates=[*(record.get("gates") or []), *(asdict(g) for g in gates)])
        self.say(
            f"drained in {drained_s:.1f}s{held_s}, verified in {verified_s:.1f}s: everything before the"
            " fence is in the target"
        )

    def _wait(self, condition: Callable[[], bool], deadline: float, what: str | Callable[[], str]) -> None:
        while not condition():
            if time.monotonic() > deadline:
                raise _Abort(
                    f"drain timed out (--timeout) waiting for {what if isinstance(what, str) else what()}"
                )
            time.sleep(POLL_S)  # polling interval between checks of the condition

    @staticmethod
    def _ends_text(ends: Mapping[Partition, int]) -> str:
        return ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(ends.items()) if o > 0) or "nothing"

    def _verify(self, options: Options) -> list[Gate]:
        """The target against the fenced source: only what changed since the verify before the
        fence when this process made one, else every row."""
        with (
            self._source() as src,
            connect(self.settings.target, "target", autocommit=True) as tgt,
        ):
            if self._baseline is None:
                diffs = compare(
                    self.plan, src, tgt, self.settings.control_schema, self.settings.unavailable_placeholder
                )
                self.say(f"verify: every row compared ({sum(d.expected for d in diffs)})")
            else:
                diffs, compared = compare_since(
                    self.plan,
                    src,
                    tgt,
                    self.settings.control_schema,
                    self._baseline,
                    self.settings.unavailable_placeholder,
                )
                self.say(
                    f"verify: {compared} rows compared value by value (changed since the verify before "
                    f"the fence, or differing then), every key checked for missing and extra rows"
                )
        bad = [
            d.summary()
            for d in diffs
            if d.missing
            or d.mismatched
            or d.placeholders
            or d.held
            or ((d.errored or d.rejected) and not options.accept_errors)
        ]
        only_target = {str(d.target): len(d.extra) for d in diffs}
        return [verify_gate(bad, not bad), target_only_gate(only_target, options.accept_target_only)]

    def _pairing(self, src: psycopg.Connection[Any], tgt: psycopg.Connection[Any]) -> Pairing:
        """The standalone sequences of the spec's source schemas and of REPLICATOR_CUTOVER__SEQUENCES,
        paired with their target counterparts (source values read now)."""
        named = self.settings.cutover.sequence_pairs()
        schemas = schema_map((t.source, t.target) for t in self.plan.tables)
        found = capture.sequences(src, sorted(schemas), [s for s, _ in named])
        candidates = sorted({x for f in found for x in (f.name.schema, *schemas.get(f.name.schema, ()))})
        return pair(
            found,
            sequences.named(tgt, candidates, [t for _, t in named]),
            schemas,
            named,
            self.settings.cutover.sequence_margin,
            (self.settings.source.user, self.settings.target.user),
        )

    def _sequence_plans(self, tgt: psycopg.Connection[Any]) -> list[SequencePlan]:
        """Every sequence the cutover sets: the mapped tables' columns', then the standalone ones."""
        with self._source() as src:
            standalone = self._pairing(src, tgt).plans
        return [*self._column_plans(tgt), *standalone]

    def _column_plans(self, tgt: psycopg.Connection[Any]) -> list[SequencePlan]:
        found = sequences.find(tgt, self.target_tables)
        plans: list[SequencePlan] = []
        with self._source() as src:
            for s in found:
                if s.increment < 0:
                    self.say(f"sequence {s.sequence} descends: left alone")
                    continue
                source_value = None
                for t in self.plan.tables:
                    column = next(
                        (c for c in t.columns if t.target == s.table and c.target == s.column), None
                    )
                    if column is not None and len(column.sources) == 1:
                        source_value = capture.sequence_value(src, t.source, column.sources[0])
                        break
                plans.append(
                    SequencePlan(
                        s.sequence,
                        str(s.table),
                        s.column,
                        sequences.column_max(tgt, s),
                        source_value,
                        self.settings.cutover.sequence_margin,
                    )
                )
        return plans

    def _sequences(self, record: Mapping[str, Any]) -> None:
        done: list[dict[str, Any]] = []
        with connect(self.settings.target, "target", autocommit=True) as tgt:
            with self._source() as src:  # read after the fence: the source's last values are final
                pairing = self._pairing(src, tgt)
            if pairing.problems:
                raise _Abort("sequences: " + " | ".join(pairing.problems))
            for warning in pairing.warnings:
                self.say(f"WARNING sequences: {warning}")
            by_name = {s.sequence: s for s in sequences.find(tgt, self.target_tables)}
            for p in self._column_plans(tgt):
                value = sequences.set_past(tgt, by_name[p.sequence], p.value)
                done.append({**asdict(p), "set_to": value})
                self.say(
                    f"sequence {p.sequence} ({p.what}): set to {value} (target max "
                    f"{p.target_max}, source {p.source_value}, margin {p.margin})"
                )
            for q in pairing.pairs:
                value = sequences.set_named_past(tgt, q.target, q.plan.value)
                done.append({**asdict(q.plan), "set_to": value})
                self.say(
                    f"sequence {q.plan.sequence} ({q.plan.what}): set to {value} (source"
                    f" {q.plan.source_value}, margin {q.plan.margin})"
                )
            counts = {str(t): self._count(tgt, t) for t in self.target_tables}
        self._move(record, Step.SEQUENCES, sequences=done, flip_stats={"rows": counts})

    @staticmethod
    def _count(conn: psycopg.Connection[Any], t: TableRef) -> int:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t.schema, t.name))
        ).fetchone()
        return int(row[0]) if row else 0

    def _flip(self, record: Mapping[str, Any]) -> None:
        with self._source() as src:
            left = fence.writable(src, self.source_tables, self.roles)
        if left:
            raise _Abort(f"the source is writable again before the flip: {'; '.join(left[:5])}")
        with Metadata(self.settings.kafka) as metadata:
            ends = metadata.end_offsets(self.plan.topics)
        state = State(record["state"])
        with self._store() as store:
            stored = store.checkpoints(self.group)
            behind = [f"{t}[{p}]" for (t, p), e in ends.items() if e > 0 and stored.get((t, p), 0) < e]
            if behind:
                raise _Abort(
                    f"the source changed after the drain (not applied: {', '.join(behind[:5])}); "
                    "a role outside REPLICATOR_CUTOVER__APP_ROLES writes the mapped tables"
                )
            with store.conn.transaction():
                store.set_authority("target", record["cutover_id"], record["fence_lsn"])
                # Taken once the authority row is ours: a batch that read it FOR SHARE before (and so
                # commits before this flip) got its transaction id earlier; rollback counts rows with a
                # newer one as written after the flip.
                row = store.conn.execute("SELECT pg_current_xact_id()::text").fetchone()
                assert row is not None
                store.move_cutover(
                    record["cutover_id"],
                    state,
                    State.FLIPPED,
                    self.operator,
                    flipped_at=True,
                    flip_xid=row[0],
                )
        self._mirror(record["cutover_id"], State.FLIPPED, record["fence_lsn"])
        flipped = self._record(record["cutover_id"])
        window = (flipped["flipped_at"] - flipped["fenced_at"]).total_seconds()
        self.say(f"flipped: the target is authoritative; write-downtime window (fence -> flip) {window:.2f}s")

    # ------------------------------------------------------------------ abort, rollback
    def _abort(self, record: Mapping[str, Any], reason: str) -> None:
        state = State(record["state"])
        if state in FENCED_STATES or (state is State.GATED and record.get("revoked")):
            self._unfence(record)
        with self._store() as store:
            store.move_cutover(record["cutover_id"], state, State.ABORTED, self.operator, reason=reason)
        if record.get("revoked"):
            with self._source() as src:
                mirror.write(src, self.mirror_schema, "source", record["cutover_id"], State.ABORTED, None)
        self.say(f"aborted: {reason}")

    def _unfence(self, record: Mapping[str, Any]) -> None:
        grants = [fence.Grant.of(d) for d in record.get("revoked") or []]
        with self._source() as src:
            fence.grant(src, grants)
            # every table given back is probed, even a partition detached since the fence
            given = {TableRef(g.schema, g.table) for g in grants}
            left = fence.writable(src, [*self.source_tables, *given], self.roles)
        can = set(left)
        missing = [
            f"{g.role} may {g.privilege} {g.schema}.{g.table}"
            for g in grants
            if f"{g.role} may {g.privilege} {g.schema}.{g.table}" not in can
        ]
        if missing:
            raise CutoverError(
                f"unfence incomplete, still not writable: {'; '.join(missing[:5])}; "
                "run `replicator cutover --abort` again or grant them by hand"
            )
        self.say(f"unfenced: {len(grants)} write grants given back; probe: the application roles can write")

    def _settle_final(self, record: Mapping[str, Any]) -> None:
        """`--resume` on a finished cutover: make the source mirror (and for a rollback, the unfence)
        match the record, in case the process died between the two."""
        state = State(record["state"])
        if state is State.ROLLED_BACK:
            self._unfence(record)
        if record.get("revoked"):
            self._mirror(record["cutover_id"], state, record.get("fence_lsn"))

    def _written_since_flip(self, record: Mapping[str, Any]) -> list[str]:
        """Mapped target tables changed since the flip; when none, authority goes back to the source
        in the same transaction (writers wait on the SHARE locks meanwhile)."""
        rows_at_flip: Mapping[str, int] = (record.get("flip_stats") or {}).get("rows", {})
        written: list[str] = []
        with self._store() as store, store.conn.transaction():
            conn = store.conn
            for t in self.target_tables:
                table = sql.Identifier(t.schema, t.name)
                conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(table))
                row = conn.execute(
                    sql.SQL(
                        "SELECT count(*), count(*) FILTER (WHERE age(xmin) < age("
                        "((%s::xid8::text::numeric %% 4294967296)::text)::xid)) FROM {}"
                    ).format(table),
                    (record["flip_xid"],),
                ).fetchone()
                assert row is not None
                total, changed = int(row[0]), int(row[1])
                before = rows_at_flip.get(str(t))
                if changed or (before is not None and before != total):
                    written.append(
                        f"{t}: {changed} rows inserted or updated, {before} rows at the flip, {total} now"
                    )
            if not written:
                store.set_authority("source", None, None)
                store.move_cutover(
                    record["cutover_id"], State.FLIPPED, State.ROLLED_BACK, self.operator, reason="rollback"
                )
        return written

    # ------------------------------------------------------------------ status
    def report(self, cutover_id: str | None = None) -> Report:
        with self._store() as store:
            store.require()
            authority = store.authority()
            record = store.cutover(cutover_id)
            events = store.cutover_events(record["cutover_id"]) if record else []
        if record is None:
            return Report(None, authority["authority"], None)
        window = None
        if record["fenced_at"] is not None:
            end = record["flipped_at"] or (None if State(record["state"]) in FINAL else datetime.now(UTC))
            if end is not None:
                window = (end - record["fenced_at"]).total_seconds()
        return Report(
            cutover_id=record["cutover_id"],
            authority=authority["authority"],
            state=State(record["state"]),
            events=[(f"{e['at']:%Y-%m-%d %H:%M:%S.%f%z}", e["to_state"], e["operator"]) for e in events],
            fence_lsn=None if record["fence_lsn"] is None else int(record["fence_lsn"]),
            fenced_at=None
            if record["fenced_at"] is None
            else f"{record['fenced_at']:%Y-%m-%d %H:%M:%S.%f%z}",
            flipped_at=None
            if record["flipped_at"] is None
            else f"{record['flipped_at']:%Y-%m-%d %H:%M:%S.%f%z}",
            window_s=window,
            gates=[Gate(**g) for g in record["gates"] or []],
            sequences=[
                SequencePlan(**{k: v for k, v in s.items() if k != "set_to"})
                for s in record["sequences"] or []
            ],
            reason=record["reason"],
        )

    def source_mirror(self) -> dict[str, Any] | None:
        with self._source() as src:
            return mirror.read(src, self.mirror_schema)


def report_data(report: Report, source_mirror: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "cutover_id": report.cutover_id,
        "authority": report.authority,
        "source_mirror": None
        if source_mirror is None
        else {k: source_mirror.get(k) for k in ("authority", "state", "cutover_id", "fence_lsn")},
        "state": report.state,
        "fence_lsn": report.fence_lsn,
        "fence_lsn_text": lsn_text(report.fence_lsn),
        "fenced_at": report.fenced_at,
        "flipped_at": report.flipped_at,
        "window_s": report.window_s,
        "events": [{"at": at, "state": st, "operator": op} for at, st, op in report.events],
        "gates": [asdict(g) for g in report.gates],
        "sequences": [{**asdict(s), "set_to": s.value} for s in report.sequences],
        "reason": report.reason,
        "next": report.next_action,
    }


def status_text(report: Report, source_mirror: Mapping[str, Any] | None) -> str:
    if report.cutover_id is None:
        return f"authority: {report.authority} (no cutover yet)\nnext: {report.next_action}"
    lines = [
        f"authority: {report.authority} (target record); source mirror: "
        + ("none" if source_mirror is None else f"{source_mirror['authority']} ({source_mirror['state']})"),
        f"cutover {report.cutover_id}: {report.state}" + (f" ({report.reason})" if report.reason else ""),
        f"fence LSN {lsn_text(report.fence_lsn)}; fenced at {report.fenced_at or '-'}; "
        f"flipped at {report.flipped_at or '-'}",
    ]
    if report.window_s is not None:
        lines.append(
            f"write-downtime window (fence -> flip): {report.window_s:.2f}s"
            + ("" if report.flipped_at else " so far (the source is fenced)")
        )
    lines += [f"  {at}  {st:<12} by {op}" for at, st, op in report.events]
    lines.append(f"next: {report.next_action}")
    return "\n".join(lines)


def write_reports(directory: Path, report: Report, source_mirror: Mapping[str, Any] | None) -> list[Path]:
    """The cutover report beside the shadow reports, as Markdown and as a self-contained HTML page:
    state, authority, window, what next, the steps, every gate, the sequences."""
    mirror = "none" if source_mirror is None else f"{source_mirror['authority']} ({source_mirror['state']})"
    data: dict[str, Any] = {
        "state": f"{report.state}" + (f" ({report.reason})" if report.reason else ""),
        "authority": f"{report.authority} (target record); source mirror: {mirror}",
        "fence LSN": lsn_text(report.fence_lsn),
        "fenced at": report.fenced_at or "-",
        "flipped at": report.flipped_at or "-",
        "write-downtime window (fence -> flip)": "-"
        if report.window_s is None
        else f"{report.window_s:.2f} s",
        "next": report.next_action,
        "steps": [{"at": at, "state": st, "operator": op} for at, st, op in report.events],
        "gates": [{"gate": g.name, "ok": g.ok, "detail": g.detail} for g in report.gates],
        "sequences": [
            {
                "sequence": q.sequence,
                "column": q.what,
                "target max": q.target_max,
                "source value": q.source_value,
                "set to": q.value,
            }
            for q in report.sequences
        ],
    }
    facts = (
        "state",
        "authority",
        "fence LSN",
        "fenced at",
        "flipped at",
        "write-downtime window (fence -> flip)",
        "next",
    )
    page = mapping_report(f"Cutover {report.cutover_id}", data, facts=facts)
    directory.mkdir(parents=True, exist_ok=True)
    md, html = directory / f"{report.cutover_id}.md", directory / f"{report.cutover_id}.html"
    md.write_text(render_markdown(page), encoding="utf-8")
    html.write_text(render_html(page), encoding="utf-8")
    return [md, html]
