"""A target whose foreign keys are DEFERRABLE INITIALLY DEFERRED (a two-table cycle, as a source
writes it in one transaction): the halves of the cycle arrive in different batches (their topics
drift). The writer checks deferred constraints at the end of its writes, not at COMMIT, so the half
that does not fit yet is held (not a halt of the whole batch) and lands with the other half."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from replicator.config import HoldSettings
from replicator.core.mapping.compiler import compile_spec
from replicator.core.mapping.spec import load_spec_text
from replicator.core.model import (
    ChangeEvent,
    Op,
    SourcePosition,
)
from replicator.pg.catalog import read_catalog
from tests.events import change
from tests.integration.pipeline import HandFed, fresh_target
from tests.integration.stack import Stack

SCHEMA = """
CREATE SCHEMA cyc;
CREATE TABLE cyc.team (id int PRIMARY KEY, lead_member_id int);
CREATE TABLE cyc.team_member (id int PRIMARY KEY, team_id int NOT NULL);
ALTER TABLE cyc.team ADD CONSTRAINT team_lead_fk FOREIGN KEY (lead_member_id)
  REFERENCES cyc.team_member (id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE cyc.team_member ADD CONSTRAINT member_team_fk FOREIGN KEY (team_id)
  REFERENCES cyc.team (id) DEFERRABLE INITIALLY DEFERRED;
GRANT USAGE ON SCHEMA cyc TO replicator;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA cyc TO replicator;
"""

SPEC = """
version: 1
topic_prefix: cyc
tables:
- id: team
  source: app.team
  target: cyc.team
  key: {id: id}
  delete: {policy: hard}
  truncate: {policy: truncate}
  columns:
    id: {from: id}
    lead_member_id: {from: lead_member_id}
- id: team_member
  source: app.team_member
  target: cyc.team_member
  key: {id: id}
  delete: {policy: hard}
  truncate: {policy: truncate}
  columns:
    id: {from: id}
    team_id: {from: team_id}
"""


class Cycle(HandFed):
    """The cyc target and hand-built events of both tables."""

    def __init__(self, stack: Stack) -> None:
        self.dbname = fresh_target("deferred")
        self.admin = stack.target_admin(self.dbname)
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(SCHEMA)
            catalog = read_catalog(conn, ["cyc"])
        super().__init__(stack, self.dbname, compile_spec(load_spec_text(SPEC), catalog), "deferred")
        self.offset = 0

    def insert(self, table: str, lsn: int, **after: Any) -> ChangeEvent:
        self.offset += 1
        e = change(
            f"cyc.app.{table}",
            Op.CREATE,
            f"app.{table}",
            offset=self.offset,
            position=SourcePosition(lsn, lsn),
            key={"id": after["id"]},
            after=after,
        )
        return e._replace(raw_key=f"{table}/{after['id']}".encode())

    def state(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
        """(teams, members, held events)."""
        with psycopg.connect(self.admin) as conn:
            teams = conn.execute("SELECT id, lead_member_id FROM cyc.team ORDER BY id").fetchall()
            members = conn.execute("SELECT id, team_id FROM cyc.team_member ORDER BY id").fetchall()
            held = conn.execute("SELECT count(*) FROM replicator.held_event").fetchone()
        return teams, members, held[0] if held else -1


@pytest.fixture
def cycle(stack: Stack) -> Iterator[Cycle]:
    world = Cycle(stack)
    yield world
    world.close()


def test_a_cycle_written_in_one_batch_lands_whole(cycle: Cycle) -> None:
    result = cycle.apply(
        cycle.insert("team", 100, id=1, lead_member_id=10), cycle.insert("team_member", 100, id=10, team_id=1)
    )
    assert result.held == 0
    assert cycle.state() == ([(1, 10)], [(10, 1)], 0)


def test_the_half_of_a_cycle_that_arrives_first_is_held_then_lands_with_the_other(cycle: Cycle) -> None:
    """Before: the deferred check failed at COMMIT and the whole batch halted the daemon, on every
    restart. Now the member waits (held) while the rest of its batch commits, and lands with its team."""
    with psycopg.connect(cycle.admin) as conn:  # team 4 and its lead exist (an earlier cycle)
        conn.execute("INSERT INTO cyc.team VALUES (4, 40); INSERT INTO cyc.team_member VALUES (40, 4)")
    first = cycle.apply(
        cycle.insert("team_member", 200, id=20, team_id=2), cycle.insert("team_member", 200, id=41, team_id=4)
    )
    assert (first.held, first.held_by_table) == (1, {"cyc.team_member": 1})
    assert cycle.state() == ([(4, 40)], [(40, 4), (41, 4)], 1)  # 41 fits: it landed with the batch
    second = cycle.apply(cycle.insert("team", 200, id=2, lead_member_id=20))
    assert (second.held, second.released) == (0, 1)
    assert cycle.state() == ([(2, 20), (4, 40)], [(20, 2), (40, 4), (41, 4)], 0)


def test_a_complete_cycle_lands_beside_a_half_whose_partner_is_late(cycle: Cycle) -> None:
    """With two daemons, almost every batch holds some half whose partner another member applies.
    Before, that half failed the end-of-writes check, the writes were redone with immediate checks,
    where no row of a cycle can be written, and every cycle of the batch was held (trial 5 rerun:
    57 of 64 cycle transactions held for good). Now only the late half is held."""
    result = cycle.apply(
        cycle.insert("team", 300, id=1, lead_member_id=10),
        cycle.insert("team_member", 300, id=10, team_id=1),
        cycle.insert("team_member", 300, id=20, team_id=2),  # team 2 comes later (another member's)
    )
    assert (result.held, result.held_by_table) == (1, {"cyc.team_member": 1})
    assert cycle.state() == ([(1, 10)], [(10, 1)], 1)
    later = cycle.apply(cycle.insert("team", 310, id=2, lead_member_id=20))
    assert (later.held, later.released) == (0, 1)
    assert cycle.state() == ([(1, 10), (2, 20)], [(10, 1), (20, 2)], 0)


def test_a_parent_deleted_while_its_child_stays_is_held_and_the_rest_lands(cycle: Cycle) -> None:
    """The other direction of a deferred check: a team deleted while a member still points at it
    (the member's move arrives later) is held alone; the batch's other rows are written."""
    cycle.apply(
        cycle.insert("team", 400, id=3, lead_member_id=30), cycle.insert("team_member", 400, id=30, team_id=3)
    )
    cycle.offset += 1
    delete = change(
        "cyc.app.team",
        Op.DELETE,
        "app.team",
        offset=cycle.offset,
        position=SourcePosition(410, 410),
        key={"id": 3},
        before={"id": 3},
    )._replace(raw_key=b"team/3")
    result = cycle.apply(delete, cycle.insert("team", 410, id=5, lead_member_id=None))
    assert (result.held, result.held_by_table) == (1, {"cyc.team": 1})
    assert cycle.state() == ([(3, 30), (5, None)], [(30, 3)], 1)


def test_halves_held_by_two_members_land_together_once_one_member_owns_both(
    stack: Stack, cycle: Cycle
) -> None:
    """Two daemons: each holds its half of a cycle (a member owns its partitions' held rows). Once
    one member owns both partitions (the other stopped), its next batch retries both halves, each
    because the row it waits for is held too, and they land together (trial 5 rerun: with each
    half retried only when its parent was applied, a single daemon released none of 65 pairs)."""
    other = HandFed(stack, cycle.dbname, cycle.plan, "deferred")
    try:
        assert cycle.apply(cycle.insert("team_member", 600, id=60, team_id=6)).held == 1
        assert other.apply(cycle.insert("team", 600, id=6, lead_member_id=60)).held == 1
    finally:
        other.close()
    one = HandFed(stack, cycle.dbname, cycle.plan, "deferred", HoldSettings(retry_after_s=3600))
    try:
        one.events.update({**cycle.events, **other.events})  # the held records, to map them again
        one.writer.on_assign([("cyc.app.team", 0), ("cyc.app.team_member", 0)])
        result = one.apply(cycle.insert("team", 610, id=7, lead_member_id=None))
        assert (result.held, result.released) == (0, 2)
        assert cycle.state() == ([(6, 60), (7, None)], [(60, 6)], 0)
    finally:
        one.close()


def test_halves_held_by_two_members_land_in_the_lower_partitions_owners_next_batch(
    stack: Stack, cycle: Cycle
) -> None:
    """Two daemons, each holding its half of a cycle: the owner of the lower partition (team's)
    retries its half because the row it waits for is held too, adopts the other member's half
    and both land in its batch. The other member's batches leave the pair alone (no two members
    locking one half each); its stale count of held rows is read again at its next idle retry.
    Before: each member retried only its own partitions' rows, and the pair stayed held (trial 5,
    N1) until one member owned both partitions."""
    with psycopg.connect(cycle.admin) as conn:
        conn.execute("INSERT INTO cyc.team VALUES (4, 40); INSERT INTO cyc.team_member VALUES (40, 4)")
    patient = HoldSettings(retry_after_s=3600)  # no retry because a row waited long enough
    low = HandFed(stack, cycle.dbname, cycle.plan, "deferred", patient)  # cyc.app.team's partition
    high = HandFed(stack, cycle.dbname, cycle.plan, "deferred", patient)  # cyc.app.team_member's
    try:
        assert high.apply(cycle.insert("team_member", 600, id=60, team_id=6)).held == 1
        assert low.apply(cycle.insert("team", 600, id=6, lead_member_id=60)).held == 1
        again = high.apply(cycle.insert("team_member", 610, id=41, team_id=4))
        assert (again.held, again.released) == (0, 0)
        assert cycle.state()[2] == 2
        low.events.update(high.events)  # the other member's held record, to map it again
        landed = low.apply(cycle.insert("team", 620, id=7, lead_member_id=None))
        assert (landed.held, landed.released) == (0, 2)
        assert cycle.state() == ([(4, 40), (6, 60), (7, None)], [(40, 4), (41, 4), (60, 6)], 0)
        assert high.writer.held == 1  # not known yet to the member whose half was adopted
        idle = high.apply()
        assert (idle.held, idle.released, high.writer.held) == (0, 0, 0)
    finally:
        low.close()
        high.close()


UNIQUE_SCHEMA = """
CREATE SCHEMA uq;
CREATE TABLE uq.code (id int PRIMARY KEY, code text NOT NULL UNIQUE DEFERRABLE INITIALLY DEFERRED);
GRANT USAGE ON SCHEMA uq TO replicator;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA uq TO replicator;
"""

UNIQUE_SPEC = """
version: 1
topic_prefix: uq
tables:
- id: code
  source: app.code
  target: uq.code
  key: {id: id}
  delete: {policy: hard}
  truncate: {policy: error}
  columns: {id: {from: id}, code: {from: code}}
"""


def test_another_deferred_constraint_falls_back_to_checks_per_statement(stack: Stack) -> None:
    """A DEFERRABLE unique constraint is not a foreign key the writer can check row by row: its
    violation at the end redoes the writes with immediate checks, and only the row that takes a
    value another row still holds is held."""
    dbname = fresh_target("deferredunique")
    with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
        conn.execute(UNIQUE_SCHEMA)
        plan = compile_spec(load_spec_text(UNIQUE_SPEC), read_catalog(conn, ["uq"]))
    fed = HandFed(stack, dbname, plan, "deferredunique")
    try:

        def insert(offset: int, **after: Any) -> ChangeEvent:
            e = change(
                "uq.app.code",
                Op.CREATE,
                "app.code",
                offset=offset,
                position=SourcePosition(100 + offset, 100 + offset),
                key={"id": after["id"]},
                after=after,
            )
            return e._replace(raw_key=f"code/{after['id']}".encode())

        fed.apply(insert(0, id=1, code="a"))
        result = fed.apply(insert(1, id=2, code="a"), insert(2, id=3, code="b"))
        assert (result.held, result.held_by_table) == (1, {"uq.code": 1})
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            rows = conn.execute("SELECT id, code FROM uq.code ORDER BY id").fetchall()
        assert rows == [(1, "a"), (3, "b")]
    finally:
        fed.close()
