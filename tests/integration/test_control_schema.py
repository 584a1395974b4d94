"""The control schema against real PostgreSQL: a daemon's start beside a live member takes no lock on
the control tables when the schema is already this version's (a restarted daemon deadlocked with a
live member's batch, trial 7), an older schema is still upgraded; the error records' keys as verify
reads them (open, accepted, retried)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from replicator.core.model import TableRef
from replicator.target import control
from replicator.target.store import RETRIED, ControlStore
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


def test_error_keys_are_open_or_accepted_and_a_retried_record_explains_nothing(
    stack: Stack, dbname: str
) -> None:
    """What verify is told about error records: keys with an open record (the row's own or in
    `also`), keys whose every record the operator resolved (accepted), and not keys whose record
    `errors retry` applied (a difference there is a difference)."""
    records = [  # (target_table, key, also, resolution): resolution None is open
        ("s.t", '["open"]', None, None),
        ("s.t", '["both"]', None, None),
        ("s.t", '["both"]', None, "resolved by ops: later refused again"),
        ("s.t", '["ok"]', None, "resolved by ops: wrong at the source"),
        ("s.t", '["retried"]', None, f"{RETRIED}r1: applied, or a no-op where the row had moved on"),
        ("s.other", '["o"]', '[{"table": "s.t", "key": "[\\"also\\"]"}]', None),
        ("s.other", '["t-only"]', None, None),
    ]
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (target_table, key, also, message, resolution, resolved_at)"
                    " VALUES (%s, %s, %s, 'm', %s, CASE WHEN %s::text IS NULL THEN NULL ELSE now() END)"
                ).format(control.table(CONTROL, "error_record")),
                [(t, k, a, r, r) for t, k, a, r in records],
            )
        opened, accepted = ControlStore(conn, CONTROL).error_keys(TableRef("s", "t"))
    assert opened == {'["open"]', '["both"]', '["also"]'}
    assert accepted == {'["ok"]'}
