"""Webhooks: signed, retried with back-off while the app is down, at least once, de-duplicable."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from scheduler.campaigns import Campaigns
from scheduler.delivery import DeliveryStore, Status
from scheduler.keys import Keys
from scheduler.ledger import Ledger
from tests.unit.delivery_helpers import phone, send_campaign
from worker.delivery.config import DeliveryConfig
from worker.delivery.webhooks import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    client_for,
    run_webhooks,
    send_due,
    verify,
)

SECRET = "whsec-test"


class App(http.server.BaseHTTPRequestHandler):
    """The app's webhook endpoint: ``mode`` "up", "down" (503), or "lose" (processes, then cuts the answer)."""

    protocol_version = "HTTP/1.1"
    posts: list[dict[str, Any]]
    mode: str
    lock: threading.Lock

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verify(SECRET, body, self.headers[TIMESTAMP_HEADER], self.headers[SIGNATURE_HEADER])
        with self.lock:
            mode = type(self).mode
            if mode != "down":
                self.posts.append({"key": self.headers["Idempotency-Key"], "event": self.headers[EVENT_HEADER],
                                   "body": body, "signed": ok})
        if mode == "lose":
            self.close_connection = True
            self.connection.close()
            return
        code = 503 if mode == "down" else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def app() -> Iterator[tuple[str, type[App]]]:
    cls = type("A", (App,), {"posts": [], "mode": "up", "lock": threading.Lock()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), cls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/smsc", cls
    server.shutdown()
    server.server_close()


def _final_statuses(refs: list[str], per_batch: int) -> list[Status]:
    out = []
    for b, ref in enumerate(refs):
        for i in range(per_batch):
            k = b * per_batch + i
            out.append(Status(ref, i, 1 if k % 5 else 20, 0 if k % 5 else 13, 1_700_000_000 + k, phone(k)))
    return out


def _cfg(**kw: Any) -> DeliveryConfig:
    return DeliveryConfig(webhook_secret=SECRET, **{"webhook_retry_s": 0.1, "webhook_retry_cap_s": 0.4,
                                                    "webhook_timeout_s": 2.0, **kw})


def test_each_final_state_reaches_the_app_signed_once_per_event(app: tuple[str, type[App]],
                                                               redis_client: redis.Redis, keys: Keys,
                                                               campaigns: Campaigns, ledger: Ledger) -> None:
    url, cls = app
    refs = send_campaign(campaigns, ledger, 40, 20)
    store = DeliveryStore(redis_client, keys)
    store.set_webhook("c1", url)
    store.apply(_final_statuses(refs, 20))
    store.finish("c1")
    with client_for() as client:
        r = send_due(store, _cfg(), client)
    # two batches' final states, then 'completed' and (every recipient final) 'delivered_final'
    assert (r.cut, r.acknowledged, r.retried) == (2, 4, 0)
    assert all(p["signed"] for p in cls.posts)
    bodies = [json.loads(p["body"]) for p in cls.posts if p["event"] == "delivery.final"]
    recipients = {x["phone"]: x for b in bodies for x in b["recipients"]}
    assert len(recipients) == 40 and recipients[phone(5)]["state"] == "undeliverable"
    assert recipients[phone(5)]["reason"] == "cannot be delivered (subscriber blocked)"
    assert recipients[phone(1)] == {"phone": phone(1), "state": "delivered", "status": 1, "err": 0,
                                    "reason": "delivered", "at": "2023-11-14T22:13:21Z"}
    assert {p["key"] for p in cls.posts} == {"t:d:c1:0:1", "t:d:c1:1:1", "t:c:c1:completed",
                                             "t:c:c1:delivered_final"}
    final = next(json.loads(p["body"]) for p in cls.posts if p["event"] == "campaign.delivered_final")
    assert final["delivery"] == {"delivered": 32, "failed": 8, "pending": 0, "unknown": 0,
                                 "by_state": {"delivered": 32, "undeliverable": 8}}
    assert store.outbox() == {"waiting": 0, "dead": 0, "uncut_batches": 0}


def test_an_app_down_for_a_while_gets_every_event_afterwards_and_duplicates_share_their_key(
        app: tuple[str, type[App]], redis_client: redis.Redis, keys: Keys, campaigns: Campaigns,
        ledger: Ledger) -> None:
    url, cls = app
    refs = send_campaign(campaigns, ledger, 200, 20)
    store = DeliveryStore(redis_client, keys, default_webhook=True)
    stop = threading.Event()
    cls.mode = "down"
    sender = threading.Thread(target=run_webhooks, args=(store, _cfg(webhook_url=url), stop),
                              kwargs={"interval_s": 0.05})
    sender.start()
    try:
        store.apply(_final_statuses(refs, 20))
        time.sleep(1.5)  # down: every attempt refused, retried with back-off
        tries = {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.webhook_tries).items()}
        assert len(tries) == 10 and min(int(v.split(",")[0]) for v in tries.values()) >= 2
        cls.mode = "lose"  # the app takes the posts but its answers are lost: the same events come again
        time.sleep(0.6)
        cls.mode = "up"
        deadline = time.monotonic() + 10
        while store.outbox()["waiting"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        sender.join()
    by_key: dict[str, set[bytes]] = {}
    for p in cls.posts:
        by_key.setdefault(p["key"], set()).add(p["body"])
    assert len(by_key) == 10 and all(len(bodies) == 1 for bodies in by_key.values())  # duplicates identical
    assert len(cls.posts) > 10  # some came twice
    phones = {x["phone"] for bodies in by_key.values() for b in bodies for x in json.loads(b)["recipients"]}
    assert phones == {phone(i) for i in range(200)}  # none lost
    assert store.outbox() == {"waiting": 0, "dead": 0, "uncut_batches": 0}


def test_an_event_is_given_up_after_its_time_and_kept_as_dead(app: tuple[str, type[App]],
                                                            redis_client: redis.Redis, keys: Keys,
                                                            campaigns: Campaigns, ledger: Ledger) -> None:
    url, cls = app
    refs = send_campaign(campaigns, ledger, 5, 5)
    store = DeliveryStore(redis_client, keys, default_webhook=True)
    store.apply(_final_statuses(refs, 5))
    cls.mode = "down"
    cfg = _cfg(webhook_url=url, webhook_give_up_s=0.5)
    with client_for() as client:
        deadline = time.monotonic() + 5
        while not store.outbox()["dead"] and time.monotonic() < deadline:
            send_due(store, cfg, client)
            time.sleep(0.05)
    assert store.outbox() == {"waiting": 0, "dead": 1, "uncut_batches": 0}
    assert redis_client.hexists(keys.webhook_events, "d:c1:0:1")  # its content stays for an operator


def test_verify_refuses_a_changed_body_another_secret_and_an_old_timestamp() -> None:
    from worker.delivery.webhooks import sign

    body, ts = b'{"a":1}', int(time.time())
    sig = sign(SECRET, ts, body)
    assert verify(SECRET, body, str(ts), sig)
    assert not verify(SECRET, b'{"a":2}', str(ts), sig)
    assert not verify("other", body, str(ts), sig)
    assert not verify(SECRET, body, str(ts - 3600), sign(SECRET, ts - 3600, body))
