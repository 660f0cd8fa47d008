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

- lines that all carry **one text** (every batch of a campaign) go as ``phones=p1,p2,...`` +
  ``mes=<text>``: backslashes, ``\\n`` sequences, real newlines (``\\n``, ``\\r\\n``), colons and
  commas arrive byte for byte;
- lines with **different texts** need ``list``; there a newline is written as the documented ``\\n``,
  and a text the escape cannot carry exactly (a backslash, or a carriage return) is refused with a
  ``ValueError`` before anything is sent: send it in a request of its own.

Either way the text the provider delivers is the text given, so :func:`~worker.smsc.encoding.
validate_message` (1000 characters, parts) counts what the provider counts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Final

from worker.smsc.encoding import validate_message, validate_sender
from worker.smsc.phones import mask_phone, status_phone

__all__ = [
    "SECRET_PARAMS",
    "Line",
    "balance_params",
    "cost_params",
    "encode_list",
    "fingerprint",
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

# One message of a request: its recipients and its text.
Line = tuple[Sequence[str], str]

# Every answer is asked as JSON in UTF-8, and decoded as UTF-8 (what was asked, whatever the header).
_FORMAT: Final[Mapping[str, str]] = {"fmt": "3", "charset": "utf-8"}


def _check_phones(phones: Sequence[str]) -> None:
    if isinstance(phones, str):
        raise TypeError("phones must be a sequence of numbers, not a string")
    if not phones:
        raise ValueError("a line has no phones")
    for phone in phones:
        if not phone or _PHONE_FORBIDDEN.search(phone):
            raise ValueError(f"phone {mask_phone(phone)} is empty or contains a separator")


def encode_list(lines: Sequence[Line]) -> str:
    """Encode ``(phones, text)`` pairs as the ``list`` parameter: ``p1,p2:text`` lines joined by ``\\n``.

    A newline inside a text is written as the two characters ``\\n`` (the provider's escape). A text
    the escape cannot carry exactly raises ``ValueError``: one with a backslash (``\\n`` in it would
    arrive as a line break) or a carriage return (it would arrive as a plain newline).
    """
    out: list[str] = []
    for phones, text in lines:
        _check_phones(phones)
        if "\\" in text or "\r" in text:
            what = "a backslash" if "\\" in text else "a carriage return"
            raise ValueError(f"a text with {what} cannot travel in a list request exactly; send it on its own")
        out.append(",".join(phones) + ":" + text.replace("\n", "\\n"))
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


def _message_params(lines: Sequence[Line], sender: str | None) -> dict[str, str]:
    """``phones`` + ``mes`` when every line has one text, else ``list`` (see the module docstring)."""
    if not lines:
        raise ValueError("a request needs at least one line")
    texts: set[str] = set()
    for phones, text in lines:
        _check_phones(phones)
        if text not in texts:  # a batch usually repeats one text: check it once
            validate_message(text)
            texts.add(text)
    if len(texts) == 1:
        params = {"phones": ",".join(p for phones, _ in lines for p in phones), "mes": lines[0][1]}
    else:
        params = {"list": encode_list(lines)}
    params.update(_FORMAT)
    if sender is not None:
        params["sender"] = validate_sender(sender)
    return params


def send_params(*, lines: Sequence[Line], request_id: str, sender: str | None = None) -> dict[str, str]:
    """The non-secret form fields of a send: the message(s), ``id``, ``fmt=3``, ``charset``, ``cost=3``, ``op=1``.

    ``cost=3`` returns the cost and the new balance with the send; ``op=1`` returns each number's
    outcome, so one invalid number fails alone. Raises ``ValueError`` for input the provider refuses
    or that could not reach it exactly as written.
    """
    params = _message_params(lines, sender)
    params.update(id=validate_request_id(request_id), cost="3", op="1")
    return params


def cost_params(*, lines: Sequence[Line], sender: str | None = None) -> dict[str, str]:
    """The non-secret form fields of a cost request (``cost=1``: nothing is sent)."""
    params = _message_params(lines, sender)
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


def fingerprint(account: str, params: Mapping[str, str]) -> str:
    """SHA-256 hex of the account and the canonical non-secret params: equal for identical requests.

    Credentials (``login``, ``psw``, ``apikey``) are left out even when present, so the fingerprint is
    the same whoever builds it and can be stored in Redis.
    """
    items = sorted((k, v) for k, v in params.items() if k not in SECRET_PARAMS)
    canon = json.dumps([account, items], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()
