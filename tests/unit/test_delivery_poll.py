"""Polling: statuses settled through status.php within every limit, matched to the simulator's truth."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from scheduler.campaigns import CampaignSpec
from scheduler.delivery import DeliveryStore
from scheduler.ledger import server_time_ms
from worker.delivery.config import DeliveryConfig
from worker.delivery.matching import ref_of
from worker.delivery.poller import make_store, poll_batch, poll_due, run_poller, sends_first, tick
from worker.delivery.report import REPORT_COLUMNS, campaign_state, delivery_status, report_rows
from worker.delivery.states import state_of_status
from worker.runtime import Runtime
from worker.sending import process_batch, request_id
from worker.settings import Settings
from worker.sim import SimConfig, SimTransport, Simulator
from worker.smsc.client import SmscClient

LOGIN, PASSWORD = "acme", "acme-password"
MIXED = {1: 0.8, 3: 0.05, 20: 0.08, 22: 0.02, 25: 0.02}  # 0.03 never final


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(login=LOGIN, password=PASSWORD, seed=11,
                               delivery={"enabled": True, "rates": MIXED, "delay_s": 0.05, "spread": 0.3,
                                         "max_delay_s": 0.5}))


@pytest.fixture
def make_runtime(redis_server: Any, redis_client: redis.Redis, sim: Simulator) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(**settings: Any) -> Runtime:
        s = Settings(redis_url=redis_server.url, smsc_login=LOGIN, smsc_password=SecretStr(PASSWORD),
                     smsc_base_url="http://smsc.test", smsc_namespace="unit", smsc_timeout=2.0, **settings)
        client = SmscClient(base_url=s.smsc_base_url, login=LOGIN, password=SecretStr(PASSWORD),
                            timeout_s=s.smsc_timeout, transport=SimTransport(sim))
        rt = Runtime(s, redis=redis_client, client=client)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.client.close()


def send_all(rt: Runtime, n: int, *, batch_size: int = 100, cid: str = "c1") -> list[str]:
    spec = CampaignSpec(message="hi", parts=1, account=rt.settings.account, batch_size=batch_size, campaign_id=cid)
    rt.campaigns.create(spec, ((i + 1, f"+7901{i:07d}") for i in range(n)))
    refs = rt.ledger.claim(window=10_000, claim_lease_ms=60_000, max_claim=10_000)
    for ref in refs:
        assert process_batch(rt, ref).verdict == "sent"
    assert rt.campaigns.status(cid)["state"] == "completed"
    return refs


def truth_of(sim: Simulator) -> dict[tuple[str, str], dict[str, Any]]:
    return {(t["id"], t["phone"]): t for t in sim.truth(0, 100_000)}


def test_ref_of_reads_back_every_request_id_of_its_namespace() -> None:
    for ns in ("smsc", "unit", "a.b"):
        for ref in ("c1:0", "a.b_c:12", "x:999"):
            assert ref_of(request_id(ref, namespace=ns), namespace=ns) == ref
    assert ref_of(request_id("c1:3", namespace="other"), namespace="unit") is None
    assert ref_of("123456", namespace="smsc") is None


def test_a_poll_settles_every_recipient_as_the_provider_knows_it(make_runtime: Callable[..., Runtime],
                                                                 sim: Simulator) -> None:
    rt = make_runtime()
    cfg = DeliveryConfig(horizon_s=3600)
    refs = send_all(rt, 1000)
    store = make_store(rt, cfg)
    assert tick(rt, store)["batches_tracked"] == 10
    time.sleep(0.6)  # past every drawn delay
    for ref in refs:
        res = poll_batch(rt, store, cfg, ref)
        assert res.requests == 1 and res.wait_ms == 0 and res.asked == 100
    truth = truth_of(sim)
    rows = list(report_rows(store, "c1"))
    assert len(rows) == 1000 and all(len(r) == 7 + len(REPORT_COLUMNS) for r in rows)
    for r in rows:
        t = truth[(r[2], r[0].lstrip("+"))]
        want = state_of_status(t["status"]) if t["status"] else "pending"
        assert r[7] == want, (r, t)
        if t["status"]:
            assert (int(r[8]), int(r[9])) == (t["status"], t["err"])
    st = delivery_status(store, "c1", sent=1000)
    never = sum(1 for t in truth.values() if t["status"] == 0)
    assert st["pending"] == never and st["delivered"] + st["failed"] + st["pending"] + st["unknown"] == 1000
    assert st["state"] == "delivering"
    assert sim.summary()["breaches"] == dict.fromkeys(sim.summary()["breaches"], 0)


def test_the_same_list_twice_within_a_minute_waits_instead_of_breaking_the_mass_rule(
        make_runtime: Callable[..., Runtime], sim: Simulator) -> None:
    sim.configure(delivery={"rates": {}})  # nothing ever final: the same list every time
    rt = make_runtime()
    cfg = DeliveryConfig()
    (ref,) = send_all(rt, 50, batch_size=50)
    store = make_store(rt, cfg)
    assert poll_batch(rt, store, cfg, ref).requests == 1
    again = poll_batch(rt, store, cfg, ref)
    assert again.requests == 0 and 50_000 < again.wait_ms <= 60_000
    assert sim.summary()["breaches"]["status_mass"] == 0


def test_strict_mass_reading_allows_one_mass_request_a_minute_per_login(make_runtime: Callable[..., Runtime],
                                                                        sim: Simulator) -> None:
    sim.configure(strict_mass_status=True)
    rt = make_runtime(smsc_status_strict=True)
    cfg = DeliveryConfig()
    refs = send_all(rt, 200, batch_size=100)
    store = make_store(rt, cfg)
    assert poll_batch(rt, store, cfg, refs[0]).requests == 1
    assert poll_batch(rt, store, cfg, refs[1]).wait_ms > 50_000
    assert sim.summary()["breaches"]["status_mass"] == 0


def test_the_horizon_leaves_the_never_final_ones_unknown_and_the_campaign_delivered_final(
        make_runtime: Callable[..., Runtime], sim: Simulator, redis_client: redis.Redis) -> None:
    rt = make_runtime()
    cfg = DeliveryConfig(horizon_s=1.0, poll_steps_s=(0.1,))
    refs = send_all(rt, 300)
    store = make_store(rt, cfg)
    tick(rt, store)
    time.sleep(1.1)
    for ref in refs:
        poll_batch(rt, store, cfg, ref)  # the horizon's poll, then the rest unknown
    assert redis_client.zcard(rt.keys.delivery_due) == 0
    tick(rt, store)
    st = delivery_status(store, "c1", sent=300)
    never = sum(1 for t in truth_of(sim).values() if t["status"] == 0)
    assert st["state"] == "delivered_final" and st["pending"] == 0 and st["unknown"] == never > 0
    assert campaign_state("completed", st) == "delivered_final"


def test_the_poller_keeps_below_five_status_requests_at_once(make_runtime: Callable[..., Runtime],
                                                            sim: Simulator) -> None:
    sim.configure(latency_ms=30)
    rt = make_runtime()
    cfg = DeliveryConfig(poll_steps_s=(0.2, 60))
    send_all(rt, 2000, batch_size=50)
    stop = threading.Event()
    done: dict[str, int] = {}
    t = threading.Thread(target=lambda: done.update(run_poller(rt, cfg, stop, threads=8, tick_s=0.1)))
    t.start()
    store = DeliveryStore(rt.redis, rt.keys)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = delivery_status(store, "c1", sent=2000)
        if st["pending"] <= sum(1 for t in truth_of(sim).values() if t["status"] == 0):
            break
        time.sleep(0.1)
    stop.set()
    t.join()
    summary = sim.summary()
    assert done["requests"] >= 40 and summary["peak_status_inflight"] <= 4
    assert summary["breaches"] == dict.fromkeys(summary["breaches"], 0)


def test_polls_wait_while_batches_are_due_to_be_sent_but_never_longer_than_the_yield(
        make_runtime: Callable[..., Runtime], redis_client: redis.Redis) -> None:
    # A campaign sent: its batches are due for their first poll. Then a second campaign's batches are due
    # to be sent (they would keep the login's slots): the polls wait for them, up to the yield.
    rt = make_runtime()
    cfg = DeliveryConfig.from_settings(rt.settings)
    store = make_store(rt, cfg)
    send_all(rt, 300)
    tick(rt, store)
    now = server_time_ms(redis_client)
    for ref, _ in redis_client.zrange(rt.keys.delivery_due, 0, -1, withscores=True):
        redis_client.zadd(rt.keys.delivery_due, {ref: now - 10_000})  # due 10 s ago
    assert not sends_first(rt, store, 300)  # nothing to send: the polls go
    spec = CampaignSpec(message="hi", parts=1, account=rt.settings.account, batch_size=100, campaign_id="c2")
    rt.campaigns.create(spec, ((i + 1, f"+7902{i:07d}") for i in range(200)))
    assert sends_first(rt, store, 300)  # batches due to be sent: the polls wait
    assert not sends_first(rt, store, 10)  # the oldest poll has waited its yield: it goes
    assert not sends_first(rt, store, 0)  # 0: polls never wait
    assert poll_due(rt, store, max_batches=8)  # what the clock hands out when they go
