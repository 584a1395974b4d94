"""The target writer (I/O edge): one prepared batch, one target transaction.

Inside the transaction, in this order:
1. the held events due for a retry join the batch ahead of its own events
   (`target.holds`): every held event of a key the batch touches, the ones
   waiting for a table the batch writes, and a bounded number of old ones;
   then the values of lookup rules are read from the target (`target.lookups`);
2. the stored versions of every key are locked (`target.versions`);
3. per table (upserts parents first, deletes children first but a cascading
   key's parent before its child: `core.mapping.plan.delete_order`), the intents
   are resolved against those versions and the topics' partition layouts
   (`core.resolve`, `core.layout`; the layouts are read at each assignment)
   and written set-based with bad rows isolated by bisection (`target.rows`).
   Keys whose held events swap a unique value are replayed event by event in
   source order (a step refused for lag does not stop the key's later events);
4. one source event, all its target rows or none: when a row of an event is
   refused, or an event cannot be ordered against a row's version
   (`Verdict.UNDECIDED`: an error record), the batch's writes roll back to a
   savepoint and run again without that event (a fixpoint: the excluded set
   only grows);
5. a refused row whose SQLSTATE can come from lag across partitions (FK,
   unique) is held, unless `core.holding.due_for_error` shows the dependency
   is truly absent; every other refusal is an error record naming every
   target row of its event;
6. versions, held events, error records and checkpoints (next offset and the
   applied commit LSN per partition, never moved backwards) are stored, and
   the partitions a schema change stopped (`core.schema_change`; their next
   offset is the stopping event's) with them; a partition the batch applied
   without a stop is no longer stopped.
The error policy is applied once, before the commit. Kafka offsets are
committed by the caller only after this returns.

A batch whose writes, or whose COMMIT, take longer than `target.apply_timeout_s`
has its socket shut down by a watchdog: a black-holed link (a proxy, a middlebox) keeps TCP alive
and never raises, and a COMMIT whose reply is lost would wait forever. The
cut surfaces as a lost connection (`Transient`); the batch is retried, and if
the COMMIT did land, the stored versions make the re-apply a no-op.

Where rows, versions, held events and error records go is a `WriteTarget`:
`LiveTables` or the shadow's clones (`target.shadow`); the writer never knows
which. Transient errors surface as `Transient` (the caller retries the whole
batch), others as `Fatal`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import psycopg
from psycopg import sql

from replicator import failpoints
from replicator.config import HoldSettings, TargetSettings
from replicator.core.errors import REORDER_SQLSTATES, Fatal, Transient, one_line
from replicator.core.holding import (
    ANY_TABLE,
    CaptureMark,
    Hold,
    Progress,
    Refusal,
    against_parent,
    due_for_error,
    judgement_lsn,
    settle,
)
from replicator.core.intents import Fence, Intent, Kind, PreparedBatch, key_text
from replicator.core.layout import NO_LAYOUTS, Layouts
from replicator.core.mapping.plan import ForeignKeyPlan, Narrowing, Plan, TablePlan, delete_order
from replicator.core.model import UNAVAILABLE, BatchResult, Failure, KafkaRef, Partition, Record, TableRef
from replicator.core.ordering import Verdict, Version, compare
from replicator.core.resolve import TableWrites, completed, final_versions, resolve, split_at_truncates
from replicator.core.schema_change import Stop
from replicator.pg.errors import is_transient, sqlstate
from replicator.pg.session import connect
from replicator.target import control
from replicator.target.holds import HeldRow, HoldStore
from replicator.target.lookups import LookupResolver
from replicator.target.rows import Outcome, Refused, TableRows
from replicator.target.store import ControlStore
from replicator.target.versions import VersionTable

Remap = Callable[[Sequence[Record]], tuple[Mapping[TableRef, list[Intent]], list[Failure]]]
Marks = Callable[[], Sequence[CaptureMark]]


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """What a batch with error records does: `record` commits them with the batch, `halt` rolls
    the batch back and stops (the cursor stays before it)."""

    on_error: Literal["record", "halt"] = "record"

    def check(self, result: BatchResult) -> None:
        if self.on_error == "halt" and result.errors:
            first = result.errors[0]
            raise Fatal(
                f"{first.ref}: {first.rule_id}: {first.message} "
                "(--on-error=halt: batch rolled back, cursor kept)"
            )


class WriteTarget(Protocol):
    """Where a batch's rows, versions, held events and error records go (live tables or clones)."""

    @property
    def plan(self) -> Plan: ...
    @property
    def versions(self) -> sql.Composable: ...
    @property
    def holds(self) -> sql.Composable: ...
    def relation(self, table: TableRef) -> sql.Composable:
        """Target table `table` as this target's writes left it, to read from (a foreign key's
        other table): the table itself, or for shadow clones their rows over the real ones."""
        ...

    def prepare_session(self, conn: psycopg.Connection[Any]) -> None: ...
    def before_writes(
        self, conn: psycopg.Connection[Any], by_table: Mapping[TableRef, list[Intent]]
    ) -> None: ...
    def after_writes(
        self, conn: psycopg.Connection[Any], writes: Sequence[TableWrites], result: BatchResult
    ) -> None: ...
    def before_truncate(self, conn: psycopg.Connection[Any], intent: Intent) -> None: ...
    def store_fences(self, conn: psycopg.Connection[Any], fences: Sequence[Fence]) -> None: ...
    def store_stops(
        self, conn: psycopg.Connection[Any], stops: Sequence[Stop], flowing: Sequence[Partition]
    ) -> None: ...
    def store_unread(
        self, conn: psycopg.Connection[Any], unread: Mapping[tuple[str, int, str], int]
    ) -> None: ...
    def store_errors(
        self,
        conn: psycopg.Connection[Any],
        failures: Sequence[Failure],
        notes: Sequence[tuple[Intent, Narrowing]],
    ) -> int:
        """Returns how many of `failures` are new error records (a replayed event's is open already)."""
        ...


class _Redo(Exception):
    """Roll the batch's writes back to the savepoint and run them again without some events."""


class _DeferredViolation(Exception):
    """A DEFERRABLE constraint of the target failed when checked at the end of the writes."""


# Deferred constraints (DEFERRABLE INITIALLY DEFERRED, e.g. an FK cycle) are checked at the end of
# the writes, not at COMMIT: a violation there rolls the writes back to their savepoint and they run
# again with every constraint checked per statement, so the rows that do not fit yet are held or
# recorded one by one, as for immediate constraints, instead of failing the whole batch at COMMIT.
# Rows that only fit together (the two halves of a cycle) land when they meet in one batch.
_CONSTRAINTS_IMMEDIATE = sql.SQL("SET CONSTRAINTS ALL IMMEDIATE")
_DEFERRED_STATES = frozenset({"23503", "23505", "23P01", "23514"})


def _truncate_key(intent: Intent) -> str:
    return f"!truncate/{intent.event.ref.topic}/{intent.event.ref.partition}"


_RETRY_ON_SESSION = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected

