"""Reports a person reads (`core.report`): the shadow review and generic reports, HTML and Markdown.

Proves: the shadow review's summary table holds the counts per table and kind with totals; samples
show field-level before/after in JSON form (so "1" and 1 differ) and only inserts, updates and
deletes; error records show every error and truncated diff with SQLSTATE and message; a run whose
events were all already applied in the target says so with the counts (not "no events
previewed"); values from the data never become markup (HTML escaped, Markdown escaped or code
spans); the page is self-contained (no script, no external resource); a mapping becomes titled
sections of tables (the shape a cutover report takes); long values are cut with the rest counted.
In a real browser: tests/integration/test_report_browser.py.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from replicator.core.report import (
    MAX_VALUE_CHARS,
    Code,
    Paragraph,
    Report,
    Section,
    Table,
    collect_review,
    held_note,
    mapping_report,
    offsets_read,
    render_html,
    render_markdown,
    shadow_report,
    shadow_table_lines,
)

HOSTILE = '<img src=x onerror="alert(1)">'


def sample_review(**overrides: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary: dict[str, Any] = {
        "run_id": "run-42",
        "group_id": "cdc-shadow-run-42",
        "diffs": {"crm.customer": {"insert": 3, "update": 2}, 'sales."order"': {"delete": 1, "error": 1}},
        "range": {"demo.shop.customers[0]": [10, 15], "demo.shop.orders[1]": [7, 7]},
        "errors": [],
        **overrides,
    }
    diffs: list[dict[str, Any]] = [
        {
            "kind": "insert",
            "table": "crm.customer",
            "key": '{"id": 1}',
            "columns": {"name": {"before": None, "after": HOSTILE}, "n": {"before": "1", "after": 1}},
            "topic": "demo.shop.customers",
            "partition": 0,
            "offset": 11,
            "rule_ids": ["C1", "C2"],
        },
        {"kind": "noop", "table": "crm.customer", "key": '{"id": 2}', "columns": None, "rule_ids": []},
        {
            "kind": "error",
            "table": 'sales."order"',
            "key": "k|`x`",
            "columns": None,
            "topic": "demo.shop.orders",
            "partition": 1,
            "offset": 9,
            "rule_ids": ["O9"],
            "sqlstate": "23505",
            "message": "duplicate key <b>value</b>",
        },
        {
            "kind": "truncated",
            "table": "crm.customer",
            "key": "k2",
            "columns": {"note": {"message": "cut to 10 characters"}},
            "topic": "demo.shop.customers",
            "partition": 0,
            "offset": 12,
            "rule_ids": ["C3"],
        },
    ]
    return summary, diffs


class Page(HTMLParser):
    """Tags, attributes and the text of each table row (cells joined by |)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None:
            self._row.append("".join(self._cell).strip())
        elif tag == "tr" and self._row is not None:
            self.rows.append("|".join(self._row))
            self._row = None

    def handle_data(self, data: str) -> None:
        self._cell.append(data)
        self.text.append(data)


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    return p


def shadow_page() -> tuple[str, str]:
    summary, diffs = sample_review()
    review = shadow_report(collect_review(summary, "shadow-run-42.jsonl", diffs))
    return render_html(review), render_markdown(review)


def test_summary_table_has_counts_per_table_and_kind_with_totals() -> None:
    page, md = shadow_page()
    rows = parse(page).rows
    assert "table|insert|update|delete|noop|error|truncated|unavailable|truncate|total" in rows
    assert "crm.customer|3|2|0|0|0|0|0|0|5" in rows
    assert 'sales."order"|0|0|1|0|1|0|0|0|2' in rows
    assert "all tables|3|2|1|0|1|0|0|0|7" in rows
    assert "| `crm.customer` | 3 | 2 | 0 | 0 | 0 | 0 | 0 | 0 | 5 |" in md
    assert "| all tables | 3 | 2 | 1 | 0 | 1 | 0 | 0 | 0 | 7 |" in md


