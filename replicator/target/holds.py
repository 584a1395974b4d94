"""Held events (I/O edge): the control table of source events waiting for a lagging table.

Invariants (see `core.holding` for when a held row becomes an error record):
- A held event is stored as its raw Kafka record (coordinates, key and value
  bytes), in the same transaction that moves its partition's checkpoint past
  it, and removed in the one that applies, supersedes or errors it: nothing
  held is lost on kill -9, and the checkpoint never waits behind it.
- Held events belong to their partition: only the instance that owns the
  partition retries them (`index` is reloaded on every assignment).
- Whenever a batch carries an event for a key that has held events, all of
  that key's held events join the batch ahead of it (Kafka order per key is
  kept, and an unchanged-TOAST update finds the held insert it completes).
- A batch retries at most `limit` other held events: a child whose parent
  row is applied now (its version is stored, whichever instance wrote it),
  written by this batch or held too (a cycle: both halves are retried
  together), one waiting for a table the batch writes without a known
  parent key (a unique swap, a parent deleted before its children: all of
  them, so the steps of a swap meet), and any not tried for
  `retry_after_s` doubled per attempt (at most 16 times). A child is not
  retried by every batch that writes its parent's table: while a backlog
  drained with FKs in the target, that retried every held child in every
  batch (each one held again, its stored row rewritten).
- Halves of a cycle (or the steps of a swap) held by two members of the
  group meet in one batch: a batch that retries a held row adopts the held
  rows it waits for from any member's partition (locked, SKIP LOCKED: one
  another member is retrying stays there). The owner of the pair's lower
  partition is the one that retries it for its held counterpart, so the two
  members do not lock one half each, every batch. An adopted row applied or
  errored is removed by the adopter; its owner's in-memory index learns that
  at its next retry that finds nothing due (the index is read again).
- A batch that retries a held row also adopts the held rows awaiting it (its
  dependants, any member's, bounded by `limit` and `_ADOPTION_ROUNDS` levels):
  if it becomes an error record, they are judged in the same batch
  (`core.holding`, point 6). Dependants it could not take, and held rows that
  await a row a batch made an error record, are made due at the next retry
  (`hasten`, `HeldRow.soon`). Above an adopted row held (23503) for any row of
  a table, the rows held so for any row of its own table are adopted too: a
  parent's delete held for its children's table lands in the batch that
  deletes the last of them (deletes go children first), not at its own next
  retry (one backoff per level of a cascade: cust -> ord -> line took 4 s more
  with `retry_after_s` 2).
- A held event is stored under the row it was refused for and lists the
  event's other target rows (`also`): `held_rows` counts it for each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from replicator.core.model import KafkaRef, Partition, Record, TableRef


@dataclass(frozen=True, slots=True)
class HeldRow:
    record: Record
    target: TableRef
    key: str | None
    blocked_by: TableRef | None  # None: the constraint is not in the plan's catalog
    judged_at: int
    positioned: bool
    sqlstate: str | None
    message: str
    held_at: float  # epoch seconds of the first hold
    attempts: int = 1
    awaits: str | None = None  # the key text of the parent row it waits for (`core.holding.Hold`)
    # the event's other target rows (table, key text): it may write them too (`core.holding`, point 5)
    also: tuple[tuple[str, str | None], ...] = ()
    soon: bool = False  # retried at the next retry, not after its backoff (`core.holding`, point 6)

    @property
    def rows(self) -> tuple[tuple[str, str | None], ...]:
        """Every target row the held event would write."""
        return ((str(self.target), self.key), *self.also)


_COLUMNS = (
    "topic, partition, kafka_offset, raw_key, raw_value, target_table, key, blocked_by, judged_at,"
    " positioned, sqlstate, message, extract(epoch from held_at), attempts, awaits, also"
)


def _row(r: tuple[Any, ...]) -> HeldRow:
    topic, partition, offset, raw_key, raw_value, target, key, blocked, judged, positioned, state, msg = r[
        :12
    ]
    return HeldRow(
        record=Record(KafkaRef(topic, partition, offset), _bytes(raw_key), _bytes(raw_value)),
        target=TableRef.parse(target),
        key=key,
        blocked_by=TableRef.parse(blocked) if blocked else None,
        judged_at=int(judged),
        positioned=bool(positioned),
        sqlstate=state,
        message=msg,
        held_at=float(r[12]),
        attempts=int(r[13]),
        awaits=r[14],
        also=tuple((a["table"], a["key"]) for a in r[15] or ()),
    )


# how far `HoldStore._adopt` follows what adopted rows wait for in turn (a cycle of three tables)
_ADOPTION_ROUNDS = 3

# `retry_after_s` doubled per failed attempt, at most 16 times
_BACKOFF = sql.SQL("make_interval(secs => %(after)s * 2 ^ least(attempts - 1, 4))")


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


class HoldStore:
    def __init__(self, table: sql.Composable, versions: sql.Composable, group_id: str) -> None:
        self.table = table
        self.versions = versions  # the row_version table: a parent applied has its version there
        self.group_id = group_id
        self.index: dict[Partition, Counter[bytes | None]] = {}

    # ---------------------------------------------------------------- assignment
    def load_index(self, conn: psycopg.Connection[Any], partitions: list[Partition]) -> None:
        """The held keys of newly assigned partitions (read at every assignment)."""
        for p in partitions:
            self.index[p] = Counter()
        rows = conn.execute(
            sql.SQL(
                "SELECT topic, partition, raw_key FROM {} WHERE group_id = %s"
                " AND (topic, partition) IN (SELECT * FROM unnest(%b::text[], %s::int[]))"
            ).format(self.table),
            (self.group_id, [t for t, _ in partitions], [p for _, p in partitions]),
        ).fetchall()
        for topic, partition, raw_key in rows:
            self.index[(topic, partition)][_bytes(raw_key)] += 1

    def forget(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """Drop the index of revoked partitions; returns how many events each held."""
        return {p: sum(self.index.pop(p, Counter()).values()) for p in partitions}

    @property
    def count(self) -> int:
        return sum(sum(c.values()) for c in self.index.values())

    # ---------------------------------------------------------------- per batch
    def due(
        self,
        conn: psycopg.Connection[Any],
        batch_keys: Mapping[Partition, set[bytes | None]],
        written: Mapping[TableRef, Iterable[str]],
        retry_after_s: float,
        limit: int,
    ) -> list[HeldRow]:
        """Held events to retry in this batch (locked): key matches first, then a bounded rest.
        `written`: the key texts the batch writes, per table."""
        mine = [p for p, keys in self.index.items() if keys]
        if not mine:
            return []
        wanted = [
            (p, key)
            for p, keys in batch_keys.items()
            if p in self.index
            for key in keys
            if self.index[p][key]
        ]
        found: dict[KafkaRef, HeldRow] = {}
        if wanted:
            rows = conn.execute(
                sql.SQL(
                    "SELECT {} FROM {} WHERE group_id = %s AND (topic, partition, raw_key) IN"
                    " (SELECT * FROM unnest(%b::text[], %s::int[], %s::bytea[]))"
                    " ORDER BY topic, partition, kafka_offset FOR UPDATE"
                ).format(sql.SQL(_COLUMNS), self.table),
                (self.group_id, [p[0] for p, _ in wanted], [p[1] for p, _ in wanted], [k for _, k in wanted]),
            ).fetchall()
            found.update((h.record.ref, h) for h in map(_row, rows))
        rows = conn.execute(
            sql.SQL(
                "SELECT {} FROM {} AS h WHERE group_id = %(group)s"
                " AND (topic, partition) IN (SELECT * FROM unnest(%(topics)b::text[], %(partitions)s::int[]))"
                # its parent row is applied (by any member), written by this batch, or held too (the
                # other half of a cycle: both are retried, so the halves meet in one batch)
                " AND ((awaits IS NOT NULL"
                "        AND (EXISTS (SELECT FROM {} AS v WHERE v.target_table = h.blocked_by"
                "               AND v.key = h.awaits AND v.kafka_offset IS NOT NULL AND NOT v.deleted)"
                "             OR (blocked_by, awaits) IN"
                "               (SELECT * FROM unnest(%(tables)b::text[], %(keys)b::text[]))"
                "             OR EXISTS (SELECT FROM {} AS c WHERE c.group_id = %(group)s"
                "               AND c.target_table = h.blocked_by AND c.key = h.awaits"
                # another member's half: only the owner of the lower partition retries (and adopts it)
                "               AND ((c.topic, c.partition) IN"
                "                      (SELECT * FROM unnest(%(owned_topics)b::text[], %(owned)s::int[]))"
                "                    OR (c.topic, c.partition) > (h.topic, h.partition)))))"
                # the table it waits for is written by this batch (all such rows at once: the steps
                # of a unique swap must meet in one batch)
                "   OR (awaits IS NULL AND (blocked_by IS NULL OR blocked_by = ANY(%(written)s)))"
                # or it has waited long enough, whatever it waits for
                "   OR last_try_at < now() - {})"
                " ORDER BY last_try_at, topic, partition, kafka_offset LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
            ).format(sql.SQL(_COLUMNS), self.table, self.versions, self.table, _BACKOFF),
            {
                "group": self.group_id,
                "topics": [t for t, _ in mine],
                "partitions": [p for _, p in mine],
                "owned_topics": [t for t, _ in self.index],
                "owned": [p for _, p in self.index],
                "written": sorted(str(t) for t in written),
                "tables": [str(t) for t, texts in written.items() for _ in texts],
                "keys": [k for texts in written.values() for k in texts],
                "after": retry_after_s,
                "limit": limit,
            },
        ).fetchall()
        for h in map(_row, rows):
            found.setdefault(h.record.ref, h)
        if not found and not batch_keys and not written:
            # a retry of held rows alone found none due: another member may have applied some of
            # ours (adopted them), so the index is read again rather than retried on forever
            self.load_index(conn, list(self.index))
            return []
        # Every held event of a key goes with the others (a limit must not split a key's chain):
        # read the rest of the chains the index says were not all found (most keys hold one event).
        chained = Counter((h.record.ref.topic, h.record.ref.partition, h.record.key) for h in found.values())
        matched = {(p[0], p[1], k) for p, k in wanted}
        extra = [
            c
            for c, n in chained.items()
            if c not in matched and self.index.get((c[0], c[1]), Counter())[c[2]] > n
        ]
        if extra:
            rows = conn.execute(
                sql.SQL(
                    "SELECT {} FROM {} WHERE group_id = %s AND (topic, partition, raw_key) IN"
                    " (SELECT * FROM unnest(%b::text[], %s::int[], %s::bytea[])) FOR UPDATE"
                ).format(sql.SQL(_COLUMNS), self.table),
                (self.group_id, [c[0] for c in extra], [c[1] for c in extra], [c[2] for c in extra]),
            ).fetchall()
            for h in map(_row, rows):
                found.setdefault(h.record.ref, h)
        self._adopt(conn, found, limit)
        return sorted(found.values(), key=lambda h: h.record.ref)

    def _adopt(self, conn: psycopg.Connection[Any], found: dict[KafkaRef, HeldRow], limit: int) -> None:
        """Add to `found` the held rows that rows in it wait for, whichever member's partition
        holds them (each with its key's whole chain), and theirs in turn: the halves of a cycle
        and the steps of a swap held by two members meet in this batch. Rows another member is
        retrying right now are skipped (locked); the member that owns the lower partition of a
        split pair is the one that retries it (`due`), so two members do not take turns."""
        frontier = list(found.values())
        for _ in range(_ADOPTION_ROUNDS):
            pairs = {(str(h.blocked_by), h.awaits) for h in frontier if h.blocked_by and h.awaits}
            tables = sorted({str(h.blocked_by) for h in frontier if h.blocked_by and not h.awaits})
            # and the rows that await theirs: if theirs become error records, the batch judges those
            # at once (`core.holding`, point 6), not one retry per level of a chain of foreign keys
            awaited = sorted({(t, k) for h in frontier for t, k in h.rows if k is not None})
            # and, above a row held for any row of a table (a parent's delete waiting for its
            # children's: the cascade guard, NO ACTION), the rows held so for any row of its own
            # table: the level above lands in the batch that lands it (deletes go children first),
            # not at its own next retry
            keyless = [h for h in frontier if h.sqlstate == "23503" and not h.awaits]
            written = sorted({t for h in keyless for t, _ in h.rows})
            room = limit - len(found)
            if not (pairs or tables or awaited or written) or room <= 0:
                return
            refs = list(found)
            rows = conn.execute(
                sql.SQL(
                    "SELECT {} FROM {} WHERE group_id = %(group)s AND (topic, partition, raw_key) IN"
                    " (SELECT c.topic, c.partition, c.raw_key FROM {} AS c WHERE c.group_id = %(group)s"
                    "   AND ((c.target_table, c.key) IN"
                    "          (SELECT * FROM unnest(%(tables)b::text[], %(keys)b::text[]))"
                    "        OR c.target_table = ANY(%(any_of)s)"
                    "        OR (c.blocked_by, c.awaits) IN"
                    "          (SELECT * FROM unnest(%(awaited_tables)b::text[], %(awaited_keys)b::text[]))"
                    "        OR (c.awaits IS NULL AND c.sqlstate = '23503'"
                    "          AND c.blocked_by = ANY(%(written)s))))"
                    " AND (topic, partition, kafka_offset) NOT IN"
                    "   (SELECT * FROM unnest(%(topics)b::text[], %(partitions)s::int[],"
                    "      %(offsets)s::bigint[]))"
                    " ORDER BY topic, partition, kafka_offset LIMIT %(room)s FOR UPDATE SKIP LOCKED"
                ).format(sql.SQL(_COLUMNS), self.table, self.table),
                {
                    "group": self.group_id,
                    "tables": [t for t, _ in pairs],
                    "keys": [k for _, k in pairs],
                    "any_of": tables,
                    "awaited_tables": [t for t, _ in awaited],
                    "awaited_keys": [k for _, k in awaited],
                    "written": written,
                    "topics": [r.topic for r in refs],
                    "partitions": [r.partition for r in refs],
                    "offsets": [r.offset for r in refs],
                    "room": room,
                },
            ).fetchall()
            frontier = [h for h in map(_row, rows) if h.record.ref not in found]
            found.update((h.record.ref, h) for h in frontier)

    def held_rows(self, conn: psycopg.Connection[Any]) -> Counter[tuple[str, str | None]]:
        """Per target row (table, key text; None: a key not known), the events any instance of the
        group holds that would write it (the row they were refused for, and the event's others)."""
        rows = conn.execute(
            sql.SQL(
                "SELECT t, k, count(*) FROM (SELECT target_table AS t, key AS k FROM {0} WHERE group_id = %s"
                " UNION ALL SELECT a->>'table', a->>'key' FROM {0}, jsonb_array_elements(also) AS a"
                "   WHERE group_id = %s AND also IS NOT NULL) AS r GROUP BY t, k"
            ).format(self.table),
            (self.group_id, self.group_id),
        ).fetchall()
        return Counter({(r[0], r[1]): int(r[2]) for r in rows})

    def hasten(
        self,
        conn: psycopg.Connection[Any],
        rows: Iterable[tuple[str, str | None]],
        besides: Iterable[KafkaRef],
        limit: int,
    ) -> int:
        """Make the held rows that await one of `rows` (and are not `besides`, this batch's) due at
        the next retry, not after their backoff: at most `limit` (what one retry takes; the rest
        keep their backoff). Rows another batch has locked are left: it is retrying them. Returns
        how many."""
        keyed = sorted((t, k) for t, k in set(rows) if k is not None)
        if not keyed:
            return 0
        skip = sorted(set(besides))
        done = conn.execute(
            sql.SQL(
                "UPDATE {0} SET last_try_at = '-infinity' WHERE group_id = %(group)s"
                " AND (topic, partition, kafka_offset) IN (SELECT topic, partition, kafka_offset FROM {0}"
                "   WHERE group_id = %(group)s AND (blocked_by, awaits) IN"
                "     (SELECT * FROM unnest(%(tables)b::text[], %(keys)b::text[]))"
                "   AND (topic, partition, kafka_offset) NOT IN"
                "     (SELECT * FROM unnest(%(topics)b::text[], %(partitions)s::int[],"
                "        %(offsets)s::bigint[]))"
                "   LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            ).format(self.table),
            {
                "group": self.group_id,
                "tables": [t for t, _ in keyed],
                "keys": [k for _, k in keyed],
                "topics": [r.topic for r in skip],
                "partitions": [r.partition for r in skip],
                "offsets": [r.offset for r in skip],
                "limit": limit,
            },
        )
        return done.rowcount

    def put(self, conn: psycopg.Connection[Any], rows: list[HeldRow]) -> None:
        """Hold these events (new ones inserted, ones already held counted as one more attempt)."""
        if not rows:
            return
        rows = sorted(rows, key=lambda h: h.record.ref)  # one order for every writer: no lock cycles
        columns = list(
            zip(
                *(
                    (
                        h.record.ref.topic,
                        h.record.ref.partition,
                        h.record.ref.offset,
                        h.record.key,
                        h.record.value,
                        str(h.target),
                        h.key,
                        str(h.blocked_by) if h.blocked_by else None,
                        h.judged_at,
                        h.positioned,
                        h.sqlstate,
                        h.message,
                        h.awaits,
                        Jsonb([{"table": t, "key": k} for t, k in h.also]) if h.also else None,
                        "-infinity" if h.soon else "now",
                    )
                    for h in rows
                ),
                strict=True,
            )
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} AS h (group_id, topic, partition, kafka_offset, raw_key, raw_value,"
                " target_table, key, blocked_by, judged_at, positioned, sqlstate, message, awaits, also,"
                " last_try_at)"
                " SELECT %s, * FROM unnest(%b::text[], %s::int[], %s::bigint[], %b::bytea[], %b::bytea[],"
                " %b::text[], %b::text[], %b::text[], %s::numeric[], %s::boolean[], %b::text[], %b::text[],"
                " %b::text[], %b::jsonb[], %s::timestamptz[])"
                " ON CONFLICT (group_id, topic, partition, kafka_offset) DO UPDATE SET"
                " attempts = h.attempts + 1, last_try_at = EXCLUDED.last_try_at,"
                " blocked_by = EXCLUDED.blocked_by,"
                " sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message,"
                " judged_at = EXCLUDED.judged_at, awaits = EXCLUDED.awaits"
            ).format(self.table),
            (self.group_id, *(list(c) for c in columns)),
        )

    def remove(self, conn: psycopg.Connection[Any], refs: Iterable[KafkaRef]) -> None:
        gone = sorted(set(refs))
        if not gone:
            return
        conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE group_id = %s AND (topic, partition, kafka_offset) IN"
                " (SELECT * FROM unnest(%b::text[], %s::int[], %s::bigint[]))"
            ).format(self.table),
            (self.group_id, [r.topic for r in gone], [r.partition for r in gone], [r.offset for r in gone]),
        )

    def committed(self, added: Iterable[HeldRow], removed: Iterable[HeldRow]) -> None:
        """Bring the in-memory index in line after the batch's transaction committed."""
        for h in removed:
            keys = self.index.get((h.record.ref.topic, h.record.ref.partition))
            if keys is not None and keys[h.record.key] > 0:
                keys[h.record.key] -= 1
        for h in added:
            self.index.setdefault((h.record.ref.topic, h.record.ref.partition), Counter())[h.record.key] += 1
