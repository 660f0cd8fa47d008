"""The simulator's memory: the compact record of accepted messages and the provider's one-minute windows.

Neither class locks: :class:`worker.sim.core.Simulator` calls them under its lock.

Sizes, for a million messages: the record is columnar (``array`` columns, about 38 bytes a message;
texts, delivered texts, option sets and senders interned once), a phone is the integer
``int("1" + digits)`` (the leading 1 keeps leading zeros), and one dict entry per distinct phone packs
into one int its message count, its flood chain (last message ms and length) and its first text, so
``duplicates``, ``/_sim/phones`` and the flood rule need no second index (measured: ~150 MB for a
million messages to a million phones with one text, before the option and sender columns). The request
windows are pruned once a minute (of the injected clock), so they only hold the last minute.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from worker.sim.rules import MessageOptions, normalize_phone

__all__ = ["FLOOD_CHAIN_MAX", "WINDOW_MS", "Ledger", "Windows"]

WINDOW_MS: Final = 60_000  # every rule of the provider counts "within a minute"
FLOOD_CHAIN_MAX: Final = 50  # the 51st message of a chain with gaps < 60 s is not delivered
MAX_IDENTICAL_COST: Final = 5  # more than five identical cost requests a minute: error 9
MAX_STATUS_PER_MESSAGE: Final = 5  # more than five status requests for one message a minute: error 9
MAX_BALANCE: Final = 10  # more than ten balance requests a minute: error 9
# The per-phone value, one int: count << 96 | last_ms << 48 | chain length << 32 | first text index.
_TEXT_MASK: Final = (1 << 32) - 1
_CHAIN_SHIFT: Final = 32
_CHAIN_MASK: Final = (1 << 16) - 1
_LAST_SHIFT: Final = 48
_LAST_MASK: Final = (1 << 48) - 1
_COUNT_SHIFT: Final = 96
_UNKNOWN_PARTS: Final = 0xFFFF  # a text recorded only with options: its plain parts not yet counted
_AS_SENT: Final = 0xFFFFFFFF  # the delivered text is the text as received (no option changed it)


class _Segmented(Protocol):
    @property
    def parts(self) -> int: ...


def phone_code(digits: str) -> int:
    """A phone's digits as one int (``"1" + digits``, so that leading zeros survive)."""
    return int("1" + digits)


def phone_digits(code: int) -> str:
    return str(code)[1:]


