"""The provider's rules as pure functions: parameter checks, the ``list`` syntax, and answer formats.

Used by :mod:`worker.sim.core`; no state, no clock, no I/O. Everything here follows
``smsc-http-api.md``: the send answers for every ``fmt`` x ``cost`` (with the ``op=1`` details), the
error answers with and without the message id, and the status/balance answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "ERRORS_WITH_ID",
    "ERROR_TEXT",
    "MAX_ID",
    "MAX_MES_CHARS",
    "Line",
    "MessageOptions",
    "Outcome",
    "ParamError",
    "SendAnswer",
    "StatusAnswer",
    "balance_body",
    "error_body",
    "json_id",
    "money",
    "normalize_phone",
    "parse_lines",
    "parse_options",
    "provider_phone",
    "send_body",
    "status_body",
    "valid_id",
    "valid_sender",
    "valid_time",
]

MAX_MES_CHARS: Final = 1000
MAX_ID: Final = 2_147_483_647
# Errors whose answer echoes the message id (the others answer ``0,-N`` in fmt=1).
ERRORS_WITH_ID: Final = frozenset({3, 6, 7, 8})
# Descriptions as the provider words them in ``ERROR = N (description)`` and ``"error"``.
ERROR_TEXT: Final[Mapping[int, str]] = {
    1: "parameters error",
    2: "authorise error",
    3: "no money",
    4: "IP blocked",
    5: "invalid date format",
    6: "message is denied",
    7: "invalid number",
    8: "cannot deliver",
    9: "duplicate request, wait a minute",
}

_ID_STRING = re.compile(r"[A-Za-z0-9.\-_]{1,40}")
_ID_INT = re.compile(r"[0-9]{1,10}")
_SENDER_ALPHA = re.compile(r"[A-Za-z0-9 .\-_&]{1,11}")
_SENDER_DIGITS = re.compile(r"[0-9]{1,15}")
_PHONE = re.compile(r"\+?[0-9]{10,15}")
_PHONE_NOISE = str.maketrans("", "", " -()\t")
_TIME_FORMS = (
    re.compile(r"\d{10}"),  # DDMMYYhhmm
    re.compile(r"\d{2}\.\d{2}\.\d{2} \d{1,2}:\d{2}"),  # DD.MM.YY hh:mm
    re.compile(r"\d{1,2}-\d{1,2}"),  # h1-h2
    re.compile(r"0\d+"),  # 0ts (and "0" = now)
    re.compile(r"\+\d+"),  # +m
)
_VALID_HOURS = re.compile(r"[0-9]{1,2}")
_VALID_CLOCK = re.compile(r"([0-9]{2}):([0-9]{2})")
_MAXSMS = re.compile(r"[0-9]{1,9}")


class ParamError(ValueError):
    """Raised when a request breaks a parameter rule; ``code`` is the provider error to answer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class Line:
    """One message of a send request: its recipients (as written) and its text (unescaped)."""

    phones: tuple[str, ...]
    text: str
    sender: str | None = None


@dataclass(frozen=True)
class MessageOptions:
    """The send.php options that shape a message: ``translit``, ``tinyurl``, ``flash``, ``valid``, ``maxsms``."""

    translit: int = 0
    tinyurl: bool = False
    flash: bool = False
    valid: str | None = None
    maxsms: int | None = None

    @property
    def default(self) -> bool:
        return self == _DEFAULT_OPTIONS

    def as_dict(self) -> dict[str, object]:
        return {"translit": self.translit, "tinyurl": self.tinyurl, "flash": self.flash, "valid": self.valid,
                "maxsms": self.maxsms}


_DEFAULT_OPTIONS: Final = MessageOptions()


@dataclass(frozen=True)
class Outcome:
    """What happened to one number of a send request (the ``op=1`` detail)."""

    phone: str  # digits only, as the provider echoes it (or the raw text when it is not a number)
    cost: Decimal
    status: int
    error: int
    mccmnc: str = "25001"


@dataclass(frozen=True)
class SendAnswer:
    """A successful send.php answer: ``id`` is ``None`` for a cost-only request (``cost=1``)."""

    id: str | None
    cnt: int
    cost: Decimal
    balance: Decimal
    phones: tuple[Outcome, ...] = ()


