"""Integration fixtures: the real stack, addresses from the environment.

A missing or unhealthy stack fails every integration test loudly with the
reason and the fix; it is never turned into skips.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.integration.pipeline import MADE_TARGETS
from tests.integration.stack import Stack
from tests.integration.toxiproxy import Toxiproxy


@pytest.fixture(scope="session")
def stack() -> Stack:
    found = Stack.from_env()
    problems = found.problems()
    if problems:
        pytest.fail(
            "the integration stack is not reachable: "
            + "; ".join(problems)
            + ". Start it with `deploy/local/stack up` and export `deploy/local/stack env`,"
            " or point REPLICATOR_* at a running stack.",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def probe_source(stack: Stack) -> str:
    """The probe table and its publication on the source (for test-only connectors)."""
    with psycopg.connect(stack.source_admin(), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS probe")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS probe.items ("
            " id int PRIMARY KEY, name text, amount numeric(10,2), big text, tags text[])"
        )
        # EXTERNAL: out of line and uncompressed, so an untouched value is an unchanged TOAST value.
        conn.execute("ALTER TABLE probe.items ALTER COLUMN big SET STORAGE EXTERNAL")
        conn.execute("GRANT USAGE ON SCHEMA probe TO debezium")
        conn.execute("GRANT SELECT ON probe.items TO debezium")
        if not conn.execute("SELECT 1 FROM pg_publication WHERE pubname = 'cdc_probe'").fetchone():
            conn.execute("CREATE PUBLICATION cdc_probe FOR TABLE probe.items")
    return "cdc_probe"


@pytest.fixture(scope="session", autouse=True)
def made_targets_dropped() -> Iterator[None]:
    """The session's fresh target databases are dropped when it ends (a suite run makes a few
    hundred; kept, they filled a disk within a few runs). CDC_KEEP_TEST_DATABASES=1 keeps them."""
    yield
    if not MADE_TARGETS or os.environ.get("CDC_KEEP_TEST_DATABASES") == "1":
        return
    try:
        with psycopg.connect(Stack.from_env().target_admin("postgres"), autocommit=True) as conn:
            for name in MADE_TARGETS:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except psycopg.Error as exc:  # the tests' verdict stands; the leftovers are only named
        warnings.warn(f"test target databases not dropped ({exc}): {', '.join(MADE_TARGETS)}", stacklevel=1)


@pytest.fixture
def toxiproxy() -> Iterator[Toxiproxy]:
    """The stack's Toxiproxy with every proxy reset (enabled, no toxics) before and after."""
    proxy = Toxiproxy.from_env()
    proxy.reset()
    yield proxy
    proxy.reset()
