"""LSNs as PostgreSQL prints them (`X/Y`): what every user-facing line shows, what input accepts."""

from __future__ import annotations

import pytest

from replicator.core.lsn import lsn_text, parse_lsn


def test_an_lsn_is_read_as_postgresql_prints_it() -> None:
    assert parse_lsn("0/1A2B3C4") == 0x1A2B3C4
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert parse_lsn("12345") == 12345
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn("zz/1")


def test_an_lsn_is_shown_as_postgresql_prints_it() -> None:
    """Trial 7: drain printed `850327168` while cutover printed `0/3CD11A40`."""
    assert lsn_text(850327168) == "0/32AEF680"
    assert lsn_text((0x16 << 32) + 0xB374D848) == "16/B374D848"
    assert lsn_text(0) == "0/0"
    assert lsn_text(None) == "-"


@pytest.mark.parametrize("lsn", [0, 1, 0xFFFFFFFF, 1 << 32, (0x16 << 32) + 0xB374D848])
def test_a_shown_lsn_reads_back_as_the_same_position(lsn: int) -> None:
    assert parse_lsn(lsn_text(lsn)) == lsn
