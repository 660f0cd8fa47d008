"""What a text costs: GSM 03.38 / UCS-2 segment counting, and the provider's input limits.

One SMS carries 140 octets: 160 GSM 7-bit septets or 70 UCS-2 (UTF-16) code units. A longer text is
split into parts that each lose 6-7 octets to the concatenation header (UDH), leaving 153 septets or
67 code units per part. The provider bills ``parts x recipients``.

- **gsm7** when every character is in the GSM 03.38 basic table or its extension table; characters
  of the extension table (``^ { } \\ [ ~ ] | €`` and form feed) are sent as ESC + char: 2 septets.
- **ucs2** otherwise; ``units`` counts UTF-16 code units, so a character outside the BMP (most
  emoji) counts 2.

The count is the textbook one (``ceil(units / 153)``): it does not model a handset keeping an ESC pair
or a surrogate pair out of a part boundary, which can add a part in rare edge cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "GSM_BASIC",
    "GSM_EXTENDED",
    "MAX_MESSAGE_CHARS",
    "Segments",
    "count_segments",
    "validate_message",
    "validate_sender",
]

# GSM 03.38 default alphabet, in table order (0x00-0x7F); 0x1B (ESC) is the escape to the extension
# table and is not a character of its own.
GSM_BASIC: Final[frozenset[str]] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# The extension table: each of these is sent as ESC + char and so costs 2 septets.
GSM_EXTENDED: Final[frozenset[str]] = frozenset("\f^{}\\[~]|€")

# The provider refuses a text longer than this (``mes``: "at most 1000 characters").
MAX_MESSAGE_CHARS: Final = 1000

_GSM_SINGLE, _GSM_MULTI = 160, 153
_UCS2_SINGLE, _UCS2_MULTI = 70, 67

# Sender name: Latin letters, digits, spaces and ".-_&", at most 11; or a numeric sender of up to 15 digits.
_SENDER_ALPHA = re.compile(r"[A-Za-z0-9 .\-_&]{1,11}")
_SENDER_DIGITS = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True)
class Segments:
    """The cost of one text: its encoding, length in characters, in units, and in SMS parts.

    ``units`` are GSM septets (extension characters count 2) or UTF-16 code units (a character
    outside the BMP counts 2). ``parts`` is 0 for an empty text.
    """

    encoding: Literal["gsm7", "ucs2"]
    chars: int
    units: int
    parts: int


def _parts(units: int, single: int, multi: int) -> int:
    if units == 0:
        return 0
    if units <= single:
        return 1
    return -(-units // multi)  # ceil without floats


def count_segments(text: str) -> Segments:
    """Count the SMS parts of ``text`` (GSM 03.38 when it fits the alphabet, else UCS-2)."""
    septets = 0
    for ch in text:
        if ch in GSM_BASIC:
            septets += 1
        elif ch in GSM_EXTENDED:
            septets += 2
        else:
            # UTF-16 code units: one per BMP character, two (a surrogate pair) above U+FFFF.
            units = sum(2 if ord(c) > 0xFFFF else 1 for c in text)
            return Segments("ucs2", len(text), units, _parts(units, _UCS2_SINGLE, _UCS2_MULTI))
    return Segments("gsm7", len(text), septets, _parts(septets, _GSM_SINGLE, _GSM_MULTI))


def validate_message(text: str) -> Segments:
    """Return the segments of ``text``; raise ``ValueError`` (one line) if the provider would refuse it.

    ``text`` is what the provider delivers and counts: :mod:`worker.smsc.requests` sends every text
    unchanged (no escape), so the 1000-character check and the parts are the provider's.
    """
    if not text.strip():
        raise ValueError("message is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ValueError(
            f"message is {len(text)} characters; the provider accepts at most {MAX_MESSAGE_CHARS}"
        )
    return count_segments(text)


def validate_sender(name: str) -> str:
    """Return ``name`` if the provider accepts it as a sender, else raise ``ValueError`` (one line).

    Accepted: at most 11 Latin letters, digits, spaces and ``.-_&`` with at least one non-space, or a
    numeric sender of at most 15 digits. The name must also be registered in the account, which only
    the provider can check.
    """
    if _SENDER_DIGITS.fullmatch(name):
        return name
    if not name.strip():
        raise ValueError("sender is empty")
    if _SENDER_ALPHA.fullmatch(name):
        return name
    if len(name) > 11 and name.isascii() and name.isdigit():
        raise ValueError(f"sender is {len(name)} digits; a numeric sender has at most 15")
    if len(name) > 11:
        raise ValueError(
            f"sender is {len(name)} characters; a sender name has at most 11 (or up to 15 digits)"
        )
    bad = sorted({ch for ch in name if not _SENDER_ALPHA.fullmatch(ch)})
    shown = ", ".join(repr(ch) for ch in bad[:5])
    raise ValueError(f"sender contains {shown}; only Latin letters, digits, spaces and .-_& are allowed")
