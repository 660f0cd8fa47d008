"""``smsc-mailer-dev`` refuses values it cannot use in one line and a non-zero exit, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from worker.dev.cli import cli


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), prog_name="smsc-mailer-dev")
    return result.exit_code, result.output


@pytest.mark.parametrize(("args", "says"), [
    (["demo", "--recipients", "0"], "--recipients"),
    (["demo", "--recipients", "-5"], "--recipients"),
    (["demo", "--recipients", "many"], "'many' is not a valid integer"),
    (["bench", "--batch-sizes", "abc"], "'abc' is not a batch size"),
    (["bench", "--batch-sizes", "500,"], "'' is not a batch size"),
    (["bench", "--batch-sizes", "0"], "0 is not a batch size"),
    (["bench", "--batch-sizes", "500,-1"], "'-1' is not a batch size"),
    (["bench", "--batch-sizes", "100000"], "100000 is not a batch size"),
    (["bench", "--batch-sizes", "500,500"], "500 is given twice"),
    (["bench", "--workloads", "intake,sned"], "unknown workload 'sned'"),
    (["bench", "--recipients", "10"], "--recipients"),
    (["bench", "--concurrency", "0"], "--concurrency"),
    (["chaos", "--only", "nope"], "unknown scenario 'nope'"),
])
def test_a_bad_value_is_one_line_naming_it_and_exit_2(args: list[str], says: str) -> None:
    code, out = _run(*args)
    assert code == 2, out
    assert len(out.strip().splitlines()) == 1, out
    assert out.startswith(f"smsc-mailer-dev: {args[0]}: ") and says in out, out
    assert "Traceback" not in out


def test_a_results_file_that_cannot_be_written_is_refused_before_the_benchmark(tmp_path: Path) -> None:
    code, out = _run("bench", "--out", str(tmp_path))
    assert code == 2 and "is a directory" in out and len(out.strip().splitlines()) == 1, out
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    code, out = _run("bench", "--out", str(a_file / "r.json"))  # (mode bits would not stop root)
    assert code == 2 and "cannot be written" in out and len(out.strip().splitlines()) == 1, out


def test_the_command_line_tool_prints_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "worker.dev.cli", "demo", "--recipients", "0"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        "smsc-mailer-dev: demo: Invalid value for '--recipients': 0 is not in the range 1<=x<=1000000.")


def test_help_and_an_unknown_command_keep_their_exit_codes() -> None:
    code, out = _run("--help")
    assert code == 0 and "bench" in out
    code, out = _run("nope")
    assert code == 2 and out.startswith("smsc-mailer-dev: No such command 'nope'"), out
