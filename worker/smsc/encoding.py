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

**What the provider bills with a campaign's options** (``translit``, ``tinyurl``, ``maxsms`` of send.php;
``flash`` and ``valid`` change nothing in the count). The provider turns the text it received into the
text it delivers in this order, and bills the parts of the latter: :func:`delivered_text`,
:func:`count_parts`.

1. ``tinyurl=1``: every ``http://``/``https://`` link is replaced by a short one. The provider documents
   neither the short link's form nor its length; **our model** is :data:`SHORT_LINK_PREFIX` + a
   6-character code (``https://smsc.ru/s/Ab3dE9``, 24 characters), for every link however short.
2. ``translit=1|2``: Cyrillic letters are replaced (:func:`transliterate`). The provider names the two
   modes only by an example each (``"translit"`` and ``"mpaHc/Ium"``, ``seed/smsc-send-api.txt``); its
   tables are not published: searched for on 2026-12-01 in SMSC's API pages (smsc.ru/api/http/send, the
   SMTP page, whose ``<translit>`` field says no more), its official client libraries (``smsc_api.py``,
   ``smsc_api.php`` and the Perl ``SMS::API::SMSC`` only pass ``translit`` through, none converts) and
   public code and issue trackers: nothing. So mode 1 is **GOST 7.79-2000 system B** (the common
   Russian standard of Latin transliteration) with its two characters outside GSM 03.38 (the backtick of
   ``ъ ь ы э``) written as an apostrophe, and ``ц`` always ``c``; mode 2 follows the provider's example
   (``т->m р->p а->a н->H с->c л->/I и->u``) and the usual look-alike ("volapuk") spellings for the
   other letters. Every replacement is GSM 03.38, so a text whose only non-GSM characters are Cyrillic
   letters becomes GSM-7; any other character (an emoji, ``«»``, ``—``, ``№``) is kept and keeps the
   text in UCS-2, which :func:`explain_ucs2` shows.
3. ``maxsms=N``: a text of more than N parts is cut to what N parts carry (the encoding is the one of
   the whole text) and N parts are billed.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

