"""Settings: every host, port, credential, topic, group id and bound comes from outside.

Sources, later ones winning: defaults < a YAML config file (`--config`, or
`REPLICATOR_CONFIG_FILE`) < environment `REPLICATOR_*` (nested with `__`, e.g.
`REPLICATOR_TARGET__PORT`) < command-line flags. Secrets are `SecretStr`: they
never appear in `repr`, logs or `summary()`, and never travel on a command line.
Kafka and libpq TLS/SASL options pass through untouched (`kafka.options`,
`target.options`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from psycopg.conninfo import make_conninfo
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from replicator.core.errors import ConfigError
from replicator.core.model import TableRef
from replicator.core.sequence_pairs import parse_pairs


class PostgresSettings(BaseModel):
    """A PostgreSQL connection (libpq parameters)."""

    host: str = Field(default="127.0.0.1", description="host name or address")
    port: int = Field(default=5432, description="port")
    dbname: str = Field(default="postgres", description="database name")
    user: str = Field(default="postgres", description="role to log in as")
    password: SecretStr = Field(default=SecretStr(""), description="that role's password (empty: none sent)")
    connect_timeout: int = Field(default=10, description="seconds to wait for a connection")
    application_name: str = Field(
        default="cdc-replicator", description="shown in pg_stat_activity for the replicator's sessions"
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="extra libpq parameters as a JSON object (sslmode, sslrootcert, ...), e.g."
        ' `{"sslmode": "verify-full"}`',
    )

    def conninfo(self) -> str:
        """libpq connection string, password included: pass it to psycopg, never print it."""
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "connect_timeout": self.connect_timeout,
            "application_name": self.application_name,
            **self.options,
        }
        if self.password.get_secret_value():
            params["password"] = self.password.get_secret_value()
        return make_conninfo("", **params)

    def describe(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"


class SourceSettings(PostgresSettings):
    """The source database (catalog checks, drain's fence row, cutover). Defaults: the local demo."""

    port: int = Field(default=55432, description="port")
    dbname: str = Field(default="shop", description="database name")
    password: SecretStr = Field(default=SecretStr("postgres"), description="that role's password")


class TargetSettings(PostgresSettings):
    """The target database the replicator writes. Defaults: the local demo."""

    port: int = Field(default=55433, description="port")
    dbname: str = Field(default="shop_target", description="database name")
    user: str = Field(default="replicator", description="role to log in as (shadow mode: a read-only role)")
    password: SecretStr = Field(default=SecretStr("replicator"), description="that role's password")
    apply_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="a batch transaction whose connection is silent this long is cut and retried"
        " (a black-holed link or a lost COMMIT reply never raises by itself)",
    )


class KafkaSettings(BaseModel):
    """The Kafka consumer (librdkafka)."""

    bootstrap_servers: str = Field(default="127.0.0.1:59092", description="brokers, host:port[,host:port]")
    group_id: str = Field(
        default="cdc-replicator", description="consumer group; every process of one replicator shares it"
    )
    auto_offset_reset: Literal["earliest", "latest", "error"] = Field(
        default="earliest",
        description="where a partition without a stored position starts (`error`: refuse to start)",
    )
    session_timeout_ms: int = Field(
        default=45_000,
        description="a member silent this long loses its partitions (with an instance id, also how long"
        " a dead process's partitions wait before moving)",
    )
    max_poll_interval_ms: int = Field(
        default=300_000, description="the longest a batch may take before the member is considered stuck"
    )
    rejoin_timeout_s: float = Field(
        default=120.0,
        description="a member left without an assignment this long after joining or losing its partitions"
        " (librdkafka can stay stuck after a broker restart) rebuilds its consumer and joins again",
    )
    # Static membership: a restarted process with the same id gets its partitions back at once
    # (no rebalance, no wait for the dead member's session to expire). Unique per process.
    instance_id: str | None = Field(
        default=None,
        description="static group membership (`group.instance.id`): unique per process and stable across"
        " its restarts (e.g. the pod name), so a restarted process gets its partitions back at once",
    )
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (`sasl.password`); the other SASL properties go in options"
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="extra librdkafka properties as a JSON object (security.protocol, ssl.ca.location, ...)",
    )

    def consumer_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": self.auto_offset_reset,
            "session.timeout.ms": self.session_timeout_ms,
            "max.poll.interval.ms": self.max_poll_interval_ms,
            # A mapped topic that does not exist yet (a snapshot still starting) is
            # picked up within seconds, not after librdkafka's default 5 minutes.
            "topic.metadata.refresh.interval.ms": 5000,
            **self.options,
        }
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        return conf


