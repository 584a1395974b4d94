"""`pg.types.array_cell`: an array whose elements mix Python types goes to COPY as PostgreSQL's
array text (psycopg refuses to dump such a list: a date[] holding 'infinity' halted the daemon)."""

from __future__ import annotations

import datetime as dt

from replicator.core.values import NEG_INFINITY, POS_INFINITY, PgText
from replicator.pg.types import array_cell


def test_a_date_array_with_infinities_becomes_array_text() -> None:
    assert array_cell([dt.date(2024, 1, 1), POS_INFINITY, None]) == '{"2024-01-01","infinity",NULL}'
    assert array_cell([NEG_INFINITY, dt.datetime(2024, 1, 1, 10, 0)]) == '{"-infinity","2024-01-01 10:00:00"}'


def test_nested_arrays_and_quoting() -> None:
    assert (
        array_cell([[PgText("24:00:00"), dt.time(1, 2)], [None, None]])
        == '{{"24:00:00","01:02:00"},{NULL,NULL}}'
    )
    assert array_cell(['a"b\\c', 1]) == '{"a\\"b\\\\c","1"}'


def test_arrays_of_one_type_and_other_values_are_left_to_psycopg() -> None:
    same = [dt.date(2024, 1, 1), None, dt.date(2024, 1, 2)]
    assert array_cell(same) is same
    assert array_cell([POS_INFINITY, NEG_INFINITY]) == [POS_INFINITY, NEG_INFINITY]
    assert array_cell([]) == []
    assert array_cell(None) is None
    assert array_cell("text") == "text"
