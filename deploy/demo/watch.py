#!/usr/bin/env python3
"""Show source changes flowing into Kafka: one line per event, then a count per topic."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from confluent_kafka import Consumer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--prefix", default=os.environ.get("CDC_TOPIC_PREFIX", "demo"))
    args = parser.parse_args()
    consumer = Consumer(
        {
            "bootstrap.servers": os.environ.get("REPLICATOR_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:59092"),
            "group.id": f"demo-watch-{os.getpid()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([f"^{args.prefix}\\.shop\\..*"])
    counts: dict[tuple[str, str], int] = {}
    deadline = time.monotonic() + args.seconds
    shown = 0
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        value = msg.value()
        op = "tombstone" if value is None else json.loads(value)["payload"]["op"]
        counts[(msg.topic(), op)] = counts.get((msg.topic(), op), 0) + 1
        if op in ("u", "d", "t") and shown < 10:
            print(f"{msg.topic()}[{msg.partition()}]@{msg.offset()} op={op}")
            shown += 1
    consumer.close()
    print("events in Kafka by topic and op:")
    for (topic, op), n in sorted(counts.items()):
        print(f"  {topic:28} {op:10} {n}")
    return 0 if counts else 1


if __name__ == "__main__":
    sys.exit(main())
