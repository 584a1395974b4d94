"""`replicator init`: the control schema in the target, and a shadow role's grants on it;
`--print-grants`: the SQL that prepares both databases for the configured spec."""

from __future__ import annotations

from replicator.config import Settings
from replicator.core.mapping import load_spec
from replicator.core.mapping.grants import Database, Roles, grants_sql
from replicator.run.assembly import capture
from replicator.target.store import ControlStore


def print_grants(
    settings: Settings,
    shadow_role: str | None,
    connector_role: str,
    publication: str | None,
    database: Database = "both",
) -> str:
    """The setup SQL for the configured spec and settings, for one database or both (no
    connection is made)."""
    spec = load_spec(settings.mapping)
    roles = Roles(
        source_db=settings.source.dbname,
        target_db=settings.target.dbname,
        connector_role=connector_role,
        source_role=settings.source.user,
        target_role=settings.target.user,
        shadow_role=shadow_role,
        publication=publication or f"cdc_{spec.topic_prefix}",
        control_schema=settings.control_schema,
        # only roles the operator named: the default is the demo's application role, and a GRANT of
        # it pasted into another migration's source would hand that role to ours (trial 7)
        app_roles=tuple(settings.cutover.roles()) if "app_roles" in settings.cutover.model_fields_set else (),
    )
    signal = capture(settings).need_signal_table("init --print-grants")
    return grants_sql(spec, signal, roles, settings.cutover.sequence_pairs(), database)


def init_target(settings: Settings, shadow_role: str | None) -> str:
    with ControlStore.open(settings) as store:
        store.ensure(force=True)
        if shadow_role:
            store.grant_shadow_role(shadow_role)
    return f"control schema {settings.control_schema} ready in {settings.target.describe()}"
