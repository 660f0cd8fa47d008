"""What a campaign costs: the provider's quote (``cost=1``), the balance check, and each budgeted batch's quote.

Three uses, one set of rules (every request here is a request of the login, like a send):

* :func:`quote_lines` / :func:`quote_campaign` — "what will this cost?" before an enqueue (the CLI's
  quote): one ``cost=1`` request per request the campaign would send, batched as the enqueue batches
  it; above ``sample_limit`` recipients only the first ``sample_limit`` are quoted and the rest is
  extrapolated linearly (:attr:`Quote.extrapolated`: "estimated from 20,000 of 1,000,000 recipients").
* :func:`check_balance` — balance.php against an estimate: enough money for the campaign?
  :func:`affordable` quotes a staged campaign and checks it so; :func:`affordability` asks the same
  two requests while the enqueue still reads (its first recipients staged), the verdict at the end.
* :func:`batch_quote` — the budget path (:mod:`scheduler.budget`): for a campaign with a max-cost,
  sending quotes each batch inside the batch's own login slot just before its send, reserves that
  quote against the budget, then sends.

**Why each budgeted batch is quoted** rather than priced from an average: the provider's price
depends on each number's operator and country (and on the parts after transliteration), so a batch
of foreign or premium numbers costs several times the average; a budget checked against an average
would be overshot by exactly those batches. The quote is the provider's price for the very request
about to leave, so ``spent + reservations ≤ max`` holds for what is billed. **What it costs**: one
more request per batch (a login slot for the length of one more round trip, and one of the five
identical cost requests a minute), only for campaigns with a max-cost; others never quote.

The rules, enforced here before the provider has to:

* the five identical cost requests a minute (``Guards.claim_cost_request``) and the ten balance
  requests a minute (``Guards.claim_balance_request``): claimed before the slot, so no slot is held
  while waiting; a refusal is :class:`QuoteLimit` / :class:`BalanceLimit` with the seconds to wait;
* every request holds one of the login's slots (fewer than 15 in flight), taken as sending takes it
  (a probe while the credentials are not proven) and given back at once; :func:`batch_quote` with
  ``slot_held=True`` uses the caller's slot and takes no second one;
* every answer is applied to the account (``Guards.account_outcome``): a good one proves the
  credentials, an error counts toward the error streak, error 4 backs the account off, error 2 stops
  it — the provider counts a quote's errors like a send's.

Errors: :func:`quote_lines`, :func:`quote_campaign` and :func:`check_balance` raise one-line
:class:`CostError`\\ s (the provider's errors translated, never a secret in them); :func:`batch_quote`
raises the client's classified ``SmscError`` unchanged (sending acts on its class) or :class:`QuoteLimit`.
Bad input (a text or sender the provider refuses) raises ``ValueError`` as ``send_params`` does::

    CostError              root; one line each, ``retry_after_s`` when waiting helps
    ├── QuoteLimit         five identical cost requests a minute already
    ├── BalanceLimit       ten balance requests a minute already
    ├── NoSlot             no login slot: all busy, or the account is stopped, backing off or quiet
    └── ProviderError      the provider refused or did not answer (an ``SmscError``, as its cause)
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import TypeVar, cast

from scheduler.guards import Answer, SlotResult
from scheduler.keys import batch_ref
from scheduler.keys import text as _s
from worker.runtime import Runtime
from worker.smsc.errors import (
    SmscAccountBlocked,
    SmscAuthError,
    SmscError,
    SmscUnknownOutcome,
)
from worker.smsc.reports import CostReport
from worker.smsc.requests import AnyLine, SendOptions, cost_params, fingerprint

__all__ = [
    "SAMPLE_LIMIT",
    "SLOT_WAIT_S",
    "Affordability",
    "BalanceCheck",
    "BalanceLimit",
    "CostError",
    "NoSlot",
    "ProviderError",
    "Quote",
    "QuoteLimit",
    "affordability",
    "affordable",
    "batch_quote",
    "check_balance",
    "quote_campaign",
    "quote_lines",
    "staged_batches",
]

log = logging.getLogger(__name__)

#: Recipients quoted before a campaign's quote is extrapolated: at 500 a batch, 40 cost requests —
#: a few seconds, and enough numbers that the mix of operators and countries is the campaign's.
SAMPLE_LIMIT = 20_000
#: How long a quote waits for a free login slot (sending's own wait: the workers keep the slots busy).
SLOT_WAIT_S = 10.0
#: Longest wait for a wake-up before the slot is tried again (an expired lease wakes nobody).
_SLOT_POLL_S = 0.1
#: A slot's lease beyond the request's hard deadline (``SMSC_TIMEOUT``), as sending leases it.
_SLOT_MARGIN_MS = 5_000
#: Provider errors that come only after the login and password were accepted.
_AUTHENTICATED_ERRORS = frozenset({1, 3, 5, 6, 7, 8})
_CENT = Decimal("0.01")
_MILLI = Decimal(1000)


class CostError(Exception):
    """Raised when a quote or a balance check cannot be had; one line, no secret in it."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuoteLimit(CostError):
    """Raised when five identical cost requests left within the last minute (the provider's error 9)."""


