"""The control schema the replicator owns in the target database.

Tables (schema name configurable, default `replicator`):
- `checkpoint`: per consumer group and partition, the next offset to read,
  and `commit_lsn`, the highest `seq0` of a streaming event applied there
  (the partition's progress in source commit order, see `core.holding`).
  Written in the same transaction as the rows it covers (invariant 1).
- `row_version`: per target table and key, the version of the last applied
  event (partition, offset, source position, deleted). The ordering guard.
- `error_record`: every record not applied, with the context to reproduce it;
  `kind` is `error`, `truncated` for a declared, applied narrowing, or
  `unavailable` for a column combining several source columns left as it was
  because one of them arrived as an unchanged TOAST placeholder;
  `also` lists the other target rows of the same event, held back with it;
  `resolved_by` says who closed it: `retry` (`errors retry` applied its event)
  or `operator` (`errors resolve`), NULL while it is open (`resolution` is the
  text for a person).
- `held_event`: source events held back because a row they write waits for
  another table (FK parent, unique swap) that lags; written in the same
  transaction that moves the checkpoint past them, removed in the one that
  applies or supersedes them (or turns them into error records).
- `run`: one row per run (mode, start, end, status, totals, the last heartbeat of a live one).
- `topic_partitions`: the accepted partition count per topic (the first one
  seen, then each one `replicator partitions accept` recorded); a running
  instance that sees another count in Kafka stops the topic (`core.layout`).
- `partition_layout`: per topic, each accepted change of its partition count
  (`core.layout.Layout`): the epoch, the counts before and after, and per
  partition that existed before, where the transition to the new count
  starts and where it is settled. Read at every assignment; the ordering
  rule uses it across partitions.
- `shadow_diff`: the diffs of shadow runs (the dry run's output).
- `authority`: one row: which database is authoritative (`source` until a
  cutover flips it), since when, by which cutover. The forward apply reads it
  in each batch's transaction (FOR SHARE) and writes nothing once it says
  `target`.
- `cutover`, `cutover_event`: each cutover's persisted state (fence LSN,
  revoked grants, sequences, gates) and the audit trail of its transitions.
- `fence_seen`: drain fences (rows of the source's signal table) as the
  replicator saw them, written in the batch that read them: the end-to-end
  proof that everything before the fence went the whole way.
- `schema_stop`: per consumer group and partition, the partition stopped in
  front of the first event whose source columns no longer match the spec
  (`core.schema_change`): the event's offset (the checkpoint stays there),
  the source and target tables, the rule, the one-line reason and fix, the
  event's columns. Written in the batch that stopped it, removed by the batch
  that applies the partition again; `status` and `drain` read it. A topic
  whose partition count changed stops the same way (rule `partitions`, the
  offset where each partition stood, no columns); `partitions accept`
  removes those stops.
- `unread_table`: per consumer group, partition and source table, the events of a source table
  no rule reads that arrived on a topic the spec reads (Debezium gives tables whose names differ
  only in characters it makes `_` one topic; a routing transform merges tables): not applied,
  counted in the transaction of the batch that read past them (`core.intents.other_tables`),
  with when they were first and last seen; `status` reads it. A batch rolled back counts
  nothing; events read again (a replay) are counted again.

All statements are composed with psycopg.sql. `ensure` (idempotent) is run by
`replicator init` and by the live daemon, which own the schema, and by
`errors retry`/`errors resolve` on a schema that exists (`require(upgrade=True)`:
they write its newest columns); every other command only reads it, and
`require` turns a missing schema, or one of an earlier version, into one line.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import psycopg
from psycopg import sql

from replicator.core.errors import NotInitialized

_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.checkpoint (
  group_id    text   NOT NULL,
  topic       text   NOT NULL,
  partition   int    NOT NULL,
  next_offset bigint NOT NULL,
  run_id      text,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, partition)
);
ALTER TABLE {s}.checkpoint ADD COLUMN IF NOT EXISTS commit_lsn numeric NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS {s}.row_version (
  target_table text COLLATE "C" NOT NULL,
  key          text COLLATE "C" NOT NULL,
  topic        text,
  partition    int,
  kafka_offset bigint,
  commit_lsn   numeric,
  lsn          numeric,
  total_order  bigint,
  deleted      boolean NOT NULL DEFAULT false,
  PRIMARY KEY (target_table, key)
);
-- Room on every page, so updating a version (never a key) stays a heap-only update.
ALTER TABLE {s}.row_version SET (fillfactor = 80);
-- Keys compare bytewise: every batch probes this index once or more per row, and comparing under the
-- database's collation made those statements about a fifth slower (C.UTF-8; more under a linguistic
-- one). Converting an earlier table rebuilds its index once; a "C" one is left as it is.
ALTER TABLE {s}.row_version ALTER COLUMN target_table TYPE text COLLATE "C",
  ALTER COLUMN key TYPE text COLLATE "C";
CREATE TABLE IF NOT EXISTS {s}.error_record (
  id           bigserial PRIMARY KEY,
  kind         text   NOT NULL DEFAULT 'error',
  run_id       text,
  group_id     text,
  topic        text,
  partition    int,
  kafka_offset bigint,
  target_table text,
  key          text,
  raw_key      bytea,
  raw_value    bytea,
  rule_id      text,
  sqlstate     text,
  message      text   NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS error_record_position ON {s}.error_record (topic, partition, kafka_offset);
ALTER TABLE {s}.error_record ADD COLUMN IF NOT EXISTS also jsonb;
CREATE TABLE IF NOT EXISTS {s}.held_event (
  group_id     text   NOT NULL,
  topic        text   NOT NULL,
  partition    int    NOT NULL,
  kafka_offset bigint NOT NULL,
  raw_key      bytea,
  raw_value    bytea,
  target_table text   NOT NULL,
  key          text,
  blocked_by   text,
  judged_at    numeric NOT NULL,
  positioned   boolean NOT NULL,
  sqlstate     text,
  message      text,
  held_at      timestamptz NOT NULL DEFAULT now(),
  attempts     int    NOT NULL DEFAULT 1,
  last_try_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, partition, kafka_offset)
);
-- the key text of the parent row a held child waits for (retried once that row is applied)
ALTER TABLE {s}.held_event ADD COLUMN IF NOT EXISTS awaits text;
-- a held row's counterparts (the rows it waits for that are held too) are found by this index
CREATE INDEX IF NOT EXISTS held_event_row ON {s}.held_event (group_id, target_table, key);
-- a held event's other target rows (a split), [{{"table": ..., "key": ...}}]: held too (core.holding, 5)
ALTER TABLE {s}.held_event ADD COLUMN IF NOT EXISTS also jsonb;
-- the held rows awaiting a row (adopted with it, made due when it becomes an error record)
CREATE INDEX IF NOT EXISTS held_event_awaits ON {s}.held_event (group_id, blocked_by, awaits);
CREATE TABLE IF NOT EXISTS {s}.run (
  run_id     text PRIMARY KEY,
  mode       text NOT NULL,
  group_id   text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  ended_at   timestamptz,
  status     text NOT NULL DEFAULT 'running',
  settings   jsonb,
  totals     jsonb
);
CREATE TABLE IF NOT EXISTS {s}.topic_partitions (
  topic      text PRIMARY KEY,
  partitions int  NOT NULL
);
ALTER TABLE {s}.run ADD COLUMN IF NOT EXISTS heartbeat_at timestamptz;
ALTER TABLE {s}.error_record ADD COLUMN IF NOT EXISTS resolved_at timestamptz;
ALTER TABLE {s}.error_record ADD COLUMN IF NOT EXISTS resolution text;
ALTER TABLE {s}.error_record ADD COLUMN IF NOT EXISTS resolved_by text
  CHECK (resolved_by IN ('retry', 'operator'));
-- records closed before `resolved_by` existed: `errors retry` wrote this prefix, an operator anything else
UPDATE {s}.error_record SET resolved_by =
  CASE WHEN starts_with(resolution, 'retried in run ') THEN 'retry' ELSE 'operator' END
  WHERE resolved_by IS NULL AND (resolved_at IS NOT NULL OR resolution IS NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.authority (
  singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  authority  text NOT NULL CHECK (authority IN ('source', 'target')),
  since      timestamptz NOT NULL DEFAULT now(),
  cutover_id text,
  fence_lsn  numeric
);
INSERT INTO {s}.authority (authority) VALUES ('source') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}.cutover (
  cutover_id   text PRIMARY KEY,
  state        text NOT NULL,
  operator     text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  options      jsonb NOT NULL DEFAULT '{{}}',
  fence_id     text,
  fence_lsn    numeric,
  fenced_at    timestamptz,
  flipped_at   timestamptz,
  revoked      jsonb,
  gates        jsonb,
  sequences    jsonb,
  flip_stats   jsonb,
  flip_xid     text,
  reason       text
);
CREATE TABLE IF NOT EXISTS {s}.cutover_event (
  id          bigserial PRIMARY KEY,
  cutover_id  text NOT NULL,
  at          timestamptz NOT NULL DEFAULT now(),
  from_state  text,
  to_state    text NOT NULL,
  operator    text NOT NULL,
  detail      jsonb
);
CREATE TABLE IF NOT EXISTS {s}.fence_seen (
  fence_id     text PRIMARY KEY,
  group_id     text NOT NULL,
  topic        text NOT NULL,
  partition    int NOT NULL,
  kafka_offset bigint NOT NULL,
  seen_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.shadow_diff (
  id           bigserial PRIMARY KEY,
  run_id       text NOT NULL,
  group_id     text NOT NULL,
  target_table text NOT NULL,
  key          text,
  kind         text NOT NULL,
  columns      jsonb,
  topic        text,
  partition    int,
  kafka_offset bigint,
  source_position text,
  rule_ids     text[],
  sqlstate     text,
  message      text,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS shadow_diff_run ON {s}.shadow_diff (run_id);
CREATE TABLE IF NOT EXISTS {s}.schema_stop (
  group_id      text   NOT NULL,
  topic         text   NOT NULL,
  partition     int    NOT NULL,
  kafka_offset  bigint NOT NULL,
  source_table  text   NOT NULL,
  target_tables text[] NOT NULL,
  rule_id       text   NOT NULL,
  reason        text   NOT NULL,
  fix           text   NOT NULL,
  columns       jsonb,
  run_id        text,
  stopped_at    timestamptz NOT NULL DEFAULT now(),
  seen_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, partition)
);
CREATE TABLE IF NOT EXISTS {s}.partition_layout (
  topic       text     NOT NULL,
  epoch       int      NOT NULL,
  before      int      NOT NULL,
  partitions  int      NOT NULL,
  starts      bigint[] NOT NULL,
  changed     bigint[] NOT NULL,
  operator    text     NOT NULL,
  accepted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, epoch)
);
CREATE TABLE IF NOT EXISTS {s}.unread_table (
  group_id      text   NOT NULL,
  topic         text   NOT NULL,
  partition     int    NOT NULL,
  source_table  text   NOT NULL,
  events        bigint NOT NULL,
  run_id        text,
  first_seen_at timestamptz NOT NULL DEFAULT now(),
  last_seen_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, partition, source_table)
);
"""


