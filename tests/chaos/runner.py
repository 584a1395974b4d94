"""The seeded chaos runner: a nemesis over a pgbench + demo workload, then the history checker.

    python -m tests.chaos.runner --seed 1 --minutes 3 [--faults 20] [--instances 3] [--work DIR]

One seed, one fresh world (tests/chaos/world.py): its source database, connector,
topics and target with parent/child FKs and trigger logs. `--instances`
replicator daemons in one consumer group read Kafka through the kafka proxy and
write the target through the target proxy (deploy/toxiproxy). While pgbench
(TPC-B, ledger deletes, injected bad rows) and the demo workload run, the
nemesis (random.Random(seed)) draws one fault at a time, holds it for a drawn
while, heals it and waits a drawn gap:
  kill -9 / SIGTERM of an instance (restarted), SIGSTOP past the session
  timeout (then SIGCONT), broker kill -9 / SIGTERM (restarted), Connect kill -9
  (restarted), target crash (`pg_ctl -m immediate`, restarted), Kafka and
  target link faults (reset, black hole, 2 s latency).
Between faults it samples oracle O (Kafka's committed offset never ahead of the
target-stored one). At the end: every fault healed, the workload stopped, the
group drained (a fence through the signal table), the instances stopped; the
history is read back and checked (tests/chaos/history.py), the target compared
with the mapped source (oracle C), and one line printed:

  seed kills source_txns lost phantom effective_dup regress resurrect
  redelivered_noop topic_dups offset_violations error_records mismatches
  convergence_p50 convergence_p99

Exit 0 only if every safety counter is 0, the error records are exactly the
injected bad rows, and there are no mismatches. Needs process control over the
local stack (pid files under STACK_DIR, `deploy/local/stack up` to restart).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from replicator.config import load_settings
from replicator.core.mapping import compile_spec, load_spec
from replicator.pg.catalog import read_catalog
from replicator.run.drain import drain
from replicator.run.verify import verify
from tests.chaos.history import Key, SourceVersion, TargetWrite, check, convergence, percentile
from tests.chaos.world import MAPPED, PGBENCH, REPO, World, env, topic_messages, wait_until
from tests.integration.toxiproxy import Toxiproxy

STACK = REPO / "deploy" / "local" / "stack"
STATE = Path(os.environ.get("STACK_DIR", REPO / ".stack"))
PG_CTL = f"/usr/lib/postgresql/{os.environ.get('STACK_PG_VERSION', '15')}/bin/pg_ctl"
CONTROL = "replicator"
SESSION_TIMEOUT_MS = 8000
# The demo spec: tiers outside this map are rejected (error records by design); country XX is
# filtered out (never reaches the target).
DEMO_TIERS = ("bronze", "silver", "gold", "platinum")

HEADER = (
    "seed kills source_txns lost phantom effective_dup regress resurrect redelivered_noop"
    " topic_dups offset_violations error_records mismatches convergence_p50 convergence_p99"
)


def log(msg: str) -> None:
    print(f"chaos {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


@dataclass
class Instance:
    name: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "replicator", "run"], env=self.env, stdout=out, stderr=out
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@dataclass
class Run:
    seed: int
    world: World
    target_db: str
    group: str
    instances: list[Instance]
    proxy: Toxiproxy
    rng: random.Random
    kills: Counter[str] = field(default_factory=Counter)
    heals: list[float] = field(default_factory=list)
    offset_samples: int = 0
    offset_violations: list[str] = field(default_factory=list)
    faults: int = 0
    self_exits: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ helpers
    def stack_up(self) -> None:
        done = subprocess.run([str(STACK), "up"], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"stack up failed: {done.stderr[-2000:]}")

    def pid(self, component: str) -> int:
        return int((STATE / "run" / f"{component}.pid").read_text())

    def kill_java(self, component: str, sig: signal.Signals) -> None:
        pid = self.pid(component)
        os.kill(pid, sig)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 180, f"{component} to exit")

    def hold(self, low: float, high: float) -> None:
        time.sleep(self.rng.uniform(low, high))  # the nemesis holds a fault for a drawn while

    # ------------------------------------------------------------------ faults
    def fault(self) -> str:
        # Restarting the broker or Connect takes tens of seconds: drawn less often.
        kinds = [
            ("kill9_instance", 6),
            ("term_instance", 3),
            ("stop_instance", 2),
            ("kill9_broker", 0.6),
            ("term_broker", 0.6),
            ("kill9_connect", 0.6),
            ("crash_target", 1.2),
            ("kafka_reset", 1.5),
            ("kafka_blackhole", 1.5),
            ("kafka_latency", 1.5),
            ("target_reset", 1.5),
            ("target_blackhole", 1.5),
            ("target_latency", 1.5),
        ]
        kind = self.rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        inst = self.rng.choice(self.instances)
        if kind == "kill9_instance":
            inst.signal(signal.SIGKILL)
            if inst.proc is not None:
                inst.proc.wait()
            self.kills["instance"] += 1
            self.hold(0.5, 4)
            inst.start()
        elif kind == "term_instance":
            inst.stop()
            self.hold(0.5, 4)
            inst.start()
        elif kind == "stop_instance":
            inst.signal(signal.SIGSTOP)
            self.kills["stop"] += 1
            self.hold(SESSION_TIMEOUT_MS / 1000 + 1, SESSION_TIMEOUT_MS / 1000 + 6)
            inst.signal(signal.SIGCONT)
        elif kind in ("kill9_broker", "term_broker"):
            self.kill_java("kafka", signal.SIGKILL if kind == "kill9_broker" else signal.SIGTERM)
            self.kills["broker"] += 1
            self.hold(1, 5)
            self.stack_up()
        elif kind == "kill9_connect":
            self.kill_java("connect", signal.SIGKILL)
            self.kills["connect"] += 1
            self.hold(1, 5)
            self.stack_up()
        elif kind == "crash_target":
            as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            subprocess.run(
                [*as_pg, PG_CTL, "-D", str(STATE / "pg" / "target"), "-m", "immediate", "stop"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            self.kills["target"] += 1
            self.hold(1, 6)
            self.stack_up()
        else:
            proxy, what = kind.split("_")
            toxic = {
                "reset": ("reset_peer", {"timeout": 0}),
                "blackhole": ("timeout", {"timeout": 0}),
                "latency": ("latency", {"latency": 2000, "jitter": 0}),
            }[what]
            with self.proxy.fault(proxy, toxic[0], **toxic[1]):
                self.hold(2, 8)
        self.faults += 1
        self.heals.append(time.time())
        return f"{kind}({inst.name})" if "instance" in kind else kind

    def check_alive(self) -> None:
        """Restart, as a supervisor would, an instance that exited by itself, and count it: the
        daemon fails fast when Kafka or the target is unreachable while it starts (a fault, or a
        SIGSTOP during its start-up, can cause that). Its reason goes in the report."""
        for inst in self.instances:
            if inst.proc is not None and inst.proc.poll() is not None:
                lines = [
                    line
                    for line in inst.log.read_text(errors="replace").splitlines()
                    if line.startswith("replicator: error") or "Traceback" in line
                ]
                self.self_exits.append(
                    f"{inst.name} rc={inst.proc.returncode}: {lines[-1] if lines else '?'}"
                )
                inst.start()

    def sample_offsets(self) -> None:
        """Oracle O, sampled: per partition, Kafka's committed offset <= the target-stored one.
        Kafka is read first: a commit racing in after it only makes the stored side larger."""
        try:
            committed = kafka_committed(self.world.kafka, self.group, self.world.topics)
            stored = stored_offsets(self.world, self.target_db, self.group)
        except Exception:
            return  # the broker or the target is down right now: no sample
        self.offset_samples += 1
        self.offset_violations += offset_violations(committed, stored)


def offset_violations(committed: dict[tuple[str, int], int], stored: dict[tuple[str, int], int]) -> list[str]:
    """Oracle O on one sample: partitions whose Kafka-committed offset is past the stored one."""
    return [
        f"{tp}: kafka {offset} > stored {stored.get(tp)}"
        for tp, offset in sorted(committed.items())
        if offset > stored.get(tp, 0)
    ]


def kafka_committed(kafka: str, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group, "enable.auto.commit": False})
    try:
        md = consumer.list_topics(timeout=5)
        tps = [TopicPartition(t, p) for t in topics if t in md.topics for p in md.topics[t].partitions]
        return {
            (tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=5) if tp.offset >= 0
        }
    finally:
        consumer.close()


def stored_offsets(world: World, dbname: str, group: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(world.admin("TARGET", dbname), connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT topic, partition, next_offset FROM replicator.checkpoint WHERE group_id = %s", (group,)
        ).fetchall()
    return {(t, p): o for t, p, o in rows}


# ---------------------------------------------------------------------- history
def read_history(
    world: World, target_db: str, snapshot_done_at: float
) -> tuple[dict[Key, list[SourceVersion]], dict[Key, list[TargetWrite]], set[Key], set[Key], int]:
    """Source versions per target key (filtered and delete-ignored as the spec says), target
    writes per key, the error-record keys, the injected bad keys, and the source transactions.
    A key of a delete-ignoring table deleted before the snapshot completed, never written to
    the target, is left out: the snapshot may have begun after its delete (it never existed for
    the pipeline)."""
    with psycopg.connect(world.source_admin()) as conn:
        log_rows = conn.execute(
            "SELECT tbl, key, op, ver, extract(epoch FROM at)::float8 FROM chaos_log.source_log ORDER BY seq"
        ).fetchall()
        txns = conn.execute("SELECT count(DISTINCT xid) FROM chaos_log.source_log").fetchone()
        filtered = {str(r[0]) for r in conn.execute("SELECT id FROM shop.customers WHERE country = 'XX'")}
        rejected = {
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM shop.customers WHERE country <> 'XX' AND tier::text <> ALL(%s)",
                (list(DEMO_TIERS),),
            )
        }
        # Every bad row ever inserted, also those the workload deleted later: their insert was
        # refused all the same (an error record), so they stay in the expected set.
        bad = {
            str(r[0])
            for r in conn.execute(
                "SELECT DISTINCT key FROM chaos_log.source_log"
                " WHERE tbl = 'public.pgbench_history' AND op = 'I' AND key LIKE '-%'"
            )
        }
    source: dict[Key, list[SourceVersion]] = {}
    early_ignored: set[Key] = set()
    for tbl, key, op, ver, at in log_rows:
        for m in MAPPED:
            if m.source != tbl:
                continue
            if m.source == "shop.customers" and key in filtered:
                continue
            if op == "D" and m.delete == "ignore":
                if float(at) < snapshot_done_at:
                    early_ignored.add((m.target, key))
                continue
            source.setdefault((m.target, key), []).append(SourceVersion(int(ver), op == "D", float(at)))
    expected = {("bank.ledger", k) for k in bad}
    expected |= {(t, k) for k in rejected for t in ("crm.customer", "crm.customer_pii")}
    with psycopg.connect(world.admin("TARGET", target_db)) as conn:
        writes = conn.execute(
            "SELECT tbl, key, ver, deleted, extract(epoch FROM at)::float8"
            " FROM chaos_log.target_log ORDER BY id"
        ).fetchall()
        errors = conn.execute("SELECT target_table, key, also FROM replicator.error_record").fetchall()
    target: dict[Key, list[TargetWrite]] = {}
    for tbl, key, ver, deleted, at in writes:
        target.setdefault((tbl, key), []).append(
            TargetWrite(None if ver is None else int(ver), deleted, float(at))
        )
    for k in early_ignored - set(target):
        source.pop(k, None)
    error_keys: set[Key] = set()
    for table, key, also in errors:
        error_keys.add((str(table), error_key_text(key)))
        for other in also or []:
            error_keys.add((str(other.get("target_table")), error_key_text(other.get("key"))))
    return source, target, error_keys, expected, int(txns[0] if txns else 0)


def error_key_text(key: Any) -> str:
    """An error record's key as the history's key text (values joined by '|')."""
    if isinstance(key, str):
        try:
            key = json.loads(key)
        except ValueError:
            return str(key)
    if isinstance(key, dict):
        return "|".join(str(v) for v in key.values())
    if isinstance(key, list):
        return "|".join(str(v) for v in key)
    return str(key)


def topic_dups(world: World) -> int:
    return count_topic_dups(topic_messages(world.kafka, world.topics))


def count_topic_dups(messages: list[tuple[str, bytes | None, bytes | None]]) -> int:
    """Change events present more than once in the topics (a redelivery by Connect): same topic,
    key, op and row version."""
    seen: Counter[tuple[str, bytes | None, str, Any]] = Counter()
    for topic, key, value in messages:
        if value is None:
            continue
        doc = json.loads(value)
        body = doc.get("payload", doc) if isinstance(doc, dict) else doc
        if not isinstance(body, dict) or "op" not in body:
            continue
        row = body.get("after") or body.get("before") or {}
        seen[(topic, key, body["op"], row.get("ver"))] += 1
    return sum(n - 1 for n in seen.values() if n > 1)


def redelivered_noops(logs: list[Path]) -> int:
    return sum(count_skipped(p.read_text(errors="replace")) for p in logs if p.exists())


def count_skipped(text: str) -> int:
    """Events the daemon's batches skipped as already applied (redeliveries that were no-ops)."""
    total = 0
    for line in text.splitlines():
        if "event=batch" in line:
            for part in line.split():
                if part.startswith("skipped_older="):
                    total += int(part.split("=", 1)[1])
    return total