# The version key of a table's truncate barrier: its newest applied truncate (`core.resolve`).
BARRIER = "!truncate"


@dataclass(slots=True)
class _Pass:
    """One run of a batch's writes (step 3): what was written and what was refused."""

    writes: list[TableWrites] = field(default_factory=list)
    refused: list[tuple[TableWrites, Refused]] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)
    applied: dict[str, int] = field(default_factory=dict)
    skipped_older: int = 0
    older: set[KafkaRef] = field(default_factory=set)  # the events skipped as older
    unordered: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # "<table>:older|unordered" -> events
    truncates: list[tuple[Intent, str]] = field(default_factory=list)  # (intent, applied | older)
    # Intents not ordered against their row's version (`Verdict.UNDECIDED`), with that version.
    undecided: list[tuple[TablePlan, Intent, Version | None]] = field(default_factory=list)

    def refused_events(self) -> set[KafkaRef]:
        return {c.event.ref for w, r in self.refused for c in w.contributors.get(r.intent.key, [r.intent])}

    def undecided_events(self) -> set[KafkaRef]:
        return {i.event.ref for _, i, _ in self.undecided}

    def written_events(self) -> set[KafkaRef]:
        refused = {(w.table.target, r.intent.key) for w, r in self.refused}
        return {
            c.event.ref
            for w in self.writes
            for key, chain in w.contributors.items()
            if (w.table.target, key) not in refused
            for c in chain
        }


@dataclass(frozen=True, slots=True)
class _Evidence:
    """What the group had applied (checkpoints) and held, read before a batch's first write.

    A refused row is judged against this, never against a later read: the target's constraint
    checks run after it, so a parent applied (or released from holding) by another instance before
    it was read is visible to them. Read after the writes instead, a parent committed in between
    would count as "applied, yet absent" and turn a valid child into an error record.
    """

    progress: Mapping[Partition, Progress]
    # held events per target row they would write (every row of each event: `core.holding`, point 5);
    # key None: a key not known
    held: Mapping[tuple[str, str | None], int]


