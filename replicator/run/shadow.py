"""`replicator shadow`: the dry run. Seeds the shadow group's positions, runs the pipeline with
`ShadowClones` as the write target, then writes the reports.

Reports (in `--report-dir`): `shadow-<run>.jsonl` (every diff), `.summary.json`
(counts, the previewed offset range per partition) and `.md` (the cutover
review). While the run is going the diffs are written to `.jsonl.partial`;
only a run that ends cleanly renames it, so a crash never leaves a report
that looks complete.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from replicator.config import Settings
from replicator.core.mapping.plan import Plan
from replicator.core.serialize import dumps
from replicator.kafka.clients import Metadata
from replicator.run.assembly import spec_topics
from replicator.run.daemon import RunRequest, WriterParts, run_daemon
from replicator.target.shadow import ShadowClones
from replicator.target.store import ControlStore
from replicator.target.writer import BatchWriter


@dataclass(frozen=True, slots=True)
class ShadowRequest:
    group: str  # the shadow's own consumer group
    from_group: str | None = None  # start where this (live) group stands
    from_time: datetime | None = None  # or at the first events at or after this time
    to_time: datetime | None = None  # and end before the events at or after this time
    stop_when_caught_up: bool = False
    report_dir: Path = Path("reports")


def shadow(settings: Settings, request: ShadowRequest) -> dict[str, Any]:
    """Run a preview; returns its summary (also written beside the diffs)."""
    if request.from_time and request.from_group:
        raise ValueError("give --from or --from-group, not both")
    topics = spec_topics(settings)
    with Metadata(settings.kafka) as metadata:
        start = metadata.offsets_at(topics, request.from_time) if request.from_time else None
        stop_at = metadata.offsets_at(topics, request.to_time) if request.to_time else {}
    with ControlStore.open(settings) as store:
        store.require()
        if start is not None:  # an explicit range start replaces the shadow group's positions
            store.set_checkpoints(request.group, start, "from")
        if request.from_group:  # preview what the live group would write next
            store.copy_checkpoints(request.from_group, request.group)
        first = store.checkpoints(request.group)
    request.report_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Any] = {}

    def make_sink(plan: Plan, group: str, run_id: str, parts: WriterParts) -> BatchWriter:
        partial = request.report_dir / f"shadow-{run_id}.jsonl.partial"
        stream: TextIO = partial.open("w", encoding="utf-8")
        clones = ShadowClones(plan, settings.control_schema, group, run_id, stream)
        made.update(clones=clones, stream=stream, partial=partial)
        return BatchWriter(
            settings.target,
            clones,
            settings.control_schema,
            group,
            run_id,
            remap=parts.remap,
            marks=parts.marks,
            partition_counts=parts.partition_counts,
            holding=settings.hold,
            on_holding=parts.on_holding,
        )

    try:
        totals = run_daemon(
            settings,
            RunRequest(
                mode="shadow",
                group=request.group,
                stop_when_caught_up=request.stop_when_caught_up or bool(stop_at),
                stop_at=stop_at,
                sink=make_sink,
            ),
        )
    finally:
        if "stream" in made:
            made["stream"].close()
    clones: ShadowClones = made["clones"]
    report: Path = made["partial"].with_suffix("")  # shadow-<run>.jsonl
    made["partial"].rename(report)
    with ControlStore.open(settings) as store:
        until = store.checkpoints(request.group)
    # The previewed range: what the live run would apply from those positions up to these.
    previewed = {f"{t}[{p}]": [first.get((t, p), 0), o] for (t, p), o in sorted(until.items())}
    summary = {**clones.summary(), "range": previewed, "report": str(report), "totals": totals}
    (request.report_dir / f"shadow-{clones.run_id}.summary.json").write_text(
        dumps(summary, indent=2), encoding="utf-8"
    )
    review = request.report_dir / f"shadow-{clones.run_id}.md"
    write_review(review, summary, report)
    return {**summary, "review": str(review)}


def write_review(path: Path, summary: Mapping[str, Any], report: Path, sample: int = 20) -> None:
    """A Markdown cutover-review report: counts per table and kind, sample diffs, errors."""
    kinds = ["insert", "update", "delete", "noop", "error", "truncated", "truncate"]
    ranges = ", ".join(f"{k} {a}..{b}" for k, (a, b) in summary.get("range", {}).items() if b > a)
    lines = [
        f"# Shadow run {summary['run_id']}",
        "",
        f"Consumer group `{summary['group_id']}`; diffs in `{report.name}`.",
        "",
        f"Previewed offsets (from..to, to exclusive): {ranges or 'none'}. Changes that reach",
        "Kafka after these offsets are not in this preview; the live run applies them as usual.",
        "",
        "| table | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for table, counts in summary["diffs"].items():
        lines.append(f"| {table} | " + " | ".join(str(counts.get(k, 0)) for k in kinds) + " |")
    lines += ["", "## Sample of field-level diffs", ""]
    shown = 0
    with report.open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["kind"] not in ("insert", "update", "delete") or shown >= sample:
                continue
            shown += 1
            lines.append(
                f"- **{d['kind']}** `{d['table']}` key `{d['key']}` at "
                f"`{d['topic']}[{d['partition']}]@{d['offset']}` rules {', '.join(d['rule_ids'])}"
            )
            for col, change in (d["columns"] or {}).items():
                lines.append(f"  - `{col}`: `{change['before']!r}` → `{change['after']!r}`")
    lines += ["", "## Error records the live run would write", ""]
    lines += [f"- {e}" for e in summary["errors"]] or ["none"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
