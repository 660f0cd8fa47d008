"""One batch, start to finish: the plain function behind the ``smsc.send_batch`` task (no Celery).

The steps, each fenced by the execution's token (see :mod:`scheduler.ledger`)::

    begin ─► login slot (held by status.php requests too) ─► settle (status.php, when a request may
          be out) ─► flood guard ─► request dedup ─► mark_sending (intent) ─► POST send.php
          ─► record (ledger + counters)

Errors come classified from the client (:mod:`worker.smsc.errors`); this module acts on the class.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import redis

from scheduler.intake import phone_key
from scheduler.keys import split_ref
from scheduler.ledger import Outcome
from scheduler.recovery import ensure_recovered
from worker.runtime import CampaignInfo, Runtime, now_ms
from worker.smsc import protocol
from worker.smsc.errors import (
    SmscAccountBackoff,
    SmscAuthError,
    SmscBatchRejected,
    SmscConnectError,
    SmscError,
    SmscInsufficientFunds,
    SmscNumbersRejected,
    SmscRetryable,
    SmscUnknownOutcome,
    describe,
)

__all__ = ["BatchResult", "process_batch", "request_id"]

log = logging.getLogger(__name__)

#: Status requests ask about this many (phone, id) pairs at once.
_STATUS_CHUNK = 200
#: Provider errors that come only after the login and password were accepted.
_AUTHENTICATED_ERRORS = frozenset({1, 3, 5, 6, 7, 8})
#: How long an execution waits for a free login slot before it gives the batch back.
_SLOT_WAIT_S = 10.0
#: Longest wait for a wake-up before the slot is tried again anyway (an expired lease wakes nobody).
_SLOT_POLL_S = 0.1


class _Slot:
    """The login slot of one execution, released once: as soon as the send's answer is in (so the next
    request can leave while this one is parsed and recorded), else when the execution ends."""

    def __init__(self, rt: Runtime, account: str, token: str) -> None:
        self.rt, self.account, self.token, self.held = rt, account, token, True

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                self.rt.guards.release_slot(self.account, self.token)
            except redis.RedisError as exc:  # the answer must still be recorded; the slot's lease ends it
                log.warning("login slot not given back (%s): it frees itself when its lease ends", exc)


@dataclass(frozen=True)
class BatchResult:
    ref: str
    verdict: str
    sent: int = 0
    failed: int = 0
    held: int = 0


def request_id(ref: str) -> str:
    """The batch's deterministic provider id (``cid-n``): the same for every attempt, so that
    status.php can tell which recipients of the batch the provider already has."""
    cid, n = split_ref(ref)
    return f"{cid}-{n}"


def process_batch(rt: Runtime, ref: str) -> BatchResult:
    started = time.monotonic()
    s = rt.settings
    timeout_ms = int(s.smsc_timeout * 1000)
    if not _recovered(rt):
        return BatchResult(ref, "recovering")
    cid, _ = split_ref(ref)
    try:
        info = rt.campaign_info(cid)
    except LookupError:
        return BatchResult(ref, "missing")
    token = uuid.uuid4().hex
    lease_ms = int(s.lease_s * 1000)
    b = rt.ledger.begin(ref, token=token, now_ms=now_ms(), exec_lease_ms=lease_ms, account=info.account)
    if b.verdict != "ok":
        log.debug("batch %s: %s", ref, b.verdict)
        return BatchResult(ref, b.verdict)
    req_id = request_id(ref)
    phones = list(b.phones)
    out = Outcome()
    if not phones:
        _record(rt, ref, token, out)
        return BatchResult(ref, "empty")

    account = info.account
    # Every request of the login holds a slot, status.php included: the provider counts them all, and
    # an account not yet proven (cap 1) or stopped must not send even a status request more.
    slot = _acquire_slot(rt, account, token, timeout_ms)
    if slot != "taken":
        out.remaining, out.due_at_ms = phones, now_ms() + 200
        _record(rt, ref, token, out)
        return BatchResult(ref, "no-slot" if slot == "busy" else "account-closed")
    slot_held = _Slot(rt, account, token)
    try:
        if b.settle:
            settled = _settle(rt, ref, token, info, req_id, phones, out)
            if settled is None:  # status.php could not answer: the batch went back, still to be settled
                return BatchResult(ref, "settle-later")
            phones = settled
            out.settle = "0"
            if phones and _stopped(rt, cid):
                out.remaining, out.due_at_ms = phones, now_ms()
            if not phones or out.remaining:
                _record(rt, ref, token, out)
                _log_done(ref, "settled", out, 0, started)
                return BatchResult(ref, "settled", sent=out.sent)
        return _send(rt, ref, token, info, req_id, phones, out, b.settle, started, slot=slot_held)
    finally:
        slot_held.release()


def _send(rt: Runtime, ref: str, token: str, info: CampaignInfo, req_id: str, phones: list[str],
          out: Outcome, was_settled: bool, started: float, *, slot: _Slot) -> BatchResult:
    s = rt.settings
    account = info.account
    timeout_ms = int(s.smsc_timeout * 1000)
    now = now_ms()
    waits = rt.guards.admit_phones(account, phones, now)
    admitted = [p for p, w in zip(phones, waits, strict=True) if w == 0]
    held = [p for p, w in zip(phones, waits, strict=True) if w != 0]
    hold_until = min((w for w in waits if w), default=0)
    if not admitted:
        out.remaining, out.due_at_ms = phones, hold_until
        _record(rt, ref, token, out)
        log.info("batch %s: all %d recipients held by the flood guard until %d", ref, len(phones), hold_until)
        return BatchResult(ref, "held", held=len(held))
    lines = [(admitted, info.message)]
    params = protocol.send_params(lines=lines, request_id=req_id, sender=info.sender)
    fp = protocol.fingerprint(account, params)
    wait_ms = rt.guards.claim_send_request(account, fp)
    if wait_ms:
        out.remaining, out.due_at_ms = phones, now + wait_ms
        if was_settled:
            # The identical request is the one whose outcome was unknown: should the provider take it
            # late, after our timeout, the next attempt must find that out before sending again.
            out.settle = "1"
        _record(rt, ref, token, out)
        log.info("batch %s: identical request sent less than 60 s ago; deferred %d ms", ref, wait_ms)
        return BatchResult(ref, "deduplicated")
    settle_after = now + timeout_ms + 2_000
    if not rt.ledger.mark_sending(ref, token=token, now_ms=now, settle_after_ms=settle_after,
                                  lease_until_ms=now + int(s.lease_s * 1000)):
        log.warning("batch %s: lease lost before sending; nothing sent", ref)
        return BatchResult(ref, "lost")
    out.remaining, out.due_at_ms = held, hold_until
    try:
        # The slot goes back as soon as the answer is in (or the request is over), before it is parsed —
        # unless this process's credentials are not proven yet: then its slot is the account's one probe,
        # held until the answer is recorded, so that after an error 2 the account is stopped before any
        # other process may try (a wrong password is refused once, not once per slot).
        report = rt.client.send(lines=lines, request_id=req_id, sender=info.sender,
                                on_answer=slot.release if rt.proven else None)
    except SmscError as exc:
        _on_error(rt, info, exc, admitted, held, hold_until, out, was_settled=was_settled, fp=fp,
                  settle_after=settle_after)
        _record(rt, ref, token, out)
        log.warning("batch %s: %d recipients: %s (%s)", ref, len(admitted), type(exc).__name__, exc)
        return BatchResult(ref, type(exc).__name__, sent=out.sent, failed=out.failed)
    rt.proven = True
    rt.guards.account_outcome(account, "ok", now_ms=now_ms())
    by_key = {phone_key(p.phone): p for p in report.phones}
    per_msg = info.parts
    for phone in admitted:
        pr = by_key.get(phone_key(phone))
        if pr is None or pr.accepted:
            out.sent += 1
            out.add_row(phone, "sent", msg_id=report.id, parts=per_msg,
                        cost=str(pr.cost) if pr is not None else "")
        else:
            out.failed += 1
            out.add_row(phone, "failed", msg_id=report.id, code=pr.error, reason=describe(pr.error))
    out.sms += report.cnt
    if report.cost is not None:
        out.cost_milli += int(report.cost * 1000)
    _record(rt, ref, token, out)
    _log_done(ref, "sent", out, len(held), started)
    return BatchResult(ref, "sent", sent=out.sent, failed=out.failed, held=len(held))


def _on_error(rt: Runtime, info: CampaignInfo, exc: SmscError, admitted: list[str], held: list[str],
              hold_until: int, out: Outcome, *, was_settled: bool, fp: str, settle_after: int) -> None:
    """Turn a classified error into the batch's outcome and the account's state."""
    account = info.account
    now = now_ms()
    reason = f"error {exc.code}: {exc.reason}" if exc.code is not None else exc.reason
    everyone = admitted + held
    out.reason = reason
    if exc.code in _AUTHENTICATED_ERRORS:
        rt.proven = True  # the provider got past the login and password to refuse this
    if isinstance(exc, SmscUnknownOutcome):
        # The provider may have the messages: settle through status.php once the request is surely over.
        rt.guards.account_outcome(account, "error", now_ms=now, reason=reason)
        out.remaining, out.due_at_ms, out.settle = everyone, settle_after, "1"
    elif isinstance(exc, SmscConnectError):
        rt.guards.forget_send_request(account, fp)
        v = rt.guards.account_outcome(account, "error", now_ms=now, reason=reason)
        out.remaining, out.due_at_ms = everyone, max(now + 1_000, v.backoff_until_ms)
    elif isinstance(exc, SmscAccountBackoff):
        v = rt.guards.account_outcome(account, "block", now_ms=now, reason=reason)
        out.remaining, out.due_at_ms = everyone, max(now + 1_000, v.backoff_until_ms)
    elif isinstance(exc, SmscRetryable):
        if exc.code == 9 and was_settled:
            # Error 9 on a retry after an unknown outcome: the first request was probably taken.
            out.remaining, out.due_at_ms, out.settle = everyone, now + 1_000, "1"
        else:
            v = rt.guards.account_outcome(account, "error", now_ms=now, reason=reason)
            retry_ms = int((exc.retry_after_s or 5) * 1000)
            out.remaining, out.due_at_ms = everyone, max(now + retry_ms, v.backoff_until_ms)
            if exc.code is None:
                # An HTTP error (5xx) says nothing certain about the messages: a proxy may answer 502 after
                # the provider took them, or the provider may take them late. Ask status.php before sending
                # again; the identical request stays barred for its minute, so a late acceptance is found.
                out.settle = "1"
    elif isinstance(exc, SmscNumbersRejected):
        # An error answer all the same: the provider counts it towards its 100 errors in a row.
        rt.guards.account_outcome(account, "error", now_ms=now, reason=reason)
        _fail_all(out, admitted, exc)
    elif isinstance(exc, SmscBatchRejected):
        rt.guards.account_outcome(account, "error", now_ms=now, reason=reason)
        _fail_all(out, admitted, exc)
    elif isinstance(exc, SmscInsufficientFunds):
        out.remaining, out.due_at_ms = everyone, now
        rt.guards.account_outcome(account, "error", now_ms=now, reason=reason)  # counted by the provider too
        paused = rt.campaigns.pause_account(account, now_ms=now, reason=f"insufficient funds ({reason})")
        log.error("account %s: insufficient funds; paused campaigns %s", account, ",".join(paused))
    elif isinstance(exc, SmscAuthError):
        out.remaining, out.due_at_ms = everyone, now
        rt.guards.account_outcome(account, "auth", now_ms=now, reason=reason)
        paused = rt.campaigns.pause_account(account, now_ms=now,
                                            reason=f"account stopped: {reason}; fix the settings, then resume")
        log.error("account %s: %s; sending stopped, campaigns %s paused", account, reason, ",".join(paused))
    else:  # pragma: no cover - the hierarchy is closed
        out.remaining, out.due_at_ms = everyone, now + 5_000


def _fail_all(out: Outcome, phones: Sequence[str], exc: SmscError) -> None:
    for phone in phones:
        out.failed += 1
        out.add_row(phone, "failed", code=exc.code if exc.code is not None else "", reason=exc.reason)


def _settle(rt: Runtime, ref: str, token: str, info: CampaignInfo, req_id: str, phones: list[str],
            out: Outcome) -> list[str] | None:
    """Ask the provider which recipients of this batch it already has; record those as sent and
    return the others. ``None`` when status.php could not answer (the batch goes back)."""
    taken: set[str] = set()
    try:
        for i in range(0, len(phones), _STATUS_CHUNK):
            pairs = [(p, req_id) for p in phones[i:i + _STATUS_CHUNK]]
            wait_ms = rt.guards.claim_status_request(info.account, pairs)
            if wait_ms:
                rt.ledger.release(ref, token=token, now_ms=now_ms(), phones=phones,
                                  due_at_ms=now_ms() + wait_ms)
                log.info("batch %s: identical status request less than 60 s ago; settling in %d ms", ref,
                         wait_ms)
                return None
            for rep in rt.client.status(pairs):
                if rep.taken:
                    taken.add(phone_key(rep.phone))
            rt.proven = True
    except SmscError as exc:
        due = _after_status_error(rt, info, exc)
        rt.ledger.release(ref, token=token, now_ms=now_ms(), phones=phones, due_at_ms=due,
                          reason=f"settling: {exc}")
        log.warning("batch %s: status.php failed while settling (%s); retry in %d ms", ref, exc, due - now_ms())
        return None
    rest = []
    for phone in phones:
        if phone_key(phone) in taken:
            out.sent += 1
            out.sms += info.parts
            out.add_row(phone, "sent", msg_id=req_id, parts=info.parts, reason="settled via status.php")
        else:
            rest.append(phone)
    log.info("batch %s: settled: %d already with the provider, %d to send", ref, len(phones) - len(rest),
             len(rest))
    return rest


def _after_status_error(rt: Runtime, info: CampaignInfo, exc: SmscError) -> int:
    """What a failed status.php request means for the account; returns when to settle again.

    Never fails a recipient: until the provider has answered, nobody knows whether it has them."""
    account = info.account
    now = now_ms()
    reason = f"error {exc.code}: {exc.reason}" if exc.code is not None else exc.reason
    if isinstance(exc, SmscAuthError):
        rt.guards.account_outcome(account, "auth", now_ms=now, reason=reason)
        paused = rt.campaigns.pause_account(account, now_ms=now,
                                            reason=f"account stopped: {reason}; fix the settings, then resume")
        log.error("account %s: %s; sending stopped, campaigns %s paused", account, reason, ",".join(paused))
        return now
    v = rt.guards.account_outcome(account, "block" if isinstance(exc, SmscAccountBackoff) else "error",
                                  now_ms=now, reason=reason)
    return max(now + int((exc.retry_after_s or 5) * 1000), v.backoff_until_ms)


def _acquire_slot(rt: Runtime, account: str, token: str, timeout_ms: int) -> str:
    """``"taken"``, ``"busy"`` (no slot came free in time) or ``"closed"`` (the account is stopped or
    backing off: give the batch back)."""
    s = rt.settings
    lease_ms = timeout_ms + 5_000
    # Well inside the task's soft time limit (lease - 5 s), so that a batch that found no slot is given
    # back by this execution rather than left to the sweeper.
    deadline = time.monotonic() + min(_SLOT_WAIT_S, s.lease_s / 4)
    while True:
        res = rt.guards.try_slot(account, token, now_ms=now_ms(), lease_ms=lease_ms, cap=s.smsc_concurrency,
                                 probe=not rt.proven)
        if res != "busy":
            return res
        left = deadline - time.monotonic()
        if left <= 0:
            return res
        # Woken when a slot is given back; the timeout covers a slot freed by an expired lease.
        rt.guards.wait_for_slot(account, min(left, _SLOT_POLL_S))


def _record(rt: Runtime, ref: str, token: str, out: Outcome) -> None:
    """Apply the outcome; the ledger is the truth, so a Redis hiccup is waited out, not skipped."""
    for attempt in range(60):
        try:
            ok, state = rt.ledger.record(ref, token=token, now_ms=now_ms(), outcome=out)
        except redis.ConnectionError:
            time.sleep(min(0.5 * (attempt + 1), 2.0))
            continue
        if not ok:
            log.warning("batch %s: lease lost before recording; the batch will be settled by status.php", ref)
        elif state in ("completed", "failed"):
            log.info("campaign %s: %s", split_ref(ref)[0], state)
        return
    log.error("batch %s: redis unreachable for a minute; outcome not recorded, it will be settled", ref)


def _recovered(rt: Runtime) -> bool:
    timeout_ms = int(rt.settings.smsc_timeout * 1000)
    for _ in range(100):
        now = now_ms()
        if ensure_recovered(rt.redis, rt.keys, now_ms=now, settle_after_ms=now + timeout_ms + 2_000,
                            ledger=rt.ledger, campaigns=rt.campaigns):
            return True
        time.sleep(0.1)
    return False


def _stopped(rt: Runtime, cid: str) -> bool:
    state = rt.redis.hget(rt.keys.campaign(cid), "state")
    return state in (b"cancelled", b"paused")


def _log_done(ref: str, verb: str, out: Outcome, held: int, started: float) -> None:
    log.info("%6.0fms batch %s %s: sent=%d failed=%d held=%d sms=%d cost=%s", (time.monotonic() - started) * 1000,
             ref, verb, out.sent, out.failed, held, out.sms, Decimal(out.cost_milli) / 1000)
