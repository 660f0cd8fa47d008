"""The stop list: numbers that must get no message (opt-outs), one list per namespace.

Every campaign and account of a namespace (``Keys(namespace)``) shares it. It is one HASH,
``{smsc}:<ns>:stop``: field = the number's **stop key**, value = ``added_ms|source|reason``
(``added_ms`` by the Redis server's clock; ``source`` one of :data:`SOURCES`; the reason may be empty).

The stop key is the subscriber the provider delivers to, as digits (:func:`stop_key`). The provider
auto-corrects a number written without ``+`` (``worker/smsc/phones.py``: ``89001234567`` and
``9001234567`` become ``79001234567``; one written with ``+`` is never corrected), so the key applies
the same correction to a number without ``+``, and takes one with ``+`` as written. Hence, with or
without ``SMSC_DEFAULT_REGION``, ``+79001234567``, ``79001234567``, ``89001234567`` and (region RU)
``8 900 123-45-67`` are one entry: a number stopped as ``8900…`` also stops ``+7900…``, and the other
way round. ``+89001234567`` stays its own entry (written with ``+``, nothing corrects it: it is not
the subscriber ``+7900…``), as does any number with ``+`` whose country code starts with 8 (Japan's
``+81 3 1234 5678`` is not a Russian ``+7 131…``).

Why one HASH and not a SET for membership plus a HASH for the details: measured on redis-server 7.0 with
a million entries, ``HMGET`` of 500 numbers costs what ``SMISMEMBER`` does when few are stopped (1.4-1.6
µs a number, round trip included; 2.1 against 1.6 when all are), and the HASH alone holds an entry in
about 88 bytes where the two structures need 56 more. See ``docs/stoplist.md``.

Errors: a number that is not one raises :class:`scheduler.intake.InvalidPhone` (a ``ValueError``);
a bad ``source`` or ``reason`` raises ``ValueError``. Both are one line and never contain the number.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import redis

from scheduler.intake import MAX_DIGITS, MIN_DIGITS, normalize_phone
from scheduler.keys import Keys, text
from scheduler.ledger import server_time_ms

__all__ = ["CHUNK", "MAX_REASON", "SOURCES", "Entry", "StopList", "check_reason", "stop_key"]

#: Where an entry came from: the operator (``add``), a file (``import``), a provider error (``auto``).
SOURCES = ("manual", "import", "auto")
#: Numbers per Redis command: 500 (a default batch) is one round trip of about a millisecond and keeps
#: each command's time on the server well under a millisecond, whatever the caller hands in.
CHUNK = 500
#: Longest reason kept with an entry: a note for the operator ("replied STOP 2026-11-30"), not a log.
MAX_REASON = 200
#: How many fields one HSCAN step asks for (export streams with flat memory).
_SCAN_COUNT = 1000


def _corrected(digits: str) -> str:
    # The provider's auto-correction of a number written without '+' (worker.smsc.phones.provider_spelling;
    # scheduler may not import worker, so the two rules are repeated here).
    if len(digits) == 11 and digits[0] == "8":
        return "7" + digits[1:]
    if len(digits) == 10 and digits[0] == "9":
        return "7" + digits
    return digits


def stop_key(phone: str, region: str | None = None) -> str:
    """The stop key of ``phone``: the digits of the number the provider delivers it to.

    ``phone`` is a number as the intake normalizes it (the fast path: string slices) or anything
    :func:`scheduler.intake.normalize_phone` accepts with ``region``; raises
    :class:`scheduler.intake.InvalidPhone` otherwise.

    >>> stop_key("+79001234567"), stop_key("89001234567"), stop_key("8 900 123-45-67", "RU")
    ('79001234567', '79001234567', '79001234567')
    >>> stop_key("+89001234567")   # written with '+': never corrected
    '89001234567'
    """
    if phone[:1] == "+":
        digits = phone[1:]
        if digits.isascii() and digits.isdigit() and MIN_DIGITS <= len(digits) <= MAX_DIGITS:
            return digits
    elif region is None and phone.isascii() and phone.isdigit() and MIN_DIGITS <= len(phone) <= MAX_DIGITS:
        return _corrected(phone)
    normalized = normalize_phone(phone, region)
    return normalized[1:] if normalized[:1] == "+" else _corrected(normalized)


@dataclass(frozen=True, slots=True)
class Entry:
    """One stopped number: ``phone`` is ``+`` and its stop key (E.164, as the provider delivers it)."""

    phone: str
    added_ms: int
    source: str
    reason: str

    @property
    def key(self) -> str:
        return self.phone[1:]


def _entry(key: object, value: object) -> Entry:
    added, _, rest = text(value).partition("|")
    source, _, reason = rest.partition("|")
    return Entry("+" + text(key), int(added) if added.isdigit() else 0, source, reason)


def check_reason(reason: str) -> None:
    """Raise ``ValueError`` (one line) unless ``reason`` is one printable line of at most :data:`MAX_REASON`."""
    if len(reason) > MAX_REASON:
        raise ValueError(f"the reason has {len(reason)} characters; at most {MAX_REASON}")
    if not reason.isprintable():
        raise ValueError("the reason must be one line of printable text (no newline, tab or control character)")


def _check_note(reason: str, source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    check_reason(reason)


def _chunks(items: Iterable[str], size: int = CHUNK) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class StopList:
    """The stop list of one namespace (``keys``) on ``client``.

    ``region`` is the ``SMSC_DEFAULT_REGION`` the numbers handed in are read in when they are not
    normalized yet (see :func:`stop_key`); numbers the intake normalized are keyed without parsing.
    """

    def __init__(self, client: redis.Redis, keys: Keys, *, region: str | None = None) -> None:
        self.r = client
        self.keys = keys
        self.key = keys.stoplist
        self.region = region

    def key_of(self, phone: str) -> str:
        """The stop key of ``phone`` (:func:`stop_key` in this list's region)."""
        return stop_key(phone, self.region)

    def add(self, phones: Iterable[str], *, reason: str = "", source: str = "manual") -> int:
        """Stop ``phones``; return how many were not stopped yet (an entry already there is kept as it was).

        Streams ``phones`` in chunks of :data:`CHUNK`, one round trip each. A number that is not one
        raises ``InvalidPhone`` before its chunk is written (the chunks before it stay added).
        """
        _check_note(reason, source)
        return self._add(((phone, reason) for phone in phones), source)

    def add_noted(self, items: Iterable[tuple[str, str]], *, source: str = "import") -> int:
        """:meth:`add` with a reason per number: ``items`` are ``(phone, reason)``."""
        _check_note("", source)
        return self._add(items, source)

    def _add(self, items: Iterable[tuple[str, str]], source: str) -> int:
        now_ms = server_time_ms(self.r)
        added = 0
        it = iter(items)
        while chunk := list(islice(it, CHUNK)):
            pipe = self.r.pipeline(transaction=False)
            for field, reason in [(self.key_of(phone), reason) for phone, reason in chunk]:
                check_reason(reason)
                pipe.hsetnx(self.key, field, f"{now_ms}|{source}|{reason}")
            added += sum(int(n) for n in pipe.execute())
        return added

    def remove(self, phones: Iterable[str]) -> int:
        """Unstop ``phones`` (any spelling of a stopped number); return how many entries were removed."""
        removed = 0
        for chunk in _chunks(phones):
            fields = {self.key_of(p) for p in chunk}
            removed += int(self.r.hdel(self.key, *fields))
        return removed

    def contains(self, phones: Sequence[str]) -> list[bool]:
        """Whether each of ``phones`` is stopped, in order: one round trip (``HMGET`` per chunk, pipelined)."""
        if not phones:
            return []
        pipe = self.r.pipeline(transaction=False)
        self.contains_on(pipe, phones)
        return self.contained(pipe.execute())

    def contains_on(self, pipe: redis.client.Pipeline, phones: Sequence[str]) -> int:
        """:meth:`contains`, queued on ``pipe``: how many replies it queued (read them with
        :meth:`contained`)."""
        fields = [self.key_of(p) for p in phones]
        for i in range(0, len(fields), CHUNK):
            pipe.hmget(self.key, fields[i:i + CHUNK])
        return (len(fields) + CHUNK - 1) // CHUNK

    @staticmethod
    def contained(replies: Sequence[Sequence[Any]]) -> list[bool]:
        return [v is not None for reply in replies for v in reply]

    def intake_keys(self, phones: Sequence[str], dedup_keys: Sequence[str]) -> str:
        """The stop keys of ``phones`` for ``lua/intake.lua``, which checks them beside the dedup: joined
        by ',', each one '' where it is the number's dedup key ``dedup_keys[i]``
        (:func:`scheduler.intake.phone_key`) — for every number written with '+', both are its digits —
        and the stop key (:meth:`key_of`) where it differs (``89001234567`` is stopped as ``79001234567``).
        Raises as :meth:`key_of` does.

        >>> StopList(None, Keys("x")).intake_keys(["+79001234567", "89001234567"], ["79001234567", "89001234567"])
        ',79001234567'
        """
        out: list[str] = []
        region = self.region
        for phone, key in zip(phones, dedup_keys, strict=True):
            if phone[:1] == "+":
                out.append("")  # stop_key and phone_key alike: the digits after '+' (normalized alike)
                continue
            if region is None and phone == key:  # bare digits (phone_key kept them): the provider's correction
                stop = _corrected(key)
            else:
                stop = stop_key(phone, region)
            out.append("" if stop == key else stop)
        return ",".join(out)

    def entry(self, phone: str) -> Entry | None:
        """The entry that stops ``phone`` (any spelling), or None when it is not stopped."""
        field = self.key_of(phone)
        value = self.r.hget(self.key, field)
        return None if value is None else _entry(field, value)

    def scan(self) -> Iterator[Entry]:
        """Every entry, in no particular order, with flat memory (``HSCAN``).

        As ``HSCAN`` promises: an entry there from start to end is yielded (rarely twice, when the
        HASH is resized meanwhile); one added or removed meanwhile may or may not be.
        """
        for field, value in self.r.hscan_iter(self.key, count=_SCAN_COUNT):
            yield _entry(field, value)

    def count(self) -> int:
        """How many numbers are stopped."""
        return int(self.r.hlen(self.key))
