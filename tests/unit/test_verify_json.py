"""verify reads json and jsonb as their text (`JsonText`, trial 17: megabyte documents parsed into
objects made a verify peak at 8.4 GB): `core.verify.same` takes equal texts as equal unparsed, and
compares differing texts as the documents they hold."""

from __future__ import annotations

from replicator.core.values import JsonText
from replicator.core.verify import same


def test_the_same_document_text_is_equal_without_a_parse() -> None:
    text = '{"a": [1, 2.50], "b": 1}'
    assert same(JsonText(text), JsonText(text))
    assert same(JsonText(text), text)  # a jsonb column mapped into a text one: the same text


def test_differing_texts_are_compared_as_documents() -> None:
    # a json source column (spacing, key order as written) into a jsonb target (its own order)
    assert same(JsonText('{"b":1,  "a":[1,2.50]}'), JsonText('{"a": [1, 2.50], "b": 1}'))
    assert same(JsonText('{"n": null}'), {"n": None})  # a document decoded elsewhere
    assert not same(JsonText('{"a": [1, 2.50], "b": 1}'), JsonText('{"a": [1, 2.50], "b": 2}'))
    assert not same(JsonText('{"a": 1}'), JsonText('{"a": 1, "b": null}'))
