"""The per-event modules compiled to C with mypyc at install time, and when they are used.

`pip install -e .` (setup.py) compiles `MODULES` with mypyc: the same source, type-checked and
turned into C, about a third less CPU per event. The Python source stays the truth:

- a compiled module is used only when every one of them is built from the `.py` files beside
  it (the build records their sha256 in `DIGESTS`, after it succeeded): an edited source never
  runs as stale machine code, and the modules, which call each other directly once compiled, are
  never mixed with source ones;
- `REPLICATOR_PURE_PYTHON=1` runs the source whatever is built (to bisect a suspected
  difference; the test suite runs the unit tests both ways);
- without a C compiler or mypyc, or with `REPLICATOR_COMPILE=0` at install, nothing is built.

`state()` says which (the daemon's start line carries it). Stdlib only: setup.py reads `MODULES`
before any dependency is installed.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# The per-event path: decoding, mapping, collapsing per key, ordering, holding, the batch writer
# and the consumer loop. Tests never replace these modules' functions (compiled callers would not
# see it: tests/unit/test_compiled.py checks) nor subclass their classes; not every module is
# here (mypyc refuses some constructs; these pass the whole suite compiled).
MODULES = (
    "replicator.core.decode",
    "replicator.core.values",
    "replicator.core.avro",
    "replicator.core.intents",
    "replicator.core.ordering",
    "replicator.core.resolve",
    "replicator.core.holding",
    "replicator.core.schema_change",
    "replicator.core.mapping.plan",
    "replicator.core.mapping.compiler",
    "replicator.core.mapping.predicates",
    "replicator.core.mapping.transforms",
    "replicator.target.rows",
    "replicator.target.versions",
    "replicator.target.holds",
    "replicator.target.writer",
    "replicator.run.loop",
)
GROUP = "replicator.core._compiled"  # mypyc's shared library: replicator/core/_compiled__mypyc*.so
PURE_ENV = "REPLICATOR_PURE_PYTHON"
DIGESTS = "replicator/core/_compiled.sha256"  # `<sha256>  <module>` per line, written by setup.py

_ROOT = Path(__file__).resolve().parent.parent


def source_path(module: str, root: Path = _ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def built_path(module: str, root: Path = _ROOT) -> Path | None:
    """The module's compiled extension beside its source, if one is built for this Python."""
    src = source_path(module, root)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = src.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def digests(root: Path = _ROOT) -> dict[str, str]:
    """The sha256 of each compiled module's source, as setup.py records it."""
    return {m: hashlib.sha256(source_path(m, root).read_bytes()).hexdigest() for m in MODULES}


def record(root: Path) -> str:
    return "".join(f"{digest}  {module}\n" for module, digest in digests(root).items())


def why_pure(root: Path = _ROOT, environ: os._Environ[str] | dict[str, str] = os.environ) -> str | None:
    """None when the compiled modules are used; else the reason the source runs."""
    if environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    recorded = root / DIGESTS
    if not recorded.exists() or any(built_path(m, root) is None for m in MODULES):
        return "not compiled (install with a C compiler: pip install -e .)"
    built = dict(line.split()[::-1] for line in recorded.read_text(encoding="ascii").splitlines())
    stale = [source_path(m, root).name for m, d in digests(root).items() if built.get(m) != d]
    if stale:
        return f"{', '.join(stale)} changed after the build (run pip install -e . again)"
    return None


class _SourceFirst:
    """A meta path finder that loads `MODULES` from their `.py` files, never an extension."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


_REASON: str | None = None
_GUARDED = False


def guard() -> None:
    """Called once by `replicator/__init__.py`, before any of `MODULES` is imported."""
    global _REASON, _GUARDED
    if _GUARDED:
        return
    _GUARDED = True
    _REASON = why_pure()
    if _REASON is not None and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def state() -> str:
    """`compiled`, or `source (<why>)`, for the run's start line and the benchmarks."""
    reason = why_pure() if not _GUARDED else _REASON
    return "compiled" if reason is None else f"source ({reason})"