@dataclass(frozen=True)
class StatusAnswer:
    """The state of one (phone, id) pair; ``last_timestamp`` 0 when the message is unknown."""

    phone: str
    id: str
    status: int
    err: int
    last_timestamp: int
    last_date: str
    flag: int = 0
    #: What the message cost (all its parts) and its SMS count: shown in the full form (``all=1``).
    cost: Decimal | None = None
    parts: int | None = None


# -- parameter rules ---------------------------------------------------------------------------------


def normalize_phone(raw: str) -> str | None:
    """Digits of a valid international number (spaces, ``-``, ``()`` dropped), or ``None``."""
    cleaned = raw.translate(_PHONE_NOISE)
    if not _PHONE.fullmatch(cleaned):
        return None
    return cleaned.lstrip("+")


def provider_phone(raw: str, *, autocorrect: bool) -> str | None:
    """The number as the provider records it: :func:`normalize_phone`, then, with ``autocorrect``, a number
    written without ``+`` corrected as the provider corrects Russian spellings: ``8XXXXXXXXXX`` (11 digits)
    -> ``7XXXXXXXXXX``, ``9XXXXXXXXX`` (10 digits) -> ``79XXXXXXXXX``. A number with ``+`` is kept."""
    digits = normalize_phone(raw)
    if digits is None or not autocorrect or raw.translate(_PHONE_NOISE).startswith("+"):
        return digits
    if len(digits) == 11 and digits[0] == "8":
        return "7" + digits[1:]
    if len(digits) == 10 and digits[0] == "9":
        return "7" + digits
    return digits


def valid_id(value: str) -> bool:
    """An integer 1..2147483647, or at most 40 characters of ``A-Za-z0-9.-_``."""
    if _ID_INT.fullmatch(value):
        return 1 <= int(value) <= MAX_ID
    return _ID_STRING.fullmatch(value) is not None and not value.isdigit()


def valid_sender(name: str) -> bool:
    """At most 11 Latin letters/digits/spaces (and ``.-_&``) with one non-space, or at most 15 digits."""
    if _SENDER_DIGITS.fullmatch(name):
        return True
    return _SENDER_ALPHA.fullmatch(name) is not None and bool(name.strip())


def valid_time(value: str) -> bool:
    """One of the documented ``time`` forms (the simulator sends at once whatever the form)."""
    return any(form.fullmatch(value.strip()) for form in _TIME_FORMS)


def _switch(params: Mapping[str, str], name: str, values: str) -> int:
    """A small-integer option: absent = 0, else exactly one of ``values`` (``"01"``, ``"012"``)."""
    value = params.get(name)
    if value is None:
        return 0
    if len(value) != 1 or value not in values:
        raise ParamError(1, f"{name} must be one of {', '.join(values)}")
    return int(value)


def parse_options(params: Mapping[str, str]) -> MessageOptions:
    """The message options of a send request, as strictly as documented, else :class:`ParamError` (error 1).

    ``translit`` 0/1/2, ``tinyurl`` and ``flash`` 0/1, ``valid`` 1..24 (hours) or ``hh:mm`` 00:01..24:00,
    ``maxsms`` a whole number from 1. An option present but empty, or any other spelling (``"yes"``,
    ``" 1"``, ``"25"``, ``"0:30"``), is an error: the provider documents these values and no others.
    """
    translit = _switch(params, "translit", "012")
    tinyurl = _switch(params, "tinyurl", "01") == 1
    flash = _switch(params, "flash", "01") == 1
    valid = params.get("valid")
    if valid is not None:
        clock = _VALID_CLOCK.fullmatch(valid)
        if _VALID_HOURS.fullmatch(valid):
            ok = 1 <= int(valid) <= 24
        elif clock is not None:
            minutes = int(clock.group(1)) * 60 + int(clock.group(2))
            ok = int(clock.group(2)) < 60 and 1 <= minutes <= 24 * 60
        else:
            ok = False
        if not ok:
            raise ParamError(1, "valid must be 1..24 hours or hh:mm from 00:01 to 24:00")
    maxsms: int | None = None
    raw_max = params.get("maxsms")
    if raw_max is not None:
        if not _MAXSMS.fullmatch(raw_max) or int(raw_max) < 1:
            raise ParamError(1, "maxsms must be a whole number from 1")
        maxsms = int(raw_max)
    return MessageOptions(translit, tinyurl, flash, valid, maxsms)


def _split_phones(field: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in re.split(r"[,;]", field) if p.strip())


