"""Source column types Debezium does not carry as they are (`core.mapping.captured`)."""

from __future__ import annotations

from replicator.core.mapping.captured import capture_gap
from replicator.core.mapping.catalog import PgType


def test_user_defined_composite_and_range_types_are_not_carried() -> None:
    composite = capture_gap(PgType("s.addr", is_array=True, user_kind="composite"))
    assert composite is not None and "user-defined composite type (s.addr[])" in composite
    ranged = capture_gap(PgType("s.floatrange", user_kind="range"))
    assert ranged is not None and "user-defined range type (s.floatrange)" in ranged
    assert PgType("s.addr", is_array=True, user_kind="composite").element.user_kind == "composite"


def test_a_type_spelling_alone_is_taken_as_carried() -> None:
    assert capture_gap(PgType("s.addr")) is None  # only the live catalog marks a composite
    assert capture_gap(PgType.parse("int4range")) is None
    assert capture_gap(PgType.parse("tsquery")) is not None
