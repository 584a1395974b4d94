"""cdc-replicator: Debezium change events -> mapping spec -> guarded upserts into a target PostgreSQL."""

from replicator import compiled as _compiled

__version__ = "0.1.0"

_compiled.guard()  # before any compiled module is imported: stale or unwanted builds never load
