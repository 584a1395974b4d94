"""The batch writer against the real target: bad rows isolated by bisection, and one source event
applied to all its target tables or to none (matrix 17).

- 3 rows of 5,000 that violate a CHECK: the 4,997 others land in one batch, the 3 become error
  records, and the writer needs about 2·k·log2(n) statements for it, not n.
- A customer event feeds crm.customer and crm.customer_pii; the second refuses it (a CHECK the
  test adds): the first is rolled back too, and one error record names both targets.
- An insert and an update that leaves a TOASTed column unchanged, folded into one refused row:
  each event gets its own error record (the insert is needed to build the row again).
- A child whose parent another instance applies while the child's batch runs (between its write
  and the judgement) is held, not turned into an error record.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from replicator import failpoints
from replicator.config import HoldSettings
from replicator.core.errors import Fatal
from replicator.core.intents import prepare
from replicator.core.mapping.plan import Plan
from replicator.core.model import (
    UNAVAILABLE,
    Batch,
    BatchResult,
    ChangeEvent,
    KafkaRef,
    Op,
    SourcePosition,
    TableRef,
)
from replicator.target.live import LiveTables
from replicator.target.writer import BatchWriter, ErrorPolicy
from tests.integration.pipeline import CONTROL, HandFed, demo_plan, fresh_target, live_writer, writer_target
from tests.integration.stack import Stack, one_row


def event(topic: str, table: str, offset: int, after: dict[str, Any]) -> ChangeEvent:
    return ChangeEvent(
        ref=KafkaRef(topic, 0, offset),
        op=Op.CREATE,
        table=TableRef.parse(table),
        key=None,
        before=None,
        after=after,
        position=SourcePosition(1000, 2000 + offset),
        snapshot=False,
        ts_ms=0,
        raw_key=b"k",
        raw_value=b"v",
    )


def product(i: int, price: str) -> dict[str, Any]:
    return {
        "sku": f"BIS-{i:05d}",
        "name": f"product {i}",
        "description": None,
        "price": Decimal(price),
        "weight_grams": None,
        "image": None,
    }


def test_three_bad_rows_of_five_thousand_cost_about_k_log_n_statements(stack: Stack) -> None:
    dbname = fresh_target("bisect")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.products"
    bad = {17, 2500, 4999}
    events = [
        event(topic, "shop.products", i, product(i, "-1.00" if i in bad else "9.99")) for i in range(5000)
    ]
    writer = live_writer(stack, dbname, plan, "bisect", f"run-{uuid.uuid4().hex[:6]}")
    result = writer.apply(prepare(Batch(events=events, next_offsets={(topic, 0): 5000}), plan))
    writer.close()
    assert sorted(str(f.key) for f in result.errors) == sorted(f'["BIS-{i:05d}"]' for i in bad)
    assert {f.sqlstate for f in result.errors} == {"23514"}
    assert result.attempts <= 2 * len(bad) * math.ceil(math.log2(5000)) + 1, result.attempts
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        (n,) = one_row(conn.execute("SELECT count(*) FROM catalog.product"))
        (errors,) = one_row(
            conn.execute("SELECT count(*) FROM replicator.error_record WHERE sqlstate = '23514'")
        )
    assert (n, errors) == (4997, 3)


def customer(i: int, email: str) -> dict[str, Any]:
    return {
        "id": i,
        "email": email,
        "full_name": f"Person {i}",
        "country": "DE",
        "tier": "gold",
        "tags": None,
        "profile": None,
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }


def test_a_row_the_filter_leaves_out_is_counted_filtered_not_deleted(stack: Stack) -> None:
    """The batch counts (the daemon's `batch` line, its totals and `events_applied_total`): a
    snapshot row or an insert the filter leaves out is `filtered` (shadow: `noop`), whatever the
    delete policy; only the source's own delete counts as `delete` / `soft_delete`."""
    dbname = fresh_target("filtered")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.customers"
    test_account = {**customer(1, "t@example.com"), "country": "XX"}  # the filter leaves "XX" out
    gone = customer(3, "gone@example.com")
    events = [
        event(topic, "shop.customers", 0, test_account)._replace(op=Op.READ, snapshot=True),
        event(topic, "shop.customers", 1, {**test_account, "id": 4}),
        event(topic, "shop.customers", 2, customer(2, "ok@example.com")),
        event(topic, "shop.customers", 3, {})._replace(op=Op.DELETE, before=gone, after=None),
    ]
    writer = live_writer(stack, dbname, plan, "filtered", f"run-{uuid.uuid4().hex[:6]}")
    result = writer.apply(prepare(Batch(events=events, next_offsets={(topic, 0): 4}), plan))
    writer.close()
    assert dict(result.applied) == {
        "crm.customer:filtered": 2,  # soft delete policy
        "crm.customer_pii:filtered": 2,  # hard delete policy
        "crm.customer:upsert": 1,
        "crm.customer_pii:upsert": 1,
        "crm.customer:soft_delete": 1,
        "crm.customer_pii:delete": 1,
    }


def test_an_event_one_of_whose_targets_refuses_it_is_applied_to_none(stack: Stack) -> None:
    dbname = fresh_target("atomic")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute("ALTER TABLE crm.customer_pii ADD CONSTRAINT no_zz CHECK (email_masked NOT LIKE '%zz%')")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.customers"
    events = [
        event(topic, "shop.customers", 0, customer(1, "ok@example.com")),
        event(topic, "shop.customers", 1, customer(2, "zzzzzz@example.zz")),
        event(topic, "shop.customers", 2, customer(3, "fine@example.com")),
    ]
    writer = live_writer(stack, dbname, plan, "atomic", f"run-{uuid.uuid4().hex[:6]}")
    result = writer.apply(prepare(Batch(events=events, next_offsets={(topic, 0): 3}), plan))
    writer.close()
    (failure,) = result.errors
    assert (failure.target, failure.key, failure.sqlstate) == (
        TableRef("crm", "customer_pii"),
        "[2]",
        "23514",
    )
    assert (
        failure.also == (("crm.customer", "[2]"),) and "not applied to crm.customer either" in failure.message
    )
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        customers = conn.execute("SELECT customer_id FROM crm.customer ORDER BY 1").fetchall()
        pii = conn.execute("SELECT customer_id FROM crm.customer_pii ORDER BY 1").fetchall()
        (also,) = one_row(conn.execute("SELECT also FROM replicator.error_record"))
    assert customers == pii == [(1,), (3,)]  # neither table holds customer 2
    assert also == [{"table": "crm.customer", "key": "[2]"}]


def test_thirty_percent_bad_rows_are_isolated_by_the_server_side_loop(stack: Stack) -> None:
    """Dense failures: every bad row becomes an error record, every good row lands, and the
    writer needs about one call per 256 rows (the row-by-row loop runs in PostgreSQL)."""
    dbname = fresh_target("dense")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.products"
    bad = {i for i in range(2000) if i % 10 < 3}
    events = [
        event(topic, "shop.products", i, product(i, "-1.00" if i in bad else "9.99")) for i in range(2000)
    ]
    writer = live_writer(stack, dbname, plan, "dense", f"run-{uuid.uuid4().hex[:6]}")
    result = writer.apply(prepare(Batch(events=events, next_offsets={(topic, 0): 2000}), plan))
    writer.close()
    assert sorted(str(f.key) for f in result.errors) == sorted(f'["BIS-{i:05d}"]' for i in bad)
    assert {(f.sqlstate, f.rule_id) for f in result.errors} == {("23514", "product")}
    assert result.attempts <= 2 * math.ceil(2000 / 256) + 1, result.attempts
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        skus = [r[0] for r in conn.execute("SELECT sku FROM catalog.product ORDER BY 1").fetchall()]
    assert skus == [f"BIS-{i:05d}" for i in range(2000) if i not in bad]


def test_an_older_event_is_skipped_and_counted_for_its_target_table(stack: Stack) -> None:
    """The skipped count carries its table (the metrics label it): a product event older than the
    stored version writes nothing and counts once for catalog.product."""
    dbname = fresh_target("skipped")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.products"
    writer = live_writer(stack, dbname, plan, "skipped", f"run-{uuid.uuid4().hex[:6]}")
    newer = event(topic, "shop.products", 5, product(1, "2.00"))
    older = event(topic, "shop.products", 4, product(1, "1.00"))
    first = writer.apply(prepare(Batch(events=[newer], next_offsets={(topic, 0): 6}), plan))
    second = writer.apply(prepare(Batch(events=[older], next_offsets={(topic, 0): 6}), plan))
    writer.close()
    assert not first.skipped_by_table and first.applied == {"catalog.product:upsert": 1}
    assert second.skipped_by_table == {"catalog.product:older": 1} and not second.applied
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        (cents,) = one_row(conn.execute("SELECT price_cents FROM catalog.product WHERE sku = 'BIS-00001'"))
    assert cents == 200


def test_an_update_without_its_toasted_column_for_an_absent_row_names_the_reload(stack: Stack) -> None:
    """An update that leaves a TOASTed column unchanged cannot build a row the target lacks (trial 9:
    a row coming back into a filter): one error record whose fix is the command that reads the row
    whole again."""
    dbname = fresh_target("toastabsent")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.products"
    update = event(topic, "shop.products", 0, {**product(1, "2.00"), "description": UNAVAILABLE})
    writer = live_writer(stack, dbname, plan, "toastabsent", f"run-{uuid.uuid4().hex[:6]}")
    result = writer.apply(
        prepare(Batch(events=[update._replace(op=Op.UPDATE)], next_offsets={(topic, 0): 1}), plan)
    )
    writer.close()
    assert [(f.ref.offset, f.key) for f in result.errors] == [(0, '["BIS-00001"]')]
    assert "fix: `replicator reload --table shop.products`" in result.errors[0].message


def test_an_update_without_its_toasted_column_after_the_rows_delete_keeps_no_stale_value(
    stack: Stack,
) -> None:
    """Trial 9: a row's delete that did not take the target row away (there: held for the row's
    children; here folded into the update after it in one batch), then an update that left its
    TOASTed column unchanged. Keeping the target's value would be silently wrong: every event of
    the row is an error record naming the reload, and the target row is left as it was."""
    dbname = fresh_target("toaststale")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.products"
    writer = live_writer(stack, dbname, plan, "toaststale", f"run-{uuid.uuid4().hex[:6]}")
    insert = event(topic, "shop.products", 0, {**product(1, "2.00"), "description": "old text"})
    assert writer.apply(prepare(Batch(events=[insert], next_offsets={(topic, 0): 1}), plan)).errors == []
    delete = event(topic, "shop.products", 1, product(1, "2.00"))._replace(
        op=Op.DELETE, after=None, before={"sku": "BIS-00001"}
    )
    update = event(topic, "shop.products", 2, {**product(1, "3.00"), "description": UNAVAILABLE})
    result = writer.apply(
        prepare(Batch(events=[delete, update._replace(op=Op.UPDATE)], next_offsets={(topic, 0): 3}), plan)
    )
    writer.close()
    assert sorted(f.ref.offset for f in result.errors) == [1, 2]
    assert all("older than the row's" in f.message for f in result.errors)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        row = conn.execute("SELECT description, price_cents FROM catalog.product").fetchall()
    assert row == [("old text", 200)]


def test_every_event_folded_into_a_refused_row_gets_its_own_error_record(stack: Stack) -> None:
    dbname = fresh_target("folded")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.products"
    insert = event(topic, "shop.products", 0, {**product(1, "-1.00"), "description": "x" * 5000})
    update = event(topic, "shop.products", 1, {**product(1, "-2.00"), "description": UNAVAILABLE})
    update = update._replace(op=Op.UPDATE)
    writer = live_writer(stack, dbname, plan, "folded", f"run-{uuid.uuid4().hex[:6]}")
    result = writer.apply(prepare(Batch(events=[insert, update], next_offsets={(topic, 0): 2}), plan))
    writer.close()
    assert sorted((f.ref.offset, f.key, f.sqlstate) for f in result.errors) == [
        (0, '["BIS-00001"]', "23514"),
        (1, '["BIS-00001"]', "23514"),
    ]
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        stored = conn.execute(
            "SELECT kafka_offset, key, raw_value FROM replicator.error_record ORDER BY kafka_offset"
        ).fetchall()
    assert [(o, k, bytes(v)) for o, k, v in stored] == [
        (0, '["BIS-00001"]', b"v"),
        (1, '["BIS-00001"]', b"v"),
    ]


def order(i: int, customer_id: int) -> dict[str, Any]:
    return {
        "id": i,
        "customer_id": customer_id,
        "status": "placed",
        "placed_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "total": Decimal("1.00"),
        "note": None,
    }


# A partition's stored progress: (group, topic, next offset, commit LSN), partition 0.
CHECKPOINT = (
    "INSERT INTO replicator.checkpoint (group_id, topic, partition, next_offset, commit_lsn)"
    " VALUES (%s, %s, 0, %s, %s) ON CONFLICT (group_id, topic, partition)"
    " DO UPDATE SET next_offset = EXCLUDED.next_offset, commit_lsn = EXCLUDED.commit_lsn"
)


def orders_of_customers(
    stack: Stack, group: str, holding: HoldSettings | None = None
) -> tuple[str, Plan, BatchWriter]:
    """A fresh demo target whose orders reference their customer (an FK the demo target lacks) and
    a connected live writer of `group` on it, both topics' partition counts known (one each).
    Returns (admin conninfo, plan, writer)."""
    dbname = fresh_target(group)
    admin = stack.target_admin(dbname)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            'ALTER TABLE sales."order" ADD CONSTRAINT order_customer'
            " FOREIGN KEY (customer_id) REFERENCES crm.customer"
        )
    plan = demo_plan(stack, dbname)
    run_id = f"run-{uuid.uuid4().hex[:6]}"
    writer = BatchWriter(
        writer_target(stack, dbname),
        LiveTables(plan, CONTROL, group, run_id),
        CONTROL,
        group,
        run_id,
        partition_counts={"demo.shop.customers": 1, "demo.shop.orders": 1},
        holding=holding,
    )
    writer.connect()
    return admin, plan, writer