class BatchWriter:
    """Applies prepared batches to a `WriteTarget`, one target transaction per batch."""

    def __init__(
        self,
        target_settings: TargetSettings,
        target: WriteTarget,
        control_schema: str,
        group_id: str,
        run_id: str,
        policy: ErrorPolicy | None = None,
        connector: Callable[[], psycopg.Connection[Any]] | None = None,
        remap: Remap | None = None,
        marks: Marks = tuple,
        partition_counts: Mapping[str, int] | None = None,
        holding: HoldSettings | None = None,
        on_holding: Callable[[bool], None] | None = None,
        may_hold: bool = True,
    ) -> None:
        self._connector = connector or (lambda: connect(target_settings, "target"))
        self._apply_timeout_s = target_settings.apply_timeout_s
        self.target = target
        self.plan = target.plan
        self.schema = control_schema
        self.group_id = group_id
        self.run_id = run_id
        self.policy = policy or ErrorPolicy()
        self._remap = remap
        self._marks = marks
        self._counts = dict(partition_counts or {})
        self._holding = holding or HoldSettings()
        self._on_holding = on_holding or (lambda wanted: None)
        self._may_hold = may_hold  # False: a refused row is an error record at once (errors retry)
        self._conn: psycopg.Connection[Any] | None = None
        self._layouts: Layouts = NO_LAYOUTS  # read at each assignment (an accept is followed by one)
        self._last_retry = 0.0
        self._retry_soon = False  # set by a batch whose held rows are due again at the next retry
        self._held_revoked: dict[Partition, int] = {}  # events held in partitions revoked since
        self._versions = VersionTable(target.versions)
        self._lookups = LookupResolver(self.plan)
        self._holds = HoldStore(target.holds, target.versions, group_id)
        self._tables = {t.target: t for t in self.plan.tables}
        self._rows = {t.target: TableRows(t, target.relation) for t in self.plan.tables}
        order = list(self.plan.apply_order) + [
            t.target for t in self.plan.tables if t.target not in self.plan.apply_order
        ]
        self._order: list[TableRef] = list(dict.fromkeys(order))
        # Per parent table, its ON DELETE CASCADE keys from mapped child tables that reference its
        # key: guarded while rows may be held (`_cascade_waits`).
        self._cascading: dict[TableRef, list[ForeignKeyPlan]] = {}
        for fk in self.plan.foreign_keys if may_hold else ():
            parent = self._tables.get(fk.parent)
            keyed = parent is not None and set(fk.ref_columns) == set(parent.key)
            if fk.cascades and fk.child != fk.parent and fk.child in self._tables and keyed:
                self._cascading.setdefault(fk.parent, []).append(fk)
        # A guarded key's children are deleted before their parent, as along a NO ACTION key: the
        # batch's own child deletes (the source's cascade) then leave the guard nothing to wait
        # for. The guard lets a cascade run only once the children's partitions are covered, so
        # no other instance is deleting those rows then (`delete_order`'s parent-first is for
        # the unguarded cascades).
        guarded = {(fk.child, fk.name) for fks in self._cascading.values() for fk in fks}
        deleting = delete_order(
            self._order,
            [
                replace(fk, cascades=False) if (fk.child, fk.name) in guarded else fk
                for fk in self.plan.foreign_keys
            ],
        )
        self._delete_rank = {t: n for n, t in enumerate(deleting)}

    # ------------------------------------------------------------------ connection
    def connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = self._connector()
        try:
            self.target.prepare_session(conn)
            self._versions.prepare_session(conn)
            self._lookups.prepare_session(conn)
        except psycopg.Error as exc:
            conn.close()
            raise self._classify(exc) from exc
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _classify(self, exc: psycopg.Error) -> Exception:
        if is_transient(exc):
            # a deadlock or serialization failure rolled the transaction back on a sound session:
            # the batch is retried on it; anything else (a lost link) gets a new session
            if sqlstate(exc) not in _RETRY_ON_SESSION or self._conn is None or self._conn.broken:
                self.close()
            return Transient(one_line(exc))
        return Fatal(f"target: {one_line(exc)} (SQLSTATE {sqlstate(exc)})")

    # ------------------------------------------------------------------ assignment
    def on_assign(self, partitions: list[Partition]) -> dict[Partition, int]:
        """Stored offsets of newly assigned partitions; loads their held keys."""
        conn = self.connect()
        try:
            with conn.transaction():
                rows = conn.execute(
                    sql.SQL(
                        "SELECT topic, partition, next_offset FROM {} WHERE group_id = %s"
                        " AND (topic, partition) IN (SELECT * FROM unnest(%b::text[], %s::int[]))"
                    ).format(control.table(self.schema, "checkpoint")),
                    (self.group_id, [t for t, _ in partitions], [p for _, p in partitions]),
                ).fetchall()
                self._holds.load_index(conn, partitions)
                for p in partitions:
                    self._held_revoked.pop(p, None)
                store = ControlStore(conn, self.schema)
                self._layouts = store.layouts()
                # a topic created after the start (the snapshot still creating topics) is recorded
                # by the partition watch; without its count no held row waiting on it is judged
                self._counts.update(store.recorded_partitions())
        except psycopg.Error as exc:
            raise self._classify(exc) from exc
        self._on_holding(self._holds.count > 0)
        return {(t, p): o for t, p, o in rows}

    def on_revoke(self, partitions: list[Partition]) -> None:
        self._held_revoked.update(self._holds.forget(partitions))

    @property
    def held(self) -> int:
        """Events held back in the partitions this writer owns."""
        return self._holds.count

    @property
    def held_left(self) -> int:
        """Events held back in the partitions this writer owns or owned last (revoked when its run
        stopped, and not assigned again): what a run that ended left held."""
        return self._holds.count + sum(self._held_revoked.values())

    def retry_due(self) -> bool:
        """Held rows exist and the last retry is older than `retry_after_s`."""
        return self._holds.count > 0 and time.monotonic() - self._last_retry >= self._holding.retry_after_s

    # ------------------------------------------------------------------ apply
    def apply(self, batch: PreparedBatch) -> BatchResult:
        """Apply one batch in one transaction; raises Transient or Fatal."""
        conn = self.connect()
        watchdog = _Watchdog(conn, self._apply_timeout_s)
        try:
            watchdog.arm()  # BEGIN too: a link black-holed while idle hangs there
            with conn.transaction():
                result, added, removed = self._apply(conn, batch)
                watchdog.disarm()
                self.policy.check(result)
                if batch.next_offsets:  # a retry of held rows alone is not counted
                    failpoints.hit("stop_before_target_commit")
                    failpoints.hit("before_target_commit")
                watchdog.arm()  # the COMMIT (sent on leaving the block) has a deadline of its own
        except psycopg.Error as exc:
            raise self._classify(exc) from exc
        finally:
            watchdog.disarm()
        self._holds.committed(added, removed)
        if self._retry_soon:
            self._last_retry = 0.0  # `retry_due` at once: the loop retries the held rows when idle
        self._on_holding(self._holds.count > 0)
        return result

    def _apply(
        self, conn: psycopg.Connection[Any], batch: PreparedBatch
    ) -> tuple[BatchResult, list[HeldRow], list[HeldRow]]:
        result = BatchResult()
        result.errors.extend(batch.failures)
        self._retry_soon = False
        held = self._due(conn, batch)
        by_ref = {h.record.ref: h for h in held}
        merged = self._with_held(batch, held, result)
        result.errors.extend(self._lookups.resolve(conn, merged))
        self.target.before_writes(conn, merged)
        sequential = self._sequential_keys(merged, by_ref)
        evidence = self._evidence(conn)  # before any write: see `_Evidence`
        barriers = self._versions.share(
            conn, BARRIER, [t for t in merged if self._tables[t].truncate.kind in ("truncate", "delete")]
        )
        stored, claimed, placeholders, claims = self._lock(conn, merged, sequential)
        excluded: set[KafkaRef] = set()
        carried: list[tuple[TableWrites, Refused]] = []  # refusals of the passes rolled back
        undecided: list[tuple[TablePlan, Intent, Version | None]] = []  # likewise, unordered events
        attempts = 0
        immediate = False  # deferred constraints checked per statement (after they failed at the end)
        while True:
            try:
                with conn.transaction():  # a savepoint: step 4 may roll the writes back
                    if immediate:
                        conn.execute(_CONSTRAINTS_IMMEDIATE)
                    run = self._write(conn, merged, stored, excluded, sequential, dict(barriers), evidence)
                    attempts += run.outcome.attempts
                    if ((run.refused_events() | run.undecided_events()) - excluded) & run.written_events():
                        raise _Redo
                    if not immediate:
                        late = self._check_deferred(conn, run)
                        if late:
                            run.refused.extend(late)
                            raise _Redo
                break
            except _Redo:
                excluded |= run.refused_events() | run.undecided_events()
                carried += run.refused
                undecided += run.undecided
            except _DeferredViolation:
                immediate = True
        run.refused = [*carried, *run.refused]
        run.undecided = [*undecided, *run.undecided]
        run.outcome.attempts = attempts
        result.errors.extend(self._undecided(run, self._other_targets(merged, excluded)))
        failpoints.hit("mid_batch")
        added, kept, gone = self._settle(conn, run, merged, by_ref, excluded, result, evidence, claimed)
        removed = [h for ref, h in by_ref.items() if ref not in kept]
        self._store_versions(conn, run, claimed, placeholders, claims)
        notes = [(i, n) for w in run.writes for i in w.final.values() for n in i.notes]
        self.target.after_writes(conn, run.writes, result)
        result.new_error_records = self.target.store_errors(conn, result.errors, notes)
        self.target.store_fences(conn, batch.fences)
        self._holds.put(conn, [*added, *(replace(by_ref[r], soon=soon) for r, soon in kept.items())])
        self._holds.remove(conn, (h.record.ref for h in removed))
        # held rows this batch did not retry that await a row it made an error record (refused for
        # good, or its event not mapped, not ordered): retried at the next retry, not after their
        # backoff (`core.holding`, point 6)
        recorded = gone | {
            row for f in result.errors if f.target is not None for row in ((str(f.target), f.key), *f.also)
        }
        hastened = (
            self._holds.hasten(
                conn, recorded, by_ref.keys() | {h.record.ref for h in added}, self._holding.retry_limit
            )
            if evidence.held  # none held before the batch: none awaits its error records
            else 0
        )
        if hastened or any(h.soon for h in added) or any(kept.values()):
            self._retry_soon = True
        result.applied.update(run.applied)
        result.skipped_older += run.skipped_older
        result.older_refs |= run.older
        result.unordered += run.unordered
        result.skipped_by_table.update({k: n for k, n in run.skipped.items() if n})
        result.held_by_table.update(str(h.target) for h in added)
        result.truncated_notes = len(notes)
        result.attempts = run.outcome.attempts
        result.held = len(added) + len(kept)
        result.released = len(removed)
        self._store_checkpoints(conn, batch)
        stopped = {s.partition for s in batch.stops}
        self.target.store_stops(conn, batch.stops, sorted(p for p in batch.next_offsets if p not in stopped))
        self.target.store_unread(conn, batch.unread)
        return result, added, removed

    def _check_deferred(self, conn: psycopg.Connection[Any], run: _Pass) -> list[tuple[TableWrites, Refused]]:
        """Check the constraints deferred so far (`_CONSTRAINTS_IMMEDIATE`, in a savepoint of its
        own). On a violation, the rows of this pass its DEFERRABLE foreign keys refuse (found row
        by row: the server names only its first violation); none of those: _DeferredViolation."""
        try:
            with conn.transaction():  # rolled back on a violation: the writes stay, still deferred
                conn.execute(_CONSTRAINTS_IMMEDIATE)
            return []
        except psycopg.errors.IntegrityError as exc:
            if sqlstate(exc) not in _DEFERRED_STATES:
                raise
            late = self._deferred_violations(conn, run)
            if not late:  # another deferred constraint (unique, exclusion, a constraint trigger)
                raise _DeferredViolation from exc
            return late

    def _deferred_violations(
        self, conn: psycopg.Connection[Any], run: _Pass
    ) -> list[tuple[TableWrites, Refused]]:
        """The rows of this pass a DEFERRABLE foreign key refuses at the end of the writes: parent
        deletes that rows of the child table still reference, else (checked in the pass that
        keeps those parents) children whose parent is not in the target. Redone with immediate
        checks instead, no row of a cycle could be written: one half whose partner is late
        (another daemon's, with two) held back every cycle of the batch."""
        deferrable = [fk for fk in self.plan.foreign_keys if fk.deferrable]
        if not deferrable:
            return []
        refused = {(w.table.target, r.intent.key) for w, r in run.refused}
        parents: list[tuple[TableWrites, Refused]] = []
        children: list[tuple[TableWrites, Refused]] = []
        for w in run.writes:
            target = w.table.target
            rows = self._rows[target]
            for fk in deferrable:
                if fk.parent == target and set(fk.ref_columns) == set(w.table.key):
                    gone = [i for i in w.by_kind(Kind.DELETE) if (target, i.key) not in refused]
                    why = f"delete on table {target} is refused: rows of {fk.child} still reference it"
                    found = rows.referenced(conn, fk, gone) if gone else []
                    parents += [(w, _deferred(i, fk, why)) for i in found]
                if fk.child == target and not parents:
                    pointing = [
                        i
                        for i in w.by_kind(Kind.UPSERT)
                        if (target, i.key) not in refused
                        and all(_set(i.values.get(c, UNAVAILABLE)) for c in fk.columns)
                    ]
                    why = f"the row it references in {fk.parent} is not in the target"
                    found = rows.unreferenced(conn, fk, pointing) if pointing else []
                    children += [(w, _deferred(i, fk, why)) for i in found]
        return parents or children

    # ------------------------------------------------------------------ step 1: held events join
    def _due(self, conn: psycopg.Connection[Any], batch: PreparedBatch) -> list[HeldRow]:
        if self._remap is None or not self._holds.count:
            return []
        self._last_retry = time.monotonic()
        keys: dict[Partition, set[bytes | None]] = {}
        for intents in batch.by_table.values():
            for i in intents:
                keys.setdefault((i.event.ref.topic, i.event.ref.partition), set()).add(i.event.raw_key)
        written = {t: [key_text(i.key) for i in intents] for t, intents in batch.by_table.items()}
        return self._holds.due(conn, keys, written, self._holding.retry_after_s, self._holding.retry_limit)

    def _with_held(
        self, batch: PreparedBatch, held: list[HeldRow], result: BatchResult
    ) -> dict[TableRef, list[Intent]]:
        """The batch's intents with the held events' ahead of them (older: they came first)."""
        if not held or self._remap is None:
            return {t: list(i) for t, i in batch.by_table.items()}
        by_table, failures = self._remap([h.record for h in held])
        result.errors.extend(failures)  # a held event the spec now rejects: an error record
        merged: dict[TableRef, list[Intent]] = {}
        for table in {*by_table, *batch.by_table}:
            merged[table] = [*by_table.get(table, ()), *batch.by_table.get(table, ())]
        return merged

    def _sequential_keys(
        self, merged: Mapping[TableRef, list[Intent]], held: Mapping[KafkaRef, HeldRow]
    ) -> dict[TableRef, set[Any]]:
        """Keys whose held events wait on a unique value: replayed event by event in source order."""
        out: dict[TableRef, set[Any]] = {}
        for table, intents in merged.items():
            for i in intents:
                h = held.get(i.event.ref)
                if h is not None and h.sqlstate == "23505":
                    out.setdefault(table, set()).add(i.key)
        return out

    # ------------------------------------------------------------------ step 2: lock
    def _lock(
        self,
        conn: psycopg.Connection[Any],
        merged: Mapping[TableRef, list[Intent]],
        sequential: Mapping[TableRef, set[Any]],
    ) -> tuple[
        dict[TableRef, dict[Any, Version]],
        dict[TableRef, dict[Any, Version]],
        dict[TableRef, set[Any]],
        Mapping[TableRef, Mapping[str, Version | None]],
    ]:
        """Lock every key of the batch (`VersionTable.lock_or_claim`). A key without a stored
        version is claimed with the version it ends with if nothing stops it; a table with a
        truncate, or keys replayed event by event, claim placeholders instead.
        Returns (stored, claimed, placeholder keys) per table, and the claims as given."""
        claims: dict[TableRef, dict[str, Version | None]] = {}
        texts: dict[TableRef, dict[str, Any]] = {}
        for target in self._order:
            intents = [i for i in merged.get(target, ()) if i.kind is not Kind.TRUNCATE]
            if not intents:
                continue
            keys = {key_text(i.key): i.key for i in intents}
            texts[target] = keys
            if sequential.get(target) or len(intents) != len(merged[target]):
                claims[target] = dict.fromkeys(keys)
            else:
                final = final_versions(intents, {}, self._layouts)
                claims[target] = {text: final.get(key) for text, key in keys.items()}
        found, taken = self._versions.lock_or_claim(conn, claims)
        stored = {t: {texts[t][k]: v for k, v in versions.items()} for t, versions in found.items()}
        claimed: dict[TableRef, dict[Any, Version]] = {}
        placeholders: dict[TableRef, set[Any]] = {}
        for target, won in taken.items():
            for text in won:
                version = claims[target][text]
                if version is None:
                    placeholders.setdefault(target, set()).add(texts[target][text])
                else:
                    claimed.setdefault(target, {})[texts[target][text]] = version
        return stored, claimed, placeholders, claims

    def _store_versions(
        self,
        conn: psycopg.Connection[Any],
        run: _Pass,
        claimed: Mapping[TableRef, Mapping[Any, Version]],
        placeholders: Mapping[TableRef, set[Any]],
        claims: Mapping[TableRef, Mapping[str, Version | None]],
    ) -> None:
        """Versions move for written keys only: stored and placeholder keys are updated, claimed
        keys kept (or corrected, or dropped when their rows were not written after all)."""
        failed = {(w.table.target, r.intent.key) for w, r in run.refused}
        written: dict[TableRef, dict[Any, Version]] = {}
        for w in run.writes:
            for key, version in w.versions.items():
                if (w.table.target, key) not in failed:
                    written.setdefault(w.table.target, {})[key] = version
        updates: dict[TableRef, dict[str, Version]] = {}
        drops: dict[TableRef, set[str]] = {}
        for target, versions in written.items():
            mine = claimed.get(target, {})
            updates[target] = {key_text(k): v for k, v in versions.items() if mine.get(k) != v}
        for target, keys in placeholders.items():
            done = written.get(target, {})
            drops.setdefault(target, set()).update(key_text(k) for k in keys if k not in done)
        for target, won in claimed.items():
            done = written.get(target, {})
            drops.setdefault(target, set()).update(key_text(k) for k in won if k not in done)
        self._versions.update_many(conn, updates, claims)
        self._versions.drop(conn, drops)

    # ------------------------------------------------------------------ step 3: write
    def _write(
        self,
        conn: psycopg.Connection[Any],
        merged: Mapping[TableRef, list[Intent]],
        stored: Mapping[TableRef, dict[Any, Version]],
        excluded: set[KafkaRef],
        sequential: Mapping[TableRef, set[Any]],
        barriers: dict[TableRef, Version],
        evidence: _Evidence,
    ) -> _Pass:
        """`barriers`: each table's newest applied truncate (a truncate of this pass moves it)."""
        run = _Pass()
        plain: list[tuple[TableWrites, list[Intent]]] = []
        for target in self._order:
            intents = [i for i in merged.get(target, ()) if i.event.ref not in excluded]
            if not intents:
                continue
            table = self._tables[target]
            segments = split_at_truncates(intents)
            if len(segments) == 1 and segments[0][0].kind is not Kind.TRUNCATE:
                keys = sequential.get(target, set())
                now = [i for i in intents if i.key not in keys]
                later = [i for i in intents if i.key in keys]
                writes = self._resolve(table, now, stored.get(target, {}), run, barriers.get(target))
                plain.append((writes, later))
                continue
            for segment in segments:  # a truncate is a barrier: this table's segments run in order, now
                if segment[0].kind is Kind.TRUNCATE:
                    newest = self._truncate(conn, segment[0], run)
                    if newest is not None:
                        barriers[target] = newest
                    continue
                writes = self._resolve(table, segment, stored.get(target, {}), run, barriers.get(target))
                self._upserts(conn, writes, run)
                self._deletes(conn, writes, run, evidence)
                run.writes.append(writes)
        replayed: list[TableWrites] = []
        for writes, later in plain:
            self._upserts(conn, writes, run)
            if later:
                target = writes.table.target
                replayed.append(
                    self._replay(
                        conn, writes.table, later, stored.get(target, {}), run, evidence, barriers.get(target)
                    )
                )
        for writes, _ in sorted(plain, key=lambda p: self._delete_rank[p[0].table.target]):
            self._deletes(conn, writes, run, evidence)
        run.writes.extend([*(w for w, _ in plain), *replayed])
        return run

    def _resolve(
        self,
        table: TablePlan,
        intents: Sequence[Intent],
        stored: Mapping[Any, Version],
        run: _Pass,
        barrier: Version | None = None,
    ) -> TableWrites:
        writes = resolve(table, intents, stored, self._layouts, barrier)
        run.undecided += [(table, i, v) for i, v in writes.undecided]
        run.skipped_older += writes.skipped_older
        run.older.update(i.event.ref for i in writes.older)
        run.unordered += writes.unordered
        run.skipped[f"{table.target}:older"] += writes.skipped_older
        run.skipped[f"{table.target}:unordered"] += writes.unordered
        return writes

    def _collect(self, writes: TableWrites, out: Outcome, run: _Pass) -> None:
        for op, n in out.applied.items():
            run.applied[f"{writes.table.target}:{op}"] = run.applied.get(f"{writes.table.target}:{op}", 0) + n
        run.refused.extend((writes, r) for r in out.refused)
        run.outcome.attempts += out.attempts

    def _upserts(self, conn: psycopg.Connection[Any], writes: TableWrites, run: _Pass) -> None:
        out = Outcome()
        self._rows[writes.table.target].upserts(conn, writes, out)
        self._collect(writes, out, run)

    def _deletes(
        self, conn: psycopg.Connection[Any], writes: TableWrites, run: _Pass, evidence: _Evidence
    ) -> None:
        out = Outcome()
        self._guarded_deletes(conn, writes, out, evidence)
        self._collect(writes, out, run)
        failpoints.hit(f"deleted {writes.table.target}")

    def _guarded_deletes(
        self, conn: psycopg.Connection[Any], writes: TableWrites, out: Outcome, evidence: _Evidence
    ) -> None:
        """The deletes of `writes`, but those a cascade must wait for (`_cascade_waits`): refused."""
        waiting = self._cascade_waits(conn, writes, evidence)
        self._rows[writes.table.target].deletes(conn, writes, out, waiting.keys())
        out.refused.extend(waiting.values())

    def _cascade_waits(
        self, conn: psycopg.Connection[Any], writes: TableWrites, evidence: _Evidence
    ) -> dict[Any, Refused]:
        """The hard deletes of this table that must wait: an ON DELETE CASCADE key of the target
        would delete rows of a mapped child table that still reference the row, while that table's
        partitions have not applied everything the source committed up to the delete.

        Each topic is applied on its own, so a parent's delete can come before earlier events of
        its children (trial 10: cards moved to another board, then the old board deleted, in one
        transaction): the cascade would delete rows the source kept, with no event to bring them
        back. Such a delete is refused as NO ACTION would refuse it (23503 naming the child table)
        and held (`core.holding`); it runs once the child table's partitions are covered through
        it (`due_for_error` of its hold): the rows the cascade then deletes are those the source
        still had there, which its own cascade deleted too (and so for every table the cascade
        reaches further down). It is held, never an error record (`Refused.waits`): covered, the
        next retry applies it. Keys referencing another unique than the parent's key are not
        guarded (`mapping check` warns about those)."""
        fks = self._cascading.get(writes.table.target)
        if not fks or not self._may_hold:
            return {}
        hard = writes.by_kind(Kind.DELETE)
        rows = self._rows[writes.table.target]
        marks = self._marks()
        waiting: dict[Any, Refused] = {}

        def look(candidates: list[Intent]) -> None:
            for fk in fks:
                pending = [i for i in candidates if i.key not in waiting]
                for intent in rows.referenced(conn, fk, pending) if pending else []:
                    refused = Refused(
                        intent,
                        writes.table.rule_id,
                        f"delete on table {fk.parent} waits: its ON DELETE CASCADE key {fk.name} would"
                        f" delete rows of {fk.child} whose own earlier events are not applied yet",
                        "23503",
                        fk.name,
                        fk.child,
                        waits=True,  # held until the cascade may run: then it does, never an error record
                    )
                    hold = self._hold_for(writes.table, refused)
                    feeders = self._cascade_feeders(fk.child)
                    if (
                        hold is None
                        or feeders is None
                        or not due_for_error(hold, feeders, evidence.progress, marks)
                    ):
                        waiting[intent.key] = refused

        look(hard)
        going = [i for i in hard if i.key not in waiting]
        if going:
            # Locked (as the DELETE would lock them), then looked at again: a child another instance
            # was inserting, uncommitted, is not seen above, and the cascade would take it unchecked
            # once it commits (trial 10b). Its foreign key check holds the parent FOR KEY SHARE, so
            # once locked it is committed and seen here, or it waits and finds its parent deleted.
            rows.lock(conn, going)
            look(going)
        return waiting

    def _cascade_feeders(self, child: TableRef) -> list[Partition] | None:
        """The partitions feeding `child` and every mapped table its own ON DELETE CASCADE keys
        reach (the cascade goes on down: a grandchild moved away before the delete must have been
        applied too). None: a partition count is not known yet."""
        reached: set[TableRef] = set()
        todo = [child]
        while todo:
            table = todo.pop()
            if table not in reached:
                reached.add(table)
                todo += [fk.child for fk in self.plan.foreign_keys if fk.cascades and fk.parent == table]
        out: list[Partition] = []
        for table in sorted(reached & set(self._tables), key=str):
            feeders = self._feeders(table)
            if feeders is None:
                return None
            out += feeders
        return list(dict.fromkeys(out))

    def _replay(
        self,
        conn: psycopg.Connection[Any],
        table: TablePlan,
        intents: list[Intent],
        stored: Mapping[Any, Version],
        run: _Pass,
        evidence: _Evidence,
        barrier: Version | None = None,
    ) -> TableWrites:
        """Event by event in source order: a unique-value swap across partitions needs the
        intermediate states the source went through. Returns what it wrote, as one TableWrites.

        An event refused for lag (FK, unique) does not stop its key: the key's later events are
        tried all the same, and one that fits supersedes the refusal (the source left that state
        too, as when events are folded). Once a row ahead of this one has taken the value of a held
        step, the step can never fit again; stopping there kept the row, and every row waiting for
        its value, held for good. A key's refusal is reported only when no later event of it fit
        (its version is then not stored: its whole chain stays held); any other refusal stops the
        key, as before."""
        writes = TableWrites(table)
        current = dict(stored)
        last: dict[Any, Intent] = {}  # per key, its latest event tried (unchanged-TOAST values)
        refusals: dict[Any, list[Refused]] = {}  # per key, the refusal of its latest event tried
        stopped: set[Any] = set()  # keys refused for another reason than lag

        def order(i: Intent) -> tuple[int, tuple[int, int, int], KafkaRef]:
            p = i.event.position
            return (0, (0, 0, 0), i.event.ref) if p is None else (1, p.as_tuple(), i.event.ref)

        rows = self._rows[table.target]
        for intent in sorted(intents, key=order):
            chain = writes.contributors.setdefault(intent.key, [])
            if intent.key in stopped:
                chain.append(intent)
                continue
            one = resolve(table, [completed(intent, last.get(intent.key))], current, self._layouts, barrier)
            run.undecided += [(table, i, v) for i, v in one.undecided]
            run.skipped_older += one.skipped_older
            run.older.update(i.event.ref for i in one.older)
            run.skipped[f"{table.target}:older"] += one.skipped_older
            if not one.final:
                continue
            chain.append(intent)
            out = Outcome()
            rows.upserts(conn, one, out)
            self._guarded_deletes(conn, one, out, evidence)  # a swap's row deleted: trial 10b
            writes.final[intent.key] = last[intent.key] = one.final[intent.key]
            if out.refused:
                refusals[intent.key] = out.refused
                writes.versions.pop(intent.key, None)
                if any(r.sqlstate not in REORDER_SQLSTATES for r in out.refused):
                    stopped.add(intent.key)
            else:
                refusals.pop(intent.key, None)
                current[intent.key] = intent.version
                writes.versions[intent.key] = intent.version
            self._collect(writes, Outcome(applied=out.applied, attempts=out.attempts), run)
        run.refused.extend((writes, r) for refused in refusals.values() for r in refused)
        return writes

    def _truncate(self, conn: psycopg.Connection[Any], intent: Intent, run: _Pass) -> Version | None:
        """Apply a source TRUNCATE; returns the table's barrier after it (None: nothing changed).

        It came on one partition; the other partitions of its topic may be applied before it or
        after it. Before it: rows the source wrote after the truncate may already be in the
        target; they are spared (their versions say so: `written_after`, and this pass's own
        writes). After it: what the source committed before it is older than the barrier
        (`core.resolve.truncated_before`). The barrier row is locked FOR UPDATE here and FOR SHARE
        by every batch of the table, so a batch reads it after a truncate commits, or the
        truncate sees that batch's rows."""
        table = intent.table
        marker = _truncate_key(intent)
        stored = self._versions.lock(conn, table.target, [marker]).get(marker)
        if compare(intent.version, stored, self._layouts) is Verdict.OLDER:
            run.skipped_older += 1
            run.older.add(intent.event.ref)
            run.skipped[f"{table.target}:older"] += 1
            return None
        barrier = self._versions.lock(conn, table.target, [BARRIER]).get(BARRIER)
        self.target.before_truncate(conn, intent)
        policy = table.truncate.kind
        if policy == "error":
            raise Fatal(
                f"{table.truncate.rule_id}: source table {table.source} was truncated at "
                f"{intent.event.ref} and the spec says truncate: error; decide, then set the "
                "policy to truncate, delete or ignore"
            )
        key = f"{table.target}:truncate_{policy}"
        run.applied[key] = run.applied.get(key, 0) + 1
        if policy not in ("truncate", "delete"):
            self._versions.update_many(conn, {table.target: {marker: intent.version}})
            return None
        keep = self._written_after(conn, table, intent.version, run)
        if keep:
            deleted = self._rows[table.target].delete_all_but(conn, keep)
            run.applied[f"{table.target}:truncate_spared"] = len(keep)
            run.applied[f"{table.target}:truncate_deleted"] = deleted
        else:
            conn.execute(table.statements.truncate if policy == "truncate" else table.statements.delete_all)
        newest = intent.version  # a truncate from another partition may have been applied first
        if (
            barrier is not None
            and barrier.position is not None
            and (newest.position is None or barrier.position > newest.position)
        ):
            newest = barrier
        self._versions.update_many(conn, {table.target: {marker: intent.version, BARRIER: newest}})
        return newest

    def _written_after(
        self, conn: psycopg.Connection[Any], table: TablePlan, truncate: Version, run: _Pass
    ) -> set[str]:
        """Keys of rows in the target that the source wrote after the truncate: stored versions,
        and this pass's writes to the table before the truncate's segment."""
        if truncate.position is None:
            return set()
        keep = self._versions.written_after(conn, table.target, truncate.position)
        for w in run.writes:
            if w.table.target != table.target:
                continue
            for k, v in w.versions.items():
                final = w.final.get(k)
                if v.position is not None and v.position > truncate.position:
                    if final is not None and final.kind is Kind.UPSERT:
                        keep.add(key_text(k))
                    else:
                        keep.discard(key_text(k))
        return keep

    def _undecided(self, run: _Pass, others: Mapping[KafkaRef, list[tuple[TableRef, str]]]) -> list[Failure]:
        """Error records of the events that could not be ordered against a row's version (step 4
        kept them out of every table they write)."""
        out: list[Failure] = []
        for table, intent, stored in run.undecided:
            e, text = intent.event, key_text(intent.key)
            also = tuple(sorted({(str(t), k) for t, k in others.get(e.ref, ()) if t != table.target}))
            against = (
                f"{stored.topic}[{stored.partition}]@{stored.offset}" if stored is not None else "its version"
            )
            out.append(
                Failure(
                    ref=e.ref,
                    rule_id="ordering",
                    message=f"{table.target} key {text}: not ordered against the row's version from"
                    f" {against} (another partition of {e.ref.topic} in the same partition layout, and a"
                    " source position missing): not applied; fix: if the topic's partition count changed,"
                    f" `replicator partitions accept --topic {e.ref.topic} --yes`, then"
                    f" `replicator reload --table {table.source}` (a later layout wins), then"
                    " `replicator errors resolve --rule ordering`",
                    raw_key=e.raw_key,
                    raw_value=e.raw_value,
                    target=table.target,
                    key=text,
                    also=also,
                )
            )
        return out

    # ------------------------------------------------------------------ step 5: hold or error
    def _settle(
        self,
        conn: psycopg.Connection[Any],
        run: _Pass,
        merged: Mapping[TableRef, list[Intent]],
        held: Mapping[KafkaRef, HeldRow],
        excluded: set[KafkaRef],
        result: BatchResult,
        evidence: _Evidence,
        claimed: Mapping[TableRef, Mapping[Any, Version]],
    ) -> tuple[list[HeldRow], dict[KafkaRef, bool], set[tuple[str, str | None]]]:
        """Refused rows become held events or error records. Returns (newly held, still held: to be
        retried soon, the target rows whose events became error records). `claimed`: the versions
        this batch claimed for new keys (`_lock`)."""
        if not run.refused:
            return [], {}, set()
        others = self._other_targets(merged, excluded)
        added: dict[KafkaRef, HeldRow] = {}
        kept: dict[KafkaRef, bool] = {}
        holds = [
            self._hold_for(w.table, r) if self._may_hold and r.sqlstate in REORDER_SQLSTATES else None
            for w, r in run.refused
        ]
        # the awaited parents' versions, in one read (a drain with FKs holds thousands of children)
        parents = self._versions.read_many(
            conn, {(h.blocked_by, h.awaits) for h in holds if h is not None and h.awaits is not None}
        )
        for unwritten in _unwritten_claims(run, claimed):  # claimed by this batch, dropped at its end
            parents.pop(unwritten, None)
        marks = self._marks()
        refusals: list[Refusal] = []
        for n, ((writes, refused), hold) in enumerate(zip(run.refused, holds, strict=True)):
            chain = writes.contributors.get(refused.intent.key, [refused.intent])
            refs = tuple(c.event.ref for c in chain)
            if hold is None:
                refusals.append(Refusal(refs, None, False))
                continue
            # point 4: judged at its parent's later delete, or not at all while the parent's version
            # says present though the target lacks it (a cascade took it: its delete is to come)
            judged = against_parent(
                hold, parents.get((hold.blocked_by, hold.awaits)) if hold.awaits is not None else None
            )
            hold = holds[n] = judged or hold
            feeders = self._feeders(hold.blocked_by)
            if feeders is None:  # a topic created since: its count may be recorded by now
                self._counts.update(ControlStore(conn, self.schema).recorded_partitions())
                feeders = self._feeders(hold.blocked_by)
            covered = (
                judged is not None
                and not refused.waits
                and feeders is not None
                and due_for_error(hold, feeders, evidence.progress, marks)
            )
            # it waits while the group holds an event for the row it awaits (any row of the table
            # when the key is not known), judged after this batch's own settlements (point 6)
            refusals.append(Refusal(refs, (str(hold.blocked_by), hold.awaits), covered))
        writes_of = _event_rows(merged, {ref for r in refusals for ref in r.events})
        writes_of.update((ref, h.rows) for ref, h in held.items())  # as counted when they were held
        errors = settle(refusals, evidence.held, writes_of, held)
        # the target rows of the events made error records: their awaiting rows are due soon
        gone = {
            row
            for r, e in zip(refusals, errors, strict=True)
            if e
            for ref in r.events
            for row in writes_of[ref]
        }
        for (writes, refused), hold, error in zip(run.refused, holds, errors, strict=True):
            intent = refused.intent
            chain = writes.contributors.get(intent.key, [intent])
            text = key_text(intent.key)
            result.unwritten.add((writes.table.target, text))
            if not error and hold is not None:
                # awaiting a row this batch made an error record: its coverage may pass it with this
                # batch's checkpoint, so it is retried at the next retry, not after its backoff
                soon = _awaits_any(hold, gone)
                for c in chain:
                    ref = c.event.ref
                    if ref in held:
                        kept[ref] = kept.get(ref, False) or soon
                    elif ref not in added:
                        row = (str(writes.table.target), text)
                        also = tuple(sorted({r for r in writes_of[ref] if r != row}))
                        added[ref] = self._held_row(c, writes.table, text, refused, hold, also, soon)
                continue
            also = tuple(
                sorted(
                    {
                        (str(t), k)
                        for c in chain
                        for t, k in others.get(c.event.ref, ())
                        if t != writes.table.target
                    }
                )
            )
            message = refused.message + (
                f" (the event is not applied to {', '.join(t for t, _ in also)} either)" if also else ""
            )
            # Every event folded into the refused row gets its own record: the row's earlier events
            # (an insert before an update that left a TOASTed column unchanged) are needed to build
            # it again, and the checkpoint moves past all of them.
            result.errors.extend(
                Failure(
                    ref=c.event.ref,
                    rule_id=refused.rule_id,
                    message=message
                    if len(chain) == 1
                    else f"{message} [event {n} of {len(chain)} folded into this row]",
                    raw_key=c.event.raw_key,
                    raw_value=c.event.raw_value,
                    target=writes.table.target,
                    key=text,
                    sqlstate=refused.sqlstate,
                    also=also,
                )
                for n, c in enumerate(chain, start=1)
            )
        return list(added.values()), kept, gone

    def _other_targets(
        self, merged: Mapping[TableRef, list[Intent]], excluded: set[KafkaRef]
    ) -> dict[KafkaRef, list[tuple[TableRef, str]]]:
        out: dict[KafkaRef, list[tuple[TableRef, str]]] = {}
        for table, intents in merged.items():
            for i in intents:
                if i.event.ref in excluded:
                    out.setdefault(i.event.ref, []).append((table, key_text(i.key)))
        return out

    def _hold_for(self, table: TablePlan, refused: Refused) -> Hold | None:
        """What a refused row waits for (None: nothing it could wait for)."""
        intent = refused.intent
        blocked: TableRef | None = table.target
        awaits: str | None = None
        if refused.sqlstate == "23503":
            fk = (
                self.plan.foreign_key(refused.server_table, refused.constraint)
                if refused.server_table is not None and refused.constraint
                else None
            )
            if fk is None:
                blocked = None  # unknown constraint: wait for every mapped table
            elif intent.kind is Kind.UPSERT:
                blocked = fk.parent  # a child before its parent
                awaits = self._parent_key(fk, intent.values)
            else:
                blocked = fk.child  # a parent deleted before its children
        p = intent.event.ref
        return Hold(
            ref_partition=(p.topic, p.partition),
            blocked_by=blocked if blocked is not None else TableRef("*", "*"),
            judged_at=judgement_lsn(intent.event, 0),
            held_at=time.time(),
            positioned=intent.event.position is not None or intent.event.lsn is not None,
            awaits=awaits,
        )

    def _parent_key(self, fk: ForeignKeyPlan, values: Mapping[str, Any]) -> str | None:
        """The key text of the parent row `fk` points at from a child's `values` (None: the foreign
        key does not reference the parent's mapped key, or the parent is not mapped)."""
        parent = self._tables.get(fk.parent)
        if parent is None or set(fk.ref_columns) != set(parent.key):
            return None
        by_ref = dict(zip(fk.ref_columns, fk.columns, strict=True))
        try:
            return key_text(tuple(values[by_ref[k]] for k in parent.key))
        except KeyError:  # a referencing column the rule does not write
            return None

    def _feeders(self, blocked: TableRef) -> list[Partition] | None:
        """The partitions that feed `blocked` (None: a partition count is not known yet)."""
        topics = self.plan.topics if blocked == TableRef("*", "*") else self.plan.feeding_topics(blocked)
        out: list[Partition] = []
        for topic in topics:
            count = self._counts.get(topic)
            if count is None:
                return None
            out += [(topic, p) for p in range(count)]
        return out

    def _evidence(self, conn: psycopg.Connection[Any]) -> _Evidence:
        if not self._may_hold:
            return _Evidence({}, {})
        rows = conn.execute(
            sql.SQL("SELECT topic, partition, next_offset, commit_lsn FROM {} WHERE group_id = %s").format(
                control.table(self.schema, "checkpoint")
            ),
            (self.group_id,),
        ).fetchall()
        progress = {(t, p): Progress(int(o), int(c)) for t, p, o, c in rows}
        return _Evidence(progress, self._holds.held_rows(conn))

    def _held_row(
        self,
        intent: Intent,
        table: TablePlan,
        text: str,
        refused: Refused,
        hold: Hold,
        also: tuple[tuple[str, str | None], ...],
        soon: bool,
    ) -> HeldRow:
        e = intent.event
        return HeldRow(
            record=Record(e.ref, e.raw_key, e.raw_value, e.headers),
            target=table.target,
            key=text,
            blocked_by=None if hold.blocked_by == TableRef("*", "*") else hold.blocked_by,
            judged_at=hold.judged_at,
            positioned=hold.positioned,
            sqlstate=refused.sqlstate,
            message=refused.message,
            held_at=hold.held_at,
            awaits=hold.awaits,
            also=also,
            soon=soon,
        )

    # ------------------------------------------------------------------ step 6: checkpoints
    def _store_checkpoints(self, conn: psycopg.Connection[Any], batch: PreparedBatch) -> None:
        if not batch.next_offsets:
            return
        commit_lsn = batch.commit_lsns
        items = sorted(batch.next_offsets.items())
        conn.execute(
            sql.SQL(
                "INSERT INTO {0} AS c"
                " (group_id, topic, partition, next_offset, commit_lsn, run_id, updated_at)"
                " SELECT %s, t, p, o, l, %s, now()"
                " FROM unnest(%b::text[], %s::int[], %s::bigint[], %s::numeric[]) AS u(t, p, o, l)"
                " ON CONFLICT (group_id, topic, partition) DO UPDATE"
                " SET next_offset = EXCLUDED.next_offset, run_id = EXCLUDED.run_id, updated_at = now(),"
                " commit_lsn = GREATEST(c.commit_lsn, EXCLUDED.commit_lsn)"
                " WHERE c.next_offset < EXCLUDED.next_offset"
            ).format(control.table(self.schema, "checkpoint")),
            (
                self.group_id,
                self.run_id,
                [t for (t, _), _ in items],
                [p for (_, p), _ in items],
                [o for _, o in items],
                [commit_lsn.get(tp, 0) for tp, _ in items],
            ),
        )


