"""Reports a person reads, as one self-contained HTML page and its Markdown twin. Pure: plain data
in, text out (the commands read and write the files).

A report is a `Report`: a title, meta lines and titled `Section`s holding `Paragraph`s, `Table`s,
`Items` (bullet lists) and nested sections. `render_html` and `render_markdown` render any report;
`shadow_report` builds the shadow review, `mapping_report` builds one from a plain mapping (how a
cutover report with state, gates, timings, window and audit events is rendered).

Invariants:
- Text is data. Every string in a report (table names, keys, cell values, rule ids, messages:
  they come from the databases and Kafka) is escaped: `html.escape` in HTML; in Markdown plain
  text has its markup characters backslash-escaped and `Code` is a code span delimited by a
  longer backtick run than it contains (`|` escaped inside tables), so nothing from the data
  becomes markup in either.
- The HTML needs nothing else: inline CSS, no script, no image, no link but to its own anchors.
- A `Value` is shown in its JSON form (`core.serialize`), so null, "null", 1 and "1" differ; a
  long one is cut for display with the number of characters left out stated (the JSON Lines
  report of a shadow run keeps every value whole).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from replicator.core.serialize import dumps, to_jsonable

MAX_VALUE_CHARS = 240

# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class Code:
    """Text shown literally in a monospace span (identifiers, keys, offsets)."""

    text: str


@dataclass(frozen=True, slots=True)
class Value:
    """A data value shown in its JSON form, cut when long."""

    value: Any


@dataclass(frozen=True, slots=True)
class Badge:
    """A short label with a tone: ok, bad, warn, info, or a diff kind (insert, update, ...)."""

    text: str
    tone: str = "info"


@dataclass(frozen=True, slots=True)
class Strong:
    text: str


Inline = str | int | float | None | Code | Value | Badge | Strong
Text = Inline | list[Inline] | tuple[Inline, ...]  # a list or tuple is its parts side by side


@dataclass(frozen=True, slots=True)
class Paragraph:
    text: Text
    note: bool = False  # secondary text (explanations, counts of what is not shown)


@dataclass(frozen=True, slots=True)
class Items:
    """A bullet list."""

    items: Sequence[Text]


@dataclass(frozen=True, slots=True)
class Table:
    """Rows of cells under a header; `numeric` columns are right-aligned (by index)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Text]]
    footer: Sequence[Text] | None = None
    numeric: frozenset[int] = frozenset()
    id: str | None = None
    empty: str = "none"  # shown as the only row when there are no rows


@dataclass(frozen=True, slots=True)
class Section:
    title: Text
    blocks: Sequence[Block]
    id: str | None = None


Block = Paragraph | Items | Table | Section


@dataclass(frozen=True, slots=True)
class Report:
    title: Text
    sections: Sequence[Section]
    meta: Sequence[Text] = field(default_factory=tuple)  # lines under the title


# --------------------------------------------------------------------------- HTML

CSS = """
:root { color-scheme: light; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       background: #ffffff; margin: 0; padding: 24px 32px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 0 0 4px; }
p.meta, p.note { color: #59636e; margin: 4px 0; }
code, .value { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { background: #eff2f5; padding: 1px 4px; border-radius: 4px; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tfoot td { font-weight: 600; background: #f6f8fa; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         color: #ffffff; background: #59636e; }
.badge.insert, .badge.ok { background: var(--ok); }
.badge.update, .badge.info { background: #0969da; }
.badge.delete, .badge.error, .badge.bad { background: var(--bad); }
.badge.truncated, .badge.truncate, .badge.warn { background: var(--warn); }
section section { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
.value { white-space: pre-wrap; overflow-wrap: anywhere; }
.cut { color: #59636e; font-style: italic; }
"""

_TONE = re.compile(r"[^a-z0-9_-]+")


def _cut(text: str, limit: int = MAX_VALUE_CHARS) -> tuple[str, int]:
    """A display cut of `text` and how many characters were left out."""
    return (text, 0) if len(text) <= limit else (text[:limit], len(text) - limit)