def mismatches(world: World, target_db: str) -> tuple[int, list[str]]:
    """Oracle C: missing + extra + mismatched + held rows over every mapped table."""
    spec = load_spec(world.spec)
    with psycopg.connect(world.admin("TARGET", target_db)) as conn:
        catalog = read_catalog(conn, sorted({t.target.schema for t in spec.tables}))
    plan = compile_spec(spec, catalog)
    diffs = verify(plan, world.source_admin(), world.admin("TARGET", target_db), CONTROL)
    total = sum(len(d.missing) + len(d.extra) + len(d.mismatched) + len(d.held) for d in diffs)
    return total, [d.summary() for d in diffs if not d.clean(accept_errors=True)]


# ---------------------------------------------------------------------- one seed
def workload(world: World, seconds: float, seed: int) -> list[subprocess.Popen[bytes]]:
    pg_env = {**os.environ, "PGPASSWORD": env("STACK_PG_ADMIN_PASSWORD", "postgres")}
    # The children inherit the log files; the parent closes its copies at once.
    with open(world.work / "pgbench.log", "ab") as bench_log, open(world.work / "demo.log", "ab") as demo_log:
        return [
            bench_process(world, seconds, seed, pg_env, bench_log),
            demo_process(world, seconds, seed, demo_log),
        ]


