"""The ordering guard's table (I/O edge): lock, read and store per-row versions inside a batch.

Invariants:
- `lock` takes a row lock on the version of every key a batch touches before
  anything is written, keys sorted (no deadlock between instances): keys
  without a version get a placeholder row first, so a concurrent writer of
  a new key waits too. A stale instance's late batch therefore waits, then
  reads the newer versions, and its writes become no-ops.
- `store` moves a version only for a key whose final intent was written;
  placeholders that no version replaced are removed by key (never a scan).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from replicator.core.model import SourcePosition, TableRef
from replicator.core.ordering import Version


class VersionTable:
    def __init__(self, table: sql.Composable) -> None:
        self.table = table

    def lock(self, conn: psycopg.Connection[Any], target: TableRef, keys: list[str]) -> dict[str, Version]:
        """Lock the versions of `keys` (sorted texts); returns the stored ones (placeholders left out)."""
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (target_table, key) SELECT %s, k FROM unnest(%s::text[]) AS k"
                " ORDER BY k ON CONFLICT DO NOTHING"
            ).format(self.table),
            (str(target), keys),
        )
        rows = conn.execute(
            sql.SQL(
                "SELECT key, topic, partition, kafka_offset, commit_lsn, lsn, total_order, deleted"
                " FROM {} WHERE target_table = %s AND key = ANY(%s) ORDER BY key FOR UPDATE"
            ).format(self.table),
            (str(target), keys),
        ).fetchall()
        stored: dict[str, Version] = {}
        for key, topic, partition, offset, commit_lsn, lsn, total_order, deleted in rows:
            if offset is None:
                continue  # placeholder: no event applied yet
            position = None if lsn is None else SourcePosition(int(commit_lsn), int(lsn), int(total_order))
            stored[key] = Version(topic, partition, offset, position, deleted)
        return stored

    def read(self, conn: psycopg.Connection[Any], target: TableRef, key: str) -> Version | None:
        """One stored version, unlocked (to judge a held row against its parent's history)."""
        row = conn.execute(
            sql.SQL(
                "SELECT topic, partition, kafka_offset, commit_lsn, lsn, total_order, deleted FROM {}"
                " WHERE target_table = %s AND key = %s AND kafka_offset IS NOT NULL"
            ).format(self.table),
            (str(target), key),
        ).fetchone()
        if row is None:
            return None
        topic, partition, offset, commit_lsn, lsn, total_order, deleted = row
        position = None if lsn is None else SourcePosition(int(commit_lsn), int(lsn), int(total_order))
        return Version(topic, partition, offset, position, deleted)

    def store(
        self,
        conn: psycopg.Connection[Any],
        target: TableRef,
        versions: Mapping[str, Version],
        placeholders: Iterable[str],
    ) -> None:
        """Write `versions` (key text -> version); drop the `placeholders` no version replaced."""
        rows = sorted(versions.items())
        if rows:
            conn.execute(
                sql.SQL(
                    "UPDATE {} AS v SET topic = u.topic, partition = u.partition,"
                    " kafka_offset = u.off, commit_lsn = u.c, lsn = u.l, total_order = u.o,"
                    " deleted = u.d FROM unnest(%s::text[], %s::text[], %s::int[], %s::bigint[],"
                    " %s::numeric[], %s::numeric[], %s::bigint[], %s::bool[])"
                    " AS u(key, topic, partition, off, c, l, o, d)"
                    " WHERE v.target_table = %s AND v.key = u.key"
                ).format(self.table),
                (
                    [k for k, _ in rows],
                    [v.topic for _, v in rows],
                    [v.partition for _, v in rows],
                    [v.offset for _, v in rows],
                    [v.position.commit_lsn if v.position else None for _, v in rows],
                    [v.position.lsn if v.position else None for _, v in rows],
                    [v.position.total_order if v.position else None for _, v in rows],
                    [v.deleted for _, v in rows],
                    str(target),
                ),
            )
        leftover = sorted(set(placeholders).difference(versions))
        if leftover:
            conn.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE target_table = %s AND key = ANY(%s) AND kafka_offset IS NULL"
                ).format(self.table),
                (str(target), leftover),
            )