class Ledger:
    """Every accepted message (ts_ms, login, id, phone, text, parts, flood flag, sender, and what the options
    made of it: the delivered text and the options), stored by column.

    ``text`` is the text as received; ``parts`` what was billed for it. A message sent without options
    costs nothing more than before (the delivered text is the received one, option set 0).
    """

    def __init__(self) -> None:
        self._ts = array("q")
        self._login = array("I")
        self._request = array("I")
        self._phone = array("q")
        self._text = array("I")
        self._parts = array("H")
        self._flood = bytearray()
        self._delivered = array("I")  # index into _delivered_texts, or _AS_SENT
        self._options = array("H")  # index into _option_sets (0: the defaults)
        self._sender = array("H")  # index into _senders (0: none given, the account's default)
        self._senders: list[str | None] = [None]
        self._sender_index: dict[str | None, int] = {None: 0}
        self._delivered_texts: list[str] = []
        self._delivered_index: dict[str, int] = {}
        self._option_sets: list[MessageOptions] = [MessageOptions()]
        self._option_index: dict[MessageOptions, int] = {MessageOptions(): 0}
        self._logins: list[str] = []
        self._login_index: dict[str, int] = {}
        self._texts: list[str] = []
        self._text_index: dict[str, int] = {}
        self._text_parts = array("H")
        self._request_ids: list[str] = []
        self._request_start = array("Q")
        self._by_id: dict[str, list[int]] = {}
        self._per_phone: dict[int, int] = {}  # phone -> packed count, chain, first text
        self._more_texts: dict[int, set[int]] = {}  # phones that got more than one distinct text
        self.unique = 0
        self.flagged = 0

    @property
    def messages(self) -> int:
        return len(self._ts)

    def parts_of(self, text: str, count: Callable[[str], _Segmented]) -> int:
        """SMS parts of ``text`` (cached for texts already recorded)."""
        index = self._text_index.get(text)
        if index is not None and self._text_parts[index] != _UNKNOWN_PARTS:
            return self._text_parts[index]
        return count(text).parts

    def _intern_text(self, text: str, parts: int) -> int:
        """The index of ``text``; ``parts`` are its parts without options (``_UNKNOWN_PARTS``: not counted)."""
        index = self._text_index.get(text)
        if index is None:
            index = len(self._texts)
            self._texts.append(text)
            self._text_index[text] = index
            self._text_parts.append(min(parts, _UNKNOWN_PARTS))
        elif parts != _UNKNOWN_PARTS and self._text_parts[index] == _UNKNOWN_PARTS:
            self._text_parts[index] = min(parts, _UNKNOWN_PARTS - 1)
        return index

    def _intern_variant(self, delivered: str | None, options: MessageOptions | None) -> tuple[int, int]:
        if options is None or delivered is None:
            return _AS_SENT, 0
        delivered_no = self._delivered_index.get(delivered)
        if delivered_no is None:
            delivered_no = self._delivered_index[delivered] = len(self._delivered_texts)
            self._delivered_texts.append(delivered)
        options_no = self._option_index.get(options)
        if options_no is None:
            options_no = self._option_index[options] = len(self._option_sets)
            self._option_sets.append(options)
        return delivered_no, options_no

    def add_request(self, now_ms: int, login: str, message_id: str,
                    accepted: Sequence[tuple[str, str, int]],
                    variants: Sequence[tuple[str, MessageOptions] | None] | None = None,
                    senders: Sequence[str | None] | None = None) -> int:
        """Record one accepted request's messages ``(digits, text, parts)``; return the flood breaches.

        ``variants`` (one per message, or ``None`` for all): ``(delivered text, options)`` of a message the
        options changed or were given for; ``None``: the text was delivered as received, no options.
        ``senders`` (one per message, or ``None`` for all): the sender the message went with (its ``list``
        line's, else the request's; ``None``: none given).
        """
        login_no = self._login_index.setdefault(login, len(self._logins))
        if login_no == len(self._logins):
            self._logins.append(login)
        request_no = len(self._request_ids)
        self._request_ids.append(message_id)
        self._request_start.append(len(self._ts))
        self._by_id.setdefault(message_id, []).append(request_no)
        floods = 0
        for n, (digits, text, parts) in enumerate(accepted):
            code = phone_code(digits)
            variant = variants[n] if variants is not None else None
            if variant is None:
                text_no = self._intern_text(text, parts)
                delivered_no, options_no = _AS_SENT, 0
            else:
                text_no = self._intern_text(text, _UNKNOWN_PARTS)
                delivered_no, options_no = self._intern_variant(*variant)
            flood = self._count_phone(code, text_no, now_ms)
            floods += flood
            self._ts.append(now_ms)
            self._login.append(login_no)
            self._request.append(request_no)
            self._phone.append(code)
            self._text.append(text_no)
            self._parts.append(min(parts, 0xFFFF))
            self._flood.append(flood)
            self._delivered.append(delivered_no)
            self._options.append(options_no)
            sender = senders[n] if senders is not None else None
            sender_no = self._sender_index.get(sender)
            if sender_no is None:
                sender_no = self._sender_index[sender] = len(self._senders)
                self._senders.append(sender)
            self._sender.append(sender_no)
        self.flagged += floods
        return floods

    def _count_phone(self, code: int, text_no: int, now_ms: int) -> int:
        """Count a message to ``code``: its chain (a gap of 60 s or more starts a new one) and whether
        (phone, text) is new. Returns 1 if the message is past the flood limit."""
        value = self._per_phone.get(code)
        if value is None:
            self._per_phone[code] = (1 << _COUNT_SHIFT) | (now_ms << _LAST_SHIFT) | (1 << _CHAIN_SHIFT) | text_no
            self.unique += 1
            return 0
        count, first_text = value >> _COUNT_SHIFT, value & _TEXT_MASK
        last_ms, chain = (value >> _LAST_SHIFT) & _LAST_MASK, (value >> _CHAIN_SHIFT) & _CHAIN_MASK
        chain = min(chain + 1, _CHAIN_MASK) if now_ms - last_ms < WINDOW_MS else 1
        self._per_phone[code] = (((count + 1) << _COUNT_SHIFT) | ((now_ms & _LAST_MASK) << _LAST_SHIFT)
                                 | (chain << _CHAIN_SHIFT) | first_text)
        if first_text != text_no:
            more = self._more_texts.setdefault(code, set())
            if text_no not in more:
                more.add(text_no)
                self.unique += 1
        return 1 if chain > FLOOD_CHAIN_MAX else 0

    def last_flood_flags(self, n: int) -> list[bool]:
        """The flood flags of the ``n`` messages recorded last, oldest first."""
        return [bool(f) for f in self._flood[len(self._flood) - n:]] if n else []

    def find(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[int, bool, int] | None]:
        """For each (phone, id): ``(ts_ms, flood, parts)`` of the latest matching message, or ``None``."""
        indexes: dict[int, dict[int, int]] = {}  # request -> phone code -> message index
        out: list[tuple[int, bool, int] | None] = []
        for phone, message_id in pairs:
            digits = normalize_phone(phone)
            hit: tuple[int, bool, int] | None = None
            if digits is not None:
                code = phone_code(digits)
                for request_no in reversed(self._by_id.get(message_id, ())):
                    index = indexes.get(request_no)
                    if index is None:
                        index = indexes[request_no] = self._request_index(request_no)
                    position = index.get(code)
                    if position is not None:
                        hit = (self._ts[position], bool(self._flood[position]), self._parts[position])
                        break
            out.append(hit)
        return out

    def _request_index(self, request_no: int) -> dict[int, int]:
        start = self._request_start[request_no]
        end = (self._request_start[request_no + 1] if request_no + 1 < len(self._request_start)
               else len(self._ts))
        return {self._phone[i]: i for i in range(start, end)}

    def page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        end = min(len(self._ts), max(offset, 0) + max(limit, 0))
        return [
            {
                "ts_ms": self._ts[i],
                "login": self._logins[self._login[i]],
                "id": self._request_ids[self._request[i]],
                "phone": phone_digits(self._phone[i]),
                "text": self._texts[self._text[i]],
                "parts": self._parts[i],
                "flood": bool(self._flood[i]),
                "delivered": (self._texts[self._text[i]] if self._delivered[i] == _AS_SENT
                              else self._delivered_texts[self._delivered[i]]),
                "options": self._option_sets[self._options[i]].as_dict(),
                "sender": self._senders[self._sender[i]],
            }
            for i in range(max(offset, 0), end)
        ]

    def phone_counts(self) -> dict[str, int]:
        return {phone_digits(code): value >> _COUNT_SHIFT for code, value in self._per_phone.items()}


