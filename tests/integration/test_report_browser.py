"""The shadow review's HTML page in a real browser: Debian's `chromium`, headless.

Proves: the page Chromium builds (its DOM after loading) has the summary table with the counts
per table and kind and the totals, the field-level diff samples and the error records, and the
values from the data stay text (the planted `<img onerror>` is no element); the page loads with
network access blocked (self-contained); and the screenshot shows the summary table: inside the
box the browser lays it out in there are the header's grey and the cells' dark text, and the
same box of a page without the table is blank.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from replicator.core.report import collect_review, render_html, shadow_report
from tests.unit.test_report import Page, parse, sample_review

WIDTH, HEIGHT = 1200, 1400
HEADER_GREY = (0xF6, 0xF8, 0xFA)


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium")
    assert browser, "Debian's chromium is not installed: apt-get install -y chromium (.ci/run does it)"
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing outside the file can load
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB or RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        rows.append(bytes(v for x in range(width) for v in line[x * bpp : x * bpp + 3]))
    return width, height, rows


def pixels(rows: list[bytes], box: dict[str, float]) -> list[tuple[int, int, int]]:
    x0, y0 = int(box["x"]) + 1, int(box["y"]) + 1
    x1, y1 = int(box["x"] + box["width"]) - 1, int(box["y"] + box["height"]) - 1
    return [(r[3 * x], r[3 * x + 1], r[3 * x + 2]) for r in rows[y0:y1] for x in range(x0, x1)]


def test_shadow_review_in_headless_chromium(tmp_path: Path) -> None:
    summary, diffs = sample_review()
    page = render_html(shadow_report(collect_review(summary, "shadow-run-42.jsonl", diffs)))
    html_file = tmp_path / "shadow-run-42.html"
    html_file.write_text(page, encoding="utf-8")

    # What the browser built from the page.
    dom: Page = parse(chromium(tmp_path / "p1", "--dump-dom", html_file.as_uri()).stdout)
    assert "table|insert|update|delete|noop|error|truncated|unavailable|truncate|total" in dom.rows
    assert "crm.customer|3|2|0|0|0|0|0|0|5" in dom.rows
    assert "all tables|3|2|1|0|1|0|0|0|7" in dom.rows
    assert 'n|"1"|1' in dom.rows  # a field-level sample
    assert 'error|sales."order"|k|`x`|demo.shop.orders[1]@9|O9|23505|duplicate key <b>value</b>' in dom.rows
    assert not [t for t, _ in dom.tags if t in ("img", "b", "script")], "data became markup in the browser"
    assert "<img src=x" in "".join(dom.text)

    # Where the browser lays out the summary table: a measuring copy reports the box.
    probe = (
        "<script>document.body.setAttribute('data-box', JSON.stringify("
        "document.getElementById('summary').getBoundingClientRect()))</script></body>"
    )
    measured = tmp_path / "measure.html"
    measured.write_text(page.replace("</body>", probe), encoding="utf-8")
    out = chromium(tmp_path / "p2", "--dump-dom", measured.as_uri()).stdout
    box = next(json.loads(a["data-box"] or "{}") for t, a in parse(out).tags if t == "body")
    assert box["width"] > 200 and box["height"] > 60, box

    shot = tmp_path / "shot.png"
    chromium(tmp_path / "p3", f"--screenshot={shot}", html_file.as_uri())
    width, height, rows = read_png(shot)
    assert (width, height) == (WIDTH, HEIGHT)
    region = pixels(rows, box)
    assert HEADER_GREY in region, "the summary table's header is not in the screenshot"
    dark = sum(1 for p in region if max(p) < 100)
    assert dark > 200, f"no text in the summary table's box ({dark} dark pixels)"

    # Control: the same box of the page without the table is blank, so the check above sees it.
    blank_file = tmp_path / "without-table.html"
    blank_file.write_text(
        page.replace("</style>", "#summary { visibility: hidden; }</style>"), encoding="utf-8"
    )
    blank_shot = tmp_path / "blank.png"
    chromium(tmp_path / "p4", f"--screenshot={blank_shot}", blank_file.as_uri())
    blank = pixels(read_png(blank_shot)[2], box)
    assert HEADER_GREY not in blank and sum(1 for p in blank if max(p) < 100) == 0
