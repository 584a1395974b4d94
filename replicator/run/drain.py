"""Drain: wait until the target reflects everything the source committed before now.

A fence row goes into Debezium's signal table (captured, so it is a change
at a known LSN; type `log`, so Debezium only logs it). Then, in order:
1. Connect's committed source offset passes the fence LSN: everything the
   source committed before the fence is durably in Kafka;
2. the end offsets of the mapped topics are read;
3. the target-stored checkpoints of the group reach those end offsets.
A missing or FAILED connector ends the drain at once, naming it and the fix
(checked before the fence and on every poll), instead of a timeout; so does a
table stopped by a source schema change (`core.schema_change`), which would
never drain.
This is the exact position that cutover drains to; tests use it as the
convergence condition instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from replicator.config import Settings
from replicator.connect.client import ConnectClient, ConnectorState
from replicator.core.errors import Fatal
from replicator.core.lsn import lsn_text
from replicator.core.model import Partition, TableRef
from replicator.kafka.clients import Metadata
from replicator.source.signal import write_fence
from replicator.target.store import ControlStore


@dataclass(frozen=True, slots=True)
class Drained:
    fence_lsn: int
    end_offsets: dict[Partition, int]
    seconds: float
    held_elsewhere: tuple[tuple[str, int, str], ...] = ()  # (table, rows, waiting for) not waited for
    # the time spent, once applied past the fence, waiting for held rows, and the most rows held then
    held_wait_s: float = 0.0
    held_waited: tuple[tuple[str, int, str], ...] = ()  # (table, rows, waiting for)


def wait_for(condition: Callable[[], Any], deadline: float, what: str | Callable[[], str]) -> Any:
    """Poll `condition` until it is true; past `deadline`, a Fatal naming `what` (text, or a function
    giving it as things stand then)."""
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Fatal(f"drain timed out waiting for {what if isinstance(what, str) else what()}")
        time.sleep(0.25)  # polling interval between checks of the condition


def capture_problem(state: ConnectorState | None, connector: str, url: str) -> str | None:
    """Why the capture cannot move (the connector is missing, PAUSED or FAILED), or None."""
    if state is None:
        return (
            f"connector {connector} does not exist on {url}; fix: `replicator connectors apply`,"
            " or name the right one (REPLICATOR_CONNECTOR or the spec's capture.connector)"
        )
    if state.connector == "PAUSED":
        return (
            f"connector {connector} is PAUSED: it carries nothing; fix: resume it:"
            f" PUT {url}/connectors/{connector}/resume"
        )
    if state.failed:
        cause = state.cause[:500]
        return (
            f"connector {connector} is {state.connector} with tasks {','.join(state.tasks) or '-'}: {cause};"
            f" fix the cause, then restart it: POST {url}/connectors/{connector}/restart?includeTasks=true"
        )
    return None


def stop_lines(stops: list[dict[str, Any]]) -> list[str]:
    """One line per stopped table (rows of `ControlStore.stops`), with its reason and fix."""
    out: dict[str, str] = {}
    for s in stops:
        tables = ", ".join(s["target_tables"] or [s["source_table"]])
        out.setdefault(
            tables,
            f"{tables} stopped at {s['topic']}[{s['partition']}]@{s['kafka_offset']} ({s['rule_id']}):"
            f" {s['reason']}; fix: {s['fix']}",
        )
    return list(out.values())


def check_stops(settings: Settings, group: str, topics: list[str]) -> None:
    """A stopped table (a source schema change, a partition count change) never drains: say so at
    once, with its fix. Only a stop of a live run counts: one left by an ended run is judged again
    by the next run."""
    with ControlStore.open(settings) as store:
        stops = store.stops(group) if store.initialized() else []
    stops = [s for s in stops if s["topic"] in topics and s["live"]]
    lines = stop_lines(stops)
    if lines:
        raise Fatal(f"drain: {lines[0]}" + (f" (and {len(lines) - 1} more tables)" if len(lines) > 1 else ""))


def check_capture(client: ConnectClient, connector: str) -> None:
    problem = capture_problem(client.state(connector), connector, client.url)
    if problem is not None:
        raise Fatal(f"drain: {problem}")


def drain(
    settings: Settings,
    topics: list[str],
    connector: str,
    signal_table: str,
    timeout_s: float,
    group: str | None = None,
    held_tables: frozenset[str] | None = None,
    say: Callable[[str], None] | None = None,
) -> Drained:
    """Fence the source, wait until `group` applied everything before the fence and holds no row
    back from before it (with `held_tables`, only rows of those target tables keep it waiting;
    `Drained.held_elsewhere` names the others). `say` hears, every `HELD_EVERY_S` while held rows
    keep it waiting, how many are held and what they wait for."""
    started = time.monotonic()
    deadline = started + timeout_s
    group = group or settings.kafka.group_id
    client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
    check_capture(client, connector)  # before the fence: a dead capture would never carry it
    check_stops(settings, group, topics)  # a stopped table would never drain
    _, lsn = write_fence(settings.source, TableRef.parse(signal_table))

    def flushed() -> bool:
        check_capture(client, connector)
        return client.flushed_lsn(connector) >= lsn

    wait_for(flushed, deadline, f"connector {connector} to flush past the fence LSN {lsn_text(lsn)}")
    with Metadata(settings.kafka) as metadata:
        ends = metadata.end_offsets(topics)

    lagging: list[str] = []  # the partitions behind at the last look

    def applied() -> bool:
        nonlocal lagging
        check_stops(settings, group, topics)
        with ControlStore.open(settings) as store:
            stored = store.checkpoints(group) if store.initialized() else {}  # nothing applied yet
        lagging = behind(ends, stored)
        return not lagging

    wait_for(applied, deadline, lambda: applied_timeout(group, lagging))
    waiting_since = time.monotonic()
    told = waiting_since - HELD_EVERY_S
    most: list[tuple[str, int, str]] = []
    while True:  # a row held back is not in the target yet: drained means none is left
        with ControlStore.open(settings) as store:
            every = store.held_before(group, lsn) if store.initialized() else []
        held = [h for h in every if held_tables is None or h[0] in held_tables]
        if not held:
            elsewhere = tuple(every)  # none of them in `held_tables`
            break
        most = max(most, held, key=lambda rows: sum(n for _, n, _ in rows))
        now = time.monotonic()
        if now > deadline:
            raise Fatal(held_timeout(group, lsn, held))
        if now - told >= HELD_EVERY_S:
            told = now
            with ControlStore.open(settings) as store:  # due at the next retry, not after a backoff
                store.hasten_held(group, lsn)
            if say is not None:
                say(held_progress(lsn, held, now - waiting_since))
        time.sleep(0.25)  # polling the held rows until the group has applied them
    now = time.monotonic()
    return Drained(lsn, ends, now - started, elsewhere, now - waiting_since if most else 0.0, tuple(most))


HELD_EVERY_S = 5.0  # how often a drain waiting for held rows says so


def held_progress(lsn: int, held: Iterable[tuple[str, int, str]], waited_s: float) -> str:
    """A drain's progress line while held rows keep it waiting."""
    held = list(held)
    return (
        f"drain: applied past the fence LSN {lsn_text(lsn)}; waiting {waited_s:.0f}s for"
        f" {sum(n for _, n, _ in held)} held rows ({held_text(held)})"
    )