def test_previewed_offsets_per_partition() -> None:
    page, md = shadow_page()
    assert "demo.shop.customers[0]|10|15|5" in parse(page).rows
    assert "demo.shop.orders[1]|7|7|0" in parse(page).rows
    assert "| `demo.shop.customers[0]` | 10 | 15 | 5 |" in md


def test_samples_show_field_level_diffs_in_json_form() -> None:
    page, md = shadow_page()
    rows = parse(page).rows
    assert 'n|"1"|1' in rows  # the string "1" became the number 1
    assert 'name|null|"<img src=x onerror=\\"alert(1)\\">"' in rows
    assert '{"id": 2}' not in page  # a noop is counted, not sampled
    assert "1 of 6 inserts, updates and deletes" in page
    assert '| `n` | `"1"` | `1` |' in md


def test_error_records_list_every_error_and_truncation() -> None:
    page, md = shadow_page()
    rows = parse(page).rows
    assert 'error|sales."order"|k|`x`|demo.shop.orders[1]@9|O9|23505|duplicate key <b>value</b>' in rows
    assert "truncated|crm.customer|k2|demo.shop.customers[0]@12|C3||note: cut to 10 characters" in rows
    assert "2 in all" in page
    assert '| **error** | `sales."order"` | `` k\\|`x` `` | `demo.shop.orders[1]@9` | `O9` | 23505 |' in md
    assert "duplicate key \\<b\\>value\\</b\\>" in md


def test_data_never_becomes_markup() -> None:
    page, md = shadow_page()
    parsed = parse(page)
    assert not [t for t, _ in parsed.tags if t in ("img", "b", "script")]
    assert "<img src=x" in "".join(parsed.text)  # shown literally
    # In Markdown, outside code spans (literal) no data character is markup.
    outside = re.sub(r"(`+).*?\1", "", md)
    assert "<img" not in outside and "<b>" not in outside
    assert any("<img" in body for _, body in re.findall(r"(`+)(.*?)\1", md))