def parse_lines(params: Mapping[str, str]) -> list[Line]:
    """The messages of a request: ``phones`` + ``mes``, or the ``list`` lines (``[sender,tz|]phones:mes``).

    Raises :class:`ParamError` (error 1) when neither form is complete, a line has no ``:``, or a text is
    empty or longer than 1000 characters.
    """
    raw_list = params.get("list")
    lines: list[Line] = []
    if raw_list is not None and raw_list.strip():
        raw_newlines = params.get("nl") == "1"
        for raw in raw_list.replace("\r\n", "\n").split("\n"):
            if not raw.strip():
                continue
            head, sep, text = raw.partition(":")
            if not sep:
                raise ParamError(1, "list line without ':'")
            sender: str | None = None
            if "|" in head:
                prefix, _, head = head.partition("|")
                sender = prefix.split(",", 1)[0].strip() or None
            if not raw_newlines:
                text = text.replace("\\n", "\n")
            lines.append(Line(_split_phones(head), text, sender))
        if not lines:
            raise ParamError(1, "empty list")
    else:
        phones, mes = params.get("phones", ""), params.get("mes")
        if not phones.strip() or mes is None:
            raise ParamError(1, "phones and mes, or list, are required")
        lines.append(Line(_split_phones(phones), mes))
    for line in lines:
        if not line.phones:
            raise ParamError(1, "a message without phones")
        if not line.text.strip():
            raise ParamError(1, "empty message")
        if len(line.text) > MAX_MES_CHARS:
            raise ParamError(1, "message longer than 1000 characters")
    return lines


# -- answer formats ----------------------------------------------------------------------------------


#: Members a line, by the C encoder (``indent`` would take json's Python encoder: ~3 ms an answer of 500 numbers).
_LINES = json.JSONEncoder(ensure_ascii=False, separators=(",\n", ": "))
_SCALARS = (str, int, float, bool, type(None))


def _dumps(obj: object) -> str:
    """JSON as the provider writes it: one member a line, no indentation (``{\n"id": 33,\n"cnt": 1\n}``) —
    ``json.dumps(obj, ensure_ascii=False, indent=0)``, text for text."""
    if isinstance(obj, dict) and obj and all(type(k) is str for k in obj):
        if all(isinstance(v, _SCALARS) for v in obj.values()):
            return "{\n" + _LINES.encode(obj)[1:-1] + "\n}"
        return "{\n" + ",\n".join(_LINES.encode(k) + ": " + _dumps(v) for k, v in obj.items()) + "\n}"
    if isinstance(obj, list | tuple) and obj:
        return "[\n" + ",\n".join(_dumps(v) for v in obj) + "\n]"
    if isinstance(obj, _SCALARS) or obj == {} or obj == [] or obj == ():
        return _LINES.encode(obj)
    return json.dumps(obj, ensure_ascii=False, indent=0)


def money(value: Decimal) -> str:
    """Amounts as the provider writes them: two decimals (``4.50``)."""
    return f"{value.quantize(Decimal('0.01')):f}"


def json_id(value: str) -> int | str:
    """An id in JSON: a number when it is one (``"id": 123``), else a string."""
    return int(value) if _ID_INT.fullmatch(value) and int(value) <= MAX_ID else value


def error_body(code: int, fmt: int, message_id: str | None, text: str | None = None) -> str:
    """The error answer of ``smsc-http-api.md`` for ``fmt``: errors 3, 6, 7, 8 carry the id; ``text``
    replaces the send.php description (status.php's error 3 is "message not found")."""
    text = text if text is not None else ERROR_TEXT.get(code, "error")
    mid = message_id if code in ERRORS_WITH_ID and message_id is not None else None
    if fmt == 1:
        return f"{mid if mid is not None else 0},-{code}"
    if fmt == 2:
        tail = f"<id>{escape(mid)}</id>" if mid is not None else ""
        return f"<result><error>{escape(text)}</error><error_code>{code}</error_code>{tail}</result>"
    if fmt == 3:
        obj: dict[str, object] = {"error": text, "error_code": code}
        if mid is not None:
            obj["id"] = json_id(mid)
        return _dumps(obj)
    return f"ERROR = {code} ({text})" + (f", ID - {mid}" if mid is not None else "")