def _parts(text: Text) -> Sequence[Inline]:
    if isinstance(text, list | tuple):
        return text
    return (text,)


def _hinline(part: Inline) -> str:
    if isinstance(part, Code):
        return f"<code>{html.escape(part.text)}</code>"
    if isinstance(part, Value):
        shown, left = _cut(dumps(part.value))
        out = f'<span class="value">{html.escape(shown)}</span>'
        return out + (f' <span class="cut">… {left} more characters</span>' if left else "")
    if isinstance(part, Badge):
        tone = _TONE.sub("-", part.tone.lower())
        return f'<span class="badge {tone}">{html.escape(part.text)}</span>'
    if isinstance(part, Strong):
        return f"<strong>{html.escape(part.text)}</strong>"
    if part is None:
        return '<span class="cut">-</span>'
    return html.escape(str(to_jsonable(part)))


def _htext(text: Text) -> str:
    return "".join(_hinline(p) for p in _parts(text))


def _plain(text: Text) -> str:
    """The text without markup (for <title>)."""
    out = []
    for p in _parts(text):
        out.append(
            p.text
            if isinstance(p, Code | Badge | Strong)
            else dumps(p.value)
            if isinstance(p, Value)
            else str(p)
        )
    return "".join(out)


def _hblock(block: Block, depth: int) -> list[str]:
    if isinstance(block, Paragraph):
        return [f"<p{' class=note' if block.note else ''}>{_htext(block.text)}</p>"]
    if isinstance(block, Items):
        return ["<ul>", *(f"<li>{_htext(i)}</li>" for i in block.items), "</ul>"]
    if isinstance(block, Table):
        return _htable(block)
    return _hsection(block, depth + 1)


def _htable(t: Table) -> list[str]:
    def cell(tag: str, i: int, text: Text) -> str:
        return f"<{tag}{' class=n' if i in t.numeric else ''}>{_htext(text)}</{tag}>"

    ident = f' id="{html.escape(t.id)}"' if t.id else ""
    out = [f"<table{ident}><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)]
    out += ["</tr></thead><tbody>"]
    out += ["<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>" for r in t.rows]
    if not t.rows:
        out.append(f'<tr><td colspan="{len(t.columns)}">{html.escape(t.empty)}</td></tr>')
    out.append("</tbody>")
    if t.footer is not None:
        out.append(
            "<tfoot><tr>" + "".join(cell("td", i, c) for i, c in enumerate(t.footer)) + "</tr></tfoot>"
        )
    return [*out, "</table>"]


def _hsection(s: Section, depth: int) -> list[str]:
    ident = f' id="{html.escape(s.id)}"' if s.id else ""
    level = min(depth, 6)
    out = [f"<section{ident}>", f"<h{level}>{_htext(s.title)}</h{level}>"]
    for b in s.blocks:
        out += _hblock(b, depth)
    return [*out, "</section>"]


def render_html(report: Report) -> str:
    """One self-contained HTML page (see the module invariants)."""
    body = ["<header>", f"<h1>{_htext(report.title)}</h1>"]
    body += [f'<p class="meta">{_htext(m)}</p>' for m in report.meta]
    body.append("</header>")
    for s in report.sections:
        body += _hsection(s, 2)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(_plain(report.title))}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


# --------------------------------------------------------------------------- Markdown

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#&!~])")


