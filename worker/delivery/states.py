"""The provider's codes as delivery states, the funnel and the words (no I/O).

A sent recipient's delivery state is one of ``pending`` (no final status yet: nothing heard, -1
waiting to be sent, 0 handed to the operator), the final ones — ``delivered`` (1), ``read`` (2),
``clicked`` (4, a link in it clicked), ``expired`` (3, the phone was off for the message's lifetime),
``undeliverable`` (20), ``invalid_number`` (22), ``prohibited`` (23), ``no_funds`` (24),
``unreachable`` (25), ``stopped`` (-2) — or ``unknown`` (its horizon passed without a final status).
The funnel: ``delivered`` (delivered, read, clicked), ``failed`` (every other final state), ``pending``
and ``unknown``. Words come from :mod:`worker.smsc.statuses` (the provider's tables).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from scheduler.delivery import CODE_NONE, CODE_PENDING, CODE_UNKNOWN, status_of
from worker.smsc.statuses import describe_delivery_error, describe_status

__all__ = ["DELIVERED", "STATES", "funnel", "reason_of", "state_of", "state_of_status"]

STATES: Final[Mapping[int, str]] = {
    -2: "stopped", -1: "pending", 0: "pending", 1: "delivered", 2: "read", 3: "expired", 4: "clicked",
    20: "undeliverable", 22: "invalid_number", 23: "prohibited", 24: "no_funds", 25: "unreachable",
}
#: The states the funnel counts as delivered.
DELIVERED: Final = frozenset({"delivered", "read", "clicked"})


def state_of_status(status: int) -> str:
    """A provider status as a delivery state; a status the table does not know: ``status_N`` (final)."""
    return STATES.get(status, f"status_{status}")


def state_of(code: int) -> str:
    """A record code as a delivery state (``""`` for a row that was not sent)."""
    if code == CODE_NONE:
        return ""
    if code == CODE_PENDING:
        return "pending"
    if code == CODE_UNKNOWN:
        return "unknown"
    status = status_of(code)
    return state_of_status(status) if status is not None else "pending"


def reason_of(code: int, err: int) -> str:
    """The words of a record code and err: ``"cannot be delivered (subscriber blocked)"``."""
    if code == CODE_UNKNOWN:
        return "no final status within the horizon"
    status = status_of(code)
    if status is None:
        return "no status yet" if code == CODE_PENDING else ""
    words = describe_status(status)
    return f"{words} ({describe_delivery_error(err)})" if err else words


def funnel(counts: Mapping[int, int], sent: int) -> dict[str, Any]:
    """``{"delivered", "failed", "pending", "unknown", "by_state"}`` of a campaign's counters by code;
    ``pending`` includes sent recipients not tracked yet, so the four add up to ``sent``."""
    by_state: dict[str, int] = {}
    for code, n in counts.items():
        if n and code != CODE_NONE:
            name = state_of(code)
            by_state[name] = by_state.get(name, 0) + n
    delivered = sum(n for s, n in by_state.items() if s in DELIVERED)
    unknown = by_state.get("unknown", 0)
    failed = sum(n for s, n in by_state.items() if s not in DELIVERED and s not in ("pending", "unknown"))
    pending = max(sent - delivered - failed - unknown, 0)
    if pending:
        by_state["pending"] = pending
    else:
        by_state.pop("pending", None)
    return {"delivered": delivered, "failed": failed, "pending": pending, "unknown": unknown,
            "by_state": dict(sorted(by_state.items()))}
