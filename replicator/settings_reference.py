"""The settings reference: every `REPLICATOR_*` variable, generated from the settings model.

    python -m replicator.settings_reference > docs/settings.md

Walks `config.Settings` recursively (a nested model is a section; its fields are
`REPLICATOR_<SECTION>__<FIELD>`) and prints one Markdown table row per field: the variable,
its type with bounds, its default and its description.

Invariants: a secret's default is never printed (`SecretStr` shows "(secret)"); a field without
a description is an error, not an empty cell; `tests/unit/test_settings_reference.py` fails when
docs/settings.md differs from what this module prints, and when the package reads a
`REPLICATOR_*` variable that is neither a model field nor listed in `OUTSIDE_THE_MODEL`.
"""

from __future__ import annotations

import enum
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from replicator.config import Settings, env_name

# Variables the package reads directly from the environment, not through the model.
OUTSIDE_THE_MODEL: tuple[tuple[str, str], ...] = (
    (
        "REPLICATOR_CONFIG_FILE",
        "a YAML settings file (same as `--config`); environment variables win over it",
    ),
    ("REPLICATOR_DEBUG", "set to anything: a known failure prints its traceback too"),
    (
        "REPLICATOR_FAILPOINT",
        "tests only: `mid_batch`, `before_target_commit`, `after_target_commit` (`:N` for the N-th time)"
        " kill the process there; `stop_before_apply` freezes it (SIGSTOP)",
    ),
    ("REPLICATOR_FAILPOINT_PAUSE", "tests only: these topics are not consumed until the release file exists"),
    ("REPLICATOR_FAILPOINT_RELEASE", "tests only: the file that releases `REPLICATOR_FAILPOINT_PAUSE`"),
    (
        "REPLICATOR_COMPILE",
        "at install (`pip install -e .`): `0` builds no compiled modules (mypyc); the Python source runs",
    ),
    (
        "REPLICATOR_PURE_PYTHON",
        "set (not `0`): run the Python source of the compiled per-event modules (`replicator/compiled.py`)",
    ),
)

HEADER = """# Settings reference

Generated from `replicator/config.py` by `python -m replicator.settings_reference > docs/settings.md`;
do not edit by hand (`tests/unit/test_settings_reference.py` fails when this file is out of date).

Settings come from defaults < a YAML file (`replicator --config FILE` or `REPLICATOR_CONFIG_FILE`)
< environment variables < command-line flags. In the YAML file the same names are nested keys in
lower case (`REPLICATOR_TARGET__PORT` is `target: {port: ...}`). Secrets are never accepted as
flags, never logged, and their defaults are not shown here.
"""


@dataclass(frozen=True, slots=True)
class Row:
    path: tuple[str, ...]  # field names from Settings down, e.g. ("target", "port")
    variable: str
    type: str
    default: str
    description: str


class MissingDescription(ValueError):
    """A settings field without a description: the reference would have an empty cell."""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is SecretStr:
        return "secret string"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in rest)
        return f"{inner}, optional" if len(rest) < len(args) else inner
    if origin is dict:
        return f"JSON object ({_type_name(args[0])} → {_type_name(args[1])})" if args else "JSON object"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    if annotation in names:
        return names[annotation]
    return str(annotation)


def _bounds(field: FieldInfo) -> str:
    """`ge=1` etc. as text; pydantic keeps them as annotated-types markers (Ge(ge=1), ...)."""
    found = []
    for item in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(item, attr, None)
            if bound is not None:
                found.append(f"{sign} {bound}")
    return ", ".join(found)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr) or _is_secret(field.annotation):
        return "(secret)" if value else "unset"
    if value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    text = str(value)
    return f"`{text}`" if text else "(empty)"


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _description(model: type[BaseModel], name: str) -> str:
    """The field's description, or the one it has in the base class it overrides."""
    for cls in model.__mro__:
        fields: dict[str, FieldInfo] = getattr(cls, "model_fields", {})
        if name in fields and fields[name].description:
            return str(fields[name].description)
    raise MissingDescription(f"{model.__name__}.{name} has no description; add Field(description=...)")


def _nested(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def rows(model: type[BaseModel] = Settings, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Row]]:
    """(section, row) for every leaf field, depth first; the section is the nested model's field path."""
    for name, field in model.model_fields.items():
        nested = _nested(field.annotation)
        if nested is not None:
            yield from rows(nested, (*path, name))
            continue
        kind = _type_name(field.annotation)
        bounds = _bounds(field)
        yield (
            ".".join(path),
            Row(
                path=(*path, name),
                variable=env_name((*path, name)),
                type=f"{kind}, {bounds}" if bounds else kind,
                default=_default(field),
                description=_description(model, name),
            ),
        )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section_heading(root: type[BaseModel], section: str) -> list[str]:
    if not section:
        return ["## General", ""]
    prefix = env_name(tuple(section.split(".")))
    doc = (_section_model(root, section).__doc__ or "").strip().splitlines()
    return [f"## `{prefix}__*`", "", *([doc[0], ""] if doc else [])]


def _section_model(root: type[BaseModel], section: str) -> type[BaseModel]:
    model = root
    for part in section.split("."):
        nested = _nested(model.model_fields[part].annotation)
        assert nested is not None
        model = nested
    return model


def render(model: type[BaseModel] = Settings) -> str:
    """The whole reference as Markdown."""
    sections: dict[str, list[Row]] = {}
    for section, row in rows(model):
        sections.setdefault(section, []).append(row)
    out = [HEADER]
    for section in sorted(sections, key=lambda s: s != ""):  # General first, then model order
        out += [
            *_section_heading(model, section),
            "| variable | type | default | meaning |",
            "|---|---|---|---|",
        ]
        out += [
            f"| `{r.variable}` | {_cell(r.type)} | {_cell(r.default)} | {_cell(r.description)} |"
            for r in sections[section]
        ]
        out.append("")
    out += ["## Read outside the settings model", "", "| variable | meaning |", "|---|---|"]
    out += [f"| `{name}` | {_cell(text)} |" for name, text in OUTSIDE_THE_MODEL]
    return "\n".join(out) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
