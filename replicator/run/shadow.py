"""`replicator shadow`: the dry run. Seeds the shadow group's positions, runs the pipeline with
`ShadowClones` as the write target, then writes the reports.

Reports (in `--report-dir`): `shadow-<run>.jsonl` (every diff), `.summary.json`
(counts, the previewed offset range per partition), `.md` (the cutover review)
and `.html` (the same review as one self-contained page, `core.report`).
While the run is going the diffs are written to `.jsonl.partial`; only a run
that ends cleanly renames it, so a crash never leaves a report that looks
complete.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from replicator.config import Settings
from replicator.core.errors import Fatal
from replicator.core.mapping.plan import Plan
from replicator.core.model import Partition
from replicator.core.report import collect_review, render_html, render_markdown, shadow_report
from replicator.core.serialize import dumps
from replicator.core.values import JsonNumber
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
    progress: bool = False  # progress on stderr (a line redrawn on a terminal, log events otherwise)


def shadow(settings: Settings, request: ShadowRequest) -> dict[str, Any]:
    """Run a preview; returns its summary (also written beside the diffs)."""
    if request.from_time and request.from_group:
        raise ValueError("give --from or --from-group, not both")
    topics = spec_topics(settings)
    start: dict[Partition, int] | None = None
    stop_at: dict[Partition, int] = {}
    if request.from_time or request.to_time:  # else Kafka is first asked by the run itself
        with Metadata(settings.kafka) as metadata:  # asked first: a wrong address is its own one line
            start = metadata.offsets_at(topics, request.from_time) if request.from_time else None
            stop_at = metadata.offsets_at(topics, request.to_time) if request.to_time else {}
    with ControlStore.open(settings) as store:
        store.require()
        refuse_after_cutover(store.authority())  # before any position is seeded
        if start is not None:  # an explicit range start replaces the shadow group's positions
            store.set_checkpoints(request.group, start, "from")
        if request.from_group:  # preview what the live group would write next
            store.copy_checkpoints(request.from_group, request.group)
        first = store.checkpoints(request.group)
    request.report_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Any] = {}
    writers: list[BatchWriter] = []  # typed: its `held` is read after the run

    def make_sink(plan: Plan, group: str, run_id: str, parts: WriterParts) -> BatchWriter:
        partial = request.report_dir / f"shadow-{run_id}.jsonl.partial"
        stream: TextIO = partial.open("w", encoding="utf-8")
        clones = ShadowClones(plan, settings.control_schema, group, run_id, stream, request.from_group)
        made.update(clones=clones, stream=stream, partial=partial)
        writer = BatchWriter(
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
        writers.append(writer)
        return writer

    try:
        totals = run_daemon(
            settings,
            RunRequest(
                mode="shadow",
                group=request.group,
                stop_when_caught_up=request.stop_when_caught_up or bool(stop_at),
                stop_at=stop_at,
                sink=make_sink,
                progress=request.progress,
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
    previewed = previewed_range(first, until, set(topics))
    # Rows still held at the end (waiting for a table that lags, a cascade's children): written by
    # the live run once what they wait for is applied, so in no diff of this preview. The run's end
    # revoked its partitions: `held_left` counts those too (`held` would say 0).
    held_at_end = writers[-1].held_left if writers else 0
    summary = {
        **clones.summary(),
        "range": previewed,
        "report": str(report),
        "totals": totals,
        "held_at_end": held_at_end,
    }
    (request.report_dir / f"shadow-{clones.run_id}.summary.json").write_text(
        dumps(summary, indent=2), encoding="utf-8"
    )
    review = request.report_dir / f"shadow-{clones.run_id}.md"
    page = write_review(review, summary, report)
    return {**summary, "review": str(review), "review_html": str(page)}


def refuse_after_cutover(authority: Mapping[str, Any]) -> None:
    """A preview shows what the live run would write; once a cutover made the target authoritative
    the live run writes nothing more (it stops itself at the flip), so there is nothing to preview."""
    if authority["authority"] != "source":
        raise Fatal(
            f"the target is authoritative since {authority['since']:%Y-%m-%d %H:%M:%S%z} (cutover "
            f"{authority['cutover_id']}): the live replicator writes nothing more, so a preview would show "
            "writes that will never be made; nothing was previewed (`replicator cutover status`; "
            "`replicator cutover rollback` makes the source authoritative again)"
        )


def previewed_range(
    first: Mapping[Partition, int], until: Mapping[Partition, int], topics: Collection[str]
) -> dict[str, list[int]]:
    """The previewed range, `topic[partition]` -> [from, to): what the live run would apply from
    those positions up to these, on the topics the spec reads only. The shadow group's positions
    can hold others: `--from-group` copies the live group's, and the live group also reads the
    Debezium signal table's topic (for drain fences), which a preview does not read."""
    return {f"{t}[{p}]": [first.get((t, p), 0), o] for (t, p), o in sorted(until.items()) if t in topics}


def write_review(path: Path, summary: Mapping[str, Any], report: Path, sample: int = 20) -> Path:
    """The cutover review of a shadow run: Markdown at `path` and the same as a self-contained
    HTML page beside it (`.html`): counts per table and kind, sample diffs, error records.
    Returns the HTML file's path."""
    with report.open(encoding="utf-8") as f:
        # numbers as their tokens (JsonNumber): a float would round a jsonb number's digits
        diffs = (json.loads(line, parse_float=JsonNumber) for line in f)
        review = shadow_report(collect_review(summary, report.name, diffs, sample))
    path.write_text(render_markdown(review), encoding="utf-8")
    page = path.with_suffix(".html")
    page.write_text(render_html(review), encoding="utf-8")
    return page
