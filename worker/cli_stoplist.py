"""``smsc-mailer stoplist`` — the namespace's stop list (opt-outs): add, remove, import, export, check.

Numbers are read as the intake reads them (``SMSC_DEFAULT_REGION``) and kept by the number the provider
delivers to (:mod:`scheduler.stoplist`), so every spelling of one subscriber is one entry.

Exit codes: 0 done (``import`` and ``add -`` also when some lines were invalid: each is named on
standard error and counted in the summary); 2 bad input or settings (one line); 1 Redis cannot be
reached. ``check``: 0 stopped, 1 not stopped, 2 bad input, 3 Redis cannot be reached — not 1, so that a
script reading "1 = not stopped" never sends because Redis was down. ``--json`` makes the last line a
JSON object (``export --json``: one object per line).

This module is registered by :mod:`worker.cli` (``cli.add_command(stoplist)``) and so cannot import it:
the three tiny helpers (``_fail``, ``_settings``, ``_errors``) are repeated here.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count, islice
from typing import IO, BinaryIO

import click
import redis

from scheduler.intake import MAX_LINE_BYTES, IntakeError, InvalidPhone, iter_phones_file, normalize_phone
from scheduler.keys import Keys
from scheduler.stoplist import CHUNK, Entry, StopList, check_reason, stop_key
from worker.cli_common import fail, mask_url, name_counted, settings_or_fail
from worker.settings import Settings

__all__ = ["stoplist"]

_STDIN = "<stdin>"


_fail, _settings, _mask_url = fail, settings_or_fail, mask_url  # the shared ones (worker.cli_common)


@contextmanager
def _session(*, unreachable: int = 1) -> Iterator[tuple[Settings, StopList]]:
    """The settings and this namespace's stop list; the expected failures are one line and an exit code."""
    from worker.runtime import redis_client

    s = _settings()
    try:
        yield s, StopList(redis_client(s.redis_url), Keys(s.smsc_namespace), region=s.smsc_default_region)
    except ValueError as exc:  # InvalidPhone, IntakeError, a bad reason
        _fail(str(exc))
    except (redis.ConnectionError, redis.TimeoutError):
        _fail(f"cannot reach Redis at {_mask_url(s.redis_url)} (set REDIS_URL)", unreachable)


def _ms(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word if n == 1 else word + 's'}"


# -- reading numbers ------------------------------------------------------------------------------
@dataclass
class _Reader:
    """Streams ``(phone, reason)`` from a file, standard input or the arguments; counts what it refuses.

    Invalid lines are named on standard error and counted; an unreadable input (``IntakeError``) ends the
    stream and is kept in ``error``, so that the numbers read before it are still written.
    """

    name: str
    reason: str
    region: str | None
    valid: int = 0
    invalid: int = 0
    error: IntakeError | None = None

    def reject(self, line_no: int, raw: str, why: str) -> None:
        self.invalid += 1
        name_counted(self.invalid, f"{self.name}:{line_no}: {raw!r}: {why}",
                     more="... more invalid lines: see the count below")

    def rows(self, path: str) -> Iterator[tuple[str, str]]:
        # Outside the try: an input that cannot be opened at all is the command's one-line error.
        source = _csv_rows(path, self.name) if _has_phone_header(path) else _plain_rows(path)
        try:
            for line_no, raw, reason in source:
                if isinstance(raw, InvalidPhone):  # a row without a phone field
                    self.reject(line_no, "", raw.reason)
                    continue
                try:
                    phone = normalize_phone(raw, self.region)
                    check_reason(reason or self.reason)
                except ValueError as exc:
                    self.reject(line_no, raw, str(exc))
                    continue
                self.valid += 1
                yield phone, reason or self.reason
        except IntakeError as exc:
            self.error = exc