class ConnectSettings(BaseModel):
    """The Kafka Connect worker's REST API."""

    url: str = Field(default="http://127.0.0.1:58083", description="REST API base URL")
    timeout_s: float = Field(default=30.0, description="seconds per REST request")
    wait_running_s: float = Field(
        default=120.0, description="`connectors apply`: how long to wait for a connector and its tasks to run"
    )
    settle_s: float = Field(
        default=5.0,
        ge=0,
        description="`connectors apply`: how long a connector and its tasks must stay RUNNING before apply"
        " reports them so (a task can fail on its first records, seconds after Connect said RUNNING)",
    )


class BatchSettings(BaseModel):
    """Bounds of one target transaction (invariant 4)."""

    max_events: int = Field(default=5000, ge=1, description="events per batch, at most")
    max_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="bytes of Kafka values per batch, at most"
    )
    max_ms: int = Field(default=500, ge=1, description="milliseconds a batch collects events, at most")


class HoldSettings(BaseModel):
    """Rows held back while a table they depend on lags (see core.holding)."""

    retry_after_s: float = Field(
        default=2.0,
        gt=0,
        description="retry a held event after this long, doubled per failed attempt (at most 16 times)",
    )
    retry_limit: int = Field(default=5000, ge=1, description="held events retried per batch, at most")
    mark_interval_s: float = Field(
        default=2.0, gt=0, description="how often Connect's committed position is read while rows are held"
    )


class CutoverSettings(BaseModel):
    """Gate bounds and the fence of `replicator cutover` (see core.cutover)."""

    app_roles: str = Field(
        default="shop_app",
        description="comma-separated source roles the application writes as; the fence revokes their writes",
    )
    max_lag_events: int = Field(default=1000, ge=0, description="gate: events not yet applied, per partition")
    max_retained_wal_bytes: int = Field(
        default=1024**3, ge=0, description="gate: WAL the replication slot holds back, at most"
    )
    max_held_age_s: float = Field(
        default=60.0,
        ge=0,
        description="gate: no row held back longer than this (younger ones are in motion while the "
        "application writes; the drain after the fence waits for them); 0: no held row at all",
    )
    timeout_s: float = Field(
        default=300.0, gt=0, description="the drain's deadline; past it the cutover aborts"
    )
    sequence_margin: int = Field(default=1000, ge=0, description="target sequences are set this far past")
    sequences: str = Field(
        default="",
        description="standalone sequences to carry whose names differ between source and target, "
        "comma-separated `source_schema.name=target_schema.name` (same-named ones are carried without it)",
    )
    require_shadow: bool = Field(default=False, description="gate: the latest shadow run predicts no errors")
    operator: str | None = Field(default=None, description="who runs the cutover (default: the OS user)")
    mirror_schema: str | None = Field(
        default=None,
        description="schema of the authority mirror in the source (default: the control schema's name); "
        "one per migration when several targets are fed from one source",
    )

    @field_validator("sequences")
    @classmethod
    def _pairs(cls, value: str) -> str:
        parse_pairs(value)  # a bad pair fails at startup, naming it
        return value

    def roles(self) -> list[str]:
        return [r.strip() for r in self.app_roles.split(",") if r.strip()]

    def sequence_pairs(self) -> list[tuple[TableRef, TableRef]]:
        return parse_pairs(self.sequences)


class MetricsSettings(BaseModel):
    """Prometheus metrics and health endpoints (`/metrics`, `/healthz`, `/readyz`) of `run` and `shadow`."""

    port: int = Field(default=0, ge=0, le=65535, description="HTTP port of the endpoints (0: off)")
    host: str = Field(
        default="127.0.0.1",
        description="address the endpoints listen on (`0.0.0.0` in a container, for Prometheus and probes)",
    )


_cli_config_file: Path | None = None


