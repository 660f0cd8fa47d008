"""How the provider spells a number, and how to find ours in what it echoes (no I/O).

The provider auto-corrects a number written without ``+`` ("it can be corrected by automatic
formatting and converted to the correct international format ... To disable auto-correction, pass the
number with the '+' sign", ``seed/smsc-send-api.txt``) and echoes the corrected form, without ``+``, in
``op=1`` answers and status answers. The corrections modelled here are the Russian ones the design
names (and the simulator's ``autocorrect`` applies):

    89001234567   ->  79001234567     11 digits with the trunk prefix 8: the country code 7
    9001234567    ->  79001234567     10 digits starting with 9: a mobile number without its 7
    +89001234567  ->  89001234567     written with "+": never corrected

So an echoed phone matches one of ours when it is our number as written (digits only) or as the
provider corrects it (:func:`same_subscriber`); :func:`echo_index` finds ours among a batch's in one
lookup. A status request must ask by the spelling the provider stores (:func:`status_phone`): asked as
``89001234567``, the provider that stored ``79001234567`` would answer "not found" (-3) and the
recipient would be sent twice.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["echo_index", "mask_phone", "provider_spelling", "same_subscriber", "status_phone"]

# What a person or a spreadsheet puts between digits; the provider ignores them too.
_SEPARATORS = str.maketrans("", "", " -().\t\u00a0")


def _digits(phone: str) -> str:
    digits = phone.strip().lstrip("+")
    if digits.isascii() and digits.isdigit():
        return digits
    return digits.translate(_SEPARATORS)


def provider_spelling(phone: str) -> str:
    """The digits the provider stores and echoes for ``phone`` as we send it (no ``+``).

    >>> provider_spelling("89001234567"), provider_spelling("9001234567"), provider_spelling("+89001234567")
    ('79001234567', '79001234567', '89001234567')
    """
    digits = _digits(phone)
    if phone.lstrip().startswith("+"):
        return digits
    if len(digits) == 11 and digits[0] == "8":
        return "7" + digits[1:]
    if len(digits) == 10 and digits[0] == "9":
        return "7" + digits
    return digits


def status_phone(phone: str) -> str:
    """The ``phone`` a status request asks for our ``phone``: the provider's spelling, keeping a ``+``.

    A number written with ``+`` is asked with it, so that nothing corrects the question either.
    """
    return "+" + _digits(phone) if phone.lstrip().startswith("+") else provider_spelling(phone)


def same_subscriber(ours: str, echoed: str) -> bool:
    """Whether the provider's ``echoed`` phone is our ``ours``: as written, or as the provider corrects it."""
    heard = _digits(echoed)
    return heard == _digits(ours) or heard == provider_spelling(ours)


def echo_index(phones: Iterable[str]) -> dict[str, str]:
    """``{echoed digits: our phone}`` for a batch, for matching an answer's phones in one lookup each.

    Look up ``index.get(digits of the echo)``. Each of ours is under its digits as written and under
    the provider's correction; when one spelling could be two of ours (``89001234567`` and
    ``79001234567`` in one batch: one subscriber), the number written exactly so wins.
    """
    ours = list(phones)
    index = {_digits(phone): phone for phone in reversed(ours)}
    for phone in ours:
        index.setdefault(provider_spelling(phone), phone)
    return index


def mask_phone(phone: str) -> str:
    """``+79991234567`` → ``****4567``: enough to correlate a log line, not enough to identify."""
    return "****" + phone[-4:] if len(phone) > 4 else "****"
