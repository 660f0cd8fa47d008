"""A campaign's budget on the real redis-server: reservations from many workers at once never sum past
max-cost, a refusal pauses the campaign like an operator's pause (reason ``budget``) and resume goes on
once the budget is raised, a batch's re-run replaces its own reservation."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from scheduler import budget as budget_module
from scheduler.budget import Budget, Reservation
from scheduler.campaigns import CampaignError, Campaigns, CampaignSpec
from scheduler.keys import Keys


@pytest.fixture
def budget(redis_client: redis.Redis, keys: Keys) -> Budget:
    return Budget(redis_client, keys)


def make_campaign(campaigns: Campaigns, cid: str = "c1", n: int = 40) -> str:
    spec = CampaignSpec(message="Your code: 4711", parts=1, account="acme", batch_size=5, campaign_id=cid)
    phones = ((i + 1, f"+7900{i:07d}") for i in range(n))
    return campaigns.create(spec, phones, now_ms=int(time.time() * 1000)).campaign_id


def record_cost(r: redis.Redis, keys: Keys, cid: str, ref: str, milli: int) -> None:
    """What a batch's record does with the budget: its cost counted and its reservation dropped, in one
    step (the record script's way; see scheduler.budget)."""
    pipe = r.pipeline(transaction=True)
    pipe.hincrby(keys.campaign(cid), "cost_milli", milli)
    pipe.hdel(keys.budget(cid), ref)
    pipe.execute()


def test_the_public_surface_is_pinned() -> None:
    assert sorted(budget_module.__all__) == sorted(["RESERVATIONS_TTL_MS", "Budget", "Reservation"])


def test_concurrent_reserves_from_eight_workers_never_spend_past_max_cost(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, budget: Budget) -> None:
    cid = make_campaign(campaigns)
    budget.set_max(cid, 100_000)  # 100.00
    estimate = 3_700  # every batch costs 3.70: 27 of them fit (99.90), the 28th would pass
    start, refused = threading.Barrier(8), []

    def worker(w: int) -> None:
        own = Budget(redis_client, keys)
        start.wait()
        for i in range(100):
            ref = f"{cid}:{w * 100 + i}"
            res = own.reserve(cid, ref, estimate)
            if not res.ok:
                refused.append(res)
                return
            record_cost(redis_client, keys, cid, ref, estimate)  # the provider billed the quote

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    status = campaigns.status(cid)
    assert status["cost"] == "99.9"  # 27 batches: as much as fits, and never more
    assert status["state"] == "paused"
    assert status["reason"].startswith("budget: spent ")
    assert len(refused) == 8 and all(not r.ok for r in refused)
    assert budget.reserved(cid) == {}  # nothing left reserved: every refusal reserved nothing


def test_reservations_in_flight_count_against_the_budget_until_released(
        campaigns: Campaigns, budget: Budget) -> None:
    cid = make_campaign(campaigns)
    budget.set_max(cid, 10_000)
    assert budget.reserve(cid, f"{cid}:0", 6_000) == Reservation(True, 0, 6_000, 10_000, "queued")
    held = budget.reserve(cid, f"{cid}:1", 6_000)
    assert not held.ok and held.reserved_milli == 6_000
    assert campaigns.status(cid)["reason"] == ("budget: spent 0 + in flight 6 + this batch 6 would pass "
                                                "max-cost 10; raise max-cost, then resume")
    campaigns.resume(cid)
    budget.release(cid, f"{cid}:0")  # batch 0 sent nothing after all
    assert budget.reserve(cid, f"{cid}:1", 6_000).ok


def test_a_rerun_of_the_same_batch_replaces_its_reservation_and_never_counts_twice(
        campaigns: Campaigns, budget: Budget) -> None:
    cid = make_campaign(campaigns)
    budget.set_max(cid, 10_000)
    assert budget.reserve(cid, f"{cid}:3", 7_000).ok
    # The execution crashed before its release; the batch's next run reserves again (its quote may differ).
    again = budget.reserve(cid, f"{cid}:3", 8_000)
    assert again.ok and again.reserved_milli == 8_000
    assert budget.reserved(cid) == {f"{cid}:3": 8_000}
    assert campaigns.status(cid)["state"] == "queued"


def test_the_budget_pause_is_an_ordinary_pause_that_resume_lifts_once_the_budget_is_raised(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, budget: Budget) -> None:
    cid = make_campaign(campaigns)
    budget.set_max(cid, 15_000)
    redis_client.hset(keys.campaign(cid), mapping={"state": "running", "cost_milli": 12_500})
    refused = budget.reserve(cid, f"{cid}:4", 4_500)
    assert not refused.ok and refused.state == "paused"
    status = campaigns.status(cid)
    assert status["state"] == "paused"
    assert status["reason"] == "budget: spent 12.5 + this batch 4.5 would pass max-cost 15; raise max-cost, then resume"
    assert budget.reserved(cid) == {}

    assert campaigns.resume(cid) == "running"  # resumed without a higher budget: the next batch pauses again
    assert not budget.reserve(cid, f"{cid}:4", 4_500).ok
    assert campaigns.status(cid)["state"] == "paused"

    budget.set_max(cid, 20_000)
    assert campaigns.resume(cid) == "running"
    ok = budget.reserve(cid, f"{cid}:4", 4_500)
    assert ok.ok and ok.max_milli == 20_000 and campaigns.status(cid)["reason"] is None


def test_an_operators_pause_keeps_its_reason_when_a_batch_in_flight_is_refused(
        campaigns: Campaigns, budget: Budget) -> None:
    cid = make_campaign(campaigns)
    budget.set_max(cid, 1_000)
    campaigns.pause(cid)
    assert not budget.reserve(cid, f"{cid}:0", 2_000).ok
    assert campaigns.status(cid)["reason"] == "paused by operator"


def test_a_campaign_without_a_budget_always_reserves(campaigns: Campaigns, budget: Budget) -> None:
    cid = make_campaign(campaigns)
    res = budget.reserve(cid, f"{cid}:0", 10**12)
    assert res.ok and res.max_milli is None
    budget.set_max(cid, 5_000)
    budget.set_max(cid, None)  # the budget lifted again
    assert budget.reserve(cid, f"{cid}:1", 10**12).ok


def test_an_explicit_max_overrides_the_stored_one(campaigns: Campaigns, budget: Budget) -> None:
    cid = make_campaign(campaigns)
    budget.set_max(cid, 1_000_000)
    assert not budget.reserve(cid, f"{cid}:0", 2_000, max_milli=1_000).ok


def test_the_reservations_expire_and_renew_with_each_reserve(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, budget: Budget) -> None:
    cid = make_campaign(campaigns)
    budget.set_max(cid, 10_000)
    budget.reserve(cid, f"{cid}:0", 1_000)
    ttl = redis_client.pttl(keys.budget(cid))
    assert 0 < ttl <= budget_module.RESERVATIONS_TTL_MS
    budget.release(cid, f"{cid}:0")
    assert not redis_client.exists(keys.budget(cid))  # the campaign's last release: nothing left behind


def test_bad_amounts_and_unknown_campaigns_are_one_line_errors(campaigns: Campaigns, budget: Budget) -> None:
    cid = make_campaign(campaigns)
    with pytest.raises(ValueError, match="estimate_milli must be a whole number"):
        budget.reserve(cid, f"{cid}:0", -1)
    with pytest.raises(ValueError, match="max_milli"):
        budget.set_max(cid, -5)
    with pytest.raises(CampaignError, match="no campaign with id 'nope'"):
        budget.reserve("nope", "nope:0", 1)
    with pytest.raises(CampaignError, match="no campaign"):
        budget.set_max("nope", 1)
