"""A group member against real Kafka (trial 4).

- Two processes with the same group.instance.id (a second daemon started with the first one's
  REPLICATOR_KAFKA__INSTANCE_ID): Kafka fences the older member. librdkafka reports that as a
  fatal consumer error, which the older member used to log and then go on applying batches
  beside the new one. Now its next poll raises `Fatal`, naming the setting to change.
- A subscribed topic that does not exist yet (the signal table's before its first row) was a
  `kafka_error ... retriable=False` line at every poll; it is said once.
"""

from __future__ import annotations

import contextlib
import uuid

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from replicator.config import KafkaSettings
from replicator.core.errors import Fatal
from replicator.core.model import Partition
from replicator.kafka.consumer import KafkaSource, StartAt
from tests.integration.pipeline import wait_until
from tests.integration.stack import Stack


def member(kafka: KafkaSettings, assigned: list[Partition]) -> KafkaSource:
    def on_assign(partitions: list[Partition]) -> dict[Partition, StartAt]:
        assigned.extend(partitions)
        return {p: "earliest" for p in partitions}

    source = KafkaSource(kafka, kafka.group_id, on_error=lambda message, retriable: None)
    source.subscribe([kafka.group_id], on_assign, lambda partitions: None)
    return source


def test_a_member_fenced_by_a_second_one_with_its_instance_id_stops_with_the_fix(stack: Stack) -> None:
    topic = f"fenced-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    kafka = KafkaSettings(bootstrap_servers=stack.kafka, group_id=topic, instance_id="same-instance-1")
    first_assigned: list[Partition] = []
    first = member(kafka, first_assigned)
    wait_until(lambda: first.poll(10, 0.5) == [] and first_assigned, 60, "the first member's assignment")
    second = member(kafka, [])
    try:

        def first_fenced() -> Fatal | None:
            second.poll(10, 0.2)
            try:
                first.poll(10, 0.2)
            except Fatal as exc:
                return exc
            return None

        fenced = wait_until(first_fenced, 120, "the first member to stop, fenced")
        assert "REPLICATOR_KAFKA__INSTANCE_ID" in str(fenced) and "'same-instance-1'" in str(fenced)
    finally:
        for source in (first, second):
            with contextlib.suppress(KafkaException, RuntimeError):  # a fenced consumer may refuse
                source.close()
        admin.delete_topics([topic])


def test_a_subscribed_topic_that_does_not_exist_yet_is_said_once(stack: Stack) -> None:
    topic = f"absent-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=stack.kafka, group_id=topic)
    said: list[tuple[str, bool]] = []
    source = KafkaSource(
        kafka, kafka.group_id, on_error=lambda message, retriable: said.append((message, retriable))
    )
    source.subscribe([topic], lambda partitions: {}, lambda partitions: None)
    try:
        wait_until(lambda: source.poll(10, 0.5) == [] and said, 60, "the missing topic to be said")
        for _ in range(6):  # librdkafka repeats the error on later metadata refreshes
            source.poll(10, 0.5)
    finally:
        source.close()
    assert said == [(f"topic {topic} does not exist yet: subscribed, it is read once it exists", True)]
