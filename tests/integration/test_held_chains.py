"""Held rows whose parents will never be written, and held events that feed several tables.

- A chain of foreign keys whose root the spec filters out (account -> project -> task -> comment,
  the accounts hidden): once the group has applied everything, one retry turns the whole chain
  into error records, one per row. Before, each level waited for the retry after the one that made
  its parent an error record (a drain of 67-70 s in a new-user trial).
- One source event feeding two tables (a user -> account + profile), held because its profile
  waits for a plan: a project awaiting the user's *account* waits for that held event, rather
  than becoming an error record while the account is still to come.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from replicator.config import HoldSettings
from replicator.core.holding import CaptureMark
from replicator.core.intents import prepare
from replicator.core.mapping.compiler import compile_spec
from replicator.core.mapping.spec import load_spec_text
from replicator.core.model import Batch, BatchResult, ChangeEvent, KafkaRef, Op, SourcePosition
from replicator.pg.catalog import read_catalog
from tests.events import change
from tests.integration.pipeline import HandFed, fresh_target
from tests.integration.stack import Stack

SCHEMA = """
CREATE SCHEMA chain;
CREATE TABLE chain.plan (id int PRIMARY KEY);
CREATE TABLE chain.account (id int PRIMARY KEY);
CREATE TABLE chain.profile (id int PRIMARY KEY, plan_id int NOT NULL REFERENCES chain.plan (id));
CREATE TABLE chain.project (id int PRIMARY KEY, account_id int NOT NULL REFERENCES chain.account (id));
CREATE TABLE chain.task (id int PRIMARY KEY, project_id int NOT NULL REFERENCES chain.project (id));
CREATE TABLE chain.comment (id int PRIMARY KEY, task_id int NOT NULL REFERENCES chain.task (id));
GRANT USAGE ON SCHEMA chain TO replicator;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA chain TO replicator;
"""


def rule(name: str, source: str, columns: str, extra: str = "") -> str:
    return f"""- id: {name}
  source: app.{source}
  target: chain.{name}
  key: {{id: id}}
  delete: {{policy: hard}}
  truncate: {{policy: error}}
  columns: {{{columns}}}
{extra}"""


SPEC = "version: 1\ntopic_prefix: chain\ndefaults: {unmapped_source_columns: ignore}\ntables:\n" + "".join(
    [
        rule("plan", "plan", "id: {from: id}"),
        # a user feeds two tables: its account (not when hidden) and its profile
        rule("account", "user", "id: {from: id}", "  filter: {column: hidden, op: eq, value: false}\n"),
        rule("profile", "user", "id: {from: id}, plan_id: {from: plan_id}"),
        rule("project", "project", "id: {from: id}, account_id: {from: account_id}"),
        rule("task", "task", "id: {from: id}, project_id: {from: project_id}"),
        rule("comment", "comment", "id: {from: id}, task_id: {from: task_id}"),
    ]
)

TABLES = ("plan", "user", "project", "task", "comment")
TOPICS = [f"chain.app.{t}" for t in TABLES]
# Only the retries the test makes: no held row is retried because it waited long enough.
PATIENT = HoldSettings(retry_after_s=3600)


class Chain:
    """A fresh target with the chain's foreign keys, and one writer of the group on it. Every topic
    has one partition; a capture mark says everything committed by LSN 10,000 is at offsets below
    each topic's next offset (what Connect and Kafka say once the source is idle)."""

    def __init__(self, stack: Stack, holding: HoldSettings = PATIENT) -> None:
        self.admin = stack.target_admin(dbname := fresh_target("chain"))
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(SCHEMA)
            plan = compile_spec(load_spec_text(SPEC), read_catalog(conn, ["chain"]))
        self.offsets: dict[str, int] = {}
        self.lsn = 100
        self.fed = HandFed(stack, dbname, plan, "chain", holding, dict.fromkeys(TOPICS, 1), marks=self.marks)

    def marks(self) -> list[CaptureMark]:
        return [CaptureMark(10_000, {(t, 0): self.offsets.get(t, 0) for t in TOPICS}, taken_at=0)]

    def insert(self, table: str, **after: Any) -> ChangeEvent:
        topic = f"chain.app.{table}"
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        self.lsn += 10
        e = change(
            topic,
            Op.CREATE,
            f"app.{table}",
            offset=offset,
            position=SourcePosition(self.lsn, self.lsn),
            key={"id": after["id"]},
            after=after,
        )
        return e._replace(ref=KafkaRef(topic, 0, offset), raw_key=f"{table}/{after['id']}".encode())

    def apply(self, *events: ChangeEvent) -> BatchResult:
        """One batch of `events`; none: a retry of the held rows on their own."""
        for e in events:
            self.fed.events[e.ref] = e
        nexts = {(e.ref.topic, e.ref.partition): e.ref.offset + 1 for e in events}
        return self.fed.writer.apply(prepare(Batch(events=list(events), next_offsets=nexts), self.fed.plan))

    def backoff_passes(self, table: str | None = None) -> None:
        """Every held row (of `table`) has waited its backoff (the time, not slept)."""
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(
                "UPDATE replicator.held_event SET last_try_at = '-infinity'"
                " WHERE %s::text IS NULL OR target_table = %s",
                (table, table),
            )

    def state(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(held (table, key), error records (table, key, sqlstate))."""
        with psycopg.connect(self.admin) as conn:
            held = conn.execute(
                "SELECT target_table, key FROM replicator.held_event ORDER BY 1, 2"
            ).fetchall()
            errors = conn.execute(
                "SELECT target_table, key, sqlstate FROM replicator.error_record ORDER BY id"
            ).fetchall()
        return held, errors


@pytest.fixture
def chain(stack: Stack) -> Iterator[Chain]:
    world = Chain(stack)
    yield world
    world.fed.close()


def test_a_chain_under_a_filtered_out_root_becomes_error_records_in_one_retry(chain: Chain) -> None:
    hidden = chain.insert("user", id=1, plan_id=7, hidden=True)  # no account: the spec filters it out
    plan = chain.insert("plan", id=7)
    project = chain.insert("project", id=10, account_id=1)
    task = chain.insert("task", id=20, project_id=10)
    comment = chain.insert("comment", id=30, task_id=20)
    first = chain.apply(hidden, plan, project, task, comment)
    # nothing was applied before this batch: every row may still be waiting for lag
    assert (first.held, first.errors) == (3, [])
    chain.backoff_passes()
    retry = chain.apply()
    held, errors = chain.state()
    # the project's account is truly absent; so, now, are the task's project and the comment's task
    assert (held, errors) == (
        [],
        [
            ("chain.project", "[10]", "23503"),
            ("chain.task", "[20]", "23503"),
            ("chain.comment", "[30]", "23503"),
        ],
    ), "one retry per level of the chain"
    assert retry.released == 3


def test_a_row_awaiting_a_row_made_an_error_record_is_retried_next_not_after_its_backoff(
    chain: Chain,
) -> None:
    """The task arrives in the batch that makes its project an error record: its own partition is
    not yet past it (this batch moves it), so it stays held, and is judged at the next retry."""
    hidden = chain.insert("user", id=1, plan_id=7, hidden=True)
    chain.apply(chain.insert("plan", id=7), hidden, chain.insert("project", id=10, account_id=1))
    chain.backoff_passes()
    task = chain.apply(chain.insert("task", id=20, project_id=10))
    assert ([e.key for e in task.errors], task.held) == (["[10]"], 1)
    assert chain.fed.writer.retry_due(), "the task waits for its backoff"
    chain.apply()  # no backoff passed
    assert chain.state() == ([], [("chain.project", "[10]", "23503"), ("chain.task", "[20]", "23503")])


def test_a_row_awaiting_a_row_made_an_error_record_that_the_batch_had_no_room_for_is_retried_next(
    stack: Stack,
) -> None:
    """One held row retried per batch: the project's; its task, over the limit, is judged at the
    next retry, not after its backoff."""
    chain = Chain(stack, HoldSettings(retry_after_s=3600, retry_limit=1))
    try:
        hidden = chain.insert("user", id=1, plan_id=7, hidden=True)
        chain.apply(
            chain.insert("plan", id=7),
            hidden,
            chain.insert("project", id=10, account_id=1),
            chain.insert("task", id=20, project_id=10),
        )
        chain.backoff_passes("chain.project")
        assert [e.key for e in chain.apply().errors] == ["[10]"]
        assert chain.state()[0] == [("chain.task", "[20]")]
        assert chain.fed.writer.retry_due(), "the task waits for its backoff"
        chain.apply()  # no backoff passed
        assert chain.state() == ([], [("chain.project", "[10]", "23503"), ("chain.task", "[20]", "23503")])
    finally:
        chain.fed.close()


def test_a_row_awaiting_another_target_row_of_a_held_event_waits_for_it(chain: Chain) -> None:
    plan = chain.insert("plan", id=7)  # in Kafka, not applied yet: its topic lags
    user = chain.insert("user", id=1, plan_id=7, hidden=False)  # account 1 and profile 1 (plan 7)
    assert chain.apply(user).held_by_table == {"chain.profile": 1}  # the profile's plan is late
    chain.apply(chain.insert("project", id=10, account_id=1))  # its account is held with the user
    chain.backoff_passes()
    chain.apply()  # the user's and the project's partitions are covered now: the project is judged
    held, errors = chain.state()
    assert (held, errors) == ([("chain.profile", "[1]"), ("chain.project", "[10]")], []), (
        "the project's account was taken for absent: its event is held for the profile"
    )
    chain.apply(plan)  # the user's event lands, and the project awaiting its account with it
    with psycopg.connect(chain.admin) as conn:
        landed = conn.execute(
            "SELECT (SELECT count(*) FROM chain.account), (SELECT count(*) FROM chain.project)"
        ).fetchone()
    assert (chain.state(), landed) == (([], []), (1, 1))