class BalanceLimit(CostError):
    """Raised when ten balance requests left within the last minute (the provider's error 9)."""


class NoSlot(CostError):
    """Raised when no login slot came free in time, or the account may send nothing now."""


class ProviderError(CostError):
    """Raised when the provider refused the request or did not answer; the ``SmscError`` is its cause."""


@dataclass(frozen=True)
class Quote:
    """What the provider says a campaign (or one request) would cost."""

    cost: Decimal
    sms: int
    #: Recipients quoted, and the campaign's recipients (equal unless extrapolated).
    sampled: int = 0
    total: int = 0

    @property
    def extrapolated(self) -> bool:
        return self.sampled < self.total

    def extrapolated_to(self, total: int) -> Quote:
        """This quote of :attr:`sampled` recipients, scaled linearly to ``total`` (at least those sampled)."""
        total = max(total, self.sampled)
        cost, sms = self.cost, self.sms
        if 0 < self.sampled < total:
            scale = Decimal(total) / Decimal(self.sampled)
            cost = (cost * scale).quantize(_CENT, ROUND_HALF_UP)
            sms = int((sms * scale).to_integral_value(ROUND_HALF_UP))
        return Quote(cost, sms, sampled=self.sampled, total=total)

    def describe(self) -> str:
        """One line for the CLI: ``cost 1500.00 for 1,000 SMS to 1,000 recipients (estimated from ...)``."""
        line = f"cost {self.cost} for {self.sms:,} SMS to {self.total:,} recipients"
        if self.extrapolated:
            line += f" (estimated from {self.sampled:,} of {self.total:,} recipients)"
        return line


@dataclass(frozen=True)
class BalanceCheck:
    balance: Decimal
    estimate: Decimal
    #: The balance covers the estimate.
    ok: bool
    #: The campaign's quote the estimate came from (:func:`affordable`).
    quote: Quote | None = None

    @classmethod
    def against(cls, balance: Decimal, estimate: Decimal, quote: Quote | None = None) -> BalanceCheck:
        """``balance`` against ``estimate``: it is ``ok`` when it covers it."""
        return cls(balance=balance, estimate=estimate, ok=balance >= estimate, quote=quote)

    @property
    def shortfall(self) -> Decimal:
        return max(self.estimate - self.balance, Decimal(0))

    def describe(self) -> str:
        """One line: ``balance 10 is 2.00 short of the estimate 12.00 (cost 12.00 for 8 SMS ...)``."""
        of = f" ({self.quote.describe()})" if self.quote is not None else ""
        if self.ok:
            return f"balance {self.balance} covers the estimate {self.estimate}{of}"
        return f"balance {self.balance} is {self.shortfall} short of the estimate {self.estimate}{of}"


# -- the quotes ----------------------------------------------------------------------------------------

