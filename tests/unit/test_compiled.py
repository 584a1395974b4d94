"""When the mypyc-compiled per-event modules run, and what keeps them equal to their source."""

from __future__ import annotations

import ast
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from replicator import compiled

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def fake_tree(tmp_path: Path, *, built: bool = True, recorded: bool = True) -> Path:
    """Every compiled module's source, its extension (built) and the build's digests (recorded)."""
    for module in compiled.MODULES:
        src = compiled.source_path(module, tmp_path)
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"# {module}\n", encoding="utf-8")
        if built:
            src.with_suffix(SUFFIX).write_bytes(b"")
    if recorded:
        (tmp_path / compiled.DIGESTS).write_text(compiled.record(tmp_path), encoding="ascii")
    return tmp_path


def test_a_build_of_these_sources_is_used(tmp_path: Path) -> None:
    assert compiled.why_pure(fake_tree(tmp_path), {}) is None


def test_no_build_or_an_unfinished_one_runs_the_source(tmp_path: Path) -> None:
    expected = "not compiled (install with a C compiler: pip install -e .)"
    assert compiled.why_pure(fake_tree(tmp_path / "a", built=False, recorded=False), {}) == expected
    # setup.py records the digests only after every extension built
    assert compiled.why_pure(fake_tree(tmp_path / "b", recorded=False), {}) == expected
    root = fake_tree(tmp_path / "c")
    compiled.source_path("replicator.core.avro", root).with_suffix(SUFFIX).unlink()
    assert compiled.why_pure(root, {}) == expected


def test_a_source_edited_after_the_build_runs_the_source_naming_it(tmp_path: Path) -> None:
    root = fake_tree(tmp_path)
    with compiled.source_path("replicator.core.resolve", root).open("a", encoding="utf-8") as f:
        f.write("# edited\n")
    assert compiled.why_pure(root, {}) == "resolve.py changed after the build (run pip install -e . again)"


def test_the_environment_variable_runs_the_source(tmp_path: Path) -> None:
    root = fake_tree(tmp_path)
    assert compiled.why_pure(root, {"REPLICATOR_PURE_PYTHON": "1"}) == "REPLICATOR_PURE_PYTHON is set"
    assert compiled.why_pure(root, {"REPLICATOR_PURE_PYTHON": "0"}) is None


def test_the_source_finder_loads_only_the_compiled_modules_from_their_py_files() -> None:
    spec = compiled._SourceFirst().find_spec("replicator.core.decode")
    assert spec is not None and spec.origin == str(ROOT / "replicator" / "core" / "decode.py")
    assert compiled._SourceFirst().find_spec("replicator.core.model") is None


def test_with_the_variable_set_every_compiled_module_runs_from_its_source() -> None:
    code = (
        "import importlib, replicator.compiled as c\n"
        "print(c.state())\n"
        "for m in c.MODULES: print(importlib.import_module(m).__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "REPLICATOR_PURE_PYTHON": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "source (REPLICATOR_PURE_PYTHON is set)"
    assert out[1:] == [str(compiled.source_path(m, ROOT)) for m in compiled.MODULES]


@pytest.mark.parametrize("module", compiled.MODULES)
def test_no_function_binds_one_exception_name_to_two_types(module: str) -> None:
    """mypyc types an `except ... as e` name by its first handler in the function: a second
    handler of another type binding `e` raises TypeError instead of handling (seen: a
    `ValueConversionError` then a `TypeError`, both named `e`)."""
    tree = ast.parse(compiled.source_path(module, ROOT).read_text(encoding="utf-8"))
    clashes: list[str] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        bound: dict[str, set[str]] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                bound.setdefault(node.name, set()).add(ast.unparse(node.type))
        clashes += [f"{fn.name} line {fn.lineno}: {n} as {sorted(t)}" for n, t in bound.items() if len(t) > 1]
    assert clashes == []


def test_no_test_replaces_a_compiled_modules_attribute() -> None:
    """A compiled module calls its own and its group's functions directly: a test replacing one
    with `monkeypatch.setattr` would test nothing while the build runs it compiled."""
    compiled_names = set(compiled.MODULES)
    found: list[str] = []
    for path in (ROOT / "tests").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}  # local name -> the module it binds
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({a.asname or a.name: a.name for a in node.names})
            elif isinstance(node, ast.ImportFrom) and node.module:
                aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "setattr"
                and node.args
            ):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                owner = first.value.rpartition(".")[0]
            elif isinstance(first, ast.Name):
                owner = aliases.get(first.id, "")
            else:
                owner = ""
            if owner in compiled_names or any(owner.startswith(f"{m}.") for m in compiled_names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {owner}")
    assert found == []


def test_the_switch_point_stays_interpreted() -> None:
    """Compiled loops let the apply thread have the interpreter lock by calling `core.switch.point`;
    only an interpreted function does it (native code never checks for a waiting thread)."""
    from replicator.core import switch

    assert "replicator.core.switch" not in compiled.MODULES
    assert switch.__file__ is not None and switch.__file__.endswith(".py")
    assert isinstance(switch.point.__code__.co_code, bytes)  # a Python function, not a builtin
