"""psycopg's own warnings (an error it ignores while ending a COPY on a lost connection) become
`pg_log` events of the run, not raw lines on stderr (trial 17)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from replicator.pg import logs
from replicator.pg.logs import route_psycopg_logs


def test_psycopg_warnings_become_events_of_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    route_psycopg_logs(lambda kind, **fields: seen.append((kind, fields)))
    try:
        logging.getLogger("psycopg").warning(
            "error ignored terminating %r: %s", "<psycopg.Copy [BAD]>", "the connection is lost"
        )
        logging.getLogger("psycopg").debug("not a warning")
    finally:
        route_psycopg_logs(logs._stderr)
    message = "error ignored terminating '<psycopg.Copy [BAD]>': the connection is lost"
    assert seen == [("pg_log", {"level": "warning", "message": message})]
    assert capsys.readouterr().err == ""


def test_before_a_run_routes_them_they_are_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("psycopg.pool").error("a pool line\nover two lines")
    assert capsys.readouterr().err == "psycopg: error: a pool line over two lines\n"
