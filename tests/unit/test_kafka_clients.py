"""Every Kafka client the package builds carries the TLS/SASL settings and the SASL secret.

Regression: the metadata consumers of `run`, `drain` and `shadow --from` were
hand-built without `consumer_config()`, so with REPLICATOR_KAFKA__SASL_PASSWORD
set, librdkafka refused them ("sasl.username and sasl.password must be set").
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from confluent_kafka import Consumer
from pydantic import SecretStr

from replicator.config import KafkaSettings
from replicator.kafka import clients, consumer

SASL = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "app"}


def sasl_settings() -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="127.0.0.1:1", options=SASL, sasl_password=SecretStr("sentinel-secret-9f3")
    )


class Recorder:
    """Stands in for confluent_kafka.Consumer; records each configuration it is built with."""

    built: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        Recorder.built.append(dict(conf))

    def close(self) -> None:
        pass


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    Recorder.built = []
    monkeypatch.setattr(clients, "Consumer", Recorder)
    return Recorder


def test_loop_consumer_and_metadata_helper_carry_the_sasl_password(recorder: type[Recorder]) -> None:
    kafka = sasl_settings()
    consumer.KafkaSource(kafka, "g1", on_error=lambda message, retriable: None).close()
    clients.Metadata(kafka).close()
    clients.new_consumer(kafka, "g2").close()
    assert len(recorder.built) == 3
    for conf in recorder.built:
        assert conf["sasl.password"] == "sentinel-secret-9f3"
        assert {k: conf[k] for k in SASL} == SASL
    assert recorder.built[0]["auto.offset.reset"] == "error"  # positions come from the target, never Kafka


def test_a_real_librdkafka_client_accepts_the_built_sasl_configuration() -> None:
    """Built for real (no broker needed to construct): the SASL failure above no longer happens."""
    built = Consumer(clients.consumer_conf(sasl_settings(), "g"))
    built.close()
    with pytest.raises(Exception, match="sasl"):
        Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "g", **SASL})  # the old hand-built way
