"""What the client asks: the form fields of send, cost, status and balance requests (no I/O).

:func:`send_params` / :func:`cost_params` build the non-secret fields of a send (the client adds the
credentials), :func:`status_params` those of a status request, and :func:`fingerprint` names "the
same request" for the provider's one-identical-request-a-minute rule.

**How a text travels (every text reaches the provider exactly as written).** The provider's ``list``
parameter has one escape: "if you want to pass a newline character in the mes message, specify it with
\\n" (``seed/smsc-send-api.txt``, ``list``). So in a ``list`` a text holding a backslash followed by
``n`` (``C:\\new``, ``\\n`` typed in a template) reaches the phone with a line break, and no escape for
the backslash is documented. The ``nl=1`` mode the seed mentions for multi-line texts documents no
line syntax at all. ``mes`` has no escape: it is the text, form-encoded (``%0A``, ``%5C``...), as
SMSC's own client libraries send it (``smsc_api.php``/``smsc_api.py``: ``phones=...&mes=...``, never
``list``). Hence:

- lines that all carry **one text and one sender** (every batch of a one-text campaign) go as
  ``phones=p1,p2,...`` + ``mes=<text>`` (+ ``sender``): backslashes, ``\\n`` sequences, real newlines
  (``\\n``, ``\\r\\n``), colons and commas arrive byte for byte;
- lines with **different texts or senders** need ``list``; there a newline is written as the documented
  ``\\n``, and a text the escape cannot carry exactly (a backslash, or a carriage return) is refused
  with a ``ValueError`` before anything is sent: send it in a request of its own (a batch of one text).

**Lines** are ``(phones, text)`` (:data:`Line`) or ``(phones, text, sender)`` (:data:`SenderLine`). A
line's own sender (``None``: the request's ``sender=``) that differs from the request's goes in its
``list`` line as ``sender|phones:text`` (the documented ``sender,tz|phones:mes``; ``tz`` is only honoured
with ``time``, which this client never sends, so it is left out). The ``list`` line's syntax is safe for
any text: phones and senders cannot hold ``:``, ``,`` or ``|`` (nor a space at a sender's ends), so the
first ``:`` ends the head and the text after it, with its own ``: , ; |``, arrives as written.

**Options** (:class:`SendOptions`: ``translit``, ``tinyurl``, ``flash``, ``valid``, ``maxsms``, a
campaign's settings) add their form fields when not the default, so the fingerprint covers them. The
text sent is still the text written; what the provider then delivers and bills (links shortened,
transliterated, cut at ``maxsms``) is :func:`~worker.smsc.encoding.delivered_text` /
:func:`~worker.smsc.encoding.count_parts` (``count_parts(text, **options.counting())``).

Either way the text the provider receives is the text given, so :func:`~worker.smsc.encoding.
validate_message` (1000 characters) checks what the provider checks.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from worker.smsc.encoding import validate_message, validate_sender
from worker.smsc.phones import mask_phone, status_phone

__all__ = [
    "SECRET_PARAMS",
    "AnyLine",
    "Line",
    "SendOptions",
    "SenderLine",
    "balance_params",
    "cost_params",
    "encode_list",
    "fingerprint",
    "form_body",
    "form_quote",
    "send_params",
    "status_params",
    "validate_request_id",
]

# Form fields that carry credentials: never part of a fingerprint, a log line or an exception.
SECRET_PARAMS: Final = frozenset({"login", "psw", "apikey"})

# Characters that would change the meaning of a phone field: "," and ";" separate phones, ":" ends
# them in a ``list`` line, "|" ends a per-line sender, whitespace and newlines end the line.
_PHONE_FORBIDDEN = re.compile(r"[,;:|\s]")
_REQUEST_ID = re.compile(r"[A-Za-z0-9.\-_]{1,40}")
_MAX_INT_ID = 2_147_483_647

# One message of a request: its recipients and its text; or with its own sender (None: the request's).
Line = tuple[Sequence[str], str]
SenderLine = tuple[Sequence[str], str, str | None]
AnyLine = Line | SenderLine

# Every answer is asked as JSON in UTF-8, and decoded as UTF-8 (what was asked, whatever the header).
_FORMAT: Final[Mapping[str, str]] = {"fmt": "3", "charset": "utf-8"}

_VALID_HOURS = re.compile(r"[0-9]{1,2}")
_VALID_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def _flag(name: str, value: bool | int | str | None) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"--{name} {value}: give 0 or 1")


def _valid(value: str | int | None) -> str | None:
    """``valid``: 1..24 hours (as ``"12"``) or ``hh:mm`` 00:01..24:00 (as ``"01:30"``); ``None`` absent."""
    if value is None:
        return None
    text = str(value).strip()
    if text == "":
        return None
    if _VALID_HOURS.fullmatch(text) and 1 <= int(text) <= 24:
        return str(int(text))
    clock = _VALID_CLOCK.fullmatch(text)
    if clock is not None:
        hours, minutes = int(clock.group(1)), int(clock.group(2))
        if minutes < 60 and 1 <= hours * 60 + minutes <= 24 * 60:
            return f"{hours:02d}:{minutes:02d}"
    raise ValueError(f"--valid {value}: give 1-24 hours or hh:mm from 00:01 to 24:00")


@dataclass(frozen=True)
class SendOptions:
    """A campaign's send.php options; the defaults are the provider's (nothing is sent for them).

    - ``translit``: 0 none, 1 Latin transliteration ("translit"), 2 look-alike characters ("mpaHc/Ium");
    - ``tinyurl``: shorten the links in the text (the provider counts the parts of the shortened text);
    - ``flash``: a flash SMS (shown at once, not stored by the phone);
    - ``valid``: how long the operator keeps trying to deliver: ``"1"``..``"24"`` hours, or ``"hh:mm"``
      from ``00:01`` to ``24:00``; ``None``: the account's setting;
    - ``maxsms``: at most this many parts per message; the provider cuts a longer text.

    Build it with :meth:`parse` (from the command line or an API body; one-line ``ValueError`` naming
    the option); store it with :meth:`to_json` / :meth:`from_json`.
    """

    translit: int = 0
    tinyurl: bool = False
    flash: bool = False
    valid: str | None = None
    maxsms: int | None = None

    def __post_init__(self) -> None:
        if self.translit not in (0, 1, 2) or isinstance(self.translit, bool):
            raise ValueError(f"--translit {self.translit}: give 0 (none), 1 (translit) or 2 (look-alike characters)")
        if not isinstance(self.tinyurl, bool) or not isinstance(self.flash, bool):
            raise ValueError("tinyurl and flash are true or false")
        if self.valid is not None and _valid(self.valid) != self.valid:
            raise ValueError(f"--valid {self.valid}: give 1-24 hours or hh:mm from 00:01 to 24:00")
        if self.maxsms is not None and (isinstance(self.maxsms, bool) or not isinstance(self.maxsms, int)
                                        or self.maxsms < 1):
            raise ValueError(f"--maxsms {self.maxsms}: give a whole number of SMS parts, 1 or more")

    @classmethod
    def parse(cls, *, translit: int | str | None = 0, tinyurl: bool | int | str | None = False,
              flash: bool | int | str | None = False, valid: str | int | None = None,
              maxsms: int | str | None = None) -> SendOptions:
        """Options from loose input (``"1"``, ``"yes"``, ``1:30``...); ``ValueError`` (one line) names the
        option, the value and what is accepted: ``--valid 25: give 1-24 hours or hh:mm from 00:01 to 24:00``."""
        mode = 0
        if translit is not None and str(translit).strip() != "":
            text = str(translit).strip()
            if isinstance(translit, bool) or text not in ("0", "1", "2"):
                raise ValueError(f"--translit {translit}: give 0 (none), 1 (translit) or 2 (look-alike characters)")
            mode = int(text)
        parts: int | None = None
        if maxsms is not None and str(maxsms).strip() != "":
            text = str(maxsms).strip()
            if isinstance(maxsms, bool) or not text.isdigit() or not text.isascii() or int(text) < 1:
                raise ValueError(f"--maxsms {maxsms}: give a whole number of SMS parts, 1 or more")
            parts = int(text)
        return cls(translit=mode, tinyurl=_flag("tinyurl", tinyurl), flash=_flag("flash", flash),
                   valid=_valid(valid), maxsms=parts)

    def params(self) -> dict[str, str]:
        """The form fields of the options that are not the default (``{}`` for the defaults)."""
        out: dict[str, str] = {}
        if self.translit:
            out["translit"] = str(self.translit)
        if self.tinyurl:
            out["tinyurl"] = "1"
        if self.flash:
            out["flash"] = "1"
        if self.valid is not None:
            out["valid"] = self.valid
        if self.maxsms is not None:
            out["maxsms"] = str(self.maxsms)
        return out

    def counting(self) -> dict[str, Any]:
        """The options that change what the provider bills, as keyword arguments of
        :func:`~worker.smsc.encoding.count_parts` and :func:`~worker.smsc.encoding.delivered_text`."""
        return {"translit": self.translit, "tinyurl": self.tinyurl, "maxsms": self.maxsms}

    def to_json(self) -> str:
        """Compact JSON of every field (for the campaign HASH's ``options``)."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, data: str | None) -> SendOptions:
        """The options stored by :meth:`to_json`; ``None`` or ``""`` (a campaign without options): defaults."""
        if data is None or data.strip() == "":
            return cls()
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise ValueError("campaign options are not valid JSON") from exc
        if not isinstance(raw, dict):
            raise ValueError("campaign options are not a JSON object")
        unknown = sorted(set(raw) - {"translit", "tinyurl", "flash", "valid", "maxsms"})
        if unknown:
            raise ValueError(f"campaign options have unknown field(s): {', '.join(unknown)}")
        return cls.parse(**raw)


def _check_phones(phones: Sequence[str]) -> None:
    if isinstance(phones, str):
        raise TypeError("phones must be a sequence of numbers, not a string")
    if not phones:
        raise ValueError("a line has no phones")
    for phone in phones:
        if not phone or _PHONE_FORBIDDEN.search(phone):
            raise ValueError(f"phone {mask_phone(phone)} is empty or contains a separator")


def _unpack(line: AnyLine) -> tuple[Sequence[str], str, str | None]:
    if len(line) == 3:
        return line[0], line[1], line[2]
    if len(line) == 2:
        return line[0], line[1], None
    raise ValueError("a line is (phones, text) or (phones, text, sender)")


def encode_list(lines: Sequence[AnyLine]) -> str:
    """Encode lines as the ``list`` parameter: ``[sender|]p1,p2:text`` lines joined by ``\\n``.

    A line's sender (third item, when not ``None``) is written as its ``sender|`` prefix. A newline
    inside a text is written as the two characters ``\\n`` (the provider's escape). A text the escape
    cannot carry exactly raises ``ValueError``: one with a backslash (``\\n`` in it would arrive as a
    line break) or a carriage return (it would arrive as a plain newline); so does a sender the provider
    refuses or one with a space at either end (the line's head is read without them).
    """
    return _encode_list(lines, checked=False)


def _encode_list(lines: Sequence[AnyLine], *, checked: bool) -> str:
    """:func:`encode_list`; ``checked``: the phones and senders were checked already (``_message_params``)."""
    out: list[str] = []
    for line in lines:
        phones, text, sender = _unpack(line)
        if not checked:
            _check_phones(phones)
        if "\\" in text or "\r" in text:
            what = "a backslash" if "\\" in text else "a carriage return"
            raise ValueError(f"a text with {what} cannot travel in a list request exactly; send it on its own")
        head = ",".join(phones)
        if sender is not None:
            if not checked:
                validate_sender(sender)
            if sender != sender.strip():
                raise ValueError(f"sender {sender!r} has a space at an end; it cannot travel in a list line exactly")
            head = f"{sender}|{head}"
        out.append(head + ":" + text.replace("\n", "\\n"))
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


def _message_params(lines: Sequence[AnyLine], sender: str | None, options: SendOptions | None) -> dict[str, str]:
    """``phones`` + ``mes`` when every line has one text and one sender, else ``list`` (module docstring)."""
    if not lines:
        raise ValueError("a request needs at least one line")
    if sender is not None:
        validate_sender(sender)
    unpacked: list[tuple[Sequence[str], str, str | None]] = []
    texts: set[str] = set()
    senders: set[str | None] = set()
    for line in lines:
        phones, text, own = _unpack(line)
        _check_phones(phones)
        if text not in texts:  # a batch usually repeats one text: check it once
            validate_message(text)
            texts.add(text)
        effective = own if own is not None else sender
        if effective not in senders:
            if own is not None:
                validate_sender(own)
            senders.add(effective)
        # In a list, only a sender other than the request's needs its prefix.
        unpacked.append((phones, text, effective if effective != sender else None))
    params: dict[str, str]
    if len(texts) == 1 and len(senders) == 1:
        (sender,) = senders  # every line's sender: the request's
        params = {"phones": ",".join(p for phones, _, _ in unpacked for p in phones), "mes": unpacked[0][1]}
    else:
        params = {"list": _encode_list(unpacked, checked=True)}
    params.update(_FORMAT)
    if sender is not None:
        params["sender"] = sender
    if options is not None:
        params.update(options.params())
    return params


def send_params(*, lines: Sequence[AnyLine], request_id: str, sender: str | None = None,
                options: SendOptions | None = None) -> dict[str, str]:
    """The non-secret form fields of a send: the message(s), ``id``, ``fmt=3``, ``charset``, ``cost=3``, ``op=1``,
    and the ``options`` that are not the default.

    ``cost=3`` returns the cost and the new balance with the send; ``op=1`` returns each number's
    outcome, so one invalid number fails alone. Raises ``ValueError`` for input the provider refuses
    or that could not reach it exactly as written.
    """
    params = _message_params(lines, sender, options)
    params.update(id=validate_request_id(request_id), cost="3", op="1")
    return params


def cost_params(*, lines: Sequence[AnyLine], sender: str | None = None,
                options: SendOptions | None = None) -> dict[str, str]:
    """The non-secret form fields of a cost request (``cost=1``: nothing is sent), with the ``options``
    (they change the count: ``translit``, ``tinyurl``, ``maxsms``)."""
    params = _message_params(lines, sender, options)
    params["cost"] = "1"
    return params


def status_params(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The non-secret form fields of a status request for ``(phone, id)`` pairs, in one request.

    Each phone is asked as the provider stores it (:func:`~worker.smsc.phones.status_phone`:
    ``89001234567`` is asked as ``79001234567``). ``all=1`` asks for the full record, which carries
    the message's cost, so a recipient settled through status.php is billed like a sent one.
    """
    if not pairs:
        raise ValueError("a status request needs at least one (phone, id)")
    for phone, message_id in pairs:
        _check_phones([phone])
        if not message_id or "," in message_id:
            raise ValueError("a message id is empty or contains a comma")
    return {
        "phone": ",".join(status_phone(phone) for phone, _ in pairs),
        "id": ",".join(message_id for _, message_id in pairs),
        "all": "1",
        **_FORMAT,
    }


def balance_params() -> dict[str, str]:
    """The non-secret form fields of a balance request."""
    return dict(_FORMAT)


#: Bytes a form encoding keeps as they are (``quote(value, safe="")``); every other byte becomes ``%XX``.
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_HEX = b"0123456789ABCDEF"
# Per byte, the three characters it becomes: a kept byte itself and two NULs (dropped at the end: a NUL
# of the value is escaped, so none is left as it was), an escaped one "%", its high and its low digit.
_AS_FIRST = bytes(c if c in _UNRESERVED else ord("%") for c in range(256))
_AS_HIGH = bytes(0 if c in _UNRESERVED else _HEX[c >> 4] for c in range(256))
_AS_LOW = bytes(0 if c in _UNRESERVED else _HEX[c & 15] for c in range(256))


def form_quote(value: str) -> str:
    """``urllib.parse.quote(value, safe="")``, with the work in C: three ``bytes.translate`` give each
    byte's three characters, strided slice assignments interleave them, one more translate drops the
    kept bytes' fillers. A 500-text ``list`` of Cyrillic is ~190 KB form-encoded; quoted byte by byte
    (urllib, httpx) that took ~5 ms of a worker's CPU inside the login slot, run by run (``re.sub``, a
    Python call for each of its ~2,000 runs of bytes to escape) ~2.6 ms, this way ~0.6 ms."""
    b = value.encode("utf-8", "surrogatepass")
    if not b.translate(None, _UNRESERVED):
        return value
    out = bytearray(3 * len(b))
    out[0::3] = b.translate(_AS_FIRST)
    out[1::3] = b.translate(_AS_HIGH)
    out[2::3] = b.translate(_AS_LOW)
    return out.translate(None, b"\0").decode("ascii")


def form_body(params: Mapping[str, str]) -> bytes:
    """The ``application/x-www-form-urlencoded`` body of ``params`` (what ``httpx``'s ``data=`` sends,
    with ``%20`` for a space where it writes ``+``: both mean a space)."""
    return "&".join(f"{form_quote(k)}={form_quote(v)}" for k, v in params.items()).encode("ascii")


def fingerprint(account: str, params: Mapping[str, str]) -> str:
    """SHA-256 hex of the account and the canonical non-secret params: equal for identical requests.

    Credentials (``login``, ``psw``, ``apikey``) are left out even when present, so the fingerprint is
    the same whoever builds it and can be stored in Redis.
    """
    items = sorted((k, v) for k, v in params.items() if k not in SECRET_PARAMS)
    canon = json.dumps([account, items], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()
