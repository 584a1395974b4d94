"""The command line: options given before a subcommand survive it; a closed stdout ends it quietly;
a run that ends with a stopped table says so."""

from __future__ import annotations

import subprocess
import sys

import pytest

from replicator.cli import build_parser


@pytest.mark.parametrize(
    ("argv", "report_dir", "as_json"),
    [
        (["cutover", "--report-dir", "/tmp/r", "status"], "/tmp/r", False),
        (["cutover", "status", "--report-dir", "/tmp/r", "--json"], "/tmp/r", True),
        (["cutover", "--json", "rollback"], "reports", True),
        (["cutover", "status"], "reports", False),
        (["cutover", "--report-dir", "/tmp/r"], "/tmp/r", False),
    ],
)
def test_cutover_options_before_or_after_the_subcommand(
    argv: list[str], report_dir: str, as_json: bool
) -> None:
    args = build_parser().parse_args(argv)
    assert args.report_dir == report_dir
    assert args.json is as_json


_SCRIPT = """
import argparse, sys
import replicator.cli as cli

def handler(args, settings):
    if sys.argv[1] == "print":
        for i in range(200_000):
            print("line", i)
    raise BrokenPipeError(32, "Broken pipe")  # a socket of ours, not stdout

parser = argparse.ArgumentParser()
parser.set_defaults(handler=handler)
cli.build_parser = lambda: parser
cli.load_settings = lambda *a, **k: None
sys.exit(cli.main([]))
"""


def test_a_reader_that_stops_reading_stdout_ends_the_command_quietly() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, "print"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"line 0\n"
        proc.stdout.close()  # as `| head -1` does
        assert proc.wait(timeout=60) == 141
        assert proc.stderr.read() == b""


def test_a_broken_pipe_elsewhere_is_still_an_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, "raise"], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode != 0 and proc.returncode != 141
    assert b"Broken pipe" in proc.stderr


@pytest.mark.parametrize(("until_caught_up", "code"), [(True, 1), (False, 0)])
def test_a_run_that_ends_with_a_stopped_table_says_so_and_is_not_done(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], until_caught_up: bool, code: int
) -> None:
    """`run --stop-when-caught-up` read every event, but a stopped table's were not applied: exit 1
    with the stop's line (a daemon stopped by a signal exits 0 and says it too)."""
    import replicator.run.daemon as daemon

    line = "crm.account stopped at t[0]@0 (account.on_schema_change): ...; fix: ..."
    monkeypatch.setattr(daemon, "run_daemon", lambda *a, **k: {"run_id": "r", "stopped": [line]})
    argv = ["run", *(["--stop-when-caught-up"] if until_caught_up else [])]
    args = build_parser().parse_args(argv)
    assert args.handler(args, None) == code
    assert f"replicator: stopped: {line}" in capsys.readouterr().err


def test_run_processes_children_get_the_same_options_as_one_process() -> None:
    """`run --processes N` starts each process with the command's own options (a dropped one
    would run a process against other settings), never with --processes itself."""
    from replicator.cli import _run_args

    args = build_parser().parse_args(
        [
            "--group-id",
            "g1",
            "run",
            "--mapping",
            "m.yaml",
            "--processes",
            "3",
            "--stop-when-caught-up",
            "--on-error",
            "halt",
            "--json",
            "--config",
            "c.yaml",
        ]
    )
    assert _run_args(args) == [
        "run",
        "--config",
        "c.yaml",
        "--mapping",
        "m.yaml",
        "--group-id",
        "g1",
        "--stop-when-caught-up",
        "--on-error",
        "halt",
        "--json",
    ]
    one = build_parser().parse_args(["run", "--processes", "2"])
    assert _run_args(one) == ["run", "--on-error", "record"]


def test_run_processes_instance_ids() -> None:
    from replicator.run.processes import child_env, instance_ids

    assert instance_ids("pod-a", 3) == ["pod-a-1", "pod-a-2", "pod-a-3"]
    assert instance_ids(None, 2) == [None, None]
    assert child_env({"X": "1"}, "pod-a-2") == {"X": "1", "REPLICATOR_KAFKA__INSTANCE_ID": "pod-a-2"}
    assert child_env({"X": "1", "REPLICATOR_KAFKA__INSTANCE_ID": "pod-a"}, None) == {
        "X": "1",
        "REPLICATOR_KAFKA__INSTANCE_ID": "pod-a",
    }
