"""What the command modules registered beside ``worker.cli`` share (they cannot import ``worker.cli``: it
imports them): one-line failures, the settings or a one-line error, a Redis URL without its password."""

from __future__ import annotations

from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import click

from worker.settings import ConfigError, Settings, get_settings

__all__ = ["NAMED_LINES", "fail", "mask_url", "name_counted", "settings_or_fail"]

#: Refused lines named one by one before the rest are only counted.
NAMED_LINES = 1000


def fail(msg: str, code: int = 2) -> NoReturn:
    """``smsc-mailer: <msg>`` on standard error and the exit code: the one way a command fails."""
    click.echo(f"smsc-mailer: {msg}", err=True)
    raise SystemExit(code)


def settings_or_fail() -> Settings:
    """The environment's settings, or a one-line error (exit 2) naming what is wrong."""
    try:
        return get_settings()
    except ConfigError as exc:
        fail(str(exc))


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: fit for an error message."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def name_counted(n: int, line: str, *, more: str = "... more such lines: see the counts below") -> None:
    """Name the ``n``-th refused line on standard error while ``n`` is within :data:`NAMED_LINES`; past
    them say once that the rest are only counted (every command that reads a file of numbers does this)."""
    if n <= NAMED_LINES:
        click.echo(line, err=True)
    elif n == NAMED_LINES + 1:
        click.echo(more, err=True)
