"""Command line: `replicator <command>`; each exits non-zero with one line on failure.

The CLI parses arguments, builds settings and calls one function per command
(in `replicator.run`); it holds no business logic, no SQL and no driver
import. Secrets are never accepted as flags. A known failure prints one line;
an unexpected exception is a bug and prints its traceback.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from replicator.config import Settings, load_settings
from replicator.core.errors import ReplicatorError
from replicator.core.model import TableRef
from replicator.core.serialize import dumps

Handler = Callable[[argparse.Namespace, Settings], int]


class CliError(ReplicatorError):
    """A usage mistake reported as one line on stderr with exit code 1."""


def _emit(data: Any, as_json: bool, text: str) -> None:
    print(dumps(data, indent=2) if as_json else text)


def parse_time(text: str) -> datetime:
    """An ISO-8601 timestamp with a zone (e.g. 2026-11-26T10:00:00+00:00)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CliError(
            f"{text!r} is not an ISO-8601 timestamp; write e.g. 2026-11-26T10:00:00+00:00"
        ) from exc
    if moment.tzinfo is None:
        raise CliError(f"{text!r} has no time zone; add one, e.g. +00:00")
    return moment


# ---------------------------------------------------------------- connectors
def cmd_connectors_apply(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.connectors import apply_dir

    results = apply_dir(settings, Path(args.dir), restart_failed=args.restart_failed)
    text = "\n".join(
        f"{r['name']}: {r['action']}; connector {r['connector']}, tasks {', '.join(r['tasks'])}"
        f" (held {r['settled_s']:g}s; a task can still fail later: `replicator connectors status`)"
        for r in results
    )
    _emit(results, args.json, text)
    return 0


def cmd_connectors_delete(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.connectors import delete_connector

    said: list[str] = []
    done = delete_connector(settings, args.name, args.drop_slot, args.dry_run, said.append, args.force)
    _emit({**done, "said": said}, args.json, "\n".join(said))
    return 0


def cmd_connectors_status(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.connectors import connector_states

    rows = connector_states(settings, args.verbose)
    if not rows:
        _emit(rows, args.json, f"no connectors on {settings.connect.url}")
        return 0
    lines = []
    for r in rows:
        line = f"{r['name']}: connector {r['connector']}, tasks {', '.join(r['tasks']) or 'none'}"
        if r["trace"]:
            line += f" ({r['trace']})"
        lines.append(line)
    _emit(rows, args.json, "\n".join(lines))
    # a RUNNING connector whose task FAILED carries nothing: that is not healthy either
    healthy = all(r["connector"] == "RUNNING" and r["tasks"] and set(r["tasks"]) == {"RUNNING"} for r in rows)
    return 0 if healthy else 1


# ---------------------------------------------------------------- mapping
def cmd_mapping_check(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.mapping import check_spec

    spec = args.spec or settings.mapping
    problems = check_spec(settings, spec, args.scan, say=lambda line: print(line, file=sys.stderr))
    errors = [p for p in problems if p.severity == "error"]
    if args.json:
        _emit([asdict(p) for p in problems], True, "")
    else:
        for p in problems:
            stream = sys.stderr if p.severity == "error" else sys.stdout
            print(f"{p.severity}: {p}", file=stream)
        warnings = sum(p.severity == "warning" for p in problems)
        notes = len(problems) - len(errors) - warnings
        print(f"{spec}: {len(errors)} errors, {warnings} warnings, {notes} notes")
    return 1 if errors else 0


def cmd_mapping_explain(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.mapping import explain_spec

    plan = explain_spec(settings, args.spec or settings.mapping)
    _emit(plan.to_json(), args.json, plan.explain())
    return 0


def _table_refs(text: str | None, what: str) -> list[TableRef]:
    try:
        return [TableRef.parse(t.strip()) for t in (text or "").split(",") if t.strip()]
    except ValueError as exc:
        raise CliError(f"{what}: {exc}; write schema.table[,schema.table...]") from exc


def cmd_mapping_scaffold(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.mapping import scaffold_spec

    schemas = [s.strip() for s in (args.schemas or "").split(",") if s.strip()]
    tables = _table_refs(args.tables, "--tables")
    if not schemas and not tables:
        raise CliError("mapping scaffold: name the tables to migrate with --schemas a,b or --tables s.t,...")
    target_schemas: dict[str, str] = {}
    for pair in args.target_schema or []:
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise CliError(f"--target-schema {pair!r}: write SOURCE=TARGET, e.g. app=app_new")
        target_schemas[src] = dst
    signal = _table_refs(args.signal_table or settings.signal_table, "--signal-table")
    done = scaffold_spec(
        settings,
        schemas,
        tables,
        args.topic_prefix,
        target_schemas,
        args.connector or settings.connector,
        signal[0] if signal else None,
    )
    for line in done.skipped:
        print(f"mapping scaffold: skipped {line}", file=sys.stderr)
    if done.lossy:
        kinds = ", ".join(line.split(" ", 1)[0] for line in done.lossy)
        print(
            f"mapping scaffold: copied columns open to documented losses ({kinds}): see the LOSSY lines"
            " at the top of the spec (`mapping check` warns about them too)",
            file=sys.stderr,
        )
    print(done.text(), end="")
    return 0


# ---------------------------------------------------------------- run
def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.init import init_target, print_grants

    if args.print_grants:
        roles = (args.shadow_role, args.connector_role, args.publication)
        print(print_grants(settings, *roles, database=args.print_grants), end="")  # source, target or both
        return 0
    print(init_target(settings, args.shadow_role))
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.daemon import RunRequest, run_daemon

    if args.processes < 1:
        raise CliError(f"--processes {args.processes}: give 1 or more")
    if args.processes > 1:
        from replicator.run.processes import supervise

        return supervise(_run_args(args), args.processes, settings.kafka.instance_id)
    totals = run_daemon(
        settings,
        RunRequest(
            stop_when_caught_up=args.stop_when_caught_up, on_error=args.on_error, progress=not args.json
        ),
    )
    _emit(totals, args.json, "")
    stopped = totals.get("stopped") or []
    for line in stopped:
        print(f"replicator: stopped: {line}", file=sys.stderr)
    # Caught up means every table's events were read, not applied: a stopped table is not done.
    return 1 if stopped and args.stop_when_caught_up else 0


def _run_args(args: argparse.Namespace) -> list[str]:
    """The command line of one process of `run --processes N`: this one's options, one process."""
    out = ["run"]
    for option in ("config", "mapping", "group_id"):
        if hasattr(args, option):
            out += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    if args.stop_when_caught_up:
        out.append("--stop-when-caught-up")
    out += ["--on-error", args.on_error]
    if args.json:
        out.append("--json")
    return out


def cmd_shadow(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.core.report import held_note, no_diffs, offsets_read, shadow_table_lines
    from replicator.run.assembly import target_topics
    from replicator.run.shadow import ShadowRequest, shadow

    if args.from_time and args.from_group:
        raise CliError("give --from or --from-group, not both")
    summary = shadow(
        settings,
        ShadowRequest(
            group=args.shadow_group or f"{settings.kafka.group_id}-shadow",
            from_group=args.from_group,
            from_time=parse_time(args.from_time) if args.from_time else None,
            to_time=parse_time(args.to_time) if args.to_time else None,
            stop_when_caught_up=args.stop_when_caught_up,
            report_dir=Path(args.report_dir),
            progress=not args.json,
        ),
    )
    lines = [
        f"shadow run {summary['run_id']}: diffs in {summary['report']}, review in {summary['review']}"
        f" and {summary['review_html']}"
    ]
    read = offsets_read(summary["range"], summary.get("totals") or {})
    if read:
        lines.append(f"  {read}")
    lines += shadow_table_lines(summary, target_topics(settings))
    if not summary["diffs"]:
        lines.append(f"  {no_diffs(summary.get('totals') or {})}")
    held = held_note(summary)
    if held:
        lines.append(f"  {held}")
    lines += [f"  would-be error: {e}" for e in summary["errors"][:20]]
    _emit(summary, args.json, "\n".join(lines))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.assembly import source_topics, spec_topics, target_topics
    from replicator.run.status import (
        after_flip,
        authority_status,
        capture_status,
        dead_text,
        first_names,
        group_line,
        group_members,
        held_problems,
        held_status,
        partition_halts,
        partition_status,
        run_status,
        runs_beating,
        select_tables,
        shown_line,
        status_totals,
        stuck_held,
        table_lines,
        table_status,
        totals_line,
        unread_lines,
        unread_status,
    )
    from replicator.target.store import ControlStore

    group = args.group or settings.kafka.group_id
    mapped = target_topics(settings)
    patterns: list[str] = args.table or []
    chosen: frozenset[str] | None = None
    if patterns:  # refused before any read: a pattern that matches nothing is a typo
        sources: dict[str, list[str]] = {}
        for source, topic in source_topics(settings).items():
            sources.setdefault(topic, []).append(source)
        chosen, unmatched = select_tables(patterns, mapped, sources)
        if unmatched:
            raise CliError(
                f"status: --table {' '.join(unmatched)} matches no mapped table (target, topic or source);"
                f" fix: a glob on schema.table such as 'crm.*' (the spec maps"
                f" {first_names([t for t, _ in mapped])})"
            )
    with ControlStore.open(settings) as store:  # one session for every control-store read
        store.require()
        rows = partition_status(store, settings, spec_topics(settings), group)
        held = held_status(store, group)
        halts = partition_halts(store, settings, group, [(r["topic"], r["partition"]) for r in rows])
        tables = table_status(store, group, mapped, halts)
        runs = run_status(store, settings.heartbeat_s)
        authority = authority_status(store)
        unread = unread_status(store, group, source_topics(settings))
    tables, runs = after_flip(authority, tables, runs)
    totals = status_totals(tables, rows, held)
    stopped = [t for t in tables if t["state"] == "stopped"]
    limit = settings.cutover.max_held_age_s
    stuck = stuck_held(held, limit)
    if chosen is not None:  # the sections list the chosen tables; totals and exit code cover all
        shown_tables = [t for t in tables if t["table"] in chosen]
        topics = {t["topic"] for t in shown_tables}
        shown_rows = [r for r in rows if r["topic"] in topics]
        shown_held = [h for h in held if h["table"] in chosen]
        shown_unread = [u for u in unread if topics.intersection(u["topics"])] if unread is not None else None
    else:
        shown_tables, shown_rows, shown_held, shown_unread = tables, rows, held, unread
    cap = capture_status(settings)
    members = group_members(settings, group)
    beating = runs_beating(runs, group)
    slot = cap["slot"]
    lines = [
        "authority: source (the replicator applies its changes to the target)"
        if authority["authority"] == "source"
        else f"authority: TARGET since {authority['since']} (cutover {authority['cutover_id']}):"
        " the replicator writes nothing more",
        totals_line(totals),
        *([shown_line(patterns, len(shown_tables), len(tables))] if chosen is not None else []),
        f"capture: connector {cap['connector'] or '-'} {cap['state'] or '-'}"
        f" tasks {','.join(cap['tasks']) or '-'}; slot "
        + (
            f"{slot['name']} {'active' if slot['active'] else 'INACTIVE'}"
            f" retained WAL {slot['retained_wal_bytes']} bytes"
            if slot
            else "-"
        ),
        *(f"  PROBLEM: {p}" for p in cap["problems"]),
        *(f"  note: {n}" for n in cap["notes"]),
        group_line(group, members, beating, settings.kafka.session_timeout_ms),
        *(
            f"run {r['run_id']} {r['mode']} group={r['group']} {r['state'].upper()}"
            + (
                f" ({dead_text(r)})"
                if r["state"] == "dead"
                else f" at {r['ended_at']}: {r['reason']}; fix it, then start the run again"
                if r["state"] == "halted"
                else f" at {r['ended_at']}: stopped at the cutover's flip (expected)"
                if r["state"] == "cut_over"
                else ""
            )
            for r in runs
        ),
        f"{'partition':36} {'target':>8} {'kafka':>8} {'end':>8} {'lag':>7} {'errors':>6}",
    ]
    for r in shown_rows:
        lines.append(
            f"{r['topic'] + '[' + str(r['partition']) + ']':36} {_or_dash(r['target_offset']):>8} "
            f"{_or_dash(r['kafka_committed']):>8} {r['end_offset']:>8} {r['lag']:>7} {r['errors']:>6}"
            + ("  KAFKA AHEAD OF TARGET" if r["kafka_ahead"] else "")
            + ("  STOPPED" if r["stopped"] else "")
        )
    lines += table_lines(shown_tables)
    if shown_held:
        lines.append("held back, waiting for a lagging table:")
        lines += [
            f"  {h['table']:34} held={h['held']} oldest={h['oldest_s']}s waiting_for={h['waiting_for']}"
            for h in shown_held
        ]
    else:
        lines.append("held back: none")
    # rows held longer than the cutover gate allows set the exit code: named whatever --table shows
    lines += held_problems(stuck, limit)
    lines += unread_lines(shown_unread)
    _emit(
        {
            "authority": authority,
            "totals": totals,  # every table and partition, whatever --table shows
            "filter": {"tables": patterns, "tables_shown": len(shown_tables), "tables_total": len(tables)},
            "capture": cap,
            "members": len(members),  # listed by Kafka, ended ones until their session timeout
            "member_instances": members,
            "runs_beating": beating,
            "runs": runs,
            "partitions": shown_rows,
            "held": shown_held,
            "tables": shown_tables,
            # source tables no rule reads whose events arrived on a topic the spec reads (not
            # applied); null when the control schema predates the record
            "unread_tables": shown_unread,
        },
        args.json,
        "\n".join(lines),
    )
    # a halted run of this group that nothing replaced: no change is applied (after a cutover's
    # flip, the forward run halting is the expected end)
    halted = [r for r in runs if r["state"] == "halted" and r["group"] == group and r["mode"] == "run"]
    halted += [t for t in tables if t["state"] == "halted"]  # no change of theirs is applied
    return 1 if cap["problems"] or stopped or stuck or (halted and authority["authority"] == "source") else 0


def _or_dash(value: object) -> str:
    """A cell of a text table: '-' for a value that does not exist yet (no offset stored)."""
    return "-" if value is None else str(value)


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.core.lsn import parse_lsn
    from replicator.core.replay import parse_offset
    from replicator.run.replay import ReplayRequest, also_fed, refusal_now, replay

    chosen = [bool(args.to_earliest), bool(args.to_offset), bool(args.to_timestamp), bool(args.to_lsn)]
    if sum(chosen) != 1:
        raise CliError("give exactly one of --to-earliest, --to-offset, --to-timestamp, --to-lsn")
    try:
        offsets = dict(parse_offset(o) for o in args.to_offset or [])
    except ValueError as exc:
        raise CliError(f"--to-offset: {exc}") from exc
    try:
        lsn = parse_lsn(args.to_lsn) if args.to_lsn else None
    except ValueError as exc:
        raise CliError(f"--to-lsn: {exc}") from exc
    group = args.group or settings.kafka.group_id
    tables = tuple(t for t in (args.tables or "").split(",") if t)
    moves = replay(
        settings,
        ReplayRequest(
            group=group,
            earliest=args.to_earliest,
            offsets=offsets,
            moment=parse_time(args.to_timestamp) if args.to_timestamp else None,
            lsn=lsn,
            tables=tables,
            dry_run=args.dry_run,
        ),
    )
    others = also_fed(settings, tables)
    rows = [
        {
            "topic": m.partition[0],
            "partition": m.partition[1],
            "stored": m.stored,
            "to": m.to,
            "events": m.events,
        }
        for m in moves
    ]
    lines = [
        f"{t}[{p}]: {_or_dash(m.stored)} -> {m.to} ({m.events} events to read again)"
        for m in moves
        for t, p in [m.partition]
    ]
    if others:  # one topic feeds every rule of its source table
        lines.append(
            f"note: the same topics also feed {', '.join(others)}: they read these events again too"
            " (no-ops on a current target: the ordering guard skips what it already holds)"
        )
    total = sum(m.events for m in moves)
    if moves and not total:  # trial 17: "0 events ... nothing changed" left the operator unsure
        lines.append(
            "note: every partition's target checkpoint is at or past that point (or has none): there is"
            " nothing to read again; a target restored from a backup with its control schema resumes from"
            " its own checkpoints with `replicator run`"
        )
    refusal = refusal_now(settings, group) if args.dry_run else None
    if args.dry_run:
        lines.append(f"dry run: group {group} would read {total} events again; nothing changed")
        if refusal is not None:  # the plan holds, but the replay itself cannot run yet
            lines.append(
                "note: " + refusal.replace("replay refused:", "the replay itself would be refused now:")
            )
    else:
        lines.append(
            f"group {group} moved: {total} events to read again; start `replicator run` to replay them"
        )
    _emit(
        {
            "group": group,
            "dry_run": args.dry_run,
            "moves": rows,
            "refused_now": refusal,
            "also_feeds": others,
        },
        args.json,
        "\n".join(lines),
    )
    return 0


def cmd_drain(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.assembly import capture, spec_topics
    from replicator.run.drain import drain, drained_report

    source = capture(settings, args.connector, args.signal_table)
    done = drain(
        settings,
        spec_topics(settings),
        source.need_connector("drain"),
        str(source.need_signal_table("drain")),
        args.timeout,
        say=lambda line: print(line, file=sys.stderr, flush=True),
    )
    data, text = drained_report(done)
    _emit(data, args.json, text)
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.verify import verify_configured

    diffs, tables = verify_configured(settings)
    stopped = {
        t["table"]: f"stopped at {t['at']} ({t['rule_id']}): {t['reason']}; fix: {t['fix']}"
        for t in tables
        if t["state"] == "stopped"
    }
    rows = [
        {
            "table": str(d.target),
            "expected": d.expected,
            "actual": d.actual,
            "missing": d.missing[:20],
            "extra": d.extra[:20],
            "mismatched": [list(m[:2]) for m in d.mismatched[:20]],
            "mismatched_columns": dict(Counter(m[1] for m in d.mismatched)),
            "placeholders": d.placeholders[:20],
            "held": d.held[:20],
            "errored": d.errored[:20],
            "accepted": d.accepted[:20],
            "rejected": len(d.rejected),
            "target_owned": d.target_owned[:20],
            "clean": d.clean(args.accept_errors) and str(d.target) not in stopped,
            "stopped": stopped.get(str(d.target)),
        }
        for d in diffs
    ]
    text = "\n".join(
        ("ok   " if r["clean"] else "DIFF ")
        + d.summary()
        + (f"\n     {d.mismatch_detail()}" if d.mismatched else "")
        + (f"\n     {r['stopped']}" if r["stopped"] else "")
        for d, r in zip(diffs, rows, strict=True)
    )
    if any(d.errored or d.rejected for d in diffs) and not args.accept_errors:
        text += (
            "\nsource rows are not in the target because of error records (refused by the target, or"
            " rejected by a rule): fix them (replicator errors list), or pass --accept-errors once you"
            " have reviewed them"
        )
    if stopped:
        text += (
            "\na stopped table is not applied any more (a source schema change, or its topic's partition"
            " count changed): follow its fix, drain, then verify"
        )
    _emit(rows, args.json, text)
    return 0 if all(r["clean"] for r in rows) else 1


def cmd_errors_list(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.error_records import count_errors, count_line, error_line, list_errors

    chosen = {"table": args.table, "rule": args.rule, "sqlstate": args.sqlstate, "run": args.run}
    if args.counts:
        counts = count_errors(settings, args.kind, state=args.state, **chosen)
        total = sum(r["records"] for r in counts)
        lines = [f"{total} error record{'' if total == 1 else 's'} ({args.state})", *map(count_line, counts)]
        _emit(counts, args.json, "\n".join(lines))
        return 0
    rows = list_errors(settings, args.kind, args.limit, state=args.state, **chosen)
    text = "\n".join(error_line(r) for r in rows) or "no error records"
    _emit(rows, args.json, text)
    return 0


def cmd_errors_show(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.error_records import show_error

    row = show_error(settings, args.id)
    head = [f"{k}: {_or_dash(row[k])}" for k in row if k not in ("raw_key", "raw_value", "also")]
    body = [f"{k}: {dumps(row[k], indent=2)}" for k in ("also", "raw_key", "raw_value")]
    where = f"--topic {row['topic']} --partition {row['partition']} --offset {row['kafka_offset']}"
    hint = (  # trial 18: $BROKERS was set nowhere, and the local stack runs Kafka from jars (no scripts)
        "reproduce: raw_key and raw_value above are the event as Kafka holds it; to read it there, with"
        f" an Apache Kafka distribution's bin/: kafka-console-consumer.sh --bootstrap-server"
        f" {settings.kafka.bootstrap_servers} {where} --max-messages 1"
    )
    _emit(row, args.json, "\n".join([*head, *body, hint]))
    return 0


def _chosen_errors(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "ids": args.ids,
        "limit": args.limit,
        "every": args.all,
        "table": args.table,
        "rule": args.rule,
        "sqlstate": args.sqlstate,
        "run": args.run,
    }


def cmd_errors_retry(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.error_records import retry_errors

    r = retry_errors(settings, dry_run=args.dry_run, **_chosen_errors(args))
    lines = [f"#{i} still fails: {reason}" for i, reason in sorted(r.failing.items())]
    note = " (dry run: the spec only, not the target's constraints)" if args.dry_run else ""
    lines.append(f"{r.chosen} error records retried{note}: {r.counts(args.dry_run)}")
    _emit(
        {
            "run_id": None if args.dry_run else r.run_id,
            "dry_run": args.dry_run,
            "chosen": r.chosen,
            "closed": r.closed,
            "failing": {str(i): reason for i, reason in sorted(r.failing.items())},
            "applied": dict(r.applied),
            "skipped_older": r.skipped_older,
            "closed_older": r.closed_older,
        },
        args.json,
        "\n".join(lines),
    )
    return 1 if r.failing else 0


def cmd_errors_resolve(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.error_records import resolve_errors

    closed = resolve_errors(settings, reason=args.reason, **_chosen_errors(args))
    _emit({"closed": closed}, args.json, f"closed {len(closed)} error records: {args.reason}")
    return 0


def cmd_reload(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.reload import reload_tables

    say = (lambda _line: None) if args.json else (lambda line: print(line, file=sys.stderr))
    done = reload_tables(settings, args.table, args.timeout, say)
    text = (
        f"reloaded {', '.join(done.sources)}: snapshot {done.snapshot_s:.1f}s, applied {done.applied_s:.1f}s"
        " later; `replicator verify` compares them"
    )
    _emit(asdict(done), args.json, text)
    return 0


def cmd_partitions_accept(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from replicator.run.partitions import accept_partitions

    if not args.yes:
        raise CliError(
            f"partitions accept changes how the events of {args.topic} are ordered across its partitions and"
            " restarts the capture connector; confirm with --yes (MIGRATION-ARTIFACTS.md, runbook step 10)"
        )
    say = (lambda _line: None) if args.json else (lambda line: print(line, file=sys.stderr))
    operator = args.operator or settings.cutover.operator or getpass.getuser()
    done = accept_partitions(settings, args.topic, operator, args.timeout, say)
    starts = ", ".join(f"[{p}]@{done.changed[p]}-{o}" for p, o in done.starts.items())
    text = (
        f"accepted {done.topic}: {done.before} -> {done.partitions} partitions (layout {done.epoch};"
        f" transition {starts}); the running instances resume it."
        f" Next: `{done.next_step}`, then `replicator verify`"
    )
    _emit({**asdict(done), "next": done.next_step}, args.json, text)
    return 0


# ---------------------------------------------------------------- cutover
def _cutover(args: argparse.Namespace, settings: Settings) -> Any:
    from replicator.run.cutover import Cutover

    out = sys.stderr if args.json else sys.stdout
    return Cutover(settings, lambda line: print(line, file=out, flush=True), args.operator)


def _cutover_done(args: argparse.Namespace, cutover: Any, report: Any) -> None:
    from replicator.run.cutover import report_data, status_text, write_reports

    mirror = cutover.source_mirror()
    if report.cutover_id is not None:
        paths = write_reports(Path(args.report_dir), report, mirror)
        print(f"cutover report: {', '.join(map(str, paths))}", file=sys.stderr if args.json else sys.stdout)
    _emit(report_data(report, mirror), args.json, status_text(report, mirror))


def cmd_cutover(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.run.cutover import Options

    if sum(bool(x) for x in (args.dry_run, args.resume, args.abort)) > 1:
        raise CliError("--dry-run, --resume and --abort exclude each other")
    cutover = _cutover(args, settings)
    options = Options(
        accept_errors=args.accept_errors,
        accept_target_only=args.accept_target_only,
        pause_before_flip=args.pause_before_flip,
        timeout_s=args.timeout if args.timeout is not None else settings.cutover.timeout_s,
    )
    if args.dry_run:
        gates, plan = cutover.dry_run(options)
        text = "\n".join(
            [
                *(g.line() for g in gates),
                f"would revoke {len(plan['revoke'])} write grants, drain "
                f"{len(plan['drain']['topics'])} topics, set {len(plan['sequences'])} sequences"
                + "".join(
                    f"\n  sequence {s['sequence']} ({s['what']}) -> {s['set_to']}" for s in plan["sequences"]
                ),
                "dry run: nothing was changed; "
                + (
                    "every gate above passes; the cutover also compares every row first (its `verify`"
                    " gate, not run here: `replicator verify` shows it now)"
                    if all(g.ok for g in gates)
                    else "a cutover now would be refused"
                ),
            ]
        )
        _emit({"gates": [_gate(g) for g in gates], "plan": plan}, args.json, text)
        return 0 if all(g.ok for g in gates) else 1
    if args.abort:
        report = cutover.abort(args.reason or f"aborted by {cutover.operator}")
    elif args.resume:
        report = cutover.resume()
    else:
        report = cutover.start(options)
    _cutover_done(args, cutover, report)
    return 0


def _gate(g: Any) -> dict[str, Any]:
    return {"name": g.name, "ok": g.ok, "detail": g.detail, "warning": g.warning}


def cmd_cutover_status(args: argparse.Namespace, settings: Settings) -> int:
    cutover = _cutover(args, settings)
    _cutover_done(args, cutover, cutover.report())
    return 0


def cmd_cutover_rollback(args: argparse.Namespace, settings: Settings) -> int:
    cutover = _cutover(args, settings)
    _cutover_done(args, cutover, cutover.rollback(args.reason or f"rolled back by {cutover.operator}"))
    return 0


# ---------------------------------------------------------------- parser
class _Subparsers:
    """add_parser with the common options attached to every command."""

    def __init__(self, action: Any, common: argparse.ArgumentParser) -> None:
        self._action = action
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._action.add_parser(name, parents=[self._common], **kwargs)
        return parser


def _cutover_common(parser: argparse.ArgumentParser, sub: bool = False) -> None:
    """The options `cutover` and its subcommands share. A subcommand's defaults are SUPPRESS, so
    `cutover --report-dir D status` keeps D (argparse lets a subparser's default overwrite it)."""
    defaults: dict[str, Any] = {"default": argparse.SUPPRESS} if sub else {}
    parser.add_argument("--json", action="store_true", **defaults)
    parser.add_argument(
        "--operator",
        help="who runs it (recorded; default: REPLICATOR_CUTOVER__OPERATOR or the OS user)",
        **defaults,
    )
    parser.add_argument(
        "--report-dir",
        help="where the Markdown cutover report goes (default: reports)",
        **(defaults or {"default": "reports"}),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replicator",
        description="Change-data-capture replicator for live PostgreSQL migrations.",
    )
    # Common options are accepted before or after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help="YAML settings file (env REPLICATOR_* wins)"
    )
    common.add_argument(
        "--mapping", type=Path, default=argparse.SUPPRESS, help="mapping spec (default: REPLICATOR_MAPPING)"
    )
    common.add_argument(
        "--group-id",
        default=argparse.SUPPRESS,
        help="consumer group id (default: REPLICATOR_KAFKA__GROUP_ID)",
    )
    for action in common._actions:
        parser._add_action(action)
    sub = _Subparsers(parser.add_subparsers(dest="command", required=True), common)

    connectors = sub.add_parser("connectors", help="Kafka Connect connector configs")
    csub = _Subparsers(connectors.add_subparsers(dest="connectors_command", required=True), common)
    apply = csub.add_parser("apply", help="validate, create or update, wait until RUNNING")
    apply.add_argument("--dir", default="connectors", help="directory of *.json configs")
    apply.add_argument(
        "--restart-failed",
        action="store_true",
        help="restart a FAILED connector or task once (after fixing its cause)",
    )
    apply.add_argument("--json", action="store_true")
    apply.set_defaults(handler=cmd_connectors_apply)
    delete = csub.add_parser("delete", help="remove a connector for good (and, with --drop-slot, its slot)")
    delete.add_argument("name", help="the connector's name")
    delete.add_argument(
        "--drop-slot",
        action="store_true",
        help="drop its replication slot on the source once its task let go of it (it pins WAL)",
    )
    delete.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
    delete.add_argument(
        "--force",
        action="store_true",
        help="delete the migration's own connector (the one the settings name) before the cutover",
    )
    delete.add_argument("--json", action="store_true")
    delete.set_defaults(handler=cmd_connectors_delete)
    status = csub.add_parser("status", help="state of every connector on the worker")
    status.add_argument("--json", action="store_true")
    status.add_argument("--verbose", action="store_true", help="include configs (secrets masked)")
    status.set_defaults(handler=cmd_connectors_status)

    mapping = sub.add_parser("mapping", help="the mapping spec: check and explain")
    msub = _Subparsers(mapping.add_subparsers(dest="mapping_command", required=True), common)
    mcheck = msub.add_parser("check", help="check a spec against the live source and target catalogs")
    mcheck.add_argument(
        "spec",
        type=Path,
        nargs="?",
        default=None,
        help="the spec (default: --mapping, then REPLICATOR_MAPPING)",
    )
    mcheck.add_argument(
        "--scan",
        action="store_true",
        help="count the source rows holding values of a documented loss (one read-only scan per table)",
    )
    mcheck.add_argument("--json", action="store_true")
    mcheck.set_defaults(handler=cmd_mapping_check)
    mexplain = msub.add_parser("explain", help="print the compiled plan")
    mexplain.add_argument(
        "spec",
        type=Path,
        nargs="?",
        default=None,
        help="the spec (default: --mapping, then REPLICATOR_MAPPING)",
    )
    mexplain.add_argument("--json", action="store_true")
    mexplain.set_defaults(handler=cmd_mapping_explain)

    mscaffold = msub.add_parser(
        "scaffold", help="print an identity spec of the source's tables (a start to edit, then check)"
    )
    mscaffold.add_argument("--topic-prefix", required=True, help="the connector's topic.prefix")
    mscaffold.add_argument("--schemas", help="every table of these source schemas (a,b)")
    mscaffold.add_argument("--tables", help="these source tables (schema.table,...)")
    mscaffold.add_argument(
        "--target-schema",
        action="append",
        metavar="SOURCE=TARGET",
        help="write a source schema's tables into another target schema (repeatable)",
    )
    mscaffold.add_argument("--connector", help="the capture connector (default: REPLICATOR_CONNECTOR)")
    mscaffold.add_argument(
        "--signal-table", help="the connector's signal table, never mapped (default: REPLICATOR_SIGNAL_TABLE)"
    )
    mscaffold.set_defaults(handler=cmd_mapping_scaffold)

    init = sub.add_parser("init", help="create the control schema in the target")
    init.add_argument("--shadow-role", help="grant this role what shadow mode needs (read data, own diffs)")
    init.add_argument(
        "--print-grants",
        nargs="?",
        const="both",
        choices=("source", "target", "both"),
        help="print, without connecting, the SQL that sets up the source and target for the spec:"
        " signal table, publication, the connector's, replicator's and shadow role's grants; `source`"
        " or `target` prints that database's part alone (to pipe into psql there)",
    )
    init.add_argument(
        "--connector-role", default="debezium", help="the connector's database.user (--print-grants)"
    )
    init.add_argument(
        "--publication", help="the connector's publication.name (--print-grants; default cdc_<topic_prefix>)"
    )
    init.set_defaults(handler=cmd_init)

    run = sub.add_parser("run", help="the replicator daemon: apply changes into the target")
    run.add_argument(
        "--stop-when-caught-up",
        action="store_true",
        help="drain to the end offsets seen at start, then exit 0",
    )
    run.add_argument(
        "--on-error",
        choices=["record", "halt"],
        default="record",
        help="record: bad rows become error records and the run continues; "
        "halt: stop cleanly with the cursor kept",
    )
    run.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N daemon processes in the group (more cores); with REPLICATOR_KAFKA__INSTANCE_ID,"
        " process i is <id>-<i>; one killed by a signal is started again",
    )
    run.add_argument("--json", action="store_true")
    run.set_defaults(handler=cmd_run)

    shadow = sub.add_parser("shadow", help="dry run: the same pipeline, writing diffs instead of rows")
    shadow.add_argument("--stop-when-caught-up", action="store_true")
    shadow.add_argument("--shadow-group", help="consumer group of the shadow (default: <group>-shadow)")
    shadow.add_argument("--from-group", help="start where this (live) group stands in the target")
    shadow.add_argument(
        "--from",
        dest="from_time",
        metavar="TIMESTAMP",
        help="start at the first events at or after this time (ISO-8601 with zone)",
    )
    shadow.add_argument(
        "--to",
        dest="to_time",
        metavar="TIMESTAMP",
        help="preview up to the events before this time, then exit",
    )
    shadow.add_argument("--report-dir", default="reports", help="where the JSON Lines and review go")
    shadow.add_argument("--json", action="store_true")
    shadow.set_defaults(handler=cmd_shadow)

    status = sub.add_parser(
        "status",
        help="totals, capture (connector, tasks, slot), runs (live or dead), per partition offsets and"
        " lag, per table state, held rows; exit 1 on a capture problem, a stopped or halted table, rows"
        " held too long",
    )
    status.add_argument("--group", help="consumer group (default: the configured one)")
    status.add_argument(
        "--table",
        action="append",
        metavar="PATTERN",
        help="list only the tables whose target schema.table, topic or source table matches this glob"
        " (e.g. 'crm.*'; repeatable) and their partitions and held rows; the totals and the exit code"
        " still cover every table",
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    replay_p = sub.add_parser(
        "replay", help="move a stopped group's positions back, so its next run reads those events again"
    )
    replay_p.add_argument("--group", help="consumer group (default: the configured one)")
    replay_p.add_argument("--to-earliest", action="store_true", help="from each partition's log start")
    replay_p.add_argument(
        "--to-offset",
        action="append",
        metavar="TOPIC:PARTITION:OFFSET",
        help="from this offset of this partition (repeatable; other partitions stay)",
    )
    replay_p.add_argument(
        "--to-timestamp", metavar="ISO-8601", help="from the first events at or after this time, with a zone"
    )
    replay_p.add_argument(
        "--to-lsn",
        metavar="LSN",
        help="from the first events of the source transactions that committed at or after this WAL"
        " position (X/Y as pg_current_wal_lsn() shows it)",
    )
    replay_p.add_argument(
        "--tables", help="only these tables, source or target names (schema.table[,schema.table...])"
    )
    replay_p.add_argument("--dry-run", action="store_true", help="show the moves; change nothing")
    replay_p.add_argument("--json", action="store_true")
    replay_p.set_defaults(handler=cmd_replay)

    drain_p = sub.add_parser("drain", help="wait until the target reflects everything the source committed")
    drain_p.add_argument(
        "--connector",
        help="the Debezium connector's name"
        " (default: REPLICATOR_CONNECTOR, then the spec's capture.connector)",
    )
    drain_p.add_argument(
        "--signal-table",
        help="Debezium's signal table (schema.table) in the source, captured by the connector"
        " (default: REPLICATOR_SIGNAL_TABLE, then the spec's capture.signal_table)",
    )
    drain_p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait, at most (default 300); then exit 1"
    )
    drain_p.add_argument("--json", action="store_true")
    drain_p.set_defaults(handler=cmd_drain)

    verify_p = sub.add_parser("verify", help="compare the target with the mapped source, row by row")
    verify_p.add_argument(
        "--accept-errors",
        action="store_true",
        help="rows absent because of error records do not make the result unclean (after review)",
    )
    verify_p.add_argument("--json", action="store_true")
    verify_p.set_defaults(handler=cmd_verify)

    cutover = sub.add_parser(
        "cutover",
        help="gates, fence the source, drain, sequences, flip authority to the target",
        description="Without a subcommand: start a cutover (or --dry-run, --resume, --abort one).",
    )
    _cutover_common(cutover)
    cutover.add_argument(
        "--dry-run", action="store_true", help="every gate's verdict and the plan; no change"
    )
    cutover.add_argument("--resume", action="store_true", help="go on with the cutover from where it stopped")
    cutover.add_argument("--abort", action="store_true", help="unfence the source and record the abort")
    cutover.add_argument("--reason", help="why (recorded with --abort)")
    cutover.add_argument("--accept-errors", action="store_true", help="open error records do not block")
    cutover.add_argument(
        "--accept-target-only", action="store_true", help="rows only in the target (dual writes) do not block"
    )
    cutover.add_argument(
        "--pause-before-flip", action="store_true", help="stop before the flip; `--resume` flips"
    )
    cutover.add_argument(
        "--timeout",
        type=float,
        help="the drain's deadline in seconds (default: REPLICATOR_CUTOVER__TIMEOUT_S)",
    )
    cutover.set_defaults(handler=cmd_cutover)
    csub2 = _Subparsers(cutover.add_subparsers(dest="cutover_command"), common)
    cstatus = csub2.add_parser("status", help="authority, state, each step's time, window, what next")
    _cutover_common(cstatus, sub=True)
    cstatus.set_defaults(handler=cmd_cutover_status)
    crollback = csub2.add_parser(
        "rollback", help="authority back to the source, only while nothing was written to the target"
    )
    _cutover_common(crollback, sub=True)
    crollback.add_argument("--reason", help="why (recorded)")
    crollback.set_defaults(handler=cmd_cutover_rollback)

    reload = sub.add_parser(
        "reload",
        help="reload tables through Debezium's incremental snapshot (needs `replicator run` running)",
    )
    reload.add_argument(
        "--table", action="append", required=True, help="source or target table, schema.table (repeatable)"
    )
    reload.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait, at most")
    reload.add_argument("--json", action="store_true")
    reload.set_defaults(handler=cmd_reload)

    partitions = sub.add_parser("partitions", help="a topic's partition count that changed")
    psub = _Subparsers(partitions.add_subparsers(dest="partitions_command", required=True), common)
    paccept = psub.add_parser(
        "accept",
        help="record a topic's new partition count (restarts the capture connector); its stopped tables"
        " resume; then reload them",
    )
    paccept.add_argument("--topic", required=True, help="the topic whose partition count changed")
    paccept.add_argument("--yes", action="store_true", help="confirm (required)")
    paccept.add_argument(
        "--operator", help="who accepts (recorded; default: REPLICATOR_CUTOVER__OPERATOR or the OS user)"
    )
    paccept.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the connector to stop and run again"
    )
    paccept.add_argument("--json", action="store_true")
    paccept.set_defaults(handler=cmd_partitions_accept)

    errors = sub.add_parser("errors", help="error records")
    esub = _Subparsers(errors.add_subparsers(dest="errors_command", required=True), common)
    elist = esub.add_parser("list", help="the newest error records")
    elist.add_argument("--kind", choices=["error", "truncated", "unavailable"])
    elist.add_argument("--limit", type=int, default=50)
    elist.add_argument("--table", help="only this target table (schema.table)")
    elist.add_argument("--rule", help="only this spec rule id")
    elist.add_argument("--sqlstate", help="only this SQLSTATE (e.g. 23503)")
    elist.add_argument("--run", help="only this run id")
    elist.add_argument("--state", choices=["open", "resolved", "all"], default="open")
    elist.add_argument(
        "--counts", action="store_true", help="how many match, per target table, rule and SQLSTATE (no limit)"
    )
    elist.add_argument("--json", action="store_true")
    elist.set_defaults(handler=cmd_errors_list)
    for name, handler, text in (
        ("retry", cmd_errors_retry, "apply open error records again (after a spec or target fix)"),
        ("resolve", cmd_errors_resolve, "close open error records without applying them"),
    ):
        choose = esub.add_parser(name, help=text)
        choose.add_argument("ids", type=int, nargs="*", help="error record ids (`replicator errors list`)")
        choose.add_argument("--table", help="every open record of this target table (schema.table)")
        choose.add_argument("--rule", help="every open record of this spec rule id")
        choose.add_argument("--sqlstate", help="every open record of this SQLSTATE")
        choose.add_argument("--run", help="every open record of this run id")
        choose.add_argument("--all", action="store_true", help="every open error record")
        choose.add_argument("--limit", type=int, default=100_000, help="records at most")
        choose.add_argument("--json", action="store_true")
        choose.set_defaults(handler=handler)
        if name == "retry":
            choose.add_argument(
                "--dry-run", action="store_true", help="map with the current spec, write nothing"
            )
        else:
            choose.add_argument("--reason", required=True, help="why (recorded with the record)")
    eshow = esub.add_parser("show", help="one error record: the raw event and its context")
    eshow.add_argument("id", type=int)
    eshow.add_argument("--json", action="store_true")
    eshow.set_defaults(handler=cmd_errors_show)
    return parser


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader closed it (not a socket of ours that broke). If so,
    stdout is pointed at /dev/null, so the interpreter's last flush does not fail again."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        gone = any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False
    if gone:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return gone


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        settings = load_settings(getattr(args, "config", None), mapping=getattr(args, "mapping", None))
        if getattr(args, "group_id", None):
            settings.kafka.group_id = args.group_id
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
            return 141  # `| head` stopped reading: quiet, as a tool killed by SIGPIPE
        if os.environ.get("REPLICATOR_DEBUG"):
            raise
        from replicator.run.known import known_reason

        reason = known_reason(exc)
        if reason is None:  # a bug: show where (tracebacks print no local variables, so no secrets)
            traceback.print_exc()
            print(
                f"replicator: internal error (a bug, please report it): {type(exc).__name__}", file=sys.stderr
            )
            return 2
        print(f"replicator: error: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
