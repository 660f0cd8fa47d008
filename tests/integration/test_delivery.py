"""Delivery end to end: real workers send through the simulator, whose drawn fates come back by polling or
by push (with the handler killed for a while), land in Redis, in the report, the status and the webhooks —
each recipient's final state equal to the simulator's truth, with zero breaches of status.php's limits.

The delivery loops (poller, webhook sender, push receiver) run in this process: they are the functions the
``smsc.*`` delivery tasks and ``smsc-mailer status-receiver`` call.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from scheduler.delivery import DeliveryStore
from tests.integration.helpers import breaches, cli, last_json, numbers, write_phones
from worker.delivery.config import DeliveryConfig
from worker.delivery.poller import make_store, run_poller
from worker.delivery.receiver import ReceiverThread, create_app
from worker.delivery.report import delivery_status, report_rows
from worker.delivery.states import funnel, state_of_status
from worker.delivery.webhooks import run_webhooks, verify
from worker.dev.stack import Stack
from worker.runtime import Runtime
from worker.settings import Settings

pytestmark = pytest.mark.integration

MIXED = {"1": 0.80, "2": 0.02, "3": 0.05, "20": 0.07, "22": 0.02, "25": 0.02}  # 0.02 never final
SECRET = "whsec-integration"


class _App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    down_until = 0.0
    posts: list[dict[str, Any]] = []
    refused = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        with cls.lock:
            down = time.monotonic() < cls.down_until
            if down:
                cls.refused += 1
            else:
                cls.posts.append({"key": self.headers["Idempotency-Key"], "body": body,
                                  "signed": verify(SECRET, body, self.headers["X-Smsc-Mailer-Timestamp"],
                                                   self.headers["X-Smsc-Mailer-Signature"])})
        self.send_response(503 if down else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def webhook_app() -> Iterator[tuple[str, type[_App]]]:
    cls = type("App", (_App,), {"posts": [], "refused": 0, "down_until": 0.0, "lock": threading.Lock()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), cls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks", cls
    server.shutdown()
    server.server_close()


def _runtime(stack: Stack) -> Runtime:
    s = Settings(redis_url=stack.redis_url, smsc_login=stack.login, smsc_password=SecretStr(stack.password or ""),
                 smsc_base_url=stack.smsc_base_url or "", smsc_namespace=stack.namespace, smsc_timeout=10.0)
    return Runtime(s)


def _truth(stack: Stack) -> dict[str, dict[str, Any]]:
    """The simulator's fate of every message, by phone (digits)."""
    assert stack.simulator is not None
    out: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=stack.simulator.url, timeout=30) as c:
        offset = 0
        while True:
            page = c.get("/_sim/truth", params={"offset": offset, "limit": 100_000}).json()
            if not page:
                return out
            for t in page:
                out[t["phone"]] = t
            offset += len(page)


def _expected_state(t: dict[str, Any]) -> str:
    return state_of_status(t["status"]) if t["status"] else "unknown"


def _run_loops(rt: Runtime, cfg: DeliveryConfig, stop: threading.Event) -> list[threading.Thread]:
    threads = [threading.Thread(target=run_poller, args=(rt, cfg, stop), kwargs={"threads": 4, "tick_s": 1.0}),
               threading.Thread(target=run_webhooks, args=(make_store(rt, cfg), cfg, stop),
                                kwargs={"interval_s": 0.2})]
    for t in threads:
        t.start()
    return threads


def _delivery_env(url: str, *, horizon_s: float, poll: bool = True) -> dict[str, str]:
    """The workers' delivery settings, as the test's own loops have them."""
    return {"SMSC_WEBHOOK_URL": url, "SMSC_WEBHOOK_SECRET": SECRET, "SMSC_DELIVERY_HORIZON": str(horizon_s),
            "SMSC_DELIVERY_POLL": "1" if poll else "0"}


