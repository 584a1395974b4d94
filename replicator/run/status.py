"""`replicator status`: capture, runs, and per partition the target-stored, Kafka-committed and
end offsets.

Capture is the connector and its tasks (Connect) and the replication slot (the source), with one
line per problem and its fix; runs that never recorded their end are `running` while they beat and
`dead` once silent for three heartbeats (killed, or their host lost); a run that ended `halted`
(a fatal error) is listed with its reason until it is started again: a run of its group that began
after the halt (with its static instance id, when it had one).

The control store is read on one session the caller opens and checks (`ControlStore.open`,
`require`) and passes to each reader here.
Lag is measured from the target-stored offset (the truth), not Kafka's.
Rows held back (waiting for a parent or a unique swap on a lagging
partition) are listed per table. Each target table is `running`, `held`
(rows of it wait for a lagging table) or `stopped` (its source table changed
under the spec: the partition waits in front of the first event that does not
match, `core.schema_change`), with the one-line reason and fix, or `halted` (a halted
run holds its partitions: its static instance still owns them in the group, or no member owns
them and no run applied from them since the halt; a live member that took them since makes them
`running` again).
The authority line says which database is authoritative (`target` after a
cutover's flip: the replicator writes nothing more).
`kafka_ahead` flags a partition whose Kafka-committed offset is ahead of the
target-stored one, which the loop never does (invariant 1). Read-only: on a
target without the control schema it says so in one line.

Many tables (trial 13: 119 tables, 357 partitions, 488 lines): a totals line counts every table by
state, the partitions, lag, held rows and open error records; `--table PATTERN` (`select_tables`)
narrows the table, partition and held sections, never the totals or the exit code; a reason
shared by several shown tables (a halted run's, a partition count change's) is printed once with
the count and first names of its tables (`table_lines`), each table pointing to it by number,
while `--json` keeps every table's own reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

import psycopg

from replicator.config import Settings
from replicator.connect.client import ConnectClient, ConnectError
from replicator.core.errors import ReplicatorError, one_line
from replicator.core.halts import halted_by
from replicator.core.intents import other_table_fix
from replicator.core.model import Partition
from replicator.kafka.clients import Metadata
from replicator.pg.session import connect
from replicator.run.assembly import capture
from replicator.run.capture_check import capture_gaps
from replicator.run.drain import capture_problem
from replicator.run.heartbeat import DEAD_AFTER_BEATS, liveness
from replicator.source import capture as source_capture
from replicator.target.store import ControlStore


def capture_status(settings: Settings) -> dict[str, Any]:
    """The connector and its tasks (from Connect), the replication slot (from the source), whether
    the publication and the connector's table filters carry every mapped table and the signal
    table (`core.publication`), and what is wrong with them, if anything: `problems`, one line each
    with its fix."""
    name = capture(settings).connector
    out: dict[str, Any] = {
        "connector": name,
        "state": None,
        "tasks": [],
        "slot": None,
        "problems": [],
        "notes": [],
    }
    if name is None:  # a gap in the configuration, not a failure of the capture
        out["notes"].append(
            "no connector named: capture is not watched; fix: REPLICATOR_CONNECTOR or the spec's"
            " capture.connector"
        )
        return out
    client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
    config: dict[str, str] = {}
    try:
        state = client.state(name)
        config = client.config(name) or {}
    except ConnectError as exc:
        out["problems"].append(f"Kafka Connect: {exc}")
    else:
        if state is not None:
            out["state"], out["tasks"] = state.connector, list(state.tasks)
        problem = capture_problem(state, name, client.url)
        if problem is not None:
            out["problems"].append(problem)
    if not config:  # which slot and publication are the connector's is known only from its config
        out["notes"].append("replication slot and publication not checked: the connector's config is unknown")
        return out
    slot_name = config.get("slot.name", "debezium")  # Debezium's default
    try:
        with connect(settings.source, "source", autocommit=True) as conn:
            slot = source_capture.slot(conn, slot_name)
            out["problems"] += capture_gaps(settings, config, conn)
    except (ReplicatorError, psycopg.Error) as exc:
        out["problems"].append(f"source: {one_line(exc)}")
        return out
    if slot is None:
        out["problems"].append(f"replication slot {slot_name} does not exist on the source")
    else:
        out["slot"] = {
            "name": slot.name,
            "active": slot.active,
            "retained_wal_bytes": slot.retained_wal_bytes,
        }
        if not slot.active:
            out["problems"].append(
                f"replication slot {slot_name} is not active: nothing reads the source's changes"
            )
    return out


def run_status(store: ControlStore, heartbeat_s: float) -> list[dict[str, Any]]:
    """Runs that never recorded their end (`running` while they beat, `dead` once silent for
    DEAD_AFTER_BEATS of their own heartbeat interval, which each run records at start;
    `heartbeat_s`, this command's setting, only for a run that recorded none), then runs that
    ended `halted` with nothing started after them in their group (with the reason)."""
    runs = store.unfinished_runs()
    halted = store.halted_runs()
    return [
        *(
            {
                "run_id": r["run_id"],
                "mode": r["mode"],
                "group": r["group_id"],
                "started_at": r["started_at"].isoformat(),
                "state": liveness(r["silent_s"], r.get("heartbeat_s") or heartbeat_s),
                "silent_s": round(r["silent_s"], 1),
                "heartbeat_s": r.get("heartbeat_s") or heartbeat_s,
                "heartbeat_recorded": r.get("heartbeat_s") is not None,
            }
            for r in runs
        ),
        *(
            {
                "run_id": r["run_id"],
                "mode": r["mode"],
                "group": r["group_id"],
                "started_at": r["started_at"].isoformat(),
                "state": "halted",
                "ended_at": r["ended_at"].isoformat(),
                "reason": r["reason"],
            }
            for r in halted
        ),
    ]


def dead_text(run: dict[str, Any]) -> str:
    """Why a `run_status` row is dead, naming whose heartbeat interval judged it."""
    beats = f"{DEAD_AFTER_BEATS} heartbeats of {run['heartbeat_s']:g}s" + (
        "" if run["heartbeat_recorded"] else " (this command's REPLICATOR_HEARTBEAT_S: the run recorded none)"
    )
    return (
        f"silent {run['silent_s']:.0f}s, more than {beats}, and never recorded its end:"
        " killed or its host lost"
    )


def authority_status(store: ControlStore) -> dict[str, Any]:
    """Which database is authoritative: `source` until a cutover flips it (then `target`, since
    when, by which cutover)."""
    row = store.authority()
    since = row["since"]
    return {
        "authority": row["authority"],
        "since": since.isoformat() if since is not None else None,
        "cutover_id": row["cutover_id"],
    }


def group_members(settings: Settings, group_id: str) -> list[str | None]:
    """The members Kafka lists in the group: each one's static instance id, None when dynamic."""
    with Metadata(settings.kafka) as metadata:
        return metadata.group_member_instances(group_id)


def runs_beating(runs: list[dict[str, Any]], group: str, mode: str | None = None) -> int:
    """How many of `runs` (`run_status` rows) of `group` (and `mode`, when given) beat in the
    target: the processes known to be alive. Kafka's member list is not that: a member stays listed
    until its session times out after its process ended (`group_line`)."""
    return sum(
        1 for r in runs if r["group"] == group and r["state"] == "running" and mode in (None, r["mode"])
    )


def group_line(group: str, members: list[str | None], beating: int, session_timeout_ms: int) -> str:
    """What is known of the group's processes: runs beating in the target (their heartbeats) and
    members Kafka lists. A member is listed until its session times out after its process ended
    (killed; a static member, group.instance.id, also when it stopped or halted), so the members
    alone overstate what runs (trial 8: "2 consumers running" after both static members halted).
    The timeout is each daemon's own setting, which the target does not record: `session_timeout_ms`
    (this process's) is shown as this command's, not claimed as theirs."""
    static = sum(1 for m in members if m is not None)
    line = (
        f"group {group}: {beating} run{'s' if beating != 1 else ''} beating (target heartbeats),"
        f" {len(members)} member{'s' if len(members) != 1 else ''} listed by Kafka"
    )
    mine = f"this command's setting is {session_timeout_ms} ms"  # the daemons' is not recorded
    if len(members) > beating:
        line += (
            f" ({static} static: a static member stays listed for its daemon's session.timeout.ms after"
            f" its process ended, halted or not; {mine})"
            if static
            else f" (a killed member stays listed for its daemon's session.timeout.ms; {mine})"
        )
    return line


def held_status(store: ControlStore, group_id: str) -> list[dict[str, Any]]:
    """Per target table: events held back waiting for a lagging table (count, oldest age, for what)."""
    return store.held_summary(group_id)


def partition_status(
    store: ControlStore, settings: Settings, topics: list[str], group_id: str
) -> list[dict[str, Any]]:
    """Per partition: the target's checkpoint, Kafka's committed offset, the end, the lag. Kafka's
    committed offsets are read before the target's checkpoints: a batch commits in the target
    first, so read in that order the target is never behind Kafka unless the invariant broke (read
    the other way, a batch committing in between looked like `kafka_ahead`, trial 15)."""
    rows: list[dict[str, Any]] = []
    with Metadata(settings.kafka) as metadata:
        partitions = metadata.partitions(topics)
        committed = metadata.committed(group_id, partitions)
        stored = store.checkpoints(group_id)
        errors = store.error_counts(group_id)
        stopped = {(r["topic"], r["partition"]) for r in store.stops(group_id)}
        for p in partitions:
            low, high = metadata.watermarks(p)
            target = stored.get(p)
            kafka = committed.get(p)
            rows.append(
                {
                    "topic": p[0],
                    "partition": p[1],
                    "target_offset": target,
                    "kafka_committed": kafka,
                    "end_offset": high,
                    "log_start": low,
                    "lag": high - (target if target is not None else low),
                    "errors": errors.get(p, 0),
                    "kafka_ahead": kafka is not None and target is not None and kafka > target,
                    "stopped": p in stopped,
                }
            )
    return rows


def partition_halts(
    store: ControlStore, settings: Settings, group_id: str, partitions: list[Partition]
) -> dict[Partition, dict[str, Any]]:
    """The partitions of `partitions` that a listed halted run of the group's forward run holds
    (`core.halts.halted_by`), each with that run's row; none while no such run is listed."""
    halted = [r for r in store.halted_runs() if r["group_id"] == group_id and r["mode"] == "run"]
    if not halted:
        return {}
    last = store.checkpoint_runs(group_id)
    with Metadata(settings.kafka) as metadata:
        members = metadata.group_assignment(group_id)
    owners = {p: instance for instance, assigned in members for p in assigned}
    return halted_by(partitions, owners, last, halted)


def table_status(
    store: ControlStore,
    group_id: str,
    tables: list[tuple[str, str]],
    halts: Mapping[Partition, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Per target table (`tables`: target and its topic, in spec order): `stopped` (a partition of its
    topic is stopped by a source schema change or a partition count change), `halted` (a partition
    of its topic is held by a halted run, `halts` from `partition_halts`), `held` (rows of it are
    held back) or `running`."""
    stops = store.stops(group_id)
    held = {h["table"]: h for h in store.held_summary(group_id)}
    out = []
    for target, topic in tables:
        mine = [s for s in stops if s["topic"] == topic or target in (s["target_tables"] or ())]
        row: dict[str, Any] = {
            "table": target,
            "topic": topic,
            "state": "running",
            "reason": None,
            "fix": None,
        }
        if mine:
            first = mine[0]
            row.update(
                state="stopped",
                rule_id=first["rule_id"],
                at=f"{first['topic']}[{first['partition']}]@{first['kafka_offset']}",
                partitions_stopped=len(mine),
                reason=first["reason"],
                fix=first["fix"],
                stopped_at=first["stopped_at"].isoformat(),
            )
        elif halting := sorted(p for p in (halts or {}) if p[0] == topic):
            run = (halts or {})[halting[0]]
            row.update(
                state="halted",
                run_id=run["run_id"],
                partitions_halted=len(halting),
                ended_at=run["ended_at"].isoformat(),
                reason=f"run {run['run_id']} halted at {run['ended_at'].isoformat()}: {run['reason']}",
                fix="fix the cause, then start that run's instance again"
                + (f" (REPLICATOR_KAFKA__INSTANCE_ID={run['instance_id']})" if run["instance_id"] else ""),
            )
        elif target in held:
            h = held[target]
            row.update(
                state="held", reason=f"{h['held']} rows wait for {h['waiting_for']} (oldest {h['oldest_s']}s)"
            )
        out.append(row)
    return out


def unread_status(
    store: ControlStore, group_id: str, mapped_sources: Collection[str]
) -> list[dict[str, Any]] | None:
    """Per source table whose events arrived on a topic the spec reads while no rule read the table
    (so they were not applied; `core.intents.other_tables`): how many, on which topics, first and
    last seen, whether a rule of the spec (`mapped_sources`) reads it now, and the fix. None when
    the control schema predates the record."""
    rows = store.unread_tables(group_id)
    if rows is None:
        return None
    return [
        {
            "source_table": r["source_table"],
            "events": int(r["events"]),
            "topics": sorted(r["topics"]),
            "first_seen_at": r["first_seen_at"].isoformat(),
            "last_seen_at": r["last_seen_at"].isoformat(),
            "read_now": r["source_table"] in mapped_sources,
            "fix": unread_fix(r["source_table"], r["source_table"] in mapped_sources),
        }
        for r in rows
    ]


def unread_fix(table: str, read_now: bool) -> str:
    """The fix of an `unread_status` row: a rule for the table or no capture of it; once a rule reads
    it, the rows of the events skipped before (a reload)."""
    if not read_now:
        return other_table_fix(table)
    return (
        f"a rule reads it now, but the events counted were not applied before it did: `replicator reload"
        f" --table {table}` (an incremental snapshot) writes its rows"
    )


def unread_lines(unread: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The `unread_status` rows as text: nothing when there are none, one note when not recorded."""
    if unread is None:
        return [
            "  note: events of source tables no rule reads are not recorded by this control schema's"
            " version; fix: start `replicator run` (or `replicator init`) of this version"
        ]
    if not unread:
        return []
    lines = ["source tables no rule reads (their events on topics the spec reads are NOT applied):"]
    for u in unread:
        lines.append(
            f"  {u['source_table']:34} {_count(u['events'], 'event')} skipped on {', '.join(u['topics'])}"
            f" (first {u['first_seen_at']}, last {u['last_seen_at']}); fix: {u['fix']}"
        )
    return lines


TABLE_STATES = ("running", "held", "stopped", "halted", "cut_over")


def after_flip(
    authority: Mapping[str, Any], tables: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`table_status` and `run_status` rows as a cutover's flip leaves them: the forward run
    stopping is the expected end, so its tables are `cut_over`, not HALTED (whose fix, start the run
    again, would stop again at once: trial 17), and its halted forward runs too. A stopped table
    stays stopped (what it stopped on was never applied). Unchanged while the source is
    authoritative."""
    if authority["authority"] == "source":
        return tables, runs
    reason = (
        f"the target is authoritative since {authority['since']} (cutover {authority['cutover_id']}):"
        " the forward replicator stopped at the flip and writes nothing more (expected)"
    )
    return (
        [
            t if t["state"] == "stopped" else {**t, "state": "cut_over", "reason": reason, "fix": None}
            for t in tables
        ],
        [{**r, "state": "cut_over"} if r["state"] == "halted" and r["mode"] == "run" else r for r in runs],
    )


SHOWN_NAMES = 5  # tables named where a line stands for many; the others are counted


def first_names(names: Sequence[str], shown: int = SHOWN_NAMES) -> str:
    """`names` joined, cut after `shown` with how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def select_tables(
    patterns: Sequence[str], tables: Sequence[tuple[str, str]], sources: Mapping[str, Sequence[str]]
) -> tuple[frozenset[str], list[str]]:
    """The target tables (of `tables`: target and its topic) that one of `patterns` matches, as a
    shell glob (`fnmatch`, case-sensitive like quoted identifiers) on the target `schema.table`,
    its topic or a source table feeding that topic (`sources`: topic to source tables); and the
    patterns that match none (a typo shows nothing, so the caller refuses it)."""
    chosen: set[str] = set()
    used: set[str] = set()
    for target, topic in tables:
        names = (target, topic, *sources.get(topic, ()))
        hits = {p for p in patterns if any(fnmatchcase(n, p) for n in names)}
        if hits:
            chosen.add(target)
            used |= hits
    return frozenset(chosen), [p for p in patterns if p not in used]


def status_totals(
    tables: Sequence[Mapping[str, Any]],
    partitions: Sequence[Mapping[str, Any]],
    held: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Counts over every table, partition and held row (`table_status`, `partition_status`,
    `held_status`), whatever `--table` shows: tables by state, partitions (stopped, Kafka ahead),
    lag, held rows and tables, open error records."""
    states = Counter(t["state"] for t in tables)
    return {
        "tables": len(tables),
        "by_state": {**{s: 0 for s in TABLE_STATES}, **states},
        "partitions": len(partitions),
        "partitions_stopped": sum(1 for p in partitions if p["stopped"]),
        "partitions_kafka_ahead": sum(1 for p in partitions if p["kafka_ahead"]),
        "lag": sum(int(p["lag"]) for p in partitions),
        "held_rows": sum(int(h["held"]) for h in held),
        "held_tables": len(held),
        "open_error_records": sum(int(p["errors"]) for p in partitions),
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def totals_line(totals: Mapping[str, Any]) -> str:
    # cut_over only once a cutover made a table so (it is 0 before, on every line)
    states = ", ".join(f"{s} {n}" for s, n in totals["by_state"].items() if n or s != "cut_over")
    odd = [
        f"{totals['partitions_stopped']} stopped" if totals["partitions_stopped"] else "",
        f"{totals['partitions_kafka_ahead']} KAFKA AHEAD" if totals["partitions_kafka_ahead"] else "",
    ]
    parts = "; ".join(o for o in odd if o)
    tables, partitions = _count(totals["tables"], "table"), _count(totals["partitions"], "partition")
    held_in = _count(totals["held_tables"], "table")
    return (
        f"totals: {tables} ({states}); {partitions}"
        + (f" ({parts})" if parts else "")
        + f", lag {totals['lag']}; held rows {totals['held_rows']} in {held_in};"
        f" open error records {totals['open_error_records']}"
    )


def shown_line(patterns: Sequence[str], shown: int, total: int) -> str:
    """What `--table` left out: the sections below list `shown` tables, the totals cover all."""
    return (
        f"showing {shown} of {total} tables (--table {' '.join(patterns)}): the sections below list only"
        f" those; the totals and the exit code cover all {total}"
    )


def table_lines(tables: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per table (`table_status` rows), its state and reason; a reason and fix that
    several tables share (a halted run holds them all, one partition count change) is printed once
    after them, numbered, with how many tables and the first SHOWN_NAMES, and each of those tables
    points to it (trial 13: a halted run's reason of about 600 characters on each of 119 lines)."""
    sharing: dict[tuple[str, str, str | None], list[str]] = {}
    for t in tables:
        if t["reason"]:
            sharing.setdefault((t["state"], t["reason"], t["fix"]), []).append(t["table"])
    shared = {key: i for i, key in enumerate((k for k, v in sharing.items() if len(v) > 1), 1)}
    lines = ["tables:"]
    for t in tables:
        key = (t["state"], t["reason"], t["fix"])
        why = f"reason [{shared[key]}]" if key in shared else t["reason"]
        tail = "" if key in shared or not t["fix"] else f"; fix: {t['fix']}"
        if t["state"] == "stopped":
            lines.append(f"  {t['table']:34} stopped at {t['at']} ({t['rule_id']}): {why}{tail}")
        elif t["state"] == "halted":
            lines.append(f"  {t['table']:34} HALTED: {why}{tail}")
        else:
            lines.append(f"  {t['table']:34} {t['state']}" + (f": {why}{tail}" if why else ""))
    if shared:
        lines.append("reasons shared by several tables:")
    for (state, reason, fix), number in shared.items():
        names = sharing[(state, reason, fix)]
        lines.append(
            f"  [{number}] {state.upper() if state == 'halted' else state}, {len(names)} tables"
            f" ({first_names(names)}): {reason}" + (f"; fix: {fix}" if fix else "")
        )
    return lines


def stuck_held(held: Sequence[Mapping[str, Any]], limit_s: float) -> list[Mapping[str, Any]]:
    """Tables (`held_status` rows) whose oldest held row is older than the cutover gate allows:
    not lag in motion, something keeps them out."""
    return [h for h in held if float(h["oldest_s"]) > limit_s]


def held_problems(stuck: Sequence[Mapping[str, Any]], limit_s: float) -> list[str]:
    """The PROBLEM line of the `stuck_held` tables: one, naming them (with what each waits for),
    the limit and the usual causes once."""
    if not stuck:
        return []
    causes = (
        "a lagging or stopped topic, a parent rejected by the spec, a NOT DEFERRABLE foreign-key cycle, or a"
        " NOT DEFERRABLE unique constraint the source swaps values under, in the target (`mapping check`"
        " warns about both; runbook: Known limitations), or a parent row deleted by hand in the target"
        " (its version says it was applied; fix: `replicator reload --table` on the parent's table)"
    )
    limit = f"longer than {limit_s:g} s (REPLICATOR_CUTOVER__MAX_HELD_AGE_S)"
    if len(stuck) == 1:
        (h,) = stuck
        return [f"  PROBLEM: {h['table']} has rows held {limit}, waiting for {h['waiting_for']}: {causes}"]
    names = [f"{h['table']} (waiting for {h['waiting_for']})" for h in stuck]
    return [f"  PROBLEM: {len(stuck)} tables have rows held {limit}: {first_names(names)}: {causes}"]
