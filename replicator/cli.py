"""Command line: `replicator <command>`; each exits non-zero with one line on failure.

The CLI parses arguments, builds settings and calls one module per command; it
holds no business logic. Secrets are never accepted as flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from replicator.config import Settings, load_settings

Handler = Callable[[argparse.Namespace, Settings], int]


class CliError(Exception):
    """A failure reported as one line on stderr with exit code 1."""


def _emit(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


# ---------------------------------------------------------------- connectors
def cmd_connectors_apply(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.connect_client import ConnectClient
    from replicator.connectors import load_connector_dir

    specs = load_connector_dir(Path(args.dir), os.environ)
    client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
    results: list[dict[str, Any]] = []
    for spec in specs:
        action, state = client.apply(spec, wait_s=settings.connect.wait_running_s)
        results.append(
            {"name": spec.name, "action": action, "connector": state.connector, "tasks": list(state.tasks)}
        )
    text = "\n".join(
        f"{r['name']}: {r['action']}; connector {r['connector']}, tasks {', '.join(r['tasks'])}"
        for r in results
    )
    _emit(results, args.json, text)
    return 0


def cmd_connectors_status(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.connect_client import ConnectClient
    from replicator.connectors import mask_secrets

    client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
    rows: list[dict[str, Any]] = []
    for name in sorted(client.connectors()):
        state = client.state(name)
        config = client.config(name) or {}
        rows.append(
            {
                "name": name,
                "connector": state.connector if state else "absent",
                "tasks": list(state.tasks) if state else [],
                "trace": (state.trace or "").strip().splitlines()[0] if state and state.trace else None,
                "config": mask_secrets(config) if args.verbose else None,
            }
        )
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
    return 0 if all(r["connector"] == "RUNNING" for r in rows) else 1


# ---------------------------------------------------------------- mapping
def cmd_mapping_check(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.mapping import check, load_spec
    from replicator.pipeline import catalogs

    spec = load_spec(args.spec)
    source, target = catalogs(spec, settings)
    problems = check(spec, source, target)
    errors = [p for p in problems if p.severity == "error"]
    if args.json:
        _emit([{**vars(p)} for p in problems], True, "")
    else:
        for p in problems:
            stream = sys.stderr if p.severity == "error" else sys.stdout
            print(f"{p.severity}: {p}", file=stream)
        print(f"{args.spec}: {len(errors)} errors, {len(problems) - len(errors)} notes")
    return 1 if errors else 0


def cmd_mapping_explain(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.mapping import compile_spec, load_spec
    from replicator.pipeline import catalogs

    spec = load_spec(args.spec)
    _source, target = catalogs(spec, settings)
    plan = compile_spec(spec, target)
    _emit(plan.to_json(), args.json, plan.explain())
    return 0


# ---------------------------------------------------------------- run
def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from replicator import control
    from replicator.shadow import ensure_shadow_tables, grant_shadow_role

    with psycopg.connect(settings.target.conninfo()) as conn:
        control.ensure(conn, settings.control_schema)
        ensure_shadow_tables(conn, settings.control_schema)
        if args.shadow_role:
            grant_shadow_role(conn, settings.control_schema, args.shadow_role)
    print(f"control schema {settings.control_schema} ready in {settings.target.describe()}")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.daemon import run_daemon

    totals = run_daemon(settings, stop_when_caught_up=args.stop_when_caught_up, on_error=args.on_error)
    _emit(totals, args.json, "")
    return 0


def cmd_shadow(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg
    from psycopg import sql

    from replicator import control
    from replicator.daemon import run_daemon
    from replicator.drain import stored_offsets
    from replicator.positions import offsets_at, parse_time
    from replicator.shadow import ShadowWriter, write_review

    group = args.shadow_group or f"{settings.kafka.group_id}-shadow"
    if args.from_time and args.from_group:
        raise CliError("give --from or --from-group, not both")
    topics = _spec_topics(settings)
    start = offsets_at(settings, topics, parse_time(args.from_time)) if args.from_time else None
    stop_at = offsets_at(settings, topics, parse_time(args.to_time)) if args.to_time else None
    report_dir = Path(args.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    holder: dict[str, Any] = {}

    def seed_positions(conn: psycopg.Connection[Any], shadow_group: str) -> None:
        if start is not None:  # an explicit range start replaces the shadow group's positions
            with conn.cursor() as cur:
                cur.executemany(
                    sql.SQL(
                        "INSERT INTO {} (group_id, topic, partition, next_offset, run_id)"
                        " VALUES (%s, %s, %s, %s, 'from') ON CONFLICT (group_id, topic, partition)"
                        " DO UPDATE SET next_offset = EXCLUDED.next_offset"
                    ).format(control.table(settings.control_schema, "checkpoint")),
                    [(shadow_group, t, p, o) for (t, p), o in sorted(start.items())],
                )
        # Preview what the live group would write next: start where it stands.
        if args.from_group:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {0} (group_id, topic, partition, next_offset, run_id)"
                    " SELECT %s, topic, partition, next_offset, 'seeded' FROM {0} WHERE group_id = %s"
                    " ON CONFLICT (group_id, topic, partition) DO NOTHING"
                ).format(control.table(settings.control_schema, "checkpoint")),
                (shadow_group, args.from_group),
            )
        holder["from"] = {
            f"{t}[{p}]": o
            for t, p, o in conn.execute(
                sql.SQL("SELECT topic, partition, next_offset FROM {} WHERE group_id = %s").format(
                    control.table(settings.control_schema, "checkpoint")
                ),
                (shadow_group,),
            )
        }

    def make_sink(plan: Any, shadow_group: str, run_id: str) -> ShadowWriter:
        path = report_dir / f"shadow-{run_id}.jsonl"
        stream = path.open("w", encoding="utf-8")
        sink = ShadowWriter(
            settings.target.conninfo(), plan, settings.control_schema, shadow_group, run_id, stream
        )
        holder.update(sink=sink, stream=stream, path=path)
        return sink

    try:
        totals = run_daemon(
            settings,
            stop_when_caught_up=args.stop_when_caught_up or stop_at is not None,
            mode="shadow",
            make_sink=make_sink,
            group=group,
            before_start=seed_positions,
            stop_at=stop_at,
        )
    finally:
        if "stream" in holder:
            holder["stream"].close()
    sink: ShadowWriter = holder["sink"]
    # The previewed range: what the live run would apply from those positions up to these.
    until = {f"{t}[{p}]": o for (t, p), o in sorted(stored_offsets(settings, group).items())}
    previewed = {k: [holder.get("from", {}).get(k, 0), o] for k, o in until.items()}
    summary = {**sink.summary(), "range": previewed, "report": str(holder["path"]), "totals": totals}
    (report_dir / f"shadow-{sink.run_id}.summary.json").write_text(json.dumps(summary, indent=2, default=str))
    review = report_dir / f"shadow-{sink.run_id}.md"
    write_review(review, summary, holder["path"])
    lines = [f"shadow run {sink.run_id}: diffs in {holder['path']}, review in {review}"]
    for table, counts in summary["diffs"].items():
        lines.append(f"  {table:24} " + " ".join(f"{k}={v}" for k, v in counts.items()))
    lines += [f"  would-be error: {e}" for e in summary["errors"][:20]]
    _emit(summary, args.json, "\n".join(lines))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.status import partition_status

    rows = partition_status(settings, _spec_topics(settings), args.group or settings.kafka.group_id)
    lines = [f"{'partition':36} {'target':>8} {'kafka':>8} {'end':>8} {'lag':>7} {'errors':>6}"]
    for r in rows:
        lines.append(
            f"{r['topic'] + '[' + str(r['partition']) + ']':36} {r['target_offset']!s:>8} "
            f"{r['kafka_committed']!s:>8} {r['end_offset']:>8} {r['lag']:>7} {r['errors']:>6}"
            + ("  KAFKA AHEAD OF TARGET" if r["kafka_ahead"] else "")
        )
    _emit(rows, args.json, "\n".join(lines))
    return 0


def _spec_topics(settings: Settings) -> list[str]:
    from replicator.mapping import load_spec
    from replicator.mapping.compiler import topic_for

    spec = load_spec(settings.mapping)
    return sorted({t.topic or topic_for(spec.topic_prefix, t.source) for t in spec.tables})


def cmd_drain(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.drain import drain

    done = drain(settings, _spec_topics(settings), args.connector, args.signal_table, args.timeout)
    text = f"drained: fence LSN {done.fence_lsn} applied in {done.seconds:.1f}s"
    _emit(
        {
            "fence_lsn": done.fence_lsn,
            "seconds": done.seconds,
            "end_offsets": {f"{t}[{p}]": o for (t, p), o in sorted(done.end_offsets.items())},
        },
        args.json,
        text,
    )
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from replicator.mapping import compile_spec, load_spec, read_catalog
    from replicator.verify import verify

    spec = load_spec(settings.mapping)
    with psycopg.connect(settings.target.conninfo()) as conn:
        catalog = read_catalog(conn, sorted({t.target.schema for t in spec.tables}))
    plan = compile_spec(spec, catalog)
    diffs = verify(
        plan,
        settings.source.conninfo(),
        settings.target.conninfo(),
        settings.control_schema,
        settings.unavailable_placeholder,
    )
    rows = [
        {
            "table": str(d.target),
            "expected": d.expected,
            "actual": d.actual,
            "missing": d.missing[:20],
            "extra": d.extra[:20],
            "mismatched": [list(m[:2]) for m in d.mismatched[:20]],
            "placeholders": d.placeholders[:20],
            "errored": len(d.errored),
            "clean": d.clean,
        }
        for d in diffs
    ]
    _emit(rows, args.json, "\n".join(("ok   " if d.clean else "DIFF ") + d.summary() for d in diffs))
    return 0 if all(d.clean for d in diffs) else 1


def cmd_errors_list(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    from replicator import control

    with psycopg.connect(settings.target.conninfo(), row_factory=dict_row) as conn:
        control.ensure(conn, settings.control_schema)
        rows = conn.execute(
            sql.SQL(
                "SELECT id, kind, run_id, topic, partition, kafka_offset, target_table, key, rule_id,"
                " sqlstate, message, created_at FROM {} WHERE (%s::text IS NULL OR kind = %s)"
                " ORDER BY id DESC LIMIT %s"
            ).format(control.table(settings.control_schema, "error_record")),
            (args.kind, args.kind, args.limit),
        ).fetchall()
    text = (
        "\n".join(
            f"#{r['id']} {r['kind']} {r['topic']}[{r['partition']}]@{r['kafka_offset']} "
            f"{r['target_table'] or '-'} key={r['key'] or '-'} {r['rule_id']} "
            f"{r['sqlstate'] or ''} {r['message']}"
            for r in rows
        )
        or "no error records"
    )
    _emit(rows, args.json, text)
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
    apply.add_argument("--json", action="store_true")
    apply.set_defaults(handler=cmd_connectors_apply)
    status = csub.add_parser("status", help="state of every connector on the worker")
    status.add_argument("--json", action="store_true")
    status.add_argument("--verbose", action="store_true", help="include configs (secrets masked)")
    status.set_defaults(handler=cmd_connectors_status)

    mapping = sub.add_parser("mapping", help="the mapping spec: check and explain")
    msub = _Subparsers(mapping.add_subparsers(dest="mapping_command", required=True), common)
    mcheck = msub.add_parser("check", help="check a spec against the live source and target catalogs")
    mcheck.add_argument("spec", type=Path)
    mcheck.add_argument("--json", action="store_true")
    mcheck.set_defaults(handler=cmd_mapping_check)
    mexplain = msub.add_parser("explain", help="print the compiled plan")
    mexplain.add_argument("spec", type=Path)
    mexplain.add_argument("--json", action="store_true")
    mexplain.set_defaults(handler=cmd_mapping_explain)

    init = sub.add_parser("init", help="create the control schema in the target")
    init.add_argument("--shadow-role", help="grant this role what shadow mode needs (read data, own diffs)")
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

    status = sub.add_parser("status", help="per partition: target-stored, Kafka-committed, end offsets, lag")
    status.add_argument("--group", help="consumer group (default: the configured one)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    drain_p = sub.add_parser("drain", help="wait until the target reflects everything the source committed")
    drain_p.add_argument("--connector", default="demo-postgres", help="the Debezium connector's name")
    drain_p.add_argument(
        "--signal-table",
        default="shop.debezium_signal",
        help="Debezium's signal table (schema.table) in the source, captured by the connector",
    )
    drain_p.add_argument("--timeout", type=float, default=300.0)
    drain_p.add_argument("--json", action="store_true")
    drain_p.set_defaults(handler=cmd_drain)

    verify_p = sub.add_parser("verify", help="compare the target with the mapped source, row by row")
    verify_p.add_argument("--json", action="store_true")
    verify_p.set_defaults(handler=cmd_verify)

    errors = sub.add_parser("errors", help="error records")
    esub = _Subparsers(errors.add_subparsers(dest="errors_command", required=True), common)
    elist = esub.add_parser("list", help="the newest error records")
    elist.add_argument("--kind", choices=["error", "truncated"])
    elist.add_argument("--limit", type=int, default=50)
    elist.add_argument("--json", action="store_true")
    elist.set_defaults(handler=cmd_errors_list)
    return parser


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
    except Exception as exc:  # one line, never a traceback with secrets in locals
        if os.environ.get("REPLICATOR_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"replicator: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
