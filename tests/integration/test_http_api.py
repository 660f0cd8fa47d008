"""The HTTP API as a real process (``python -m worker.http.serve``, what ``smsc-mailer serve`` runs: uvicorn on a
free port of 127.0.0.1) in front of a real stack: two Celery worker processes, beat, the provider simulator over
HTTP, the session redis-server.

A campaign goes in as a CSV upload, is sent by the workers and followed over HTTP until it completes; what the
API answers is what the CLI prints for it, and the provider got every recipient once. The token is in no log
file of the stack (the API's own included), nor in Redis; a body declared too large is refused before a byte
of it is sent.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.helpers import cli, last_json, no_secret_anywhere, wait_for
from worker.dev.stack import child_env
from worker.http.auth import mint_token

pytestmark = pytest.mark.integration

TOKEN, ENTRY = mint_token("full")
READ, READ_ENTRY = mint_token("read")
TEMPLATE = "{{ name }}, your order {{ order }} ships today"


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[Callable[[Mapping[str, str]], str]]:
    """``start(env) -> base URL``: the API as its own process, its output in ``tmp_path/api.log``."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: Mapping[str, str]) -> str:
        log = tmp_path / "api.log"
        out = log.open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "serve", "--host", "127.0.0.1", "--port", "0"],
                                env=child_env(env), stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)

        def listening() -> str:
            """the API prints its URL"""
            assert proc.poll() is None, log.read_text()
            lines = [ln for ln in log.read_text().splitlines() if ln.startswith("api listening on ")]
            return lines[0].split()[-1] if lines else ""

        return str(wait_for(listening, timeout_s=30, poll_s=0.1))

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def clients_csv(n: int) -> bytes:
    lines = ["phone,name,order"] + [f"+7904{i:07d},Client {i},{4700 + i}" for i in range(n)]
    lines.insert(6, "+79049999999,Nobody,")  # line 7: the template uses 'order'
    return ("\n".join(lines) + "\n").encode()


def test_a_campaign_uploaded_over_http_is_sent_by_the_workers_and_followed_until_completed(
        celery_stack: Any, redis_client: Any, api_server: Any, tmp_path: Path) -> None:
    stack = celery_stack(workers=2, concurrency=4, sim_options={"latency_ms": 20}, env={"SMSC_BATCH_SIZE": "100"})
    base = api_server({**stack.env, "SMSC_API_TOKENS": f"{ENTRY},{READ_ENTRY}"})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=60) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.post("/v1/campaigns", headers={"Authorization": f"Bearer {READ}"},
                         json={"phones": ["+79001234567"], "message": "x"}).status_code == 403

        r = http.post("/v1/campaigns", data={"template": TEMPLATE, "sender": "MyShop"},
                      files={"file": ("clients.csv", clients_csv(600), "text/csv")},
                      headers={**auth, "Idempotency-Key": "import-2026-12-01"})
        assert r.status_code == 201, r.text
        receipt = r.json()
        cid = receipt["campaign_id"]
        assert (receipt["total"], receipt["invalid"]) == (600, 1)
        assert receipt["rejected"] == [{"line": 7, "column": "order", "reason": "empty (the template uses it)"}]
        again = http.post("/v1/campaigns", data={"template": TEMPLATE, "sender": "MyShop"},
                          files={"file": ("clients.csv", clients_csv(600), "text/csv")},
                          headers={**auth, "Idempotency-Key": "import-2026-12-01"})
        assert again.status_code == 200 and again.json()["campaign_id"] == cid

        deadline = time.monotonic() + 240
        while True:
            st = http.get(f"/v1/campaigns/{cid}", headers=auth).json()
            assert st["sent"] + st["failed"] + st["cancelled"] + st["pending"] == st["total"] == 600, st
            if st["state"] == "completed":
                break
            assert time.monotonic() < deadline, f"campaign {cid} did not complete: {st}"
            time.sleep(0.3)
        assert (st["sent"], st["failed"], st["personal"]) == (600, 0, True)

        # what the API answers is what the CLI prints; the provider got each recipient once, with its text
        printed = last_json(cli(stack.env, "status", cid, "--json"))
        answered = http.get(f"/v1/campaigns/{cid}", headers=auth).json()
        for key in ("state", "total", "sent", "failed", "sms", "cost", "batches", "personal", "sender"):
            assert answered[key] == printed[key], key
        phones = stack.simulator.phones()
        assert len(phones) == 600 and set(phones.values()) == {1}
        texts = {m["phone"]: m["text"] for m in stack.simulator.record(limit=1000)}
        assert texts["79040000003"] == "Client 3, your order 4703 ships today"

        # the report's rows are the CLI's: the ledger's columns (the delivery's may move on between the two reads)
        report = http.get(f"/v1/campaigns/{cid}/report", headers=auth)
        out = tmp_path / "report.csv"
        cli(stack.env, "report", cid, "--csv", str(out))
        ours, theirs = (list(csv.reader(io.StringIO(t))) for t in (report.text, out.read_text()))
        assert ours[0] == theirs[0] and len(ours) == 601
        assert sorted(r[:7] for r in ours[1:]) == sorted(r[:7] for r in theirs[1:])

        # a client's mistake: the token in a query string too; the access log keeps the path only
        assert http.get(f"/v1/campaigns?token={TOKEN}", headers=auth).status_code == 200

    log = (tmp_path / "api.log").read_text()
    assert "POST /v1/campaigns 201" in log and f"GET /v1/campaigns/{cid} 200" in log
    no_secret_anywhere(stack, tmp_path, TOKEN, READ, stack.env["SMSC_PASSWORD"])


def test_a_body_declared_too_large_is_refused_before_it_is_sent(
        redis_server: Any, redis_client: Any, api_server: Any) -> None:
    base = api_server({"REDIS_URL": redis_server.url, "SMSC_API_TOKENS": ENTRY, "SMSC_API_MAX_UPLOAD": "65536"})
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None and port is not None
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /v1/campaigns HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + TOKEN.encode() +
                     b"\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000000\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["type"].endswith(":too-large")