def quote_lines(rt: Runtime, lines: Sequence[AnyLine], *, sender: str | None = None, options: SendOptions | None = None,
                max_wait_s: float = 0.0) -> Quote:
    """The provider's quote for ``lines`` sent as one request: one ``cost=1`` request holding a login slot.

    Five identical cost requests a minute: when the guard says wait, wait up to ``max_wait_s``, else
    raise :class:`QuoteLimit` ("... try again in 23 s"). ``options``: the campaign's ``SendOptions``
    (transliteration and ``maxsms`` change what is billed). Raises :class:`CostError` (one line) or
    ``ValueError`` (bad input)."""
    lines = list(lines)
    fp = fingerprint(rt.login, _cost_params(lines, sender, options))
    _wait_for(lambda: rt.guards.claim_cost_request(rt.login, fp), max_wait_s, QuoteLimit,
              "at most five identical quote requests a minute")
    with _login_slot(rt):
        try:
            report = _ask_cost(rt, lines, sender, options)
        except SmscError as exc:
            raise ProviderError(f"the provider refused the quote: {exc}", retry_after_s=exc.retry_after_s) from exc
    n = _recipients(lines)
    return Quote(report.cost, report.cnt, sampled=n, total=n)


def quote_campaign(rt: Runtime, batches: Iterable[Sequence[AnyLine]], *, sender: str | None = None,
                   options: SendOptions | None = None, sample_limit: int = SAMPLE_LIMIT, total: int | None = None,
                   max_wait_s: float = 0.0) -> Quote:
    """The quote of a campaign: the sum of one :func:`quote_lines` per request, ``batches`` built the
    way the enqueue batches the campaign (one list of lines per request; :func:`staged_batches` reads
    them from a campaign being enqueued). Past ``sample_limit`` recipients nothing more is asked: cost
    and SMS are extrapolated linearly from the first ``sample_limit`` (the batch that crosses the
    limit is quoted up to it) to ``total`` recipients — given, or counted over the remaining batches."""
    if sample_limit < 1:
        raise ValueError("sample_limit must be at least 1")
    cost, sms, sampled, seen = Decimal(0), 0, 0, 0
    for batch in batches:
        if sampled >= sample_limit and total is not None:
            break  # the rest need not even be read
        n = _recipients(batch)
        seen += n
        if sampled >= sample_limit or n == 0:
            continue
        take = batch if sampled + n <= sample_limit else _first(batch, sample_limit - sampled)
        q = quote_lines(rt, take, sender=sender, options=options, max_wait_s=max_wait_s)
        cost, sms, sampled = cost + q.cost, sms + q.sms, sampled + q.sampled
    return Quote(cost, sms, sampled=sampled, total=sampled).extrapolated_to(seen if total is None else total)


def staged_batches(rt: Runtime, cid: str) -> Iterator[list[AnyLine]]:
    """The requests of a campaign whose batches are staged (an enqueue before its commit, or a queued
    campaign's pending recipients): one list of lines per batch, as sending builds them — one line
    per (text, sender) of a personal batch, else one line with the campaign's text."""
    message, batches = rt.redis.hmget(rt.keys.campaign(cid), ["message", "batches"])
    message = _s(message or b"")
    # ``batches``: the count once committed, the high-water mark of the batches staged while planning.
    for n in range(int(batches or 0)):
        ref = batch_ref(cid, n)
        phones = rt.redis.hget(rt.keys.batch(ref), "phones")
        if not phones:
            continue
        listed = [p for p in _s(phones).split(",") if p]
        texts, senders = rt.ledger.texts(ref)
        grouped: dict[tuple[str, str | None], list[str]] = {}
        for p in listed:
            grouped.setdefault((texts.get(p, message), senders.get(p)), []).append(p)
        yield [(ps, text) if sender is None else (ps, text, sender) for (text, sender), ps in grouped.items()]


def affordable(rt: Runtime, cid: str, *, sender: str | None = None, options: SendOptions | None = None,
               total: int | None = None, sample_limit: int = SAMPLE_LIMIT, max_wait_s: float = 5.0) -> BalanceCheck:
    """Whether the account's balance covers a staged campaign (the enqueue's last word before its
    commit): :func:`quote_campaign` of :func:`staged_batches`, then :func:`check_balance`. The answer
    carries the quote (:attr:`BalanceCheck.quote`); refuse the commit when it is not ``ok``."""
    q = quote_campaign(rt, staged_batches(rt, cid), sender=sender, options=options, sample_limit=sample_limit,
                       total=total, max_wait_s=max_wait_s)
    check = check_balance(rt, q.cost, max_wait_s=max_wait_s)
    return BalanceCheck.against(check.balance, check.estimate, quote=q)


