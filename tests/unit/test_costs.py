"""What a campaign costs, asked of the real simulator (in-process transport) with the guards on a real
redis-server: a quote is what the same send is billed, the provider's per-minute rules are kept by our
guards before the provider has to refuse, the balance check refuses what the balance cannot pay, and a
quote holds a login slot like any request (and takes no second one inside a batch's slot)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from scheduler.campaigns import CampaignSpec
from scheduler.guards import Answer, SlotResult
from worker import costs
from worker.costs import (
    Affordability,
    BalanceLimit,
    NoSlot,
    ProviderError,
    Quote,
    QuoteLimit,
    affordability,
    affordable,
    batch_quote,
    check_balance,
    quote_campaign,
    quote_lines,
    staged_batches,
)
from worker.runtime import Runtime
from worker.settings import Settings
from worker.sim import SimConfig, SimTransport, Simulator
from worker.smsc.client import SmscClient
from worker.smsc.requests import SendOptions

LOGIN, PASSWORD = "acme", "acme-password"
LONG = "Dear customer, " + "your parcel is on its way and will arrive tomorrow. " * 3  # 2 parts of GSM 7-bit
PHONES = [f"+7900{i:07d}" for i in range(1, 7)]


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(login=LOGIN, password=PASSWORD, seed=3, price_per_part=Decimal("2.35"),
                               undeliverable_prefixes=("7999",)))


@pytest.fixture
def make_runtime(redis_server: Any, redis_client: redis.Redis, sim: Simulator) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(*, password: str = PASSWORD, **settings: Any) -> Runtime:
        s = Settings(redis_url=redis_server.url, smsc_login=LOGIN, smsc_password=SecretStr(password),
                     smsc_base_url="http://smsc.test", smsc_namespace="unit", smsc_timeout=2.0, **settings)
        client = SmscClient(base_url=s.smsc_base_url, login=LOGIN, password=SecretStr(password),
                            timeout_s=s.smsc_timeout, transport=SimTransport(sim))
        rt = Runtime(s, redis=redis_client, client=client)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.client.close()


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


def test_the_public_surface_is_pinned() -> None:
    assert sorted(costs.__all__) == sorted([
        "SAMPLE_LIMIT", "SLOT_WAIT_S", "Affordability", "BalanceCheck", "BalanceLimit", "CostError", "NoSlot",
        "ProviderError", "Quote", "QuoteLimit", "affordability", "affordable", "batch_quote", "check_balance",
        "quote_campaign", "quote_lines", "staged_batches"])


def test_a_quote_is_what_the_same_send_is_billed(rt: Runtime, sim: Simulator) -> None:
    # Three recipients of a 2-part text and one the provider cannot deliver to (it costs nothing).
    lines = [(["+79000000001", "+79000000002", "+79000000003", "+79990000004"], LONG)]
    quote = quote_lines(rt, lines)
    milli = batch_quote(rt, lines)
    before = sim.balance
    report = rt.client.send(lines=lines, request_id="q-1")
    assert quote.cost == report.cost == Decimal("14.10")  # 3 recipients x 2 parts x 2.35
    assert quote.sms == report.cnt == 6
    assert milli == int(report.cost * 1000)  # what sending records as the batch's cost_milli
    assert before - sim.balance == quote.cost
    assert quote.describe() == "cost 14.10 for 6 SMS to 4 recipients"


def test_a_personal_batch_is_quoted_line_by_line_as_it_is_billed(rt: Runtime, sim: Simulator) -> None:
    lines = [(["+79000000011"], "Hi Ann, your code is 1"), (["+79000000012", "+79000000013"], LONG)]
    quote = quote_lines(rt, lines)
    report = rt.client.send(lines=lines, request_id="q-2")
    assert (quote.cost, quote.sms) == (report.cost, report.cnt) == (Decimal("11.75"), 5)


def test_a_quote_follows_the_campaigns_options_as_the_send_does(rt: Runtime) -> None:
    lines = [(PHONES[:2], LONG)]
    cut = SendOptions(maxsms=1)  # the provider cuts each message to one part
    quote = quote_lines(rt, lines, options=cut)
    report = rt.client.send(lines=lines, request_id="q-3", options=cut)
    assert (quote.cost, quote.sms) == (report.cost, report.cnt) == (Decimal("4.70"), 2)
    assert quote_lines(rt, lines).sms == 4  # without it: two parts each


def test_the_sixth_identical_quote_in_a_minute_is_refused_by_our_guard_before_the_provider(
        rt: Runtime, sim: Simulator) -> None:
    lines = [(PHONES[:3], "Your code: 4711")]
    for _ in range(5):
        assert quote_lines(rt, lines).cost == Decimal("7.05")
    with pytest.raises(QuoteLimit) as refused:
        quote_lines(rt, lines)
    message = str(refused.value)
    assert message.startswith("at most five identical quote requests a minute: try again in ")
    assert message.endswith(" s") and "\n" not in message
    assert refused.value.retry_after_s is not None and 0 < refused.value.retry_after_s <= 60
    with pytest.raises(QuoteLimit):  # the budget path keeps the same rule, without waiting
        batch_quote(rt, lines)
    summary = sim.summary()
    assert summary["requests"] == 5  # the sixth never reached the provider
    assert summary["breaches"]["identical_cost"] == 0
    assert quote_lines(rt, [(PHONES[:4], "Your code: 4711")]).sms == 4  # another request is another count


def test_the_balance_check_refuses_what_the_balance_cannot_pay(rt: Runtime, sim: Simulator) -> None:
    sim.configure(balance=Decimal("10.00"))
    short = check_balance(rt, Decimal("12.00"))
    assert (short.ok, short.balance, short.shortfall) == (False, Decimal("10.00"), Decimal("2.00"))
    assert short.describe() == "balance 10.00 is 2.00 short of the estimate 12.00"
    assert check_balance(rt, Decimal("5")).ok


def test_at_most_ten_balance_requests_a_minute_leave(rt: Runtime, sim: Simulator) -> None:
    for _ in range(10):
        assert check_balance(rt, Decimal(1)).ok
    with pytest.raises(BalanceLimit, match=r"^at most ten balance requests a minute: try again in \d+ s$"):
        check_balance(rt, Decimal(1))
    assert sim.summary()["requests"] == 10
    assert sim.summary()["breaches"]["balance_rate"] == 0


def test_a_large_campaign_is_quoted_from_a_sample_and_extrapolated(rt: Runtime, sim: Simulator) -> None:
    batches = [[([f"+7901{b:03d}{i:04d}" for i in range(5)], "Sale today")] for b in range(10)]
    q = quote_campaign(rt, batches, sample_limit=12)
    assert (q.sampled, q.total, q.extrapolated) == (12, 50, True)
    assert q.cost == Decimal("117.50") and q.sms == 50  # 12 quoted at 2.35 each, times 50/12
    assert q.describe() == "cost 117.50 for 50 SMS to 50 recipients (estimated from 12 of 50 recipients)"
    assert sim.summary()["requests"] == 3  # 5 + 5 + the first 2 of the third batch; nothing more asked


def test_a_small_campaign_is_quoted_whole(rt: Runtime) -> None:
    batches = [[(PHONES[:3], "Hello")], [(PHONES[3:], LONG)]]
    q = quote_campaign(rt, batches)
    assert q == Quote(Decimal("21.15"), 9, sampled=6, total=6)  # 3 x 1 part + 3 x 2 parts, at 2.35


def test_a_staged_campaign_is_quoted_from_its_batches_and_checked_against_the_balance(
        rt: Runtime, sim: Simulator) -> None:
    spec = CampaignSpec(message="Your code: 4711", parts=1, account=rt.settings.account, batch_size=4,
                        campaign_id="c9")
    cid = rt.campaigns.create(spec, ((i + 1, p) for i, p in enumerate(PHONES)),
                              now_ms=int(time.time() * 1000)).campaign_id
    assert [sum(len(line[0]) for line in b) for b in staged_batches(rt, cid)] == [4, 2]
    sim.configure(balance=Decimal("10"))
    check = affordable(rt, cid)
    assert not check.ok and check.estimate == Decimal("14.10")
    assert check.describe() == ("balance 10.00 is 4.10 short of the estimate 14.10 "
                                "(cost 14.10 for 6 SMS to 6 recipients)")


def test_asked_before_the_size_is_known_the_check_gives_what_affordable_gives_for_that_size(
        rt: Runtime, sim: Simulator) -> None:
    spec = CampaignSpec(message="Your code: 4711", parts=1, account=rt.settings.account, batch_size=4,
                        campaign_id="c10")
    phones = [f"+7902{i:07d}" for i in range(40)]
    cid = rt.campaigns.create(spec, ((i + 1, p) for i, p in enumerate(phones)),
                              now_ms=int(time.time() * 1000)).campaign_id
    sim.configure(balance=Decimal("50"))
    early = affordability(rt, cid, sample_limit=10)
    # The sample's own requests only (batches of 4, 4 and the first 2 of the third) and balance.php.
    assert sim.summary()["requests"] == 4
    assert early == Affordability(Quote(Decimal("23.50"), 10, sampled=10, total=10), Decimal("50.00"))
    for total in (10, 21, 40):
        assert early.check(total) == affordable(rt, cid, total=total, sample_limit=10)
    short = early.check(40)
    assert (short.ok, short.estimate, short.quote) == (False, Decimal("94.00"),
                                                        Quote(Decimal("94.00"), 40, sampled=10, total=40))
    assert early.check(21).estimate == Decimal("49.35") and early.check(21).ok


def test_a_quote_holds_a_login_slot_and_batch_quote_uses_the_batchs_own(
        make_runtime: Callable[..., Runtime], sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = make_runtime(smsc_concurrency=1)
    monkeypatch.setattr(costs, "SLOT_WAIT_S", 0.3)
    token = "batch-execution"
    assert rt.guards.try_slot(rt.login, token, lease_ms=10_000, cap=1, probe=not rt.proven) is SlotResult.TAKEN
    lines = [(PHONES[:2], "Your code: 4711")]
    # Inside the batch's slot: no second slot (there is none to take at a cap of one).
    assert batch_quote(rt, lines, slot_held=True) == 4_700
    with pytest.raises(NoSlot, match="every login slot of acme stayed busy"):
        quote_lines(rt, [(PHONES[2:4], "Your code: 4711")])
    assert sim.summary()["requests"] == 1
    rt.guards.release_slot(rt.login, token)
    assert quote_lines(rt, [(PHONES[2:4], "Your code: 4711")]).cost == Decimal("4.70")
    assert rt.guards.slots_in_use(rt.login) == 0  # every quote gave its slot back


def test_a_stopped_account_gets_no_quote(rt: Runtime, sim: Simulator) -> None:
    rt.guards.account_outcome(rt.login, Answer.AUTH, reason="error 2: wrong login or password")
    with pytest.raises(NoSlot, match="may send no request now: stopped"):
        quote_lines(rt, [(PHONES[:1], "Hi")])
    assert sim.summary()["requests"] == 0


def test_a_refused_quote_is_one_line_without_the_password_and_counts_for_the_account(
        make_runtime: Callable[..., Runtime], sim: Simulator) -> None:
    rt = make_runtime(password="wrong-secret-pw")
    with pytest.raises(ProviderError) as refused:
        quote_lines(rt, [(PHONES[:1], "Hi")])
    text = str(refused.value)
    assert text.startswith("the provider refused the quote: error 2") and "\n" not in text
    assert "wrong-secret-pw" not in text + repr(refused.value) + repr(refused.value.__cause__)
    assert rt.guards.account_state(rt.login).state == "stopped"  # as after a send's error 2: nothing more leaves