# This version's DDL, by digest, written as the schema's comment in the transaction that ran it. A
# start that finds it there runs nothing: the DDL takes ACCESS EXCLUSIVE locks on the control tables
# (ALTER TABLE even when the column exists), and a daemon restarted beside a live member deadlocked
# with that member's batch on them.
VERSION: Final = "cdc-replicator control schema " + hashlib.sha256(_DDL.encode()).hexdigest()[:16]
_DEADLOCK_ATTEMPTS: Final = 5


def ensure(conn: psycopg.Connection[Any], schema: str, *, force: bool = False) -> None:
    """Create or upgrade the control schema (idempotent). Nothing is run, and no lock taken, when the
    schema already holds this version's DDL, unless `force` (`init`). Leaves no transaction open
    on `conn`, whether in autocommit or not (later statements there would only be savepoints)."""
    if not force and current(conn, schema):
        return
    for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
        try:
            with conn.transaction():
                # Concurrent CREATE ... IF NOT EXISTS can still collide; serialize them.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('cdc-replicator control schema'))")
                conn.execute(sql.SQL(_DDL).format(s=sql.Identifier(schema)))
                conn.execute(
                    sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(schema), sql.Literal(VERSION))
                )
            return
        except psycopg.errors.DeadlockDetected:
            # a live member's batch held a control table; it went on, all of this was rolled back
            if attempt == _DEADLOCK_ATTEMPTS:
                raise


