"""`replicator init`: the control schema in the target, and a shadow role's grants on it."""

from __future__ import annotations

from replicator.config import Settings
from replicator.target.store import ControlStore


def init_target(settings: Settings, shadow_role: str | None) -> str:
    with ControlStore.open(settings) as store:
        store.ensure()
        if shadow_role:
            store.grant_shadow_role(shadow_role)
    return f"control schema {settings.control_schema} ready in {settings.target.describe()}"
