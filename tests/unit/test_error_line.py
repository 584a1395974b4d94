"""`errors list` prints one record per line, single-spaced: a rule's rejection (a lookup's, a
cast's) has no SQLSTATE, and its line had a double space where the SQLSTATE goes (trial 9)."""

from __future__ import annotations

from typing import Any

from replicator.run.error_records import RetryResult, error_line

LOOKUP = (
    "lookup: no row of legacy.country_map with old_id = 99 (on_missing: reject); fix: add the row to"
    " legacy.country_map, or declare lookup: {on_missing: null}"
)


def record(**changed: Any) -> dict[str, Any]:
    return {
        "id": 7,
        "kind": "apply",
        "topic": "legacy.old.account",
        "partition": 0,
        "kafka_offset": 42,
        "target_table": "legacy.account",
        "key": "[2]",
        "rule_id": "account.country_uuid",
        "sqlstate": None,
        "message": LOOKUP,
        "resolved_at": None,
        "resolution": None,
        **changed,
    }


def test_a_lookup_rejection_is_one_single_spaced_line() -> None:
    assert error_line(record()) == (
        f"#7 apply legacy.old.account[0]@42 legacy.account key=[2] account.country_uuid {LOOKUP}"
    )


def test_a_refusal_by_the_target_keeps_its_sqlstate_and_a_resolved_record_its_resolution() -> None:
    line = error_line(
        record(sqlstate="23514", message="violates check", resolved_at="t", resolution="retried")
    )
    assert line == (
        "#7 apply legacy.old.account[0]@42 legacy.account key=[2] account.country_uuid 23514"
        " violates check [retried]"
    )
    unnamed = error_line(record(target_table=None, key=None))
    assert unnamed.startswith("#7 apply legacy.old.account[0]@42 - key=- account.country_uuid lookup: ")


def test_the_retry_counts_add_up_in_records_and_name_rows_apart() -> None:
    """Trial 11 printed "closed 101; rows written 50, older than their row 40": 50 + 40 is not 101
    (events folded into one row are written once). The records closed are split into applied and
    no-ops, which add up; the rows written are named as rows."""
    r = RetryResult("run", chosen=103, closed=list(range(101)), failing={7: "x", 8: "y"}, closed_older=40)
    r.applied.update({"app.orders:upsert": 48, "app.order_lines:delete": 2})
    assert r.counts() == (
        "closed 101 (61 applied as 50 target rows, 40 older than their row: no-ops), still failing 2"
    )
    one = RetryResult("run", chosen=1, closed=[3])
    one.applied.update({"app.orders:upsert": 1})
    assert (
        one.counts()
        == "closed 1 (1 applied as 1 target row, 0 older than their row: no-ops), still failing 0"
    )
    assert r.counts(dry_run=True) == "would close 101, still failing 2"
