"""The ordering guard's table (I/O edge): lock, read and store per-row versions inside a batch.

Invariants:
- Every key a batch touches is locked before any of its rows is written, in
  key order (no deadlock between instances), so a stale instance's late batch
  waits, then reads the newer versions, and its writes become no-ops. One
  statement does it for all the batch's tables (`lock_or_claim`): keys
  without a stored version are *claimed*, inserted with the version they
  will end with (a concurrent writer of the same new key waits, then reads
  ours), so a new key costs one insert, not placeholder + update + delete;
  keys with one are locked by the same INSERT's conflict arm, and only their
  versions are read afterwards (a batch of new keys reads nothing).
- A version moves only for a key whose final intent was written: stored
  keys are updated after the writes (`update_many`); a claimed key whose row
  was not written after all, or ended with another version, is corrected
  (`drop`, `update_many`).
- Versions travel by COPY through a session-local table, emptied (TRUNCATE) before every
  fill and read only after a fill in the same transaction (`_copy`; `update_many` reuses one by
  identity of the claims, in the transaction that made it). It is not ON COMMIT DELETE ROWS: such
  a table costs every commit of the session that touched a temporary table (see
  `target.rows.TRUNCATE_PAST_ROWS`); what a commit or a rollback leaves in it is never read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from replicator.core.model import SourcePosition, TableRef
from replicator.core.ordering import Version

_NEW = sql.Identifier("pg_temp", "replicator_batch_versions")
_SESSION_DDL = sql.SQL(
    'CREATE TEMP TABLE IF NOT EXISTS {} (target_table text COLLATE "C" NOT NULL, key text COLLATE "C"'
    " NOT NULL, topic text, partition int, kafka_offset bigint, commit_lsn numeric, lsn numeric,"
    " total_order bigint, deleted boolean NOT NULL)"
).format(_NEW)

Versions = Mapping[TableRef, Mapping[str, Version]]  # per table: key text -> version
_MOVE = sql.SQL(
    "UPDATE {} AS v SET topic = u.topic, partition = u.partition, kafka_offset = u.kafka_offset,"
    " commit_lsn = u.commit_lsn, lsn = u.lsn, total_order = u.total_order, deleted = u.deleted"
)


def _version(row: tuple[Any, ...]) -> Version:
    topic, partition, offset, commit_lsn, lsn, total_order, deleted = row
    position = None if lsn is None else SourcePosition(int(commit_lsn), int(lsn), int(total_order))
    return Version(topic, partition, offset, position, deleted)


class VersionTable:
    def __init__(self, table: sql.Composable) -> None:
        self.table = table
        # What the session table holds, as the mapping last copied into it (compared by identity).
        self._staged: object = None

    @staticmethod
    def prepare_session(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute(_SESSION_DDL)

    def lock_or_claim(
        self, conn: psycopg.Connection[Any], claims: Mapping[TableRef, Mapping[str, Version | None]]
    ) -> tuple[dict[TableRef, dict[str, Version]], dict[TableRef, set[str]]]:
        """Lock every key of a batch. A key without a stored version is claimed: inserted with the
        version given for it (None: a placeholder); a key with one is locked and its version
        returned. Returns (stored versions, claimed keys).

        One INSERT does both, in key order: `ON CONFLICT DO UPDATE ... WHERE false` locks a
        conflicting row without changing it, and RETURNING names only the rows it inserted. A key
        another transaction is claiming makes it wait for that one's end, then lock or insert it.
        The versions of the keys it did not insert are read afterwards (already locked: stable)."""
        stored: dict[TableRef, dict[str, Version]] = {t: {} for t in claims}
        claimed: dict[TableRef, set[str]] = {t: set() for t in claims}
        if not any(claims.values()):
            return stored, claimed
        self._copy(conn, claims)
        by_name = {str(t): t for t in claims}
        inserted = conn.execute(
            sql.SQL(
                "INSERT INTO {0} AS v (target_table, key, topic, partition, kafka_offset, commit_lsn, lsn,"
                " total_order, deleted) SELECT * FROM {1} ORDER BY 1, 2"
                " ON CONFLICT (target_table, key) DO UPDATE SET deleted = v.deleted WHERE false"
                " RETURNING target_table, key"
            ).format(self.table, _NEW)
        ).fetchall()
        for name, key in inserted:
            claimed[by_name[name]].add(key)
        names: list[str] = []
        keys: list[str] = []
        for target, texts in claims.items():
            mine = claimed[target]
            for text in texts:
                if text not in mine:
                    names.append(str(target))
                    keys.append(text)
        if keys:
            rows = conn.execute(
                sql.SQL(
                    "SELECT v.target_table, v.key, v.topic, v.partition, v.kafka_offset, v.commit_lsn, v.lsn,"
                    " v.total_order, v.deleted FROM {} AS v"
                    " JOIN unnest(%b::text[], %b::text[]) AS b (target_table, key)"
                    " ON v.target_table = b.target_table AND v.key = b.key"
                ).format(self.table),
                (names, keys),
            ).fetchall()
            for row in rows:
                if row[4] is not None:  # a placeholder has no event applied yet
                    stored[by_name[row[0]]][row[1]] = _version(row[2:])
        return stored, claimed

    def lock(
        self, conn: psycopg.Connection[Any], target: TableRef, keys: list[str], placeholders: bool = True
    ) -> dict[str, Version]:
        """Lock the versions of `keys` (sorted texts) of one table; returns the stored ones. With
        `placeholders`, keys without a version get a placeholder row first, so they are locked too."""
        if placeholders:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (target_table, key) SELECT %s, k FROM unnest(%b::text[]) AS k"
                    " ORDER BY k ON CONFLICT DO NOTHING"
                ).format(self.table),
                (str(target), keys),
            )
        rows = conn.execute(
            sql.SQL(
                "SELECT key, topic, partition, kafka_offset, commit_lsn, lsn, total_order, deleted"
                " FROM {} WHERE target_table = %s AND key = ANY(%b) ORDER BY key FOR UPDATE"
            ).format(self.table),
            (str(target), keys),
        ).fetchall()
        return {row[0]: _version(row[1:]) for row in rows if row[3] is not None}  # placeholders left out

    def read_many(
        self, conn: psycopg.Connection[Any], keys: Iterable[tuple[TableRef, str]]
    ) -> dict[tuple[TableRef, str], Version]:
        """Stored versions, unlocked (to judge held rows against their parents' history)."""
        wanted = sorted(keys, key=lambda k: (str(k[0]), k[1]))
        if not wanted:
            return {}
        by_name = {str(t): t for t, _ in wanted}
        rows = conn.execute(
            sql.SQL(
                "SELECT v.target_table, v.key, v.topic, v.partition, v.kafka_offset, v.commit_lsn, v.lsn,"
                " v.total_order, v.deleted FROM {} AS v"
                " JOIN unnest(%b::text[], %b::text[]) AS w (target_table, key)"
                " ON v.target_table = w.target_table AND v.key = w.key WHERE v.kafka_offset IS NOT NULL"
            ).format(self.table),
            ([str(t) for t, _ in wanted], [k for _, k in wanted]),
        ).fetchall()
        return {(by_name[r[0]], r[1]): _version(r[2:]) for r in rows}

    def share(
        self, conn: psycopg.Connection[Any], key: str, tables: Sequence[TableRef]
    ) -> dict[TableRef, Version]:
        """The version stored under `key` for each table (its truncate barrier), locked FOR SHARE
        (a placeholder is inserted first where none is stored, so it is locked too): a writer
        that takes it FOR UPDATE (a truncate) waits for every batch that read it, and they wait
        for it."""
        if not tables:
            return {}
        names = sorted(str(t) for t in tables)
        by_name = {str(t): t for t in tables}
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (target_table, key) SELECT t, %s FROM unnest(%b::text[]) AS t"
                " ORDER BY t ON CONFLICT DO NOTHING"
            ).format(self.table),
            (key, names),
        )
        rows = conn.execute(
            sql.SQL(
                "SELECT target_table, topic, partition, kafka_offset, commit_lsn, lsn, total_order, deleted"
                " FROM {} WHERE target_table = ANY(%b) AND key = %s ORDER BY target_table FOR SHARE"
            ).format(self.table),
            (names, key),
        ).fetchall()
        return {by_name[row[0]]: _version(row[1:]) for row in rows if row[3] is not None}

    def written_after(
        self, conn: psycopg.Connection[Any], target: TableRef, position: SourcePosition
    ) -> set[str]:
        """Keys of `target` whose stored version is a row (not a delete) written by an event after
        `position` in source order."""
        rows = conn.execute(
            sql.SQL(
                "SELECT key FROM {} WHERE target_table = %s AND NOT deleted AND lsn IS NOT NULL"
                " AND left(key, 1) <> '!' AND (commit_lsn, lsn, total_order) > (%s, %s, %s)"
            ).format(self.table),
            (str(target), position.commit_lsn, position.lsn, position.total_order),
        ).fetchall()
        return {r[0] for r in rows}

    def update_many(
        self,
        conn: psycopg.Connection[Any],
        versions: Versions,
        claims: Mapping[TableRef, Mapping[str, Version | None]] | None = None,
    ) -> None:
        """Move the stored versions of keys whose final intent was written. `claims`: what this
        batch's `lock_or_claim` was given; a key moving to the version claimed for it is moved
        from the session table that call filled, while it still holds them (no second COPY)."""
        if not any(versions.values()):
            return
        staged = claims if claims is not None and claims is self._staged else {}
        names: list[str] = []
        keys: list[str] = []
        rest: dict[TableRef, dict[str, Version]] = {}
        for target, texts in versions.items():
            claimed = staged.get(target, {})
            for text, version in texts.items():
                if claimed.get(text) == version:
                    names.append(str(target))
                    keys.append(text)
                else:
                    rest.setdefault(target, {})[text] = version
        if keys:
            conn.execute(
                sql.SQL(
                    "{} FROM {} AS u JOIN unnest(%b::text[], %b::text[]) AS k (target_table, key)"
                    " ON u.target_table = k.target_table AND u.key = k.key"
                    " WHERE v.target_table = u.target_table AND v.key = u.key"
                ).format(_MOVE.format(self.table), _NEW),
                (names, keys),
            )
        if rest:
            self._copy(conn, rest)
            conn.execute(
                sql.SQL("{} FROM {} AS u WHERE v.target_table = u.target_table AND v.key = u.key").format(
                    _MOVE.format(self.table), _NEW
                )
            )

    def drop(self, conn: psycopg.Connection[Any], keys: Mapping[TableRef, Iterable[str]]) -> None:
        """Remove the versions (claimed, or placeholders) of keys whose rows were not written."""
        for target, texts in keys.items():
            gone = sorted(texts)
            if gone:
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE target_table = %s AND key = ANY(%b)").format(self.table),
                    (str(target), gone),
                )

    def _copy(
        self, conn: psycopg.Connection[Any], versions: Mapping[TableRef, Mapping[str, Version | None]]
    ) -> None:
        self._staged = versions
        conn.execute(sql.SQL("TRUNCATE {}").format(_NEW))
        with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(_NEW)) as copy:
            for target, texts in versions.items():
                name = str(target)
                for text, v in texts.items():
                    if v is None:  # a placeholder: locks a key whose version is not known yet
                        copy.write_row((name, text, None, None, None, None, None, None, False))
                        continue
                    p = v.position
                    copy.write_row(
                        (
                            name,
                            text,
                            v.topic,
                            v.partition,
                            v.offset,
                            p.commit_lsn if p else None,
                            p.lsn if p else None,
                            p.total_order if p else None,
                            v.deleted,
                        )
                    )
