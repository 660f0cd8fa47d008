"""``smsc-mailer audience`` — saved lists of recipients for recurring campaigns (``audience="list:NAME"``):
list, show, add, remove, import, export, delete (:mod:`scheduler.audiences`).

Numbers are read as the intake reads them (``SMSC_DEFAULT_REGION``); a number in two spellings is one
member. The stop list is not applied to a list (it is applied at every enqueue of it, and before every
request): ``show`` says how many members it holds now.

Exit codes: 0 done (``import`` and ``add -`` also when some lines were invalid: each is named on standard
error and counted in the summary); 2 bad input or settings, or no such list (one line); 1 Redis cannot be
reached. ``--json`` makes the last line a JSON object.

Registered by :mod:`worker.cli` (``cli.add_command(audience)``); until then ``python -m worker.cli_audience``.
The three tiny helpers (``_fail``, ``_settings``, ``_mask_url``) are repeated from ``cli_stoplist``: a
module registered by :mod:`worker.cli` cannot import it, and ``cli_stoplist`` exports only its group.
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
from typing import IO, Any

import click
import redis

from scheduler.audiences import Audiences, check_name
from scheduler.intake import IntakeError, InvalidPhone, iter_phones_file, normalize_phone
from scheduler.keys import Keys
from scheduler.stoplist import StopList
from worker.cli_common import fail, mask_url, name_counted, settings_or_fail
from worker.settings import Settings

__all__ = ["audience"]

_TABLE_SUFFIXES = (".csv", ".tsv", ".xlsx", ".xlsm")


_fail, _settings, _mask_url = fail, settings_or_fail, mask_url  # the shared ones (worker.cli_common)


@dataclass
class _Session:
    settings: Settings
    lists: Audiences
    stoplist: StopList


@contextmanager
def _session() -> Iterator[_Session]:
    """The settings and this namespace's lists; the expected failures are one line and an exit code."""
    from worker.runtime import redis_client

    s = _settings()
    try:
        r = redis_client(s.redis_url)
        keys = Keys(s.smsc_namespace)
        yield _Session(s, Audiences(r, keys, region=s.smsc_default_region),
                       StopList(r, keys, region=s.smsc_default_region))
    except ValueError as exc:  # AudienceError, InvalidPhone, IntakeError, a template's column
        _fail(str(exc))
    except (redis.ConnectionError, redis.TimeoutError):
        _fail(f"cannot reach Redis at {_mask_url(s.redis_url)} (set REDIS_URL)", 1)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word if n == 1 else word + 's'}"


