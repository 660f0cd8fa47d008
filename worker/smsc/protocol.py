"""The provider's wire format: request parameters and the answers of send, status and balance (no I/O).

Requests: :func:`send_params` / :func:`cost_params` build the non-secret form fields of a ``list=``
request (the client adds the credentials); :func:`fingerprint` names "the same request" for the
provider's one-identical-request-a-minute rule.

Answers: :func:`parse_send` reads every ``fmt`` (0 text, 1 numbers, 2 XML, 3 JSON) and ``cost`` mode
(0-3), with or without the ``op=1`` per-number details. A provider error answer (with or without an
id) raises the classified :class:`~worker.smsc.errors.SmscError`; a body that cannot be read after an
HTTP 200 raises :class:`~worker.smsc.errors.SmscUnknownOutcome`, because the provider may have taken
the request. Exception texts never quote the body. Money is :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, overload

from worker.smsc.encoding import validate_message, validate_sender
from worker.smsc.errors import SmscError, SmscUnknownOutcome, classify, describe

__all__ = [
    "SECRET_PARAMS",
    "STATUS_NOT_FOUND",
    "CostReport",
    "Line",
    "PhoneReport",
    "SendReport",
    "StatusReport",
    "cost_params",
    "encode_list",
    "fingerprint",
    "mask_phone",
    "parse_balance",
    "parse_send",
    "parse_status",
    "send_params",
    "validate_request_id",
]

# Form fields that carry credentials: never part of a fingerprint, a log line or an exception.
SECRET_PARAMS: Final = frozenset({"login", "psw", "apikey"})
# status.php: the provider has no message with this id for this phone (it never took it).
STATUS_NOT_FOUND: Final = -3

# Characters that would change the meaning of a ``list`` line if they appeared in a phone:
# "," and ";" separate phones, ":" ends them, "|" ends a per-line sender, newlines end the line.
_PHONE_FORBIDDEN = re.compile(r"[,;:|\s]")
_REQUEST_ID = re.compile(r"[A-Za-z0-9.\-_]{1,40}")
_MAX_INT_ID = 2_147_483_647

# One message of a ``list`` request: its recipients and its text.
Line = tuple[Sequence[str], str]


@dataclass(frozen=True)
class PhoneReport:
    """One number of an ``op=1`` answer; ``error`` 0 means the provider took it."""

    phone: str
    mccmnc: str
    cost: Decimal
    status: int
    error: int

    @property
    def accepted(self) -> bool:
        return self.error == 0


@dataclass(frozen=True)
class SendReport:
    """A send the provider took: its id, SMS count (parts x recipients), cost, new balance, numbers."""

    id: str
    cnt: int
    cost: Decimal | None
    balance: Decimal | None
    phones: tuple[PhoneReport, ...]


@dataclass(frozen=True)
class CostReport:
    """The answer of a ``cost=1`` request: what the send would cost and how many SMS it is."""

    cost: Decimal
    cnt: int


@dataclass(frozen=True)
class StatusReport:
    """The delivery status of one message to one phone (``status`` -3: the provider never took it)."""

    phone: str
    id: str
    status: int
    err: int
    last_timestamp: int

    @property
    def taken(self) -> bool:
        return self.status != STATUS_NOT_FOUND


# --- requests -------------------------------------------------------------------------------------


def mask_phone(phone: str) -> str:
    """``+79991234567`` → ``****4567``: enough to correlate a log line, not enough to identify."""
    return "****" + phone[-4:] if len(phone) > 4 else "****"


def encode_list(lines: Sequence[Line]) -> str:
    """Encode ``(phones, text)`` pairs as the ``list`` parameter: ``p1,p2:text`` lines joined by ``\\n``.

    A newline inside a text (``\\n``, ``\\r\\n`` or ``\\r``) is written as the two characters ``\\n``,
    which the provider turns back into a newline. (So a text that itself contains a backslash followed
    by ``n`` is also shown as a line break: the format has no escape for that.)
    """
    out: list[str] = []
    for phones, text in lines:
        if isinstance(phones, str):
            raise TypeError("phones must be a sequence of numbers, not a string")
        if not phones:
            raise ValueError("a list line has no phones")
        for phone in phones:
            if not phone or _PHONE_FORBIDDEN.search(phone):
                raise ValueError(f"phone {mask_phone(phone)} is empty or contains a separator")
        flat = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
        out.append(f"{','.join(phones)}:{flat}")
    return "\n".join(out)


def validate_request_id(request_id: str) -> str:
    """Return ``request_id`` if the provider accepts it as ``id``, else raise ``ValueError`` (one line).

    An id is an integer 1..2147483647, or at most 40 characters of ``A-Za-z0-9.-_``. An all-digit id
    must be in the integer range (the provider would read it as a number).
    """
    if not _REQUEST_ID.fullmatch(request_id):
        raise ValueError("request id must be 1-40 characters of A-Za-z0-9.-_")
    if request_id.isdigit() and not 1 <= int(request_id) <= _MAX_INT_ID:
        raise ValueError(f"a numeric request id must be between 1 and {_MAX_INT_ID}")
    return request_id


def _list_params(lines: Sequence[Line], sender: str | None) -> dict[str, str]:
    if not lines:
        raise ValueError("a request needs at least one line")
    checked: set[str] = set()
    for _, text in lines:
        if text not in checked:  # a batch usually repeats one text: check it once
            validate_message(text)
            checked.add(text)
    params = {"list": encode_list(lines), "fmt": "3", "charset": "utf-8"}
    if sender is not None:
        params["sender"] = validate_sender(sender)
    return params


def send_params(*, lines: Sequence[Line], request_id: str, sender: str | None = None) -> dict[str, str]:
    """The non-secret form fields of a send: ``list``, ``id``, ``fmt=3``, ``charset``, ``cost=3``, ``op=1``.

    ``cost=3`` returns the cost and the new balance with the send; ``op=1`` returns each number's
    outcome, so one invalid number fails alone. Raises ``ValueError`` for input the provider refuses.
    """
    params = _list_params(lines, sender)
    params.update(id=validate_request_id(request_id), cost="3", op="1")
    return params


def cost_params(*, lines: Sequence[Line], sender: str | None = None) -> dict[str, str]:
    """The non-secret form fields of a cost request (``cost=1``: nothing is sent)."""
    params = _list_params(lines, sender)
    params["cost"] = "1"
    return params


def fingerprint(account: str, params: Mapping[str, str]) -> str:
    """SHA-256 hex of the account and the canonical non-secret params: equal for identical requests.

    Credentials (``login``, ``psw``, ``apikey``) are left out even when present, so the fingerprint is
    the same whoever builds it and can be stored in Redis.
    """
    items = sorted((k, v) for k, v in params.items() if k not in SECRET_PARAMS)
    canon = json.dumps([account, items], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


# --- answers --------------------------------------------------------------------------------------


class _Malformed(Exception):
    """What in the body could not be read (never the body itself)."""


def _unreadable(endpoint: str, fmt: int, what: str) -> SmscUnknownOutcome:
    return SmscUnknownOutcome(f"unreadable answer from {endpoint} (fmt={fmt}): {what}")


_INT = re.compile(r"\s*-?\d+\s*")


def _int(value: Any, what: str, *, default: int | None = None) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():  # the usual case, 500 times a batch
        return int(value)
    if (value is None or value == "") and default is not None:
        return default
    if isinstance(value, bool):
        raise _Malformed(f"{what} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    raise _Malformed(f"{what} is not an integer")


@functools.lru_cache(maxsize=1024)
def _decimal_of(text: str) -> Decimal | None:
    """``text`` as a finite Decimal, else None; cached: a batch's numbers mostly cost the same."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _decimal(value: Any, what: str, *, default: Decimal | None = None) -> Decimal:
    if (value is None or value == "") and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal | float):
        raise _Malformed(f"{what} is not a number")
    number = _decimal_of(str(value))
    if number is None:
        raise _Malformed(f"{what} is not a number")
    return number