def _mescape(text: str) -> str:
    """Plain text in Markdown: markup characters backslash-escaped, one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def _mcode(text: str) -> str:
    """A code span holding `text` literally (backticks inside get a longer delimiter)."""
    text = " ".join(text.splitlines())
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _minline(part: Inline) -> str:
    if isinstance(part, Code):
        return _mcode(part.text)
    if isinstance(part, Value):
        shown, left = _cut(dumps(part.value))
        return _mcode(shown) + (f" … {left} more characters" if left else "")
    if isinstance(part, Badge):
        return f"**{_mescape(part.text)}**"
    if isinstance(part, Strong):
        return f"**{_mescape(part.text)}**"
    if part is None:
        return "-"
    return _mescape(str(to_jsonable(part)))


def _mtext(text: Text, in_table: bool = False) -> str:
    out = "".join(_minline(p) for p in _parts(text))
    # GFM splits table cells on `|` even inside code spans; plain text has it escaped already.
    return re.sub(r"(?<!\\)\|", r"\\|", out) if in_table else out


def _mblock(block: Block, depth: int) -> list[str]:
    if isinstance(block, Paragraph):
        return [_mtext(block.text), ""]
    if isinstance(block, Items):
        return [*(f"- {_mtext(i)}" for i in block.items), ""] if block.items else ["none", ""]
    if isinstance(block, Table):
        t = block
        out = ["| " + " | ".join(_mescape(c) for c in t.columns) + " |"]
        out.append("|" + "".join("---:|" if i in t.numeric else "---|" for i in range(len(t.columns))))
        out += ["| " + " | ".join(_mtext(c, True) for c in r) + " |" for r in t.rows]
        if t.footer is not None:
            out.append("| " + " | ".join(_mtext(c, True) for c in t.footer) + " |")
        if not t.rows:
            out.append("| " + " | ".join([_mescape(t.empty), *[""] * (len(t.columns) - 1)]) + " |")
        return [*out, ""]
    return _msection(block, depth + 1)


def _msection(s: Section, depth: int) -> list[str]:
    out = ["#" * min(depth, 6) + " " + _mtext(s.title), ""]
    for b in s.blocks:
        out += _mblock(b, depth)
    return out


def render_markdown(report: Report) -> str:
    """The Markdown twin of `render_html`: the same sections, tables and text."""
    lines = ["# " + _mtext(report.title), ""]
    for m in report.meta:
        lines += [_mtext(m), ""]
    for s in report.sections:
        lines += _msection(s, 2)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- a report from a mapping

_VERDICT_COLUMNS = ("ok", "passed", "clean")


def _cell(column: str, value: Any) -> Text:
    if isinstance(value, bool):
        if column in _VERDICT_COLUMNS:
            return Badge("ok", "ok") if value else Badge("FAIL", "bad")
        return "yes" if value else "no"
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, Mapping | list | tuple):
        return Code(dumps(value))
    text = to_jsonable(value)
    return str(text)


def _heading(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _blocks_of(value: Any) -> list[Block]:
    """A value as blocks: a list of mappings is a table (columns in first-seen order), a mapping a
    two-column table, another list a bullet list, anything else a paragraph."""
    if isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        columns = list(dict.fromkeys(str(k) for row in value for k in row))
        rows = [[_cell(c, row.get(c)) for c in columns] for row in value]
        numeric = frozenset(
            i for i, c in enumerate(columns) if all(isinstance(r.get(c), int | float | None) for r in value)
        )
        return [
            Table(
                columns, rows, numeric=numeric - {i for i, c in enumerate(columns) if c in _VERDICT_COLUMNS}
            )
        ]
    if isinstance(value, Mapping):
        return [Table(["", ""], [[Strong(str(k)), _cell(str(k), v)] for k, v in value.items()])]
    if isinstance(value, list | tuple):
        return [Items([_cell("", v) for v in value])]
    return [Paragraph(_cell("", value))]


def mapping_report(
    title: str, data: Mapping[str, Any], facts: Sequence[str] = (), meta: Sequence[Text] = ()
) -> Report:
    """A report from a plain mapping of JSON-like values (datetimes and decimals are fine): the
    keys in `facts` form a first section "Facts" (one row each), every other key its own section
    titled from the key, in the mapping's order, rendered by its shape (see `_blocks_of`; a
    boolean under `ok`, `passed` or `clean` is an ok / FAIL badge). E.g. a cutover report:
    `mapping_report("Cutover c-7", {"state": "flipped", "gates": [{"name": ..., "ok": True}],
    "timings": {...}, "window": {...}, "audit_events": [...]}, facts=("state",))`."""
    sections: list[Section] = []
    known = {k: data[k] for k in facts if k in data}
    if known:
        sections.append(Section("Facts", _blocks_of(known), id="facts"))
    for key, value in data.items():
        if key in known:
            continue
        anchor = re.sub(r"[^a-z0-9-]+", "-", str(key).lower()).strip("-") or None
        sections.append(Section(_heading(str(key)), _blocks_of(value), id=anchor))
    return Report(title, sections, meta)


# --------------------------------------------------------------------------- the shadow review

KINDS = ("insert", "update", "delete", "noop", "error", "truncated", "unavailable", "truncate")
SAMPLED = ("insert", "update", "delete")  # field-level diffs shown as samples
# "unavailable": a combining column left as it was (an unchanged TOAST input); "stopped": a table a
# source schema change stops
ERROR_KINDS = ("error", "truncated", "unavailable", "stopped")


@dataclass(frozen=True, slots=True)
class ShadowReview:
    """What a shadow review shows: the run's summary and the diffs picked from its JSON Lines."""

    summary: Mapping[str, Any]  # ShadowClones.summary() + "range" + the run's "totals"
    report_name: str  # the JSON Lines file holding every diff
    samples: Sequence[Mapping[str, Any]]  # field-level diffs (insert, update, delete), report order
    errors: Sequence[Mapping[str, Any]]  # error and truncated diffs, report order
    errors_total: int  # how many error and truncated diffs the report holds


