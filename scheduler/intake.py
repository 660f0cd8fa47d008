"""Intake: read recipients' phone numbers, check their shape, give each its dedup key.

The per-line path is plain ``str`` methods (``strip``, ``replace``, ``isdigit``): no regular
expression and no ``phonenumbers`` parsing, so a line costs about a microsecond and a million-line
file streams with flat memory. Deduplication is not done here (it needs a set as large as the
campaign): the store does it in Redis with :func:`phone_key`.

What a number may look like (the provider's rules, ``phones`` in ``shared/smsc-http-api.md``):

* a ``tel:`` prefix (RFC 3966, ``tel:+7-900-123-45-67``) is dropped, and so are its parameters;
* spaces (also tabs and no-break spaces), dashes, dots and round brackets are dropped;
* one leading ``+`` is kept as written: with it the provider does not auto-correct the number;
* what is left must be 10 to 15 ASCII digits (E.164 allows at most 15).

Without a default region (the default) a number without ``+`` is kept as written, and **the provider
may auto-correct it** (a Russian ``8 900 …`` becomes ``7 900 …`` there, not here): ``8 900 123-45-67``
and ``+7 900 123-45-67`` are then two recipients. With a default region (``region="RU"``, the
``SMSC_DEFAULT_REGION`` setting) every number without ``+`` is read as a national number of that
region or, failing that, as an international number without its ``+``, and written in E.164 with
``+``: ``8 900 123-45-67``, ``7 900 123 45 67``, ``900 123 45 67`` and ``+7 900 123-45-67`` are one
recipient, ``+79001234567``, and what is sent is never auto-corrected. A number that is valid in
neither reading (``phonenumbers``' metadata) is refused; written with ``+`` it is taken as written.
The common shapes are read from the region's metadata directly (about 2 µs a number); the rest go
through ``phonenumbers.parse``.

Errors (both are ``ValueError``; neither ever contains the number itself)::

    ValueError
    ├── InvalidPhone   one number is refused: its line becomes a Rejected, the intake goes on
    └── IntakeError    the input cannot be read at all (unopenable, not UTF-8, a runaway line):
                       the intake stops
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import phonenumbers

__all__ = [
    "MAX_DIGITS",
    "MAX_LINE_BYTES",
    "MIN_DIGITS",
    "Digest",
    "IntakeError",
    "InvalidPhone",
    "Rejected",
    "iter_phones_file",
    "iter_recipients",
    "normalize_phone",
    "phone_key",
    "phone_keys",
    "region_error",
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


class Digest(Protocol):
    """What :func:`iter_phones_file` feeds the bytes it reads to (``hashlib.sha256()`` is one)."""

    def update(self, data: bytes, /) -> None: ...


def normalize_phone(raw: str, region: str | None = None) -> str:
    """Return ``raw`` without separators, keeping one leading ``+``; raise :class:`InvalidPhone`.

    With ``region`` (an ISO 3166 code such as ``"RU"``) a number without ``+`` is written in E.164
    with ``+`` (see the module docstring).

    >>> normalize_phone(" +7 (900) 123-45-67 ")
    '+79001234567'
    >>> normalize_phone("8 900 123.45.67")   # no '+': kept as written, the provider may correct it
    '89001234567'
    >>> normalize_phone("8 900 123.45.67", "RU")
    '+79001234567'
    """
    s = raw.strip()
    if s[:1] in ("t", "T") and s[:4].lower() == "tel:":
        s = _tel_uri(s)
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
    if region is not None and not plus and digits:
        return _regional(digits, region, s)
    if MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        return "+" + digits if plus else digits
    raise InvalidPhone(_reason(s, digits))


def _tel_uri(s: str) -> str:
    """The number of a ``tel:`` URI (RFC 3966): its parameters (``;phone-context=...``) dropped."""
    number, _, params = s[4:].strip().partition(";")
    if any(p.strip().lower().startswith("ext=") for p in params.split(";")):
        raise InvalidPhone("a tel: number with an extension (;ext=) cannot receive SMS")
    return number


# Digits read in a region before they are a runaway string: 15 of E.164 and a trunk or IDD prefix.
_MAX_REGIONAL_DIGITS = MAX_DIGITS + 3


def _regional(digits: str, region: str, stripped: str) -> str:
    if len(digits) > _MAX_REGIONAL_DIGITS:
        raise InvalidPhone(_reason(stripped, digits))
    out = _region(region).e164(digits)
    if out is None:
        raise InvalidPhone(
            f"not a valid number in region {region}, nor with a country code; write it with '+' and the country code"
        )
    if not MIN_DIGITS <= len(out) - 1 <= MAX_DIGITS:
        raise InvalidPhone(_reason(out, out[1:]))
    return out


@dataclass(frozen=True, slots=True)
class _Desc:
    """One ``PhoneNumberDesc`` of phonenumbers' metadata, compiled: possible lengths and pattern."""

    lengths: frozenset[int]
    pattern: re.Pattern[str]

    def matches(self, nsn: str) -> bool:
        # phonenumbers' _is_number_matching_desc: the lengths (when listed), then a full match.
        return (not self.lengths or len(nsn) in self.lengths) and self.pattern.fullmatch(nsn) is not None


