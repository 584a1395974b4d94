"""Spec values in the spec's own notation (YAML flow, as a user writes them) for `mapping explain`:
`false`, `null`, `{from: full_name, sep: " "}`, `[trim, {case: upper}]`, never Python reprs.

A string is written plain when the spec's loader reads it back as that string (a name, `legacy`),
else double-quoted (`" "`, `"42"`, `"true"`); `quote` quotes every string (a filter's value, a
`const`: a value, not a name).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

# starts with a letter, `_` or `$`; no flow indicator, comment or mapping colon; not a core keyword
_PLAIN = re.compile(r"[A-Za-z_$][A-Za-z0-9_$./+-]*")
# YAML's keywords in any case, the 1.1 booleans too: quoted, whatever reads them back
_KEYWORDS = frozenset({"null", "true", "false", "yes", "no", "on", "off", "inf", "nan"})


def flow(value: Any, *, quote: bool = False) -> str:
    """`value` in YAML flow notation; `quote`: a string is always double-quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if not quote and _PLAIN.fullmatch(value) and value.lower() not in _KEYWORDS:
            return value
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar
    if isinstance(value, BaseModel):
        return flow(value.model_dump(by_alias=True, exclude_unset=True))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{flow(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    return flow(str(value), quote=quote)  # a Decimal, a date: as the text the spec gives it


def transform(model: BaseModel) -> str:
    """A transform as written: `trim` for a bare name, else `{case: upper}` (what was set only)."""
    dumped = model.model_dump(by_alias=True, exclude_unset=True)
    if len(dumped) == 1 and next(iter(dumped.values())) is True:
        return str(next(iter(dumped)))
    return flow(dumped)
