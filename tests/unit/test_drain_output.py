"""`replicator drain` shows its fence LSN as PostgreSQL prints it (`X/Y`), as cutover does, in its
text line and its timeout errors; the JSON keeps the number scripts read and adds the text. A drain
that times out waiting for the group names the partitions behind as its last poll found them. A
drain (and a cutover's) that waits for held rows says so while it waits and in its result."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from replicator.config import Settings
from replicator.core.errors import Fatal
from replicator.run import cutover as cutover_module
from replicator.run import drain as drain_module
from replicator.run.drain import Drained, applied_timeout, behind, drained_report, held_timeout
from replicator.target.store import ControlStore

FENCE = 850327168  # trial 7's fence: 0/32AEF680


def test_the_drained_line_shows_the_fence_lsn_as_postgresql_prints_it() -> None:
    _, text = drained_report(Drained(FENCE, {("demo.shop.orders", 0): 504}, 2.04))
    assert text == "drained: fence LSN 0/32AEF680 applied in 2.0s"


def test_the_json_keeps_the_numeric_fence_lsn_and_adds_its_text() -> None:
    data, _ = drained_report(Drained(FENCE, {("demo.shop.orders", 0): 504}, 2.0))
    assert data == {
        "fence_lsn": FENCE,
        "fence_lsn_text": "0/32AEF680",
        "seconds": 2.0,
        "end_offsets": {"demo.shop.orders[0]": 504},
    }


def test_the_held_rows_timeout_names_the_fence_lsn_as_postgresql_prints_it() -> None:
    line = held_timeout("g1", FENCE, [("sales.order", 3, "crm.customer")])
    assert line.startswith("drain timed out: group g1 applied past the fence LSN 0/32AEF680 but holds")
    assert "(sales.order: 3 rows wait for crm.customer)" in line
    assert str(FENCE) not in line and "\n" not in line
    # trial 10: boards swapping slugs under a NOT DEFERRABLE target unique held the drain, and the
    # line named only FK cycles
    assert "NOT DEFERRABLE target unique constraint whose values the source swaps" in line


def test_the_apply_timeout_names_the_partitions_behind_not_every_end_offset() -> None:
    """Trial 7: the timeout printed the raw Python dict of every end offset. It names the partitions
    whose stored offset is short of its end, where each stands, and what to check."""
    ends = {("t", 0): 10, ("t", 1): 5, ("u", 0): 0, ("u", 1): 7}
    lagging = behind(ends, {("t", 0): 10, ("t", 1): 3})
    assert lagging == ["t[1] at 3 of 5", "u[1] at 0 of 7"]
    line = applied_timeout("g1", lagging)
    assert line == (
        "group g1 to apply up to the end offsets read after the fence; behind: t[1] at 3 of 5,"
        " u[1] at 0 of 7 (is a `replicator run` of this group running? see `replicator status`)"
    )
    assert applied_timeout("g1", [f"t[{i}] at 0 of 1" for i in range(12)]).count(" of 1") == 10
    assert "and 2 more" in applied_timeout("g1", [f"t[{i}] at 0 of 1" for i in range(12)])


class _Clock:
    """`time` for the drain: each poll's sleep moves it on; nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_drain_timeout_names_the_partitions_behind_at_its_last_look(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The group moved between the polls: the timeout says where each partition stood at the last
    one (the list that poll found, not one read again)."""
    looks = iter([{("t", 0): 1}, {("t", 0): 4, ("t", 1): 2}, {("t", 0): 10, ("t", 1): 3}])

    class Store:
        def initialized(self) -> bool:
            return True

        def stops(self, group: str) -> list[dict[str, Any]]:
            return []

        def checkpoints(self, group: str) -> dict[tuple[str, int], int]:
            return next(looks)

    class Client:
        def __init__(self, url: str, timeout_s: float) -> None:
            self.url = url

        def flushed_lsn(self, connector: str) -> int:
            return FENCE

    @contextmanager
    def store(settings: Settings) -> Iterator[Store]:
        yield Store()

    @contextmanager
    def metadata(settings: Any) -> Iterator[Any]:
        yield SimpleNamespace(end_offsets=lambda topics: {("t", 0): 10, ("t", 1): 5})

    monkeypatch.setattr(drain_module, "time", _Clock())
    monkeypatch.setattr(drain_module, "check_capture", lambda client, connector: None)
    monkeypatch.setattr(drain_module, "ConnectClient", Client)
    monkeypatch.setattr(drain_module, "write_fence", lambda source, table: ("fence-1", FENCE))
    monkeypatch.setattr(drain_module, "Metadata", metadata)
    monkeypatch.setattr(ControlStore, "open", store)
    with pytest.raises(Fatal) as raised:
        drain_module.drain(Settings(), ["t"], "c", "s.signal", timeout_s=0.4, group="g1")
    assert str(raised.value) == (
        "drain timed out waiting for group g1 to apply up to the end offsets read after the fence;"
        " behind: t[1] at 3 of 5 (is a `replicator run` of this group running? see `replicator status`)"
    )


def test_a_drain_slowed_by_held_rows_says_so_while_it_waits_and_when_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cutover's drain took 67-70 s waiting for held rows (children of filtered-out users turned
    into error records level by level) and said nothing of it. While held rows alone keep it
    waiting, the drain says every 5 s how many and what they wait for, and its result line says how
    long they kept it waiting."""
    clock = _Clock()
    held = [("app.project", 40, "app.account"), ("app.task", 70, "app.project")]
    looks = iter([held] * 30 + [held[1:]] * 20 + [[]])  # a poll every 0.25 s
    hastened: list[tuple[str, int, float]] = []  # the held rows made due at the next retry

    class Store:
        def initialized(self) -> bool:
            return True

        def stops(self, group: str) -> list[dict[str, Any]]:
            return []

        def checkpoints(self, group: str) -> dict[tuple[str, int], int]:
            return {("t", 0): 10}

        def held_before(self, group: str, lsn: int) -> list[tuple[str, int, str]]:
            return next(looks)

        def hasten_held(self, group: str, lsn: int) -> int:
            hastened.append((group, lsn, clock.monotonic()))
            return 1

    class Client:
        def __init__(self, url: str, timeout_s: float) -> None:
            self.url = url

        def flushed_lsn(self, connector: str) -> int:
            return FENCE

    @contextmanager
    def store(settings: Settings) -> Iterator[Store]:
        yield Store()

    @contextmanager
    def metadata(settings: Any) -> Iterator[Any]:
        yield SimpleNamespace(end_offsets=lambda topics: {("t", 0): 10})

    monkeypatch.setattr(drain_module, "time", clock)
    monkeypatch.setattr(drain_module, "check_capture", lambda client, connector: None)
    monkeypatch.setattr(drain_module, "ConnectClient", Client)
    monkeypatch.setattr(drain_module, "write_fence", lambda source, table: ("fence-1", FENCE))
    monkeypatch.setattr(drain_module, "Metadata", metadata)
    monkeypatch.setattr(ControlStore, "open", store)
    said: list[str] = []
    done = drain_module.drain(Settings(), ["t"], "c", "s.signal", timeout_s=60, group="g1", say=said.append)
    assert said == [
        "drain: applied past the fence LSN 0/32AEF680; waiting 0s for 110 held rows (app.project: 40 rows"
        " wait for app.account; app.task: 70 rows wait for app.project)",
        "drain: applied past the fence LSN 0/32AEF680; waiting 5s for 110 held rows (app.project: 40 rows"
        " wait for app.account; app.task: 70 rows wait for app.project)",
        "drain: applied past the fence LSN 0/32AEF680; waiting 10s for 70 held rows (app.task: 70 rows"
        " wait for app.project)",
    ]
    # each time it says so, it makes the held rows due at the daemons' next retry (not after their
    # backoff: up to 32 s each, trial 10's cutover window of 36.6 s)
    start = hastened[0][2]
    assert [(g, lsn, t - start) for g, lsn, t in hastened] == [
        ("g1", FENCE, 0.0),
        ("g1", FENCE, 5.0),
        ("g1", FENCE, 10.0),
    ]
    data, text = drained_report(done)
    assert text == (
        "drained: fence LSN 0/32AEF680 applied in 12.5s (12.5s of it waiting for held rows, at most 110:"
        " app.project: 40 rows wait for app.account; app.task: 70 rows wait for app.project)"
    )
    assert (data["held_wait_s"], data["held_waited"][0]) == (
        12.5,
        {"table": "app.project", "rows": 40, "waiting_for": "app.account"},
    )
    # a drain that never waited for held rows says nothing more than before
    assert drained_report(Drained(FENCE, {}, 2.0))[1] == "drained: fence LSN 0/32AEF680 applied in 2.0s"