def collect_review(
    summary: Mapping[str, Any],
    report_name: str,
    diffs: Iterable[Mapping[str, Any]],
    sample: int = 20,
    max_errors: int = 500,
) -> ShadowReview:
    """Pick the samples and the error records from the diffs, in one pass."""
    samples: list[Mapping[str, Any]] = []
    errors: list[Mapping[str, Any]] = []
    errors_total = 0
    for d in diffs:
        kind = d.get("kind")
        if kind in SAMPLED and len(samples) < sample:
            samples.append(d)
        elif kind in ERROR_KINDS:
            errors_total += 1
            if len(errors) < max_errors:
                errors.append(d)
    return ShadowReview(summary, report_name, samples, errors, errors_total)


def _at(d: Mapping[str, Any]) -> str:
    if d.get("topic") is None:
        return "-"
    return f"{d['topic']}[{d.get('partition')}]@{d.get('offset')}"


def _rules(d: Mapping[str, Any]) -> list[Inline]:
    out: list[Inline] = []
    for i, r in enumerate(d.get("rule_ids") or []):
        out += [", "] if i else []
        out.append(Code(str(r)))
    return out or ["none"]


def offsets_read(ranges: Mapping[str, Sequence[int]], totals: Mapping[str, Any]) -> str | None:
    """Every offset of the previewed range accounted for, from the run's totals: `events` counts
    change events (and undecodable records) only; Debezium follows each delete with a tombstone
    (nothing to apply), and a record that carries no table change (a heartbeat, a transaction
    record, a logical decoding message) is read and skipped. Offsets left over hold no record the
    consumer sees (transaction markers, compacted away). None when no offset was read."""
    offsets = sum(max(int(b) - int(a), 0) for a, b in ranges.values())
    if not offsets:
        return None
    events = int(totals.get("events") or 0)
    tombstones = int(totals.get("tombstones") or 0)
    other = int(totals.get("not_table_data") or 0)
    parts = [f"{events:,} change events"]
    if tombstones:
        parts.append(f"{tombstones:,} tombstones (the second record of each delete: nothing to apply)")
    if other:
        parts.append(
            f"{other:,} records that carry no table change (heartbeats, transaction records, logical"
            " decoding messages)"
        )
    rest = offsets - events - tombstones - other
    if rest > 0:
        parts.append(f"{rest:,} offsets without a record (transaction markers, or compacted away)")
    return f"{offsets:,} offsets read: " + ", ".join(parts)


