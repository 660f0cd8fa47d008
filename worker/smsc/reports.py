"""What the client returns: the reports of send, cost and status answers (plain frozen dataclasses, and
one named tuple per number of a send).

Built by :mod:`worker.smsc.responses`; nothing here does I/O or parsing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from worker.smsc.phones import echo_index
from worker.smsc.statuses import STATUS_NOT_FOUND, Outcome, describe_delivery_error, describe_status, outcome_of

__all__ = ["CostReport", "PhoneReport", "SendReport", "StatusReport"]


class PhoneReport(NamedTuple):
    """One number of an ``op=1`` answer, as the provider spells it; ``error`` 0 means it took it.

    A named tuple, not a frozen dataclass like the others: a batch's answer makes one per recipient, and
    a tuple is built in a fifth of the time."""

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

    def match(self, phones: Iterable[str]) -> dict[str, PhoneReport]:
        """``{our phone: its PhoneReport}`` for the phones we sent, whichever spelling the provider echoed.

        The provider echoes a number it auto-corrected in the corrected form (``89001234567`` comes
        back as ``79001234567``): see :mod:`worker.smsc.phones`. A phone with no report is absent.
        """
        ours_list = list(phones)
        # The usual batch: numbers of digits only, echoed as sent. Then an echo found among them is what
        # echo_index would answer for it (a number's digits are itself), and the full index (each
        # number's provider spelling) is built only for an echo that is not.
        index: dict[str, str] | None = None
        exact = {p: p for p in ours_list} if all(p.isascii() and p.isdigit() for p in ours_list) else None
        out: dict[str, PhoneReport] = {}
        for report in self.phones:
            echo = report.phone.lstrip("+")
            ours = exact.get(echo) if exact is not None else None
            if ours is None:
                if index is None:
                    index = echo_index(ours_list)
                ours = index.get(echo)
            if ours is not None:
                out.setdefault(ours, report)
        return out


@dataclass(frozen=True)
class CostReport:
    """The answer of a ``cost=1`` request: what the send would cost and how many SMS it is."""

    cost: Decimal
    cnt: int


@dataclass(frozen=True)
class StatusReport:
    """The status of one message to one phone, as status.php answers it.

    ``phone`` and ``id`` are the ones asked (our spelling, when the client matched the answer to the
    request), ``status`` and ``err`` the provider's codes (:mod:`worker.smsc.statuses`),
    ``last_timestamp`` its Unix time of the last change; ``cost`` (what the message cost, all parts)
    and ``parts`` (its SMS count) when the answer carries them (``all=1``), else ``None``.
    """

    phone: str
    id: str
    status: int
    err: int
    last_timestamp: int
    cost: Decimal | None = None
    parts: int | None = None

    @property
    def outcome(self) -> Outcome:
        """``"not-found"`` (never taken: may be sent again), ``"sent"`` or ``"failed"`` (taken, not sent)."""
        return outcome_of(self.status)

    @property
    def taken(self) -> bool:
        """The provider has the message (sent or failed): it must never be sent again."""
        return self.status != STATUS_NOT_FOUND

    @property
    def sent(self) -> bool:
        return self.outcome == "sent"

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    @property
    def reason(self) -> str:
        """The status in words, with the delivery error when there is one: ``"invalid number (...)"``."""
        words = describe_status(self.status)
        return f"{words} ({describe_delivery_error(self.err)})" if self.err else words