class _Watchdog:
    """Cuts the connection when an armed wait on the target outlives its deadline. Armed only
    while the writer waits on the target (the writes, the COMMIT), so the process's own pauses
    (a failpoint's SIGSTOP) never count against the link."""

    def __init__(self, conn: psycopg.Connection[Any], timeout_s: float) -> None:
        self._conn = conn
        self._timeout_s = timeout_s
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        self.disarm()
        self._timer = threading.Timer(self._timeout_s, _cut, (self._conn,))
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()
            self._timer = None


def _unwritten_claims(
    run: _Pass, claimed: Mapping[TableRef, Mapping[Any, Version]]
) -> set[tuple[TableRef, str]]:
    """The rows whose version this batch claimed (`_lock`) but did not write: `_store_versions`
    drops those claims, so they say nothing about the rows (a parent held or refused here)."""
    failed = {(w.table.target, r.intent.key) for w, r in run.refused}
    written = {(w.table.target, k) for w in run.writes for k in w.versions} - failed
    return {(t, key_text(k)) for t, keys in claimed.items() for k in keys if (t, k) not in written}


def _event_rows(
    merged: Mapping[TableRef, list[Intent]], refs: set[Any]
) -> dict[Any, tuple[tuple[str, str | None], ...]]:
    """Every target row each of `refs` writes in this batch (table, key text)."""
    out: dict[Any, list[tuple[str, str | None]]] = {ref: [] for ref in refs}
    for table, intents in merged.items():
        for i in intents:
            if i.event.ref in out and i.kind is not Kind.TRUNCATE:
                out[i.event.ref].append((str(table), key_text(i.key)))
    return {ref: tuple(dict.fromkeys(rows)) for ref, rows in out.items()}