def test_a_cutover_drain_slowed_by_held_rows_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cutover's drain too: every 5 s while only held rows keep it waiting, and in its line."""
    clock = _Clock()
    held = [{"table": "app.task", "held": 70, "waiting_for": "app.project"}]
    looks = iter([held] * 30 + [[]])  # a poll every 0.25 s

    class Store:
        def stops(self, group: str) -> list[dict[str, Any]]:
            return []

        def checkpoints(self, group: str) -> dict[tuple[str, int], int]:
            return {("t", 0): 10}

        def fence_seen(self, fence_id: str) -> bool:
            return True

        def held_summary(self, group: str) -> list[dict[str, Any]]:
            return next(looks)

        def hasten_held(self, group: str, lsn: int) -> int:
            hastened.append((group, lsn))
            return 1

    hastened: list[tuple[str, int]] = []  # the held rows made due at the next retry, each time it says so

    class Drainer(cutover_module.Cutover):
        connector = "c"
        signal_topic = "s"

        def __init__(self) -> None:
            self.said: list[str] = []
            self.say = self.said.append
            self.group = "g1"
            self.settings = Settings()
            self.plan = SimpleNamespace(topics=["t"])  # type: ignore[assignment]
            self.connect_client = SimpleNamespace(  # type: ignore[assignment]
                state=lambda c: SimpleNamespace(failed=False, connector="RUNNING", tasks=[]),
                flushed_lsn=lambda c: FENCE,
            )

        @contextmanager
        def _store(self) -> Iterator[Any]:
            yield Store()

        def _verify(self, options: Any) -> list[Any]:
            return []

        def _move(self, record: Any, step: Any, **fields: Any) -> Any:
            return None

    @contextmanager
    def metadata(settings: Any) -> Iterator[Any]:
        yield SimpleNamespace(end_offsets=lambda topics: {("t", 0): 10})

    monkeypatch.setattr(cutover_module, "time", clock)
    monkeypatch.setattr(cutover_module, "Metadata", metadata)
    c = Drainer()
    c._drain({"fence_id": "f", "fence_lsn": FENCE}, SimpleNamespace(timeout_s=60))  # type: ignore[arg-type]
    line = (
        "drain: applied past the fence LSN 0/32AEF680; waiting {}s for 70 held rows"
        " (app.task: 70 rows wait for app.project)"
    )
    assert hastened == [("g1", FENCE), ("g1", FENCE)]
    assert c.said == [
        line.format(0),
        line.format(5),
        "drained in 7.5s (7.5s of it waiting for held rows), verified in 0.0s: everything before the"
        " fence is in the target",
    ]
