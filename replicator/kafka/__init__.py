"""Kafka edge (confluent-kafka): every client built from `KafkaSettings.consumer_config()`."""
