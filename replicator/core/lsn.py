"""PostgreSQL WAL positions (LSNs) as users see them: `X/Y`, as pg_current_wal_lsn() prints it.

Internally an LSN is an int (what Debezium's `source.lsn` carries). Every line a user reads
shows it as `X/Y` (`lsn_text`); input accepts both forms (`parse_lsn`). Pure.
"""

from __future__ import annotations


def lsn_text(lsn: int | None) -> str:
    """`X/Y` (hex, the high and low 32 bits), as PostgreSQL prints an LSN; `-` for none."""
    return "-" if lsn is None else f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """A PostgreSQL LSN, `X/Y` (hex, as pg_current_wal_lsn() prints it) or a decimal number."""
    high, sep, low = text.strip().partition("/")
    try:
        return (int(high, 16) << 32) + int(low, 16) if sep else int(high)
    except ValueError:
        raise ValueError(f"{text!r} is not an LSN (e.g. 0/1A2B3C4, as pg_current_wal_lsn() shows)") from None
