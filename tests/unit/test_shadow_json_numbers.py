"""Numbers inside json/jsonb values in a shadow preview: the diffs and the review show them as JSON
numbers with the digits the target holds.

Trial 7: a source jsonb {"r": 0.10757385042655154} showed in the shadow's JSON Lines and review as
{"r": "0.10757385042655154"}, and {"d": 1.50} with a string too (the live run wrote both right):
the preview reads the clone's jsonb with exact numbers (Decimal) and the serializer wrote every
Decimal as a string. A numeric column's Decimal stays a string.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from replicator.core.diff import row_diff
from replicator.core.serialize import dumps, encode, to_jsonable
from replicator.pg.types import _exact_json
from replicator.run.shadow import write_review

# 1e400 and the 30-digit number have no float; 1.50 keeps its scale in jsonb
DOC = '{"r": 0.10757385042655154, "d": 1.50, "e": 1e400, "n": [123456789012345678901234567890.5, 3]}'


def diff_line() -> str:
    """The JSON Lines record of an insert whose jsonb and numeric cells are read back as the shadow
    reads its clones (`exact_rows`)."""
    after = {"id": 1, "doc": _exact_json(DOC), "price": Decimal("12.50")}
    kind, changed = row_diff(None, after, ["id", "doc", "price"])
    return dumps({"kind": kind, "table": "t.x", "key": '{"id": 1}', "columns": changed, "rule_ids": []})


def test_jsonb_numbers_stay_json_numbers_with_their_digits_in_the_diffs() -> None:
    record = json.loads(diff_line(), parse_float=Decimal)
    assert record["columns"]["doc"]["after"] == {
        "r": Decimal("0.10757385042655154"),
        "d": Decimal("1.50"),
        "e": Decimal("1e400"),
        "n": [Decimal("123456789012345678901234567890.5"), 3],
    }
    assert f'"after": {DOC}' in diff_line()  # the server's tokens, unrounded: 1.50, 1e400
    assert record["columns"]["price"]["after"] == "12.50"  # a numeric column: a string, as before


def test_the_review_shows_jsonb_numbers_as_numbers(tmp_path: Path) -> None:
    report = tmp_path / "shadow-r.jsonl"
    report.write_text(diff_line() + "\n", encoding="utf-8")
    summary = {"run_id": "r", "group_id": "g", "diffs": {"t.x": {"insert": 1}}, "range": {}}
    page = write_review(tmp_path / "shadow-r.md", summary, report)
    md = (tmp_path / "shadow-r.md").read_text(encoding="utf-8")
    assert f"`{DOC}`" in md
    assert "0.10757385042655154, &quot;d&quot;: 1.50" in page.read_text(encoding="utf-8")


def test_a_jsonb_number_written_differently_is_a_change() -> None:
    """1.5 and 1.50 compare equal as numbers, but the live run would change the stored text."""
    short, long = {"doc": _exact_json('{"d": 1.5}')}, {"doc": _exact_json('{"d": 1.50}')}
    kind, changed = row_diff(short, long, ["doc"])
    assert kind == "update" and dumps(changed) == '{"doc": {"before": {"d": 1.5}, "after": {"d": 1.50}}}'
    assert row_diff(long, {"doc": _exact_json('{"d": 1.50}')}, ["doc"]) == ("noop", {})


def test_dumps_writes_json_dumps_text_for_every_other_value() -> None:
    value: dict[str, Any] = {
        "a": [1, 2.5, None, True, 'é\n"', {}, []],
        "b": {"c": Decimal("1.50"), "d": float("nan")},
    }
    for indent in (None, 0, 2):
        expected = json.dumps(
            {"a": [1, 2.5, None, True, 'é\n"', {}, []], "b": {"c": "1.50", "d": "NaN"}},
            ensure_ascii=False,
            indent=indent,
        )
        assert dumps(value, indent=indent) == expected


def test_a_document_without_json_numbers_is_the_same_text_on_both_paths() -> None:
    """`dumps` hands a document without JsonNumber to json.dumps (fast) and builds one holding a
    JsonNumber in Python: the two write the same text, so which path ran never shows."""
    moment = dt.datetime(2026, 12, 7, 0, 20, 1, 123456, tzinfo=dt.UTC)
    record = {
        "run_id": "run-1",
        "table": "crm.customer",
        "key": '{"id": 4711}',
        "kind": "update",
        "columns": {"name": {"before": "Anna Müller", "after": 'Zoë "🙂"\n'}, "at": {"after": moment}},
        "partition": 0,
        "offset": 123456,
        "source_position": [850327168, 2.5, -0.0, 10**30],
        "rule_ids": [],
        "nested": [[], {}, [{}], {"k": [None, True, False]}],
        "weird": {1: Decimal("1.50"), "nan": float("inf"), "\u2028": "\u2028"},
        "sqlstate": None,
    }
    for indent in (None, 0, 2):
        document = to_jsonable(record)
        assert dumps(record, indent=indent) == encode(document, indent=indent)
        assert dumps(record, indent=indent) == json.dumps(document, ensure_ascii=False, indent=indent)
    scalars: list[Any] = ["é", 1, None, [], {}]
    for scalar in scalars:
        assert dumps(scalar) == encode(to_jsonable(scalar))


def test_a_nul_character_is_stored_visibly_in_the_control_schemas_jsonb() -> None:
    """jsonb refuses U+0000, which a json column's value may hold (`"a\\u0000b"`): the shadow's diff
    of such a row halted the shadow run (22P05). The diff's document names it as six characters."""
    from replicator.core.serialize import JSONValue, jsonb_safe

    assert jsonb_safe({"c\x00": ["a\x00b", 1, None, {"k": "\x00"}], "ok": "plain"}) == {
        "c\\u0000": ["a\\u0000b", 1, None, {"k": "\\u0000"}],
        "ok": "plain",
    }
    same: JSONValue = {"ok": ["x"]}
    assert jsonb_safe(same) == same
