"""Kafka positions for a point in time (I/O edge): the first offset at or after a timestamp.

Used to bound a range (`replicator shadow --from/--to`). A partition with no
message at or after the time gets its current end offset.
"""

from __future__ import annotations

from datetime import datetime

from confluent_kafka import Consumer, TopicPartition

from replicator.config import Settings

Partition = tuple[str, int]


def parse_time(text: str) -> datetime:
    """An ISO-8601 timestamp with a zone (e.g. 2026-11-26T10:00:00+00:00)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not an ISO-8601 timestamp; write e.g. 2026-11-26T10:00:00+00:00"
        ) from exc
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add one, e.g. +00:00")
    return moment


def offsets_at(settings: Settings, topics: list[str], moment: datetime) -> dict[Partition, int]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "positions",
            **settings.kafka.options,
        }
    )
    try:
        md = consumer.list_topics(timeout=10)
        millis = int(moment.timestamp() * 1000)
        wanted = [
            TopicPartition(t, p, millis) for t in topics if t in md.topics for p in md.topics[t].partitions
        ]
        found = consumer.offsets_for_times(wanted, timeout=10)
        out: dict[Partition, int] = {}
        for tp in found:
            if tp.offset < 0:  # nothing at or after the time: the end
                tp.offset = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=10
                )[1]
            out[(tp.topic, tp.partition)] = tp.offset
        return out
    finally:
        consumer.close()
