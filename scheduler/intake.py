"""Intake: read recipients' phone numbers, check their shape, give each its dedup key.

The per-line path is plain ``str`` methods (``strip``, ``replace``, ``isdigit``): no regular
expression and no ``phonenumbers`` parsing, so a line costs about a microsecond and a million-line
file streams with flat memory. Deduplication is not done here (it needs a set as large as the
campaign): the store does it in Redis with :func:`phone_key`.

What a number may look like (the provider's rules, ``phones`` in ``shared/smsc-http-api.md``):

* spaces (also tabs and no-break spaces), dashes, dots and round brackets are dropped;
* one leading ``+`` is kept as written: with it the provider does not auto-correct the number,
  without it the provider may (a Russian ``8 900 …`` becomes ``7 900 …`` there, not here);
* what is left must be 10 to 15 ASCII digits (E.164 allows at most 15).

Errors (both are ``ValueError``; neither ever contains the number itself)::

    ValueError
    ├── InvalidPhone   one number is refused: its line becomes a Rejected, the intake goes on
    └── IntakeError    the input cannot be read at all (unopenable, not UTF-8, a runaway line):
                       the intake stops
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "MAX_DIGITS",
    "MAX_LINE_BYTES",
    "MIN_DIGITS",
    "IntakeError",
    "InvalidPhone",
    "Rejected",
    "iter_phones_file",
    "iter_recipients",
    "normalize_phone",
    "phone_key",
]

MIN_DIGITS = 10
"""Fewest digits of a number with its country code. Russia, NANP, most of Europe and Asia have 10 to 13;
a shorter string is usually a number without its country code. A few small countries' numbers are
shorter (Faroe +298 and Niue +683 have 9 and 7 digits): they are refused, as agreed for this project."""
MAX_DIGITS = 15
"""E.164: at most 15 digits including the country code."""
MAX_LINE_BYTES = 64 * 1024
"""Longest input line read. A recipient line is tens of bytes (a future CSV line with template fields a
few hundred); a longer one means a binary or CR-only file, which would otherwise be read whole."""


class InvalidPhone(ValueError):
    """Raised when one number is refused; ``reason`` is one line and never contains the number."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IntakeError(ValueError):
    """Raised when the input cannot be read (cannot be opened, is not UTF-8, has a runaway line).

    The message is one line and names the input and the line number, never the line's content.
    """


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line whose number was refused: where it was, what it said, and why (one line)."""

    line_no: int
    raw: str
    reason: str


def normalize_phone(raw: str) -> str:
    """Return ``raw`` without separators, keeping one leading ``+``; raise :class:`InvalidPhone`.

    >>> normalize_phone(" +7 (900) 123-45-67 ")
    '+79001234567'
    >>> normalize_phone("8 900 123.45.67")   # no '+': kept as written, the provider may correct it
    '89001234567'
    """
    s = raw.strip()
    plus = s[:1] == "+"
    digits = s[1:] if plus else s
    # isascii() first: isdigit() is also true for '²' or Arabic-Indic digits. Chained replace() is
    # used rather than str.translate, measured 2x faster here (a missing character costs ~30 ns).
    if not (digits.isascii() and digits.isdigit()):
        digits = digits.replace(" ", "").replace("-", "").replace("(", "").replace(")", "").replace(".", "")
        if not (digits.isascii() and digits.isdigit()):
            digits = digits.replace("\t", "").replace("\u00a0", "")
            if not (digits.isascii() and digits.isdigit()):
                raise InvalidPhone(_reason(s, digits))
    if MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        return "+" + digits if plus else digits
    raise InvalidPhone(_reason(s, digits))


def _reason(stripped: str, digits: str) -> str:
    """The one-line reason why ``digits`` (``stripped`` without separators) is not a number."""
    if not stripped:
        return "empty number"
    if "+" in digits:
        return "'+' is allowed once, at the start only"
    for ch in digits:
        if not ("0" <= ch <= "9"):
            return f"unexpected character {ch!r}; expected digits, one leading '+' and separators"
    n = len(digits)
    return f"{n} digit{'' if n == 1 else 's'}; a number needs {MIN_DIGITS} to {MAX_DIGITS}"


def phone_key(phone: str) -> str:
    """The dedup key of a number: its digits only, so ``+7 900 123-45-67`` and ``79001234567`` are one.

    Accepts a normalized number (the fast path: a slice) or anything :func:`normalize_phone` accepts;
    raises :class:`InvalidPhone` otherwise. ``89001234567`` and ``79001234567`` stay two keys:
    rewriting a trunk prefix is the provider's auto-correction, not ours.
    """
    digits = phone[1:] if phone[:1] == "+" else phone
    if digits.isascii() and digits.isdigit() and MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        return digits
    return normalize_phone(phone).lstrip("+")


def iter_phones_file(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Stream ``(line_no, raw)`` from a recipients file (``"-"`` = standard input), line_no from 1.

    Per line: decoded as UTF-8 (a BOM at the start is dropped), stripped; blank lines and lines
    starting with ``#`` are skipped; an inline comment (``#`` after a space or tab) is cut off.
    CSV-ish lines: when a line contains ``,`` or ``;`` only its first field is the number (surrounding
    double quotes dropped), which leaves room for per-recipient template fields later; a header line
    such as ``phone,name`` is therefore yielded as ``phone`` and rejected by the normalizer, visibly.
    ``raw`` is what is left, not yet normalized (see :func:`iter_recipients`).

    Lines end with ``\\n`` (a ``\\r`` before it is stripped); a CR-only file is not supported and stops
    at :data:`MAX_LINE_BYTES` with an :class:`IntakeError`, as do undecodable bytes and an unopenable
    path. The file is read line by line: memory does not grow with its length.
    """
    if os.fspath(path) == "-":
        yield from _iter_lines(sys.stdin.buffer, "<stdin>")
        return
    try:
        f = open(path, "rb")  # closed by the with-block below, once the stream ends or is closed
    except OSError as exc:
        raise IntakeError(f"{os.fspath(path)}: cannot open: {exc.strerror or exc}") from exc
    with f:
        yield from _iter_lines(f, os.fspath(path))


