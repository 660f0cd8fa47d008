"""Every error of the SMSC client, classified once: one class per meaning for the batch.

Callers act on the class, never on raw provider codes or HTTP statuses::

    SmscError                      root; every error of this package
    ├── SmscTransportError         no usable answer
    │   ├── SmscConnectError       the request never left (connect refused/timeout, DNS, pool): safe to resend
    │   └── SmscUnknownOutcome     the request may have reached the provider (read timeout, hard deadline
    │                              passed, reset, cut or unreadable answer): settle through status.php
    │                              after the horizon, never resend blindly
    ├── SmscHttpError              a non-200 HTTP answer (5xx, 403, 404, 408, 429, 3xx, ...) from the
    │                              provider's front end or a proxy: not the provider's verdict, the outcome
    │                              is uncertain; ``http_status``, ``retry_after_s``
    ├── SmscTooManyRequests        error 9: identical request within a minute, or too many at once;
    │                              ``retry_after_s`` 60
    ├── SmscAccountBlocked         error 4: the IP is blocked for a while; the whole account backs off
    ├── SmscBatchRejected          errors 1, 5, 6 and unknown codes: permanent for the batch
    ├── SmscNumbersRejected        errors 7, 8 for the whole request: every number in it fails
    ├── SmscInsufficientFunds      error 3: pause the account's campaigns, keep the unsent recipients
    └── SmscAuthError              error 2: stop the account, alert, no retry

Every error carries ``code`` (the provider's error code, or ``None``), ``reason`` (the provider's
description, or ours), ``retry_after_s`` (seconds, or ``None``) and ``message_id`` (the id the provider
echoed with errors 3, 6, 7, 8, or ``None``); :class:`SmscHttpError` also ``http_status``.

No error holds a secret: not in ``str()``/``repr()``, and not in its chain either. The client raises
its errors outside any ``except`` block, so ``__cause__`` and ``__context__`` are ``None``: an httpx
exception holds the request, whose form body holds the password, and must not ride along.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "BLOCKED_RETRY_AFTER_S",
    "DUPLICATE_RETRY_AFTER_S",
    "ERROR_DESCRIPTIONS",
    "HTTP_4XX_RETRY_AFTER_S",
    "HTTP_5XX_RETRY_AFTER_S",
    "SmscAccountBlocked",
    "SmscAuthError",
    "SmscBatchRejected",
    "SmscConnectError",
    "SmscError",
    "SmscHttpError",
    "SmscInsufficientFunds",
    "SmscNumbersRejected",
    "SmscTooManyRequests",
    "SmscTransportError",
    "SmscUnknownOutcome",
    "classify",
    "describe",
]

# The provider's error codes (send.php, status.php, balance.php), worded for an operator reading a report.
ERROR_DESCRIPTIONS: Final[Mapping[int, str]] = {
    1: "error in parameters",
    2: "wrong login or password, or IP not allowed",
    3: "insufficient funds",
    4: "IP temporarily blocked after frequent errors",
    5: "invalid date format (or error deleting a message)",
    6: "message forbidden (text or sender)",
    7: "invalid phone number format",
    8: "message cannot be delivered to this number",
    9: "too many identical or concurrent requests",
}

# Error 9 counts identical requests "within a minute": a retry sooner is refused again.
DUPLICATE_RETRY_AFTER_S: Final = 60.0
# Error 4: the provider's shortest block (after frequent errors) is measured in minutes; probing the
# account again sooner only adds errors to the count that caused it.
BLOCKED_RETRY_AFTER_S: Final = 60.0
# HTTP 5xx and 408: an overloaded or restarting front end; a short pause is enough to try again.
HTTP_5XX_RETRY_AFTER_S: Final = 5.0
# HTTP 429 and the other non-200 answers (403, 404, 3xx): a proxy or front end refusing us does not
# change its mind within seconds; without a Retry-After header, wait the provider's minute.
HTTP_4XX_RETRY_AFTER_S: Final = 60.0
# A Retry-After header is honoured up to this (a misconfigured proxy must not park a batch for a day).
_MAX_RETRY_AFTER_S: Final = 600.0


def describe(code: int) -> str:
    """The description of a provider error code (for per-number errors, which come without one)."""
    return ERROR_DESCRIPTIONS.get(code, f"provider error {code}")


class SmscError(Exception):
    """Raised when anything goes wrong talking to the provider; the root of this package's errors."""

    default_retry_after_s: float | None = None

    def __init__(
        self,
        reason: str,
        *,
        code: int | None = None,
        retry_after_s: float | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.retry_after_s = self.default_retry_after_s if retry_after_s is None else retry_after_s
        self.message_id = message_id

    def __str__(self) -> str:
        text = self.reason if self.code is None else f"error {self.code}: {self.reason}"
        if self.message_id is not None:
            text += f" (id {self.message_id})"
        if self.retry_after_s is not None:
            text += f"; retry after {self.retry_after_s:g} s"
        return text

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"code": self.code, "retry_after_s": self.retry_after_s}
        if self.message_id is not None:
            fields["message_id"] = self.message_id
        return fields

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}(reason={self.reason!r}, {shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes survive pickling (result backends, multiprocessing).
        return (_rebuild, (type(self), self.reason, self._fields()))


def _rebuild(cls: type[SmscError], reason: str, fields: dict[str, Any]) -> SmscError:
    return cls(reason, **fields)


class SmscTransportError(SmscError):
    """Raised when no usable answer came back from the provider."""


class SmscConnectError(SmscTransportError):
    """Raised when the request never left (connect refused or timed out, DNS, no free connection)."""


class SmscUnknownOutcome(SmscTransportError):
    """Raised when the request may have been taken but no complete answer came in time: settle it."""


class SmscHttpError(SmscError):
    """Raised when the answer is not HTTP 200: a front end or proxy spoke, not the provider's API."""

    default_retry_after_s = HTTP_5XX_RETRY_AFTER_S

    def __init__(
        self,
        reason: str,
        *,
        http_status: int,
        code: int | None = None,
        retry_after_s: float | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(reason, code=code, retry_after_s=retry_after_s, message_id=message_id)
        self.http_status = http_status

    def _fields(self) -> dict[str, Any]:
        return {"http_status": self.http_status, **super()._fields()}


class SmscTooManyRequests(SmscError):
    """Raised when the provider answers error 9 (an identical request within a minute, or too many at once)."""

    default_retry_after_s = DUPLICATE_RETRY_AFTER_S


class SmscAccountBlocked(SmscError):
    """Raised when the provider answers error 4 (IP blocked for a while): the whole account backs off."""

    default_retry_after_s = BLOCKED_RETRY_AFTER_S


class SmscBatchRejected(SmscError):
    """Raised when the provider refused the batch for good (bad parameters or date, forbidden text)."""


class SmscNumbersRejected(SmscError):
    """Raised when the provider refused every number of the request (invalid or undeliverable)."""


class SmscInsufficientFunds(SmscError):
    """Raised when the account has no money left: its campaigns pause until resumed."""


class SmscAuthError(SmscError):
    """Raised when the login, password or API key is refused (or the IP is not allowed): the account stops."""


_BY_CODE: Final[Mapping[int, type[SmscError]]] = {
    1: SmscBatchRejected,
    2: SmscAuthError,
    3: SmscInsufficientFunds,
    4: SmscAccountBlocked,
    5: SmscBatchRejected,
    6: SmscBatchRejected,
    7: SmscNumbersRejected,
    8: SmscNumbersRejected,
    9: SmscTooManyRequests,
}


def _http_retry_after_s(http_status: int, retry_after: str | None) -> float:
    """A Retry-After header in seconds (clamped to 1..600), else the default for the status."""
    if retry_after is not None and retry_after.strip().isascii() and retry_after.strip().isdigit():
        return min(max(float(retry_after.strip()), 1.0), _MAX_RETRY_AFTER_S)
    if http_status >= 500 or http_status == 408:
        return HTTP_5XX_RETRY_AFTER_S
    return HTTP_4XX_RETRY_AFTER_S


def classify(
    code: int | None,
    reason: str,
    *,
    http_status: int | None = None,
    retry_after: str | None = None,
    message_id: str | None = None,
) -> SmscError:
    """Map a provider error code (or a non-200 HTTP status) to the error that says what to do.

    With ``http_status`` other than 200 the code is ignored and the answer is an
    :class:`SmscHttpError`, whatever the status: ``retry_after_s`` is the ``Retry-After`` header when
    it gives seconds (``retry_after``, clamped to 1..600 s), else 5 s for 5xx and 408 and 60 s for the
    others. An unknown provider code rejects the batch (the provider answered, so nothing was taken)
    with the provider's reason.
    """
    if http_status is not None and http_status != 200:
        return SmscHttpError(
            reason, http_status=http_status, retry_after_s=_http_retry_after_s(http_status, retry_after)
        )
    if code is None:
        return SmscBatchRejected(reason)
    code = abs(code)
    cls = _BY_CODE.get(code, SmscBatchRejected)
    return cls(reason or describe(code), code=code, message_id=message_id)
