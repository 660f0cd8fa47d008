"""Delivery through Celery: beat's smsc.delivery_tick and smsc.webhooks, workers' smsc.poll_batch, the CLI's
``status --json`` delivery and the report's delivery columns — each recipient as the simulator has it."""

from __future__ import annotations

import csv
import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.helpers import breaches, cli, last_json, numbers, write_phones
from worker.delivery.states import state_of_status

pytestmark = pytest.mark.integration


class _App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    posts: list[bytes] = []

    def do_POST(self) -> None:
        self.posts.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_celery_polls_and_posts_the_webhooks_until_the_campaign_is_delivered_final(
        celery_stack: Any, redis_client: Any, tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    stack = celery_stack(workers=2, concurrency=4, sim_options={"latency_ms": 20},
                         env={"SMSC_DELIVERY_HORIZON": "30", "SMSC_WEBHOOK_SECRET": "s"})
    assert stack.simulator is not None
    stack.simulator.configure(delivery={"enabled": True, "rates": {"1": 0.9, "20": 0.08}, "delay_s": 1.0,
                                        "max_delay_s": 10.0})
    recipients = numbers(5_000)
    phones = write_phones(tmp_path / "phones.txt", recipients)
    cid = last_json(cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", "Hi", "--webhook", hook,
                        "--json"))["campaign_id"]
    deadline = time.monotonic() + 180
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = last_json(cli(stack.env, "status", cid, "--json"))
        if st["delivery_state"] == "delivered_final" and not st["delivery"]["outbox"]["waiting"]:
            break
        time.sleep(1)
    assert st["delivery_state"] == "delivered_final", st
    with httpx.Client(base_url=stack.simulator.url) as c:
        truth = {t["phone"]: t for t in c.get("/_sim/truth", params={"limit": 100_000}).json()}
    want = {p: state_of_status(t["status"]) if t["status"] else "unknown" for p, t in truth.items()}
    report = tmp_path / "report.csv"
    cli(stack.env, "report", cid, "--csv", str(report))
    with report.open() as f:
        got = {r["phone"].lstrip("+"): r["delivery_state"] for r in csv.DictReader(f)}
    assert got == want
    hooked = {x["phone"].lstrip("+"): x["state"] for b in _App.posts for e in [json.loads(b)]
              if e["type"] == "delivery.final" for x in e["recipients"]}
    assert hooked == want
    d = st["delivery"]
    assert d["delivered"] + d["failed"] + d["unknown"] == 5_000 and d["pending"] == 0
    assert breaches(stack.simulator.summary()) == {}
    server.shutdown()
