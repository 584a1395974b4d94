#!/usr/bin/env python3
"""The peer backlog drained into a target with a foreign key the source does not have.

    eval "$(deploy/local/stack env)"
    python3 bench/peer.py --keep            # once: the backlog (or any --keep run before)
    python3 bench/fk_drain.py [--rounds 2]

Each round: a fresh target `peer_fk` with the identity schema of bench/peer.py plus
`app.entries.account_id REFERENCES app.accounts`, `replicator init`, then `replicator run
--stop-when-caught-up` (this checkout) over the kept topics with a new group. The entries topic
runs ahead of the accounts topic, so children are held until their parent lands; the source holds
entries whose account it deleted, so some account deletes can never be applied (they end as error
records, or still held if not judged yet). Prints per run: wall seconds, messages/s, the daemon's
CPU, the rows held and the error records at the end, and whether `app.entries` has the source's
row count. Nothing is written to bench/results: it is a measurement to read beside peer.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer  # the peer benchmark's helpers: its target schema, settings and connections

DBNAME = "peer_fk"


def one_run() -> str:
    peer.fresh_target(DBNAME)
    with psycopg.connect(peer.conninfo("target", DBNAME), autocommit=True) as conn:
        conn.execute("ALTER TABLE app.entries ADD FOREIGN KEY (account_id) REFERENCES app.accounts (id)")
    group = f"peer-fk-{uuid.uuid4().hex[:8]}"
    init = peer.replicator_cmd("init", dbname=DBNAME, group=group)
    if init.returncode != 0:
        return f"init failed: {init.stderr.strip()[-400:]}"
    before = os.times()
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "replicator", "run", "--stop-when-caught-up", "--json"],
        cwd=peer.CHECKOUT,
        env=peer.daemon_env(DBNAME, group),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if run.returncode != 0:
        return f"run exited {run.returncode}: {run.stderr.strip()[-400:]}"
    with psycopg.connect(peer.conninfo("target", DBNAME)) as conn:
        held, errors, entries = conn.execute(
            "SELECT (SELECT count(*) FROM replicator.held_event),"
            " (SELECT count(*) FROM replicator.error_record), (SELECT count(*) FROM app.entries)"
        ).fetchone() or (None, None, None)
    with psycopg.connect(peer.conninfo("source", peer.SOURCE_DB)) as conn:
        (source_entries,) = conn.execute("SELECT count(*) FROM app.entries").fetchone() or (None,)
    messages = sum(peer.end_offsets(peer.TOPICS).values())
    return (
        f"{wall:.1f} s, {messages / wall:,.0f} msg/s, CPU {cpu:.1f} s, held at the end {held},"
        f" error records {errors}, entries {entries} (source {source_entries})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    for n in range(1, args.rounds + 1):
        print(f"round {n}: {one_run()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
