"""A table's rows read by a forked child (worker.reader): the same rows, rejections, line numbers, errors,
digest and encoding as reading them in this process, and no child left behind however the reading ends."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from scheduler.intake import IntakeError
from worker import reader
from worker.reader import ChildRows, child_wanted
from worker.rows import compile_template, iter_rows, open_table
from worker.smsc.encoding import validate_message

TEMPLATE = "{{ name }}, заказ {{ order }}{% if city %} в {{ city }}{% endif %}"
PROJECT = Path(__file__).resolve().parents[2]


def _write_csv(path: Path, rows: list[list[str]], *, encoding: str = "utf-8", delimiter: str = ",") -> Path:
    with path.open("w", encoding=encoding, newline="") as f:
        csv.writer(f, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return path


def _mixed_rows(n: int) -> list[list[str]]:
    """Good rows and every kind of bad one, past a few of the child's chunks."""
    rows = [["phone", "name", "order", "city"]]
    for i in range(n):
        phone, name, order, city = f"+7916{i:07d}", f"Имя {i}", str(4700 + i), "Пермь" if i % 3 else ""
        if i % 97 == 5:
            phone = "not a phone"
        elif i % 89 == 7:
            order = ""  # an empty placeholder column
        elif i % 83 == 11:
            name = "x" * 1001  # a text the provider refuses (over 1000 characters)
        elif i % 79 == 13:
            name = "две\nстроки; с | и : и \\"  # a quoted field with a newline and list separators
        elif i % 71 == 17:
            phone = f"+7916{i - 3:07d}"  # a duplicate number: the reader passes it on, the dedup decides
        rows.append([phone, name, order, city])
        if i % 113 == 19:
            rows.append(["+79160000001", "a", "b", "c", "extra"])  # more cells than the header
        if i % 131 == 23:
            rows.append(["", "", "", ""])  # a blank row: skipped
    return rows


def _inline(path: Path) -> tuple[list[Any], str, str | None]:
    with open_table(path) as table:
        tpl = compile_template(TEMPLATE, table.columns)
        got = list(iter_rows(table, template=tpl, check_text=validate_message))
        return got, table.digest(), table.encoding


def _child(path: Path, **kw: Any) -> tuple[list[Any], str | None, str | None]:
    with open_table(path) as table:
        tpl = compile_template(TEMPLATE, table.columns)
        rows = ChildRows(table, template=tpl, **kw)
        got = list(rows)
        return got, rows.digest, rows.encoding


