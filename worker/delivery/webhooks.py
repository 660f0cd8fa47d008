"""Webhooks: each recipient's final delivery state and the campaign's transitions, posted to the app.

Events live in Redis until the app acknowledged them (``{ns}:wh:*``, :mod:`scheduler.delivery`): a row's
first final state (or its ``unknown`` at the horizon, and a final state that came after that) is queued
by the script that stored it, cut into one event per batch and second (at most ``max_items``
recipients), and the campaign's ``completed`` and ``delivered_final`` are one event each. An event's
content is frozen when it is made, so every attempt posts the same body.

One post per event, JSON::

    POST <campaign's --webhook, or SMSC_WEBHOOK_URL>
    Content-Type: application/json
    Idempotency-Key: <namespace>:<event id>            the same on every attempt: de-duplicate on it
    X-Smsc-Mailer-Event: delivery.final | campaign.completed | campaign.delivered_final
    X-Smsc-Mailer-Timestamp: <Unix seconds of this attempt>
    X-Smsc-Mailer-Signature: v1=<hex HMAC-SHA256(SMSC_WEBHOOK_SECRET, "<timestamp>." + body)>

A 2xx answer acknowledges the event; anything else (no answer, a timeout, 4xx, 5xx) is retried after
``webhook_retry_s``, doubling up to ``webhook_retry_cap_s`` (10 minutes), for ``webhook_give_up_s``
(48 hours), then the event is kept as dead (``{ns}:wh:dead``) and shown in ``status``. Delivery is at
least once: an answer lost on the way, or a sender killed after the post, means the same event again,
with the same ``Idempotency-Key`` and the same body. :func:`verify` is the check a receiver runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import redis

from scheduler.delivery import DeliveryStore, Event, counts_of
from scheduler.keys import split_ref
from scheduler.ledger import server_time_ms
from worker.delivery.config import DeliveryConfig
from worker.delivery.states import funnel, reason_of, state_of

__all__ = ["WebhookResult", "client_for", "render", "run_webhooks", "send_due", "sign", "verify"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Smsc-Mailer-Signature"
TIMESTAMP_HEADER = "X-Smsc-Mailer-Timestamp"
EVENT_HEADER = "X-Smsc-Mailer-Event"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify(secret: str, body: bytes, timestamp: str, signature: str, *, tolerance_s: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver checks: the signature over this body and timestamp, and the timestamp recent
    (within ``tolerance_s``: a replayed old post is refused; a retried event is signed anew)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature.strip())


def _iso(ts_s: int) -> str | None:
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts_s else None


def render(event: Event, *, namespace: str) -> tuple[str, str, bytes]:
    """``(campaign id, event type, body)`` of an event: a pure function of its frozen content."""
    kind, created, rest = event.value.split("|", 2)
    key = f"{namespace}:{event.id}"
    if kind == "d":
        ref, items = rest.split("|", 1)
        cid, n = split_ref(ref)
        recipients = []
        for item in filter(None, items.split(";")):
            phone, code_s, err_s, ts_s = item.split(",")
            code, err, ts = int(code_s), int(err_s), int(ts_s)
            state = state_of(code)
            status = code - 10 if code >= 8 else None
            recipients.append({"phone": phone, "state": state, "status": status, "err": err,
                               "reason": reason_of(code, err), "at": _iso(ts)})
        body: dict[str, Any] = {"type": "delivery.final", "id": key, "campaign_id": cid, "batch": n,
                                "created_at": _iso(int(created) // 1000), "recipients": recipients}
        return cid, "delivery.final", json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    cid, what, cstate, sent_s, counters = rest.split("|", 4)
    fields = dict(p.split("=", 1) for p in counters.split("&") if p)
    sent = int(sent_s)
    body = {"type": f"campaign.{what}", "id": key, "campaign_id": cid, "state": what, "campaign_state": cstate,
            "sent": sent, "created_at": _iso(int(created) // 1000), "delivery": funnel(counts_of(fields), sent)}
    return cid, f"campaign.{what}", json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class WebhookResult:
    cut: int = 0
    posted: int = 0
    acknowledged: int = 0
    retried: int = 0
    dead: int = 0
    no_url: int = 0


def send_due(store: DeliveryStore, cfg: DeliveryConfig, client: httpx.Client, *, max_events: int = 100,
             concurrency: int = 8, now: Callable[[], float] = time.time) -> WebhookResult:
    """Cut new events, then post the due ones (``concurrency`` at once) and settle each: acknowledged,
    retried later, or dead."""
    cut = store.cut_events()
    lease_ms = int(cfg.webhook_timeout_s * 1000) * 3 + 5_000
    events = store.claim_events(max_events=max_events, lease_ms=lease_ms)
    if not events:
        return WebhookResult(cut=cut)
    urls: dict[str, str | None] = {}
    namespace = store.keys.namespace

    def post(event: Event) -> tuple[Event, bool | None]:
        cid, kind, body = render(event, namespace=namespace)
        if cid not in urls:
            urls[cid] = store.webhook_url(cid) or cfg.webhook_url
        url = urls[cid]
        if not url:
            return event, None
        ts = int(now())
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"{namespace}:{event.id}",
                   EVENT_HEADER: kind, TIMESTAMP_HEADER: str(ts)}
        if cfg.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(cfg.webhook_secret, ts, body)
        try:
            response = client.post(url, content=body, headers=headers, timeout=cfg.webhook_timeout_s)
            ok = 200 <= response.status_code < 300
        except httpx.HTTPError as exc:
            log.info("webhook %s: %s", event.id, type(exc).__name__)
            ok = False
        return event, ok

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(events)))) as pool:
        outcomes = list(pool.map(post, events))
    server_now = server_time_ms(store.r)
    acked = retried = dead = no_url = 0
    for event, ok in outcomes:
        if ok:
            store.event_done(event.id)
            acked += 1
        elif ok is None:
            store.event_done(event.id)  # no URL for this campaign (any more): nothing to deliver to
            no_url += 1
        elif server_now - event.first_ms >= cfg.webhook_give_up_s * 1000:
            store.event_dead(event, now_ms=server_now)
            log.error("webhook event %s given up after %d attempts", event.id, event.attempts + 1)
            dead += 1
        else:
            wait_s = min(cfg.webhook_retry_s * 2 ** event.attempts, cfg.webhook_retry_cap_s)
            store.event_retry(event, due_ms=server_now + int(wait_s * 1000))
            retried += 1
    return WebhookResult(cut, len(events) - no_url, acked, retried, dead, no_url)


def client_for(concurrency: int = 8) -> httpx.Client:
    """The sender's HTTP client: TCP_NODELAY (a JSON post is headers then body: without it each keep-alive
    post waits ~40 ms for a delayed ACK), one connection per concurrent post, no proxies from ~/.netrc."""
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                                    limits=httpx.Limits(max_connections=concurrency))
    return httpx.Client(transport=transport, trust_env=False)


def run_webhooks(store: DeliveryStore, cfg: DeliveryConfig, stop: threading.Event, *, interval_s: float = 0.5,
                 concurrency: int = 8) -> dict[str, int]:
    """Cut and post until ``stop`` (a standalone sender; in Celery the ``smsc.webhooks`` task calls
    :func:`send_due`); returns totals."""
    totals = {"cut": 0, "posted": 0, "acknowledged": 0, "retried": 0, "dead": 0}
    with client_for(concurrency) as client:
        while not stop.is_set():
            try:
                r = send_due(store, cfg, client, concurrency=concurrency)
            except redis.RedisError as exc:
                log.warning("webhooks: %s", exc)
                stop.wait(interval_s)
                continue
            for name in totals:
                totals[name] += getattr(r, name)
            if not r.posted and not r.cut:
                stop.wait(interval_s)
    return totals
