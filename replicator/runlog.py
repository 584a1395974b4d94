"""The execution log: one structured line per run start, batch and end.

Text (`key=value`) or JSON lines on stderr; every line carries the run id.
Only summaries that the caller built go in: never settings with secrets.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any, TextIO


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


class RunLog:
    def __init__(self, run_id: str, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.run_id = run_id
        self.fmt = fmt
        self.stream = stream or sys.stderr

    def event(self, kind: str, **fields: Any) -> None:
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S"), "run": self.run_id, "event": kind, **fields}
        if self.fmt == "json":
            line = json.dumps(record, default=str, sort_keys=False)
        else:
            line = " ".join(f"{k}={_text(v)}" for k, v in record.items())
        print(line, file=self.stream, flush=True)


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "-"
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text
