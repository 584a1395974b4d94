"""Addresses of the stack under test, from the environment only.

The same variables the replicator reads (`REPLICATOR_*`, see
`deploy/local/stack env`), so the suite runs against local processes,
containers or an existing cluster alike. The administrator (for fixtures that
create tables and publications) comes from STACK_PG_ADMIN_USER/PASSWORD.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

R = TypeVar("R")


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Stack:
    source_host: str
    source_port: int
    source_db: str
    target_host: str
    target_port: int
    target_db: str
    admin_user: str
    admin_password: str
    kafka: str
    connect_url: str

    @classmethod
    def from_env(cls) -> Stack:
        return cls(
            source_host=env("REPLICATOR_SOURCE__HOST", "127.0.0.1"),
            source_port=int(env("REPLICATOR_SOURCE__PORT", "55432")),
            source_db=env("REPLICATOR_SOURCE__DBNAME", "shop"),
            target_host=env("REPLICATOR_TARGET__HOST", "127.0.0.1"),
            target_port=int(env("REPLICATOR_TARGET__PORT", "55433")),
            target_db=env("REPLICATOR_TARGET__DBNAME", "shop_target"),
            admin_user=env("STACK_PG_ADMIN_USER", "postgres"),
            admin_password=env("STACK_PG_ADMIN_PASSWORD", "postgres"),
            kafka=env("REPLICATOR_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:59092"),
            connect_url=env("REPLICATOR_CONNECT__URL", "http://127.0.0.1:58083"),
        )

    def source_admin(self, dbname: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.source_host,
            port=self.source_port,
            dbname=dbname or self.source_db,
            user=self.admin_user,
            password=self.admin_password,
        )

    def target_admin(self, dbname: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.target_host,
            port=self.target_port,
            dbname=dbname or self.target_db,
            user=self.admin_user,
            password=self.admin_password,
        )

    def problems(self) -> list[str]:
        """Why the stack is not usable, one line per component (empty when healthy)."""
        found: list[str] = []
        for name, conninfo in (("source", self.source_admin()), ("target", self.target_admin())):
            try:
                with psycopg.connect(conninfo, connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
            except psycopg.Error as exc:
                found.append(f"{name} postgres: {str(exc).splitlines()[0]}")
        consumer = Consumer({"bootstrap.servers": self.kafka, "group.id": "probe"})
        try:
            consumer.list_topics(timeout=5)
        except KafkaException as exc:
            found.append(f"kafka at {self.kafka}: {exc}")
        finally:
            consumer.close()
        try:
            with urllib.request.urlopen(f"{self.connect_url}/", timeout=5) as r:
                json.load(r)
        except OSError as exc:
            found.append(f"connect at {self.connect_url}: {exc}")
        return found


def one_row(cur: psycopg.Cursor[R]) -> R:
    """The row a query is known to return (fails the test when it returns none)."""
    row = cur.fetchone()
    assert row is not None, "the query returned no row"
    return row


@contextmanager
def consumer_at_end(stack: Stack, topic: str, partitions: int = 1) -> Iterator[Consumer]:
    """A consumer assigned to every partition of `topic` at its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": stack.kafka,
            "group.id": "test-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        assignment = []
        for p in range(partitions):
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assignment.append(TopicPartition(topic, p, high))
        consumer.assign(assignment)
        yield consumer
    finally:
        consumer.close()


def collect(
    consumer: Consumer,
    done: Callable[[list[Message]], bool],
    timeout_s: float = 60.0,
) -> list[Message]:
    """Poll until `done(messages)` holds or the bounded wait runs out (then fail)."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err:
            if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue  # the topic appears with its first event
            raise AssertionError(f"kafka error while waiting: {err}")
        messages.append(msg)
        if done(messages):
            return messages
    raise AssertionError(f"condition not met within {timeout_s}s; got {len(messages)} messages")


def payload(msg: Message) -> dict[str, Any] | None:
    raw = msg.value()
    if raw is None:
        return None
    doc = json.loads(raw)
    body: dict[str, Any] | None = doc["payload"] if isinstance(doc, dict) and "payload" in doc else doc
    return body


def event_payload(msg: Message) -> dict[str, Any]:
    """The payload of a change event (not a tombstone, which has none)."""
    body = payload(msg)
    assert body is not None, f"expected a change event, got a tombstone at offset {msg.offset()}"
    return body


def key_payload(msg: Message) -> Any:
    raw = msg.key()
    if raw is None:
        return None
    doc = json.loads(raw)
    return doc["payload"] if isinstance(doc, dict) and "payload" in doc else doc
