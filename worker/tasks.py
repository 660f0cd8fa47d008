"""The tasks (names are the public interface, shown in Flower):

- ``smsc.dispatch()`` — beat, every second: sweep expired leases, claim due batches, send them out.
- ``smsc.send_batch(batch_id)`` — send one batch; then top the workers up with the next due ones.
- ``smsc.delivery_tick()`` — beat, every 2 s: track sent batches, move campaigns to ``delivered_final``,
  hand the batches due for a status poll to ``smsc.poll_batch``.
- ``smsc.poll_batch(batch_id)`` — poll one batch's delivery statuses through status.php (within its limits).
- ``smsc.webhooks()`` — beat, every second: post the due webhook events (signed, retried with back-off).
- ``smsc.enqueue(phones_file, message, sender=None, **plan)`` — enqueue a campaign from a file the
  worker can read (for apps that do not import this package, and for beat schedules); the campaign
  id is derived from the task id, so a redelivered message never makes a second campaign.
"""

from __future__ import annotations

import logging
from typing import Any

from scheduler.recovery import ensure_recovered
from worker.app import app
from worker.delivery.config import DeliveryConfig
from worker.delivery.poller import make_store, poll_batch, poll_due, tick
from worker.delivery.webhooks import client_for, send_due
from worker.runtime import get_runtime
from worker.sending import process_batch

__all__ = ["delivery_tick", "dispatch", "enqueue", "poll_statuses", "send_batch", "webhooks"]

log = logging.getLogger(__name__)


def _feed(max_claim: int) -> int:
    rt = get_runtime()
    refs = rt.ledger.claim(window=rt.settings.smsc_window,
                           claim_lease_ms=int(rt.settings.lease_s * 1000) * 2, max_claim=max_claim)
    for ref in refs:
        send_batch.apply_async((ref,))
    return len(refs)


@app.task(name="smsc.dispatch", ignore_result=True)
def dispatch() -> dict[str, int]:
    rt = get_runtime()
    s = rt.settings
    # A new Redis server (restart): settle what could have left before anything is claimed; on the
    # first tick of a fresh namespace this records the server, so that new campaigns need no settling.
    if not ensure_recovered(rt.redis, rt.keys, deadline_s=s.smsc_timeout, horizon_s=s.smsc_settle_horizon,
                            ledger=rt.ledger, guards=rt.guards):
        return {"claimed": 0, "swept": 0}  # another process is recovering: next tick
    swept = rt.ledger.sweep()
    claimed = _feed(rt.settings.smsc_window)
    if swept or claimed:
        log.info("dispatch: %d batches out, %d taken back from expired leases", claimed, swept)
    return {"claimed": claimed, "swept": swept}


@app.task(name="smsc.send_batch", ignore_result=True)
def send_batch(batch_id: str) -> dict[str, Any]:
    res = process_batch(get_runtime(), batch_id)
    _feed(2)
    return {"verdict": res.verdict, "sent": res.sent, "failed": res.failed, "held": res.held}


@app.task(name="smsc.delivery_tick", ignore_result=True)
def delivery_tick() -> dict[str, int]:
    rt = get_runtime()
    cfg = DeliveryConfig.from_settings(rt.settings)
    store = make_store(rt, cfg)
    out = tick(rt, store)
    refs = poll_due(rt, store, max_batches=8)  # leased: a lost message brings the batch back after the lease
    for ref in refs:
        poll_statuses.apply_async((ref,))
    return {**out, "polls": len(refs)}


@app.task(name="smsc.poll_batch", ignore_result=True)
def poll_statuses(batch_id: str) -> dict[str, Any]:
    rt = get_runtime()
    cfg = DeliveryConfig.from_settings(rt.settings)
    res = poll_batch(rt, make_store(rt, cfg), cfg, batch_id)
    return {"asked": res.asked, "final": res.final, "unknown": res.unknown, "wait_ms": res.wait_ms}


@app.task(name="smsc.webhooks", ignore_result=True)
def webhooks() -> dict[str, int]:
    rt = get_runtime()
    cfg = DeliveryConfig.from_settings(rt.settings)
    with client_for() as client:
        r = send_due(make_store(rt, cfg), cfg, client)
    return {"cut": r.cut, "acknowledged": r.acknowledged, "retried": r.retried, "dead": r.dead}


@app.task(name="smsc.enqueue", bind=True, ignore_result=True)
def enqueue(self: Any, phones_file: str, message: str, sender: str | None = None,
            **plan: Any) -> dict[str, Any]:
    from worker.api import enqueue_file

    cid = "t" + (self.request.id or "").replace("-", "")[:20]
    receipt = enqueue_file(phones_file, message, sender=sender, campaign_id=cid, **plan)
    return receipt.as_dict()
