"""The cutover report: Markdown and a self-contained HTML page with the state, window, steps, gates
and sequences (replicator.run.cutover.write_reports over core.report)."""

from __future__ import annotations

from pathlib import Path

from replicator.core.cutover import Gate, Report, SequencePlan, State
from replicator.run.cutover import write_reports


def test_the_cutover_report_shows_window_steps_failed_gates_and_sequences(tmp_path: Path) -> None:
    report = Report(
        cutover_id="cutover-x",
        authority="target",
        state=State.FLIPPED,
        events=[("2026-12-02 05:00:00", "planned", "ops"), ("2026-12-02 05:00:09", "flipped", "ops")],
        fence_lsn=0x2FA692F0,
        fenced_at="2026-12-02 05:00:01",
        flipped_at="2026-12-02 05:00:09",
        window_s=8.25,
        gates=[Gate("lag", True, "largest lag 3 events"), Gate("error_records", False, "2 error <records>")],
        sequences=[SequencePlan("s.parent_id_seq", "s.parent", "id", 90, 120, 1000)],
    )
    md, html = write_reports(tmp_path, report, {"authority": "target", "state": "flipped"})
    text, page = md.read_text().replace("\\_", "_"), html.read_text()  # Markdown escapes underscores
    for out in (text, page):
        assert "cutover-x" in out and "8.25 s" in out and "0/2FA692F0" in out
        assert "s.parent_id_seq" in out and "1120" in out  # set past the source value plus the margin
        assert "2026-12-02 05:00:09" in out and "error_records" in out
    assert "2 error &lt;records&gt;" in page and "<records>" not in page  # escaped, never markup
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
