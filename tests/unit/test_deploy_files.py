"""The deployment files for users with containers, validated offline.

deploy/compose, deploy/k8s and the Dockerfile are NOT exercised by our tests (no container engine
or cluster where the suite runs). Proves, without one: compose.yaml is valid against the Compose
specification's JSON schema (vendored by check-jsonschema); every built-in Kubernetes kind is
valid against the Kubernetes schemas (kubernetes-validate, strict: unknown fields fail); the
Strimzi KafkaConnect/KafkaConnector and the ServiceMonitor have the fields their operators need
(Strimzi's CRD schemas are not available offline, so these are hand checks); and the files agree
with the repository: image versions are the local stack's, every REPLICATOR_* name is a setting,
the mapping ConfigMap is mappings/demo.yaml, the KafkaConnector is connectors/demo-postgres.json,
passwords come from Secrets and reach Connect only as provider references, probes and scrape
targets use REPLICATOR_METRICS__PORT, the Dockerfile copies files that exist and runs unprivileged.
A planted error fails each validator once.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from replicator.settings_reference import rows

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes these manifests claim to support
OUTSIDE_MODEL = {"REPLICATOR_CONFIG_FILE", "REPLICATOR_DEBUG"}  # docs/settings.md, "Read outside"


def settings_names() -> set[str]:
    return {row.variable for _, row in rows()} | OUTSIDE_MODEL


def pom_version(name: str) -> str:
    found = re.search(rf"<{name}>([^<]+)</{name}>", (ROOT / "deploy" / "local" / "pom.xml").read_text())
    assert found, name
    return found.group(1)


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in manifests() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def compose_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(
        (
            importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
        ).read_text()
    )
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


# --------------------------------------------------------------------------- compose


def test_compose_is_valid_against_the_compose_specification() -> None:
    assert compose_errors(compose()) == []


def test_a_planted_compose_error_is_caught() -> None:
    doc = compose()
    doc["services"]["connect"]["depends_on"]["kafka"]["condition"] = "service_ready"  # not a condition
    doc["services"]["connect"]["restart_policy"] = "always"  # not a service key
    errors = compose_errors(doc)
    assert any("service_ready" in e for e in errors) and any("restart_policy" in e for e in errors), errors


def test_compose_runs_the_stack_s_versions_and_the_five_parts() -> None:
    services = compose()["services"]
    assert {"postgres-source", "postgres-target", "kafka", "connect", "replicator", "prometheus"} <= set(
        services
    )
    assert services["kafka"]["image"] == f"apache/kafka:{pom_version('kafka.version')}"
    assert services["connect"]["image"] == f"quay.io/debezium/connect:{pom_version('debezium.version')}"
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert "wal_level=logical" in services["postgres-source"]["command"]


def test_compose_keeps_the_connector_password_in_a_worker_secret() -> None:
    doc = compose()
    connect, replicator = doc["services"]["connect"], doc["services"]["replicator"]
    env = connect["environment"]
    assert env["CONNECT_CONFIG_PROVIDERS"] == "file"
    assert env["CONNECT_CONFIG_PROVIDERS_FILE_CLASS"].endswith(".FileConfigProvider")
    allowed = env["CONNECT_CONFIG_PROVIDERS_FILE_PARAM_ALLOWED_PATHS"]
    (mount,) = connect["secrets"]
    secrets_path = replicator["environment"]["CDC_CONNECT_SECRETS"]
    assert secrets_path == f"/run/secrets/{mount['target']}" and secrets_path.startswith(allowed + "/")
    assert doc["secrets"][mount["source"]]["file"] == "./secrets/connect.properties"
    example = (COMPOSE.parent / "secrets" / "connect.properties.example").read_text()
    assert "debezium.password=" in example
    assert "connect.properties" in (COMPOSE.parent / "secrets" / ".gitignore").read_text().split()
    assert not [k for k, v in env.items() if "PASSWORD" in k.upper()], "no password in the worker's env"


def test_compose_replicator_settings_metrics_and_scrape_target() -> None:
    doc = compose()
    env = doc["services"]["replicator"]["environment"]
    assert {k for k in env if k.startswith("REPLICATOR_")} - settings_names() == set()
    port = env["REPLICATOR_METRICS__PORT"]
    assert f"{port}:{port}" in doc["services"]["replicator"]["ports"]
    assert "/readyz" in " ".join(doc["services"]["replicator"]["healthcheck"]["test"])
    prometheus = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"replicator:{port}"] and job["metrics_path"] == "/metrics"
    for key in ("REPLICATOR_SOURCE__PASSWORD", "REPLICATOR_TARGET__PASSWORD"):
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", env[key]), f"{key} must come from the environment"


# --------------------------------------------------------------------------- Kubernetes


BUILT_IN = ("ConfigMap", "Secret", "Deployment", "Service", "Job")


def test_built_in_kinds_are_valid_kubernetes() -> None:
    docs = [d for d in manifests() if d["kind"] in BUILT_IN]
    assert {d["kind"] for d in docs} == set(BUILT_IN)
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)  # raises on any error


def test_a_planted_kubernetes_error_is_caught() -> None:
    deployment = copy.deepcopy(one("Deployment"))
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    deployment = copy.deepcopy(one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_every_kind_is_known() -> None:
    kinds = sorted(d["kind"] for d in manifests())
    custom = {"KafkaConnect", "KafkaConnector", "ServiceMonitor"}
    assert set(kinds) == set(BUILT_IN) | custom, kinds


def test_replicator_deployment_one_group_many_replicas_probes_on_the_metrics_port() -> None:
    deployment = one("Deployment", "replicator")
    settings = one("ConfigMap", "replicator-settings")["data"]
    assert deployment["spec"]["replicas"] >= 2
    assert settings["REPLICATOR_KAFKA__GROUP_ID"]  # one group for every pod
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "REPLICATOR_KAFKA__GROUP_ID" not in {e["name"] for e in container.get("env", [])}
    (port,) = container["ports"]
    assert port["containerPort"] == int(settings["REPLICATOR_METRICS__PORT"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_k8s_settings_passwords_and_mapping() -> None:
    settings = one("ConfigMap", "replicator-settings")["data"]
    secret = one("Secret", "replicator-credentials")["stringData"]
    assert (set(settings) | set(secret)) - settings_names() == set()
    assert set(secret) == {"REPLICATOR_SOURCE__PASSWORD", "REPLICATOR_TARGET__PASSWORD"}
    assert not [k for k in settings if "PASSWORD" in k], "passwords belong in the Secret"
    mapping = one("ConfigMap", "replicator-mapping")["data"]["mapping.yaml"]
    assert mapping == (ROOT / "mappings" / "demo.yaml").read_text(), (
        "deploy/k8s mapping != mappings/demo.yaml"
    )
    for kind in ("Deployment", "Job"):
        pod = one(kind)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"replicator-settings", "replicator-credentials"}, kind
        mount = next(m for m in container["volumeMounts"] if m["name"] == "mapping")
        volume = next(v for v in pod["volumes"] if v["name"] == "mapping")
        assert volume["configMap"]["name"] == "replicator-mapping"
        assert settings["REPLICATOR_MAPPING"] == f"{mount['mountPath']}/mapping.yaml"


def test_service_monitor_scrapes_the_metrics_service() -> None:
    service, monitor = one("Service", "replicator-metrics"), one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] in {
        p["name"] for p in service["spec"]["ports"]
    }
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    job_labels = one("Job")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= job_labels.items(), "the init Job is not a metrics pod"


def test_strimzi_connect_has_the_plugin_and_the_file_provider() -> None:
    connect = one("KafkaConnect")
    assert connect["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert connect["metadata"]["annotations"]["strimzi.io/use-connector-resources"] == "true"
    spec = connect["spec"]
    assert spec["bootstrapServers"] and spec["version"] == pom_version("kafka.version")
    for key in ("group.id", "config.storage.topic", "offset.storage.topic", "status.storage.topic"):
        assert spec["config"][key]
    (plugin,) = spec["build"]["plugins"]
    (artifact,) = plugin["artifacts"]
    version = pom_version("debezium.version")
    assert (
        artifact["type"] == "tgz"
        and f"debezium-connector-postgres-{version}-plugin.tar.gz" in artifact["url"]
    )
    assert spec["config"]["config.providers"] == "file"
    assert spec["config"]["config.providers.file.class"].endswith(".FileConfigProvider")


def test_strimzi_connector_is_the_shipped_connector_with_the_password_from_a_secret() -> None:
    connect, connector = one("KafkaConnect"), one("KafkaConnector")
    assert connector["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert connector["metadata"]["labels"]["strimzi.io/cluster"] == connect["metadata"]["name"]
    shipped = json.loads((ROOT / "connectors" / "demo-postgres.json").read_text())
    spec = connector["spec"]
    assert connector["metadata"]["name"] == "demo-postgres"
    assert spec["class"] == shipped["config"]["connector.class"]
    assert spec["tasksMax"] == int(shipped["config"]["tasks.max"])
    config = {k: str(v) for k, v in spec["config"].items()}
    expected = {k: v for k, v in shipped["config"].items() if k not in ("connector.class", "tasks.max")}
    assert set(config) == set(expected), set(config) ^ set(expected)
    for key, value in expected.items():
        default = re.fullmatch(r"\$\{[A-Z_]+:-([^}]*)\}", value)
        local = {
            "database.hostname",
            "database.port",
            "database.password",
            "topic.creation.default.replication.factor",
        }
        if key not in local:
            assert config[key] == (default.group(1) if default else value), key
    # The password: a file provider reference into the mounted Secret, the key present in it.
    found = re.fullmatch(r"\$\{file:([^:}]+):([^}]+)\}", config["database.password"])
    assert found, config["database.password"]
    path, key = Path(found.group(1)), found.group(2)
    pod = connect["spec"]["template"]
    (mount,) = pod["connectContainer"]["volumeMounts"]
    (volume,) = pod["pod"]["volumes"]
    assert volume["name"] == mount["name"] and path.parent == Path(mount["mountPath"])
    assert str(path).startswith(connect["spec"]["config"]["config.providers.file.param.allowed.paths"] + "/")
    secret = one("Secret", volume["secret"]["secretName"])
    assert f"{key}=" in secret["stringData"][path.name]


# --------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    lines, joined = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        joined += raw.rstrip("\\").strip() + " "
        if not raw.endswith("\\"):
            word, _, rest = joined.strip().partition(" ")
            lines.append((word.upper(), rest))
            joined = ""
    return lines


def test_dockerfile_copies_what_exists_and_runs_unprivileged() -> None:
    known = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "ARG", "LABEL"}
    instructions = dockerfile()
    assert {w for w, _ in instructions} <= known and instructions[0][0] == "FROM"
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for word, rest in instructions:
        if word == "COPY":
            *sources, _ = rest.split()
            for s in sources:
                assert (ROOT / s).exists(), f"COPY {s}: no such file"
                assert f"!{s.rstrip('/')}" in [i.rstrip("/") for i in ignored], (
                    f"{s} is excluded by .dockerignore"
                )
    (user,) = [rest for w, rest in instructions if w == "USER"]
    assert user not in ("root", "0")
    assert ignored[0] == "*", ".dockerignore starts from nothing (the stack's state never enters the image)"
    (expose,) = [rest for w, rest in instructions if w == "EXPOSE"]
    env = " ".join(rest for w, rest in instructions if w == "ENV")
    assert f"REPLICATOR_METRICS__PORT={expose}" in env
    assert json.loads(next(rest for w, rest in instructions if w == "ENTRYPOINT")) == ["replicator"]
