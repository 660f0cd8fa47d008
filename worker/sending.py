"""One batch, start to finish: the plain function behind the ``smsc.send_batch`` task (no Celery).

The steps, each fenced by the execution's token (see :mod:`scheduler.ledger`)::

    begin ─► login slot (held by status.php requests too, renewed before each request)
          ─► settle (status.php, when a request may be out and the settle horizon has passed)
          ─► flood guard ─► request dedup ─► last slot check ─► mark_sending (intent) ─► POST send.php
          ─► record (ledger + counters)

Time is the Redis server's (invariant 9): the scripts read ``TIME`` themselves, and every wait this
module schedules is either relative (``due_in_ms``) or a server time a script returned.

Errors come classified from the client (:mod:`worker.smsc.errors`); each class has one small handler
here (:data:`_HANDLERS`), and every path that stops the account goes through :func:`_stop_account`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

import redis

from scheduler.durability import wait_durable
from scheduler.guards import Answer, SlotResult, TakeVerdict
from scheduler.keys import split_ref
from scheduler.ledger import Begin, BeginVerdict, LaunchVerdict, Outcome, Sending, Settle, settle_margin_ms
from worker.runtime import CampaignInfo, Runtime
from worker.smsc.client import Prepared
from worker.smsc.encoding import count_parts, count_segments
from worker.smsc.errors import (
    SmscAccountBlocked,
    SmscAuthError,
    SmscBatchRejected,
    SmscConnectError,
    SmscError,
    SmscHttpError,
    SmscInsufficientFunds,
    SmscNumbersRejected,
    SmscTooManyRequests,
    SmscUnknownOutcome,
    describe,
)
from worker.smsc.requests import AnyLine, SendOptions, fingerprint, send_params

__all__ = ["BatchResult", "BatchVerdict", "process_batch", "request_id"]

log = logging.getLogger(__name__)

#: Status requests ask about this many (phone, id) pairs at once.
_STATUS_CHUNK = 200
#: The provider's "this number is invalid" (7 bad format, 8 cannot be delivered): ``--auto-stop``'s errors.
_INVALID_NUMBER = frozenset({7, 8})
#: Provider errors that come only after the login and password were accepted.
_AUTHENTICATED_ERRORS = frozenset({1, 3, 5, 6, 7, 8})
#: How long an execution waits for a free login slot before it gives the batch back.
_SLOT_WAIT_S = 10.0
#: Longest wait for a wake-up before the slot is tried again anyway (an expired lease wakes nobody).
_SLOT_POLL_S = 0.1
#: How long a settling execution waits for one of the login's four status slots.
_STATUS_SLOT_WAIT_S = 5.0
#: A slot's lease beyond the request's hard deadline (SMSC_TIMEOUT): the slot is renewed before every
#: request, and a request never outlives its deadline, so the slot outlives the request.
_SLOT_MARGIN_MS = 5_000
#: The default namespace keeps the plain ``cid-n`` request ids; others are tagged (see request_id).
_DEFAULT_NAMESPACE = "smsc"


class BatchVerdict(StrEnum):
    """How one execution of ``smsc.send_batch`` ended (shown in Flower as the task's result)."""

    SENT = "sent"  # the request was answered; every admitted recipient is sent or failed
    SETTLED = "settled"  # status.php settled every recipient (or the rest waits)
    HELD = "held"  # every recipient held back by the flood guard until its chain allows
    DEDUPLICATED = "deduplicated"  # the identical request left less than a minute ago
    ERROR = "error"  # the provider or the network refused; the batch's outcome says what follows
    QUARANTINED = "quarantined"  # a poison batch ended: its pending recipients failed with the reason
    NO_SLOT = "no-slot"  # no login slot came free in time: given back
    ACCOUNT_CLOSED = "account-closed"  # the account is stopped, backing off or quiet: given back
    SETTLE_LATER = "settle-later"  # status.php could not answer (yet): given back, still to be settled
    LOST = "lost"  # the lease was lost before sending: nothing sent
    EMPTY = "empty"  # nothing pending in the batch
    RECOVERING = "recovering"  # another process is marking batches after a Redis restart
    MISSING = "missing"  # no such campaign (a stale message, or another deployment's)
    # begin's answers that end the execution at once
    DONE = "done"
    BUSY = "busy"
    CANCELLED = "cancelled"
    PARKED = "parked"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class BatchResult:
    ref: str
    verdict: BatchVerdict
    sent: int = 0
    failed: int = 0
    held: int = 0
    error: str = ""  # the error class when verdict is ERROR
    #: Recipients given back unsent by a guard (the slot, the dedup, the account's state, status limits).
    deferred: int = 0


@functools.lru_cache(maxsize=64)
def _options(raw: str) -> SendOptions | None:
    """A campaign's provider options (None: the provider's defaults, nothing added to the request)."""
    options = SendOptions.from_json(raw)
    return None if options == SendOptions() else options


def _parts_of(text: str, raw_options: str) -> int:
    """Parts of a personal text as the provider bills it (after the campaign's translit and maxsms).

    Without options, ``count_segments``'s own cache answers (the request's check counted the text just
    before): a cache of (text, options) pairs would only miss, a personal text being seen once."""
    o = _options(raw_options)
    if o is None:
        return count_segments(text).parts
    return _parts_with(text, raw_options)


@functools.lru_cache(maxsize=4096)  # transliterating or shortening links costs more than the lookup
def _parts_with(text: str, raw_options: str) -> int:
    o = _options(raw_options)
    assert o is not None
    return count_parts(text, translit=o.translit, tinyurl=o.tinyurl, maxsms=o.maxsms)


def request_id(ref: str, *, namespace: str = _DEFAULT_NAMESPACE) -> str:
    """The batch's deterministic provider id: the same for every attempt, so that status.php can tell
    which of its recipients the provider already has.

    ``cid-n`` in the default namespace; ``<tag>.cid-n`` in any other, the tag being six hex digits of the
    namespace's SHA-256 — two deployments sharing one login with different namespaces (and perhaps the
    same campaign ids) never ask status.php about each other's messages. At most 6 + 1 + 24 + 1 + 7 =
    39 characters of the provider's ``A-Za-z0-9.-_`` (its limit is 40)."""
    cid, n = split_ref(ref)
    if namespace == _DEFAULT_NAMESPACE:
        return f"{cid}-{n}"
    tag = hashlib.sha256(namespace.encode()).hexdigest()[:6]
    return f"{tag}.{cid}-{n}"


class _Slot:
    """The login slot of one execution: renewed before every request, released once — as soon as the
    send's answer is in (so the next request can leave while this one is parsed and recorded), else
    when the execution ends."""

    def __init__(self, rt: Runtime, token: str) -> None:
        self.rt, self.token, self.held = rt, token, True
        self.lease_ms = int(rt.settings.smsc_timeout * 1000) + _SLOT_MARGIN_MS

    def renew(self) -> bool:
        """False when the slot may carry no new request: its lease ran out, or the account was stopped
        (error 2), blocked or quieted since it was taken."""
        return self.held and self.rt.guards.renew_slot(self.rt.login, self.token, lease_ms=self.lease_ms)

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                self.rt.guards.release_slot(self.rt.login, self.token)
            except redis.RedisError as exc:  # the answer must still be recorded; the slot's lease ends it
                log.warning("login slot not given back (%s): it frees itself when its lease ends", exc)


@dataclass
class _Execution:
    """One execution of one batch: what every step needs."""

    rt: Runtime
    ref: str
    token: str
    info: CampaignInfo
    req_id: str
    slot: _Slot
    started: float
    out: Outcome = field(default_factory=Outcome)
    #: A personal batch's own texts and senders by phone (empty for a campaign of one text).
    texts: dict[str, str] = field(default_factory=dict)
    senders: dict[str, str] = field(default_factory=dict)
    #: This batch holds a reservation of its campaign's budget (released once its outcome is recorded).
    reserved: bool = False
    #: Recipients status.php settled as sent and as failed (counted once the outcome is recorded).
    settled: tuple[int, int] = (0, 0)
    #: This execution's request got no answer the provider stands by (a timeout, a proxy's error page).
    unknown: bool = False
    unknown_counted: bool = False
    #: A good answer's latency (ms), applied to the account with the record, in its round trip.
    answered_ok_ms: int | None = None

    @property
    def options(self) -> SendOptions | None:
        return _options(self.info.options) if self.info.options else None

    def lines(self, phones: Sequence[str]) -> list[AnyLine]:
        """The request's messages: one line per (text, sender), its phones in batch order."""
        if not self.info.personal:
            return [(list(phones), self.info.message)]
        grouped: dict[tuple[str, str | None], list[str]] = {}
        for p in phones:
            grouped.setdefault((self.texts.get(p, self.info.message), self.senders.get(p)), []).append(p)
        return [(ps, text) if sender is None else (ps, text, sender) for (text, sender), ps in grouped.items()]

    def parts(self, phone: str) -> int:
        """The SMS parts the provider bills for this recipient's text."""
        if not self.info.personal:
            return self.info.parts
        return _parts_of(self.texts.get(phone, self.info.message), self.info.options)

    @property
    def login(self) -> str:
        return self.rt.login

    def record(self) -> None:
        ok_ms, self.answered_ok_ms = self.answered_ok_ms, None
        if _record(self.rt, self.ref, self.token, self.out, answered_ok_ms=ok_ms):
            _count_outcome(self)
        # An unknown outcome keeps its reservation until status.php settles what the provider billed.
        if self.reserved and self.out.settle is not Settle.SET:
            # The outcome (and the cost the provider billed) is in the ledger: the reservation goes.
            self.reserved = False
            try:
                self.rt.budget.release(split_ref(self.ref)[0], self.ref)
            except redis.RedisError as exc:
                log.warning("batch %s: budget reservation not released (%s); the next run replaces it", self.ref,
                            exc)


def process_batch(rt: Runtime, ref: str) -> BatchResult:
    """Send one batch (or settle it, or give it back): the whole of ``smsc.send_batch``.

    An exception outside the classified errors (a bug, bad stored input) leaves the batch unrecorded; it
    is noted on the batch first, so that after ``SMSC_MAX_ATTEMPTS`` such executions the ledger
    quarantines it with that reason instead of sweeping it back for ever."""
    try:
        try:
            rt = rt.for_campaign(split_ref(ref)[0])  # the campaign's account: its login, client and cap
        except LookupError:
            return BatchResult(ref, BatchVerdict.MISSING)
        result = _process(rt, ref)
        _count_deferral(rt, result)
        return result
    except Exception as exc:
        try:
            rt.ledger.note_error(ref, reason=f"{type(exc).__name__}: {exc}")
        except redis.RedisError:
            pass  # the sweep brings the batch back either way
        raise


def _process(rt: Runtime, ref: str) -> BatchResult:
    started = time.monotonic()
    s = rt.settings
    if not _recovered(rt):
        return BatchResult(ref, BatchVerdict.RECOVERING)
    cid, _ = split_ref(ref)
    try:
        info = rt.campaign_info(cid)
    except LookupError:
        return BatchResult(ref, BatchVerdict.MISSING)
    token = uuid.uuid4().hex
    x = _Execution(rt, ref, token, info, request_id(ref, namespace=s.smsc_namespace), _Slot(rt, token), started)
    b = _begin(x)
    if not b.owned:
        if b.verdict is BeginVerdict.QUARANTINE:
            log.error("batch %s quarantined: %d recipients failed (%s)", ref, b.quarantined, b.reason)
            return BatchResult(ref, BatchVerdict.QUARANTINED, failed=b.quarantined)
        log.debug("batch %s: %s", ref, b.verdict)
        return BatchResult(ref, BatchVerdict(b.verdict.value))
    phones = list(b.phones)
    if not phones:
        x.record()
        return BatchResult(ref, BatchVerdict.EMPTY)
    if not b.settle and not info.budgeted:
        return _take_and_send(x, phones)
    # Every request of the login holds a slot, status.php included: the provider counts them all, and
    # an account not yet proven (cap 1) or stopped must not send even a status request more.
    slot = _acquire_slot(rt, token, x.slot.lease_ms)
    if slot is not SlotResult.TAKEN:
        x.slot.held = False
        x.out.remaining, x.out.due_in_ms = phones, 200
        x.record()
        return BatchResult(ref, BatchVerdict.NO_SLOT if slot is SlotResult.BUSY else BatchVerdict.ACCOUNT_CLOSED,
                           deferred=len(phones))
    try:
        if b.settle:
            return _settle_then_send(x, b, phones)
        return _send(x, phones, was_settled=False)
    finally:
        x.slot.release()


def _begin(x: _Execution) -> Begin:
    """The execution's begin (:meth:`scheduler.ledger.Ledger.begin`) and a personal batch's texts, in one
    round trip.

    The login slot is not asked for in the same round trip, though it would save one: measured, a slot
    taken beside the begin left the provider's slots less used (0.83-0.91 against 0.97, batches of 100),
    and the batches that found the slots full waited longer."""
    rt, s = x.rt, x.rt.settings
    if not x.info.personal:
        return _begin_alone(x)
    pipe = rt.redis.pipeline(transaction=False)
    rt.ledger.begin_on(pipe, x.ref, token=x.token, exec_lease_ms=int(s.lease_s * 1000), account=rt.login)
    rt.ledger.texts_on(pipe, x.ref)
    begun, texts = rt.ledger.scripts.execute(pipe)
    if isinstance(begun, redis.exceptions.NoScriptError):
        return _begin_alone(x)  # it did not run (the scripts are loaded now)
    for reply in (begun, texts):
        if isinstance(reply, Exception):
            raise reply
    x.texts, x.senders = rt.ledger.texts_of(texts)
    return rt.ledger.begun(begun)


def _begin_alone(x: _Execution) -> Begin:
    b = x.rt.ledger.begin(x.ref, token=x.token, exec_lease_ms=int(x.rt.settings.lease_s * 1000),
                          account=x.rt.login)
    if x.info.personal:
        x.texts, x.senders = x.rt.ledger.texts(x.ref)
    return b


def _settle_then_send(x: _Execution, b: Begin, phones: list[str]) -> BatchResult:
    rest = _settle(x, phones)
    if rest is None:  # status.php could not answer: the batch went back, still to be settled
        return BatchResult(x.ref, BatchVerdict.SETTLE_LATER, deferred=len(phones))
    x.out.settle = Settle.CLEAR
    if x.info.budgeted:
        x.reserved = True  # what the unknown request held is released once the settled cost is recorded
    if b.verdict is BeginVerdict.QUARANTINE:
        # A poison batch whose request may have been out: what the provider took is now counted sent;
        # the rest fails with the quarantine's reason.
        x.out.remaining = rest
        x.rt.ledger.quarantine(x.ref, token=x.token, reason=b.reason, outcome=x.out)
        log.error("batch %s quarantined after settling: %d failed (%s)", x.ref, len(rest), b.reason)
        return BatchResult(x.ref, BatchVerdict.QUARANTINED, sent=x.out.sent, failed=len(rest))
    if rest and _stopped(x.rt, split_ref(x.ref)[0]):
        x.out.remaining, x.out.due_in_ms = rest, 0
    if not rest or x.out.remaining:
        x.record()
        _log_done(x, "settled", 0)
        return BatchResult(x.ref, BatchVerdict.SETTLED, sent=x.out.sent, failed=x.out.failed)
    return _send(x, rest, was_settled=True)


def _take_and_send(x: _Execution, phones: list[str]) -> BatchResult:
    """The common batch (nothing to settle, no budget): its request built for every recipient before the
    slot is waited for, then the slot, the stop list, the flood guard, the dedup and the intent in one
    round trip (:meth:`scheduler.guards.Guards.take`) — from a free slot to the POST nothing else is
    built or asked. A recipient stop-listed or held meanwhile: the request is built again for the rest."""
    rt, s = x.rt, x.rt.settings
    lines = x.lines(phones)
    params = send_params(lines=lines, request_id=x.req_id, sender=x.info.sender, options=x.options)
    fp = fingerprint(x.login, params)
    prepared = rt.client.prepare(params)
    margin = settle_margin_ms(deadline_s=s.smsc_timeout, horizon_s=s.smsc_settle_horizon)
    fields = [rt.stoplist.key_of(p) for p in phones]
    # Well inside the task's time limit (the lease), as _acquire_slot waits.
    deadline = time.monotonic() + min(_SLOT_WAIT_S, s.lease_s / 4)
    while True:
        took = rt.guards.take(rt.login, x.token, lease_ms=x.slot.lease_ms, cap=s.smsc_concurrency,
                              probe=not rt.proven, ref=x.ref, fingerprint=fp, phones=phones,
                              stop_key=rt.stoplist.key, stop_fields=fields, exec_lease_ms=int(s.lease_s * 1000),
                              settle_margin_ms=margin)
        left = deadline - time.monotonic()
        if took.verdict is not TakeVerdict.BUSY or left <= 0:
            break
        rt.guards.wait_for_slot(rt.login, min(left, _SLOT_POLL_S))
    if took.verdict in (TakeVerdict.BUSY, TakeVerdict.CLOSED):
        x.slot.held = False
        x.out.remaining, x.out.due_in_ms = phones, 200
        x.record()
        return BatchResult(x.ref, BatchVerdict.NO_SLOT if took.verdict is TakeVerdict.BUSY
                           else BatchVerdict.ACCOUNT_CLOSED, deferred=len(phones))
    try:
        if took.verdict is TakeVerdict.DEDUPLICATED:
            return _deduplicated(x, phones, took.wait_ms, False)
        if took.verdict is TakeVerdict.LOST:
            return _lost(x)
        if took.verdict is TakeVerdict.SCREENED:
            return _send_screened(x, phones, took.stopped, took.waits, was_settled=False)
        sending = Sending(True, took.sent_ms, took.settle_after_ms)
        return _post(x, lines, params, fp, phones, [], 0, sending, was_settled=False, prepared=prepared)
    finally:
        x.slot.release()


def _send(x: _Execution, phones: list[str], *, was_settled: bool) -> BatchResult:
    """Screen ``phones`` (the stop list, the flood guard), then send the admitted ones: a batch settled
    first, or one with a budget (the slot is already held)."""
    stopped, waits = _screen(x, phones)
    return _send_screened(x, phones, stopped, waits, was_settled=was_settled)


def _send_screened(x: _Execution, phones: list[str], stopped: Sequence[bool], waits: Sequence[int], *,
                   was_settled: bool) -> BatchResult:
    rt, s, out, info = x.rt, x.rt.settings, x.out, x.info
    phones, waits = _drop_stopped(x, phones, stopped, waits)
    if not phones:
        x.record()
        _log_done(x, "stop-listed", 0)
        return BatchResult(x.ref, BatchVerdict.EMPTY)
    admitted = [p for p, w in zip(phones, waits, strict=True) if w == 0]
    held = [p for p, w in zip(phones, waits, strict=True) if w != 0]
    hold_until = min((w for w in waits if w), default=0)
    if not admitted:
        out.remaining, out.due_at_ms = phones, hold_until
        x.record()
        log.info("batch %s: all %d recipients held by the flood guard until %d", x.ref, len(phones), hold_until)
        return BatchResult(x.ref, BatchVerdict.HELD, held=len(held))
    lines = x.lines(admitted)
    params = send_params(lines=lines, request_id=x.req_id, sender=info.sender, options=x.options)
    fp = fingerprint(x.login, params)
    margin = settle_margin_ms(deadline_s=s.smsc_timeout, horizon_s=s.smsc_settle_horizon)
    if info.budgeted:
        # A budget's reservation sits between the dedup and the last checks: each is its own round trip.
        wait_ms = rt.guards.claim_send_request(x.login, fp)
        if wait_ms:
            return _deduplicated(x, phones, wait_ms, was_settled)
        verdict = _reserve_budget(x, lines, fp, phones)
        if verdict is not None:
            return verdict
        # The last check before the POST: after an error 2 (or a block, or a restart's quiet) no new
        # request leaves, whenever its slot was taken; and the slot's lease now covers the whole request.
        if not x.slot.renew():
            rt.guards.forget_send_request(x.login, fp)
            return _slot_closed(x, phones)
        sending = rt.ledger.mark_sending(x.ref, token=x.token, lease_ms=int(s.lease_s * 1000),
                                         settle_margin_ms=margin)
        if not sending.ok:
            rt.guards.forget_send_request(x.login, fp)
            return _lost(x)
    else:
        # The same three steps (the dedup, the slot's last check, the intent) in one script.
        launch = rt.ledger.launch(x.ref, token=x.token, login=x.login, fingerprint=fp,
                                  slot_lease_ms=x.slot.lease_ms, lease_ms=int(s.lease_s * 1000),
                                  settle_margin_ms=margin)
        if launch.verdict is LaunchVerdict.DEDUPLICATED:
            return _deduplicated(x, phones, launch.wait_ms, was_settled)
        if launch.verdict is LaunchVerdict.SLOT_CLOSED:
            return _slot_closed(x, phones)
        if launch.sending is None:
            return _lost(x)
        sending = launch.sending
    return _post(x, lines, params, fp, admitted, held, hold_until, sending, was_settled=was_settled)


def _post(x: _Execution, lines: list[AnyLine], params: dict[str, str], fp: str, admitted: list[str],
          held: list[str], hold_until: int, sending: Sending, *, was_settled: bool,
          prepared: Prepared | None = None) -> BatchResult:
    """The request, once its intent is written; its answer, recorded."""
    rt, out, info = x.rt, x.out, x.info
    out.remaining, out.due_at_ms = held, hold_until
    asked = time.monotonic()
    try:
        # The slot goes back as soon as the answer is in (or the request is over), before it is parsed —
        # unless these credentials are not proven yet: then the slot is the account's one probe, held
        # until the answer is recorded, so that after an error 2 the account is stopped before any other
        # process may try (a wrong password is refused once, not once per slot).
        report = rt.client.send(lines=lines, request_id=x.req_id, sender=info.sender, options=x.options,
                                on_answer=x.slot.release if rt.proven else None, params=params,
                                prepared=prepared)
    except SmscError as exc:
        ctx = _Failure(x, exc, admitted, held, hold_until, fp, sending.settle_after_ms, was_settled)
        _handler_for(exc)(ctx)
        if exc.code in _AUTHENTICATED_ERRORS:
            rt.mark_proven()  # the provider got past the login and password to refuse this
        x.record()
        log.warning("batch %s: %d recipients: %s (%s)", x.ref, len(admitted), type(exc).__name__, exc)
        return BatchResult(x.ref, BatchVerdict.ERROR, sent=out.sent, failed=out.failed, error=type(exc).__name__)
    # The good answer goes to the account with the record, in one round trip; until then the account's
    # state is the one before this answer (its error streak ends a moment later).
    x.answered_ok_ms = int((time.monotonic() - asked) * 1000)
    rt.mark_proven()
    matched = report.match(admitted)
    for phone in admitted:
        pr = matched.get(phone)
        if pr is None or pr.accepted:
            out.sent += 1
            out.add_row(phone, "sent", msg_id=report.id, parts=x.parts(phone), cost=str(pr.cost) if pr else "")
        else:
            out.failed += 1
            out.add_row(phone, "failed", msg_id=report.id, code=pr.error, reason=describe(pr.error))
            if pr.error in _INVALID_NUMBER:
                _auto_stop(x, [phone], pr.error)
    out.sms += report.cnt
    if report.cost is not None:
        out.cost_milli += int(report.cost * 1000)
    x.record()
    _log_done(x, "sent", len(held))
    return BatchResult(x.ref, BatchVerdict.SENT, sent=out.sent, failed=out.failed, held=len(held))


def _deduplicated(x: _Execution, phones: list[str], wait_ms: int, was_settled: bool) -> BatchResult:
    x.out.remaining, x.out.due_in_ms = phones, wait_ms
    if was_settled:
        # The identical request is the one whose outcome was unknown: should the provider take it late,
        # the next attempt must find that out before sending again.
        x.out.settle = Settle.SET
    x.record()
    log.info("batch %s: identical request sent less than 60 s ago; deferred %d ms", x.ref, wait_ms)
    return BatchResult(x.ref, BatchVerdict.DEDUPLICATED, deferred=len(phones))


def _slot_closed(x: _Execution, phones: list[str]) -> BatchResult:
    """The slot may carry no new request (an error 2, a block, a restart's quiet, or its lease ran out)."""
    x.out.remaining, x.out.due_in_ms = phones, 1_000
    x.record()
    return BatchResult(x.ref, BatchVerdict.ACCOUNT_CLOSED, deferred=len(phones))


def _lost(x: _Execution) -> BatchResult:
    log.warning("batch %s: lease lost before sending; nothing sent", x.ref)
    return BatchResult(x.ref, BatchVerdict.LOST)


# -- what an error means: one handler per class ----------------------------------------------------

@dataclass
class _Failure:
    x: _Execution
    exc: SmscError
    admitted: list[str]
    held: list[str]
    hold_until: int
    fp: str
    settle_after_ms: int
    was_settled: bool

    @property
    def reason(self) -> str:
        e = self.exc
        return f"error {e.code}: {e.reason}" if e.code is not None else e.reason

    def retry_all(self, *, due_in_ms: int | None = None, due_at_ms: int = 0, settle: Settle = Settle.KEEP) -> None:
        out = self.x.out
        out.remaining, out.due_in_ms, out.due_at_ms = self.admitted + self.held, due_in_ms, due_at_ms
        out.settle, out.reason = settle, self.reason

    def fail_admitted(self) -> None:
        out, e = self.x.out, self.exc
        out.reason = self.reason
        for phone in self.admitted:
            out.failed += 1
            out.add_row(phone, "failed", code=e.code if e.code is not None else "", reason=e.reason)

    def account(self, answer: Answer) -> int:
        """Apply the answer to the login; returns when its back-off ends (server ms, 0 for none)."""
        return self.x.rt.guards.account_outcome(self.x.login, answer, reason=self.reason).backoff_until_ms


def _on_unknown_outcome(f: _Failure) -> None:
    # The provider may have the messages, and may take them later still: settle through status.php once
    # the request is surely over (deadline + horizon). A timeout is not the provider's error answer: it
    # slows the login down (adaptive cap), never counts toward the error streak.
    f.account(Answer.UNKNOWN)
    f.retry_all(due_at_ms=f.settle_after_ms, settle=Settle.SET)
    f.x.unknown = True


def _on_connect_error(f: _Failure) -> None:
    # The request never left: it may go again, identical, at once — after the account's back-off, if
    # the provider keeps being unreachable.
    f.x.rt.guards.forget_send_request(f.x.login, f.fp)
    f.retry_all(due_in_ms=1_000, due_at_ms=f.account(Answer.ERROR))


def _on_http_error(f: _Failure) -> None:
    # A front end or a proxy answered, not the provider: it may have passed the request on (a 502 after
    # the provider took it) or the provider may take it late. Settle like an unknown outcome; count it
    # toward the streak, so that a broken path backs the account off.
    f.retry_all(due_at_ms=max(f.settle_after_ms, f.account(Answer.ERROR)), settle=Settle.SET)
    f.x.unknown = True


def _on_too_many_requests(f: _Failure) -> None:
    retry_ms = int((f.exc.retry_after_s or 60) * 1000)
    if f.was_settled:
        # Error 9 on a retry after an unknown outcome: the first request was probably taken.
        f.retry_all(due_in_ms=retry_ms, settle=Settle.SET)
        return
    f.retry_all(due_in_ms=retry_ms, due_at_ms=f.account(Answer.ERROR))


def _on_account_blocked(f: _Failure) -> None:
    f.retry_all(due_in_ms=1_000, due_at_ms=f.account(Answer.BLOCK))


def _on_rejected(f: _Failure) -> None:
    # Errors 1, 5, 6 (the batch) and 7, 8 (every number of it): permanent. Still an error answer, which
    # the provider counts toward its 100 in a row.
    f.account(Answer.ERROR)
    f.fail_admitted()
    if f.exc.code in _INVALID_NUMBER:
        _auto_stop(f.x, f.admitted, f.exc.code)


def _on_insufficient_funds(f: _Failure) -> None:
    f.account(Answer.ERROR)  # counted by the provider too
    f.retry_all(due_in_ms=0)
    rt = f.x.rt
    paused = rt.campaigns.pause_account(f.x.info.account, reason=f"insufficient funds ({f.reason})")
    log.error("account %s: insufficient funds; paused campaigns %s", f.x.info.account, ",".join(paused))


def _on_auth_error(f: _Failure) -> None:
    f.retry_all(due_in_ms=0)
    _stop_account(f.x, f.reason)


_HANDLERS: dict[type[SmscError], Callable[[_Failure], None]] = {
    SmscUnknownOutcome: _on_unknown_outcome,
    SmscConnectError: _on_connect_error,
    SmscHttpError: _on_http_error,
    SmscTooManyRequests: _on_too_many_requests,
    SmscAccountBlocked: _on_account_blocked,
    SmscBatchRejected: _on_rejected,
    SmscNumbersRejected: _on_rejected,
    SmscInsufficientFunds: _on_insufficient_funds,
    SmscAuthError: _on_auth_error,
}


def _handler_for(exc: SmscError) -> Callable[[_Failure], None]:
    for cls in type(exc).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return _on_unknown_outcome  # a new class nobody handles yet: the safe reading (settle, never resend)


def _stop_account(x: _Execution, reason: str) -> None:
    """Error 2: no request of this login leaves until an operator resumes. The stop and the paused
    campaigns are made durable before anything else happens (a Redis crash must not forget them)."""
    rt = x.rt
    rt.guards.account_outcome(x.login, Answer.AUTH, reason=reason)
    paused = rt.campaigns.pause_account(x.info.account,
                                        reason=f"account stopped: {reason}; fix the settings, then resume")
    durable = wait_durable(rt.redis, marker_key=rt.keys.meta)
    log.error("account %s: %s; sending stopped, campaigns %s paused%s", x.login, reason, ",".join(paused),
              "" if durable else f" ({durable})")


# -- the budget --------------------------------------------------------------------------------------

def _reserve_budget(x: _Execution, lines: list[AnyLine], fp: str, phones: list[str]) -> BatchResult | None:
    """A campaign with a max-cost: this request is quoted (``cost=1``, in this batch's slot) and its
    price reserved against the budget before it leaves; a batch that would pass the budget pauses the
    campaign (reason ``budget``) and goes back unsent. None: reserved, send it."""
    from worker.costs import QuoteLimit, batch_quote

    rt, out = x.rt, x.out
    cid = split_ref(x.ref)[0]
    try:
        if not x.slot.renew():
            raise _NoSlot
        milli = batch_quote(rt, lines, x.info.sender, x.options, slot_held=True)
    except (_NoSlot, QuoteLimit, SmscError) as exc:
        rt.guards.forget_send_request(x.login, fp)  # nothing was sent: the identical send may leave later
        wait = getattr(exc, "retry_after_s", None)
        out.remaining, out.due_in_ms = phones, int((wait or 5) * 1000)
        out.reason = f"budget: the batch could not be quoted ({exc})"[:300] if not isinstance(exc, _NoSlot) else ""
        if isinstance(exc, SmscAuthError):
            _stop_account(x, str(exc))
        x.record()
        return BatchResult(x.ref, BatchVerdict.ERROR, error=type(exc).__name__)
    res = rt.budget.reserve(cid, x.ref, milli)
    if not res.ok:
        rt.guards.forget_send_request(x.login, fp)
        out.remaining, out.due_in_ms = phones, 0
        x.record()
        log.warning("campaign %s: paused by its budget before batch %s (spent %s + reserved %s + %s > %s)", cid,
                    x.ref, res.spent_milli / 1000, res.reserved_milli / 1000, milli / 1000,
                    (res.max_milli or 0) / 1000)
        return BatchResult(x.ref, BatchVerdict.PARKED)
    x.reserved = True
    return None


class _NoSlot(Exception):
    """The batch's slot ran out (or the account closed) before its quote."""


# -- the stop list ---------------------------------------------------------------------------------

def _screen(x: _Execution, phones: list[str]) -> tuple[list[bool], list[int]]:
    """The stop list and the flood guard, asked in one round trip: per recipient, whether it is
    stop-listed, and 0 (admitted and counted by the flood guard) or the time it may be sent from.

    The flood guard is asked about the stop-listed ones too, in the same round trip: it counts a
    message that does not leave, which only ever holds that number back sooner, never later."""
    if not phones:
        return [], []
    rt = x.rt
    pipe = rt.redis.pipeline(transaction=False)
    n = rt.stoplist.contains_on(pipe, phones)
    rt.guards.admit_phones_on(pipe, x.login, phones)
    replies = rt.ledger.scripts.execute(pipe)
    for reply in replies[:n]:
        if isinstance(reply, Exception):
            raise reply
    stopped = rt.stoplist.contained(replies[:n])
    flood = replies[n]
    if isinstance(flood, redis.exceptions.NoScriptError):  # it did not run; the scripts are loaded now
        return stopped, rt.guards.admit_phones(x.login, phones)
    if isinstance(flood, Exception):
        raise flood
    return stopped, rt.guards.admitted(flood)


def _drop_stopped(x: _Execution, phones: list[str], stopped: Sequence[bool],
                  waits: Sequence[int]) -> tuple[list[str], list[int]]:
    """Recipients whose number went on the stop list after the intake end ``cancelled`` here, unsent
    (only before a request: a recipient that may be out is settled first, then this runs); the others,
    with their flood guard's answers."""
    if not any(stopped):
        return phones, list(waits)
    keep: list[str] = []
    kept_waits: list[int] = []
    for phone, stop, wait in zip(phones, stopped, waits, strict=True):
        if stop:
            x.out.cancelled += 1
            x.out.add_row(phone, "cancelled", reason="on the stop list (added after the intake)")
        else:
            keep.append(phone)
            kept_waits.append(wait)
    log.info("batch %s: %d recipients on the stop list, cancelled", x.ref, len(phones) - len(keep))
    return keep, kept_waits


def _auto_stop(x: _Execution, phones: Sequence[str], code: int | None) -> None:
    """``--auto-stop``: a number the provider calls invalid goes on the stop list."""
    if not x.info.auto_stop or not phones:
        return
    what = f"error {code}: {describe(code)}" if code is not None else "an invalid number"
    reason = f"{what} (campaign {split_ref(x.ref)[0]})"
    try:
        x.rt.stoplist.add(phones, reason=reason[:200], source="auto")
    except (redis.RedisError, ValueError) as exc:  # the outcome is recorded either way
        log.warning("batch %s: could not stop-list %d numbers (%s)", x.ref, len(phones), exc)


# -- settling an unknown outcome -----------------------------------------------------------------

def _settle(x: _Execution, phones: list[str]) -> list[str] | None:
    """Ask the provider which recipients of this batch it already has; record those (sent, or failed
    with the provider's status) and return the others. ``None`` when status.php could not answer: the
    batch went back, still to be settled."""
    rt = x.rt
    taken_sent = taken_failed = 0
    rest: list[str] = []
    for i in range(0, len(phones), _STATUS_CHUNK):
        chunk = phones[i:i + _STATUS_CHUNK]
        pairs = [(p, x.req_id) for p in chunk]
        wait_ms = _status_gate(x, pairs)
        if wait_ms is not None:
            rt.ledger.release(x.ref, token=x.token, phones=phones, due_in_ms=wait_ms,
                              reason="settling: status.php limits")
            log.info("batch %s: status.php at its limits; settling in %d ms", x.ref, wait_ms)
            return None
        try:
            reports = rt.client.status(pairs)
        except SmscError as exc:
            due_at, due_in = _after_status_error(x, exc)
            rt.ledger.release(x.ref, token=x.token, phones=phones, due_at_ms=due_at, due_in_ms=due_in,
                              reason=f"settling: {exc}")
            log.warning("batch %s: status.php failed while settling (%s)", x.ref, exc)
            return None
        finally:
            rt.guards.release_status_slot(x.login, x.token)
        rt.guards.account_outcome(x.login, Answer.OK)
        rt.mark_proven()
        for rep in reports:
            if rep.outcome == "not-found":
                rest.append(rep.phone)
            elif rep.outcome == "failed":
                taken_failed += 1
                x.out.failed += 1
                x.out.add_row(rep.phone, "failed", msg_id=x.req_id, code=rep.status,
                              reason=f"{rep.reason} (settled via status.php)")
            else:
                taken_sent += 1
                parts = rep.parts or x.parts(rep.phone)
                x.out.sent += 1
                x.out.sms += parts
                if rep.cost is not None:
                    x.out.cost_milli += int(rep.cost * 1000)
                x.out.add_row(rep.phone, "sent", msg_id=x.req_id, parts=parts,
                              cost=str(rep.cost) if rep.cost is not None else "", reason="settled via status.php")
    log.info("batch %s: settled: %d already sent, %d failed at the provider, %d to send", x.ref, taken_sent,
             taken_failed, len(rest))
    x.settled = (taken_sent, taken_failed)
    return rest


def _status_gate(x: _Execution, pairs: Sequence[tuple[str, str]]) -> int | None:
    """Hold what one status.php request needs: the login slot (renewed), one of the login's four status
    slots, and the status-request limits (five a minute per message, the mass-request rule). ``None``
    when the request may leave; else ms to wait before settling is tried again."""
    rt = x.rt
    if not x.slot.renew():
        return 1_000
    deadline = time.monotonic() + _STATUS_SLOT_WAIT_S
    while True:
        res = rt.guards.try_status_slot(x.login, x.token, lease_ms=x.slot.lease_ms)
        if res is SlotResult.TAKEN:
            break
        if res is not SlotResult.BUSY or time.monotonic() >= deadline:
            return 1_000
        time.sleep(0.05)
    wait_ms = rt.guards.claim_status_request(x.login, pairs)
    if wait_ms:
        rt.guards.release_status_slot(x.login, x.token)
        return wait_ms
    return None


def _after_status_error(x: _Execution, exc: SmscError) -> tuple[int, int]:
    """What a failed status.php request means for the account; returns (due_at_ms, due_in_ms) of the
    next settling attempt. Never fails a recipient: until the provider has answered, nobody knows
    whether it has them."""
    reason = f"error {exc.code}: {exc.reason}" if exc.code is not None else exc.reason
    if isinstance(exc, SmscAuthError):
        _stop_account(x, reason)
        return 0, 0
    if isinstance(exc, SmscUnknownOutcome | SmscConnectError):
        answer = Answer.UNKNOWN
    elif isinstance(exc, SmscAccountBlocked):
        answer = Answer.BLOCK
    else:
        answer = Answer.ERROR
    v = x.rt.guards.account_outcome(x.login, answer, reason=reason)
    return v.backoff_until_ms, int((exc.retry_after_s or 5) * 1000)


# -- the plumbing ------------------------------------------------------------------------------------

def _acquire_slot(rt: Runtime, token: str, lease_ms: int) -> SlotResult:
    """``TAKEN``, ``BUSY`` (no slot came free in time) or ``CLOSED`` (the account is stopped, backing off
    or quiet: give the batch back)."""
    s = rt.settings
    # Well inside the task's time limit (the lease), so that a batch that found no slot is given
    # back by this execution rather than left to the sweeper.
    deadline = time.monotonic() + min(_SLOT_WAIT_S, s.lease_s / 4)
    while True:
        res = rt.guards.try_slot(rt.login, token, lease_ms=lease_ms, cap=s.smsc_concurrency, probe=not rt.proven)
        if res is not SlotResult.BUSY:
            return res
        left = deadline - time.monotonic()
        if left <= 0:
            return res
        # Woken when a slot is given back; the timeout covers a slot freed by an expired lease.
        rt.guards.wait_for_slot(rt.login, min(left, _SLOT_POLL_S))


def _record(rt: Runtime, ref: str, token: str, out: Outcome, *, answered_ok_ms: int | None = None) -> bool:
    """Apply the outcome; the ledger is the truth, so a Redis hiccup is waited out, not skipped. True when
    this execution's outcome is in the ledger. ``answered_ok_ms``: the request had a good answer that took
    this long: it is applied to the account (:meth:`~scheduler.guards.Guards.account_outcome`) in the same
    round trip (once: a retry after a lost connection carries only the record)."""
    for attempt in range(60):
        try:
            if answered_ok_ms is None:
                ok, state = rt.ledger.record(ref, token=token, outcome=out)
            else:
                pipe = rt.redis.pipeline(transaction=False)
                rt.guards.account_outcome_on(pipe, rt.login, Answer.OK, latency_ms=answered_ok_ms)
                rt.ledger.record_on(pipe, ref, token=token, outcome=out)
                answered_ok_ms = None
                account, reply = rt.ledger.scripts.execute(pipe)
                if isinstance(account, redis.RedisError):
                    log.warning("batch %s: the good answer not applied to the account (%s)", ref, account)
                if isinstance(reply, redis.exceptions.NoScriptError):
                    continue  # it did not run; the scripts are loaded again: recorded alone next time
                if isinstance(reply, Exception):
                    raise reply
                ok, state = rt.ledger.recorded(reply)
        except redis.ConnectionError:
            time.sleep(min(0.5 * (attempt + 1), 2.0))
            continue
        if not ok:
            log.warning("batch %s: lease lost before recording; the batch will be settled by status.php", ref)
        elif state in ("completed", "failed"):
            log.info("campaign %s: %s", split_ref(ref)[0], state)
        return ok
    log.error("batch %s: redis unreachable for a minute; outcome not recorded, it will be settled", ref)
    return False


def _count_outcome(x: _Execution) -> None:
    """The counters /metrics reads beside the ledger (after the outcome is recorded, so a crash between the
    two undercounts them, never the ledger): failed recipients by the provider's code, recipients settled
    through status.php, and requests whose outcome became unknown."""
    out = x.out
    codes: dict[str, int] = {}
    if out.failed:
        for row in out.rows:
            fields = row.split(";", 6)
            if len(fields) > 5 and fields[1] == "failed":
                codes[fields[5]] = codes.get(fields[5], 0) + 1
    settled_sent, settled_failed = x.settled
    unknown = x.unknown and not x.unknown_counted
    if not (codes or settled_sent or settled_failed or unknown):
        return
    rt, cid = x.rt, split_ref(x.ref)[0]
    try:
        pipe = rt.redis.pipeline(transaction=False)
        for code, n in codes.items():
            pipe.hincrby(rt.keys.outcome_codes(cid), code, n)
        ckey = rt.keys.campaign(cid)
        if settled_sent:
            pipe.hincrby(ckey, "settled_sent", settled_sent)
        if settled_failed:
            pipe.hincrby(ckey, "settled_failed", settled_failed)
        if unknown:
            pipe.hincrby(ckey, "unknown_outcomes", 1)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("batch %s: metrics counters not updated (%s)", x.ref, exc)
    x.settled, x.unknown_counted = (0, 0), x.unknown_counted or unknown


def _recovered(rt: Runtime) -> bool:
    for _ in range(100):
        if rt.recovered():
            return True
        time.sleep(0.1)
    return False


def _stopped(rt: Runtime, cid: str) -> bool:
    state = rt.redis.hget(rt.keys.campaign(cid), "state")
    return state in (b"cancelled", b"paused")


#: The guard a verdict names, for the deferral counters (``{ns}:deferrals``, read by /metrics).
_DEFERRAL_GUARDS = {BatchVerdict.HELD: "flood", BatchVerdict.DEDUPLICATED: "dedup", BatchVerdict.NO_SLOT: "slot",
                    BatchVerdict.ACCOUNT_CLOSED: "closed", BatchVerdict.SETTLE_LATER: "status_limits"}


def _count_deferral(rt: Runtime, result: BatchResult) -> None:
    guard = _DEFERRAL_GUARDS.get(result.verdict)
    n = result.held if result.verdict is BatchVerdict.HELD else result.deferred
    if guard is None or n <= 0:
        return
    try:
        rt.redis.hincrby(rt.keys.deferrals, guard, n)
    except redis.RedisError:
        pass  # a counter for the metrics: the batch's outcome is recorded either way


def _log_done(x: _Execution, verb: str, held: int) -> None:
    out = x.out
    log.info("%6.0fms batch %s %s: sent=%d failed=%d held=%d sms=%d cost=%s", (time.monotonic() - x.started) * 1000,
             x.ref, verb, out.sent, out.failed, held, out.sms, Decimal(out.cost_milli) / 1000)
