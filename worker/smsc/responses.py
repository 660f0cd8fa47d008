"""What the provider answers: send, cost, status and balance answers read into reports (no I/O).

:func:`parse_send` reads every ``fmt`` (0 text, 1 numbers, 2 XML, 3 JSON) and ``cost`` mode (0-3), with
or without the ``op=1`` per-number details; :func:`parse_status` the status answers (``fmt`` 3 and 1,
``all`` 0 or 1, with the cost of each message when ``all=1``); :func:`parse_balance` the balance in any
``fmt``. A provider error answer (with or without an id) raises the classified
:class:`~worker.smsc.errors.SmscError`; a body that cannot be read after an HTTP 200 raises
:class:`~worker.smsc.errors.SmscUnknownOutcome`, because the provider may have taken the request.
Exception texts never quote the body. Money is :class:`~decimal.Decimal`; numbers and money are
accepted as JSON strings or JSON numbers alike.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, overload

from worker.smsc.errors import SmscError, SmscUnknownOutcome, classify, describe
from worker.smsc.phones import echo_index, same_subscriber
from worker.smsc.reports import CostReport, PhoneReport, SendReport, StatusReport

__all__ = [
    "parse_balance",
    "parse_send",
    "parse_status",
]


class _Malformed(Exception):
    """What in the body could not be read (never the body itself).

    Every error of this module is raised outside any ``except`` block, so none has a ``__context__``.
    """


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
        pass
    raise _Malformed("not XML")  # outside the except: the parser's error (which holds the body) is dropped


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
        pass
    raise _Malformed("not JSON")  # outside the except: a JSONDecodeError holds the whole body


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


#: "No status, no error" as the provider writes it (or leaves it out).
_ZERO = frozenset({None, "0", ""})


def _phone_report(raw: Mapping[str, Any]) -> PhoneReport:
    # The provider gives the cost only when there was no error, and status/error only on errors.
    phone, cost, mccmnc = raw.get("phone"), raw.get("cost"), raw.get("mccmnc")
    if type(phone) is str and type(cost) is str and raw.get("status") in _ZERO and raw.get("error") in _ZERO:
        # The usual case, a hundred times a batch: a number taken at a price (what the rest checks, cheaper).
        number, price = phone.strip(), _decimal_of(cost)
        if number and price is not None:
            return PhoneReport(phone=number, mccmnc="" if mccmnc is None else str(mccmnc).strip(), cost=price,
                               status=0, error=0)
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
        what = str(exc)
    raise _unreadable("send.php", fmt, what)


# status.php ----------------------------------------------------------------------------------------

# fmt=1, all=1: status,last_timestamp,err,send_timestamp,phone,cost,sender,status_name,message,...
_ALL1_PHONE, _ALL1_COST, _ALL1_MIN_FIELDS = 4, 5, 9


# Cost and parts of a status are for the bill, not for the decision (taken or not): a value that
# cannot be read is reported as absent rather than making the whole answer unreadable.


def _optional_decimal(value: Any) -> Decimal | None:
    try:
        return None if value is None or value == "" else _decimal(value, "cost")
    except _Malformed:
        return None


def _optional_int(value: Any) -> int | None:
    number = _optional_decimal(value)
    return int(number) if number is not None and number == number.to_integral_value() and number >= 0 else None


def _status_item(raw: Any) -> StatusReport:
    if not isinstance(raw, dict):
        raise _Malformed("a status is not a JSON object")
    if err := _error_json(raw):
        raise err
    message_id = raw.get("id")
    parts = raw.get("sms_cnt", raw.get("cnt"))
    return StatusReport(
        phone="" if raw.get("phone") is None else str(raw["phone"]).strip(),
        id="" if message_id is None or isinstance(message_id, bool) else str(message_id).strip(),
        status=_int(raw.get("status"), "status"),
        err=abs(_int(raw.get("err"), "err", default=0)),
        last_timestamp=_int(raw.get("last_timestamp"), "last_timestamp", default=0),
        cost=_optional_decimal(raw.get("cost")),
        parts=_optional_int(parts),
    )


def _status_line(line: str) -> StatusReport:
    fields = [f.strip() for f in line.split(",")]
    if err := _error1(fields):
        raise err
    if len(fields) < 3:
        raise _Malformed("a status line has fewer than 3 fields")
    full = len(fields) >= _ALL1_MIN_FIELDS
    return StatusReport(
        phone=fields[_ALL1_PHONE] if full else "",
        id="",
        status=_int(fields[0], "status"),
        err=abs(_int(fields[2], "err", default=0)),
        last_timestamp=_int(fields[1], "last_timestamp", default=0),
        cost=_optional_decimal(fields[_ALL1_COST]) if full else None,
    )


def _agrees(report: StatusReport, phone: str, message_id: str) -> bool:
    return (not report.id or report.id == message_id) and (
        not report.phone or same_subscriber(phone, report.phone)
    )


def _align(reports: list[StatusReport], pairs: Sequence[tuple[str, str]]) -> list[StatusReport]:
    """One report per asked pair, in the order asked, carrying the phone and id as asked.

    By position when the answer has one entry per pair and each agrees with its pair (a single-message
    answer names neither phone nor id); else by (id, phone) whatever the order, where the echoed phone
    may be the provider's correction of ours. A pair the answer does not cover is unreadable: guessing
    "not found" for it could send a taken message twice.
    """
    if len(reports) == len(pairs) and all(_agrees(r, *p) for r, p in zip(reports, pairs, strict=True)):
        return [dataclasses.replace(r, phone=p, id=i) for r, (p, i) in zip(reports, pairs, strict=True)]
    by_id: dict[str, list[str]] = {}
    for phone, mid in pairs:
        by_id.setdefault(mid, []).append(phone)
    indexes = {mid: echo_index(phones) for mid, phones in by_id.items()}
    found: dict[tuple[str, str], StatusReport] = {}
    for report in reports:
        ours = indexes.get(report.id, {}).get(report.phone.lstrip("+"))
        if ours is not None:
            found.setdefault((ours, report.id), report)
    out = []
    for phone, mid in pairs:
        hit = found.get((phone, mid))
        if hit is None:
            raise _Malformed("the answer has no status for one of the asked messages")
        out.append(dataclasses.replace(hit, phone=phone, id=mid))
    return out


def parse_status(
    body: str, *, fmt: int = 3, pairs: Sequence[tuple[str, str]] | None = None
) -> list[StatusReport]:
    """Read a status.php answer (fmt 3: one object or a list; fmt 1: ``<status>,<last_timestamp>,<err>...``).

    With the request's ``(phone, id)`` pairs, the answer is matched to them (:func:`_align`): one report
    per pair, in their order, with the phone and id as asked. An error answer raises the classified
    ``SmscError``; an unreadable one, or one that leaves an asked pair without a status,
    ``SmscUnknownOutcome``.
    """
    if fmt not in (1, 3):
        raise ValueError(f"parse_status reads fmt=1 or fmt=3, not {fmt!r}")
    try:
        if fmt == 3:
            obj = _json(body)
            reports = [_status_item(item) for item in (obj if isinstance(obj, list) else [obj])]
        else:
            reports = [_status_line(line) for line in _lines(body)]
        if not reports:
            raise _Malformed("empty answer")
        return reports if pairs is None else _align(reports, pairs)
    except _Malformed as exc:
        what = str(exc)
    raise _unreadable("status.php", fmt, what)


# balance.php ---------------------------------------------------------------------------------------


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
        what = str(exc)
    raise _unreadable("balance.php", fmt, what)
