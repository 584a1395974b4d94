"""The history checker (oracle H, Jepsen style): pure functions over recorded histories.

Input, per target table and key:
- the source versions in commit order (`SourceVersion`: the `ver` stamp a
  source trigger put on the row, or a delete), from `chaos_log.source_log`;
- the writes the target went through in commit order (`TargetWrite`: the
  `ver` of the row written, or a delete / soft delete), from
  `chaos_log.target_log`.
Every target write is matched to a source version: a row by its `ver`, a
delete to the first source delete after the version the target showed before.
The target's versions must be a strictly increasing subsequence of the source's
ending at the source's last version. Counters:
- lost: keys whose final target state is not the source's final state (a
  version never applied, a delete never applied, a row never written);
- phantom: target writes that match no source version (an unknown `ver`, a
  delete the source never made, a key the source never had);
- effective_dup: a write that applies again the version the target already
  showed (an event applied twice with an effect);
- regress: a write of a version older than the one the target showed;
- resurrect: a regress that brings back a row the target had deleted (an old
  insert or update replayed after the delete);
- mismatched error records (oracle D): keys with an error record that were not
  injected as bad, and injected bad keys without one.
Keys in `expected_errors` (injected bad rows) are not counted as lost.

Convergence (oracle L): for a moment h (a fault healed), the time until every
key's target state reached the state its source showed at h.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Key = tuple[str, str]  # (target table, key text)


@dataclass(frozen=True, slots=True)
class SourceVersion:
    ver: int  # the row's stamp; for a delete, a stamp of its own
    deleted: bool
    at: float  # epoch seconds of the source write


@dataclass(frozen=True, slots=True)
class TargetWrite:
    ver: int | None  # the written row's stamp (None for a hard delete)
    deleted: bool  # a hard delete, or a soft delete (the row kept, marked deleted)
    at: float  # epoch seconds of the target write


@dataclass(slots=True)
class Verdict:
    lost: list[Key] = field(default_factory=list)
    phantom: list[tuple[Key, str]] = field(default_factory=list)
    effective_dup: list[tuple[Key, str]] = field(default_factory=list)
    regress: list[tuple[Key, str]] = field(default_factory=list)
    resurrect: list[tuple[Key, str]] = field(default_factory=list)
    unexpected_errors: list[Key] = field(default_factory=list)
    missing_errors: list[Key] = field(default_factory=list)
    keys: int = 0
    writes: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "lost": len(self.lost),
            "phantom": len(self.phantom),
            "effective_dup": len(self.effective_dup),
            "regress": len(self.regress),
            "resurrect": len(self.resurrect),
        }

    def safe(self) -> bool:
        return not any(self.counts().values())

    def examples(self, n: int = 3) -> str:
        parts = []
        for name in ("lost", "phantom", "effective_dup", "regress", "resurrect"):
            items = getattr(self, name)
            if items:
                parts.append(f"{name}: {items[:n]}")
        return "; ".join(parts)


def _describe(i: int, versions: list[SourceVersion]) -> str:
    v = versions[i]
    return f"#{i}({'D' if v.deleted else v.ver})"


def check_key(
    key: Key, source: list[SourceVersion], target: list[TargetWrite], verdict: Verdict, expected_error: bool
) -> list[int]:
    """Match one key's target writes to its source versions; returns the matched indices."""
    by_ver = {v.ver: i for i, v in enumerate(source) if not v.deleted}
    deletes = [i for i, v in enumerate(source) if v.deleted]
    shown = -1  # index of the source version the target shows (-1: none yet)
    shown_deleted = False
    matched: list[int] = []
    for w in target:
        verdict.writes += 1
        if w.deleted:
            pos = bisect.bisect_right(deletes, shown)
            if pos < len(deletes):
                j = deletes[pos]
            elif deletes:  # only deletes at or before what the target shows: an old delete again
                j = deletes[-1]
            else:
                verdict.phantom.append((key, "a delete the source never made"))
                continue
        else:
            found = by_ver.get(w.ver) if w.ver is not None else None
            if found is None:
                verdict.phantom.append((key, f"ver {w.ver} not in the source history"))
                continue
            j = found
        if j == shown and not (w.deleted and not shown_deleted):
            verdict.effective_dup.append((key, f"{_describe(j, source)} written again"))
        elif j < shown:
            what = f"{_describe(j, source)} after {_describe(shown, source)}"
            if shown_deleted and not source[j].deleted:
                verdict.resurrect.append((key, what))
            else:
                verdict.regress.append((key, what))
        shown, shown_deleted = j, source[j].deleted
        matched.append(j)
    last = len(source) - 1
    if last >= 0 and not expected_error:
        final_deleted = source[last].deleted
        if final_deleted:
            # Absent or deleted at the end is right; a row written and never deleted is lost.
            if matched and not shown_deleted:
                verdict.lost.append(key)
        elif shown != last:
            verdict.lost.append(key)
    return matched


def check(
    source: Mapping[Key, list[SourceVersion]],
    target: Mapping[Key, list[TargetWrite]],
    error_keys: Iterable[Key] = (),
    expected_errors: Iterable[Key] = (),
) -> Verdict:
    """Every key of both histories; error records against the injected bad keys (oracle D)."""
    verdict = Verdict()
    expected = set(expected_errors)
    errors = set(error_keys)
    verdict.unexpected_errors = sorted(errors - expected)
    verdict.missing_errors = sorted(expected - errors)
    for key in sorted(set(source) | set(target)):
        verdict.keys += 1
        versions = source.get(key, [])
        writes = target.get(key, [])
        if not versions:
            if writes:
                verdict.phantom.append((key, "a key the source never had"))
            continue
        check_key(key, versions, writes, verdict, key in expected)
    return verdict


def convergence(
    source: Mapping[Key, list[SourceVersion]],
    target: Mapping[Key, list[TargetWrite]],
    moments: Iterable[float],
) -> list[float]:
    """Per moment h: seconds until every key's target reached the source state as of h (0 when it
    already had). Keys whose source state at h the target never shows (superseded in one batch,
    e.g. inserted and deleted) are left out."""
    tracks: list[tuple[list[float], list[int], list[float]]] = []
    for key, versions in source.items():
        writes = target.get(key, [])
        scratch = Verdict()
        matched = check_key(key, versions, writes, scratch, expected_error=True)
        matched_writes = [w for w in writes if not _unmatched(w, versions)]
        running, reached = -1, []
        for j in matched:
            running = max(running, j)
            reached.append(running)
        tracks.append(([v.at for v in versions], reached, [w.at for w in matched_writes][: len(reached)]))
    out = []
    for h in sorted(moments):
        worst = 0.0
        for source_at, reached, write_at in tracks:
            idx = bisect.bisect_right(source_at, h) - 1
            if idx < 0:
                continue
            pos = bisect.bisect_left(reached, idx)
            if pos >= len(reached):
                continue  # never shown as such (superseded, an error, or still lagging at the end)
            worst = max(worst, write_at[pos] - h)
        out.append(worst)
    return out


def _unmatched(w: TargetWrite, versions: list[SourceVersion]) -> bool:
    if w.deleted:
        return not any(v.deleted for v in versions)
    return w.ver is None or not any(v.ver == w.ver for v in versions)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[rank]
