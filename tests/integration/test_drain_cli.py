"""`replicator drain` against the real source: a signal table that does not exist is one line
naming the fix (the SQL that creates it), never a raw `relation ... does not exist`."""

from __future__ import annotations

import os
import uuid

from tests.integration.pipeline import run_cli
from tests.integration.stack import Stack


def test_missing_signal_table_is_one_line_naming_the_fix(stack: Stack) -> None:
    missing = f"shop.no_signal_{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "REPLICATOR_SIGNAL_TABLE": missing}
    done = run_cli(env, "drain", "--timeout", "30")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"the signal table {missing} does not exist in the source; fix: create it" in lines[0]
    assert f"CREATE TABLE {missing} (id varchar(42) PRIMARY KEY" in lines[0]
    assert "Traceback" not in done.stderr
