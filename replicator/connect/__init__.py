"""Kafka Connect edge: the REST client, connector config files, the schema-registry client."""
