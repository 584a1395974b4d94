"""Where drain and FK holding find the connector and its signal table: flags, then settings
(REPLICATOR_CONNECTOR / REPLICATOR_SIGNAL_TABLE), then the spec's `capture:` block; never the
demo's names, and a clear one-line error naming every way to set them."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config import load_settings
from replicator.core.errors import Fatal
from replicator.core.model import TableRef
from replicator.run.assembly import capture

SPEC = """\
version: 1
topic_prefix: app
{capture}tables:
  - id: t
    source: app.t
    target: app.t
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: ignore}}
    columns: {{v: {{from: v}}}}
"""


def settings_for(tmp_path: Path, capture_block: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    spec = tmp_path / "app.yaml"
    spec.write_text(SPEC.format(capture=capture_block))
    monkeypatch.delenv("REPLICATOR_CONNECTOR", raising=False)
    monkeypatch.delenv("REPLICATOR_SIGNAL_TABLE", raising=False)
    monkeypatch.setenv("REPLICATOR_MAPPING", str(spec))
    return spec


def test_spec_capture_block_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_for(tmp_path, "capture: {connector: app-pg, signal_table: ops.signal}\n", monkeypatch)
    got = capture(load_settings(None))
    assert (got.need_connector("drain"), got.need_signal_table("drain")) == (
        "app-pg",
        TableRef("ops", "signal"),
    )


def test_settings_override_the_spec_and_flags_override_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_for(tmp_path, "capture: {connector: app-pg, signal_table: ops.signal}\n", monkeypatch)
    monkeypatch.setenv("REPLICATOR_CONNECTOR", "env-pg")
    monkeypatch.setenv("REPLICATOR_SIGNAL_TABLE", "env.signal")
    settings = load_settings(None)
    got = capture(settings)
    assert (got.connector, got.signal_table) == ("env-pg", TableRef("env", "signal"))
    got = capture(settings, "flag-pg", "flag.signal")
    assert (got.connector, got.signal_table) == ("flag-pg", TableRef("flag", "signal"))


def test_nothing_configured_is_one_line_naming_every_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_for(tmp_path, "", monkeypatch)
    got = capture(load_settings(None))
    with pytest.raises(Fatal) as exc:
        got.need_connector("drain")
    assert "\n" not in str(exc.value)
    assert all(w in str(exc.value) for w in ("REPLICATOR_CONNECTOR", "--connector", "capture: {connector"))
    with pytest.raises(Fatal, match="REPLICATOR_SIGNAL_TABLE, pass --signal-table") as exc:
        got.need_signal_table("drain")
    assert "demo" not in str(exc.value) and "shop" not in str(exc.value)
