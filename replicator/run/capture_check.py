"""Whether the capture carries every table the spec maps (I/O edge of `core.publication`): the
connector's config from Connect, the publication and the partitioned tables from the source.

`replicator status` reports the gaps as problems; a starting run logs them as warnings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from replicator.config import Settings
from replicator.connect.client import ConnectClient, ConnectError
from replicator.core.errors import ReplicatorError, one_line
from replicator.core.mapping import load_spec
from replicator.core.publication import capture_gaps as core_gaps
from replicator.pg.session import connect
from replicator.run.assembly import capture
from replicator.source import capture as source_capture

DEBEZIUM_PUBLICATION = "dbz_publication"  # the connector's default publication.name


def capture_gaps(settings: Settings, config: Mapping[str, str], conn: psycopg.Connection[Any]) -> list[str]:
    """The gaps of the connector whose `config` is given, read on the source through `conn`."""
    source = capture(settings)
    captured = [t.source for t in load_spec(settings.mapping).tables]
    captured += [source.signal_table] if source.signal_table is not None else []
    publication_name = config.get("publication.name", DEBEZIUM_PUBLICATION)
    return core_gaps(
        captured,
        source_capture.partitioned(conn, captured),
        source_capture.publication(conn, publication_name),
        publication_name,
        config,
    )


def capture_gap_warnings(settings: Settings) -> list[str]:
    """What `status` says of the publication and the connector's filters, for a starting run: a
    table whose changes would never arrive is named before anything is applied."""
    try:
        name = capture(settings).connector
        if name is None:
            return []
        config = ConnectClient(settings.connect.url, settings.connect.timeout_s).config(name) or {}
        if not config:
            return []
        with connect(settings.source, "source", autocommit=True) as conn:
            return capture_gaps(settings, config, conn)
    except (ConnectError, ReplicatorError, psycopg.Error) as exc:
        return [f"could not check that the capture carries every mapped table: {one_line(exc)}"]