@dataclass(frozen=True)
class Affordability:
    """:func:`affordable`'s two answers asked before the campaign's size is known (:func:`affordability`):
    the quote of its first recipients and the balance; :meth:`check` is the verdict for its size."""

    sample: Quote
    balance: Decimal

    def check(self, total: int) -> BalanceCheck:
        """What :func:`affordable` answers for a campaign of ``total`` recipients."""
        q = self.sample.extrapolated_to(total)
        return BalanceCheck.against(self.balance, q.cost, quote=q)


def affordability(rt: Runtime, cid: str, *, sender: str | None = None, options: SendOptions | None = None,
                  sample_limit: int = SAMPLE_LIMIT, max_wait_s: float = 5.0) -> Affordability:
    """:func:`affordable`'s requests for a campaign still being enqueued, once its first ``sample_limit``
    recipients are staged (the rest may not be read yet): the same quote of the same recipients, and
    balance.php. An enqueue asks this while it reads on, and checks the answer against the total at
    the end (:meth:`Affordability.check`)."""
    q = quote_campaign(rt, staged_batches(rt, cid), sender=sender, options=options, sample_limit=sample_limit,
                       total=sample_limit, max_wait_s=max_wait_s)
    return Affordability(q, check_balance(rt, q.cost, max_wait_s=max_wait_s).balance)


def batch_quote(rt: Runtime, lines: Sequence[AnyLine], sender: str | None = None, options: SendOptions | None = None,
                *, slot_held: bool = False) -> int:
    """The budget path: what this batch's request will cost, in milli (rounded up, so the reservation
    covers what the send records). One ``cost=1`` request, claimed against the five identical cost
    requests a minute without waiting (:class:`QuoteLimit` carries the wait: give the batch back).

    ``slot_held=True``: the caller holds the batch's login slot and renewed it just before (its lease
    must cover this request); no second slot is taken. Otherwise a slot is taken and given back.
    Raises the client's ``SmscError`` unchanged (already applied to the account: do not apply it again),
    :class:`NoSlot` (only without ``slot_held``) or ``ValueError``."""
    lines = list(lines)
    fp = fingerprint(rt.login, _cost_params(lines, sender, options))
    wait_ms = rt.guards.claim_cost_request(rt.login, fp)
    if wait_ms:
        raise QuoteLimit(_limit_line("at most five identical quote requests a minute", wait_ms),
                         retry_after_s=wait_ms / 1000)
    if slot_held:
        report = _ask_cost(rt, lines, sender, options)
    else:
        with _login_slot(rt):
            report = _ask_cost(rt, lines, sender, options)
    return int((report.cost * _MILLI).to_integral_value(ROUND_CEILING))


def check_balance(rt: Runtime, estimate: Decimal, *, max_wait_s: float = 0.0) -> BalanceCheck:
    """The account's balance (balance.php, holding a login slot) against ``estimate``. Ten balance
    requests a minute: wait up to ``max_wait_s``, else :class:`BalanceLimit`. Raises :class:`CostError`."""
    _wait_for(lambda: rt.guards.claim_balance_request(rt.login), max_wait_s, BalanceLimit,
              "at most ten balance requests a minute")
    with _login_slot(rt):
        try:
            balance = _accounted(rt, rt.client.balance)
        except SmscError as exc:
            raise ProviderError(f"the provider refused the balance request: {exc}",
                                retry_after_s=exc.retry_after_s) from exc
    return BalanceCheck.against(balance, estimate)


# -- the plumbing ----------------------------------------------------------------------------------------

def _cost_params(lines: Sequence[AnyLine], sender: str | None, options: SendOptions | None) -> dict[str, str]:
    return cost_params(lines=lines, sender=sender, options=options)