def send_body(answer: SendAnswer, *, fmt: int, cost_mode: int, op: bool) -> str:
    """The successful send.php answer for ``fmt`` 0-3 and ``cost`` 0-3, with ``op=1`` details."""
    cnt, cost, bal = answer.cnt, money(answer.cost), money(answer.balance)
    mid = answer.id if answer.id is not None else "0"
    fields: list[tuple[str, str]]  # (name, text) in the documented order
    if cost_mode == 1:
        fields = [("cost", cost), ("cnt", str(cnt))]
    else:
        fields = [("id", mid), ("cnt", str(cnt))]
        if cost_mode >= 2:
            fields.append(("cost", cost))
        if cost_mode == 3:
            fields.append(("balance", bal))
    details = answer.phones if op else ()
    if fmt == 3:
        obj: dict[str, object] = {}
        for name, value in fields:
            obj[name] = {"id": json_id(mid), "cnt": cnt}.get(name, value)
        if details:
            obj["phones"] = [
                {"phone": o.phone, "mccmnc": o.mccmnc, "cost": money(o.cost), "status": str(o.status),
                 "error": str(o.error)}
                for o in details
            ]
        return _dumps(obj)
    if fmt == 2:
        inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields)
        if details:
            inner += "<phones>" + "".join(
                f"<phone mccmnc={quoteattr(o.mccmnc)} cost={quoteattr(money(o.cost))} "
                f"status={quoteattr(str(o.status))} error={quoteattr(str(o.error))}>{escape(o.phone)}</phone>"
                for o in details
            ) + "</phones>"
        return f"<result>{inner}</result>"
    if fmt == 1:
        head = ",".join(value for _, value in fields)
    elif cost_mode == 1:
        head = f"{cost} ({cnt} SMS)"
    else:
        head = f"OK - {cnt} SMS, ID - {mid}"
        if cost_mode >= 2:
            head += f", COST - {cost}"
        if cost_mode == 3:
            head += f", BALANCE - {bal}"
    tail = "".join(f"\n{o.phone},{o.mccmnc},{money(o.cost)},{o.status},{o.error}" for o in details)
    return head + tail


def status_body(answers: Sequence[StatusAnswer], *, fmt: int, listed: bool | None = None,
                full: bool = False) -> str:
    """status.php: one object for a single message, a JSON list for the list form (fmt=3); lines for fmt 0/1.

    ``listed`` is the list form (a comma in the request, even a trailing one after a single message);
    ``None`` = several answers. ``full`` (``all=1``): JSON objects also carry ``cost`` (a string, like
    every amount of the provider's) and ``sms_cnt`` of a known message (the other formats stay short).
    """
    single = not listed if listed is not None else len(answers) == 1

    def extra(a: StatusAnswer) -> dict[str, object]:
        if not full or a.cost is None:
            return {}
        return {"cost": money(a.cost), "sms_cnt": a.parts}

    if fmt == 3:
        if single:
            a = answers[0]
            return _dumps({"status": a.status, "last_date": a.last_date,
                           "last_timestamp": a.last_timestamp, "flag": a.flag, "err": a.err, **extra(a)})
        return _dumps([
            {"phone": a.phone, "id": json_id(a.id), "status": a.status, "last_timestamp": a.last_timestamp,
             "last_date": a.last_date, "flag": a.flag, "err": a.err, **extra(a)}
            for a in answers
        ])
    if fmt == 2:
        items = "".join(
            f"<result><status>{a.status}</status><last_date>{a.last_date}</last_date>"
            f"<last_timestamp>{a.last_timestamp}</last_timestamp><flag>{a.flag}</flag><err>{a.err}</err>"
            "</result>"
            for a in answers
        )
        return items if single else f"<list>{items}</list>"
    if fmt == 1:
        return "\n".join(f"{a.status},{a.last_timestamp},{a.err}" for a in answers)
    return "\n".join(f"Status = {a.status}, check_time = {a.last_date}" for a in answers)


def balance_body(balance: Decimal, *, fmt: int, currency: bool) -> str:
    """balance.php: ``{"balance": "<amount>"}`` for fmt=3 (plus ``currency`` when asked)."""
    amount = money(balance)
    if fmt == 3:
        obj = {"balance": amount, **({"currency": "RUR"} if currency else {})}
        return _dumps(obj)
    if fmt == 2:
        cur = "<currency>RUR</currency>" if currency else ""
        return f"<result><balance>{amount}</balance>{cur}</result>"
    return f"{amount},RUR" if currency else amount