def _id(value: Any, what: str = "id") -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise _Malformed(f"{what} is missing")
    return str(value).strip()


def _lines(body: str) -> list[str]:
    return [line.strip() for line in body.lstrip("\ufeff").splitlines() if line.strip()]


def _error(code: Any, description: Any, message_id: Any) -> SmscError:
    number = abs(_int(code, "error_code"))
    reason = description.strip() if isinstance(description, str) and description.strip() else describe(number)
    mid = None if message_id in (None, "", 0, "0") else str(message_id)
    return classify(number, reason, message_id=mid)


# fmt=0 -------------------------------------------------------------------------------------------

_ERR0 = re.compile(r"ERROR\s*=\s*(?P<code>-?\d+)\s*(?:\((?P<reason>.*)\))?(?:\s*,\s*ID\s*-\s*(?P<id>\S+))?")
_OK0 = re.compile(
    r"OK\s*-\s*(?P<cnt>\d+)\s*SMS\s*,\s*ID\s*-\s*(?P<id>[^,\s]+)"
    r"(?:\s*,\s*COST\s*-\s*(?P<cost>[^,\s]+))?(?:\s*,\s*BALANCE\s*-\s*(?P<balance>[^,\s]+))?",
    re.IGNORECASE,
)
# fmt=1: the fields of the first line, by cost mode.
_FIELDS1: Final[Mapping[int, tuple[str, ...]]] = {
    0: ("id", "cnt"),
    1: ("cost", "cnt"),
    2: ("id", "cnt", "cost"),
    3: ("id", "cnt", "cost", "balance"),
}
_COST0 = re.compile(r"(?P<cost>-?[\d.]+)\s*\(\s*(?P<cnt>\d+)\s*SMS\s*\)", re.IGNORECASE)


