"""Integration fixtures: the real stack, addresses from the environment.

A missing or unhealthy stack fails every integration test loudly with the
reason and the fix; it is never turned into skips.
"""

from __future__ import annotations

import pytest

from tests.integration.stack import Stack


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