class _Region:
    """The numbers of one region: its country code, trunk prefix and valid national numbers.

    ``valid`` is phonenumbers' ``is_valid_number_for_region`` for a national significant number (the
    general description, then any number type), on patterns compiled once.
    """

    def __init__(self, code: str) -> None:
        md = phonenumbers.PhoneMetadata.metadata_for_region(code)
        if md is None:
            raise ValueError(region_error(code))
        self.code = code
        self.cc = str(md.country_code)
        self.trunk = md.national_prefix or ""
        # The fast path only where a trunk prefix is all phonenumbers strips (no carrier codes, no
        # rewriting rules such as Argentina's "15"): elsewhere every number goes through parse().
        self.fast = md.national_prefix_transform_rule is None and md.national_prefix_for_parsing in (None, self.trunk)
        general = _compile(md.general_desc)
        types = [t for t in (_compile(d) for d in (md.mobile, md.fixed_line, md.toll_free, md.premium_rate,
                                                   md.shared_cost, md.voip, md.personal_number, md.pager, md.uan,
                                                   md.voicemail)) if t is not None]
        self.general = general
        self.fast = self.fast and general is not None
        # A number that starts with the region's international prefix (RU 810, IL 01x) is parsed.
        self._idd = re.compile(md.international_prefix) if md.international_prefix else None
        # Validity is "any type matches": one alternation per length of the types that allow it.
        self._types_by_length: dict[int, re.Pattern[str]] = {}
        for n in range(1, _MAX_REGIONAL_DIGITS + 1):
            alts = [t.pattern.pattern for t in types if not t.lengths or n in t.lengths]
            if alts:
                self._types_by_length[n] = re.compile("|".join(f"(?:{a})" for a in alts))

    def valid(self, nsn: str) -> bool:
        general = self.general
        if general is None or not general.matches(nsn):
            return False
        types = self._types_by_length.get(len(nsn))
        return types is not None and types.fullmatch(nsn) is not None

    def e164(self, digits: str) -> str | None:
        """``+`` and the digits of the number ``digits`` (no ``+``) means here, or None when none."""
        if self.fast and (self._idd is None or self._idd.match(digits) is None):
            trunk, cc = self.trunk, self.cc
            if trunk and digits.startswith(trunk):
                if self.valid(digits[len(trunk):]):  # national, with the trunk prefix: 8 900 ...
                    return "+" + cc + digits[len(trunk):]
            elif digits.startswith(cc):
                if self.valid(digits[len(cc):]) and not self.valid(digits):  # 7 900 ...: '+' left out
                    return "+" + digits
            elif self.valid(digits):  # national, without the trunk prefix: 900 ...
                return "+" + cc + digits
        return self._parse(digits)

    def _parse(self, digits: str) -> str | None:
        for text, region in ((digits, self.code), ("+" + digits, None)):
            try:
                num = phonenumbers.parse(text, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(num):
                return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        return None


def _compile(desc: phonenumbers.PhoneNumberDesc | None) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None
    lengths = frozenset(n for n in (desc.possible_length or ()) if n > 0)
    return _Desc(lengths, re.compile(desc.national_number_pattern))


@functools.cache
def _region(code: str) -> _Region:
    return _Region(code)


def region_error(code: str) -> str:
    """The one-line reason why ``code`` is no region phonenumbers knows ('' when it is one)."""
    if code in phonenumbers.SUPPORTED_REGIONS:
        return ""
    return f"unknown region {code!r}: expected an ISO 3166 country code phonenumbers knows, such as RU"


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


def phone_keys(phones: Sequence[str]) -> list[str]:
    """``[phone_key(p) for p in phones]``, for a chunk of normalized numbers at once: when each is ASCII
    digits with at most a leading ``+`` (10 to 15 digits) the keys are the joined numbers without ``+``, cut
    at the commas, all in C (~0.05 µs a number against ~0.18); otherwise :func:`phone_key` of each, which
    normalizes or raises as it does."""
    joined = ",".join(phones)
    keys = joined.replace("+", "")
    out = keys.split(",")
    if (len(out) == len(phones) and keys.isascii() and keys.replace(",", "").isdigit()
            and joined.count("+") == joined.count(",+") + joined.startswith("+")
            and MIN_DIGITS <= min(map(len, out)) and max(map(len, out)) <= MAX_DIGITS):
        return out
    return list(map(phone_key, phones))


def iter_phones_file(path: str | os.PathLike[str], *, digest: Digest | None = None) -> Iterator[tuple[int, str]]:
    """Stream ``(line_no, raw)`` from a recipients file (``"-"`` = standard input), line_no from 1.

    Per line: decoded as UTF-8 (a BOM at the start is dropped), stripped; blank lines and lines
    starting with ``#`` are skipped; an inline comment (``#`` after a space or tab) is cut off.
    CSV-ish lines: when a line contains ``,`` or ``;`` only its first field is the number (surrounding
    double quotes dropped), which leaves room for per-recipient template fields later; a header line
    such as ``phone,name`` is therefore yielded as ``phone`` and rejected by the normalizer, visibly.
    ``raw`` is what is left, not yet normalized (see :func:`iter_recipients`).

    Lines end with ``\\n`` (a ``\\r`` before it is stripped); a CR-only file is not supported and stops
    at :data:`MAX_LINE_BYTES` with an :class:`IntakeError`, as do undecodable bytes and an unopenable
    path (a folder, a missing file). The file is read line by line: memory does not grow with its
    length. ``digest`` (e.g. ``hashlib.sha256()``) is fed every byte read, in order.
    """
    if os.fspath(path) == "-":
        yield from _iter_lines(sys.stdin.buffer, "<stdin>", digest)
        return
    name = os.fspath(path)
    if os.path.isdir(name):
        raise IntakeError(f"{name}: cannot open: it is a folder, not a file of phone numbers")
    try:
        f = open(path, "rb")  # closed by the with-block below, once the stream ends or is closed
    except FileNotFoundError as exc:
        raise IntakeError(f"{name}: cannot open: no such file") from exc
    except OSError as exc:
        raise IntakeError(f"{name}: cannot open: {exc.strerror or exc}") from exc
    with f:
        yield from _iter_lines(f, name, digest)


def _iter_lines(f: BinaryIO, name: str, digest: Digest | None) -> Iterator[tuple[int, str]]:
    readline = f.readline
    line_no = 0
    while True:
        try:
            chunk = readline(MAX_LINE_BYTES + 1)
        except OSError as exc:
            raise IntakeError(f"{name}: line {line_no + 1}: cannot read: {exc.strerror or exc}") from exc
        if not chunk:
            return
        if digest is not None:
            digest.update(chunk)
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


def iter_recipients(lines: Iterable[tuple[int, object]], *,
                    region: str | None = None) -> Iterator[tuple[int, str] | Rejected]:
    """Normalize each ``(line_no, raw)``: yield ``(line_no, phone)`` or a :class:`Rejected`, in order.

    ``raw`` is a string or an integer (``79001234567``); anything else is rejected with its type.
    ``region``: see :func:`normalize_phone`. No deduplication (that needs memory as large as the
    campaign; the store does it in Redis by :func:`phone_key`), so this stays a constant-memory stream.
    """
    for line_no, raw in lines:
        if not isinstance(raw, str):
            if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
                yield Rejected(line_no, repr(raw)[:40], _type_reason(raw))
                continue
            raw = str(raw)
        try:
            yield line_no, normalize_phone(raw, region)
        except InvalidPhone as exc:
            yield Rejected(line_no, raw, exc.reason)


def _type_reason(raw: object) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return "a negative number"
    return f"expected a phone number as text or a whole number, not {type(raw).__name__}"
