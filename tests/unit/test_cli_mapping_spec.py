"""`mapping check` and `mapping explain` take the spec from --mapping / REPLICATOR_MAPPING when no
SPEC is given (trial 2: runbook step 4 says `replicator mapping explain` for review, which was an
argparse error, "the following arguments are required: spec")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import replicator.run.mapping as mapping_cmd
from replicator import cli


class _Plan:
    def to_json(self) -> dict[str, Any]:
        return {}

    def explain(self) -> str:
        return "plan"


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    calls: list[tuple[str, Path]] = []

    def explain(settings: Any, spec: Path) -> _Plan:
        calls.append(("explain", spec))
        return _Plan()

    def check(settings: Any, spec: Path, scan: bool = False, say: Any = None) -> list[Any]:
        calls.append(("check", spec))
        return []

    monkeypatch.setattr(mapping_cmd, "explain_spec", explain)
    monkeypatch.setattr(mapping_cmd, "check_spec", check)
    return calls


def test_without_spec_the_setting_is_used(
    seen: list[tuple[str, Path]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REPLICATOR_MAPPING", str(tmp_path / "env.yaml"))
    assert cli.main(["mapping", "explain"]) == 0
    assert cli.main(["mapping", "check"]) == 0
    assert cli.main(["--mapping", str(tmp_path / "flag.yaml"), "mapping", "explain"]) == 0
    assert seen == [
        ("explain", tmp_path / "env.yaml"),
        ("check", tmp_path / "env.yaml"),
        ("explain", tmp_path / "flag.yaml"),
    ]


def test_an_explicit_spec_wins(seen: list[tuple[str, Path]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATOR_MAPPING", "env.yaml")
    assert cli.main(["mapping", "check", "given.yaml"]) == 0
    assert seen == [("check", Path("given.yaml"))]
