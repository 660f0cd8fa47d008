"""Polling: the delivery statuses of sent recipients through status.php, within every limit of the provider.

Each tracked batch is due for a poll at steps that back off as it ages (:class:`scheduler.delivery.
DeliveryPolicy`: 30 s, 90 s, 3 min, 6 min ... 16 h after it was sent), and once more at its horizon, after
which what is still pending is ``unknown``. A poll asks the batch's pending recipients in mass requests
of ``chunk`` pairs, and every request is a status request like the settling ones (invariant 5):

- it holds a **login slot** (the provider counts every request of the login: fewer than 15 in flight,
  shared with the sends) and one of the login's **four status slots**;
- it passes :meth:`scheduler.guards.Guards.claim_status_request`: at most five requests about one
  message a minute, and the mass-request rule (the same list at most once a minute; with
  ``SMSC_STATUS_STRICT`` any mass request at most once a minute) — refused, the batch is simply due again
  when the limit allows;
- its answer goes through :meth:`~scheduler.guards.Guards.account_outcome`: errors count toward the
  streak that backs the login off, error 4 blocks it, error 2 stops it (and pauses its campaigns).

:func:`tick` tracks batches whose rows grew and moves campaigns on (``completed``, ``delivered_final``);
:func:`poll_due` takes the due batches; :func:`poll_batch` polls one (the body of a Celery task
``smsc.poll_batch``); :func:`run_poller` does all of it in a loop on threads (the tests, a standalone
process).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import redis

from scheduler.delivery import DeliveryStore, Row, Status, is_final, is_pending
from scheduler.guards import Answer, SlotResult
from scheduler.keys import split_ref
from scheduler.keys import text as _s
from scheduler.ledger import server_time_ms
from worker.delivery.config import DeliveryConfig
from worker.runtime import Runtime
from worker.smsc.errors import SmscAccountBlocked, SmscAuthError, SmscConnectError, SmscError, SmscUnknownOutcome

__all__ = ["PollResult", "make_store", "poll_batch", "poll_due", "run_poller", "sends_first", "tick"]

log = logging.getLogger(__name__)

#: A slot's lease beyond the request's deadline (as for the sends: renewed before every request).
_SLOT_MARGIN_MS = 5_000
#: How long a poll waits for one of the login's status slots before the batch is due again.
_STATUS_SLOT_WAIT_S = 2.0
#: How often the tick reads every batch of the campaigns not final yet (:meth:`DeliveryStore.discover`).
_FULL_SCAN_MS = 60_000
#: A polled batch is leased this long beyond the request deadline (no other poller takes it meanwhile).
_LEASE_MARGIN_MS = 60_000


def make_store(rt: Runtime, cfg: DeliveryConfig) -> DeliveryStore:
    return DeliveryStore(rt.redis, rt.keys, policy=cfg.policy, default_webhook=bool(cfg.webhook_url))


@dataclass(frozen=True)
class PollResult:
    ref: str
    asked: int = 0  # pending recipients asked about
    final: int = 0  # of them now final
    unknown: int = 0  # became unknown at the horizon
    requests: int = 0
    wait_ms: int = 0  # the limits refused: due again after this long
    error: str = ""


def tick(rt: Runtime, store: DeliveryStore) -> dict[str, int]:
    """Track grown batches and move every campaign whose delivery is not final on; returns counts."""
    cids = [_s(c) for c in rt.redis.zrange(rt.keys.campaigns, 0, -1)]
    pipe = rt.redis.pipeline(transaction=False)
    for cid in cids:
        pipe.hget(rt.keys.delivery(cid), "state")
    states = pipe.execute()
    tracked = store.discover_grown()
    # Once a minute (one tick of all the workers' clocks) every batch is read as well: what a path that
    # does not mark its batch grown appended is tracked within a minute all the same.
    full = bool(rt.redis.set(rt.keys.delivery_scan_gate, "1", nx=True, px=_FULL_SCAN_MS))
    finals = 0
    for cid, state in zip(cids, states, strict=True):
        if state is not None and _s(state) == "delivered_final":
            continue
        if full:
            tracked += store.discover(cid)
        if store.finish(cid)[0] == "delivered_final":
            finals += 1
            log.info("campaign %s: delivered_final", cid)
    return {"campaigns": len(cids), "batches_tracked": tracked, "delivered_final": finals}


def sends_first(rt: Runtime, store: DeliveryStore, yield_s: float) -> bool:
    """Whether the status polls wait now: batches are due to be sent (they would share the login's slots
    with the polls, and a campaign's send rate comes first), and no poll has waited ``yield_s`` past its
    due time yet — after that the polls take their share again, so statuses are late by at most that
    long, never starved. (One test for the namespace: with several accounts a poll of an idle one may
    wait behind another's sends, as long at most.)"""
    if yield_s <= 0:
        return False
    pipe = rt.redis.pipeline(transaction=False)
    pipe.time()
    pipe.zrange(store.keys.delivery_due, 0, 0, withscores=True)
    (seconds, micros), oldest = pipe.execute()
    now = int(seconds) * 1000 + int(micros) // 1000
    if not oldest or oldest[0][1] > now:
        return False  # no poll due
    if now - oldest[0][1] >= yield_s * 1000:
        return False  # the oldest due poll has waited long enough
    return int(rt.redis.zcount(rt.keys.due, "-inf", now)) > 0


def poll_due(rt: Runtime, store: DeliveryStore, *, max_batches: int = 50) -> list[str]:
    """Take the batches due for a poll (leased, so two pollers never poll one batch at once)."""
    lease = int(rt.settings.smsc_timeout * 1000) * 4 + _LEASE_MARGIN_MS
    return store.claim_polls(max_batches=max_batches, lease_ms=lease)


def poll_batch(rt: Runtime, store: DeliveryStore, cfg: DeliveryConfig, ref: str) -> PollResult:
    """Poll one batch's pending recipients (or expire them at the horizon) and schedule its next poll."""
    try:
        rt = rt.for_campaign(split_ref(ref)[0])  # status.php as the account that sent them
    except LookupError:
        pass  # the campaign is gone: what is left of its batch expires as before
    store.apply([], track=[ref])  # rows the record does not hold yet (cheap when there are none)
    now = server_time_ms(rt.redis)
    first = store.first_tracked_ms(ref) or now
    rows = store.rows(ref)
    record = store.record(ref, len(rows))
    pending = [row for row, d in zip(rows, record, strict=True) if is_pending(d.code)]
    age_s = (now - first) / 1000
    at_horizon = age_s >= store.policy.horizon_s
    result = PollResult(ref)
    if pending and (store.policy.poll or at_horizon):
        result = _poll(rt, store, cfg, ref, pending)
        if result.wait_ms:
            store.reschedule(ref, server_time_ms(rt.redis) + result.wait_ms)
            return result
    if at_horizon:
        unknown = store.expire(ref)
        log.info("batch %s: horizon passed, %d recipients unknown", ref, unknown)
        return PollResult(ref, result.asked, result.final, unknown, result.requests)
    # Rows appended since (a flood-held remainder sent later) are pending too: the record says.
    if any(is_pending(d.code) for d in store.record(ref, len(store.rows(ref)))):
        store.reschedule(ref, now + int(store.policy.next_poll_in_s(age_s) * 1000))
    else:
        store.unschedule(ref)
    return result


def _poll(rt: Runtime, store: DeliveryStore, cfg: DeliveryConfig, ref: str, pending: Sequence[Row]) -> PollResult:
    cid, n = split_ref(ref)
    token = uuid.uuid4().hex
    lease_ms = int(rt.settings.smsc_timeout * 1000) + _SLOT_MARGIN_MS
    got = rt.guards.try_slot(rt.login, token, lease_ms=lease_ms, cap=rt.settings.smsc_concurrency,
                             probe=not rt.proven)
    if got is not SlotResult.TAKEN:
        return PollResult(ref, wait_ms=1_000 if got is SlotResult.BUSY else 5_000)
    asked = final = requests = 0
    try:
        for lo in range(0, len(pending), cfg.chunk):
            chunk = pending[lo:lo + cfg.chunk]
            pairs = [(row.phone, row.msg_id or _request_id(cid, n)) for row in chunk]
            wait_ms = _gate(rt, token, lease_ms, pairs)
            if wait_ms:
                return PollResult(ref, asked, final, requests=requests, wait_ms=wait_ms)
            try:
                reports = rt.client.status(pairs)
            except SmscError as exc:
                return PollResult(ref, asked, final, requests=requests + 1, wait_ms=_after_error(rt, exc),
                                  error=type(exc).__name__)
            finally:
                rt.guards.release_status_slot(rt.login, token)
            requests += 1
            rt.guards.account_outcome(rt.login, Answer.OK)
            rt.mark_proven()
            now_s = server_time_ms(rt.redis) // 1000
            statuses = [Status(ref, row.row, rep.status, rep.err, rep.last_timestamp or now_s, row.phone)
                        for row, rep in zip(chunk, reports, strict=True)]
            store.apply(statuses)
            asked += len(chunk)
            final += sum(1 for st in statuses if is_final(st.status + 10))
    finally:
        rt.guards.release_slot(rt.login, token)
    return PollResult(ref, asked, final, requests=requests)


def _request_id(cid: str, n: int) -> str:
    from worker.sending import request_id  # the one spelling of our ids

    return request_id(f"{cid}:{n}")


def _gate(rt: Runtime, token: str, lease_ms: int, pairs: Sequence[tuple[str, str]]) -> int:
    """Hold a status slot and pass the status-request limits; 0 when the request may leave, else ms to wait."""
    if not rt.guards.renew_slot(rt.login, token, lease_ms=lease_ms):
        return 5_000
    deadline = time.monotonic() + _STATUS_SLOT_WAIT_S
    while True:
        res = rt.guards.try_status_slot(rt.login, token, lease_ms=lease_ms)
        if res is SlotResult.TAKEN:
            break
        if res is not SlotResult.BUSY or time.monotonic() >= deadline:
            return 1_000
        time.sleep(0.02)
    wait_ms = rt.guards.claim_status_request(rt.login, pairs)
    if wait_ms:
        rt.guards.release_status_slot(rt.login, token)
    return int(wait_ms)


def _after_error(rt: Runtime, exc: SmscError) -> int:
    """What a failed status request means for the login; ms until the batch is polled again."""
    reason = f"error {exc.code}: {exc.reason}" if exc.code is not None else exc.reason
    if isinstance(exc, SmscAuthError):
        rt.guards.account_outcome(rt.login, Answer.AUTH, reason=reason)
        rt.campaigns.pause_account(rt.settings.account,
                                   reason=f"account stopped: {reason}; fix the settings, then resume")
        log.error("account %s: %s while polling statuses; sending stopped", rt.login, reason)
        return 60_000
    if isinstance(exc, SmscUnknownOutcome | SmscConnectError):
        answer = Answer.UNKNOWN
    elif isinstance(exc, SmscAccountBlocked):
        answer = Answer.BLOCK
    else:
        answer = Answer.ERROR
    v = rt.guards.account_outcome(rt.login, answer, reason=reason)
    log.warning("status.php failed while polling (%s)", exc)
    now = server_time_ms(rt.redis)
    return max(v.backoff_until_ms - now, int((exc.retry_after_s or 5) * 1000))


def run_poller(rt: Runtime, cfg: DeliveryConfig, stop: threading.Event, *, threads: int = 4,
               tick_s: float = 2.0, idle_s: float = 0.2) -> dict[str, int]:
    """Tick, take due batches and poll them on ``threads`` threads until ``stop``; returns totals."""
    store = make_store(rt, cfg)
    totals = {"polls": 0, "requests": 0, "asked": 0, "final": 0, "unknown": 0, "refused": 0}
    last_tick = 0.0
    lock = threading.Lock()

    def one(ref: str) -> None:
        try:
            res = poll_batch(rt, store, cfg, ref)
        except (redis.RedisError, SmscError) as exc:
            log.warning("poll of %s failed: %s", ref, exc)
            return
        with lock:
            totals["polls"] += 1
            totals["requests"] += res.requests
            totals["asked"] += res.asked
            totals["final"] += res.final
            totals["unknown"] += res.unknown
            totals["refused"] += 1 if res.wait_ms else 0

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="smsc-poll") as pool:
        running: set[Future[None]] = set()
        while not stop.is_set():
            if time.monotonic() - last_tick >= tick_s:
                try:
                    tick(rt, store)
                except redis.RedisError as exc:
                    log.warning("delivery tick failed: %s", exc)
                last_tick = time.monotonic()
            # Keep ``threads`` polls in flight: a free thread takes the next due batch at once.
            refs: list[str] = []
            if len(running) < threads and not sends_first(rt, store, cfg.yield_s):
                refs = poll_due(rt, store, max_batches=threads - len(running))
            running |= {pool.submit(one, ref) for ref in refs}
            if not running:
                stop.wait(idle_s)
                continue
            _, running = wait(running, timeout=idle_s, return_when=FIRST_COMPLETED)
        wait(running)
    return totals
