"""A preview started where a live group stands (`shadow --from-group`) holds what that group holds.

The live run retries its held events before anything new (a parent that lagged, a cascade's
children): a preview that started with none left out every row they write (trial 16: 151 keys
the live run then wrote were in no diff, and the review said 0 held at the end). The preview's
session table of held events starts as a copy of the live group's, under the preview's group;
the live group's rows are only read."""

from __future__ import annotations

from io import StringIO

import psycopg

from replicator.core.model import KafkaRef, Record, TableRef
from replicator.target import control
from replicator.target.holds import HeldRow, HoldStore
from replicator.target.shadow import ShadowClones
from tests.integration.pipeline import CONTROL, demo_plan, fresh_target
from tests.integration.stack import Stack

PART = ("demo.shop.orders", 1)


def held(offset: int) -> HeldRow:
    record = Record(KafkaRef(*PART, offset), b"{}", b"{}")
    return HeldRow(
        record,
        TableRef("sales", "order"),
        f"[{offset}]",
        TableRef("crm", "customer"),
        0,
        True,
        "23503",
        "waits",
        0.0,
    )


def test_a_preview_from_a_live_group_holds_what_that_group_holds(stack: Stack) -> None:
    dbname = fresh_target("heldseed")
    plan = demo_plan(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        control.ensure(conn, CONTROL)
        live = HoldStore(
            control.table(CONTROL, "held_event"), control.table(CONTROL, "row_version"), "live-g"
        )
        with conn.transaction():
            live.put(conn, [held(7), held(9)])
        for from_group, expected in (("live-g", 2), (None, 0), ("other-g", 0)):
            with psycopg.connect(stack.target_admin(dbname), autocommit=True) as session:
                clones = ShadowClones(plan, CONTROL, "shadow-g", "run-1", StringIO(), from_group)
                clones.prepare_session(session)
                preview = HoldStore(clones.holds, clones.versions, "shadow-g")
                preview.load_index(session, [PART])
                assert preview.count == expected, from_group
        live.load_index(conn, [PART])
        assert live.count == 2  # the live group's own rows stay as they were
