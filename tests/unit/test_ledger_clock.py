"""One clock (design invariant 9): the ledger decides by the Redis server's clock, whatever the worker's.

Every test here runs on a worker whose clock is an hour fast (``time.time`` patched): a lease, a due
time or a settle wait taken from it would be off by 3,600,000 ms, which every assertion would see.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.keys import Keys
from scheduler.ledger import BeginVerdict, Ledger, Outcome, server_time_ms, settle_after_ms, settle_margin_ms

ACCT = "acct"
LEASE = 30_000
SKEW_MS = 3_600_000


@pytest.fixture(autouse=True)
def fast_host(monkeypatch: pytest.MonkeyPatch) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + SKEW_MS / 1000)


def create(campaigns: Campaigns, due_ms: int, n: int = 3, cid: str = "c1") -> None:
    spec = CampaignSpec(message="hi", parts=1, account=ACCT, batch_size=n, campaign_id=cid)
    campaigns.create(spec, ((i + 1, f"+7900{i:07d}") for i in range(n)), now_ms=due_ms)


def between(client: redis.Redis, step: Callable[[], int]) -> tuple[int, int, int]:
    """(server time before, what ``step`` returned, server time after)."""
    before = server_time_ms(client)
    got = step()
    return before, got, server_time_ms(client)


def test_every_step_of_a_batch_is_timed_by_the_server_clock(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, server_time_ms(redis_client) - 10)
    ref = "c1:0"
    assert ledger.claim(window=10, claim_lease_ms=10_000, max_claim=10) == [ref]
    lease = int(redis_client.zscore(keys.leased, ref) or 0)
    assert abs(lease - (server_time_ms(redis_client) + 10_000)) < 2_000

    lo, now, hi = between(redis_client, lambda: ledger.begin(ref, token="A", exec_lease_ms=LEASE, account=ACCT).now_ms)
    assert lo <= now <= hi
    assert redis_client.zscore(keys.leased, ref) == now + LEASE
    started = int(campaigns.status("c1")["started_ms"])
    assert started == now

    margin = settle_margin_ms(deadline_s=30, horizon_s=120)
    sending = ledger.mark_sending(ref, token="A", lease_ms=LEASE, settle_margin_ms=margin)
    assert sending and lo <= sending.sent_ms <= server_time_ms(redis_client)
    assert sending.settle_after_ms == settle_after_ms(sending.sent_ms, deadline_s=30, horizon_s=120)
    assert int(redis_client.hget(keys.batch(ref), "settle_after") or 0) == sending.settle_after_ms
    assert redis_client.zscore(keys.leased, ref) == sending.sent_ms + LEASE

    # A retry after 5 s, given relative: the script adds it to the server's now.
    out = Outcome(sent=1, remaining=["+79000000001", "+79000000002"], due_in_ms=5_000)
    lo, _, hi = between(redis_client, lambda: int(ledger.record(ref, token="A", outcome=out)[0]))
    due = int(redis_client.zscore(keys.due, ref) or 0)
    assert lo + 5_000 <= due <= hi + 5_000


def test_a_batch_due_later_on_the_server_clock_is_not_claimed_by_a_fast_worker(
    ledger: Ledger, campaigns: Campaigns, redis_client: redis.Redis
) -> None:
    create(campaigns, server_time_ms(redis_client) + 30 * 60_000)  # due in half an hour
    assert ledger.claim(window=10, claim_lease_ms=10_000, max_claim=10) == []


def test_a_lease_runs_out_by_the_server_clock(ledger: Ledger, campaigns: Campaigns, redis_client: redis.Redis) -> None:
    create(campaigns, server_time_ms(redis_client) - 10)
    create(campaigns, server_time_ms(redis_client) - 10, cid="c2")
    [short] = ledger.claim(window=10, claim_lease_ms=1, max_claim=1)
    [long] = ledger.claim(window=10, claim_lease_ms=60_000, max_claim=1)
    time.sleep(0.01)
    assert ledger.expired_leases() == [short]
    assert ledger.sweep() == 1  # the other lease has a minute left on the server's clock
    assert ledger.claim(window=10, claim_lease_ms=60_000, max_claim=10) == [short]
    assert long != short


def test_the_later_of_an_absolute_and_a_relative_due_time_counts(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, server_time_ms(redis_client) - 10)
    ref = "c1:0"
    ledger.claim(window=10, claim_lease_ms=10_000, max_claim=10)
    b = ledger.begin(ref, token="A", exec_lease_ms=LEASE, account=ACCT)
    held_until = b.now_ms + 62_000  # e.g. the flood guard's answer, on the server's clock
    assert ledger.release(ref, token="A", phones=b.phones, due_at_ms=held_until, due_in_ms=1_000)
    assert redis_client.zscore(keys.due, ref) == held_until
    [ref] = ledger.claim(window=10, claim_lease_ms=10_000, max_claim=10, now_ms=held_until)
    b = ledger.begin(ref, token="B", exec_lease_ms=LEASE, account=ACCT, now_ms=held_until)
    assert b.verdict is BeginVerdict.OK
    lo = server_time_ms(redis_client)
    assert ledger.release(ref, token="B", phones=b.phones, due_at_ms=lo - 50_000, due_in_ms=1_000)
    assert lo + 1_000 <= int(redis_client.zscore(keys.due, ref) or 0) <= server_time_ms(redis_client) + 1_000


def test_the_settle_margin_is_the_deadline_plus_the_horizon() -> None:
    assert settle_margin_ms(deadline_s=30, horizon_s=120) == 150_000
    assert settle_margin_ms(deadline_s=0.0015, horizon_s=0) == 2  # never rounded down
    assert settle_after_ms(1_000, deadline_s=1, horizon_s=2) == 4_000
    with pytest.raises(ValueError):
        settle_margin_ms(deadline_s=-1, horizon_s=0)