def current(conn: psycopg.Connection[Any], schema: str) -> bool:
    """True when the control schema carries this version's DDL (read from the catalog, no lock)."""
    with conn.transaction():  # never an implicit one left open: later batches would only be savepoints
        row = conn.execute(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_catalog.pg_namespace WHERE nspname = %s",
            (schema,),
        ).fetchone()
    return row is not None and row[0] == VERSION


def require(conn: psycopg.Connection[Any], schema: str, *, upgrade: bool = False) -> None:
    """Raise `NotInitialized` (one line, with the fix) when the control schema is missing, or is
    from an earlier version unless `upgrade` (a writer that never creates it, `errors retry`),
    which then brings it to this version (`ensure`)."""
    # the catalog only (no to_regclass, no information_schema): a role without privileges there still
    # reads it, and gets this line rather than "permission denied"
    row = conn.execute(
        "SELECT coalesce(bool_or(c.relname = 'checkpoint'), false),"
        " coalesce(bool_or(c.relname = 'error_record' AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a"
        "  WHERE a.attrelid = c.oid AND a.attname = 'resolved_by' AND NOT a.attisdropped)), false)"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname IN ('checkpoint', 'error_record') AND c.relkind IN ('r', 'p')",
        (schema,),
    ).fetchone()
    if row is None or not row[0]:
        raise NotInitialized(
            f"the control schema {schema!r} does not exist in the target; "
            "fix: run `replicator init` as the replicator's owner role"
        )
    if upgrade:
        ensure(conn, schema)
    elif not row[1]:  # the newest column: anything older is an earlier version
        raise NotInitialized(
            f"the control schema {schema!r} is from an earlier version; fix: run `replicator init` "
            "(or start `replicator run`, which upgrades it)"
        )


def table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)