def _ask_cost(rt: Runtime, lines: Sequence[AnyLine], sender: str | None, options: SendOptions | None) -> CostReport:
    return _accounted(rt, lambda: rt.client.cost(lines=lines, sender=sender, options=options))


T = TypeVar("T")


def _accounted(rt: Runtime, request: Callable[[], T]) -> T:
    """Run one request of the login and apply its answer to the account, as a send's is applied."""
    asked = time.monotonic()
    try:
        answer = request()
    except SmscError as exc:
        rt.guards.account_outcome(rt.login, _answer_of(exc), reason=str(exc)[:300])
        if isinstance(exc, SmscAuthError):
            # The login is stopped, as sending stops it: its campaigns are paused with the reason, so that
            # nobody (no quote, no balance check, no batch) tries the wrong password again before a resume.
            rt.campaigns.pause_account(rt.login, reason=f"account stopped: {exc}; fix the settings, then resume")
        if exc.code in _AUTHENTICATED_ERRORS:
            rt.mark_proven()  # the provider got past the login and password to refuse this
        raise
    rt.guards.account_outcome(rt.login, Answer.OK, latency_ms=int((time.monotonic() - asked) * 1000))
    rt.mark_proven()
    return answer


def _answer_of(exc: SmscError) -> Answer:
    if isinstance(exc, SmscAuthError):
        return Answer.AUTH
    if isinstance(exc, SmscAccountBlocked):
        return Answer.BLOCK
    if isinstance(exc, SmscUnknownOutcome):
        return Answer.UNKNOWN  # a timeout is not the provider's error: it lowers the cap, not the streak
    return Answer.ERROR


@contextmanager
def _login_slot(rt: Runtime) -> Iterator[str]:
    """One of the login's slots for one request, taken as sending takes it, given back at the end."""
    s = rt.settings
    token = uuid.uuid4().hex
    lease_ms = int(s.smsc_timeout * 1000) + _SLOT_MARGIN_MS
    deadline = time.monotonic() + SLOT_WAIT_S
    while True:
        res = rt.guards.try_slot(rt.login, token, lease_ms=lease_ms, cap=s.smsc_concurrency, probe=not rt.proven)
        if res is SlotResult.TAKEN:
            break
        if res is not SlotResult.BUSY:
            a = rt.guards.account_state(rt.login)
            why = f" ({a.reason})" if a.reason else ""
            raise NoSlot(f"account {rt.login} may send no request now: {a.state}{why}; see its status")
        left = deadline - time.monotonic()
        if left <= 0:
            raise NoSlot(f"every login slot of {rt.login} stayed busy for {SLOT_WAIT_S:g} s: try again",
                         retry_after_s=1.0)
        rt.guards.wait_for_slot(rt.login, min(left, _SLOT_POLL_S))
    try:
        yield token
    finally:
        rt.guards.release_slot(rt.login, token)


def _wait_for(claim: Callable[[], int], max_wait_s: float, error: type[CostError], rule: str) -> None:
    """Claim a request under a rate rule: wait for it up to ``max_wait_s``, else raise ``error``."""
    deadline = time.monotonic() + max(max_wait_s, 0.0)
    while True:
        wait_ms = claim()
        if not wait_ms:
            return
        if time.monotonic() + wait_ms / 1000 > deadline:
            raise error(_limit_line(rule, wait_ms), retry_after_s=wait_ms / 1000)
        time.sleep(wait_ms / 1000)


def _limit_line(rule: str, wait_ms: int) -> str:
    return f"{rule}: try again in {max(1, math.ceil(wait_ms / 1000))} s"


def _recipients(lines: Sequence[AnyLine]) -> int:
    return sum(len(line[0]) for line in lines)


def _first(lines: Sequence[AnyLine], n: int) -> list[AnyLine]:
    """The first ``n`` recipients of ``lines``, each line keeping its text (and sender)."""
    out: list[AnyLine] = []
    for line in lines:
        if n <= 0:
            break
        phones = list(line[0])[:n]
        out.append(cast(AnyLine, (phones, *line[1:])))
        n -= len(phones)
    return out