def test_page_is_self_contained() -> None:
    page, _ = shadow_page()
    parsed = parse(page)
    assert not [t for t, _ in parsed.tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    assert not [a for _, attrs in parsed.tags for k, a in attrs.items() if k in ("src", "href")]
    assert "<style>" in page and "@import" not in page and "url(" not in page


def test_the_review_says_what_a_preview_does_not_predict() -> None:
    """The clones hold no foreign keys and only the rows the range touches (trial 16: a child of a
    parent missing from the target was previewed as an insert; the live run held it)."""
    page, md = shadow_page()
    said = "Not predicted: foreign-key violations, and unique violations against rows the previewed range"
    assert said in md and said in page


def test_an_empty_run_says_so() -> None:
    summary, _ = sample_review(diffs={}, range={})
    review = shadow_report(collect_review(summary, "r.jsonl", []))
    page, md = render_html(review), render_markdown(review)
    rows = parse(page).rows
    assert "no events previewed" in rows and "no offsets were previewed" in rows
    assert "0 of 0 inserts" in page and "none" in rows
    assert "| no events previewed |" in md


def test_a_window_the_live_group_already_applied_says_its_events_were_applied() -> None:
    """Trial: `shadow --from --to` over 2,688 events the live group had applied said "no events
    previewed" beside an offsets table of those events (the run log: skipped_older=2688)."""
    totals = {"events": 2688, "skipped_older": 2688, "tombstones": 0, "applied": {}}
    summary, _ = sample_review(diffs={}, range={"demo.shop.customers[0]": [100, 2788]}, totals=totals)
    review = shadow_report(collect_review(summary, "r.jsonl", []))
    page, md = render_html(review), render_markdown(review)
    said = (
        "no diffs: the 2688 events read were already applied in the target (2688 row changes older"
        " than the target's stored versions)"
    )
    assert said in parse(page).rows and f"| {said} |" in md
    assert "no events previewed" not in page and "no events previewed" not in md


def test_every_previewed_offset_is_accounted_for() -> None:
    """Trial 7: a range of 530 offsets showed "events 530" beside 461 events read (2,688 against
    about 3,000 in the trial): `events` counts change events, and Debezium follows each delete with
    a tombstone. The offsets column says offsets, and the review splits them: events, tombstones,
    records with no table change, offsets without a record."""
    totals = {"events": 461, "tombstones": 69, "not_table_data": 0, "skipped_older": 0}
    summary, diffs = sample_review(range={"demo.shop.customers[0]": [100, 630]}, totals=totals)
    review = shadow_report(collect_review(summary, "r.jsonl", diffs))
    page, md = render_html(review), render_markdown(review)
    said = (
        "530 offsets read: 461 change events, 69 tombstones (the second record of each delete: nothing"
        " to apply)."
    )
    assert said in page and said in md
    assert "| partition | from | to (exclusive) | offsets |" in md

    gaps = {"events": 400, "tombstones": 50, "not_table_data": 30}
    assert offsets_read({"t[0]": [0, 500]}, gaps) == (
        "500 offsets read: 400 change events, 50 tombstones (the second record of each delete: nothing"
        " to apply), 30 records that carry no table change (heartbeats, transaction records, logical"
        " decoding messages), 20 offsets without a record (transaction markers, or compacted away)"
    )
    assert offsets_read({"t[0]": [7, 7]}, gaps) is None


def test_changes_already_applied_beside_diffs_are_counted() -> None:
    summary, diffs = sample_review(totals={"events": 40, "skipped_older": 31})
    md = render_markdown(shadow_report(collect_review(summary, "r.jsonl", diffs)))
    assert "Besides these, 31 row changes in the events read were already applied in the target" in md


def test_rows_held_back_by_the_preview_are_named_not_shown_as_no_diffs() -> None:
    """Trial 14: a customer deleted with its orders (ON DELETE CASCADE in the target): the preview
    held the parents' deletes for their children's and said "no diffs" for them, while the live run
    deleted them. The review and the terminal say what was held, per table."""
    totals = {"events": 12, "skipped_older": 0, "held_during_run": {"s.customers": 1, "s.orders": 4}}
    summary, _ = sample_review(diffs={}, range={"t.s.customers[0]": [0, 2]}, totals=totals)
    summary["held_at_end"] = 5
    md = render_markdown(shadow_report(collect_review(summary, "r.jsonl", [])))
    said = (
        "5 row changes were held back at the end of the preview and are in no diff above: they wait for"
        " a parent, a child's delete or a unique value on a table that lags, and the live run writes"
        " them once that is applied. Held at least once, per table: s.customers (1), s.orders (4)."
    )
    assert said in md and held_note(summary) == said
    lines = shadow_table_lines(summary, [("s.customers", "t.s.customers"), ("s.items", "t.s.items")])
    assert lines[0].endswith(
        "no diffs (2 offsets of t.s.customers read); 1 held back at least once (in no diff until what"
        " they wait for is applied)"
    )
    assert "held" not in lines[1]
    nothing, _ = sample_review(diffs={}, range={}, totals={"events": 3})
    assert held_note(nothing) is None


def test_long_values_are_cut_with_the_rest_counted() -> None:
    summary, diffs = sample_review()
    diffs[0]["columns"]["name"]["after"] = "x" * (MAX_VALUE_CHARS + 100)
    review = shadow_report(collect_review(summary, "r.jsonl", diffs))
    cut = MAX_VALUE_CHARS + 100 + 2 - MAX_VALUE_CHARS  # the JSON form has two quotes
    assert f"… {cut} more characters" in render_html(review)
    assert f"… {cut} more characters" in render_markdown(review)


def test_error_records_beyond_the_cap_are_counted() -> None:
    summary, diffs = sample_review()
    errors = [dict(diffs[2], offset=i) for i in range(5)]
    review = collect_review(summary, "r.jsonl", errors, max_errors=2)
    page = render_html(shadow_report(review))
    assert review.errors_total == 5 and len(review.errors) == 2
    assert "5 in all; the first 2 are shown" in page


def test_a_mapping_becomes_titled_sections_of_tables() -> None:
    data = {
        "state": "flipped",
        "gates": [{"name": "lag is zero", "ok": True, "detail": "0 events"}, {"name": "verify", "ok": False}],
        "timings": {"drain_s": 1.5, "flip_s": 0.2},
        "window": {"from": "2024-05-01T10:00:00+00:00", "to": "2024-05-01T10:02:00+00:00"},
        "audit_events": ["fence written", "writes <stopped>"],
    }
    report = mapping_report("Cutover c-7", data, facts=("state",))
    page, md = render_html(report), render_markdown(report)
    parsed = parse(page)
    headings = [t for t, _ in parsed.tags if t == "h2"]
    assert len(headings) == 5
    for title in ("Facts", "Gates", "Timings", "Window", "Audit events"):
        assert f">{title}</h2>" in page and f"## {title}" in md
    assert "state|flipped" in parsed.rows
    assert "lag is zero|ok|0 events" in parsed.rows and "verify|FAIL|-" in parsed.rows
    assert "drain_s|1.5" in parsed.rows
    assert "writes <stopped>" in "".join(parsed.text) and "<stopped>" not in page
    assert "| lag is zero | **ok** | 0 events |" in md and "| verify | **FAIL** | - |" in md


def test_any_report_of_sections_renders_in_both_forms() -> None:
    report = Report(
        "Plain",
        [
            Section(
                "One",
                [Paragraph(["see ", Code("a|b")]), Table(["k", "v"], [["a", 1]], numeric=frozenset({1}))],
                id="one",
            )
        ],
    )
    page, md = render_html(report), render_markdown(report)
    assert '<section id="one">' in page and "<code>a|b</code>" in page and "a|1" in parse(page).rows
    assert md.splitlines()[:5] == ["# Plain", "", "## One", "", "see `a|b`"]
    assert "|---|---:|" in md


def test_the_terminal_summary_lists_every_previewed_table_with_the_stopped_one_marked() -> None:
    """Trial 8: a preview spanning a source schema change printed only the stopped table; the
    tables whose events changed nothing (already applied) and the rest were not to be seen."""
    stop = (
        "crm.customer, crm.customer_pii stopped at demo.shop.customers[1]@40 (customer.on_schema_change):"
        " shop.customers has a column vip the spec does not read; fix: map vip or list it in"
        " ignore_source_columns, then restart `replicator run`"
    )
    summary = {
        "diffs": {
            "crm.customer": {"stopped": 1},
            "crm.customer_pii": {"stopped": 1},
            "sales.order": {"insert": 3},
        },
        "stopped": [stop, stop.replace("[1]@40", "[2]@17")],
        "range": {
            "demo.shop.customers[1]": [30, 40],
            "demo.shop.customers[2]": [10, 17],
            "demo.shop.orders[0]": [0, 5],
            "demo.shop.order_lines[0]": [8, 20],
            "demo.shop.products[0]": [4, 4],
        },
    }
    tables = [
        ("crm.customer", "demo.shop.customers"),
        ("crm.customer_pii", "demo.shop.customers"),
        ("sales.order", "demo.shop.orders"),
        ("sales.order_line", "demo.shop.order_lines"),
        ("catalog.product", "demo.shop.products"),
    ]
    assert shadow_table_lines(summary, tables) == [
        f"  {'crm.customer':24} STOPPED; no diffs (17 offsets of demo.shop.customers read)",
        f"    {stop}",
        f"  {'crm.customer_pii':24} STOPPED; no diffs (17 offsets of demo.shop.customers read)",
        f"  {'sales.order':24} insert=3",
        f"  {'sales.order_line':24} no diffs (12 offsets of demo.shop.order_lines read)",
        f"  {'catalog.product':24} nothing previewed (no offset of demo.shop.products in the range)",
    ]