def _ms(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


# -- reading members ------------------------------------------------------------------------------
@dataclass
class _Reader:
    """Streams members from a file, standard input or the arguments; names and counts what it refuses.

    An unreadable input (``IntakeError``) ends the stream and is kept in ``error``: the members read
    before it are written (``import --replace`` writes nothing then)."""

    name: str
    region: str | None
    valid: int = 0
    invalid: int = 0
    error: IntakeError | None = None

    def reject(self, line_no: int, raw: str, why: str) -> None:
        self.invalid += 1
        name_counted(self.invalid, f"{self.name}:{line_no}: {raw!r}: {why}",
                     more="... more invalid lines: see the count below")

    def phones(self, path: str) -> Iterator[str]:
        """One number a line (the intake's reader: comments, BOM; a first line ``phone`` is a header)."""
        first = True
        try:
            for line_no, raw in iter_phones_file(path):
                if first and raw.lower() == "phone":
                    first = False
                    continue
                first = False
                try:
                    phone = normalize_phone(raw, self.region)
                except InvalidPhone as exc:
                    self.reject(line_no, raw, exc.reason)
                    continue
                self.valid += 1
                yield phone
        except IntakeError as exc:
            self.error = exc

    def rows(self, path: str, phone_column: str) -> Iterator[tuple[str, dict[str, str]]]:
        """A CSV or .xlsx with a header: the phone column, and every other column kept with the member for
        a template (``{{ name }}``)."""
        from worker.rows import open_table

        with open_table(path) as table:  # outside the try: an unreadable table is the command's error
            if phone_column not in table.columns:
                raise IntakeError(f"{self.name}: no column {phone_column!r} (the header has "
                                  f"{', '.join(table.columns)}); give --phone-column")
            try:
                for line_no, row in table:
                    raw = row.get(phone_column, "")
                    try:
                        phone = normalize_phone(raw, self.region)
                    except InvalidPhone as exc:
                        self.reject(line_no, raw, f"column {phone_column!r}: {exc.reason}")
                        continue
                    self.valid += 1
                    yield phone, {k: v for k, v in row.items() if k != phone_column}
            except IntakeError as exc:
                self.error = exc


def _is_table(path: str, as_table: bool | None) -> bool:
    if as_table is not None:
        return as_table
    return path != "-" and path.lower().endswith(_TABLE_SUFFIXES)


def _arguments(numbers: tuple[str, ...], region: str | None, what: str) -> list[str]:
    phones = []
    for i, raw in enumerate(numbers, 1):
        try:
            phones.append(normalize_phone(raw, region))
        except InvalidPhone as exc:
            _fail(f"audience {what}: argument {i} ({raw!r}): {exc.reason}; nothing was changed")
    return phones


def _numbers_or_stdin(numbers: tuple[str, ...], what: str) -> str | None:
    if not numbers:
        _fail(f"audience {what}: give numbers as arguments, or - to read them from standard input")
    if "-" in numbers:
        if len(numbers) > 1:
            _fail(f"audience {what}: - reads standard input; give it alone, without other numbers")
        return "-"
    return None


def _finish(reader: _Reader) -> None:
    """Fail (one line) when the input stopped being readable; the members before that line are added."""
    if reader.error is not None:
        before = f" (the {_plural(reader.valid, 'valid number')} before it are added)" if reader.valid else ""
        _fail(f"{reader.error}; stopped there{before}")


def _summary(session: _Session, name: str, counts: dict[str, int], text: str, as_json: bool) -> None:
    counts["members"] = session.lists.count(name)
    if counts.get("invalid"):
        text += f"; {_plural(counts['invalid'], 'invalid line')} (named above)"
    click.echo(f"list {name}: {text}; {_plural(counts['members'], 'member')} in all")
    if as_json:
        click.echo(json.dumps({"list": name, **counts}))


# -- the commands ---------------------------------------------------------------------------------
_JSON = click.option("--json", "as_json", is_flag=True, help="Last line: a JSON object.")


@click.group()
def audience() -> None:
    """Saved lists of recipients (for recurring campaigns: audience="list:NAME")."""


@audience.command(name="list")
@_JSON
def list_lists(as_json: bool) -> None:
    """Every saved list with its members and columns."""
    with _session() as session:
        infos = [session.lists.info(name) for name in session.lists.names()]
    for i in infos:
        cols = f", columns {', '.join(i['columns'])}" if i["columns"] else ""
        click.echo(f"{i['name']}: {_plural(i['members'], 'member')}{cols} (updated {_ms(i['updated_ms'])})")
    if not infos:
        click.echo("no saved lists (smsc-mailer audience import NAME FILE makes one)")
    if as_json:
        click.echo(json.dumps({"lists": infos}))


@audience.command()
@click.argument("name")
@_JSON
def show(name: str, as_json: bool) -> None:
    """A list's members, columns and how many of them are on the stop list now."""
    with _session() as session:
        info = session.lists.info(check_name(name))
        info["stopped"] = session.lists.stopped(name, session.stoplist)
    cols = ", ".join(info["columns"]) or "none (phones only)"
    click.echo(f"list {name}: {_plural(info['members'], 'member')}, {info['stopped']:,} of them on the stop list "
               f"(left out of every campaign); columns: {cols}; updated {_ms(info['updated_ms'])}")
    if as_json:
        click.echo(json.dumps(info))


@audience.command()
@click.argument("name")
@click.argument("numbers", nargs=-1)
@_JSON
def add(name: str, numbers: tuple[str, ...], as_json: bool) -> None:
    """Add numbers to a list (made if new); - reads one a line from standard input."""
    path = _numbers_or_stdin(numbers, "add")
    with _session() as session:
        check_name(name)
        if path is not None:
            reader = _Reader("<stdin>", session.settings.smsc_default_region)
            added = session.lists.add(name, reader.phones(path))
            _finish(reader)
            valid, invalid = reader.valid, reader.invalid
        else:
            phones = _arguments(numbers, session.settings.smsc_default_region, "add")
            added = session.lists.add(name, phones)
            valid, invalid = len(phones), 0
        _summary(session, name, {"added": added, "already": valid - added, "invalid": invalid},
                 f"{added:,} added, {valid - added:,} already there", as_json)


@audience.command(name="import")
@click.argument("name")
@click.argument("file")
@click.option("--replace", is_flag=True, help="Make the list exactly the file's members (in one step).")
@click.option("--table/--phones", "as_table", default=None,
              help="Read FILE as a CSV/.xlsx with a header (its columns kept for templates), or as one number "
                   "a line; default: by its suffix (.csv, .tsv, .xlsx: a table).")
@click.option("--phone-column", default="phone", show_default=True, help="A table's column of numbers.")
@_JSON
def import_(name: str, file: str, replace: bool, as_table: bool | None, phone_column: str, as_json: bool) -> None:
    """Add every number of FILE to a list (- = standard input).

    A table's other columns are kept with each member, for a template ({{ name }}). Invalid lines are named
    and counted; the valid ones are added."""
    with _session() as session:
        check_name(name)
        reader = _Reader("<stdin>" if file == "-" else file, session.settings.smsc_default_region)
        members = reader.rows(file, phone_column) if _is_table(file, as_table) else reader.phones(file)
        if replace:
            now = session.lists.replace(name, _whole(members, reader))
            _summary(session, name, {"imported": now, "invalid": reader.invalid},
                     f"replaced by the {_plural(now, 'member')} of {reader.name}", as_json)
            return
        added = session.lists.add(name, members)
        _finish(reader)
        _summary(session, name, {"added": added, "already": reader.valid - added, "invalid": reader.invalid},
                 f"{added:,} added, {reader.valid - added:,} already there", as_json)


def _whole(members: Iterator[Any], reader: _Reader) -> Iterator[Any]:
    """The members of a replacing import, then — when the input stopped being readable — the error, so
    that the replacement is abandoned rather than made of half a file."""
    yield from members
    if reader.error is not None:
        raise IntakeError(f"{reader.error}; stopped there: the list was not changed")


@audience.command()
@click.argument("name")
@click.argument("numbers", nargs=-1)
@_JSON
def remove(name: str, numbers: tuple[str, ...], as_json: bool) -> None:
    """Take numbers off a list, whichever spelling they were added in; - reads standard input."""
    path = _numbers_or_stdin(numbers, "remove")
    with _session() as session:
        session.lists.count(name)  # no such list: one line
        if path is not None:
            reader = _Reader("<stdin>", session.settings.smsc_default_region)
            removed = session.lists.remove(name, reader.phones(path))
            _finish(reader)
            valid, invalid = reader.valid, reader.invalid
        else:
            phones = _arguments(numbers, session.settings.smsc_default_region, "remove")
            removed = session.lists.remove(name, phones)
            valid, invalid = len(phones), 0
        _summary(session, name, {"removed": removed, "absent": valid - removed, "invalid": invalid},
                 f"{removed:,} removed, {valid - removed:,} not there", as_json)


@audience.command()
@click.argument("name")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header: phone and the list's columns.")
def export(name: str, as_csv: bool) -> None:
    """Print a list's members: one number a line, or a CSV that imports back whole. Streamed (HSCAN)."""
    out: IO[str] = sys.stdout
    with _session() as session:
        columns = session.lists.columns(check_name(name))
        members = session.lists.scan(name)
        try:
            if as_csv:
                w = csv.writer(out, lineterminator="\n")
                w.writerow(["phone", *columns])
                for m in members:
                    w.writerow([m.phone, *(m.columns.get(c, "") for c in columns)])
            else:
                for m in members:
                    out.write(m.phone + "\n")
            out.flush()
        except BrokenPipeError:  # export | head: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            raise SystemExit(0) from None


@audience.command()
@click.argument("name")
@_JSON
def delete(name: str, as_json: bool) -> None:
    """Delete a list (a campaign being enqueued from it still reads it whole)."""
    with _session() as session:
        existed = session.lists.delete(check_name(name))
    if not existed:
        _fail(f"no saved list {name!r} (smsc-mailer audience list shows them)")
    click.echo(f"list {name}: deleted")
    if as_json:
        click.echo(json.dumps({"list": name, "deleted": True}))


if __name__ == "__main__":
    audience(prog_name="smsc-mailer audience")