def _open(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    if os.path.isdir(path):
        raise IntakeError(f"{path}: cannot open: it is a folder, not a file of phone numbers")
    try:
        return open(path, "rb")  # closed by the caller
    except FileNotFoundError:
        raise IntakeError(f"{path}: cannot open: no such file") from None
    except OSError as exc:
        raise IntakeError(f"{path}: cannot open: {exc.strerror or exc}") from None


def _header(line: bytes) -> list[str]:
    text = line.decode("utf-8", "replace").removeprefix("\ufeff").strip()
    delimiter = ";" if text.count(";") > text.count(",") else ","
    return [cell.strip().strip('"').strip().lower() for cell in text.split(delimiter)]


def _has_phone_header(path: str) -> bool:
    """Whether the input starts with a CSV header naming a ``phone`` column (looked at, not consumed)."""
    f = _open(path)
    try:
        if path == "-":
            peek = getattr(f, "peek", None)
            first = peek(MAX_LINE_BYTES) if peek is not None else b""  # a pipe: what the first read brought
            first = first.split(b"\n", 1)[0]
        else:
            first = f.readline(MAX_LINE_BYTES)
    finally:
        if path != "-":
            f.close()
    cells = _header(first)
    return len(cells) > 1 and "phone" in cells


def _plain_rows(path: str) -> Iterator[tuple[int, str | InvalidPhone, str]]:
    # scheduler.intake's reader: one number a line (or the first field of a CSV-ish line), comments, BOM.
    first = True
    for line_no, raw in iter_phones_file(path):
        if first and raw.lower() == "phone":
            continue  # a one-column CSV's header
        first = False
        yield line_no, raw, ""


def _csv_rows(path: str, name: str) -> Iterator[tuple[int, str | InvalidPhone, str]]:
    """``(line_no, phone field, reason field)`` of a CSV file whose header names ``phone`` (and maybe ``reason``)."""
    f = _open(path)
    try:
        lines = _text_lines(f, name)
        first = next(lines, "")
        delimiter = ";" if first.count(";") > first.count(",") else ","
        header = [cell.strip().lower() for cell in next(csv.reader([first], delimiter=delimiter))]
        phone_at = header.index("phone")
        reason_at = header.index("reason") if "reason" in header else -1
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            for row in reader:
                line_no = reader.line_num + 1  # the header was read apart
                if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                    continue
                if len(row) <= phone_at:
                    yield line_no, InvalidPhone(f"no field {phone_at + 1} (phone) in this row"), ""
                    continue
                reason = row[reason_at].strip() if 0 <= reason_at < len(row) else ""
                yield line_no, row[phone_at], reason
        except csv.Error as exc:
            raise IntakeError(f"{name}: line {reader.line_num + 1}: not CSV: {exc}") from None
    finally:
        if path != "-":
            f.close()


def _text_lines(f: BinaryIO, name: str) -> Iterator[str]:
    for line_no in count(1):
        chunk = f.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        if len(chunk) > MAX_LINE_BYTES:
            raise IntakeError(f"{name}: line {line_no}: longer than {MAX_LINE_BYTES} bytes; expected a CSV row")
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IntakeError(f"{name}: line {line_no}: byte 0x{chunk[exc.start]:02x} at byte {exc.start + 1} "
                              "is not UTF-8 (save the file as UTF-8)") from None
        yield text.removeprefix("\ufeff") if line_no == 1 else text


def _arguments(numbers: tuple[str, ...], region: str | None, what: str) -> list[str]:
    """The numbers given as arguments, all checked before anything is written."""
    phones = []
    for i, raw in enumerate(numbers, 1):
        try:
            phones.append(normalize_phone(raw, region))
        except InvalidPhone as exc:
            done = {"add": "added", "remove": "removed"}[what]
            _fail(f"stoplist {what}: argument {i} ({raw!r}): {exc.reason}; nothing was {done}")
    return phones


def _write(store: StopList, reader: _Reader, path: str, *, source: str) -> int:
    added = 0
    rows = reader.rows(path)
    while chunk := list(islice(rows, CHUNK)):
        added += store.add_noted(chunk, source=source)
    return added


def _finish(reader: _Reader | None) -> None:
    """Fail (one line) when the input stopped being readable; the numbers before that line are written."""
    if reader is not None and reader.error is not None:
        before = f" (the {_plural(reader.valid, 'valid number')} before it are written)" if reader.valid else ""
        _fail(f"{reader.error}; stopped there{before}")


def _summary(store: StopList, counts: dict[str, int], text: str, as_json: bool) -> None:
    counts["total"] = store.count()
    if counts.get("invalid"):
        text += f"; {_plural(counts['invalid'], 'invalid line')} (named above)"
    click.echo(f"stop list: {text}; {_plural(counts['total'], 'number')} stopped in all")
    if as_json:
        click.echo(json.dumps(counts))


# -- the commands ---------------------------------------------------------------------------------
_JSON = click.option("--json", "as_json", is_flag=True, help="Last line: a JSON object.")
_REASON = click.option("--reason", default="", help="Why (kept with each new entry; one line, at most 200 chars).")


@click.group()
def stoplist() -> None:
    """The stop list (opt-outs): numbers no campaign of this namespace sends to."""


def _add(numbers: tuple[str, ...], reason: str, as_json: bool, *, source: str, path: str | None = None) -> None:
    with _session() as (s, store):
        try:
            check_reason(reason)
        except ValueError as exc:
            _fail(f"--reason: {exc}")
        reader: _Reader | None = None
        if path is not None:
            reader = _Reader(_STDIN if path == "-" else path, reason, s.smsc_default_region)
            added = _write(store, reader, path, source=source)
            valid, invalid = reader.valid, reader.invalid
        else:
            phones = _arguments(numbers, s.smsc_default_region, "add")
            added = store.add(phones, reason=reason, source=source)
            valid, invalid = len(phones), 0
        _finish(reader)
        _summary(store, {"added": added, "already": valid - added, "invalid": invalid},
                 f"{added:,} added, {valid - added:,} already there", as_json)


def _stdin_or_args(numbers: tuple[str, ...], what: str) -> str | None:
    if not numbers:
        _fail(f"stoplist {what}: give numbers as arguments, or - to read them from standard input")
    if "-" in numbers:
        if len(numbers) > 1:
            _fail(f"stoplist {what}: - reads standard input; give it alone, without other numbers")
        return "-"
    return None


@stoplist.command()
@click.argument("numbers", nargs=-1)
@_REASON
@_JSON
def add(numbers: tuple[str, ...], reason: str, as_json: bool) -> None:
    """Stop numbers; print how many were new.

    NUMBERS are read as the intake reads them (SMSC_DEFAULT_REGION); - reads one a line from standard
    input (invalid lines are named and counted; the valid ones are added)."""
    path = _stdin_or_args(numbers, "add")
    _add(numbers, reason, as_json, source="manual", path=path)


@stoplist.command(name="import")
@click.argument("file")
@_REASON
@_JSON
def import_(file: str, reason: str, as_json: bool) -> None:
    """Stop every number of a file.

    FILE (- = standard input) has one number a line, or is a CSV whose header names a 'phone' column (and
    maybe a 'reason' column, as 'export --csv' writes). Invalid lines are named and counted; the valid
    ones are added."""
    _add((), reason, as_json, source="import", path=file)


@stoplist.command()
@click.argument("numbers", nargs=-1)
@_JSON
def remove(numbers: tuple[str, ...], as_json: bool) -> None:
    """Unstop numbers, whichever spelling they were stopped by.

    NUMBERS as for 'add'; - reads one a line from standard input."""
    path = _stdin_or_args(numbers, "remove")
    with _session() as (s, store):
        reader: _Reader | None = None
        removed = 0
        if path is not None:
            reader = _Reader(_STDIN, "", s.smsc_default_region)
            rows = reader.rows(path)
            while chunk := [phone for phone, _ in islice(rows, CHUNK)]:
                removed += store.remove(chunk)
            valid, invalid = reader.valid, reader.invalid
        else:
            phones = _arguments(numbers, s.smsc_default_region, "remove")
            removed = store.remove(phones)
            valid, invalid = len(phones), 0
        _finish(reader)
        _summary(store, {"removed": removed, "absent": valid - removed, "invalid": invalid},
                 f"{removed:,} removed, {valid - removed:,} not there", as_json)


_CSV_COLUMNS = ("phone", "reason", "source", "added_ms", "added")


def _row(e: Entry) -> list[str]:
    return [e.phone, e.reason, e.source, str(e.added_ms), _ms(e.added_ms)]


@stoplist.command()
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header: " + ",".join(_CSV_COLUMNS) + ".")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def export(as_csv: bool, as_json: bool) -> None:
    """Print every stopped number.

    One a line in E.164, as the provider delivers to, in no particular order, streamed (HSCAN)."""
    if as_csv and as_json:
        _fail("stoplist export: choose --csv or --json, not both")
    out: IO[str] = sys.stdout
    with _session() as (_, store):
        try:
            if as_csv:
                w = csv.writer(out, lineterminator="\n")
                w.writerow(_CSV_COLUMNS)
                for e in store.scan():
                    w.writerow(_row(e))
            elif as_json:
                for e in store.scan():
                    out.write(json.dumps({"phone": e.phone, "reason": e.reason, "source": e.source,
                                          "added_ms": e.added_ms}) + "\n")
            else:
                for e in store.scan():
                    out.write(e.phone + "\n")
            out.flush()
        except BrokenPipeError:  # export | head: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            raise SystemExit(0) from None


@stoplist.command()
@click.argument("number")
@_JSON
def check(number: str, as_json: bool) -> None:
    """Whether a number is stopped (exit 0) or not (exit 1).

    Exit 2 on bad input, 3 when Redis cannot be reached."""
    with _session(unreachable=3) as (s, store):
        try:
            phone = "+" + stop_key(number, s.smsc_default_region)
        except InvalidPhone as exc:
            _fail(f"stoplist check: {number!r}: {exc.reason}")
        e = store.entry(phone)
    if e is None:
        click.echo(f"{phone}: not stopped")
    else:
        click.echo(f"{e.phone}: stopped ({e.reason or 'no reason given'}, {e.source}, added at {_ms(e.added_ms)})")
    if as_json:
        click.echo(json.dumps({"phone": phone, "stopped": e is not None, "reason": e.reason if e else None,
                               "source": e.source if e else None, "added_ms": e.added_ms if e else None}))
    raise SystemExit(0 if e is not None else 1)

