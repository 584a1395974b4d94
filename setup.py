"""Build hook: compile the per-event modules with mypyc (see replicator/compiled.py).

Everything else about the package is in pyproject.toml. The compiled modules are optional: with
REPLICATOR_COMPILE=0, without mypyc, or when the C build fails, the install goes on with the
Python source alone, and the daemon's start line says `compiled: source (...)`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "replicator"))
import compiled  # noqa: E402  (stdlib only; the package's dependencies are not installed yet)

sys.path.pop(0)


COMPILED_FROM = ""  # the digests of the sources mypyc compiles (`compiled.record`)


class OptionalBuildExt(build_ext):
    """A failed C build leaves the Python source in charge instead of failing the install. Only a
    complete build records the digests of the sources it compiled (`compiled.DIGESTS`), which
    is what lets the package load the compiled modules."""

    def run(self) -> None:
        self.failed = False
        digests = (ROOT if self.inplace else Path(self.build_lib)) / compiled.DIGESTS
        digests.unlink(missing_ok=True)  # an earlier build's record must not vouch for this one
        try:
            super().run()
        except Exception as e:
            print(f"replicator: compiled modules not built ({e}); the Python source runs", file=sys.stderr)
            return
        if self.extensions and not self.failed:
            digests.parent.mkdir(parents=True, exist_ok=True)
            digests.write_text(COMPILED_FROM, encoding="ascii")

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            self.failed = True
            print(f"replicator: {ext.name} not built ({e}); the Python source runs", file=sys.stderr)


def extensions() -> list[Any]:
    if os.environ.get("REPLICATOR_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("replicator: mypyc not available; the Python source runs", file=sys.stderr)
        return []
    global COMPILED_FROM
    paths = [str(compiled.source_path(m, ROOT).relative_to(ROOT)) for m in compiled.MODULES]
    COMPILED_FROM = compiled.record(ROOT)  # read before mypyc reads them: an edit meanwhile is stale
    try:
        return list(mypycify(paths, group_name=compiled.GROUP, opt_level="3"))
    except (Exception, SystemExit) as e:  # mypy refused the source, or crashed
        print(f"replicator: mypyc failed ({e}); the Python source runs", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
