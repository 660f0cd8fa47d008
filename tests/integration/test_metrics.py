"""``/metrics`` over HTTP while real workers send a campaign: what Prometheus scrapes equals ``status --json``.

The stack (two Celery worker processes, beat, the simulator over HTTP, the session redis-server) sends a
campaign enqueued through the CLI; the metrics server runs as its own process (``python -m
worker.metrics --port 0``: uvicorn on a free port of 127.0.0.1), knowing nothing of the workers but Redis.
Every scrape is parsed as Prometheus parses it.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import cli, last_json, numbers, status, wait_for, write_phones
from worker.dev.stack import child_env

pytestmark = pytest.mark.integration

MESSAGE = "Your parcel is on its way: track it at example.com/t"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics_server() -> Iterator[Any]:
    """``start(env) -> base URL``: the metrics server as its own process, stopped after the test."""
    procs: list[subprocess.Popen[str]] = []

    def start(env: Mapping[str, str]) -> str:
        proc = subprocess.Popen([sys.executable, "-m", "worker.metrics", "--host", "127.0.0.1", "--port", "0"],
                                env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("metrics listening on "), f"the metrics server did not start: {line!r}"
        return line.split()[-1]

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    out: Samples = {}
    for fam in text_string_to_metric_families(response.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def counters(samples: Samples, cid: str) -> dict[str, float]:
    out = {"total": value(samples, "smsc_campaign_enqueued_recipients", campaign=cid),
           "pending": value(samples, "smsc_campaign_pending_recipients", campaign=cid),
           "sms": value(samples, "smsc_campaign_sms_total", campaign=cid),
           "cost": value(samples, "smsc_campaign_cost_total", campaign=cid)}
    for state in ("sent", "failed", "cancelled"):
        out[state] = value(samples, "smsc_campaign_recipients_total", campaign=cid, state=state)
    return out


def funnel(samples: Samples, cid: str) -> dict[str, float]:
    return {stage: value(samples, "smsc_campaign_delivery_funnel_recipients", campaign=cid, stage=stage)
            for stage in ("delivered", "failed", "pending", "unknown")}


def test_the_scraped_counters_add_up_while_workers_send_and_equal_status_at_the_end(
        celery_stack, redis_client, metrics_server, tmp_path: Path) -> None:
    # ~76 requests of 250 ms through 8 worker processes: a few seconds of sending, so that scrapes land mid-way
    # (the workers' clock starts a campaign the moment it is committed)
    stack = celery_stack(workers=2, concurrency=4, sim_options={"latency_ms": 250}, env={"SMSC_BATCH_SIZE": "40"})
    stack.simulator.configure(undeliverable_prefixes=["7955"])
    good, bad = numbers(3_000), numbers(40, prefix="7955")
    url = metrics_server(stack.env)
    assert value(scrape(url), "smsc_up") == 1

    phones = write_phones(tmp_path / "phones.txt", good[:1_500] + bad + good[1_500:])
    cid = last_json(cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", MESSAGE, "--json"))[
        "campaign_id"]

    # during: every scrape's counters add up to the total, and progress is visible
    seen_pending, seen_progress = False, False
    deadline = time.monotonic() + 240
    while True:
        samples = scrape(url)
        c = counters(samples, cid)
        assert c["sent"] + c["failed"] + c["cancelled"] + c["pending"] == c["total"] == 3_040, c
        seen_pending |= c["pending"] > 0
        seen_progress |= 0 < c["pending"] < c["total"]
        assert value(samples, "smsc_login_slots_in_use", login=stack.env["SMSC_LOGIN"], kind="inflight") <= 14
        if value(samples, "smsc_campaign_state", campaign=cid, state="completed") == 1:
            break
        assert time.monotonic() < deadline, f"campaign {cid} did not complete: {c}"
        time.sleep(0.2)
    assert seen_pending and seen_progress

    # after: the ledger's counters are what status --json says, to the recipient
    st = status(stack.env, cid)
    samples = scrape(url)
    assert counters(samples, cid) == {k: float(st[k]) for k in ("total", "pending", "sms", "cost", "sent",
                                                                  "failed", "cancelled")}
    assert (st["sent"], st["failed"], st["pending"]) == (3_000, 40, 0)
    assert value(samples, "smsc_campaign_finished_timestamp_seconds", campaign=cid) > 0
    assert value(samples, "smsc_campaign_due_batches", campaign=cid) == 0
    assert value(samples, "smsc_account_state", login=stack.env["SMSC_LOGIN"], state="ok") == 1
    assert value(samples, "smsc_scrape_redis_round_trips") == 3

    # the delivery funnel (statuses still arriving): equal to status's once two looks agree
    def agree() -> bool:
        st = status(stack.env, cid)
        return funnel(scrape(url), cid) == {k: float(st["delivery"][k]) for k in ("delivered", "failed",
                                                                                   "pending", "unknown")}

    wait_for(agree, timeout_s=30)
    assert sum(funnel(scrape(url), cid).values()) == 3_000