class Windows:
    """The one-minute memories of the anti-abuse rules (identical send/cost, status and balance requests).

    A refused request is not remembered: only what the provider answered counts toward its limits.
    """

    def __init__(self) -> None:
        self._sends: dict[bytes, int] = {}  # fingerprint -> ms of the last accepted identical send
        self._costs: dict[bytes, deque[int]] = {}  # fingerprint -> ms of the answered cost requests
        self._status_pairs: dict[tuple[str, str, str], deque[int]] = {}  # (login, phone, id) -> ms
        self._status_mass: dict[bytes, int] = {}  # (login, list) or login (strict) -> ms
        self._balances: dict[str, deque[int]] = {}  # login -> ms of the answered balance requests
        self._last_prune_ms = 0

    def admit_send(self, fingerprint: bytes, now_ms: int) -> bool:
        """False when an identical send was accepted less than a minute ago."""
        self._prune(now_ms)
        last = self._sends.get(fingerprint)
        return last is None or now_ms - last >= WINDOW_MS

    def remember_send(self, fingerprint: bytes, now_ms: int) -> None:
        self._sends[fingerprint] = now_ms

    def admit_cost(self, fingerprint: bytes, now_ms: int) -> bool:
        """False for a sixth identical cost request within a minute (refused ones are not counted)."""
        self._prune(now_ms)
        return _admit(self._costs.setdefault(fingerprint, deque()), now_ms, MAX_IDENTICAL_COST)

    def admit_status(self, login: str, pairs: Sequence[tuple[str, str]], now_ms: int, *, mass: bool,
                     strict_mass: bool) -> str | None:
        """``None`` if status.php answers this request, else the breach that refuses it (error 9).

        - ``"status_mass"``: a mass request (``mass``, the list form) within a minute of an earlier one of
          the login that asked the same list, or, with ``strict_mass``, within a minute of any mass request;
        - ``"status_rate"``: a sixth request for one message (phone, id) within a minute; every request
          that names the message counts, a mass request as much as a single one.
        """
        self._prune(now_ms)
        mass_key: bytes | None = None
        if mass:
            what = login if strict_mass else repr((login, list(pairs)))
            mass_key = hashlib.sha1(what.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()
            last = self._status_mass.get(mass_key)
            if last is not None and now_ms - last < WINDOW_MS:
                return "status_mass"
        windows = [self._status_pairs.setdefault((login, phone, mid), deque()) for phone, mid in pairs]
        for times in windows:
            while times and times[0] <= now_ms - WINDOW_MS:
                times.popleft()
            if len(times) >= MAX_STATUS_PER_MESSAGE:
                return "status_rate"
        for times in windows:
            times.append(now_ms)
        if mass_key is not None:
            self._status_mass[mass_key] = now_ms
        return None

    def admit_balance(self, login: str, now_ms: int) -> bool:
        """False for an eleventh balance request of a login within a minute."""
        self._prune(now_ms)
        return _admit(self._balances.setdefault(login, deque()), now_ms, MAX_BALANCE)

    def _prune(self, now_ms: int) -> None:
        if now_ms - self._last_prune_ms < WINDOW_MS:
            return
        self._last_prune_ms = now_ms
        horizon = now_ms - WINDOW_MS
        self._sends = {k: t for k, t in self._sends.items() if t > horizon}
        self._status_mass = {k: t for k, t in self._status_mass.items() if t > horizon}
        self._costs = {k: t for k, t in self._costs.items() if t and t[-1] > horizon}
        self._status_pairs = {k: t for k, t in self._status_pairs.items() if t and t[-1] > horizon}
        self._balances = {k: t for k, t in self._balances.items() if t and t[-1] > horizon}


def _admit(times: deque[int], now_ms: int, limit: int) -> bool:
    while times and times[0] <= now_ms - WINDOW_MS:
        times.popleft()
    if len(times) >= limit:
        return False
    times.append(now_ms)
    return True