def _wait_final(store: DeliveryStore, cid: str, sent: int, *, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = delivery_status(store, cid, sent=sent)
        if st["state"] == "delivered_final" and not st["outbox"]["waiting"] and not st["outbox"]["uncut_batches"]:
            return st
        time.sleep(0.5)
    raise AssertionError(f"campaign {cid} not delivered_final (and its webhooks sent) in {timeout_s} s: {st}")


def _check_against_truth(stack: Stack, store: DeliveryStore, cid: str, recipients: list[str],
                         app: type[_App], st: dict[str, Any]) -> None:
    truth = _truth(stack)
    assert len(truth) == len(recipients)
    # the report: every recipient's state, status and err as the provider has them
    rows = {r[0].lstrip("+"): r for r in report_rows(store, cid)}
    assert len(rows) == len(recipients)
    wrong = [(p, r[7:10], truth[p]) for p, r in rows.items()
             if r[7] != _expected_state(truth[p]) or (truth[p]["status"] and r[8:10] != [str(truth[p]["status"]),
                                                                                          str(truth[p]["err"])])]
    assert wrong == [], wrong[:5]
    # the status: the funnel counts the same
    want = funnel(Counter(t["status"] + 10 if t["status"] else 2 for t in truth.values()), len(truth))
    assert {k: st[k] for k in ("delivered", "failed", "pending", "unknown", "by_state")} == want
    # the webhooks: every recipient once per event key, bodies identical across duplicates, signed
    assert all(p["signed"] for p in app.posts)
    bodies: dict[str, bytes] = {}
    for p in app.posts:
        assert bodies.setdefault(p["key"], p["body"]) == p["body"]
    hooked: dict[str, str] = {}
    campaign_final = None
    for body in bodies.values():
        event = json.loads(body)
        if event["type"] == "delivery.final":
            for x in event["recipients"]:
                hooked[x["phone"].lstrip("+")] = x["state"]  # a late final after unknown replaces it
        elif event["type"] == "campaign.delivered_final":
            campaign_final = event["delivery"]
    assert hooked == {p: _expected_state(t) for p, t in truth.items()}
    assert campaign_final == want


def test_fifty_thousand_recipients_polled_match_the_providers_truth_within_the_limits(
        celery_stack: Any, redis_client: Any, tmp_path: Path, webhook_app: tuple[str, type[_App]]) -> None:
    url, app = webhook_app
    # The workers' own delivery tasks (beat's smsc.delivery_tick and smsc.webhooks) work beside the loops
    # of this test: the same settings, so that whichever takes a batch or an event does the same.
    stack = celery_stack(workers=2, concurrency=4, sim_options={"latency_ms": 20},
                         env={"SMSC_BATCH_SIZE": "500", **_delivery_env(url, horizon_s=45)})
    assert stack.simulator is not None
    stack.simulator.configure(delivery={"enabled": True, "rates": MIXED, "delay_s": 2.0, "spread": 1.0,
                                        "max_delay_s": 20.0})
    rt = _runtime(stack)
    cfg = DeliveryConfig(horizon_s=45, poll_steps_s=(5, 15, 30), webhook_url=url, webhook_secret=SECRET)
    stop = threading.Event()
    loops = _run_loops(rt, cfg, stop)
    try:
        recipients = numbers(50_000)
        phones = write_phones(tmp_path / "phones.txt", recipients)
        receipt = last_json(cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", "Hi", "--json"))
        cid = receipt["campaign_id"]
        store = make_store(rt, cfg)
        st = _wait_final(store, cid, 50_000, timeout_s=240)
    finally:
        stop.set()
        for t in loops:
            t.join()
    _check_against_truth(stack, store, cid, recipients, app, st)
    summary = stack.simulator.summary()
    assert breaches(summary) == {} and summary["peak_status_inflight"] <= 4
    assert summary["duplicates"] == 0


def test_pushed_statuses_survive_a_killed_handler_and_a_webhook_app_down_for_a_minute(
        celery_stack: Any, redis_client: Any, tmp_path: Path, webhook_app: tuple[str, type[_App]]) -> None:
    url, app = webhook_app
    app.down_until = time.monotonic() + 60  # the app's webhook endpoint is down for the first minute
    stack = celery_stack(workers=2, concurrency=4, sim_options={"latency_ms": 20},
                         env=_delivery_env(url, horizon_s=60, poll=False))
    assert stack.simulator is not None
    rx_cfg = DeliveryConfig(push_token="hook-token", push_verify=True, password=stack.password,
                            webhook_url=url)
    rx = ReceiverThread(create_app(rx_cfg, redis_url=stack.redis_url, namespace=stack.namespace))
    port = rx.port
    stack.simulator.configure(delivery={"enabled": True, "rates": MIXED, "delay_s": 4.0, "spread": 1.0,
                                        "max_delay_s": 25.0, "push_url": rx.url, "push_intermediate": True,
                                        "push_retry_s": 1.0, "push_retry_cap_s": 4.0, "push_concurrency": 8})
    rt = _runtime(stack)
    cfg = DeliveryConfig(poll=False, horizon_s=60, webhook_url=url, webhook_secret=SECRET)  # push; one poll at 60 s
    stop = threading.Event()
    loops = _run_loops(rt, cfg, stop)
    try:
        recipients = numbers(20_000)
        phones = write_phones(tmp_path / "phones.txt", recipients)
        receipt = last_json(cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", "Hi", "--json"))
        cid = receipt["campaign_id"]
        time.sleep(6)
        rx.stop()  # the handler is down: the provider keeps retrying
        killed_at = stack.simulator.summary()["delivery"]
        time.sleep(12)
        rx = ReceiverThread(create_app(rx_cfg, redis_url=stack.redis_url, namespace=stack.namespace), port=port)
        store = make_store(rt, cfg)
        st = _wait_final(store, cid, 20_000, timeout_s=240)
    finally:
        stop.set()
        for t in loops:
            t.join()
        rx.stop()
    pushed = stack.simulator.summary()["delivery"]
    assert pushed["push_failures"] > killed_at["push_failures"] and pushed["push_dropped"] == 0
    assert app.refused > 0  # the app was down at first, and still got everything
    _check_against_truth(stack, store, cid, recipients, app, st)
    summary = stack.simulator.summary()
    assert breaches(summary) == {} and summary["peak_status_inflight"] <= 4