__all__ = [
    "EXPLAIN_MAX_CHARS",
    "GSM_BASIC",
    "GSM_EXTENDED",
    "MAX_MESSAGE_CHARS",
    "SHORT_LINK_PREFIX",
    "Segments",
    "Ucs2Explain",
    "check_message",
    "count_parts",
    "count_segments",
    "delivered_text",
    "explain_ucs2",
    "not_utf8",
    "shorten_links",
    "text_parts",
    "transliterate",
    "truncate_to_parts",
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

# Two regexes (C speed) instead of a loop over the characters: one finds the first character outside
# GSM 03.38, one the extension characters. A million texts go through count_segments at intake: a
# 60-character text took 3.5 µs (Cyrillic) / 1.7 µs (Latin) with the loop, ~1.0 µs either way now,
# half of it building the Segments — a frozen dataclass then; a named tuple is built in a fifth of that.
_NOT_GSM = re.compile("[^" + re.escape("".join(sorted(GSM_BASIC | GSM_EXTENDED))) + "]")
# A whole text of GSM characters: ``fullmatch`` answers None for a Cyrillic text without building a match
# object, which a search for its first non-GSM character does (~0.13 µs against ~0.24).
_utf_16_le_encode: Final = codecs.utf_16_le_encode
_ALL_GSM = re.compile("[" + re.escape("".join(sorted(GSM_BASIC | GSM_EXTENDED))) + "]*")
_EXTENDED_RE = re.compile("[" + re.escape("".join(sorted(GSM_EXTENDED))) + "]")
# A str may hold half of a UTF-16 pair (from JSON's "\\ud83d" alone, or a file name decoded with
# surrogateescape): it has no UTF-8 form, so no request could carry it.
_SURROGATE = re.compile("[\ud800-\udfff]")

# Sender name: Latin letters, digits, spaces and ".-_&", at most 11; or a numeric sender of up to 15 digits.
_SENDER_ALPHA = re.compile(r"[A-Za-z0-9 .\-_&]{1,11}")
_SENDER_DIGITS = re.compile(r"[0-9]{1,15}")


class Segments(NamedTuple):
    """The cost of one text: its encoding, length in characters, in units, and in SMS parts (immutable:
    :func:`count_segments` hands the same one to every caller of a text).

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


def _count_segments(text: str) -> Segments:
    if _ALL_GSM.fullmatch(text) is not None:
        septets = len(text) + len(_EXTENDED_RE.findall(text))
        return _new_segments(Segments, ("gsm7", len(text), septets, _parts(septets, _GSM_SINGLE, _GSM_MULTI)))
    units = _ucs2_units(text)
    return _new_segments(Segments, ("ucs2", len(text), units, _parts(units, _UCS2_SINGLE, _UCS2_MULTI)))


def _ucs2_units(text: str) -> int:
    """UTF-16 code units: one per BMP character, two (a surrogate pair) above U+FFFF."""
    # The codec's own function: str.encode("utf-16-le") looks the codec up by name each time (~0.34 µs
    # against ~0.12 for an 80-character text).
    return len(_utf_16_le_encode(text, "surrogatepass")[0]) >> 1


def text_parts(text: str) -> int:
    """``count_segments(text).parts``, for a text seen once (an intake's personal text): no cache to
    fill and evict, no :class:`Segments` built — ~0.5 µs for a 80-character text against ~2 µs."""
    if _ALL_GSM.fullmatch(text) is not None:
        return _parts(len(text) + len(_EXTENDED_RE.findall(text)), _GSM_SINGLE, _GSM_MULTI)
    return _parts(_ucs2_units(text), _UCS2_SINGLE, _UCS2_MULTI)


# A named tuple's own __new__ is Python code (~0.45 µs); tuple.__new__ of its class builds the same in ~0.2.
_new_segments: Final = tuple.__new__


@functools.lru_cache(maxsize=2048)  # a batch's texts are checked, then counted: the second time is free
def count_segments(text: str) -> Segments:
    """Count the SMS parts of ``text`` (GSM 03.38 when it fits the alphabet, else UCS-2)."""
    return _count_segments(text)


# -- what the provider does to a text with translit, tinyurl and maxsms -------------------------------

# Mode 1: GOST 7.79-2000 system B; its backtick (not in GSM 03.38) written as an apostrophe, and its
# context rule for ц ("cz" before a, o, u...) left out: ц is always "c". Ukrainian/Belarusian letters
# as system B writes them. Capitals: the first letter capitalised (Ж -> Zh), all capitals next to
# another capital (ЖУК -> ZHUK).
_TRANSLIT_1: Final[dict[str, str]] = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "yo", "ж": "zh", "з": "z",
    "и": "i", "й": "j", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "у": "u", "ф": "f", "х": "x", "ц": "c", "ч": "ch", "ш": "sh", "щ": "shh",
    "ъ": "''", "ы": "y'", "ь": "'", "э": "e'", "ю": "yu", "я": "ya",
    "і": "i'", "ї": "yi", "є": "ye", "ґ": "g'", "ў": "u'",
}
# Mode 2 ("mpaHc/Ium"): the provider's example gives т р а н с л и; the rest are the usual
# look-alike spellings. Capitals have their own shapes (И -> U, Т -> T).
_TRANSLIT_2_LOWER: Final[dict[str, str]] = {
    "а": "a", "б": "6", "в": "B", "г": "r", "д": "g", "е": "e", "ё": "e", "ж": ">|<", "з": "3",
    "и": "u", "й": "u", "к": "k", "л": "/I", "м": "M", "н": "H", "о": "o", "п": "n", "р": "p",
    "с": "c", "т": "m", "у": "y", "ф": "qp", "х": "x", "ц": "LL", "ч": "4", "ш": "w", "щ": "w,",
    "ъ": "'b", "ы": "bI", "ь": "b", "э": "-)", "ю": "IO", "я": "9I",
    "і": "i", "ї": "i", "є": "e", "ґ": "r", "ў": "y",
}
_TRANSLIT_2_UPPER: Final[dict[str, str]] = {
    "А": "A", "Б": "6", "В": "B", "Г": "r", "Д": "D", "Е": "E", "Ё": "E", "Ж": ">|<", "З": "3",
    "И": "U", "Й": "U", "К": "K", "Л": "/I", "М": "M", "Н": "H", "О": "O", "П": "n", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Ф": "qp", "Х": "X", "Ц": "LL", "Ч": "4", "Ш": "III", "Щ": "LLL",
    "Ъ": "'b", "Ы": "bI", "Ь": "b", "Э": "-)", "Ю": "IO", "Я": "9I",
    "І": "I", "Ї": "I", "Є": "E", "Ґ": "r", "Ў": "Y",
}


def _title_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for low, latin in _TRANSLIT_1.items():
        table[ord(low)] = latin
        table[ord(low.upper())] = latin[:1].upper() + latin[1:]
    return table


_MODE_1: Final = _title_table()
_MODE_2: Final = {ord(ch): latin for ch, latin in (_TRANSLIT_2_LOWER | _TRANSLIT_2_UPPER).items()}
# Capitals of mode 1 written with more than one letter, and what makes a neighbour "a capital".
_MULTI_CAPS: Final = "".join(ch.upper() for ch, latin in _TRANSLIT_1.items() if sum(c.isalpha() for c in latin) > 1)
_CAPITAL = "A-ZА-ЯЁІЇЄҐЎ"
_CAPS_RUN = re.compile(f"[{_MULTI_CAPS}](?=[{_CAPITAL}])|(?<=[{_CAPITAL}])[{_MULTI_CAPS}]")


def transliterate(text: str, mode: int) -> str:
    """The text as the provider delivers it with ``translit=mode``: 0 unchanged, 1 Latin, 2 look-alikes.

    Only Cyrillic letters change (tables in the module docstring; every replacement is GSM 03.38).
    """
    if mode == 0:
        return text
    if mode == 1:
        text = _CAPS_RUN.sub(lambda m: _TRANSLIT_1[m.group().lower()].upper(), text)
        return text.translate(_MODE_1)
    if mode == 2:
        return text.translate(_MODE_2)
    raise ValueError(f"translit {mode}: give 0 (none), 1 (Latin) or 2 (look-alike characters)")


#: The short link of ``tinyurl=1``, in our model: this prefix and a 6-character code (24 characters).
SHORT_LINK_PREFIX: Final = "https://smsc.ru/s/"
_SHORT_CODE_CHARS: Final = 6
_LINK = re.compile(r"https?://\S+", re.IGNORECASE)
# Punctuation that ends a sentence rather than a link ("see https://x.ru/a." keeps its period).
_LINK_TAIL: Final = ".,;:!?)]}>\"'»”’"
_CODE_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _short_link(match: re.Match[str]) -> str:
    link = match.group()
    stripped = link.rstrip(_LINK_TAIL)
    number = int.from_bytes(hashlib.sha256(stripped.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    code = ""
    for _ in range(_SHORT_CODE_CHARS):
        number, digit = divmod(number, len(_CODE_ALPHABET))
        code += _CODE_ALPHABET[digit]
    return SHORT_LINK_PREFIX + code + link[len(stripped):]


def shorten_links(text: str) -> str:
    """``tinyurl=1`` in our model: every ``http(s)://`` link becomes :data:`SHORT_LINK_PREFIX` + 6
    characters (the same link always the same code); trailing sentence punctuation stays outside."""
    if "://" not in text:
        return text
    return _LINK.sub(_short_link, text)


def _capacity(encoding: Literal["gsm7", "ucs2"], parts: int) -> int:
    single, multi = (_GSM_SINGLE, _GSM_MULTI) if encoding == "gsm7" else (_UCS2_SINGLE, _UCS2_MULTI)
    return single if parts == 1 else multi * parts


def truncate_to_parts(text: str, maxsms: int | None) -> str:
    """``text`` cut to what ``maxsms`` parts carry (``maxsms=N`` of send.php); unchanged if it fits.

    The encoding stays the one of the whole text; an extension character (2 septets) or a surrogate
    pair (2 units) that would straddle the limit is left out whole.
    """
    if maxsms is None:
        return text
    if maxsms < 1:
        raise ValueError(f"maxsms {maxsms}: give 1 or more")
    seg = count_segments(text)
    if seg.parts <= maxsms:
        return text
    room = _capacity(seg.encoding, maxsms)
    used = 0
    for index, ch in enumerate(text):
        if seg.encoding == "gsm7":
            cost = 2 if ch in GSM_EXTENDED else 1
        else:
            cost = 2 if ord(ch) > 0xFFFF else 1
        if used + cost > room:
            return text[:index]
        used += cost
    return text  # pragma: no cover - parts > maxsms means the loop stops


def delivered_text(text: str, *, translit: int = 0, tinyurl: bool = False, maxsms: int | None = None) -> str:
    """The text the provider delivers for ``text`` sent with these options (links, translit, then maxsms)."""
    if tinyurl:
        text = shorten_links(text)
    text = transliterate(text, translit)
    return truncate_to_parts(text, maxsms)


def count_parts(text: str, *, translit: int = 0, tinyurl: bool = False, maxsms: int | None = None) -> int:
    """The SMS parts the provider bills per recipient for ``text`` with these send options.

    The parts of the text after ``tinyurl`` and ``translit``, at most ``maxsms`` (the provider cuts a
    longer text). Keyword arguments rather than a ``SendOptions``: this module sits below
    :mod:`worker.smsc.requests`, which imports it (``count_parts(text, **options.counting())``).
    """
    if tinyurl:
        text = shorten_links(text)
    if translit:
        text = transliterate(text, translit)
    parts = count_segments(text).parts
    if maxsms is not None:
        if maxsms < 1:
            raise ValueError(f"maxsms {maxsms}: give 1 or more")
        parts = min(parts, maxsms)
    return parts


#: How many of the characters that force UCS-2 :func:`explain_ucs2` names (the others are counted).
EXPLAIN_MAX_CHARS: Final = 20


@dataclass(frozen=True)
class Ucs2Explain:
    """Why a text costs UCS-2 parts, and what it would cost otherwise (per recipient).

    ``chars``: the distinct characters outside GSM 03.38, in order of first appearance (at most
    :data:`EXPLAIN_MAX_CHARS`; ``more`` counts the distinct ones left unnamed). ``parts_without``: the
    parts with every such character removed; ``parts_translit1``/``parts_translit2``: with ``translit=1``
    or ``2`` (a non-Cyrillic character such as an emoji keeps the text in UCS-2 even then).
    """

    chars: tuple[str, ...]
    more: int
    parts: int
    parts_without: int
    parts_translit1: int
    parts_translit2: int


def explain_ucs2(text: str) -> Ucs2Explain | None:
    """``None`` for a GSM-7 text; else which characters forced UCS-2 and what the alternatives cost."""
    if _NOT_GSM.search(text) is None:
        return None
    forcing = list(dict.fromkeys(_NOT_GSM.findall(text)))
    return Ucs2Explain(
        chars=tuple(forcing[:EXPLAIN_MAX_CHARS]),
        more=max(len(forcing) - EXPLAIN_MAX_CHARS, 0),
        parts=count_segments(text).parts,
        parts_without=count_segments(_NOT_GSM.sub("", text)).parts,
        parts_translit1=count_parts(text, translit=1),
        parts_translit2=count_parts(text, translit=2),
    )


def validate_message(text: str, *, cached: bool = True) -> Segments:
    """Return the segments of ``text``; raise ``ValueError`` (one line) if the provider would refuse it.

    ``text`` is what the provider delivers and counts: :mod:`worker.smsc.requests` sends every text
    unchanged (no escape), so the 1000-character check and the parts are the provider's. ``cached=False``
    for texts seen once (an intake's personal texts): the cache of :func:`count_segments` would only cost.
    """
    check_message(text)
    return count_segments(text) if cached else _count_segments(text)


def check_message(text: str) -> None:
    """Raise the ``ValueError`` of :func:`validate_message` if the provider would refuse ``text``; no count."""
    if not text or text.isspace():  # what ``not text.strip()`` says, without copying the text
        raise ValueError("message is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ValueError(
            f"message is {len(text)} characters; the provider accepts at most {MAX_MESSAGE_CHARS}"
        )
    if (why := not_utf8(text)) is not None:
        raise ValueError(f"message {why}")


def not_utf8(text: str) -> str | None:
    """Why ``text`` has no UTF-8 form (it holds half of a UTF-16 pair), or ``None``: ``"holds the byte
    0xE9 (at character 4), which is not UTF-8: ..."`` for what Python decodes from a byte that is not
    UTF-8 (a command line, a file name), else ``"holds a lone surrogate (U+D83D at character 6) ..."``."""
    try:
        text.encode("utf-8")  # fails exactly at a surrogate; a C loop, ~4x faster than the search below
    except UnicodeEncodeError:
        pass
    else:
        return None
    if (lone := _SURROGATE.search(text)) is None:
        return None
    code, at = ord(lone[0]), lone.start() + 1
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"holds the byte 0x{code - 0xDC00:02X} (at character {at}), which is not UTF-8: give the text in UTF-8"
    return (f"holds a lone surrogate (U+{code:04X} at character {at}), half of a UTF-16 pair and no character: it "
            "cannot be sent as UTF-8")


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
