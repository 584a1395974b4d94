"""`replicator reload --table` on the real stack, through the CLI: a target table with rows
deleted and a cell damaged by hand (their versions kept, so no replay would rewrite them) is healed
by Debezium's incremental snapshot applied through the guarded path; the result is verified field by
field against the mapped source. A table the spec does not map is one line, and nothing is sent."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg

from tests.integration.pipeline import (
    assert_converged_equal,
    converge,
    daemon,
    env_for,
    fresh_target,
    run_cli,
    verify_demo,
)
from tests.integration.stack import Stack

# a row of another table held since before any fence (the daemon, converged, does not know it)
HELD_ELSEWHERE = (
    "INSERT INTO replicator.held_event (group_id, topic, partition, kafka_offset, target_table, key,"
    " blocked_by, judged_at, positioned) VALUES (%s, 'demo.shop.orders', 0, 999999999, 'sales.order',"
    " '[1]', 'crm.customer', 1, true)"
)


def test_reload_heals_deleted_and_damaged_rows_of_a_table(stack: Stack, tmp_path: Path) -> None:
    dbname = fresh_target("reload")
    group = f"reload-{uuid.uuid4().hex[:6]}"
    env = env_for(stack, dbname, group)
    unknown = run_cli(env, "reload", "--table", "crm.nope")
    assert unknown.returncode != 0
    assert "maps no such source or target table" in unknown.stderr and "Traceback" not in unknown.stderr
    with daemon(env, tmp_path / "d.log"):
        converge(stack, dbname, group)
        with psycopg.connect(stack.target_admin(dbname)) as conn:
            gone = [
                r[0]
                for r in conn.execute(
                    "DELETE FROM crm.customer_pii WHERE customer_id IN (SELECT customer_id"
                    " FROM crm.customer_pii ORDER BY customer_id LIMIT 5) RETURNING customer_id"
                ).fetchall()
            ]
            (damaged,) = conn.execute(
                "UPDATE crm.customer_pii SET email_masked = 'damaged' WHERE customer_id ="
                " (SELECT max(customer_id) FROM crm.customer_pii) RETURNING customer_id"
            ).fetchone() or (None,)
        assert len(gone) == 5 and damaged is not None
        (pii,) = [d for d in verify_demo(stack, dbname) if str(d.target) == "crm.customer_pii"]
        assert len(pii.missing) == 5 and len(pii.mismatched) == 1, pii.summary()  # what reload must heal
        with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
            conn.execute(HELD_ELSEWHERE, (group,))  # trial 5: reload waited for it until --timeout
        done = run_cli(env, "reload", "--table", "crm.customer_pii", "--json", "--timeout", "120")
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads(done.stdout)
        assert result["sources"] == ["shop.customers"] and result["snapshot_s"] > 0, result
        assert result["held_elsewhere"] == [["sales.order", 1, "crm.customer"]], result
        with psycopg.connect(stack.target_admin(dbname), autocommit=True) as conn:
            conn.execute("DELETE FROM replicator.held_event WHERE group_id = %s", (group,))
        assert_converged_equal(stack, dbname)
    with psycopg.connect(stack.target_admin(dbname)) as conn:
        back = {
            r[0]
            for r in conn.execute(
                "SELECT customer_id FROM crm.customer_pii WHERE customer_id = ANY(%s)", (gone,)
            )
        }
        (email,) = conn.execute(
            "SELECT email_masked FROM crm.customer_pii WHERE customer_id = %s", (damaged,)
        ).fetchone() or (None,)
    assert back == set(gone) and email != "damaged"
