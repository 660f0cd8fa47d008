"""The HTTP API (``worker.http``) against the private real redis-server: what a client of it sees.

The app is the one ``smsc-mailer serve`` runs (``create_app``), called in process (Starlette's TestClient,
or httpx's ``ASGITransport`` where a test must watch the body being read); the settings are a producer's
without provider credentials (so an enqueue skips the balance check), except where a quote or a send needs
the simulator. What the API answers is compared with what the CLI prints for the same campaign
(``smsc-mailer status --json``, ``report --csv``), run as a separate process on the same Redis.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
import redis
from pydantic import SecretStr

from scheduler.keys import Keys
from worker.dev.stack import child_env
from worker.http.app import create_app
from worker.http.auth import mint_token
from worker.http.problems import PROBLEM_JSON
from worker.runtime import Runtime
from worker.sending import process_batch
from worker.settings import Settings
from worker.sim import SimConfig, SimTransport, Simulator
from worker.smsc.client import SmscClient

with warnings.catch_warnings():  # Starlette's TestClient on httpx warns that httpx2 exists
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
NS = "hapi"
FULL, FULL_ENTRY = mint_token("full")
READ, READ_ENTRY = mint_token("read")
AUTH = {"Authorization": f"Bearer {FULL}"}
AUTH_READ = {"Authorization": f"Bearer {READ}"}
PHONES = [f"+7900{i:07d}" for i in range(1, 41)]
MESSAGE = "Your code: 4711"
CSV_BAD_ROW = (b"phone,name,order\n"
               b"+79001110001,Anna,4711\n"
               b"+79001110002,Boris,\n"          # line 3: the template uses 'order'
               b"+79001110003,Clara,4713\n")
TEMPLATE = "{{ name }}, your order {{ order }} ships today"


def settings_for(redis_server: Any, **kw: Any) -> Settings:
    base: dict[str, Any] = {"redis_url": redis_server.url, "smsc_namespace": NS,
                            "smsc_api_tokens": SecretStr(f"{FULL_ENTRY},{READ_ENTRY}")}
    return Settings(_env_file=None, **{**base, **kw})  # type: ignore[call-arg]


@pytest.fixture
def s(redis_server: Any, redis_client: redis.Redis) -> Settings:
    return settings_for(redis_server)


@pytest.fixture
def client(s: Settings, redis_client: redis.Redis) -> Iterator[TestClient]:
    with TestClient(create_app(s)) as c:
        yield c


def cli(s: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``smsc-mailer ARGS`` as a separate process on the same Redis and namespace."""
    env = child_env({"REDIS_URL": s.redis_url, "SMSC_NAMESPACE": s.smsc_namespace})
    proc = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body  # type: ignore[no-any-return]


