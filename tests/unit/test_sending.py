"""``process_batch`` — one batch start to finish — through every branch of the error ladder.

No Celery here: the plain function on a real redis-server (the truth) with the provider simulator as the
client's in-process transport (``worker.sim.SimTransport``), so each provider answer is forced by the
simulator's config and the outcome is read where a user reads it: the campaign's status, its report rows,
the account's state, and the simulator's own record of what it accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from scheduler.campaigns import CampaignSpec
from worker.runtime import Runtime
from worker.sending import process_batch, request_id
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


def run_until_completed(rt: Runtime, cid: str, *, timeout_s: float) -> None:
    """Run what is due, as the dispatcher would, until the campaign completes (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while rt.campaigns.status(cid)["state"] != "completed" and time.monotonic() < deadline:
        run_due(rt)
        time.sleep(0.2)


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
    rt = make_runtime(smsc_settle_horizon=1.0)
    cid = enqueue(rt, batch_size=6)
    run_due(rt)
    assert sim.summary()["messages"] == 6
    assert rt.campaigns.status(cid)["pending"] == 6  # unknown until settled
    sim.configure(delayed_answer_rate=0.0)
    run_until_completed(rt, cid, timeout_s=30)
    st = rt.campaigns.status(cid)
    assert (st["state"], st["sent"]) == ("completed", 6)
    assert set(sim.phones().values()) == {1}  # nobody twice
    # what /metrics reads: one request without an answer, its six recipients settled as sent
    f = rt.redis.hmget(rt.keys.campaign(cid), ["unknown_outcomes", "settled_sent", "settled_failed"])
    assert f == [b"1", b"6", None]


def test_a_late_acceptance_is_never_settled_too_early_and_nobody_gets_two_messages(
        make_runtime: Callable[..., Runtime], sim: Simulator) -> None:
    """The provider is still processing when we give up (timeout 1 s), takes the messages at 3 s and shows
    them in status.php at 5 s: a settlement at 'timeout + 2 s' would read -3 and send everyone again."""
    sim.configure(slow_accept_rate=1.0, slow_accept_s=3.0, status_lag_s=2.0)
    rt = make_runtime(smsc_settle_horizon=5.0)
    cid = enqueue(rt, batch_size=6)
    assert run_due(rt) == ["error"]
    sim.configure(slow_accept_rate=0.0)
    run_until_completed(rt, cid, timeout_s=40)
    st = rt.campaigns.status(cid)
    assert (st["state"], st["sent"]) == ("completed", 6)
    assert set(sim.phones().values()) == {1}  # one message each: the late acceptance was found, not repeated
    assert sim.summary()["accepted_after_client_gone"] >= 1


def test_settled_recipients_carry_the_providers_cost_and_parts(make_runtime: Callable[..., Runtime],
                                                               sim: Simulator) -> None:
    sim.configure(delayed_answer_rate=1.0, delayed_answer_s=3.0)
    rt = make_runtime(smsc_settle_horizon=0.5)
    cid = enqueue(rt, batch_size=6)
    run_due(rt)
    sim.configure(delayed_answer_rate=0.0)
    run_until_completed(rt, cid, timeout_s=30)
    st = rt.campaigns.status(cid)
    assert st["state"] == "completed" and st["sms"] == 6
    assert Decimal(st["cost"]) == sim.config.price_per_part * 6  # the provider's bill, not short of it
    assert all(r[4] for r in rows(rt, cid).values())  # every row has its cost


def test_national_numbers_the_provider_corrects_are_settled_not_sent_twice(make_runtime: Callable[..., Runtime],
                                                                           sim: Simulator) -> None:
    """Written without '+', 8 900 … is stored and echoed by the provider as 7900…; settlement must ask and
    match by that spelling, or every such recipient is sent again."""
    sim.configure(autocorrect=True, delayed_answer_rate=1.0, delayed_answer_s=3.0)
    national = [f"8900{i:07d}" for i in range(1, 7)]
    rt = make_runtime(smsc_settle_horizon=0.5)
    cid = enqueue(rt, national, batch_size=6)
    run_due(rt)
    sim.configure(delayed_answer_rate=0.0)
    run_until_completed(rt, cid, timeout_s=30)
    assert rt.campaigns.status(cid)["sent"] == 6
    assert sorted(sim.phones()) == sorted("7" + p[1:] for p in national)
    assert set(sim.phones().values()) == {1}


def test_a_poison_batch_is_quarantined_and_the_campaign_still_ends(make_runtime: Callable[..., Runtime],
                                                                   redis_client: redis.Redis,
                                                                   sim: Simulator) -> None:
    rt = make_runtime(smsc_lease=1.0, smsc_max_attempts=3)
    cid = enqueue(rt, batch_size=3)
    # Bad stored input (a phone with the list separator in it): the client refuses to build the request.
    redis_client.hset(rt.keys.batch(f"{cid}:1"), "phones", "+7900:1,+79000000005,+79000000006")
    errors = 0
    deadline = time.monotonic() + 30
    while rt.campaigns.status(cid)["state"] not in ("completed", "failed") and time.monotonic() < deadline:
        rt.ledger.sweep()
        refs = rt.ledger.claim(window=100, claim_lease_ms=1_000, max_claim=100)
        for ref in refs:
            try:
                process_batch(rt, ref)
            except ValueError:
                errors += 1
        time.sleep(0.3)
    st = rt.campaigns.status(cid)
    assert errors == 3  # the poison batch ran SMSC_MAX_ATTEMPTS times, then no more
    assert st["state"] == "completed" and st["sent"] == 3 and st["failed"] == 3 and adds_up(st)
    assert int(redis_client.hget(rt.keys.campaign(cid), "quarantined") or 0) == 3
    reasons = {r[6] for r in rows(rt, cid).values() if r[1] == "failed"}
    assert any("quarantined after 3 attempts" in r for r in reasons), reasons


def test_credentials_proven_once_let_every_fresh_process_use_the_full_cap(make_runtime: Callable[..., Runtime],
                                                                         sim: Simulator) -> None:
    first = make_runtime()
    enqueue(first)
    run_due(first)
    assert make_runtime().proven  # a fresh process with the same settings: no probe of its own
    assert not make_runtime(password="another-password").proven  # other credentials are not proven


def test_request_ids_differ_between_namespaces_and_fit_the_providers_limit() -> None:
    ids = {request_id("c1:7"), request_id("c1:7", namespace="shop"), request_id("c1:7", namespace="bank")}
    assert len(ids) == 3 and request_id("c1:7") == "c1-7"
    longest = request_id("x" * 24 + ":9999999", namespace="n" * 32)
    assert len(longest) <= 40 and longest.replace(".", "").replace("-", "").isalnum()


def test_a_proxy_refusal_is_not_a_permanent_failure(make_runtime: Callable[..., Runtime],
                                                    redis_client: redis.Redis) -> None:
    """A 403 from a proxy in front of the provider says nothing about the recipients: none fails."""
    import httpx

    rt = make_runtime()
    proxy = httpx.MockTransport(lambda request: httpx.Response(403, text="Forbidden by proxy"))
    rt._client = SmscClient(base_url="http://smsc.test", login=LOGIN, password=SecretStr(PASSWORD), timeout_s=1.0,
                            transport=proxy)
    cid = enqueue(rt, batch_size=6)
    assert run_due(rt) == ["error"]
    st = rt.campaigns.status(cid)
    assert (st["failed"], st["pending"]) == (0, 6)
    assert redis_client.hget(rt.keys.batch(f"{cid}:0"), "settle") == b"1"  # asked before anything is resent