def _config_file() -> Path | None:
    if _cli_config_file is not None:
        return _cli_config_file
    path = os.environ.get("REPLICATOR_CONFIG_FILE")
    return Path(path) if path else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REPLICATOR_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    source: SourceSettings = Field(default_factory=SourceSettings)
    target: TargetSettings = Field(default_factory=TargetSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    connect: ConnectSettings = Field(default_factory=ConnectSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    hold: HoldSettings = Field(default_factory=HoldSettings)
    cutover: CutoverSettings = Field(default_factory=CutoverSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    connector: str | None = Field(
        default=None,
        description="the Debezium connector feeding the mapped topics (holding, `drain` and `cutover` read"
        " its committed offset); unset: the spec's `capture:` block",
    )
    signal_table: str | None = Field(
        default=None,
        description="its signal table in the source, schema.table (`drain` and `cutover` write their fence"
        " row there); unset: the spec's `capture:` block",
    )
    registry_url: str | None = Field(
        default=None, description="schema registry (Confluent API) for `value_format=avro`"
    )
    value_format: Literal["json", "avro"] = Field(
        default="json", description="how Debezium's converter writes values: JsonConverter or Avro"
    )
    avro_trust_null_defaults: bool = Field(
        default=False,
        description="Avro: take a nullable column's value equal to its DEFAULT as written (the Avro"
        " converter writes a NULL as the DEFAULT); false: such an event is an error record",
    )
    mapping: Path = Field(default=Path("mappings/demo.yaml"), description="the mapping spec (YAML)")
    control_schema: str = Field(
        default="replicator",
        description="the target schema the replicator owns (checkpoints, versions, errors)",
    )
    unavailable_placeholder: str = Field(
        default="__debezium_unavailable_value",
        description="Debezium's value for an unchanged TOAST column (`unavailable.value.placeholder`)",
    )
    log_format: Literal["text", "json"] = Field(default="text", description="log lines as text or JSON")
    heartbeat_s: float = Field(
        default=10.0,
        gt=0,
        description="a run records that it is alive this often; `status` shows a run silent for"
        " 3 heartbeats that never recorded its end as dead",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        sources.append(file_secret_settings)
        return tuple(sources)

    def summary(self) -> dict[str, Any]:
        """What a run logs at start: addresses and bounds, never a secret."""
        return {
            "source": self.source.describe(),
            "target": self.target.describe(),
            "kafka": self.kafka.bootstrap_servers,
            "group_id": self.kafka.group_id,
            "auto_offset_reset": self.kafka.auto_offset_reset,
            "connect": self.connect.url,
            "registry": self.registry_url,
            "value_format": self.value_format,
            "avro_trust_null_defaults": self.avro_trust_null_defaults,
            "mapping": str(self.mapping),
            "batch": self.batch.model_dump(),
            "connector": self.connector,
            "instance_id": self.kafka.instance_id,
            # `status` and `reload` judge the run's liveness by its own interval, not theirs
            "heartbeat_s": self.heartbeat_s,
        }


def env_name(loc: tuple[Any, ...]) -> str:
    """The environment variable of a settings field path: (target, port) -> REPLICATOR_TARGET__PORT."""
    return "REPLICATOR_" + "__".join(str(part).upper() for part in loc)


def _invalid(errors: list[Any]) -> str:
    parts = []
    for e in errors:
        loc = tuple(e.get("loc", ()))
        shown = "" if any("password" in str(p) for p in loc) else f" (got {str(e.get('input'))[:80]!r})"
        parts.append(f"{env_name(loc)}: {e.get('msg')}{shown}")
    return "; ".join(parts)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; `overrides` are command-line values (highest precedence).

    Raises ConfigError naming the variable (or file) and the parse error.
    """
    global _cli_config_file
    if config_file is not None and not config_file.is_file():
        raise ConfigError(
            f"config file {config_file} does not exist; fix: --config or REPLICATOR_CONFIG_FILE"
        )
    _cli_config_file = config_file
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {_invalid(exc.errors())}") from exc
    except SettingsError as exc:
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        cause = exc.__cause__ or exc.__context__
        names = sorted(k for k in os.environ if k.startswith(f"REPLICATOR_{field.upper()}__"))
        detail = f": {cause}" if cause else ""
        raise ConfigError(
            f"invalid settings: a value under {env_name((field,))}__* ({', '.join(names) or 'a config file'})"
            f" is not valid JSON{detail}"
        ) from exc