def shadow_table_lines(summary: Mapping[str, Any], tables: Sequence[tuple[str, str]]) -> list[str]:
    """The terminal's summary of a preview: a line per mapped target table (`tables`: target and
    its topic, in spec order), with its diff counts, else how many offsets of its topic were read
    (none of them would change the target, e.g. already applied), else that nothing of it was read.
    A table a source schema change stops is marked, with its stop and fix line once, under the
    first table the stop names (trial 8: a preview spanning a schema change showed only the
    stopped table, hiding what else was previewed). Tables with diffs that `tables` does not name
    (a spec edited since) follow."""
    diffs: Mapping[str, Mapping[str, int]] = summary.get("diffs") or {}
    offsets: dict[str, int] = {}
    for key, (first, until) in (summary.get("range") or {}).items():
        of = str(key).rpartition("[")[0]  # "topic[partition]"
        offsets[of] = offsets.get(of, 0) + max(int(until) - int(first), 0)
    stops: dict[str, str] = {}
    for line in summary.get("stopped") or []:
        for table in str(line).split(" stopped at ", 1)[0].split(", "):
            stops.setdefault(table, str(line))
    named = [t for t, _ in tables]
    rows: list[tuple[str, str | None]] = [*tables, *((t, None) for t in diffs if t not in named)]
    lines: list[str] = []
    for table, topic in rows:
        counts = {k: v for k, v in diffs.get(table, {}).items() if k != "stopped"}
        read = offsets.get(topic, 0) if topic is not None else 0
        if counts:
            line = " ".join(f"{k}={v}" for k, v in counts.items())
        elif read:
            line = f"no diffs ({read:,} offsets of {topic} read)"
        else:
            line = "nothing previewed" + (f" (no offset of {topic} in the range)" if topic else "")
        held = int(((summary.get("totals") or {}).get("held_during_run") or {}).get(table, 0))
        if held:
            line += f"; {held} held back at least once (in no diff until what they wait for is applied)"
        if table in stops or "stopped" in diffs.get(table, {}):
            line = f"STOPPED; {line}"
        lines.append(f"  {table:24} {line}")
        if table in stops and f"    {stops[table]}" not in lines:  # once, under its first table
            lines.append(f"    {stops[table]}")
    return lines


def held_note(summary: Mapping[str, Any]) -> str | None:
    """What the preview held back (trial 14: a parent's delete waiting for its children's, shown
    as "no diffs" although the live run deletes it): rows held at the end of the run are in no
    diff; the live run writes them once what they wait for is applied. None when nothing was held."""
    at_end = int(summary.get("held_at_end") or 0)
    by_table: Mapping[str, int] = (summary.get("totals") or {}).get("held_during_run") or {}
    if not at_end and not by_table:
        return None
    tables = ", ".join(f"{t} ({n})" for t, n in by_table.items()) or "-"
    return (
        f"{at_end} row changes were held back at the end of the preview and are in no diff above:"
        " they wait for a parent, a child's delete or a unique value on a table that lags, and the"
        f" live run writes them once that is applied. Held at least once, per table: {tables}."
    )


def no_diffs(totals: Mapping[str, Any]) -> str:
    """The summary table's text when a run recorded no diff, from the run's totals: a window the
    live group already applied is read in full and every row change in it is skipped as older."""
    events = int(totals.get("events") or 0)
    if not events:
        return "no events previewed"
    older = int(totals.get("skipped_older") or 0)
    tombstones = int(totals.get("tombstones") or 0)
    if not older:
        return f"no diffs: {events} events read, none changes the target"
    also = f", {tombstones} tombstones" if tombstones else ""
    return (
        f"no diffs: the {events} events read were already applied in the target ({older} row changes"
        f" older than the target's stored versions{also})"
    )


