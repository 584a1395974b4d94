"""Connector configs as files: `${VAR}` substitution and reading Connect's validation.

Pure: no HTTP here (see `connect_client.py`).

Invariants:
- `${NAME}` and `${NAME:-default}` are replaced from the given environment; a
  missing variable without a default is an error naming it and the file.
- Kafka's own config-provider references (`${env:NAME}`, `${file:path:key}`)
  contain a colon after the name and are left for the worker to resolve, so
  secrets can stay out of the connector config entirely.
- Secret-looking fields (password, secret, key material) are masked in
  everything this module returns for display.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replicator.core.errors import ReplicatorError

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_FIELD = re.compile(r"password|secret|\.key$|credentials|token", re.IGNORECASE)


class ConnectorConfigError(ReplicatorError):
    """A connector config file that cannot be used as it is; one line, names the fix."""


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    name: str
    config: Mapping[str, str]
    path: Path

    @property
    def connector_class(self) -> str:
        return self.config["connector.class"]

    def display_config(self) -> dict[str, str]:
        return mask_secrets(self.config)


def substitute(text: str, environ: Mapping[str, str], origin: str) -> str:
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or value == "":
            if default is None:
                missing.append(name)
                return match.group(0)
            return default
        return value

    result = _PLACEHOLDER.sub(replace, text)
    if missing:
        names = ", ".join(sorted(set(missing)))
        hint = (
            " (CDC_CONNECT_SECRETS: the path of the Connect worker's secrets file;"
            " `deploy/local/stack env` exports it)"
            if "CDC_CONNECT_SECRETS" in missing
            else ""
        )
        raise ConnectorConfigError(
            f"{origin}: environment variable(s) {names} not set and no default given; "
            "export them or write ${NAME:-default}" + hint
        )
    return result


def load_connector(path: Path, environ: Mapping[str, str]) -> ConnectorSpec:
    """Read one `{"name": ..., "config": {...}}` file with the environment substituted."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConnectorConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        # Substitute inside JSON strings only: decode first, then walk the values,
        # so a value containing quotes cannot change the document's structure.
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConnectorConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or "name" not in doc:
        raise ConnectorConfigError(f'{path}: expected {{"name": "...", "config": {{...}}}}')
    origin = str(path)
    name = substitute(str(doc["name"]), environ, origin)
    config = {str(k): substitute(str(v), environ, origin) for k, v in doc["config"].items()}
    if "connector.class" not in config:
        raise ConnectorConfigError(f"{path}: config has no connector.class")
    return ConnectorSpec(name=name, config=config, path=path)


_POSTGRES = "io.debezium.connector.postgresql.PostgresConnector"
_JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"


def silent_loss_settings(spec: ConnectorSpec) -> list[str]:
    """The settings of a Debezium PostgreSQL connector under which events arrive changed in a way
    no decoder can see (so the replicator would write wrong values without an error record), each
    naming its file, the setting, what it loses and the fix. Settings left to Debezium's defaults
    or to the worker's converters are not judged."""
    if spec.config.get("connector.class") != _POSTGRES:
        return []
    c, out = spec.config, []
    if c.get("decimal.handling.mode") == "double":
        out.append(
            "decimal.handling.mode=double rounds every numeric to a float; fix: decimal.handling.mode=precise"
        )
    if c.get("time.precision.mode") == "connect":
        out.append(
            "time.precision.mode=connect cuts time and timestamp values to milliseconds;"
            " fix: time.precision.mode=adaptive"
        )
    if (
        c.get("value.converter") == _JSON_CONVERTER
        and c.get("value.converter.replace.null.with.default") != "false"
    ):
        out.append(
            "value.converter.replace.null.with.default is not false: the JsonConverter writes a NULL"
            " in a nullable column with a DEFAULT as that DEFAULT;"
            " fix: value.converter.replace.null.with.default=false"
        )
    return [f"{spec.path}: {line}" for line in out]


def load_connector_dir(directory: Path, environ: Mapping[str, str]) -> list[ConnectorSpec]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise ConnectorConfigError(f"{directory}: no connector config (*.json) found")
    specs = [load_connector(f, environ) for f in files]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConnectorConfigError(f"{directory}: connector name(s) used twice: {', '.join(dupes)}")
    return specs


def mask_secrets(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("********" if _SECRET_FIELD.search(k) and v else v) for k, v in config.items()}


# Debezium reports connection failures on database.hostname whatever their cause;
# these name the field that is really wrong, and the fix.
_HINTS: tuple[tuple[str, str, str], ...] = (
    (
        "password authentication failed",
        "database.password",
        "the shipped configs read debezium.password from the worker's secrets file ($CDC_CONNECT_SECRETS,"
        " written by `deploy/local/stack up` from CDC_DEBEZIUM_PASSWORD): make it the role's password",
    ),
    ('role "', "database.user", "create the role or fix database.user"),
    ("does not exist", "database.dbname", "fix database.dbname or create the database"),
    (
        "Connection refused",
        "database.hostname/database.port",
        "is the source PostgreSQL up and are host and port right?",
    ),
)


def validation_errors(result: Mapping[str, Any]) -> list[str]:
    """Lines `field: message` from a PUT /connector-plugins/{class}/config/validate answer."""
    lines: list[str] = []
    for entry in result.get("configs", []):
        value = entry.get("value") or {}
        for message in value.get("errors") or []:
            text = " ".join(str(message).split())
            field = str(value.get("name", "?"))
            for needle, real_field, fix in _HINTS:
                if needle in text:
                    text = f"{text} (reported on {field}); fix: {fix}"
                    field = real_field
                    break
            lines.append(f"{field}: {text}")
    return lines


def config_differs(wanted: Mapping[str, str], current: Mapping[str, str]) -> bool:
    """True when the running connector's config is not the wanted one ("name" is implied)."""
    strip = {k: v for k, v in current.items() if k != "name"}
    return dict(wanted) != strip
