"""The login slot goes back as soon as the answer is in: the client reports the end of the exchange
before it reads the answer (the sending code releases the slot there), and a waiter is woken by a
released slot at once, not by its next poll.

Redis behaviours run on the real private redis-server (``redis_client``), which is the truth.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import redis
from pydantic import SecretStr

from scheduler.guards import Guards
from scheduler.keys import Keys
from worker.dev.stack import RedisServer
from worker.sim import SimConfig, SimTransport, Simulator
from worker.smsc.client import SmscClient
from worker.smsc.responses import parse_send

ACCT = "acct"


def _now() -> int:
    return time.time_ns() // 1_000_000


def _verified(client: redis.Redis, keys: Keys) -> None:
    client.hset(keys.account(ACCT), "verified", "1")


def test_a_waiting_execution_is_woken_by_a_released_slot_at_once(redis_client: redis.Redis,
                                                                redis_server: RedisServer) -> None:
    keys = Keys("t")
    g = Guards(redis_client, keys)
    _verified(redis_client, keys)
    assert g.try_slot(ACCT, "holder", now_ms=_now(), lease_ms=60_000, cap=1) == "taken"
    assert g.try_slot(ACCT, "waiter", now_ms=_now(), lease_ms=60_000, cap=1) == "busy"
    woke: list[float] = []

    def wait() -> None:
        waiter = Guards(redis_server.client(), keys)
        started = time.monotonic()
        waiter.wait_for_slot(ACCT, 5.0)
        woke.append(time.monotonic() - started)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    g.release_slot(ACCT, "holder")
    t.join(5)
    assert woke and 0.15 < woke[0] < 1.0, woke  # woken by the release, long before its 5 s timeout
    assert g.try_slot(ACCT, "waiter", now_ms=_now(), lease_ms=60_000, cap=1) == "taken"


def test_waiting_for_a_slot_ends_at_its_timeout_when_nothing_is_released(redis_client: redis.Redis) -> None:
    g = Guards(redis_client, Keys("t"))
    started = time.monotonic()
    assert g.wait_for_slot(ACCT, 0.1) is False
    assert 0.05 < time.monotonic() - started < 1.0


def test_wake_ups_nobody_took_are_capped(redis_client: redis.Redis) -> None:
    keys = Keys("t")
    g = Guards(redis_client, keys)
    for i in range(100):
        g.release_slot(ACCT, f"t{i}")
    assert 0 < redis_client.llen(keys.slot_freed(ACCT)) <= 16
    assert 0 < redis_client.pttl(keys.slot_freed(ACCT)) <= 60_000


def test_the_client_reports_the_end_of_the_exchange_before_it_reads_the_answer() -> None:
    sim = Simulator(SimConfig(balance=Decimal(1000)))
    calls: list[str] = []
    parse = parse_send

    def spy_parse(body: str, **kw: int) -> object:
        calls.append("parse")
        return parse(body, **kw)  # type: ignore[call-overload]

    client = SmscClient(base_url="http://sim", login="demo", password=SecretStr("demo-password"),
                        transport=SimTransport(sim))
    import worker.smsc.client as mod

    original = mod.parse_send
    mod.parse_send = spy_parse  # type: ignore[assignment]
    try:
        report = client.send(lines=[(["+79001234567"], "hi")], request_id="r-1",
                             on_answer=lambda: calls.append("answer"))
    finally:
        mod.parse_send = original
    assert report.cnt == 1
    assert calls == ["answer", "parse"]


def test_the_end_of_the_exchange_is_reported_when_the_request_fails_too() -> None:
    sim = Simulator(SimConfig(reset_rate=1.0))
    calls: list[str] = []
    client = SmscClient(base_url="http://sim", login="demo", password=SecretStr("demo-password"),
                        transport=SimTransport(sim))
    try:
        client.send(lines=[(["+79001234567"], "hi")], request_id="r-1", on_answer=lambda: calls.append("x"))
    except Exception:  # noqa: S110 - the classified error is not what this test is about
        pass
    assert calls == ["x"]