def _awaits_any(hold: Hold, rows: set[tuple[str, str | None]]) -> bool:
    """Does `hold` wait for one of `rows` (any row of its table when its key is not known)?"""
    table = str(hold.blocked_by)
    if table == ANY_TABLE:
        return bool(rows)
    if hold.awaits is None:
        return any(t == table for t, _ in rows)
    return (table, hold.awaits) in rows


def _set(value: Any) -> bool:
    """A value a foreign key checks (MATCH SIMPLE: a null references nothing; UNAVAILABLE: not written)."""
    return value is not None and value is not UNAVAILABLE


def _deferred(intent: Intent, fk: ForeignKeyPlan, why: str) -> Refused:
    """A row a DEFERRABLE foreign key refuses at the end of the writes (as the server would: 23503)."""
    return Refused(
        intent,
        intent.table.rule_id,
        f"foreign key {fk.name} on {fk.child} (DEFERRABLE, checked at the end of the batch): {why}",
        "23503",
        fk.name,
        fk.child,
    )


def _cut(conn: psycopg.Connection[Any]) -> None:
    """Shut the socket of a silent batch down under the waiting driver: its read returns at
    once with a lost connection (a dup of the descriptor, so the driver's own stays valid)."""
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=socket.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass  # already closed: nothing is waiting on it
