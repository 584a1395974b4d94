"""`replicator connectors apply` refuses a Debezium PostgreSQL connector config under which values
arrive changed where no decoder can tell (`connect.configs.silent_loss_settings`): numerics as
floats, times cut to milliseconds, a NULL written as its column's DEFAULT by the JsonConverter.
Every shipped config passes; a refused one names its file, the setting and the fix, and nothing
is sent to Connect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicator.config import Settings
from replicator.connect.configs import (
    ConnectorConfigError,
    ConnectorSpec,
    load_connector,
    silent_loss_settings,
)
from replicator.run.connectors import apply_dir
from tests.unit.test_connector_files import FILES, AnyEnviron

DEMO = Path(__file__).resolve().parents[2] / "connectors" / "demo-postgres.json"


def demo_with(**changes: str | None) -> ConnectorSpec:
    spec = load_connector(DEMO, AnyEnviron())
    config = {k: v for k, v in spec.config.items() if k not in changes}
    config.update({k: v for k, v in changes.items() if v is not None})
    return ConnectorSpec(spec.name, config, spec.path)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_shipped_config_passes(path: Path) -> None:
    assert silent_loss_settings(load_connector(path, AnyEnviron())) == []


def test_debeziums_defaults_pass() -> None:
    """Left unset, the decimal and time modes are Debezium's lossless defaults (precise, adaptive)."""
    assert (
        silent_loss_settings(demo_with(**{"decimal.handling.mode": None, "time.precision.mode": None})) == []
    )


@pytest.mark.parametrize(
    ("setting", "value", "fix"),
    [
        ("decimal.handling.mode", "double", "decimal.handling.mode=precise"),
        ("time.precision.mode", "connect", "time.precision.mode=adaptive"),
        (
            "value.converter.replace.null.with.default",
            None,
            "value.converter.replace.null.with.default=false",
        ),
        (
            "value.converter.replace.null.with.default",
            "true",
            "value.converter.replace.null.with.default=false",
        ),
    ],
)
def test_a_lossy_setting_is_named_with_its_fix(setting: str, value: str | None, fix: str) -> None:
    (line,) = silent_loss_settings(demo_with(**{setting: value}))
    assert line.startswith(f"{DEMO}: {setting}") and line.endswith(f"; fix: {fix}")


def test_another_converter_or_connector_class_is_not_judged() -> None:
    avro = "io.apicurio.registry.utils.converter.AvroConverter"
    unset = {"value.converter.replace.null.with.default": None}
    assert silent_loss_settings(demo_with(**{"value.converter": avro, **unset})) == []
    assert (
        silent_loss_settings(demo_with(**{"connector.class": "x.Other", "decimal.handling.mode": "double"}))
        == []
    )


def test_apply_refuses_before_sending_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check runs before any request: the Connect URL here answers nothing."""
    monkeypatch.setenv("CDC_CONNECT_SECRETS", "/run/secrets")  # the demo file's only required variable
    doc = json.loads(DEMO.read_text(encoding="utf-8"))
    doc["config"]["decimal.handling.mode"] = "double"
    (tmp_path / "lossy.json").write_text(json.dumps(doc), encoding="utf-8")
    settings = Settings.model_validate({"connect": {"url": "http://127.0.0.1:9/", "timeout_s": 1}})
    with pytest.raises(ConnectorConfigError) as refused:
        apply_dir(settings, tmp_path)
    said = str(refused.value)
    assert "\n" not in said and said.endswith("(nothing was applied)")
    assert f"1 connector setting(s) would change values without an error: {tmp_path / 'lossy.json'}:" in said
