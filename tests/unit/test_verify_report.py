"""What `replicator verify` says about mismatched rows: the columns that differ and the first
difference's values (trial 5 rerun: 30 BC dates were only a count on the text line)."""

from __future__ import annotations

from replicator.core.model import TableRef
from replicator.core.verify import TableDiff


def test_the_detail_names_each_differing_column_and_the_first_values() -> None:
    d = TableDiff(
        TableRef("billing", "invoice"),
        expected=3,
        actual=3,
        mismatched=[
            ("[10]", "due_date", "0044-03-15 BC", "0044-03-15"),
            ("[11]", "due_date", "0100-01-01 BC", "0100-01-01"),
            ("[12]", "memo", "a", "b"),
        ],
    )
    assert d.mismatch_detail() == (
        "mismatched columns: due_date (2), memo (1); first: key [10] due_date: "
        "source '0044-03-15 BC', target '0044-03-15'"
    )


def test_a_long_value_is_cut_and_says_how_long_it_is() -> None:
    d = TableDiff(TableRef("s", "t"), mismatched=[("[1]", "body", "x" * 500, "y")])
    detail = d.mismatch_detail(width=20)
    assert "source 'xxxxxxxxxxxxxxxxxxx… (502 chars)" in detail
    assert detail.endswith("target 'y'")


def test_no_detail_when_nothing_differs() -> None:
    assert TableDiff(TableRef("s", "t"), expected=1, actual=1).mismatch_detail() == ""
