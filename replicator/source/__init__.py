"""Source PostgreSQL edge: what the replicator itself writes or reads on the source (the drain fence)."""