def held_timeout(group: str, lsn: int, held: Iterable[tuple[str, int, str]]) -> str:
    """Why a drain timed out with rows held back from before the fence, and where to look."""
    return (
        f"drain timed out: group {group} applied past the fence LSN {lsn_text(lsn)} but holds rows"
        f" back ({held_text(held)}); see `replicator status` and `replicator errors list` (a row they"
        " wait for that never comes: rejected by its spec rule, a NOT DEFERRABLE foreign-key cycle"
        " in the target, or a NOT DEFERRABLE target unique constraint whose values the source swaps"
        " in one statement; `mapping check` warns about both)"
    )


def drained_report(done: Drained) -> tuple[dict[str, Any], str]:
    """`replicator drain`'s output: JSON (the fence LSN as a number, as before, and as text) and
    its text line."""
    data: dict[str, Any] = {
        "fence_lsn": done.fence_lsn,
        "fence_lsn_text": lsn_text(done.fence_lsn),
        "seconds": done.seconds,
        "end_offsets": {f"{t}[{p}]": o for (t, p), o in sorted(done.end_offsets.items())},
    }
    text = f"drained: fence LSN {lsn_text(done.fence_lsn)} applied in {done.seconds:.1f}s"
    if done.held_waited:
        data["held_wait_s"] = done.held_wait_s
        data["held_waited"] = [{"table": t, "rows": n, "waiting_for": w} for t, n, w in done.held_waited]
        text += (
            f" ({done.held_wait_s:.1f}s of it waiting for held rows, at most"
            f" {sum(n for _, n, _ in done.held_waited)}: {held_text(done.held_waited)})"
        )
    return data, text


def behind(ends: Mapping[Partition, int], stored: Mapping[Partition, int]) -> list[str]:
    """The partitions whose stored offset has not reached the end offset read after the fence:
    `<topic>[<partition>] at <stored> of <end>`."""
    return [
        f"{t}[{p}] at {stored.get((t, p), 0)} of {end}"
        for (t, p), end in sorted(ends.items())
        if stored.get((t, p), 0) < end
    ]


def applied_timeout(group: str, lagging: list[str], shown: int = 10) -> str:
    """What a drain timed out waiting for when the group did not apply up to the end offsets: the
    partitions behind (the first `shown`), and the likely cause."""
    more = f" and {len(lagging) - shown} more" if len(lagging) > shown else ""
    return (
        f"group {group} to apply up to the end offsets read after the fence; behind: "
        f"{', '.join(lagging[:shown])}{more} (is a `replicator run` of this group running? see"
        " `replicator status`)"
    )


def held_text(held: Iterable[tuple[str, int, str]]) -> str:
    """Held rows per table, one clause each: `<table>: <n> rows wait for <what>; ...`."""
    return "; ".join(f"{table}: {n} rows wait for {what}" for table, n, what in held)
