"""Several SMSC accounts (SMSC_ACCOUNTS): a campaign bound to one is sent with that account's login only,
each login keeps its own guards, and an account the provider refuses stops alone.

A real redis-server; the simulator in-process with three logins of its own; ``process_batch`` as a worker runs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from scheduler.guards import SlotResult
from worker.api import CampaignOptions, enqueue_campaign
from worker.runtime import Runtime
from worker.sending import process_batch
from worker.settings import ConfigError, Settings, get_settings
from worker.sim import SimConfig, SimTransport, Simulator

ACCOUNTS = {
    "brand2": {"login": "brand2", "password": "brand2-password", "sender": "Brand2", "concurrency": 6},
    "typo": {"login": "brand3", "password": "not-the-password"},
}


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(login="main", password="main-password", seed=5,
                               logins={"brand2": "brand2-password", "brand3": "brand3-password"}))


def settings(redis_server: Any, **extra: Any) -> Settings:
    return Settings(redis_url=redis_server.url, smsc_login="main", smsc_password=SecretStr("main-password"),
                    smsc_base_url="http://smsc.test", smsc_namespace="accounts", smsc_timeout=2.0,
                    smsc_accounts=SecretStr(json.dumps(ACCOUNTS)), **extra)


@pytest.fixture
def runtime(redis_server: Any, redis_client: redis.Redis, sim: Simulator) -> Iterator[Runtime]:
    rt = Runtime(settings(redis_server), redis=redis_client, transport=SimTransport(sim))
    yield rt
    for other in {id(r): r for r in [rt, *rt._by_account.values()]}.values():
        other.client.close()


def producer(redis_server: Any) -> Settings:
    return settings(redis_server)


def run(rt: Runtime, until: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not until() and time.monotonic() < deadline:
        refs = rt.ledger.claim(now_ms=int(time.time() * 1000), window=100, claim_lease_ms=60_000, max_claim=100)
        for ref in refs:
            process_batch(rt, ref)
        if not refs:
            time.sleep(0.05)


def enqueue(redis_server: Any, cid: str, prefix: str, account: str | None) -> None:
    enqueue_campaign([f"+7{prefix}{i:06d}" for i in range(12)], "hello", campaign_id=cid, batch_size=4,
                     settings=producer(redis_server), options=CampaignOptions(account=account, allow_partial=True))


def test_each_campaign_goes_out_under_its_own_accounts_login_and_sender(
        runtime: Runtime, sim: Simulator, redis_server: Any) -> None:
    enqueue(redis_server, "main1", "9200", None)
    enqueue(redis_server, "brand1", "9210", "brand2")
    run(runtime, lambda: all(runtime.campaigns.status(c)["state"] == "completed" for c in ("main1", "brand1")))
    by_login: dict[str, set[str]] = {}
    for m in sim.record(0, 100):
        by_login.setdefault(m["login"], set()).add(m["phone"][:7])
        if m["login"] == "brand2":
            assert m["sender"] == "Brand2"  # the account's default sender
    assert by_login == {"main": {"7920000"}, "brand2": {"7921000"}}
    st = runtime.campaigns.status("brand1")
    assert (st["account_name"], st["account"], st["sent"]) == ("brand2", "brand2", 12)


def test_an_account_the_provider_refuses_stops_alone(runtime: Runtime, sim: Simulator, redis_server: Any) -> None:
    enqueue(redis_server, "good", "9220", None)
    enqueue(redis_server, "bad", "9230", "typo")
    run(runtime, lambda: runtime.campaigns.status("good")["state"] == "completed"
        and runtime.campaigns.status("bad")["state"] == "paused")
    bad, good = runtime.campaigns.status("bad"), runtime.campaigns.status("good")
    assert good["state"] == "completed" and good["sent"] == 12
    assert bad["state"] == "paused" and bad["sent"] == 0 and bad["account_state"] == "stopped"
    assert runtime.guards.account_state("main").state == "ok"
    assert not any(m["phone"].startswith("79230") for m in sim.record(0, 100))


def test_every_login_has_its_own_slots(runtime: Runtime) -> None:
    main, brand = runtime, runtime.for_account("brand2")
    main.mark_proven()
    brand.mark_proven()  # a login's first good answer lifts its probe cap of one
    taken = [main.guards.try_slot(main.login, f"m{i}", lease_ms=10_000, cap=14) for i in range(14)]
    assert taken == [SlotResult.TAKEN] * 14
    assert main.guards.try_slot(main.login, "m15", lease_ms=10_000, cap=14) is SlotResult.BUSY
    # brand2's own cap (6) is untouched by main's 14 in flight
    assert [brand.guards.try_slot(brand.login, f"b{i}", lease_ms=10_000, cap=brand.settings.smsc_concurrency)
            for i in range(7)] == [SlotResult.TAKEN] * 6 + [SlotResult.BUSY]


def test_accounts_settings_errors_are_one_line_without_the_secret(monkeypatch: pytest.MonkeyPatch,
                                                                    redis_server: Any) -> None:
    monkeypatch.setenv("SMSC_ACCOUNTS", json.dumps({"x y": {"login": "l", "password": "s3cret-pw"}}))
    get_settings.cache_clear()
    with pytest.raises(ConfigError) as e:
        get_settings()
    assert "x y" in str(e.value) and "s3cret-pw" not in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("SMSC_ACCOUNTS", json.dumps({"ok": {"login": "l"}}))
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match="password"):
        get_settings()
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="no such account"):
        enqueue_campaign(["+79240000001"], "hi", settings=producer(redis_server),
                         options=CampaignOptions(account="nope"))
