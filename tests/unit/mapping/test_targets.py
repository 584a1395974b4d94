"""Target adapters: the last step of a column rule, fitting a value to its target type."""

from __future__ import annotations

from decimal import Decimal

import pytest

from replicator.core.mapping import targets
from replicator.core.mapping.catalog import PgType
from replicator.core.serialize import dumps, json_document
from replicator.core.values import POS_INFINITY, Bits, JsonText


def adapt(typ: str, **kw: bool) -> targets.Fn:
    fn = targets.adapter(PgType.parse(typ), **kw)
    assert fn is not None
    return fn


def test_most_types_need_no_adapter() -> None:
    """Numbers, text, dates, json and arrays are written as they are (no step, no cost)."""
    for typ in ("integer", "text", "numeric(8,2)", "timestamptz", "jsonb", "bit(4)[]", "uuid"):
        assert targets.adapter(PgType.parse(typ)) is None, typ


def test_bit_n_keeps_leading_zeros_and_refuses_overflow() -> None:
    """bit(n): Debezium's Bits (and a bit(1) boolean) become exactly n bits."""
    f = adapt("bit(4)")
    assert f(Bits(1, 4)) == "0001"
    assert f(True) == "0001" and adapt("bit")(False) == "0"
    with pytest.raises(targets.AdaptError, match="5 bits do not fit bit\\(4\\)"):
        f(Bits(0b10000, 5))
    assert f("0101") == "0101"  # text read back from PostgreSQL passes through


def test_varbit_from_debezium_is_a_known_limitation() -> None:
    """bit varying: Debezium drops leading zero bits, so a Bits value is refused (never guessed)."""
    with pytest.raises(targets.AdaptError, match="leading zero bits"):
        adapt("varbit")(Bits(1, 2147483647))
    assert adapt("bit varying(8)")("0010") == "0010"


def test_hstore_from_json_and_map_modes() -> None:
    """hstore: Debezium's JSON text or a map becomes hstore text (quotes, backslashes, NULL)."""
    f = adapt("hstore")
    assert f(JsonText('{"a": "1", "b\\"q": null}')) == '"a"=>"1", "b\\"q"=>NULL'
    assert f({"k": "v\\w"}) == '"k"=>"v\\\\w"'
    with pytest.raises(targets.AdaptError, match="flat JSON object of strings"):
        f({"k": 1})
    with pytest.raises(targets.AdaptError, match="not a JSON object"):
        f(JsonText("[1]"))


def test_json_values_into_text_are_the_text_of_the_arrow_operator() -> None:
    """json_path into text: like PostgreSQL's ->> (strings bare, numbers exact, objects as JSON)."""
    f = adapt("text", json_to_text=True)
    assert f("x") == "x" and f(True) == "true" and f(Decimal("1.50")) == "1.50" and f(3) == "3"
    assert f({"a": [1, None]}) == '{"a": [1, null]}'
    assert targets.adapter(PgType.parse("varchar(3)"), json_to_text=False) is None


def test_json_document_keeps_numbers_and_embedded_documents() -> None:
    """json_document: decimals keep digits, JsonText stays the document it is, non-JSON values
    are their stable text (never a crash)."""
    doc = {"n": Decimal("10.00"), "j": JsonText('{"z":1,"a":2}'), "t": POS_INFINITY, "f": float("nan")}
    assert json_document(doc) == '{"n": 10.00, "j": {"z":1,"a":2}, "t": "infinity", "f": "NaN"}'
    assert dumps(doc)  # the report serializer takes the same value
