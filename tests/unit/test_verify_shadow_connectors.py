"""Pure helpers: the verification diff, shadow row diffs, connector configs, error classes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from replicator.connect.configs import ConnectorConfigError, load_connector, substitute, validation_errors
from replicator.core.diff import row_diff
from replicator.core.verify import normalize
from replicator.pg.errors import is_fatal, is_row_error, is_transient


def test_normalize_compares_numbers_by_value_and_instants_in_utc() -> None:
    assert normalize(Decimal("1.50")) == normalize(Decimal("1.5")) == normalize(Decimal("15E-1"))
    assert normalize(12) == normalize(Decimal("12.00"))
    berlin = timezone(timedelta(hours=1))
    assert normalize(datetime(2024, 1, 1, 1, tzinfo=berlin)) == normalize(datetime(2024, 1, 1, tzinfo=UTC))
    assert normalize({"b": 1, "a": [1, 2]}) == normalize({"a": [1, 2], "b": 1})
    assert normalize(memoryview(b"ab")) == b"ab"


def test_normalize_compares_times_of_day_with_a_zone_in_utc() -> None:
    """timetz: Debezium sends 10:00:00+02 as 08:00:00Z; the same time, so verify calls it equal."""
    plus2 = timezone(timedelta(hours=2))
    assert normalize(time(10, 0, tzinfo=plus2)) == normalize(time(8, 0, tzinfo=UTC))
    assert normalize(time(1, 0, tzinfo=plus2)) == normalize(time(23, 0, tzinfo=UTC))  # across midnight
    assert normalize(time(10, 0, tzinfo=plus2)) != normalize(time(10, 0, tzinfo=UTC))


def test_normalize_makes_nan_equal_to_itself_and_to_nothing_else() -> None:
    """numeric 'NaN' read back from both databases is the same value (Decimal NaN != NaN)."""
    assert normalize(Decimal("NaN")) == normalize(Decimal("NaN")) == normalize(float("nan"))
    assert normalize(Decimal("NaN")) not in (
        normalize(None),
        normalize(Decimal(0)),
        normalize(Decimal("Infinity")),
    )
    assert normalize(Decimal("Infinity")) == normalize(float("inf")) != normalize(Decimal("-Infinity"))


def test_shadow_row_diff_kinds_and_changed_columns() -> None:
    cols = ["k", "a", "b"]
    assert row_diff(None, {"k": 1, "a": 2, "b": None}, cols)[0] == "insert"
    assert row_diff({"k": 1, "a": 2, "b": None}, None, cols)[0] == "delete"
    kind, changed = row_diff({"k": 1, "a": 2, "b": None}, {"k": 1, "a": 3, "b": None}, cols)
    assert kind == "update" and changed == {"a": {"before": 2, "after": 3}}
    assert row_diff({"k": 1, "a": 2, "b": "é"}, {"k": 1, "a": 2, "b": "é"}, cols) == ("noop", {})
    kind, changed = row_diff({"k": 1, "a": None, "b": b"\x01"}, {"k": 1, "a": "", "b": b"\x01"}, cols)
    assert kind == "update" and changed == {"a": {"before": None, "after": ""}}  # null is not empty


def test_substitute_uses_env_defaults_and_leaves_provider_references() -> None:
    text = "${A} ${B:-dflt} ${env:SECRET} ${file:/x:y}"
    assert substitute(text, {"A": "1"}, "f") == "1 dflt ${env:SECRET} ${file:/x:y}"
    with pytest.raises(ConnectorConfigError, match="MISSING"):
        substitute("${MISSING}", {}, "f")


def test_connector_values_cannot_break_the_json(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"name": "n", "config": {"connector.class": "C", "database.password": "${PW}"}}')
    spec = load_connector(path, {"PW": 'p"w}\\'})
    assert spec.config["database.password"] == 'p"w}\\'
    assert spec.display_config()["database.password"] == "********"


def test_validation_errors_name_the_real_field() -> None:
    answer = {
        "configs": [
            {
                "value": {
                    "name": "database.hostname",
                    "errors": ["FATAL: password authentication failed for user x"],
                }
            },
            {"value": {"name": "slot.name", "errors": []}},
            {"value": None},
        ]
    }
    (line,) = validation_errors(answer)
    assert line.startswith("database.password:") and "reported on database.hostname" in line


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (psycopg.errors.SerializationFailure(), "transient"),
        (psycopg.errors.DeadlockDetected(), "transient"),
        (psycopg.OperationalError("connection lost"), "transient"),
        (psycopg.errors.AdminShutdown(), "transient"),
        (psycopg.errors.NotNullViolation(), "row"),
        (psycopg.errors.CheckViolation(), "row"),
        (psycopg.errors.NumericValueOutOfRange(), "row"),
        (psycopg.errors.StringDataRightTruncation(), "row"),
        (psycopg.errors.InsufficientPrivilege(), "fatal"),
        (psycopg.errors.UndefinedTable(), "fatal"),
        (psycopg.errors.UndefinedColumn(), "fatal"),
        (psycopg.errors.InvalidPassword(), "fatal"),
    ],
)
def test_error_classes_by_sqlstate(exc: Exception, kind: str) -> None:
    got = (
        "transient"
        if is_transient(exc)
        else "row"
        if is_row_error(exc)
        else "fatal"
        if is_fatal(exc)
        else "?"
    )
    assert got == kind
