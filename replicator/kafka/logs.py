"""librdkafka's log lines as our events (I/O edge): every client the package builds logs through
`KAFKA_LOGGER`, whose handler turns each line into one `kafka_log` event: rate-limited per facility
(the first line of a burst, then one line per window with how many were suppressed) and, where a
setting fixes it, naming that setting. Without a route (a one-shot command), lines go to stderr
in the same form.

A client that asks one question and closes (`kafka.clients.Metadata`) logs through its own
`FirstAnswer` instead: its lines wait until the brokers first answer it, then pass on to
`KAFKA_LOGGER` in order. When no answer comes, the command's one-line error (which names the
address and the fix) says what they said, and they are dropped, with the ones the client logs
until it is closed: the operator reads one line, not librdkafka's beside ours. Lines of a client
run with librdkafka's `debug` are never held."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

WINDOW_S = 30.0  # per facility: one line per window after the first

KAFKA_LOGGER = logging.getLogger("replicator.librdkafka")
KAFKA_LOGGER.propagate = False  # never the root logger's raw format
KAFKA_LOGGER.setLevel(logging.WARNING)

_LEVELS = {logging.ERROR: "error", logging.WARNING: "warning", logging.CRITICAL: "error"}
_FIXES = (
    ("Connect to", "check REPLICATOR_KAFKA__BOOTSTRAP_SERVERS and that the broker is up"),
    ("Failed to resolve", "check the host names in REPLICATOR_KAFKA__BOOTSTRAP_SERVERS"),
    ("SASL", "check REPLICATOR_KAFKA__SASL_* and REPLICATOR_KAFKA__OPTIONS"),
    ("SSL", "check the ssl.* entries of REPLICATOR_KAFKA__OPTIONS"),
)

Emit = Callable[..., None]


def fix_for(message: str) -> str | None:
    return next((fix for needle, fix in _FIXES if needle in message), None)


class RateLimit:
    """Per key: the first occurrence passes; later ones within `window_s` are counted, and the
    first after the window passes with that count."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._since: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """None: suppress this one; else the number suppressed since the last admitted."""
        now = self._clock()
        since = self._since.get(key)
        if since is not None and now - since < self._window_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._since[key] = now
        return self._suppressed.pop(key, 0)


def _stderr(kind: str, **fields: Any) -> None:
    print(
        f"kafka: {fields['level']}: {fields['message']}"
        + (f"; fix: {fields['fix']}" if fields.get("fix") else ""),
        file=sys.stderr,
    )


class _ToEvents(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.emit_event: Emit = _stderr
        self.limit = RateLimit(WINDOW_S)
        self._lock_admit = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        facility = str(args[0]) if len(args) == 3 else "log"
        message = str(args[2]) if len(args) == 3 else record.getMessage()
        with self._lock_admit:
            suppressed = self.limit.admit(facility)
        if suppressed is None:
            return
        fields: dict[str, Any] = {
            "level": _LEVELS.get(record.levelno, "warning"),
            "facility": facility,
            "message": message,
            "suppressed": suppressed,
        }
        fix = fix_for(message)
        if fix:
            fields["fix"] = fix
        self.emit_event("kafka_log", **fields)


_HANDLER = _ToEvents()
KAFKA_LOGGER.addHandler(_HANDLER)


def route_kafka_logs(emit: Emit) -> None:
    """Send librdkafka's lines to `emit(kind, **fields)` (a run's log) from now on."""
    _HANDLER.emit_event = emit


_THREAD = re.compile(r"^\[thrd:[^\]]*\]: ")  # librdkafka's thread tag, not the operator's concern


class FirstAnswer:
    """A one-shot client's librdkafka lines (its `logger`): held until `answered()`, then passed to
    `KAFKA_LOGGER` in order (and every later line at once); after `failed()` dropped (the caller's
    error carries what they said). `closed()` passes what is still held: nobody reported it."""

    def __init__(self, hold: bool = True) -> None:
        self._lock = threading.Lock()
        self._held: list[tuple[int, str, tuple[Any, ...]]] = []
        self._state: Literal["holding", "passing", "dropping"] = "holding" if hold else "passing"

    def log(self, level: int, msg: str, *args: Any) -> None:
        """What librdkafka calls (from its own threads, or a poll), as `logging.Logger.log`."""
        with self._lock:  # held while passing too: a line never overtakes the held ones
            if self._state == "holding":
                self._held.append((level, msg, args))
            elif self._state == "passing":
                KAFKA_LOGGER.log(level, msg, *args)

    def answered(self) -> None:
        self._pass()

    def failed(self) -> list[str]:
        """The held lines of warning level or worse (their text), dropped from now on."""
        with self._lock:
            held, self._held = self._held, []
            if self._state == "holding":
                self._state = "dropping"
        said = (str(a[2]) if len(a) == 3 else m % a for lvl, m, a in held if lvl >= logging.WARNING)
        return [_THREAD.sub("", line) for line in said]

    def closed(self) -> None:
        self._pass()

    def _pass(self) -> None:
        with self._lock:
            if self._state == "holding":
                self._state = "passing"
            for level, msg, args in self._held:
                KAFKA_LOGGER.log(level, msg, *args)
            self._held = []
