"""docs/settings.md is the settings model, rendered (`python -m replicator.settings_reference`).

Proves: the checked-in file equals what the model renders now (so a new or changed field fails
here until the file is regenerated); every documented variable is really read by the settings
model under that name; secret defaults are never printed; a field without a description is
refused; every `REPLICATOR_*` name the package reads is documented.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, SecretStr

from replicator import settings_reference
from replicator.config import Settings, load_settings
from replicator.settings_reference import MissingDescription, Row, render, rows

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "settings.md"


def test_docs_settings_md_is_in_sync_with_the_model() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/settings.md is out of date: run `python -m replicator.settings_reference > docs/settings.md`"
    )


def test_a_changed_model_changes_the_reference() -> None:
    """The sync check can fail: a model with one more field renders differently."""

    class Extra(Settings):
        brand_new: int = Field(default=3, description="a field added after the file was generated")

    assert "`REPLICATOR_BRAND_NEW` | integer | `3` |" in render(Extra)
    assert render(Extra) != render()


def _value_for(row: Row) -> tuple[str, Any]:
    """An environment value for the variable's type, different from its default, and its parsed form."""
    kind = row.type
    if row.variable == "REPLICATOR_CUTOVER__SEQUENCES":  # validated: source=target pairs
        return "a.x=b.y", "a.x=b.y"
    if kind.startswith("one of "):
        choices = re.findall(r"`([^`]+)`", kind)
        choice = next(c for c in reversed(choices) if f"`{c}`" != row.default)
        return choice, choice
    if kind.startswith("integer"):
        number = int(row.default.strip("`")) + 1
        return str(number), number
    if kind.startswith("number"):
        real = float(row.default.strip("`")) + 0.5
        return str(real), real
    if kind.startswith("boolean"):
        flipped = row.default != "`True`"
        return str(flipped).lower(), flipped
    if kind.startswith("JSON object"):
        return '{"k": "v"}', {"k": "v"}
    if kind.startswith("path"):
        return "other/spec.yaml", Path("other/spec.yaml")
    return "set-from-env", "set-from-env"


@pytest.mark.parametrize("row", [r for _, r in rows()], ids=lambda r: r.variable)
def test_every_documented_variable_is_read_under_that_name(row: Row, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, parsed = _value_for(row)
    monkeypatch.setenv(row.variable, raw)
    value: Any = load_settings()
    for part in row.path:
        value = getattr(value, part)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    assert value == parsed


def test_secret_defaults_are_never_printed() -> None:
    class Db(BaseModel):
        """A database."""

        password: SecretStr = Field(default=SecretStr("hunter2-sentinel"), description="its password")
        token: SecretStr | None = Field(default=None, description="an optional secret")

    class Model(BaseModel):
        db: Db = Field(default_factory=Db)

    text = render(Model)
    assert "hunter2-sentinel" not in text
    assert "| `REPLICATOR_DB__PASSWORD` | secret string | (secret) | its password |" in text
    assert "| `REPLICATOR_DB__TOKEN` | secret string, optional | unset |" in text
    shipped = {r.variable: r.default for _, r in rows() if "secret" in r.type}
    assert shipped and set(shipped.values()) <= {"(secret)", "unset"}, shipped


def test_a_field_without_description_is_refused() -> None:
    class Bare(BaseModel):
        mode: Literal["a", "b"] = "a"

    with pytest.raises(MissingDescription, match=r"Bare\.mode has no description"):
        render(Bare)


def test_every_replicator_variable_the_package_reads_is_documented() -> None:
    documented = {r.variable for _, r in rows()} | {name for name, _ in settings_reference.OUTSIDE_THE_MODEL}
    used: set[str] = set()
    for path in (ROOT / "replicator").rglob("*.py"):
        used |= set(re.findall(r"\bREPLICATOR_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    used -= {name for name in used if name.endswith("__")}  # prefixes in messages, not variables
    assert used, "the scan finds the variables the package names"
    assert sorted(used - documented) == []
