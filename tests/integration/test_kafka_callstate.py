"""A metadata question asked from `on_assign` must not abort the process.

The loop's `_on_assign` compares partition counts (`KafkaSource.partition_counts`) inside the
member's `consume`. When that asked the member's own handle (`list_topics`), confluent-kafka
cleared the handle's call state, and the next callback of the same `consume` (any librdkafka
log line routed to our logger) aborted the process with `CallState_get: Assertion 'cs != NULL'
failed` (SIGABRT, exit 134): found in trial 2, one of two instances died at its second
assignment while the snapshot created topics. librdkafka's `cgrp` debug lines make a log line
after the assignment certain. The member runs in a child process, since the bug kills it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.integration.stack import Stack

CHILD = textwrap.dedent(
    """
    import sys, uuid
    from replicator.config import KafkaSettings
    from replicator.kafka.consumer import KafkaSource

    topic = sys.argv[1]
    kafka = KafkaSettings(
        bootstrap_servers=sys.argv[2], options={"debug": "cgrp"}, group_id="callstate-" + uuid.uuid4().hex
    )
    source = KafkaSource(kafka, kafka.group_id, on_error=lambda message, retriable: None)
    seen = []

    def on_assign(partitions):
        # what the loop's partition watch asks here; a topic not created yet is left out
        seen.append(source.partition_counts([topic, topic + "-not-created"]))
        return {p: "earliest" for p in partitions}

    source.subscribe([topic], on_assign, lambda partitions: None)
    for _ in range(8):
        source.poll(100, 0.5)
    source.close()
    print("counts", seen, flush=True)
    """
)


def test_partition_counts_inside_on_assign_does_not_abort(stack: Stack) -> None:
    topic = f"callstate-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    try:
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        done = subprocess.run(
            [sys.executable, "-c", CHILD, topic, stack.kafka],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert "Assertion" not in done.stderr, done.stderr[-2000:]
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"counts [{{'{topic}': 2}}]" in done.stdout, done.stdout
    finally:
        admin.delete_topics([topic])
