"""What status.php's codes mean: message statuses and delivery error codes, in words (no I/O).

A message status says where the provider is with one message to one phone; it sorts into three
outcomes that the runtime acts on (:func:`outcome_of`):

    not-found   -3                          the provider never took the message: it may be sent again
    sent        -1, 0, 1, 2, 3, 4           taken and sent (waiting, at the operator, delivered, read,
                                            expired, link clicked): never send it again
    failed      -2, 20, 22, 23, 24, 25      taken but not sent (stopped, cannot be delivered, invalid
                                            number, prohibited, insufficient funds, unreachable)

A status the table does not know is ``sent``: the provider has the message, so sending it again could
duplicate it, and nothing says it failed. Delivery error codes (``err``) explain a status in more
detail; both tables are from the provider's documentation, as ``smsc-http-api.md`` restates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

__all__ = [
    "DELIVERY_ERRORS",
    "FAILED_STATUSES",
    "SENT_STATUSES",
    "STATUS_DESCRIPTIONS",
    "STATUS_NOT_FOUND",
    "Outcome",
    "describe_delivery_error",
    "describe_status",
    "outcome_of",
]

Outcome = Literal["not-found", "sent", "failed"]

#: status.php: the provider has no message with this id for this phone (it never took it).
STATUS_NOT_FOUND: Final = -3

STATUS_DESCRIPTIONS: Final[Mapping[int, str]] = {
    -3: "message not found",
    -2: "stopped",
    -1: "waiting to be sent",
    0: "handed to the operator",
    1: "delivered",
    2: "read",
    3: "expired",
    4: "link clicked",
    20: "cannot be delivered",
    22: "invalid number",
    23: "prohibited",
    24: "insufficient funds",
    25: "unreachable number",
}

#: Taken and sent: the provider passed the message on (the operator may still fail to deliver it).
SENT_STATUSES: Final = frozenset({-1, 0, 1, 2, 3, 4})
#: Taken but failed: the provider has the message and will not send it.
FAILED_STATUSES: Final = frozenset({-2, 20, 22, 23, 24, 25})

#: Delivery error codes (``err`` of status.php), as the provider documents them.
DELIVERY_ERRORS: Final[Mapping[int, str]] = {
    0: "no error",
    1: "subscriber does not exist",
    6: "subscriber not in the network",
    11: "no SMS service",
    12: "error in the subscriber's phone",
    13: "subscriber blocked",
    21: "no SMS support",
    200: "virtual send",
    219: "SIM card replaced",
    220: "operator's queue full",
    237: "subscriber does not answer",
    238: "no template",
    239: "IP address forbidden",
    240: "subscriber busy",
    241: "conversion error",
    242: "answering machine",
    243: "no contract",
    244: "mailing forbidden",
    245: "status not received",
    246: "time restriction",
    247: "message limit exceeded",
    248: "no route",
    249: "wrong number format",
    250: "number forbidden by settings",
    251: "per-number limit exceeded",
    252: "number forbidden",
    253: "spam filter",
    254: "unregistered sender id",
    255: "rejected by the operator",
}


def describe_status(status: int) -> str:
    """A message status in words (``"cannot be delivered"``); an unknown one as ``"status N"``."""
    return STATUS_DESCRIPTIONS.get(status, f"status {status}")


def describe_delivery_error(err: int) -> str:
    """A delivery error code in words (``"subscriber does not exist"``); unknown: ``"delivery error N"``."""
    return DELIVERY_ERRORS.get(err, f"delivery error {err}")


def outcome_of(status: int) -> Outcome:
    """``"not-found"`` (-3: may be sent again), ``"failed"`` (taken, not sent) or ``"sent"``."""
    if status == STATUS_NOT_FOUND:
        return "not-found"
    if status in FAILED_STATUSES:
        return "failed"
    return "sent"
