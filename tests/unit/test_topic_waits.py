"""What a run says (or refuses) when the spec's topics are not in Kafka.

Debezium creates a table's topic with its first change event, so an empty table has no topic:
with other topics under the prefix, a run to the end counts that table as caught up. With no
topic under the prefix at all (a wrong topic_prefix, the connector not running, its topics
deleted) `--stop-when-caught-up` could only wait forever: it fails at once with the fix. The
daemon waits, saying what for.
"""

from __future__ import annotations

import threading
from io import StringIO

import pytest

from replicator.config import BatchSettings
from replicator.core.decode import JsonDecoder
from replicator.core.errors import Fatal
from replicator.core.mapping import Plan, catalog_from_dict, compile_spec, load_spec_text
from replicator.run.daemon import topic_waits
from replicator.run.loop import ConsumerLoop, LoopOptions
from replicator.runlog import RunLog
from tests.unit.test_loop import FakeSink, FakeSource, plan

WHERE = "k:9092"


def test_run_to_the_end_with_no_topic_under_the_prefix_fails_naming_the_prefix_and_the_fix() -> None:
    with pytest.raises(Fatal) as raised:
        topic_waits(plan(), {}, [], WHERE, stop_when_caught_up=True)
    line = str(raised.value)
    assert "\n" not in line
    assert "no topic under the topic prefix 't' exists in Kafka at k:9092" in line
    assert "topic_prefix (or the rule's topic:) match the connector's topic.prefix" in line
    assert "`replicator connectors status`" in line


def test_run_to_the_end_counts_a_table_without_its_topic_as_caught_up_when_the_prefix_has_topics() -> None:
    lines = topic_waits(plan(), {}, ["t.src.other"], WHERE, stop_when_caught_up=True)
    assert len(lines) == 1
    assert lines[0].startswith("topic t.src.items does not exist in Kafka at k:9092; table src.items has")
    assert "nothing to read and counts as caught up" in lines[0]
    assert "an empty table has none" in lines[0]


def test_the_daemon_waits_and_says_for_what() -> None:
    lines = topic_waits(plan(), {}, [], WHERE, stop_when_caught_up=False)
    assert len(lines) == 2
    assert "no topic under the topic prefix 't' exists in Kafka at k:9092 yet" in lines[0]
    assert "waits for the connector to create its topics" in lines[0]
    assert "table src.items waits for it (the run reads it once it exists)" in lines[1]
    assert topic_waits(plan(), {"t.src.items": 3}, [], WHERE, stop_when_caught_up=False) == []


def three_tables() -> Plan:
    rules = "".join(
        f"""
  - id: {name}
    source: src.{name}
    target: dst.{name}
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: ignore}}
    columns: {{id: {{from: id}}}}"""
        for name in ("a", "b", "c")
    )
    catalog = catalog_from_dict(
        {f"dst.{n}": {"columns": {"id": "bigint not null"}, "pk": ["id"]} for n in "abc"}
    )
    return compile_spec(load_spec_text(f"version: 1\ntopic_prefix: t\ntables:{rules}\n", "abc.yaml"), catalog)


@pytest.mark.parametrize("stop_when_caught_up", [True, False], ids=["to-the-end", "daemon"])
def test_several_missing_topics_are_said_in_one_line_naming_each(stop_when_caught_up: bool) -> None:
    """A spec of many tables, most of them empty (no topic yet), gets one warning, not one each."""
    lines = topic_waits(three_tables(), {"t.src.b": 1}, [], WHERE, stop_when_caught_up)
    assert len(lines) == 1
    assert lines[0].startswith(
        "2 mapped topics do not exist in Kafka at k:9092: t.src.a, t.src.c; their tables src.a, src.c "
        + ("have nothing to read and count as caught up" if stop_when_caught_up else "wait for them")
    )
    assert lines[0].endswith(f". {FIX}") and "\n" not in lines[0]


FIX = (
    "Fix, if it should exist: make the spec's topic_prefix (or the rule's topic:) match the connector's"
    " topic.prefix, and check that the connector is running (`replicator connectors status`)"
)


def test_every_missing_topic_message_ends_with_the_same_one_fix() -> None:
    with pytest.raises(Fatal) as raised:
        topic_waits(plan(), {}, [], WHERE, stop_when_caught_up=True)
    said = [
        str(raised.value),
        *topic_waits(plan(), {}, [], WHERE, stop_when_caught_up=False),
        *topic_waits(plan(), {}, ["t.src.other"], WHERE, stop_when_caught_up=True),
    ]
    assert len(said) == 4
    for line in said:
        assert line.endswith(f". {FIX}"), line
        assert line.count("Fix") == 1 and line.count("`replicator connectors status`") == 1, line


@pytest.mark.parametrize("nothing_to_read", [True, False])
def test_a_run_to_the_end_with_nothing_to_read_ends_without_an_assignment(nothing_to_read: bool) -> None:
    source = FakeSource([], {})  # no partition is ever assigned
    loop = ConsumerLoop(
        source,
        FakeSink(source, {}),
        JsonDecoder(),
        plan(),
        RunLog("test", stream=StringIO()),
        LoopOptions(
            limits=BatchSettings(max_events=10, max_ms=1),
            stop_when_caught_up=True,
            nothing_to_read=nothing_to_read,
        ),
        sleep=lambda s: None,
    )
    running = threading.Thread(target=loop.run, daemon=True)
    running.start()
    running.join(10 if nothing_to_read else 0.5)  # with nothing_to_read it ends at its first turn
    ended = not running.is_alive()
    loop.request_stop()
    running.join(5)
    assert ended is nothing_to_read  # without it, a run to the end waits for an assignment
