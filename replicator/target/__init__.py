"""Target PostgreSQL edge: the control schema, its store, the batch writer and the shadow clones."""