def _error0(line: str) -> SmscError | None:
    m = _ERR0.fullmatch(line)
    return _error(m["code"], m["reason"], m["id"]) if m else None


def _error1(fields: list[str]) -> SmscError | None:
    """fmt=1 errors: ``0,-N`` or ``<id>,-N``."""
    if len(fields) == 2 and re.fullmatch(r"-\d+", fields[1].strip()):
        return _error(fields[1], None, fields[0].strip())
    return None


def _phone_line(line: str) -> dict[str, Any]:
    fields = line.split(",")
    if len(fields) != 5:
        raise _Malformed("a per-number line does not have 5 fields")
    return dict(zip(("phone", "mccmnc", "cost", "status", "error"), (f.strip() for f in fields), strict=True))


def _read_text(body: str, fmt: int, cost: int) -> dict[str, Any]:
    lines = _lines(body)
    if not lines:
        raise _Malformed("empty body")
    head = lines[0]
    if fmt == 0 and (err := _error0(head)):
        raise err
    fields = [f.strip() for f in head.split(",")]
    if fmt == 1 and (err := _error1(fields)):
        raise err
    phones = [_phone_line(line) for line in lines[1:]]
    if fmt == 0:
        if cost == 1:
            m = _COST0.fullmatch(head)
            if not m:
                raise _Malformed("not a cost answer")
            return {"cost": m["cost"], "cnt": m["cnt"], "phones": phones}
        m = _OK0.fullmatch(head)
        if not m:
            raise _Malformed("not an OK answer")
        if (cost >= 2 and m["cost"] is None) or (cost == 3 and m["balance"] is None):
            raise _Malformed(f"cost={cost} answer without its cost or balance")
        return {**m.groupdict(), "phones": phones}
    names = _FIELDS1[cost]
    if len(fields) != len(names):
        raise _Malformed(f"cost={cost} answer has {len(fields)} fields, not {len(names)}")
    return {**dict(zip(names, fields, strict=True)), "phones": phones}


# fmt=2 -------------------------------------------------------------------------------------------


