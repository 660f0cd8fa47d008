"""``process_batch`` — one batch start to finish — through every branch of the error ladder.

No Celery here: the plain function on a real redis-server (the truth) with the provider simulator as the
client's in-process transport (``worker.sim.SimTransport``), so each provider answer is forced by the
simulator's config and the outcome is read where a user reads it: the campaign's status, its report rows,
the account's state, and the simulator's own record of what it accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from scheduler.campaigns import CampaignSpec
from worker.runtime import Runtime
from worker.sending import process_batch
from worker.settings import Settings
from worker.sim import SimConfig, SimTransport, Simulator
from worker.smsc.client import SmscClient

LOGIN, PASSWORD = "acme", "acme-password"
PHONES = [f"+7900{i:07d}" for i in range(1, 7)]


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(login=LOGIN, password=PASSWORD, seed=7))


@pytest.fixture
def make_runtime(redis_server: Any, redis_client: redis.Redis, sim: Simulator) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(*, password: str = PASSWORD, **settings: Any) -> Runtime:
        s = Settings(redis_url=redis_server.url, smsc_login=LOGIN, smsc_password=SecretStr(password),
                     smsc_base_url="http://smsc.test", smsc_namespace="unit", smsc_timeout=1.0,
                     **settings)
        client = SmscClient(base_url=s.smsc_base_url, login=LOGIN, password=SecretStr(password),
                            timeout_s=s.smsc_timeout, transport=SimTransport(sim))
        rt = Runtime(s, redis=redis_client, client=client)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.client.close()


def enqueue(rt: Runtime, phones: list[str] = PHONES, *, message: str = "Your code: 4711", batch_size: int = 3,
            cid: str = "c1") -> str:
    spec = CampaignSpec(message=message, parts=1, account=rt.settings.account, batch_size=batch_size,
                        campaign_id=cid)
    return rt.campaigns.create(spec, ((i + 1, p) for i, p in enumerate(phones)),
                               now_ms=int(time.time() * 1000)).campaign_id


def run_due(rt: Runtime) -> list[str]:
    """Claim what is due now and process each batch once; the verdicts."""
    refs = rt.ledger.claim(now_ms=int(time.time() * 1000), window=100, claim_lease_ms=60_000, max_claim=100)
    return [process_batch(rt, ref).verdict for ref in refs]


def rows(rt: Runtime, cid: str) -> dict[str, list[str]]:
    return {row[0]: row for row in rt.campaigns.report_rows(cid)}


def adds_up(st: dict[str, Any]) -> bool:
    return st["sent"] + st["failed"] + st["cancelled"] + st["pending"] == st["total"]


def test_every_recipient_is_sent_once_and_the_campaign_completes(make_runtime: Callable[..., Runtime],
                                                                  sim: Simulator) -> None:
    rt = make_runtime()
    cid = enqueue(rt)
    run_due(rt)
    st = rt.campaigns.status(cid)
    assert (st["state"], st["sent"], st["pending"]) == ("completed", 6, 0)
    assert sorted(sim.phones()) == sorted(p.lstrip("+") for p in PHONES)
    assert set(sim.phones().values()) == {1}
    assert {r[1] for r in rows(rt, cid).values()} == {"sent"}
    assert st["sms"] == 6 and st["cost"] != "0"


def test_an_undeliverable_number_fails_alone_with_the_providers_code(make_runtime: Callable[..., Runtime],
                                                                      sim: Simulator) -> None:
    sim.configure(undeliverable_prefixes=[PHONES[1].lstrip("+")])
    rt = make_runtime()
    cid = enqueue(rt)
    run_due(rt)
    st = rt.campaigns.status(cid)
    assert (st["state"], st["sent"], st["failed"]) == ("completed", 5, 1)
    bad = rows(rt, cid)[PHONES[1]]
    assert bad[1] == "failed" and bad[5] == "8"


def test_a_forbidden_text_fails_the_batch_with_the_providers_reason(make_runtime: Callable[..., Runtime],
                                                                     sim: Simulator) -> None:
    sim.configure(forbidden_words=["casino"])
    rt = make_runtime()
    cid = enqueue(rt, message="Win at the casino")
    run_due(rt)
    st = rt.campaigns.status(cid)
    assert (st["state"], st["failed"], st["sent"]) == ("failed", 6, 0)
    assert {r[5] for r in rows(rt, cid).values()} == {"6"}
    assert sim.summary()["messages"] == 0


def test_error_9_defers_the_batch_past_the_providers_minute_and_loses_nobody(
        make_runtime: Callable[..., Runtime], redis_client: redis.Redis, sim: Simulator) -> None:
    sim.configure(error_rates={9: 1.0})
    rt = make_runtime()
    cid = enqueue(rt, batch_size=6)
    before = int(time.time() * 1000)
    run_due(rt)
    st = rt.campaigns.status(cid)
    assert (st["pending"], st["sent"], st["failed"]) == (6, 0, 0) and st["state"] not in ("completed", "failed")
    [(_, due)] = redis_client.zrange(rt.keys.due, 0, -1, withscores=True)
    assert due >= before + 59_000  # not before the provider's minute is over
    assert st["account_state"] != "stopped"


def test_error_4_backs_off_the_whole_account(make_runtime: Callable[..., Runtime], sim: Simulator) -> None:
    sim.configure(error_rates={4: 1.0})
    rt = make_runtime()
    cid = enqueue(rt)
    run_due(rt)
    st = rt.campaigns.status(cid)
    assert st["pending"] == 6 and adds_up(st)
    assert st["account_backoffs"] >= 1
    assert (st["account_backoff_until_ms"] or 0) > time.time() * 1000


def test_a_wrong_password_is_refused_once_and_stops_the_account(make_runtime: Callable[..., Runtime],
                                                                sim: Simulator) -> None:
    rt = make_runtime(password="typo")
    cid = enqueue(rt)
    run_due(rt)
    run_due(rt)  # whatever is due again must not reach the provider
    st = rt.campaigns.status(cid)
    assert st["state"] == "paused" and st["pending"] == 6
    assert st["account_state"] == "stopped"
    assert sim.summary()["errors_answered"] == {2: 1}


def test_insufficient_funds_pauses_the_campaign_and_keeps_every_recipient(
        make_runtime: Callable[..., Runtime], sim: Simulator) -> None:
    sim.configure(balance="0")
    rt = make_runtime()
    cid = enqueue(rt)
    run_due(rt)
    st = rt.campaigns.status(cid)
    assert st["state"] == "paused" and "insufficient funds" in (st["reason"] or "")
    assert st["pending"] == 6 and adds_up(st)


def test_a_cut_connection_is_settled_through_status_php_not_resent(make_runtime: Callable[..., Runtime],
                                                                    sim: Simulator) -> None:
    """The answer is lost after the provider took the messages: the next attempt asks, and sends nothing."""
    sim.configure(delayed_answer_rate=1.0, delayed_answer_s=5.0)  # accepted, but the answer comes too late
    rt = make_runtime()
    cid = enqueue(rt, batch_size=6)
    run_due(rt)
    assert sim.summary()["messages"] == 6
    assert rt.campaigns.status(cid)["pending"] == 6  # unknown until settled
    sim.configure(delayed_answer_rate=0.0)
    deadline = time.monotonic() + 30
    while rt.campaigns.status(cid)["state"] != "completed" and time.monotonic() < deadline:
        run_due(rt)
        time.sleep(0.2)
    st = rt.campaigns.status(cid)
    assert (st["state"], st["sent"]) == ("completed", 6)
    assert set(sim.phones().values()) == {1}  # nobody twice
