#!/usr/bin/env python3
"""The cutover's write-downtime window on the demo, under a live workload.

    eval "$(deploy/local/stack env)"
    python bench/cutover_window.py [--customers 6000] [--rate 100] [--rounds 3] [--reset]

Per round, on the demo databases of the local stack (deploy/demo/demo.py):

1. `demo.py setup` (undoes the previous round's cutover: the application role
   gets its writes back, authority returns to the source); with `--reset`
   once at the start, the demo is recreated with `--customers` customers and
   the connector applied again (a fresh snapshot).
2. `replicator run` as a daemon (the demo's group), until `replicator drain`
   says the group has caught up.
3. `demo.py workload --rate R` as the application role `shop_app`, running
   through the whole cutover (it keeps trying after the fence, as an
   application would; its refused writes are counted).
4. After a warm-up, `replicator cutover --accept-errors`; the window is
   fence -> flip from `replicator cutover status --json`, split by the
   recorded states (fenced -> draining -> drained -> sequences -> flipped);
   the command's own lines give the drain's share and the verify's share.
5. The daemon stops by itself at its next batch (authority is the target);
   `replicator verify --accept-errors` afterwards must be clean.

Results: bench/results/cutover_window.{md,json} and stdout. The window is a
benchmark figure, never a test assertion (machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO_PY = REPO / "deploy" / "demo" / "demo.py"
RESULTS = REPO / "bench" / "results"
LOG_DIR = Path(os.environ.get("STACK_DIR", REPO / ".stack")) / "logs"


def say(*parts: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


def run(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-600:]}")
    return done


def replicator(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "replicator", *args, check=check, timeout=timeout)


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def one_round(n: int, rate: float, warmup_s: float) -> dict[str, Any]:
    run(sys.executable, str(DEMO_PY), "setup")
    log = LOG_DIR / f"replicator-window-{n}.log"
    # one stable member id across rounds (static membership): a new id per round would leave the
    # previous round's member holding its partitions until its session times out
    env = {**os.environ, "REPLICATOR_KAFKA__INSTANCE_ID": "window-bench"}
    with log.open("ab") as out:
        daemon = subprocess.Popen(  # the forward daemon for this round
            [sys.executable, "-m", "replicator", "run"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    workload: subprocess.Popen[str] | None = None
    try:
        replicator("drain", "--timeout", "600")
        workload = subprocess.Popen(
            [
                sys.executable,
                str(DEMO_PY),
                "workload",
                "--rate",
                str(rate),
                "--seconds",
                "3600",
                "--seed",
                str(n),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(warmup_s)  # the workload runs for a while before the cutover starts
        load = os.getloadavg()
        done = replicator("cutover", "--accept-errors", check=False, timeout=900)
        say(f"round {n}: cutover exited {done.returncode}")
        if done.returncode != 0:
            raise SystemExit(f"bench: cutover failed: {done.stdout[-1500:]}{done.stderr[-600:]}")
        status = json.loads(replicator("cutover", "status", "--json").stdout)
    finally:
        if workload is not None:
            workload.send_signal(signal.SIGINT)
            try:
                workload.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                workload.kill()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
    at = {e["state"]: stamp(e["at"]) for e in status["events"]}
    drained = re.search(r"drained in ([0-9.]+)s", done.stdout)
    checked = re.search(r"verified in ([0-9.]+)s", done.stdout)
    verify = replicator("verify", "--accept-errors", check=False)
    return {
        "round": n,
        "cutover_id": status["cutover_id"],
        "window_s": status["window_s"],
        "fence_s": round(at["fenced"] - at["gated"], 3),
        "drain_s": float(drained.group(1)) if drained else None,
        "verify_in_window_s": float(checked.group(1)) if checked else None,
        "fenced_to_drained_s": round(at["drained"] - at["fenced"], 3),
        "sequences_s": round(at["sequences"] - at["drained"], 3),
        "flip_s": round(at["flipped"] - at["sequences"], 3),
        "load_average": [round(x, 2) for x in load],
        "verify_after_clean": verify.returncode == 0,
        "cutover_output": done.stdout.splitlines(),
    }


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = (
        f"Cutover window on the demo ({meta['rows']} source rows), workload {meta['rate']:g} ops/s as "
        f"`shop_app`, {meta['date']}, {meta['machine']}\n\n"
        "| round | window (fence -> flip) | fenced -> drained | of which drain | of which verify "
        "| sequences | flip | load average | verify after |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['round']} | {r['window_s']:.2f} s | {r['fenced_to_drained_s']:.2f} s | "
        f"{r['drain_s'] if r['drain_s'] is not None else '-'} s | "
        f"{r['verify_in_window_s'] if r['verify_in_window_s'] is not None else '-'} s | "
        f"{r['sequences_s']:.2f} s | {r['flip_s']:.2f} s | {' '.join(map(str, r['load_average']))} | "
        f"{'clean' if r['verify_after_clean'] else 'NOT CLEAN'} |"
        for r in rows
    ]
    windows = [r["window_s"] for r in rows]
    return head + "\n".join(lines) + f"\n\nmedian window {median(windows):.2f} s, max {max(windows):.2f} s\n"


def source_rows() -> int:
    import psycopg

    sys.path.insert(0, str(DEMO_PY.parent))
    import demo  # type: ignore[import-not-found]

    with psycopg.connect(demo.admin_conninfo("SOURCE", demo.source_db())) as conn:
        total = 0
        for table in demo.APP_TABLES:
            row = conn.execute(f"SELECT count(*) FROM shop.{table}").fetchone()
            total += int(row[0]) if row else 0
        return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=6000, help="with --reset: demo size")
    ap.add_argument("--reset", action="store_true", help="recreate the demo and its capture first")
    ap.add_argument("--rate", type=float, default=100.0, help="workload operations per second")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds of workload before the cutover")
    args = ap.parse_args()
    if args.reset:
        say(f"recreating the demo with {args.customers} customers")
        run(sys.executable, str(DEMO_PY), "setup", "--reset", "--customers", str(args.customers))
        replicator("connectors", "apply")
    rows: list[dict[str, Any]] = []
    for n in range(1, args.rounds + 1):
        say(f"round {n}")
        rows.append(one_round(n, args.rate, args.warmup))
        say(f"round {n}: window {rows[-1]['window_s']:.2f} s")
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "rate": args.rate,
        "rows": source_rows(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, meta)
    (RESULTS / "cutover_window.md").write_text(text)
    (RESULTS / "cutover_window.json").write_text(json.dumps({"meta": meta, "rounds": rows}, indent=2) + "\n")
    print(text)
    return 0 if all(r["verify_after_clean"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
