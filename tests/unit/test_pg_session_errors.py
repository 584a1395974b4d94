"""pg.session.connect: a refused login or a missing database names the settings that fix it.

psycopg gives no SQLSTATE for a failed connection attempt; before this, a wrong password was
"unreachable ...; check REPLICATOR_TARGET__HOST / REPLICATOR_TARGET__PORT" and Transient.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from replicator.config import TargetSettings
from replicator.core.errors import Fatal, Transient
from replicator.pg import session

PREFIX = 'connection failed: connection to server at "127.0.0.1", port 55433 failed: FATAL:  '


def refuse(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise psycopg.OperationalError(PREFIX + text)

    monkeypatch.setattr(psycopg, "connect", fail)


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        (
            'password authentication failed for user "replicator"',
            "REPLICATOR_TARGET__USER / REPLICATOR_TARGET__PASSWORD",
        ),
        ('role "nobody" does not exist', "REPLICATOR_TARGET__USER / REPLICATOR_TARGET__PASSWORD"),
        ('no pg_hba.conf entry for host "10.0.0.1", user "r", database "d"', "REPLICATOR_TARGET__USER"),
        ('database "nodb" does not exist', "REPLICATOR_TARGET__DBNAME"),
    ],
)
def test_a_refused_login_or_missing_database_is_fatal_and_names_its_settings(
    monkeypatch: pytest.MonkeyPatch, text: str, fix: str
) -> None:
    refuse(monkeypatch, text)
    with pytest.raises(Fatal) as caught:
        session.connect(TargetSettings(password="secret-pw"), "target")
    message = str(caught.value)
    assert f"fix: {fix}" in message and "HOST" not in message and "secret-pw" not in message


def test_a_server_that_does_not_answer_is_transient_and_names_host_and_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise psycopg.OperationalError('connection failed: connection to server at "127.0.0.1" refused')

    monkeypatch.setattr(psycopg, "connect", fail)
    with pytest.raises(Transient, match="REPLICATOR_TARGET__HOST / REPLICATOR_TARGET__PORT"):
        session.connect(TargetSettings(), "target")