def bench_process(
    world: World, seconds: float, seed: int, pg_env: dict[str, str], log_file: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(PGBENCH),
            "-n",
            "-c",
            "3",
            "-T",
            str(int(seconds)),
            "-R",
            "40",
            "--random-seed",
            str(seed),
            "-f",
            f"{world.work / 'tpcb.sql'}@20",
            "-f",
            f"{world.work / 'delete.sql'}@3",
            "-f",
            f"{world.work / 'bad.sql'}@1",
            *world.pgbench_conn(),
            world.source_db,
        ],
        env=pg_env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )


def demo_process(world: World, seconds: float, seed: int, log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "deploy/demo/demo.py"),
            "workload",
            "--rate",
            "15",
            "--seconds",
            str(seconds),
            "--seed",
            str(seed),
        ],
        env={**os.environ, "REPLICATOR_SOURCE__DBNAME": world.source_db},
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )


def run_seed(seed: int, minutes: float, max_faults: int, n_instances: int, work: Path) -> tuple[str, bool]:
    rng = random.Random(seed)
    name = f"s{seed}{uuid.uuid4().hex[:4]}"
    work.mkdir(parents=True, exist_ok=True)
    world = World(name, work)
    target_db = f"chaos_t_{name}"
    group = f"chaos-{name}"
    proxy = Toxiproxy.from_env()
    proxy.reset()
    log(f"seed {seed}: world {name} in {work}")
    world.create_source()
    world.write_spec()
    world.create_target(target_db)
    world.apply_connector()
    wait_until(world.snapshot_done, 300, "the connector's snapshot")
    snapshot_done_at = time.time()
    base = {
        **os.environ,
        "REPLICATOR_SOURCE__DBNAME": world.source_db,
        "REPLICATOR_TARGET__DBNAME": target_db,
        "REPLICATOR_KAFKA__GROUP_ID": group,
        "REPLICATOR_MAPPING": str(world.spec),
        "REPLICATOR_CONNECTOR": world.connector,
        "REPLICATOR_BATCH__MAX_MS": "200",
        "REPLICATOR_BATCH__MAX_EVENTS": "500",
        "REPLICATOR_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "REPLICATOR_TARGET__APPLY_TIMEOUT_S": "15",
    }
    done = subprocess.run(
        [sys.executable, "-m", "replicator", "init"], env=base, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"replicator init: {done.stderr[-2000:]}")
    proxied = {
        **base,
        "REPLICATOR_KAFKA__BOOTSTRAP_SERVERS": env("STACK_KAFKA_PROXY", ""),
        "REPLICATOR_TARGET__PORT": env("STACK_TARGET_PG_PROXY_PORT", ""),
    }
    instances = [Instance(f"r{i}", proxied, work / f"r{i}.log") for i in range(n_instances)]
    run = Run(seed, world, target_db, group, instances, proxy, rng)
    for inst in instances:
        inst.start()
    seconds = minutes * 60
    loads = workload(world, seconds, seed)
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds and run.faults < max_faults:
            what = run.fault()
            log(f"seed {seed}: fault {run.faults} {what}")
            run.check_alive()
            run.sample_offsets()
            run.hold(0.5, 2)  # the gap between faults
        for p in loads:
            p.wait(timeout=seconds + 300)
        log(f"seed {seed}: {run.faults} faults; workload done, healing and draining")
    finally:
        proxy.reset()
        for p in loads:
            if p.poll() is None:
                p.terminate()
                p.wait()
        for inst in instances:
            inst.signal(signal.SIGCONT)
        run.stack_up()
    healed = time.time()
    run.check_alive()
    settings = load_settings(None)
    settings.source.dbname = world.source_db
    settings.target.dbname = target_db
    drained_at = time.monotonic()
    try:
        drain(settings, world.topics, world.connector, world.signal_table, 600, group=group)
    except BaseException:
        for inst in instances:  # never leave the instances running behind a failed seed
            inst.stop()
        raise
    drain_s = time.monotonic() - drained_at
    run.sample_offsets()
    exits = [inst.stop() for inst in instances]
    run.sample_offsets()
    source, target, error_keys, expected, txns = read_history(world, target_db, snapshot_done_at)
    verdict = check(source, target, error_keys, expected)
    conv = convergence(source, target, [*run.heals, healed])
    dups = topic_dups(world)
    bad_rows, mismatch_detail = mismatches(world, target_db)
    counts = verdict.counts()
    error_ok = not verdict.unexpected_errors and not verdict.missing_errors
    line = " ".join(
        str(v)
        for v in (
            seed,
            sum(run.kills.values()),
            txns,
            counts["lost"],
            counts["phantom"],
            counts["effective_dup"],
            counts["regress"],
            counts["resurrect"],
            redelivered_noops([i.log for i in instances]),
            dups,
            len(run.offset_violations),
            f"{len(error_keys)}/{len(expected)}{'' if error_ok else '!'}",
            bad_rows,
            f"{percentile(conv, 50):.1f}s",
            f"{percentile(conv, 99):.1f}s",
        )
    )
    details = {
        "seed": seed,
        "faults": run.faults,
        "kills": dict(run.kills),
        "offset_samples": run.offset_samples,
        "offset_violations": run.offset_violations[:10],
        "keys": verdict.keys,
        "writes": verdict.writes,
        "examples": verdict.examples(),
        "unexpected_errors": verdict.unexpected_errors[:10],
        "missing_errors": verdict.missing_errors[:10],
        "mismatches": mismatch_detail,
        "final_drain_s": round(drain_s, 1),
        "instance_exits": exits,
        "self_exits": run.self_exits,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    (work / "result.json").write_text(json.dumps({"line": line, **details}, indent=2, default=str))
    log(f"seed {seed}: {json.dumps(details, default=str)}")
    ok = verdict.safe() and error_ok and not run.offset_violations and bad_rows == 0
    if ok:
        world.remove()
        with psycopg.connect(world.admin("TARGET", "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target_db}" WITH (FORCE)')
    return line, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, action="append", help="repeatable; default 1")
    parser.add_argument("--minutes", type=float, default=3.0, help="workload and nemesis time per seed")
    parser.add_argument("--faults", type=int, default=1000, help="at most this many faults per seed")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--work", type=Path, default=STATE / "chaos")
    args = parser.parse_args(argv)
    ok = True
    print(HEADER, flush=True)
    for seed in args.seed or [1]:
        line, good = run_seed(seed, args.minutes, args.faults, args.instances, args.work / f"seed{seed}")
        print(line, flush=True)
        ok = ok and good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