def _iter_lines(f: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    readline = f.readline
    line_no = 0
    while True:
        try:
            chunk = readline(MAX_LINE_BYTES + 1)
        except OSError as exc:
            raise IntakeError(f"{name}: line {line_no + 1}: cannot read: {exc.strerror or exc}") from exc
        if not chunk:
            return
        line_no += 1
        if len(chunk) > MAX_LINE_BYTES:
            raise IntakeError(
                f"{name}: line {line_no}: longer than {MAX_LINE_BYTES} bytes; "
                "expected one number a line (is it a binary or CR-only file?)"
            )
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IntakeError(
                f"{name}: line {line_no}: byte 0x{chunk[exc.start]:02x} at byte {exc.start + 1} "
                "is not UTF-8 (save the file as UTF-8)"
            ) from exc
        if line_no == 1 and text[:1] == "\ufeff":
            text = text[1:]
        s = text.strip()
        if not s or s[0] == "#":
            continue
        if "#" in s:
            i = s.find("#")
            if s[i - 1] in " \t":  # a '#' glued to a number is not a comment: let it be refused
                s = s[:i].rstrip()
        if "," in s or ";" in s:
            i, j = s.find(","), s.find(";")
            cut = j if i < 0 or 0 <= j < i else i
            s = s[:cut].strip().strip('"').strip()
        yield line_no, s


def iter_recipients(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str] | Rejected]:
    """Normalize each ``(line_no, raw)``: yield ``(line_no, phone)`` or a :class:`Rejected`, in order.

    No deduplication (that needs memory as large as the campaign; the store does it in Redis by
    :func:`phone_key`), so this stays a constant-memory stream.
    """
    for line_no, raw in lines:
        try:
            yield line_no, normalize_phone(raw)
        except InvalidPhone as exc:
            yield Rejected(line_no, raw, exc.reason)