def enqueue(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/campaigns", json={"phones": PHONES, "message": MESSAGE, **body}, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


# -- tokens ------------------------------------------------------------------------------------------
def test_no_token_or_an_unknown_one_is_a_401_problem_and_a_read_token_cannot_write(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/campaigns"), 401)
    assert body["type"].endswith(":unauthorized")
    assert client.get("/v1/campaigns").headers["www-authenticate"].startswith("Bearer")
    assert_problem(client.get("/v1/campaigns", headers={"Authorization": "Bearer not-a-token"}), 401)
    assert_problem(client.get("/v1/campaigns", headers={"Authorization": f"Basic {FULL}"}), 401)
    refused = assert_problem(client.post("/v1/campaigns", json={"phones": PHONES, "message": MESSAGE},
                                         headers=AUTH_READ), 403)
    assert "read" in refused["detail"]
    assert client.get("/v1/campaigns", headers=AUTH_READ).json() == []  # nothing was queued by the refusal
    assert_problem(client.put(f"/v1/stoplist/{PHONES[0]}", headers=AUTH_READ), 403)
    assert_problem(client.post("/v1/campaigns/c1/pause", headers=AUTH_READ), 403)


def test_without_configured_tokens_every_request_is_refused(redis_server: Any, redis_client: redis.Redis) -> None:
    with TestClient(create_app(settings_for(redis_server, smsc_api_tokens=None))) as c:
        assert_problem(c.get("/v1/campaigns", headers=AUTH), 401)
        assert c.get("/healthz").json() == {"status": "ok"}  # the health check needs no token


def test_metrics_are_served_beside_the_api_to_a_token_holder(client: TestClient) -> None:
    cid = enqueue(client)["campaign_id"]
    assert_problem(client.get("/metrics"), 401)
    r = client.get("/metrics", headers=AUTH_READ)
    assert r.status_code == 200 and f'smsc_campaign_enqueued_recipients{{campaign="{cid}"}} 40.0' in r.text


# -- campaigns: the CLI's objects ----------------------------------------------------------------------
def test_enqueue_answers_the_receipt_and_status_answers_what_status_json_prints(
        client: TestClient, s: Settings, tmp_path: Path) -> None:
    r = client.post("/v1/campaigns", json={"phones": [*PHONES, "12", PHONES[0]], "message": MESSAGE,
                                           "sender": "MyShop", "window": "9-22"}, headers=AUTH)
    assert r.status_code == 201, r.text
    receipt = r.json()
    cid = receipt["campaign_id"]
    assert r.headers["location"] == f"/v1/campaigns/{cid}"
    assert (receipt["total"], receipt["invalid"], receipt["duplicates"], receipt["existing"]) == (40, 1, 1, False)
    assert receipt["rejected"] == [{"line": 41, "field": "phones", "reason": receipt["rejected"][0]["reason"]}]

    answer = client.get(f"/v1/campaigns/{cid}", headers=AUTH_READ).json()
    printed = json.loads(cli(s, "status", cid, "--json", cwd=tmp_path).stdout.splitlines()[-1])
    assert answer == printed
    assert answer["delivery"]["pending"] == 0 and answer["sender"] == "MyShop" and answer["pending"] == 40

    listed = client.get("/v1/campaigns", headers=AUTH_READ).json()
    assert listed == json.loads(cli(s, "list", "--json", cwd=tmp_path).stdout.splitlines()[-1])
    assert [c["campaign_id"] for c in listed] == [cid]


def test_an_unknown_campaign_is_a_404_problem_and_a_bad_id_a_422(client: TestClient) -> None:
    for path in ("/v1/campaigns/nope", "/v1/campaigns/nope/report"):
        assert "nope" in assert_problem(client.get(path, headers=AUTH), 404)["detail"]
    for action in ("pause", "resume", "cancel", "retry"):
        assert_problem(client.post(f"/v1/campaigns/nope/{action}", headers=AUTH), 404)
    assert_problem(client.get("/v1/campaigns/" + "x" * 25, headers=AUTH), 422)


def test_pause_resume_and_cancel_answer_the_state_and_cancel_counts_the_recipients(client: TestClient) -> None:
    cid = enqueue(client)["campaign_id"]
    assert client.post(f"/v1/campaigns/{cid}/pause", headers=AUTH).json()["state"] == "paused"
    assert client.post(f"/v1/campaigns/{cid}/pause", headers=AUTH).json()["state"] == "paused"  # idempotent
    resumed = client.post(f"/v1/campaigns/{cid}/resume", headers=AUTH, json={"max_cost": "15.50"}).json()
    assert resumed["state"] == "queued"
    assert client.get(f"/v1/campaigns/{cid}", headers=AUTH).json()["max_cost"] == "15.5"
    cancelled = client.post(f"/v1/campaigns/{cid}/cancel", headers=AUTH).json()
    assert (cancelled["state"], cancelled["cancelled_now"]) == ("cancelled", 40)
    st = client.get(f"/v1/campaigns/{cid}", headers=AUTH).json()
    assert (st["cancelled"], st["pending"]) == (40, 0)


def test_validation_errors_are_422_problems_naming_the_field_never_a_500(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/campaigns", json={"phones": PHONES, "message": MESSAGE, "batch_size": 0},
                                      headers=AUTH), 422)
    assert body["errors"][0]["field"] == "batch_size"
    assert_problem(client.post("/v1/campaigns", content=b"{not json", headers={**AUTH,
                                                                            "content-type": "application/json"}), 422)
    assert "unknown" in str(assert_problem(client.post("/v1/campaigns", json={"phones": PHONES, "message": MESSAGE,
                                                                             "unknown": 1}, headers=AUTH), 422))
    assert_problem(client.post("/v1/campaigns", json={"phones": PHONES}, headers=AUTH), 422)  # no message
    assert_problem(client.post("/v1/campaigns", json={"phones": PHONES, "message": ""}, headers=AUTH), 422)
    assert_problem(client.post("/v1/campaigns", json={"phones": PHONES, "message": MESSAGE, "at": "yesterday"},
                               headers=AUTH), 422)
    assert "template" in assert_problem(client.post("/v1/campaigns", json={"rows": [{"phone": PHONES[0]}],
                                                                          "template": "{{ nope }}"}, headers=AUTH),
                                        422)["detail"]
    assert_problem(client.post("/v1/campaigns", content=b"phones", headers={**AUTH, "content-type": "text/plain"}),
                   415)
    assert client.get("/v1/campaigns", headers=AUTH).json() == []


def test_personal_texts_as_rows_and_as_pairs(client: TestClient) -> None:
    rows = [{"phone": PHONES[0], "name": "Anna", "order": 4711}, {"phone": PHONES[1], "name": "Boris", "order": None}]
    r = client.post("/v1/campaigns", json={"rows": rows, "template": TEMPLATE}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["total"] == 1
    assert r.json()["rejected"] == [{"line": 2, "column": "order", "field": "rows",
                                     "reason": "empty (the template uses it)"}]
    pairs = client.post("/v1/campaigns", json={"pairs": [[PHONES[2], "Anna, hi"], [PHONES[3], "Boris, hi"]]},
                        headers=AUTH).json()
    assert pairs["total"] == 2
    st = client.get(f"/v1/campaigns/{pairs['campaign_id']}", headers=AUTH).json()
    assert st["personal"] is True


# -- uploads -----------------------------------------------------------------------------------------
def test_a_csv_upload_names_a_bad_row_by_line_and_column_and_strict_refuses_it_as_a_problem(
        client: TestClient) -> None:
    form = {"template": TEMPLATE, "sender": "MyShop"}
    r = client.post("/v1/campaigns", data=form, files={"file": ("clients.csv", CSV_BAD_ROW, "text/csv")},
                    headers=AUTH)
    assert r.status_code == 201, r.text
    assert (r.json()["total"], r.json()["invalid"]) == (2, 1)
    assert r.json()["rejected"] == [{"line": 3, "column": "order", "reason": "empty (the template uses it)"}]

    r = client.post("/v1/campaigns", data={**form, "strict": "true"},
                    files={"file": ("clients.csv", CSV_BAD_ROW, "text/csv")}, headers=AUTH)
    body = assert_problem(r, 422)
    assert body["type"].endswith(":invalid-rows") and "strict" in body["detail"]
    assert body["errors"] == [{"line": 3, "column": "order", "reason": "empty (the template uses it)"}]
    assert len(client.get("/v1/campaigns", headers=AUTH).json()) == 1  # the strict one queued nothing


def test_an_xlsx_upload_and_a_phones_file_upload(client: TestClient, tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["phone", "name", "order"])
    ws.append([79001110001, "Anna", 4711])
    ws.append(["bad", "Boris", 4712])
    path = tmp_path / "clients.xlsx"
    wb.save(path)
    # a file name without a suffix: the workbook is known by its bytes
    r = client.post("/v1/campaigns", data={"template": TEMPLATE}, files={"file": ("clients", path.read_bytes())},
                    headers=AUTH)
    assert r.status_code == 201, r.text
    assert (r.json()["total"], r.json()["invalid"]) == (1, 1)
    assert r.json()["rejected"][0]["line"] == 3 and r.json()["rejected"][0]["column"] == "phone"

    phones = ("\n".join(PHONES[:5]) + "\nnot-a-number\n").encode()
    r = client.post("/v1/campaigns", data={"message": MESSAGE}, files={"file": ("phones.txt", phones)}, headers=AUTH)
    assert r.status_code == 201 and (r.json()["total"], r.json()["invalid"]) == (5, 1)
    assert r.json()["rejected"][0] == {"line": 6, "field": "file", "reason": r.json()["rejected"][0]["reason"]}


def test_an_unreadable_upload_is_named_by_its_file_name_not_the_servers_temporary_path(client: TestClient) -> None:
    r = client.post("/v1/campaigns", data={"template": TEMPLATE}, files={"file": ("old.xls", b"\xd0\xcf\x11\xe0" * 64)},
                    headers=AUTH)
    body = assert_problem(r, 422)
    assert "old.xls" in body["detail"] and "smsc-upload-" not in body["detail"]
    assert_problem(client.post("/v1/campaigns", data={"template": TEMPLATE}, headers=AUTH), 415)  # urlencoded
    missing = assert_problem(client.post("/v1/campaigns", data={"template": TEMPLATE},
                                         files={"other": ("a.csv", CSV_BAD_ROW)}, headers=AUTH), 422)
    assert "file" in missing["detail"]


def test_a_body_over_the_limit_is_refused_413_before_it_is_read(redis_server: Any, redis_client: redis.Redis) -> None:
    app = create_app(settings_for(redis_server, smsc_api_max_upload=64 * 1024))
    read: list[int] = []

    async def declared_too_large() -> tuple[int, dict[str, Any]]:
        # Content-Length over the limit: the answer comes without one receive() of the body.
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            read.append(1)
            return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/campaigns", "raw_path": b"/v1/campaigns", "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"t"), (b"content-length", b"10000000"),
                                              (b"content-type", b"multipart/form-data; boundary=x"),
                                              (b"authorization", f"Bearer {FULL}".encode())],
                 "client": ("127.0.0.1", 1), "server": ("t", 80)}
        await app(scope, receive, send)  # type: ignore[arg-type]
        return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))

    status, body = asyncio.run(declared_too_large())
    assert status == 413 and body["type"].endswith(":too-large") and read == []

    async def chunked() -> tuple[httpx.Response, int]:
        pulled = 0

        async def body() -> AsyncIterator[bytes]:  # no Content-Length: chunked, 16 KiB a chunk, 10 MiB in all
            nonlocal pulled
            yield b'{"message": "hi", "phones": ["+79001234567"'
            for _ in range(640):
                pulled += 16 * 1024
                yield b', "+79001234567"' * 1024

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post("/v1/campaigns", content=body(), headers={**AUTH, "content-type": "application/json"})
        return r, pulled

    r, pulled = asyncio.run(chunked())
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM_JSON
    assert pulled <= 64 * 1024 + 2 * 16 * 1024  # cut off at the limit, not read whole (10 MiB)