def apply_order_of_customer_5(writer: BatchWriter, plan: Plan) -> tuple[ChangeEvent, BatchResult]:
    """One batch: order 1 of customer 5, at source position (5000, 5001), offset 10."""
    child = event("demo.shop.orders", "shop.orders", 10, order(1, 5))._replace(
        position=SourcePosition(5000, 5001)
    )
    result = writer.apply(prepare(Batch(events=[child], next_offsets={("demo.shop.orders", 0): 11}), plan))
    return child, result


def test_a_child_whose_parent_lands_during_its_batch_is_held_not_errored(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The judgement uses what the group had applied before the batch's writes: read after them,
    a parent committed by another instance in between looks 'applied, yet absent'."""
    group = "race"
    admin, plan, writer = orders_of_customers(stack, group)
    with psycopg.connect(admin, autocommit=True) as conn:  # the order's own partition is covered
        conn.execute(CHECKPOINT, (group, "demo.shop.orders", 10, 10_000))
        conn.execute(CHECKPOINT, (group, "demo.shop.customers", 0, 0))

    def parent_lands(name: str) -> None:
        """Another instance applies the parent and moves its checkpoint past the order (mid_batch:
        after the writes, before the judgement)."""
        if name != "mid_batch":
            return
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO crm.customer (customer_id, email, first_name, tier_code, signed_up_at)"
                " VALUES (5, 'p@example.com', 'P', 'G', now())"
            )
            conn.execute(CHECKPOINT, (group, "demo.shop.customers", 5, 10_000))

    monkeypatch.setattr(failpoints, "hit", parent_lands)
    _, result = apply_order_of_customer_5(writer, plan)
    writer.close()
    assert result.errors == [] and result.held == 1
    with psycopg.connect(admin) as conn:
        (records,) = one_row(conn.execute("SELECT count(*) FROM replicator.error_record"))
        (held,) = one_row(conn.execute("SELECT count(*) FROM replicator.held_event"))
    assert (records, held) == (0, 1)


@pytest.mark.parametrize("held_parent", [True, False], ids=["its-parent-held", "another-parent-held"])
def test_a_child_waits_while_its_own_parent_row_is_held_not_while_any_row_of_its_table_is(
    stack: Stack, held_parent: bool
) -> None:
    """Trial 9's livelock: account deletes held for their projects, projects held for accounts a
    filter left out; each table held rows, so no row of either was ever judged and `drain` never
    ended. A child whose parent key is known waits while that row is held; another held row of the
    parent table does not keep it from its judgement (here: its parent is absent, every partition
    feeding it is past the child, an error record)."""
    group = "heldrow"
    # the held customer row is not retried here
    admin, plan, writer = orders_of_customers(stack, group, HoldSettings(retry_after_s=3600))
    with psycopg.connect(admin, autocommit=True) as conn:
        for topic in ("demo.shop.orders", "demo.shop.customers"):  # both past the child's position
            conn.execute(CHECKPOINT, (group, topic, 10, 10_000))
        # a customer row held by the group (e.g. its delete, waiting for other rows)
        conn.execute(
            "INSERT INTO replicator.held_event (group_id, topic, partition, kafka_offset, target_table,"
            " key, blocked_by, judged_at, positioned) VALUES (%s, 'demo.shop.customers', 0, 3,"
            " 'crm.customer', %s, 'catalog.product', 0, true)",
            (group, "[5]" if held_parent else "[7]"),
        )
    child, result = apply_order_of_customer_5(writer, plan)
    writer.close()
    if held_parent:
        assert (result.held, result.errors) == (1, [])
    else:
        assert result.held == 0
        assert [(e.ref, e.sqlstate, e.key) for e in result.errors] == [(child.ref, "23503", "[1]")]


class Products(HandFed):
    """catalog.product with a unique title, fed by hand-built events on several partitions."""

    topic = "demo.shop.products"

    def __init__(self, stack: Stack, name: str) -> None:
        self.dbname = fresh_target(name)
        self.admin = stack.target_admin(self.dbname)
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute("ALTER TABLE catalog.product ADD CONSTRAINT product_title_key UNIQUE (title)")
        super().__init__(stack, self.dbname, demo_plan(stack, self.dbname), name)
        self.offsets: dict[int, int] = {}

    def event(
        self, partition: int, commit: int, lsn: int, sku: str, title: str | None, **values: Any
    ) -> ChangeEvent:
        """The next event of `sku` (on its own partition) at source position (commit, lsn); no
        title: a delete."""
        offset = self.offsets.get(partition, 0)
        self.offsets[partition] = offset + 1
        row = {**product(0, "1.00"), "sku": sku, "name": title, **values}
        return ChangeEvent(
            ref=KafkaRef(self.topic, partition, offset),
            op=Op.UPDATE if title is not None else Op.DELETE,
            table=TableRef.parse("shop.products"),
            key={"sku": sku},
            before=None if title is not None else {"sku": sku},
            after=row if title is not None else None,
            position=SourcePosition(commit, lsn),
            snapshot=False,
            ts_ms=0,
            raw_key=sku.encode(),
            raw_value=b"v",
        )

    def rows(self) -> tuple[dict[str, str], list[tuple[str, str, str]], int]:
        """(title per sku, held (key, sqlstate, message), error records)."""
        with psycopg.connect(self.admin) as conn:
            titles: dict[str, str] = dict(
                conn.execute("SELECT sku, title FROM catalog.product ORDER BY 1").fetchall()
            )
            held = conn.execute(
                "SELECT key, sqlstate, message FROM replicator.held_event ORDER BY key, kafka_offset"
            ).fetchall()
            (errors,) = one_row(conn.execute("SELECT count(*) FROM replicator.error_record"))
        return titles, held, errors


def test_a_held_swap_step_that_no_longer_fits_does_not_block_the_rows_later_events(stack: Stack) -> None:
    """A unique title passed around three rows, each on its own partition: A and B swap (T2), then
    B's old value goes to C (T3), then B is deleted (T4). Lag applies C's T3 first, then A's T2,
    then B's T2 step alone (held: C took 'a' meanwhile), then the rest of B. B's held step can
    never fit again (C keeps 'a'; the source left that state at T3): B's later events, its delete
    included, must apply anyway, and A, waiting for B's 'b', lands at the next retry. Before the
    fix, B's event-by-event replay stopped at that step for good: B, deleted in the source,
    stayed in the target, and A stayed held behind it (the fleet trial's symptom)."""
    w = Products(stack, "swapdel")
    a0, b0, c0 = (
        w.event(p, 100, 101 + p, sku, title)
        for p, sku, title in ((0, "A", "a"), (1, "B", "b"), (2, "C", "c"))
    )
    a1, b1, a2 = (
        w.event(0, 200, 201, "A", "tA"),
        w.event(1, 200, 202, "B", "a"),
        w.event(0, 200, 203, "A", "b"),
    )
    b2, c1, b3 = (
        w.event(1, 300, 301, "B", "tB"),
        w.event(2, 300, 302, "C", "a"),
        w.event(1, 300, 303, "B", "c"),
    )
    b4 = w.event(1, 400, 401, "B", None)
    w.apply(a0, b0, c0)
    assert w.apply(c1).held == 1  # 'a' is still A's
    assert w.apply(a1, a2).held == 3  # 'b' is still B's (C retried: still A's 'a')
    assert w.apply(b1).held == 3  # B's T2 step: 'a' is A's; then A's replay moves it on, C takes 'a'
    assert w.rows()[0] == {"A": "tA", "B": "b", "C": "a"}
    w.apply(b2, b3, b4)  # B's held T2 step never fits again: its later events go on regardless
    titles, held, errors = w.rows()
    assert (titles, [k for k, _, _ in held], errors) == ({"A": "tA", "C": "a"}, ['["A"]', '["A"]'], 0), held
    w.apply(w.event(3, 500, 501, "D", "d"))  # a later product batch retries A: 'b' is free now
    w.close()
    assert w.rows() == ({"A": "b", "C": "a", "D": "d"}, [], 0)


def test_a_row_refused_by_a_unique_value_that_never_moves_becomes_an_error_record(stack: Stack) -> None:
    """Trial 18: a new product taking the title another product keeps for good, held while the
    table's other partition lagged, then waited for "any row of its table" with its own held event
    among them, for good: `drain` timed out and no error record said why. Once both partitions are
    past it, it is one error record (23505), held no more, and the rows after it land."""
    w = Products(stack, "uniqself")
    judged = HandFed(stack, w.dbname, w.plan, "uniqself", HoldSettings(retry_after_s=0.001), {w.topic: 2})
    try:
        judged.apply(w.event(0, 100, 101, "A", "a"))
        assert judged.apply(w.event(1, 200, 201, "X", "a")).held == 1  # partition 0 not past it yet
        judged.apply(w.event(0, 300, 301, "B", "b"), w.event(1, 300, 302, "Y", "y"))  # both past it now
        later = [w.event(0, 400, 401, "C", "c")]  # judged by the checkpoints read before a batch
        judged.events.update({e.ref: e for e in later})
        nexts = {(e.ref.topic, e.ref.partition): e.ref.offset + 1 for e in later}
        result = judged.writer.apply(prepare(Batch(events=later, next_offsets=nexts), judged.plan))
        assert [(e.sqlstate, e.key) for e in result.errors] == [("23505", '["X"]')], result.errors
        assert w.rows() == ({"A": "a", "B": "b", "C": "c", "Y": "y"}, [], 1)
    finally:
        judged.close()
        w.close()


def test_a_swap_whose_steps_two_members_hold_lands_in_either_members_next_batch(stack: Stack) -> None:
    """A and B swap titles in one transaction (A via a temporary title), A's partition owned by
    one member, B's by another. Each member applies its own steps first and holds them (the
    other row still has the title). The next batch writing the table (here the second member's)
    retries its held step and adopts the other member's held steps: replayed event by event in
    source order, the swap lands. Before, each member retried only its own partitions' rows and
    both steps stayed held until one member owned both partitions."""
    w = Products(stack, "swapsplit")
    other = HandFed(stack, w.dbname, w.plan, "swapsplit", HoldSettings(retry_after_s=3600))
    try:
        w.apply(w.event(0, 100, 101, "A", "a"), w.event(1, 100, 102, "B", "b"))
        a1, a2 = w.event(0, 200, 201, "A", "tA"), w.event(0, 200, 203, "A", "b")
        assert w.apply(a1, a2).held == 2  # 'b' is still B's
        assert other.apply(w.event(1, 200, 202, "B", "a")).held == 1  # 'a' is still A's
        other.events.update(w.events)  # the other member's held records, to map them again
        landed = other.apply(w.event(1, 300, 301, "D", "d"))
        assert (landed.held, landed.released) == (0, 3)
        assert w.rows() == ({"A": "b", "B": "a", "D": "d"}, [], 0)
    finally:
        other.close()
        w.close()


def test_a_held_insert_whose_value_was_taken_lands_whole_with_its_toast_skipping_update(
    stack: Stack,
) -> None:
    """D is inserted with title 'x' (T1) and renamed 'y' by an update that leaves its TOASTed
    description unchanged (T2); then E takes 'x' (T3). E's partition runs ahead, so D's insert
    is refused and held; when D's update arrives, the insert still cannot fit (E keeps 'x'), yet
    the update must land with the insert's description (it completes the held insert), never be
    refused as 'row absent' (an error record for a valid row) nor stay held behind the insert."""
    w = Products(stack, "swaptoast")
    body = "d" * 5000
    d1 = w.event(0, 100, 101, "D", "x", description=body)
    d2 = w.event(0, 200, 201, "D", "y", description=UNAVAILABLE)
    e1 = w.event(1, 300, 301, "E", "x")
    w.apply(e1)
    assert w.apply(d1).held == 1  # 'x' is E's
    w.apply(d2)
    w.close()
    assert w.rows() == ({"D": "y", "E": "x"}, [], 0)
    with psycopg.connect(w.admin) as conn:
        (description,) = one_row(conn.execute("SELECT description FROM catalog.product WHERE sku = 'D'"))
    assert description == body


def test_the_row_loop_is_created_again_after_the_transaction_that_created_it_rolled_back(
    stack: Stack,
) -> None:
    """Trial 2: a daemon halted under load with `function pg_temp.replicator_rows_...() does not
    exist (SQLSTATE 42883)` after a deadlock retry. The row-by-row loop is a session-local function
    created inside the batch transaction and remembered per session; when that transaction is
    rolled back (a deadlock, then a new session that Python gave the id of the closed one, or a
    halted batch on a kept session), the function is gone but was still remembered, and the next
    batch with a bad row called it: a Fatal halt instead of an error record. Here: a halted batch
    creates the loop and rolls back, then the same batch under `record` needs the loop again."""
    dbname = fresh_target("loopgone")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.products"
    bad = {3, 7}
    events = [
        event(topic, "shop.products", i, product(i, "-1.00" if i in bad else "9.99")) for i in range(20)
    ]
    writer = live_writer(stack, dbname, plan, "loopgone", f"run-{uuid.uuid4().hex[:6]}")
    writer.policy = ErrorPolicy("halt")
    with pytest.raises(Fatal, match="on-error=halt"):
        writer.apply(prepare(Batch(events=events, next_offsets={(topic, 0): 20}), plan))
    writer.policy = ErrorPolicy("record")
    result = writer.apply(prepare(Batch(events=events, next_offsets={(topic, 0): 20}), plan))
    writer.close()
    assert sorted(str(f.key) for f in result.errors) == sorted(f'["BIS-{i:05d}"]' for i in bad)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        (n,) = one_row(conn.execute("SELECT count(*) FROM catalog.product"))
    assert n == 18


def test_a_value_the_stage_cannot_parse_is_an_error_record_not_a_halt(stack: Stack) -> None:
    """Trial 4: with the connector's decimal.handling.mode=string, Debezium spells numeric
    Infinity `POSITIVE_INFINITY`; the stage's COPY refused that text, which failed the
    row-by-row loop's staging too, and the daemon halted on every restart. Now such a chunk is
    staged row by row: the bad rows are error records, the others land. (Here: text that is not
    bytea, passed through to the bytea column `image`.)"""
    dbname = fresh_target("unparsed")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.products"
    bad = {2, 11}
    events = [
        event(
            topic,
            "shop.products",
            i,
            {**product(i, "9.99"), **({"image": "\\zz NOT BYTEA"} if i in bad else {})},
        )
        for i in range(20)
    ]
    writer = live_writer(stack, dbname, plan, "unparsed", f"run-{uuid.uuid4().hex[:6]}")
    result = writer.apply(prepare(Batch(events=events, next_offsets={(topic, 0): 20}), plan))
    writer.close()
    assert sorted(str(f.key) for f in result.errors) == sorted(f'["BIS-{i:05d}"]' for i in bad)
    assert {f.sqlstate for f in result.errors} == {"22P02"}
    assert all("bytea" in f.message for f in result.errors), [f.message for f in result.errors]
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        skus = [r[0] for r in conn.execute("SELECT sku FROM catalog.product ORDER BY 1").fetchall()]
    assert skus == [f"BIS-{i:05d}" for i in range(20) if i not in bad]


def at(partition: int, offset: int, op: Op, after: dict[str, Any] | None, lsn: int) -> ChangeEvent:
    return ChangeEvent(
        ref=KafkaRef("demo.shop.products", partition, offset),
        op=op,
        table=TableRef.parse("shop.products"),
        key=None,
        before=None,
        after=after,
        position=SourcePosition(lsn, lsn + 1),
        snapshot=False,
        ts_ms=0,
        raw_key=b"k",
        raw_value=b"v",
    )


def test_an_insert_committed_before_a_truncate_is_not_applied_after_it(stack: Stack) -> None:
    """A source TRUNCATE arrives on one partition; an insert the source committed before it, on a
    partition applied after it (an instance killed or behind), must not bring its row back (trial
    2: 300 rows, TRUNCATE, 5 rows, one of two instances down: 113 rows in the target, 5 in the
    source). Fails without the table's truncate barrier."""
    dbname = fresh_target("truncorder")
    plan = demo_plan(stack, dbname)
    writer = live_writer(stack, dbname, plan, "truncorder", f"run-{uuid.uuid4().hex[:6]}")
    try:
        truncate = at(0, 0, Op.TRUNCATE, None, lsn=5000)  # partition 0 is applied first
        writer.apply(prepare(Batch(events=[truncate], next_offsets={("demo.shop.products", 0): 1}), plan))
        older = at(1, 0, Op.CREATE, product(1, "9.99"), lsn=4000)  # committed before the truncate
        newer = at(1, 1, Op.CREATE, product(2, "9.99"), lsn=6000)  # committed after it
        batch = Batch(events=[older, newer], next_offsets={("demo.shop.products", 1): 2})
        writer.apply(prepare(batch, plan))
    finally:
        writer.close()
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        skus = [r[0] for r in conn.execute("SELECT sku FROM catalog.product ORDER BY 1").fetchall()]
    assert skus == ["BIS-00002"]  # the source holds only the row inserted after the truncate


@pytest.mark.parametrize("same_batch", [False, True])
def test_a_truncate_applied_late_spares_rows_written_after_it(stack: Stack, same_batch: bool) -> None:
    """The other way round: a partition ahead of the truncate's has applied a row the source wrote
    after the truncate (and one written before it); the late truncate removes only the older
    row, also when both come in the truncate's own batch. A TRUNCATE TABLE would have lost the
    newer row."""
    dbname = fresh_target("trunclate")
    plan = demo_plan(stack, dbname)
    writer = live_writer(stack, dbname, plan, "trunclate", f"run-{uuid.uuid4().hex[:6]}")
    older = at(1, 0, Op.CREATE, product(1, "9.99"), lsn=4000)  # committed before the truncate
    newer = at(1, 1, Op.CREATE, product(2, "9.99"), lsn=6000)  # committed after it
    truncate = at(0, 0, Op.TRUNCATE, None, lsn=5000)  # its partition lags
    try:
        if same_batch:
            batch = Batch(
                events=[older, newer, truncate],
                next_offsets={("demo.shop.products", 1): 2, ("demo.shop.products", 0): 1},
            )
            result = writer.apply(prepare(batch, plan))
        else:
            writer.apply(
                prepare(Batch(events=[older, newer], next_offsets={("demo.shop.products", 1): 2}), plan)
            )
            result = writer.apply(
                prepare(Batch(events=[truncate], next_offsets={("demo.shop.products", 0): 1}), plan)
            )
    finally:
        writer.close()
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        skus = [r[0] for r in conn.execute("SELECT sku FROM catalog.product ORDER BY 1").fetchall()]
    assert skus == ["BIS-00002"]
    assert result.applied.get("catalog.product:truncate_spared") == 1


def test_a_batch_after_the_flip_writes_nothing_and_halts(stack: Stack) -> None:
    """A forward batch that meets `authority = target` (a cutover flipped) raises a Fatal before
    its first write: the new primary keeps its row. (An idle daemon learns of the flip from its
    heartbeat: tests/integration/test_cutover.py.)"""
    dbname = fresh_target("flipped")
    plan = demo_plan(stack, dbname)
    topic = "demo.shop.products"
    writer = live_writer(stack, dbname, plan, "flipped", f"run-{uuid.uuid4().hex[:6]}")
    first = event(topic, "shop.products", 0, product(1, "1.00"))
    writer.apply(prepare(Batch(events=[first], next_offsets={(topic, 0): 1}), plan))
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute("UPDATE replicator.authority SET authority = 'target', cutover_id = 'c-test'")
    later = event(topic, "shop.products", 1, product(1, "2.00"))
    with pytest.raises(Fatal, match=r"the target is authoritative since .* \(cutover c-test\)"):
        writer.apply(prepare(Batch(events=[later], next_offsets={(topic, 0): 2}), plan))
    writer.close()
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        (cents,) = one_row(conn.execute("SELECT price_cents FROM catalog.product WHERE sku = 'BIS-00001'"))
        stored = conn.execute("SELECT next_offset FROM replicator.checkpoint").fetchall()
    assert cents == 100 and stored == [(1,)]
