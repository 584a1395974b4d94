"""The tree shows the architecture, and this test keeps it true.

- `replicator/core/` is pure: no driver (psycopg other than `psycopg.sql`,
  confluent_kafka), no network (urllib, socket, http), no subprocess, and no
  import of an edge package or of the settings/CLI/loop layers.
- `cli.py` parses and dispatches: no driver import and no SQL.
The check reads import statements (top level and inside functions) with `ast`,
so it cannot be fooled by an import hidden in a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "replicator"
CORE = PACKAGE / "core"

FORBIDDEN_IN_CORE = (
    "psycopg",
    "confluent_kafka",
    "urllib",
    "socket",
    "http",
    "subprocess",
    "requests",
    "replicator.kafka",
    "replicator.pg",
    "replicator.target",
    "replicator.source",
    "replicator.connect",
    "replicator.run",
    "replicator.cli",
    "replicator.config",
    "replicator.failpoints",
    "replicator.runlog",
)
ALLOWED_IN_CORE = ("psycopg.sql",)  # composing statements needs no connection
DRIVERS = ("psycopg", "confluent_kafka", "urllib", "socket")


def imports(source: str) -> list[str]:
    """Every name an import statement in `source` brings in, dotted: `import a.b` gives `a.b`,
    `from a import b` gives `a.b` (so `from psycopg import sql` is `psycopg.sql`)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(source: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return [n for n in imports(source) if _under(n, forbidden) and not _under(n, allowed)]


CORE_MODULES = sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_is_pure(path: Path) -> None:
    bad = violations(path.read_text(encoding="utf-8"), FORBIDDEN_IN_CORE, ALLOWED_IN_CORE)
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}: the core must stay pure"


def test_core_has_modules() -> None:
    """The purity test checks something: the core is where the pure code lives."""
    names = {p.stem for p in CORE_MODULES}
    assert {"model", "decode", "values", "intents", "resolve", "ordering", "diff", "serialize"} <= names


def test_planted_driver_import_in_core_is_caught() -> None:
    """The check fails on a planted `import psycopg` (and a hidden one inside a function)."""
    clean = "from psycopg import sql\nfrom replicator.core.model import Op\n"
    assert violations(clean, FORBIDDEN_IN_CORE, ALLOWED_IN_CORE) == []
    assert violations(clean + "import psycopg\n", FORBIDDEN_IN_CORE, ALLOWED_IN_CORE) == ["psycopg"]
    hidden = clean + "def f():\n    from confluent_kafka import Consumer\n"
    assert violations(hidden, FORBIDDEN_IN_CORE, ALLOWED_IN_CORE) == ["confluent_kafka.Consumer"]
    edge = clean + "from replicator.target.store import ControlStore\n"
    assert violations(edge, FORBIDDEN_IN_CORE, ALLOWED_IN_CORE) == ["replicator.target.store.ControlStore"]
    errors = clean + "from psycopg import errors\n"
    assert violations(errors, FORBIDDEN_IN_CORE, ALLOWED_IN_CORE) == ["psycopg.errors"]


def test_cli_has_no_driver_import_and_no_sql() -> None:
    source = (PACKAGE / "cli.py").read_text(encoding="utf-8")
    assert violations(source, DRIVERS) == []
    assert "sql.SQL" not in source and "execute(" not in source


def test_every_package_folder_says_what_it_is() -> None:
    """Each layer opens with a docstring stating its job (the tree is the architecture)."""
    for folder in ("core", "kafka", "pg", "target", "source", "connect", "run"):
        init = PACKAGE / folder / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), folder