# -- Idempotency-Key -------------------------------------------------------------------------------------
def test_an_idempotency_key_makes_a_retried_post_answer_the_same_campaign(client: TestClient) -> None:
    body = {"phones": PHONES, "message": MESSAGE}
    first = client.post("/v1/campaigns", json=body, headers={**AUTH, "Idempotency-Key": "order-4711"})
    again = client.post("/v1/campaigns", json=body, headers={**AUTH, "Idempotency-Key": "order-4711"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["campaign_id"] == again.json()["campaign_id"] and again.json()["existing"] is True
    assert len(client.get("/v1/campaigns", headers=AUTH).json()) == 1

    other = client.post("/v1/campaigns", json={**body, "message": "another text"},
                        headers={**AUTH, "Idempotency-Key": "order-4711"})
    assert first.json()["campaign_id"] in assert_problem(other, 409)["detail"]
    assert len(client.get("/v1/campaigns", headers=AUTH).json()) == 1

    # a request refused for its content binds no key: the corrected one goes through with it
    assert_problem(client.post("/v1/campaigns", json={**body, "message": ""},
                               headers={**AUTH, "Idempotency-Key": "order-4712"}), 422)
    fixed = client.post("/v1/campaigns", json=body, headers={**AUTH, "Idempotency-Key": "order-4712"})
    assert fixed.status_code == 201 and fixed.json()["campaign_id"] != first.json()["campaign_id"]


def test_an_idempotency_key_on_an_upload_covers_the_files_bytes(client: TestClient) -> None:
    def post(data: bytes) -> httpx.Response:
        r: httpx.Response = client.post("/v1/campaigns", data={"template": TEMPLATE}, files={"file": ("c.csv", data)},
                                        headers={**AUTH, "Idempotency-Key": "upload-1"})
        return r

    first, again = post(CSV_BAD_ROW), post(CSV_BAD_ROW)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["campaign_id"] == again.json()["campaign_id"]
    assert_problem(post(CSV_BAD_ROW.replace(b"Anna", b"Anya")), 409)


# -- dry run, quote, report, retry -----------------------------------------------------------------------
def test_a_dry_run_answers_the_plan_and_queues_nothing(client: TestClient, s: Settings, tmp_path: Path) -> None:
    r = client.post("/v1/campaigns", json={"phones": PHONES, "message": MESSAGE, "period": 1, "freq": 15,
                                           "dry_run": True}, headers=AUTH)
    assert r.status_code == 200, r.text
    plan = r.json()
    phones = tmp_path / "phones.txt"
    phones.write_text("\n".join(PHONES) + "\n")
    printed = json.loads(cli(s, "enqueue", "--phones-file", str(phones), "--message", MESSAGE, "--period", "1",
                             "--freq", "15", "--dry-run", "--json", cwd=tmp_path).stdout.splitlines()[-1])
    assert set(plan) == set(printed) | {"rejected", "warnings"}
    same = ("total", "invalid", "duplicates", "parts", "sms", "sms_estimate", "batches", "batch_size", "zone", "queued")
    assert {k: plan[k] for k in same} == {k: printed[k] for k in same}
    assert [g["recipients"] for g in plan["groups"]] == [g["recipients"] for g in printed["groups"]] == [10] * 4
    assert plan["groups"][0]["due"].endswith("UTC+3 (Moscow)")
    assert client.get("/v1/campaigns", headers=AUTH).json() == []


def test_a_quote_asks_the_provider_and_without_credentials_is_a_503(
        client: TestClient, redis_server: Any, simulator: Any) -> None:
    assert_problem(client.post("/v1/quote", json={"phones": PHONES, "message": MESSAGE}, headers=AUTH_READ), 503)
    s = settings_for(redis_server, smsc_base_url=simulator.url, smsc_login=simulator.login,
                     smsc_password=SecretStr(simulator.password))
    with TestClient(create_app(s)) as c:
        r = c.post("/v1/quote", json={"phones": PHONES, "message": MESSAGE}, headers=AUTH_READ)
        assert r.status_code == 200, r.text
        q = r.json()
        assert q["sms"] == 40 and q["recipients"] == 40 and float(q["cost"]) > 0
        assert c.get("/v1/campaigns", headers=AUTH).json() == []  # nothing queued, nothing sent
        assert simulator.phones() == {}


def test_the_report_is_the_csv_report_writes_streamed_in_chunks(client: TestClient, s: Settings,
                                                               tmp_path: Path) -> None:
    phones = [f"+7901{i:07d}" for i in range(1_200)]
    r = client.post("/v1/campaigns", json={"phones": phones, "message": MESSAGE}, headers=AUTH)
    cid = r.json()["campaign_id"]
    with client.stream("GET", f"/v1/campaigns/{cid}/report", headers=AUTH_READ) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
        assert "content-length" not in resp.headers  # streamed, not built whole
        chunks = list(resp.iter_raw())
    got = b"".join(chunks)
    out = tmp_path / "report.csv"
    cli(s, "report", cid, "--csv", str(out), cwd=tmp_path)
    assert got == out.read_bytes()
    rows = list(csv.reader(io.StringIO(got.decode())))
    assert rows[0][:3] == ["phone", "state", "provider_id"] and len(rows) == 1_201


def test_retry_makes_the_follow_up_of_the_failed_recipients(redis_server: Any, redis_client: redis.Redis) -> None:
    s = settings_for(redis_server, smsc_login="acme", smsc_password=SecretStr("acme-password"),
                     smsc_base_url="http://smsc.test", smsc_timeout=1.0)
    sim = Simulator(SimConfig(login="acme", password="acme-password", seed=7, undeliverable_prefixes=("7955",)))
    bad = [f"+7955{i:07d}" for i in range(1, 4)]
    with TestClient(create_app(s)) as c:
        cid = c.post("/v1/campaigns", json={"phones": PHONES[:10] + bad, "message": MESSAGE, "allow_partial": True},
                     headers=AUTH).json()["campaign_id"]
        sc = SmscClient(base_url=s.smsc_base_url, login="acme", password=SecretStr("acme-password"),
                        timeout_s=1.0, transport=SimTransport(sim))
        rt = Runtime(s, redis=redis_client, client=sc)
        try:
            for _ in range(20):
                if rt.campaigns.status(cid)["pending"] == 0:
                    break
                for ref in rt.ledger.claim(window=100, claim_lease_ms=60_000, max_claim=100):
                    process_batch(rt, ref)
        finally:
            sc.close()
        assert c.get(f"/v1/campaigns/{cid}", headers=AUTH).json()["failed"] == 3
        r = c.post(f"/v1/campaigns/{cid}/retry", json={"states": ["failed"]}, headers=AUTH)
        assert r.status_code == 201, r.text
        follow = r.json()
        assert follow["total"] == 3 and follow["campaign_id"] == f"{cid}.r1"
        assert c.get(f"/v1/campaigns/{cid}", headers=AUTH).json()["retries"] == [f"{cid}.r1"]
        again = c.post(f"/v1/campaigns/{cid}/retry", json={"states": ["failed"]}, headers=AUTH).json()
        assert again == {"retried": 0, "retry_of": cid, "matched": 3, "already_retried": 3, "suppressed": 0,
                         "selected": 0}
        assert_problem(c.post(f"/v1/campaigns/{cid}/retry", json={"states": ["nope"]}, headers=AUTH), 422)


# -- the stop list -------------------------------------------------------------------------------------
def test_the_stop_list_over_http_and_a_stopped_number_is_suppressed_at_intake(client: TestClient) -> None:
    r = client.put("/v1/stoplist/8 (900) 000-00-01", json={"reason": "replied STOP"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["phone"] == "+79000000001" and r.json()["added"] is True
    assert client.put("/v1/stoplist/+79000000001", headers=AUTH).status_code == 200  # already there
    entry = client.get("/v1/stoplist/79000000001", headers=AUTH_READ).json()
    assert (entry["stopped"], entry["reason"], entry["source"]) == (True, "replied STOP", "manual")
    bulk = client.post("/v1/stoplist", json={"phones": [PHONES[1], PHONES[2], "nope"]}, headers=AUTH).json()
    assert (bulk["added"], bulk["invalid"], bulk["total"]) == (2, 1, 3) and bulk["rejected"][0]["line"] == 3
    assert enqueue(client)["suppressed"] == 3  # PHONES[0..2] are +7900000000{1,2,3}
    assert client.delete("/v1/stoplist/89000000001", headers=AUTH).json()["removed"] is True
    assert client.get("/v1/stoplist/+79000000001", headers=AUTH).json()["stopped"] is False
    removed = client.post("/v1/stoplist", json={"action": "remove", "phones": PHONES[1:3]}, headers=AUTH).json()
    assert (removed["removed"], removed["total"]) == (2, 0)
    assert_problem(client.get("/v1/stoplist/12", headers=AUTH), 422)


# -- the server's side ---------------------------------------------------------------------------------
def test_the_access_log_shows_the_path_with_numbers_masked_and_never_the_token(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="worker.http.access"):
        client.get("/v1/stoplist/+79001234567?token=" + FULL, headers=AUTH_READ)
        client.get("/v1/campaigns", headers={"Authorization": "Bearer wrong-" + FULL})
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.http.access"]
    assert lines[0].startswith("GET /v1/stoplist/****4567 200 ") and "client=" in lines[0]
    assert lines[1].startswith("GET /v1/campaigns 401 ")
    assert all(FULL not in line and READ not in line and "1234567" not in line for line in lines)


def test_a_large_intake_runs_off_the_event_loop(client: TestClient, redis_client: redis.Redis) -> None:
    """While 200,000 numbers are taken in, the health check is answered (the loop is free)."""
    app = client.app
    phones = [f"+7903{i:07d}" for i in range(200_000)]

    async def both() -> list[str]:
        done: list[str] = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as c:
            async def intake() -> None:
                r = await c.post("/v1/campaigns", json={"phones": phones, "message": MESSAGE, "campaign_id": "big"},
                                 headers=AUTH)
                assert r.status_code == 201
                done.append("intake")

            async def health() -> None:
                for _ in range(2000):  # until the intake is under way (its campaign is planning)
                    if redis_client.hget(Keys(NS).campaign("big"), "state") == b"planning":
                        break
                    await asyncio.sleep(0.005)
                assert (await c.get("/healthz")).status_code == 200
                done.append("health")

            await asyncio.gather(intake(), health())
        return done

    assert asyncio.run(both()) == ["health", "intake"]


def test_the_committed_openapi_document_is_the_apps(client: TestClient) -> None:
    """Regenerate with: python -m worker.http.serve --write-openapi docs/openapi.json"""
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    served = client.get("/openapi.json").json()
    assert served == committed, "docs/openapi.json is stale: python -m worker.http.serve --write-openapi " \
                                "docs/openapi.json"
    assert {"/v1/campaigns", "/v1/campaigns/{campaign_id}", "/v1/quote", "/v1/stoplist"} <= set(served["paths"])
    assert not [p for p in served["paths"] if p.startswith("/ui")]  # the dashboard's pages are not the API


def test_api_token_prints_the_token_then_its_settings_entry() -> None:
    from click.testing import CliRunner

    from worker.http.auth import Tokens
    from worker.http.serve import api_token

    out = CliRunner().invoke(api_token, ["--scope", "read"])
    assert out.exit_code == 0
    token, entry = out.output.splitlines()
    assert len(token) >= 43 and entry.endswith(":read") and token not in entry
    s = Settings(_env_file=None, smsc_api_tokens=SecretStr(entry))  # type: ignore[call-arg]
    principal = Tokens.from_settings(s).authenticate(token)
    assert principal is not None and principal.scope == "read"
    assert Tokens.from_settings(s).authenticate(token + "x") is None


def test_a_malformed_token_entry_is_one_line_without_the_entry(redis_server: Any) -> None:
    from worker.settings import ConfigError

    with pytest.raises(ConfigError) as err:
        create_app(settings_for(redis_server, smsc_api_tokens=SecretStr(f"{FULL_ENTRY},{READ}")))
    assert "entry 2" in str(err.value) and READ not in str(err.value)



def test_serve_refuses_a_malformed_token_entry_or_a_taken_port_in_one_line(tmp_path: Path) -> None:
    def serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worker.http.serve", *args], env=child_env(env), cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)

    bad = serve({"SMSC_API_TOKENS": f"{READ}:full"}, "--port", "0")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "smsc-mailer serve: invalid settings: SMSC_API_TOKENS: entry 1 is not sha256hex:scope (64 hex digits, a "
        "colon, read or full); smsc-mailer api-token prints one"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = serve({"SMSC_API_TOKENS": FULL_ENTRY}, "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and "cannot listen on 127.0.0.1:" in busy.stderr and "Traceback" not in busy.stderr


def test_the_dashboards_campaign_page_shows_its_account_priority_and_health_findings(
        redis_server: Any, redis_client: redis.Redis) -> None:
    from worker.api import CampaignOptions, enqueue_campaign
    from worker.http.auth import COOKIE_NAME
    from worker.http.dashboard import CSRF_COOKIE

    s = settings_for(redis_server, smsc_health_due_age_s=0.05)
    enqueue_campaign(["+79001119001", "+79001119002"], "hi", campaign_id="dash1", settings=s,
                     options=CampaignOptions(priority="urgent", allow_partial=True))
    time.sleep(0.2)  # no worker runs here: its batch stays due longer than the 0.05 s limit
    with TestClient(create_app(s)) as c:
        c.cookies.set(COOKIE_NAME, READ)
        c.cookies.set(CSRF_COOKIE, "a-session-nonce")  # what the login page sets beside the token
        page = c.get("/ui/c/dash1")
    assert page.status_code == 200
    assert "Account default, priority urgent" in page.text
    assert 'data-health="due_overdue"' in page.text
    assert READ not in page.text  # the token never in a page
