"""`replicator partitions accept --topic T --yes`: a topic's new partition count, accepted.

The supported way on after a topic's partition count changed (runbook step
10; why it is safe: `core.layout`). In this order, each step after the one
before is done:
1. the count Kafka shows is more than the recorded one (else nothing to
   accept: a topic cannot shrink in place);
2. the capture connector is stopped (STOPPED: its task is shut down, its
   producer closed, so every record it produced with the old count is in
   Kafka) and resumed (RUNNING again: a new producer, which reads the new
   count before its first record);
3. the end offsets of the partitions that existed before are read: from
   them on every record was produced with the new count; the group's
   checkpoints there (where the partitions stopped) start the transition,
   where either count may have been used (`core.layout`);
4. one target transaction records the layout and the new count, gives every
   group that reads the topic a checkpoint at the log start of each new
   partition, and ends the topic's `partitions` stops.
The running instances resume the topic within seconds (`run.partition_watch`).
A failure before step 4 records nothing: run it again (a later boundary is
as good). Then `replicator reload --table ...` re-emits every row into the new
layout, and `replicator verify` compares.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from replicator.config import Settings
from replicator.connect.client import ConnectClient, ConnectorState
from replicator.core.errors import ConfigError, Fatal
from replicator.core.layout import next_layout
from replicator.kafka.clients import Metadata
from replicator.run.assembly import capture, source_topics
from replicator.target.store import ControlStore

POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class Accepted:
    topic: str
    before: int
    partitions: int
    epoch: int
    starts: dict[str, int]  # "partition" -> from here on the new count only (old partitions)
    changed: dict[str, int]  # "partition" -> where the transition starts (the group's checkpoint)
    sources: tuple[str, ...]  # the source tables to reload

    @property
    def next_step(self) -> str:
        tables = " ".join(f"--table {s}" for s in self.sources)
        return f"replicator reload {tables}"


def accept_partitions(
    settings: Settings, topic: str, operator: str, timeout_s: float, say: Callable[[str], None]
) -> Accepted:
    sources = tuple(sorted(s for s, t in source_topics(settings).items() if t == topic))
    if not sources:
        mapped = ", ".join(sorted(set(source_topics(settings).values())))
        raise ConfigError(f"--topic {topic}: the spec maps no table from it (its topics: {mapped})")
    group = settings.kafka.group_id
    with ControlStore.open(settings) as store:
        store.require()
        recorded = store.recorded_partitions().get(topic)
        current = store.layouts().by_topic.get(topic, ())
        standing = store.checkpoints(group, [(topic, p) for p in range(recorded or 0)])
    with Metadata(settings.kafka) as metadata:
        found = metadata.partition_counts([topic]).get(topic)
    if recorded is None or found is None:
        raise Fatal(
            f"partitions accept: topic {topic} has "
            + ("no recorded count (no run read it yet)" if recorded is None else "no partitions in Kafka")
            + "; nothing to accept"
        )
    if found == recorded:
        raise Fatal(
            f"partitions accept: topic {topic} has {found} partitions, as recorded; nothing to accept"
        )
    if found < recorded:
        raise Fatal(
            f"partitions accept: topic {topic} has {found} partitions, {recorded} recorded: it was deleted"
            " and created again, which no accept can order; re-snapshot its tables into an empty target"
        )
    connector = capture(settings).need_connector("partitions accept")
    client = ConnectClient(settings.connect.url, settings.connect.timeout_s)
    deadline = time.monotonic() + timeout_s
    say(f"partitions accept: stopping connector {connector} (its producer still uses {recorded} partitions)")
    client.stop(connector)
    _wait(client, connector, deadline, "STOPPED", lambda s: s.connector == "STOPPED" and not s.tasks)
    client.resume(connector)
    _wait(client, connector, deadline, "RUNNING", lambda s: s.running)
    say(f"partitions accept: connector {connector} running again with {found} partitions")
    with Metadata(settings.kafka) as metadata:
        marks = {p: metadata.watermarks((topic, p)) for p in range(found)}
    old = {p: m for p, m in marks.items() if p < recorded}
    layout = next_layout(
        current,
        recorded,
        found,
        {p: high for p, (_, high) in old.items()},
        {p: standing.get((topic, p), low) for p, (low, _) in old.items()},  # never read: its log start
    )
    with ControlStore.open(settings) as store:
        store.accept_layout(topic, layout, {p: low for p, (low, _) in marks.items()}, operator)
    return Accepted(
        topic,
        recorded,
        found,
        layout.epoch,
        {str(p): o for p, o in enumerate(layout.starts)},
        {str(p): o for p, o in enumerate(layout.changed)},
        sources,
    )


def _wait(
    client: ConnectClient,
    connector: str,
    deadline: float,
    what: str,
    done: Callable[[ConnectorState], bool],
) -> None:
    while True:
        state = client.state(connector)
        if state is None:
            raise Fatal(f"partitions accept: connector {connector} does not exist; fix: REPLICATOR_CONNECTOR")
        if done(state):
            return
        if state.failed:
            first = state.cause
            raise Fatal(
                f"partitions accept: connector {connector} FAILED: {first}; nothing recorded: fix it"
                " (`replicator connectors apply --restart-failed`), then run the accept again"
            )
        if time.monotonic() > deadline:
            raise Fatal(
                f"partitions accept: connector {connector} not {what} in time (state {state.connector});"
                " nothing recorded: run the accept again with a longer --timeout"
            )
        time.sleep(POLL_S)  # polling Connect's status endpoint until the state is reached
