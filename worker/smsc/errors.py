"""Every error of the SMSC client, classified once by what it means for a batch.

Callers act on the class, never on raw provider codes::

    SmscError                      root; every error of this package
    ├── SmscTransportError         no usable answer
    │   ├── SmscConnectError       the request never left (connect refused/timeout, DNS, pool): safe to resend
    │   └── SmscUnknownOutcome     the request may have reached the provider (read timeout, reset, cut or
    │                              unreadable answer): settle through status.php, never resend blindly
    ├── SmscRetryable              the batch may be retried after ``retry_after_s`` (HTTP 5xx, error 9)
    │   └── SmscAccountBackoff     error 4: the whole account backs off for ``retry_after_s``
    ├── SmscBatchRejected          errors 1, 5, 6, unknown codes, other HTTP statuses: permanent for the batch
    ├── SmscNumbersRejected        errors 7, 8 for the whole request: every number in it fails
    ├── SmscInsufficientFunds      error 3: pause the account's campaigns, keep the unsent recipients
    └── SmscAuthError              error 2: stop the account, alert, no retry

Every error carries ``code`` (the provider's error code, or ``None``), ``reason`` (the provider's
description, or ours), ``retry_after_s`` (seconds, or ``None``) and ``message_id`` (the id the provider
echoed with errors 3, 6, 7, 8, or ``None``). None of them ever receives a secret, so ``str()`` and
``repr()`` are safe to log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "BLOCKED_RETRY_AFTER_S",
    "DUPLICATE_RETRY_AFTER_S",
    "ERROR_DESCRIPTIONS",
    "HTTP_5XX_RETRY_AFTER_S",
    "SmscAccountBackoff",
    "SmscAuthError",
    "SmscBatchRejected",
    "SmscConnectError",
    "SmscError",
    "SmscInsufficientFunds",
    "SmscNumbersRejected",
    "SmscRetryable",
    "SmscTransportError",
    "SmscUnknownOutcome",
    "classify",
    "describe",
]

# The provider's error codes (send.php and status.php), worded for an operator reading a report.
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
# HTTP 5xx: an overloaded or restarting front end; a short pause is enough to try again.
HTTP_5XX_RETRY_AFTER_S: Final = 5.0


def describe(code: int) -> str:
    """The description of a provider error code (for per-number errors, which come without one)."""
    return ERROR_DESCRIPTIONS.get(code, f"provider error {code}")


class SmscError(Exception):
    """Raised for anything that goes wrong talking to the provider; the root of this package's errors."""

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

    def __repr__(self) -> str:
        fields = [f"reason={self.reason!r}", f"code={self.code!r}", f"retry_after_s={self.retry_after_s!r}"]
        if self.message_id is not None:
            fields.append(f"message_id={self.message_id!r}")
        return f"{type(self).__name__}({', '.join(fields)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes survive pickling (result backends, multiprocessing).
        return (
            _rebuild,
            (type(self), self.reason, self.code, self.retry_after_s, self.message_id),
        )


def _rebuild(
    cls: type[SmscError], reason: str, code: int | None, retry_after_s: float | None, message_id: str | None
) -> SmscError:
    return cls(reason, code=code, retry_after_s=retry_after_s, message_id=message_id)


class SmscTransportError(SmscError):
    """Raised when no usable answer came back from the provider."""


class SmscConnectError(SmscTransportError):
    """Raised when the request never left (connect refused or timed out, DNS, no free connection)."""


class SmscUnknownOutcome(SmscTransportError):
    """Raised when the request may have been taken but the answer is lost or unreadable: settle it."""


class SmscRetryable(SmscError):
    """Raised when the provider refused the batch for now and it may be sent again after ``retry_after_s``."""

    default_retry_after_s = DUPLICATE_RETRY_AFTER_S


class SmscAccountBackoff(SmscRetryable):
    """Raised when the provider blocks the account's IP for a while: the whole account must back off."""

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
    4: SmscAccountBackoff,
    5: SmscBatchRejected,
    6: SmscBatchRejected,
    7: SmscNumbersRejected,
    8: SmscNumbersRejected,
    9: SmscRetryable,
}


def classify(
    code: int | None,
    reason: str,
    *,
    http_status: int | None = None,
    message_id: str | None = None,
) -> SmscError:
    """Map a provider error code (or a non-200 HTTP status) to the error that says what to do.

    With ``http_status`` other than 200 the code is ignored: 5xx and 429 are retryable, any other
    status rejects the batch. An unknown provider code rejects the batch (the provider answered, so
    nothing was taken) with the provider's reason.
    """
    if http_status is not None and http_status != 200:
        if http_status >= 500:
            return SmscRetryable(reason, retry_after_s=HTTP_5XX_RETRY_AFTER_S)
        if http_status == 429:
            return SmscRetryable(reason, retry_after_s=DUPLICATE_RETRY_AFTER_S)
        return SmscBatchRejected(reason)
    if code is None:
        return SmscBatchRejected(reason)
    code = abs(code)
    cls = _BY_CODE.get(code, SmscBatchRejected)
    return cls(reason or describe(code), code=code, message_id=message_id)
