"""``smsc-mailer stoplist``: the operator's stop list, run as a user runs it (a separate process)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from worker.dev.stack import child_env

pytestmark = pytest.mark.integration


def _entry_point() -> list[str]:
    """``smsc-mailer`` itself (the console script's module, run by this interpreter)."""
    return [sys.executable, "-m", "worker.cli"]


def run(env: Mapping[str, str], *args: str, stdin: str | bytes | None = None,
        code: int | None = 0) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run([*_entry_point(), "stoplist", *args], env=child_env(env), input=data,
                          capture_output=True, timeout=120, check=False)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    if code is not None:
        assert out.returncode == code, f"stoplist {' '.join(args)} exited {out.returncode}:\n{out.stderr}"
    assert "Traceback" not in out.stderr
    return out


def last_json(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    return lines[0]


@pytest.fixture
def env(redis_server, redis_client) -> dict[str, str]:
    return {"REDIS_URL": redis_server.url, "SMSC_NAMESPACE": "stoptest"}


def test_add_prints_how_many_were_new_and_every_spelling_is_one_entry(env) -> None:
    first = last_json(run(env, "add", "89001234567", "+7 901 000-00-01", "--reason", "replied STOP", "--json"))
    assert first == {"added": 2, "already": 0, "invalid": 0, "total": 2}
    again = run(env, "add", "+79001234567", "79010000001")
    assert "0 added, 2 already there" in again.stdout
    for spelling in ("+79001234567", "79001234567", "9001234567", "+7 (900) 123-45-67"):
        hit = run(env, "check", spelling)
        assert hit.stdout.startswith("+79001234567: stopped (replied STOP, manual, added at ")
    # With SMSC_DEFAULT_REGION=RU the national spelling is read as the intake reads it: the same entry.
    assert run({**env, "SMSC_DEFAULT_REGION": "RU"}, "check", "8 900 123-45-67").returncode == 0


def test_check_exits_0_when_stopped_1_when_not_2_on_bad_input_3_without_redis(env) -> None:
    run(env, "add", "79001234567")
    stopped = last_json(run(env, "check", "79001234567", "--json", code=0))
    assert stopped["stopped"] is True and stopped["phone"] == "+79001234567" and stopped["source"] == "manual"
    not_stopped = run(env, "check", "79001234568", "--json", code=1)
    assert not_stopped.stdout.startswith("+79001234568: not stopped")
    assert last_json(not_stopped)["stopped"] is False
    assert "unexpected character" in one_line(run(env, "check", "12ab", code=2).stderr)
    down = run({**env, "REDIS_URL": "redis://:hunter2@127.0.0.1:9/0"}, "check", "79001234567", code=3)
    line = one_line(down.stderr)
    assert "cannot reach Redis" in line and "hunter2" not in line


def test_add_with_an_invalid_argument_is_one_line_and_adds_nothing(env) -> None:
    proc = run(env, "add", "79001234567", "12ab", code=2)
    assert "argument 2" in one_line(proc.stderr)
    assert run(env, "check", "79001234567", code=1)
    assert "--reason" in one_line(run(env, "add", "79001234567", "--reason", "a\nb", code=2).stderr)
    assert "standard input" in one_line(run(env, "add", code=2).stderr)


def test_import_names_each_invalid_line_and_keeps_the_valid_ones(env, tmp_path: Path) -> None:
    f = tmp_path / "optouts.txt"
    f.write_text("phone\n+79001234567\nnope\n\n# a comment\n89001234568  # replied STOP\n+7 900\n79001234569\n",
                 encoding="utf-8")
    proc = run(env, "import", str(f), "--reason", "November opt-outs", "--json")
    assert last_json(proc) == {"added": 3, "already": 0, "invalid": 2, "total": 3}
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"{f}:3: 'nope': ") and errors[1].startswith(f"{f}:7: '+7 900': ")
    for phone in ("+79001234567", "+79001234568", "+79001234569"):
        assert "November opt-outs, import" in run(env, "check", phone).stdout


def test_an_unreadable_line_stops_the_import_there_and_the_numbers_before_it_are_stopped(env, tmp_path) -> None:
    f = tmp_path / "broken.txt"
    f.write_bytes(b"79001234567\n79001234568\n\xff\xfe\n79001234569\n")
    line = one_line(run(env, "import", str(f), code=2).stderr)
    assert f"{f}: line 3" in line and "UTF-8" in line and "2 valid numbers before it" in line
    assert run(env, "check", "79001234568", code=0)
    assert run(env, "check", "79001234569", code=1)
    assert "no such file" in one_line(run(env, "import", str(tmp_path / "missing.txt"), code=2).stderr)


def test_a_csv_with_a_phone_column_is_imported_with_its_reasons(env, tmp_path) -> None:
    f = tmp_path / "crm.csv"
    f.write_text('name;phone;reason\n"Ann";+7 900 123-45-67;asked by phone\nBob;xx;\nCid\nDan;89001234568;\n',
                 encoding="utf-8-sig")
    proc = run(env, "import", str(f), "--reason", "CRM export", "--json")
    assert last_json(proc) == {"added": 2, "already": 0, "invalid": 2, "total": 2}
    assert f"{f}:3: 'xx'" in proc.stderr and f"{f}:4:" in proc.stderr
    assert "(asked by phone, import" in run(env, "check", "79001234567").stdout
    assert "(CRM export, import" in run(env, "check", "79001234568").stdout


def test_export_round_trips_through_import_into_another_namespace(env) -> None:
    phones = [f"+7900{i:07d}" for i in range(2500)]  # several HSCAN pages
    run(env, "add", "-", stdin="\n".join(p.replace("+7", "8", 1) for p in phones[:2000]) + "\n")
    run(env, "add", "--reason", "replied STOP", *phones[2000:])
    plain = run(env, "export").stdout.splitlines()
    assert sorted(plain) == phones  # normalized, one a line, each once
    exported = run(env, "export", "--csv").stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 2500 and {r["phone"] for r in rows} == set(phones)
    assert {r["reason"] for r in rows if r["phone"] in phones[2000:]} == {"replied STOP"}
    other = {**env, "SMSC_NAMESPACE": "stopcopy"}
    assert last_json(run(other, "import", "-", "--json", stdin=exported))["added"] == 2500
    copied = {r["phone"]: r for r in csv.DictReader(io.StringIO(run(other, "export", "--csv").stdout))}
    assert copied.keys() == set(phones)
    assert all(copied[p]["reason"] == "replied STOP" and copied[p]["source"] == "import" for p in phones[2000:])
    lines = [json.loads(ln) for ln in run(env, "export", "--json").stdout.splitlines()]
    assert len(lines) == 2500 and {"phone", "reason", "source", "added_ms"} <= lines[0].keys()


def test_remove_by_another_spelling_and_from_stdin(env) -> None:
    run(env, "add", "89001234567", "79001234568", "79001234569")
    assert last_json(run(env, "remove", "+79001234567", "--json")) == {"removed": 1, "absent": 0, "invalid": 0,
                                                                        "total": 2}
    proc = run(env, "remove", "-", "--json", stdin="79001234568\nbad\n79001234599\n")
    assert last_json(proc) == {"removed": 1, "absent": 1, "invalid": 1, "total": 1}
    assert "<stdin>:2: 'bad'" in proc.stderr
    assert run(env, "export").stdout.split() == ["+79001234569"]
