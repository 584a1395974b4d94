"""`target.control.ensure` against real PostgreSQL: a daemon's start beside a live member takes no
lock on the control tables when the schema is already this version's (a restarted daemon deadlocked
with a live member's batch, trial 7), and an older schema is still upgraded."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from replicator.target import control
from tests.integration.pipeline import CONTROL, fresh_target
from tests.integration.stack import Stack


@pytest.fixture
def dbname(stack: Stack) -> str:
    name = fresh_target("control")
    with psycopg.connect(stack.target_admin(name), autocommit=True) as conn:
        control.ensure(conn, CONTROL)
    return name


def test_a_start_beside_a_live_batch_runs_no_ddl_on_a_current_schema(stack: Stack, dbname: str) -> None:
    with (
        psycopg.connect(stack.target_admin(dbname)) as batch,
        psycopg.connect(stack.target_admin(dbname), autocommit=True) as starting,
    ):
        # a live member's batch: row locks on the held rows and checkpoints, uncommitted
        batch.execute(
            sql.SQL("LOCK TABLE {}, {} IN ROW EXCLUSIVE MODE").format(
                control.table(CONTROL, "held_event"), control.table(CONTROL, "checkpoint")
            )
        )
        starting.execute("SET lock_timeout = '2s'")  # the DDL would wait for the batch: fail instead
        control.ensure(starting, CONTROL)
        assert control.current(starting, CONTROL)
        batch.rollback()
        # the writer's session is not in autocommit: ensure leaves no transaction open there (its
        # batches would be savepoints of one transaction that never commits)
        control.ensure(batch, CONTROL)
        assert batch.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        batch.execute(
            sql.SQL("LOCK TABLE {}, {} IN ROW EXCLUSIVE MODE").format(
                control.table(CONTROL, "held_event"), control.table(CONTROL, "checkpoint")
            )
        )
        # the operator's `init` still runs the DDL, and waits for the batch like any DDL
        with pytest.raises(psycopg.errors.LockNotAvailable):
            control.ensure(starting, CONTROL, force=True)
        batch.rollback()


def test_a_schema_of_an_earlier_version_is_upgraded(stack: Stack, dbname: str) -> None:
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        # an earlier version: no version comment, a column added since missing
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS NULL").format(sql.Identifier(CONTROL)))
        held = control.table(CONTROL, "held_event")
        conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN awaits").format(held))
        assert not control.current(conn, CONTROL)
        control.ensure(conn, CONTROL)
        assert control.current(conn, CONTROL)
        columns = {
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
                " AND table_name = 'held_event'",
                (CONTROL,),
            ).fetchall()
        }
        assert "awaits" in columns