def _xml(body: str) -> ET.Element:
    text = body.lstrip("\ufeff").strip()
    if re.search(r"<!(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise _Malformed("XML with a DOCTYPE or ENTITY is refused")
    try:
        return ET.fromstring(text)  # noqa: S314 - no DOCTYPE (checked above), so no entity expansion
    except (ET.ParseError, ValueError):
        raise _Malformed("not XML") from None


def _child(root: ET.Element, tag: str) -> str | None:
    node = root.find(tag)
    return None if node is None else (node.text or "").strip()


def _error_xml(root: ET.Element) -> SmscError | None:
    code = _child(root, "error_code")
    if code is None:
        if _child(root, "error") is not None:
            raise _Malformed("error without error_code")
        return None
    return _error(code, _child(root, "error"), _child(root, "id"))


def _read_xml(body: str) -> dict[str, Any]:
    root = _xml(body)
    if err := _error_xml(root):
        raise err
    answer: dict[str, Any] = {k: _child(root, k) for k in ("id", "cnt", "cost", "balance")}
    phones_node = root.find("phones")
    answer["phones"] = [
        {"phone": (node.text or "").strip(), **node.attrib}
        for node in ([] if phones_node is None else phones_node.findall("phone"))
    ]
    return answer


# fmt=3 -------------------------------------------------------------------------------------------


def _json(body: str) -> Any:
    try:
        return json.loads(body.lstrip("\ufeff"), parse_float=Decimal)
    except ValueError:
        raise _Malformed("not JSON") from None


def _error_json(obj: Any) -> SmscError | None:
    if not isinstance(obj, dict):
        raise _Malformed("not a JSON object")
    if "error_code" in obj:
        return _error(obj["error_code"], obj.get("error"), obj.get("id"))
    if "error" in obj:
        raise _Malformed("error without error_code")
    return None


def _read_json(body: str) -> dict[str, Any]:
    obj = _json(body)
    if err := _error_json(obj):
        raise err
    phones = obj.get("phones", [])
    if not isinstance(phones, list) or not all(isinstance(p, dict) for p in phones):
        raise _Malformed("phones is not a list of objects")
    return {**obj, "phones": phones}


# ---------------------------------------------------------------------------------------------------


def _phone_report(raw: Mapping[str, Any]) -> PhoneReport:
    # The provider gives the cost only when there was no error, and status/error only on errors.
    mccmnc = raw.get("mccmnc")
    return PhoneReport(
        phone=_id(raw.get("phone"), "phone"),
        mccmnc="" if mccmnc is None else str(mccmnc).strip(),
        cost=_decimal(raw.get("cost"), "phone cost", default=Decimal(0)),
        status=_int(raw.get("status"), "phone status", default=0),
        error=abs(_int(raw.get("error"), "phone error", default=0)),
    )


def _check(fmt: int, cost: int) -> None:
    if fmt not in (0, 1, 2, 3):
        raise ValueError(f"fmt must be 0, 1, 2 or 3, not {fmt!r}")
    if cost not in (0, 1, 2, 3):
        raise ValueError(f"cost must be 0, 1, 2 or 3, not {cost!r}")


@overload
def parse_send(body: str, *, fmt: int, cost: Literal[1]) -> CostReport: ...
@overload
def parse_send(body: str, *, fmt: int, cost: Literal[0, 2, 3] = 0) -> SendReport: ...
@overload
def parse_send(body: str, *, fmt: int, cost: int) -> SendReport | CostReport: ...
def parse_send(body: str, *, fmt: int, cost: int = 0) -> SendReport | CostReport:
    """Read a send.php answer given the request's ``fmt`` and ``cost``.

    Returns a :class:`CostReport` for ``cost=1``, else a :class:`SendReport` (``cost`` is ``None`` for
    cost 0, ``balance`` is ``None`` unless cost 3). Raises the classified ``SmscError`` for an error
    answer and ``SmscUnknownOutcome`` for a body it cannot read.
    """
    _check(fmt, cost)
    try:
        if fmt in (0, 1):
            raw = _read_text(body, fmt, cost)
        elif fmt == 2:
            raw = _read_xml(body)
        else:
            raw = _read_json(body)
        phones = tuple(_phone_report(p) for p in raw["phones"])
        cnt = _int(raw.get("cnt"), "cnt")
        if cnt < 0:
            raise _Malformed("cnt is negative")
        if cost == 1:
            return CostReport(cost=_decimal(raw.get("cost"), "cost"), cnt=cnt)
        return SendReport(
            id=_id(raw.get("id")),
            cnt=cnt,
            cost=_decimal(raw.get("cost"), "cost") if cost >= 2 else None,
            balance=_decimal(raw.get("balance"), "balance") if cost == 3 else None,
            phones=phones,
        )
    except _Malformed as exc:
        raise _unreadable("send.php", fmt, str(exc)) from None


def _status_item(raw: Any) -> StatusReport:
    if not isinstance(raw, dict):
        raise _Malformed("a status is not a JSON object")
    if err := _error_json(raw):
        raise err
    return StatusReport(
        phone=str(raw.get("phone") or ""),
        id=str(raw.get("id") or ""),
        status=_int(raw.get("status"), "status"),
        err=abs(_int(raw.get("err"), "err", default=0)),
        last_timestamp=_int(raw.get("last_timestamp"), "last_timestamp", default=0),
    )


def parse_status(
    body: str, *, fmt: int = 3, pairs: Sequence[tuple[str, str]] | None = None
) -> list[StatusReport]:
    """Read a status.php answer (fmt 3: one object or a list; fmt 1: ``<status>,<last_timestamp>,<err>``).

    A single-message answer does not repeat the phone and id: pass the request's ``(phone, id)`` pairs
    to fill them in (matched by position when the counts agree). An error answer raises the classified
    ``SmscError``; an unreadable one ``SmscUnknownOutcome``.
    """
    if fmt not in (1, 3):
        raise ValueError(f"parse_status reads fmt=1 or fmt=3, not {fmt!r}")
    try:
        if fmt == 3:
            obj = _json(body)
            items = obj if isinstance(obj, list) else [obj]
            reports = [_status_item(item) for item in items]
        else:
            reports = []
            for line in _lines(body):
                fields = [f.strip() for f in line.split(",")]
                if err := _error1(fields):
                    raise err
                if len(fields) < 3:
                    raise _Malformed("a status line has fewer than 3 fields")
                reports.append(
                    StatusReport(
                        phone="",
                        id="",
                        status=_int(fields[0], "status"),
                        err=abs(_int(fields[2], "err", default=0)),
                        last_timestamp=_int(fields[1], "last_timestamp", default=0),
                    )
                )
            if not reports:
                raise _Malformed("empty body")
    except _Malformed as exc:
        raise _unreadable("status.php", fmt, str(exc)) from None
    if pairs is not None and len(pairs) == len(reports):
        reports = [
            StatusReport(r.phone or phone, r.id or mid, r.status, r.err, r.last_timestamp)
            for r, (phone, mid) in zip(reports, pairs, strict=True)
        ]
    return reports


def parse_balance(body: str, *, fmt: int = 3) -> Decimal:
    """Read a balance.php answer in any ``fmt``; an error answer raises the classified ``SmscError``."""
    _check(fmt, 0)
    try:
        if fmt == 3:
            obj = _json(body)
            if err := _error_json(obj):
                raise err
            return _decimal(obj.get("balance"), "balance")
        if fmt == 2:
            root = _xml(body)
            if err := _error_xml(root):
                raise err
            return _decimal(_child(root, "balance"), "balance")
        lines = _lines(body)
        if not lines:
            raise _Malformed("empty body")
        if fmt == 0 and (err := _error0(lines[0])):
            raise err
        fields = [f.strip() for f in lines[0].split(",")]
        if fmt == 1 and (err := _error1(fields)):
            raise err
        return _decimal(fields[0], "balance")
    except _Malformed as exc:
        raise _unreadable("balance.php", fmt, str(exc)) from None
