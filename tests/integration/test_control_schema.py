"""The control schema against real PostgreSQL: a daemon's start beside a live member takes no lock on
the control tables when the schema is already this version's (a restarted daemon deadlocked with a
live member's batch, trial 7), a writer's session never runs its DDL, an older schema is still
upgraded (and its closed error records told apart by who closed them); the error records' keys as
verify reads them (open, accepted, retried)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from replicator.core.errors import NotInitialized
from replicator.core.model import TableRef
from replicator.target import control
from replicator.target.live import LiveTables
from replicator.target.store import ControlStore
from tests.integration.pipeline import CONTROL, demo_plan, fresh_target
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


def test_a_writer_session_leaves_the_control_schema_to_the_start_of_its_command(
    stack: Stack, dbname: str
) -> None:
    """A writer's session (each connect and reconnect) prepares its stage tables only: the schema was
    ensured once by whatever opened the writer, so a session does not even read its version."""
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS NULL").format(sql.Identifier(CONTROL)))
    with psycopg.connect(stack.target_admin(dbname)) as session:
        LiveTables(demo_plan(stack, dbname), CONTROL, "g", "r").prepare_session(session)
        assert session.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert not control.current(session, CONTROL)  # no ensure ran: it would have written the digest


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


def test_an_earlier_row_version_gets_bytewise_keys_and_keeps_its_versions(stack: Stack, dbname: str) -> None:
    """row_version's key columns compare bytewise ("C"): every batch probes its index per row. An
    earlier schema's columns (the database's collation) are converted in place, versions kept."""
    versions = control.table(CONTROL, "row_version")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS NULL").format(sql.Identifier(CONTROL)))
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} ALTER COLUMN target_table TYPE text COLLATE pg_catalog.default,"
                " ALTER COLUMN key TYPE text COLLATE pg_catalog.default"
            ).format(versions)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (target_table, key, topic, partition, kafka_offset, commit_lsn, lsn,"
                " total_order) VALUES ('app.a', '[\"é\"]', 't', 0, 7, 10, 11, 2),"
                " ('app.a', '[\"z\"]', 't', 1, 8, 12, 13, 0)"
            ).format(versions)
        )

        def collations() -> dict[str, str | None]:
            rows = conn.execute(
                "SELECT column_name, collation_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = 'row_version'"
                " AND column_name IN ('target_table', 'key')",
                (CONTROL,),
            ).fetchall()
            return dict(rows)

        assert collations() == {"target_table": None, "key": None}
        control.ensure(conn, CONTROL)
        assert collations() == {"target_table": "C", "key": "C"}
        kept = sql.SQL("SELECT key, partition, kafka_offset, commit_lsn, lsn, total_order FROM {} ORDER BY 1")
        assert conn.execute(kept.format(versions)).fetchall() == [
            ('["z"]', 1, 8, 12, 13, 0),
            ('["é"]', 0, 7, 10, 11, 2),
        ]
        with pytest.raises(psycopg.errors.UniqueViolation):  # still the primary key
            conn.execute(
                sql.SQL("INSERT INTO {} (target_table, key) VALUES ('app.a', '[\"z\"]')").format(versions)
            )


def test_error_keys_are_open_or_accepted_and_a_retried_record_explains_nothing(
    stack: Stack, dbname: str
) -> None:
    """What verify is told about error records: keys with an open record (the row's own or in
    `also`), keys whose every record the operator resolved (accepted), and not keys whose record
    `errors retry` applied (a difference there is a difference)."""
    records = [  # (target_table, key, also, resolved_by, resolution): resolved_by None is open
        ("s.t", '["open"]', None, None, None),
        ("s.t", '["both"]', None, None, None),
        ("s.t", '["both"]', None, "operator", "resolved by ops: later refused again"),
        ("s.t", '["ok"]', None, "operator", "resolved by ops: wrong at the source"),
        ("s.t", '["retried"]', None, "retry", "retried in run r1: applied, or a no-op"),
        # who closed it is the column, not the text a person reads
        ("s.t", '["said retried"]', None, "operator", "retried in run r2 by hand, then resolved"),
        ("s.t", '["said nothing"]', None, "retry", "applied"),
        ("s.other", '["o"]', '[{"table": "s.t", "key": "[\\"also\\"]"}]', None, None),
        ("s.other", '["t-only"]', None, None, None),
    ]
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (target_table, key, also, message, resolved_by, resolution, resolved_at)"
                    " VALUES (%s, %s, %s, 'm', %s, %s, CASE WHEN %s::text IS NULL THEN NULL ELSE now() END)"
                ).format(control.table(CONTROL, "error_record")),
                [(t, k, a, by, r, by) for t, k, a, by, r in records],
            )
        opened, accepted = ControlStore(conn, CONTROL).error_keys(TableRef("s", "t"))
    assert opened == {'["open"]', '["both"]', '["also"]'}
    assert accepted == {'["ok"]', '["said retried"]'}


def test_an_earlier_schema_gets_resolved_by_from_the_old_resolution_text_once(
    stack: Stack, dbname: str
) -> None:
    """Before `resolved_by`, `errors retry` marked its records by the start of `resolution`. The
    upgrade adds the column and fills it from that text (retry) or from the record being closed
    (operator); open records stay NULL. Read-only commands refuse the older schema with the fix;
    the upgrade is idempotent."""
    records = [  # (key, resolution, closed)
        ('["open"]', None, False),
        ('["ops"]', "resolved by ops: wrong at the source", True),
        ('["retried"]', "retried in run r1: applied, or a no-op where the row had moved on", True),
        ('["ops-quoting"]', "resolved by ops: not retried in run r1", True),
    ]
    errors = control.table(CONTROL, "error_record")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        # the version before `resolved_by`: no digest of this DDL, no column
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS NULL").format(sql.Identifier(CONTROL)))
        conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN resolved_by").format(errors))
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (target_table, key, message, resolution, resolved_at)"
                    " VALUES ('s.t', %s, 'm', %s, CASE WHEN %s THEN now() END)"
                ).format(errors),
                records,
            )
        with pytest.raises(NotInitialized, match="earlier version"):
            control.require(conn, CONTROL)

        def resolved_by() -> dict[str, str | None]:
            rows = conn.execute(sql.SQL("SELECT key, resolved_by FROM {}").format(errors)).fetchall()
            return dict(rows)

        expected = {'["open"]': None, '["ops"]': "operator", '["retried"]': "retry"}
        expected['["ops-quoting"]'] = "operator"
        control.require(conn, CONTROL, upgrade=True)  # `errors retry` on a schema it finds older
        assert control.current(conn, CONTROL)
        assert resolved_by() == expected
        control.require(conn, CONTROL)
        opened, accepted = ControlStore(conn, CONTROL).error_keys(TableRef("s", "t"))
        assert opened == {'["open"]'} and accepted == {'["ops"]', '["ops-quoting"]'}
        control.ensure(conn, CONTROL, force=True)  # `init` again: nothing moves
        assert resolved_by() == expected
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(sql.SQL("UPDATE {} SET resolved_by = 'someone'").format(errors))
