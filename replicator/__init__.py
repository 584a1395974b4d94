"""cdc-replicator: Debezium change events -> mapping spec -> guarded upserts into a target PostgreSQL."""

__version__ = "0.1.0"
