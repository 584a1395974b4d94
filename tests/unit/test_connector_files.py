"""Every connector config file we ship takes its secrets through a Kafka config provider.

Proves: after `${VAR}` substitution (what `replicator connectors apply` sends), each secret-looking
field of every file in connectors/, tests/integration/connectors*/ and bench/connectors/ is a
provider reference (`${file:...}`, `${env:...}`, `${dir:...}`) that the Connect worker resolves,
never a value; so Connect's REST API and its config topic hold the reference
(end to end: tests/integration/test_connector_secrets.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from replicator.connect.configs import ConnectorConfigError, load_connector

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(
    [
        *ROOT.glob("connectors/*.json"),
        *ROOT.glob("tests/integration/connectors*/*.json"),
        *ROOT.glob("bench/connectors/*.json"),
    ]
)
SECRET_FIELD = re.compile(r"password|secret|\.key$|credentials|token", re.IGNORECASE)
REFERENCE = re.compile(r"^\$\{(file|env|dir):[^}]+\}$")


class AnyEnviron(Mapping[str, str]):
    """An environment where every variable is set (to a path made of its name), so any file substitutes."""

    def __getitem__(self, key: str) -> str:
        return f"/run/{key.lower()}"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def secret_fields(path: Path) -> dict[str, str]:
    spec = load_connector(path, AnyEnviron())
    return {k: v for k, v in spec.config.items() if SECRET_FIELD.search(k)}


def test_the_shipped_files_are_found() -> None:
    assert ROOT / "connectors" / "demo-postgres.json" in FILES and len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_secrets_are_provider_references(path: Path) -> None:
    fields = secret_fields(path)
    assert "database.password" in fields
    inline = {k: v for k, v in fields.items() if not REFERENCE.match(v)}
    assert inline == {}, f"{path.name}: secret fields with a value instead of a provider reference"


def test_an_inlined_password_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"name": "x", "config": {"connector.class": "C", "database.password": "${CDC_DEBEZIUM_PASSWORD}"}}'
    )
    fields = secret_fields(bad)
    assert not REFERENCE.match(fields["database.password"])


def test_without_the_secrets_path_the_error_says_where_it_comes_from() -> None:
    with pytest.raises(ConnectorConfigError, match=r"CDC_CONNECT_SECRETS: the path of the Connect worker's"):
        load_connector(ROOT / "connectors" / "demo-postgres.json", {})