@pytest.mark.parametrize("encoding,delimiter", [("utf-8", ","), ("utf-8-sig", "\t"), ("cp1251", ";")])
def test_the_child_yields_exactly_what_this_process_reads(tmp_path: Path, encoding: str, delimiter: str) -> None:
    path = _write_csv(tmp_path / "t.csv", _mixed_rows(3_500), encoding=encoding, delimiter=delimiter)
    want, digest, enc = _inline(path)
    got, child_digest, child_enc = _child(path)
    assert got == want
    assert sum(1 for x in want if type(x).__name__ == "Rejected") > 100  # the bad rows are in the comparison
    assert (child_digest, child_enc) == (digest, enc)
    assert child_digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_xlsx_read_by_the_child_is_the_same(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in _mixed_rows(1_200):
        ws.append([int(r[0][1:]) if r[0].startswith("+7") and len(r) == 4 else c for c in r])
    wb.save(tmp_path / "t.xlsx")
    want, digest, _ = _inline(tmp_path / "t.xlsx")
    got, child_digest, child_enc = _child(tmp_path / "t.xlsx")
    assert got == want and len(got) > 1_000
    assert (child_digest, child_enc) == (digest, None)


def test_an_error_in_the_middle_is_raised_here_after_the_same_rows(tmp_path: Path) -> None:
    rows = _mixed_rows(2_500)
    path = tmp_path / "t.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
        f.flush()
        bad_line = path.read_bytes().count(b"\n") + 1
        f.write('+79170000001,"never closed,1,x\n')
        f.write("+79170000002,b,2,y\n")

    def read(how: Any) -> tuple[list[Any], str]:
        got: list[Any] = []
        with pytest.raises(IntakeError) as exc:
            for item in how():
                got.append(item)
        return got, str(exc.value)

    def inline() -> Any:
        table = open_table(path)
        return iter_rows(table, template=compile_template(TEMPLATE, table.columns), check_text=validate_message)

    def child() -> Any:
        table = open_table(path)
        return ChildRows(table, template=compile_template(TEMPLATE, table.columns))

    want_rows, want_error = read(inline)
    got_rows, got_error = read(child)
    assert got_rows == want_rows and len(got_rows) > 2_000
    assert got_error == want_error and "never closed" in got_error and f": line {bad_line}: " in got_error


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_reading_stopped_early_leaves_no_child(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "t.csv", _mixed_rows(20_000))
    with open_table(path) as table:
        rows = ChildRows(table, template=compile_template(TEMPLATE, table.columns))
        pid = rows._pid
        assert pid is not None and _alive(pid)
        for n, _ in enumerate(rows):
            if n == 10:
                break  # the consumer gives up (a refusal, Ctrl-C): the generator closes
        rows.close()
    assert rows._pid is None
    with pytest.raises(ChildProcessError):  # reaped, not a zombie
        os.waitpid(pid, os.WNOHANG)


def test_a_child_that_dies_is_an_error_in_one_line_not_a_hang(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "t.csv", _mixed_rows(50_000))
    with open_table(path) as table:
        rows = ChildRows(table, template=compile_template(TEMPLATE, table.columns))
        assert rows._pid is not None
        os.kill(rows._pid, 9)
        with pytest.raises(IntakeError, match=r"the process reading the rows ended without its last word "
                                              r"\(killed by signal 9\)"):
            for _ in rows:
                pass


def test_which_reader_reads_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = _write_csv(tmp_path / "small.csv", _mixed_rows(10))
    big = tmp_path / "big.csv"
    big.write_bytes(small.read_bytes() + b"+79160000001,a,b,c\r\n" * (reader.CHILD_MIN_BYTES // 20))
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert (child_wanted(str(small), "auto"), child_wanted(str(big), "auto")) == (False, True)
    assert child_wanted(str(small), "child") and not child_wanted(str(big), "inline")
    assert not child_wanted("-", "child")  # standard input: its header is already in this process's buffer
    assert not child_wanted(str(tmp_path), "child") and not child_wanted(str(tmp_path / "none"), "child")
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert not child_wanted(str(big), "child")  # another thread might hold a lock the child would need


def test_the_command_lines_process_reads_a_large_table_in_a_child(tmp_path: Path) -> None:
    """In a process of one thread (as ``smsc-mailer enqueue`` is), the table's intake stream is a child's."""
    path = _write_csv(tmp_path / "t.csv", _mixed_rows(100))
    script = (
        "import contextlib, sys\n"
        "from worker import api\n"
        "from worker.settings import Settings\n"
        "s = Settings(smsc_intake_reader=sys.argv[2])\n"
        "with contextlib.contextmanager(api._table)(sys.argv[1], sys.argv[3], {'settings': s}, phone_column='phone',"
        " sender_column=None, tz_column=None) as (digest, items):\n"
        "    it = items(lambda text: None, lambda text: 1)\n"
        "    n = sum(1 for _ in it)\n"
        "    print(type(it).__name__, n, digest())\n"
    )
    out = {}
    for mode in ("child", "inline"):
        proc = subprocess.run([sys.executable, "-c", script, str(path), mode, TEMPLATE], cwd=PROJECT,
                              capture_output=True, text=True, timeout=60, check=True)
        out[mode] = proc.stdout.split()
    assert out["child"][0] == "ChildRows" and out["inline"][0] != "ChildRows"
    assert out["child"][1:] == out["inline"][1:] == [str(len(_inline(path)[0])),
                                                     hashlib.sha256(path.read_bytes()).hexdigest()]
