"""`replicator status`: per partition the target-stored, Kafka-committed and end offsets.

Lag is measured from the target-stored offset (the truth), not Kafka's.
`kafka_ahead` flags a partition whose Kafka-committed offset is ahead of the
target-stored one, which the loop never does (invariant 1).
"""

from __future__ import annotations

from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from replicator import control
from replicator.config import Settings


def partition_status(settings: Settings, topics: list[str], group_id: str) -> list[dict[str, Any]]:
    conf = settings.kafka.consumer_config()
    conf["group.id"] = group_id
    consumer = Consumer(conf)
    rows: list[dict[str, Any]] = []
    try:
        metadata = consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(t, p)
            for t in topics
            if t in metadata.topics
            for p in sorted(metadata.topics[t].partitions)
        ]
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=10)}
        with psycopg.connect(settings.target.conninfo()) as conn:
            control.ensure(conn, settings.control_schema)
            stored = {
                (t, p): o
                for t, p, o in conn.execute(
                    sql.SQL("SELECT topic, partition, next_offset FROM {} WHERE group_id = %s").format(
                        control.table(settings.control_schema, "checkpoint")
                    ),
                    (group_id,),
                )
            }
            errors = {
                (t, p): n
                for t, p, n in conn.execute(
                    sql.SQL(
                        "SELECT topic, partition, count(*) FROM {} WHERE group_id = %s AND kind = 'error'"
                        " GROUP BY 1, 2"
                    ).format(control.table(settings.control_schema, "error_record")),
                    (group_id,),
                )
            }
        for tp in partitions:
            key = (tp.topic, tp.partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            target = stored.get(key)
            kafka = committed.get(key)
            kafka = kafka if kafka is not None and kafka >= 0 else None
            rows.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "target_offset": target,
                    "kafka_committed": kafka,
                    "end_offset": high,
                    "log_start": low,
                    "lag": high - (target if target is not None else low),
                    "errors": errors.get(key, 0),
                    "kafka_ahead": kafka is not None and target is not None and kafka > target,
                }
            )
    finally:
        consumer.close()
    return rows
