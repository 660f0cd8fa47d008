"""Delivery figures for ``make bench`` (functions the benchmark calls; each needs only URLs).

- :func:`bench_push_ingestion` — statuses a second through the push endpoint: the receiver as its own
  process (``python -m worker.delivery.receiver``, as deployed), posts from this process over keep-alive
  connections (requests built beforehand, a raw asyncio client, so the figure is the receiver's), every
  status answered 200 and counted in Redis before it is counted here;
- :func:`bench_polling` — statuses settled a minute by polling status.php within every limit, against a
  provider at ``base_url`` (the simulator, its delivery on): a campaign is sent first (through
  :func:`worker.sending.process_batch`), then polled by :func:`worker.delivery.poller.run_poller` until
  every recipient is final; the rate is settled statuses between the first and the last poll.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlencode, urlsplit

import redis
from pydantic import SecretStr

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.delivery import DeliveryStore, counts_of, is_final
from scheduler.keys import Keys, batch_ref
from scheduler.keys import text as _s
from scheduler.ledger import Ledger, Outcome

__all__ = ["bench_polling", "bench_push_ingestion"]


def _sent_campaign(client: redis.Redis, keys: Keys, n: int, batch_size: int, cid: str) -> list[tuple[str, str]]:
    """A campaign of ``n`` recipients recorded as sent (the ledger's own scripts); ``(request id, phone)``."""
    camp, ledger = Campaigns(client, keys), Ledger(client, keys)
    phones = [f"+7950{i:07d}" for i in range(n)]
    camp.create(CampaignSpec(message="bench", parts=1, account="bench", batch_size=batch_size, campaign_id=cid),
                ((i + 1, p) for i, p in enumerate(phones)))
    out = []
    for b in range(int(camp.fields(cid)["batches"])):
        ref, token = batch_ref(cid, b), uuid.uuid4().hex
        begun = ledger.begin(ref, token=token, exec_lease_ms=60_000, account="bench")
        ledger.mark_sending(ref, token=token, lease_ms=60_000, settle_margin_ms=1_000)
        rid = f"{cid}-{b}" if keys.namespace == "smsc" else _tagged(keys.namespace, cid, b)
        o = Outcome(sent=len(begun.phones))
        for p in begun.phones:
            o.add_row(p, "sent", msg_id=rid, parts=1)
            out.append((rid, p.lstrip("+")))
        ledger.record(ref, token=token, outcome=o)
    return out


def _tagged(namespace: str, cid: str, n: int) -> str:
    from worker.sending import request_id

    return request_id(f"{cid}:{n}", namespace=namespace)


async def _blast(host: str, port: int, requests: list[bytes], connections: int) -> tuple[int, int]:
    """Send every request over ``connections`` keep-alive connections; ``(answered 200, other)``."""
    queue = iter(requests)
    ok = bad = 0

    async def worker() -> None:
        nonlocal ok, bad
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for req in queue:
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    ok += 1
                else:
                    bad += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return ok, bad


def bench_push_ingestion(redis_url: str, *, statuses: int = 100_000, batch_size: int = 500, connections: int = 64,
                         namespace: str = "benchpush") -> dict[str, Any]:
    """Statuses a second through the push endpoint (target ≥ 5,000/s on the 2-core machine)."""
    client = redis.Redis.from_url(redis_url)
    keys = Keys(namespace)
    for key in client.scan_iter(match=keys.prefix + "*", count=1000):
        client.delete(key)
    cid = "bp" + uuid.uuid4().hex[:8]
    messages = _sent_campaign(client, keys, statuses, batch_size, cid)
    env = {**os.environ, "REDIS_URL": redis_url, "SMSC_NAMESPACE": namespace}
    proc = subprocess.Popen([sys.executable, "-m", "worker.delivery.receiver", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if "listening on" not in line:
            raise RuntimeError(f"the status receiver did not start: {line}")
        url = line.rsplit(" ", 1)[1]
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        t0 = int(time.time()) - 60
        reqs = []
        for k, (rid, phone) in enumerate(messages):
            body = urlencode({"id": rid, "phone": phone, "status": "1", "err": "0", "time": str(t0 + k % 50),
                              "type": "0"}).encode()
            reqs.append(b"POST " + parts.path.encode() + b" HTTP/1.1\r\nHost: bench\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)
        started = time.perf_counter()
        ok, bad = asyncio.run(_blast(host, port, reqs, connections))
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    fields = {_s(k): _s(v) for k, v in client.hgetall(keys.delivery(cid)).items()}
    stored = sum(n for code, n in counts_of(fields).items() if is_final(code))
    for key in client.scan_iter(match=keys.prefix + "*", count=1000):
        client.delete(key)
    return {"statuses": statuses, "answered_200": ok, "other": bad, "stored_final": stored,
            "seconds": round(elapsed, 2), "statuses_per_s": round(ok / elapsed), "connections": connections}


def bench_polling(redis_url: str, base_url: str, *, login: str, password: str, recipients: int = 50_000,
                  batch_size: int = 500, strict: bool = False, namespace: str = "benchpoll",
                  timeout_s: float = 600.0) -> dict[str, Any]:
    """Statuses settled a minute by polling within the limits. The provider at ``base_url`` must know
    delivery (the simulator with ``--delivery``) and make every message final quickly (a short
    ``--delivery-delay-s``), so that the figure is the polling's, not the provider's delivery delay."""
    from worker.delivery.config import DeliveryConfig
    from worker.delivery.poller import run_poller
    from worker.runtime import Runtime
    from worker.sending import process_batch
    from worker.settings import Settings

    s = Settings(redis_url=redis_url, smsc_login=login, smsc_password=SecretStr(password), smsc_base_url=base_url,
                 smsc_namespace=namespace, smsc_status_strict=strict, smsc_timeout=30.0)
    rt = Runtime(s)
    for key in rt.redis.scan_iter(match=rt.keys.prefix + "*", count=1000):
        rt.redis.delete(key)
    cid = "pl" + uuid.uuid4().hex[:8]
    rt.campaigns.create(CampaignSpec(message="bench", parts=1, account=s.account, batch_size=batch_size,
                                     campaign_id=cid), ((i + 1, f"+7951{i:07d}") for i in range(recipients)))
    refs = rt.ledger.claim(window=100_000, claim_lease_ms=600_000, max_claim=100_000)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ref: process_batch(rt, ref), refs))
    cfg = DeliveryConfig(poll_steps_s=(1, 61, 121), horizon_s=3600, chunk=batch_size)
    store = DeliveryStore(rt.redis, rt.keys, policy=cfg.policy)
    stop = threading.Event()
    totals: dict[str, int] = {}
    t = threading.Thread(target=lambda: totals.update(run_poller(rt, cfg, stop, threads=4, tick_s=0.5)))
    time.sleep(1.0)
    started = time.monotonic()
    t.start()
    deadline = started + timeout_s
    settled = 0
    while time.monotonic() < deadline:
        settled = sum(n for code, n in store.counts(cid).items() if is_final(code))
        if settled >= recipients:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    stop.set()
    t.join()
    for key in rt.redis.scan_iter(match=rt.keys.prefix + "*", count=1000):
        rt.redis.delete(key)
    rt.client.close()
    return {"recipients": recipients, "settled": settled, "seconds": round(elapsed, 1),
            "statuses_per_minute": round(settled / elapsed * 60), "strict": strict,
            "requests": totals.get("requests", 0), "refused_by_limits": totals.get("refused", 0), "chunk": batch_size}