def shadow_report(review: ShadowReview) -> Report:
    """The cutover review of a shadow run: previewed offsets, a summary per table and kind,
    samples of field-level diffs, the error records the live run would write."""
    s = review.summary
    name = review.report_name
    ranges = [(str(k), int(a), int(b)) for k, (a, b) in s.get("range", {}).items()]
    counts = [(str(t), [int(c.get(k, 0)) for k in KINDS]) for t, c in s.get("diffs", {}).items()]
    totals = [sum(n[i] for _, n in counts) for i in range(len(KINDS))]

    run_totals: Mapping[str, Any] = s.get("totals") or {}
    read = offsets_read({k: (a, b) for k, a, b in ranges}, run_totals) if run_totals else None
    previewed: list[Block] = [
        Table(
            ["partition", "from", "to (exclusive)", "offsets"],
            [[Code(k), a, b, max(b - a, 0)] for k, a, b in ranges],
            numeric=frozenset({1, 2, 3}),
            empty="no offsets were previewed",
        ),
        *([Paragraph(f"{read}.", note=True)] if read else []),
        Paragraph(
            "Changes that reach Kafka after these offsets are not in this preview; the live run applies"
            " them as usual.",
            note=True,
        ),
    ]
    summary: list[Block] = [
        Table(
            ["table", *KINDS, "total"],
            [[Code(t), *n, sum(n)] for t, n in counts],
            footer=["all tables", *totals, sum(totals)],
            numeric=frozenset(range(1, len(KINDS) + 2)),
            id="summary",
            empty=no_diffs(run_totals),
        )
    ]
    older = int(run_totals.get("skipped_older") or 0)
    if counts and older:  # without diffs the table's own text says so
        summary.append(
            Paragraph(
                f"Besides these, {older} row changes in the events read were already applied in the target"
                " (older than the target's stored versions): the live run skips them too.",
                note=True,
            )
        )

    held = held_note(s)
    if held:
        summary.append(Paragraph(held, note=True))
    field_level = sum(totals[KINDS.index(k)] for k in SAMPLED)
    samples: list[Block] = [
        Paragraph(
            f"{len(review.samples)} of {field_level} inserts, updates and deletes, in the order the live"
            " run would apply them.",
            note=True,
        )
    ]
    for d in review.samples:
        kind = str(d.get("kind"))
        samples.append(
            Section(
                [Badge(kind, kind), " ", Code(str(d.get("table"))), " key ", Code(str(d.get("key")))],
                [
                    Paragraph(["at ", Code(_at(d)), " · rules ", *_rules(d)], note=True),
                    Table(
                        ["column", "before", "after"],
                        [
                            [Code(str(col)), Value(change.get("before")), Value(change.get("after"))]
                            for col, change in (d.get("columns") or {}).items()
                            if isinstance(change, Mapping)
                        ],
                        empty="no column values",
                    ),
                ],
            )
        )

    errors: list[Block] = []
    if review.errors:
        shown = (
            f"; the first {len(review.errors)} are shown" if review.errors_total > len(review.errors) else ""
        )
        errors.append(
            Paragraph([f"{review.errors_total} in all{shown}, every one in ", Code(name), "."], note=True)
        )
    rows: list[list[Text]] = []
    for d in review.errors:
        notes: list[Inline] = []
        if d.get("message"):
            notes.append(str(d["message"]))
        for col, note in (d.get("columns") or {}).items():
            if isinstance(note, Mapping) and "message" in note:
                notes += ["; " if notes else "", Code(str(col)), ": ", str(note["message"])]
        kind = str(d.get("kind"))
        rows.append(
            [
                Badge(kind, kind),
                Code(str(d.get("table"))),
                Code(str(d.get("key"))),
                Code(_at(d)),
                _rules(d),
                d.get("sqlstate") or "",
                notes or "",
            ]
        )
    errors.append(
        Table(["kind", "table", "key", "at", "rule", "SQLSTATE", "message"], rows, id="error-records")
    )

    return Report(
        ["Shadow run ", Code(str(s["run_id"]))],
        [
            Section("Previewed offsets", previewed, id="range"),
            Section("Summary per table", summary, id="summary-section"),
            Section("Sample of field-level diffs", samples, id="samples"),
            Section("Error records the live run would write", errors, id="errors"),
        ],
        meta=[
            ["Consumer group ", Code(str(s["group_id"])), " · every diff in ", Code(name)],
            "A preview: nothing was written to the target. Not predicted: foreign-key violations, and"
            " unique violations against rows the previewed range does not touch (the live run holds"
            " such a row, or records it as an error).",
        ],
    )
