"""Priority lanes (issue 13): urgent first, normal by weighted fair share, bulk yields but never starves.

Every claim runs ``lua/claim.lua`` on the real redis-server; the clock is stepped (``T``). Campaigns are
enqueued through :meth:`Campaigns.create` with ``extra={"priority": ...}`` (written at the claim, read
by the commit), so the lane indexes are the ones the product writes. A "batch" here is one recipient
(``batch_size=1``): the lanes count batches, whatever their size.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.keys import Keys, batch_ref, split_ref
from scheduler.keys import text as _s
from scheduler.ledger import BeginVerdict, Ledger, Outcome, Settle
from worker.dev.stack import RedisServer

T = 1_700_000_000_000
ACCT = "acct"
LEASE = 60_000
URGENT_EXTRA = 14


def phone(i: int) -> str:
    return f"+7900{i:07d}"


def create(campaigns: Campaigns, cid: str, batches: int, *, priority: str | None = None,
           weight: float | None = None, now_ms: int = T) -> None:
    extra: dict[str, str] = {}
    if priority is not None:
        extra["priority"] = priority
    if weight is not None:
        extra["weight"] = str(weight)
    spec = CampaignSpec(message="hello", parts=1, account=ACCT, batch_size=1, campaign_id=cid, extra=extra)
    campaigns.create(spec, ((i + 1, phone(i)) for i in range(batches)), now_ms=now_ms)


def claim(ledger: Ledger, n: int, *, now_ms: int = T, window: int = 100_000) -> list[str]:
    return ledger.claim(now_ms=now_ms, window=window, claim_lease_ms=LEASE, max_claim=n)


def cids(refs: Iterable[str]) -> list[str]:
    return [split_ref(r)[0] for r in refs]


def finish(ledger: Ledger, ref: str, *, now_ms: int = T) -> None:
    """One execution of the batch: begin, every recipient sent."""
    token = uuid.uuid4().hex
    b = ledger.begin(ref, token=token, exec_lease_ms=LEASE, account=ACCT, now_ms=now_ms)
    assert b.verdict is BeginVerdict.OK, (ref, b)
    out = Outcome(sent=len(b.phones))
    for p in b.phones:
        out.add_row(p, "sent", msg_id=ref)
    assert ledger.record(ref, token=token, now_ms=now_ms, outcome=out)[0]


def release(ledger: Ledger, ref: str, *, now_ms: int = T, due_in_ms: int = 0,
            settle: Settle = Settle.KEEP) -> None:
    """One execution that sent nothing: the batch is queued again (record's requeue)."""
    token = uuid.uuid4().hex
    b = ledger.begin(ref, token=token, exec_lease_ms=LEASE, account=ACCT, now_ms=now_ms)
    assert b.verdict is BeginVerdict.OK, (ref, b)
    assert ledger.release(ref, token=token, phones=b.phones, due_in_ms=due_in_ms, settle=settle, now_ms=now_ms)


def lane_keys(r: redis.Redis, keys: Keys) -> list[str]:
    """Every per-campaign lane index and every lane's rotation/wait ZSET that holds something."""
    found = [_s(k) for k in r.scan_iter(match=keys.prefix + "lane:*")]
    found += [key for lane in Keys.LANES for key in (keys.lane_rotation(lane), keys.lane_waiting(lane))
              if r.zcard(key)]
    return sorted(found)


# -- urgent ------------------------------------------------------------------------------------------


def test_urgent_batches_are_claimed_even_when_the_window_is_full_of_normal_ones(ledger: Ledger,
                                                                                campaigns: Campaigns) -> None:
    create(campaigns, "big", 100)
    assert len(claim(ledger, 100, window=20)) == 20  # the window is full of normal batches
    assert claim(ledger, 100, window=20) == []
    create(campaigns, "alert", 3, priority="urgent", now_ms=T + 1)
    assert claim(ledger, 100, window=20, now_ms=T + 1) == ["alert:0", "alert:1", "alert:2"]
    assert claim(ledger, 100, window=20, now_ms=T + 1) == []  # the normal ones still wait for room


def test_urgent_overruns_the_window_by_at_most_the_logins_fourteen(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, "big", 50)
    create(campaigns, "alert", 40, priority="urgent", now_ms=T + 1)
    assert cids(claim(ledger, 100, window=10, now_ms=T)) == ["big"] * 10
    got = claim(ledger, 100, window=10, now_ms=T + 1)
    assert cids(got) == ["alert"] * URGENT_EXTRA
    assert redis_client.zcard(keys.leased) == 10 + URGENT_EXTRA
    assert claim(ledger, 100, window=10, now_ms=T + 1) == []
    # One batch done: room for exactly one more, and it is urgent.
    finish(ledger, got[0], now_ms=T + 1)
    assert cids(claim(ledger, 100, window=10, now_ms=T + 1)) == ["alert"]


def test_urgent_comes_before_normal_and_bulk_that_were_due_long_before(ledger: Ledger,
                                                                       campaigns: Campaigns) -> None:
    create(campaigns, "news", 20)
    create(campaigns, "promo", 20, priority="bulk")
    create(campaigns, "otp", 2, priority="urgent", now_ms=T + 60_000)
    assert cids(claim(ledger, 3, now_ms=T + 60_000)) == ["otp", "otp", "news"]


def test_the_claim_names_each_batchs_lane_for_the_dispatcher_to_route_it(ledger: Ledger,
                                                                         campaigns: Campaigns) -> None:
    create(campaigns, "news", 20)
    create(campaigns, "promo", 20, priority="bulk")
    create(campaigns, "otp", 1, priority="urgent")
    got = ledger.claim_lanes(now_ms=T, window=100, claim_lease_ms=LEASE, max_claim=11)
    assert [lane for _, lane in got] == ["urgent"] + ["normal"] * 9 + ["bulk"]
    assert cids(ref for ref, _ in got) == ["otp"] + ["news"] * 9 + ["promo"]


def test_urgent_campaigns_share_their_lane_fairly(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, "u1", 10, priority="urgent")
    create(campaigns, "u2", 10, priority="urgent")
    assert cids(claim(ledger, 6)) == ["u1", "u2"] * 3


# -- normal: weighted fair share -----------------------------------------------------------------------


def test_two_large_normal_campaigns_started_together_progress_together(ledger: Ledger,
                                                                       campaigns: Campaigns) -> None:
    # 400 batches each: 200,000 recipients at the default batch size of 500.
    create(campaigns, "a", 400)
    create(campaigns, "b", 400)
    rnd = random.Random(13)
    done: Counter[str] = Counter()
    now = T
    while refs := claim(ledger, rnd.randint(1, 32), now_ms=now):
        for ref in refs:
            cid = split_ref(ref)[0]
            if rnd.random() < 0.2:
                release(ledger, ref, now_ms=now)  # e.g. the flood guard held it back: due again at once
            else:
                finish(ledger, ref, now_ms=now)
                done[cid] += 1
            # at every point within 10 % of each other's progress (in fact within one batch or two)
            assert abs(done["a"] - done["b"]) <= 0.1 * 400, done
        now += 1
    assert done == {"a": 400, "b": 400}


def test_normal_campaigns_alternate_claim_by_claim(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, "a", 400)
    create(campaigns, "b", 400)
    order = cids(claim(ledger, 800))
    assert order == ["a", "b"] * 400


def test_a_campaign_that_joins_later_is_served_in_turn_not_for_its_idle_time(ledger: Ledger,
                                                                              campaigns: Campaigns) -> None:
    create(campaigns, "early", 400)
    assert cids(claim(ledger, 100)) == ["early"] * 100
    create(campaigns, "late", 400, now_ms=T + 1)
    order = cids(claim(ledger, 40, now_ms=T + 1))
    assert Counter(order) == {"early": 20, "late": 20}  # not 100 "late" in a row to catch up


def test_a_small_campaign_enqueued_later_is_not_queued_behind_two_large_ones(ledger: Ledger,
                                                                             campaigns: Campaigns) -> None:
    create(campaigns, "a", 400)
    create(campaigns, "b", 400)
    assert len(claim(ledger, 300)) == 300
    create(campaigns, "small", 2, now_ms=T + 1)  # 1,000 recipients at the default batch size
    first, second = claim(ledger, 3, now_ms=T + 1), claim(ledger, 3, now_ms=T + 1)
    assert "small:0" in first
    assert "small:1" in second


def test_weight_gives_a_campaign_its_share_of_the_lane(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, "heavy", 400, weight=3)
    create(campaigns, "light", 400)
    got = Counter(cids(claim(ledger, 200)))
    assert abs(got["heavy"] - 150) <= 1 and abs(got["light"] - 50) <= 1, got


def test_an_unknown_priority_is_the_normal_lane(redis_client: redis.Redis, keys: Keys, ledger: Ledger,
                                                campaigns: Campaigns) -> None:
    create(campaigns, "odd", 2, priority="asap")
    create(campaigns, "plain", 2)
    assert redis_client.zcard(keys.lane("normal", "odd")) == 2
    assert cids(claim(ledger, 4)) == ["odd", "plain", "odd", "plain"]


# -- bulk: yields, never starves -----------------------------------------------------------------------


def test_bulk_gets_one_claim_in_ten_under_constant_normal_load(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, "promo", 200, priority="bulk")
    create(campaigns, "news", 400)
    rnd = random.Random(5)
    order: list[str] = []
    now = T
    while len(order) < 500:
        refs = claim(ledger, rnd.randint(1, 16), now_ms=now)
        order += cids(refs)
        if now == T + 3:  # more normal load arrives while bulk waits
            create(campaigns, "news2", 400, now_ms=now)
        now += 1
    order = order[:500]
    assert order.count("promo") == 50
    # never more than nine normal claims in a row while bulk has due batches
    assert all("promo" in order[i:i + 10] for i in range(0, 491))


def test_bulk_alone_gets_every_claim(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, "promo", 50, priority="bulk")
    assert cids(claim(ledger, 100)) == ["promo"] * 50


def test_bulk_yields_to_urgent_and_normal_in_that_order(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, "promo", 30, priority="bulk")
    create(campaigns, "news", 30)
    create(campaigns, "otp", 2, priority="urgent")
    assert cids(claim(ledger, 12)) == ["otp", "otp"] + ["news"] * 9 + ["promo"]


# -- settle first, before every lane -------------------------------------------------------------------


def test_a_batch_to_settle_first_comes_before_urgent_ones(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, "news", 5)
    [ref] = claim(ledger, 1)
    release(ledger, ref, settle=Settle.SET)  # its last request may have reached the provider
    create(campaigns, "otp", 3, priority="urgent", now_ms=T + 1)
    assert claim(ledger, 2, now_ms=T + 1) == [ref, "otp:0"]


# -- the index is an index: whatever it misses is still claimed ------------------------------------------


def _skip_index(r: redis.Redis, keys: Keys, cid: str, lane: str = "normal") -> None:
    """What a path that queues batches without the lane index leaves (or a Redis from before lanes)."""
    r.delete(keys.lane(lane, cid))
    r.zrem(keys.lane_rotation(lane), cid)
    r.zrem(keys.lane_waiting(lane), cid)


def test_batches_that_no_lane_index_holds_are_still_claimed_each_once(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    # e.g. queued by a Redis of the version before the lanes: the claim repairs the oldest into their
    # lane and takes the rest oldest due first
    create(campaigns, "old", 30)
    create(campaigns, "older", 20, now_ms=T - 1)
    create(campaigns, "otp", 5, priority="urgent", now_ms=T - 2)
    for cid, lane in (("old", "normal"), ("older", "normal"), ("otp", "urgent")):
        _skip_index(redis_client, keys, cid, lane)
    got = claim(ledger, 100)
    assert sorted(got) == sorted([batch_ref("old", n) for n in range(30)] + [batch_ref("older", n) for n in range(20)]
                                 + [batch_ref("otp", n) for n in range(5)])
    assert cids(got[:4]) == ["otp"] * 4  # the oldest (urgent) four repaired into their lane
    assert lane_keys(redis_client, keys) == []


def test_a_batch_queued_past_the_index_is_claimed_under_constant_load(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, "a", 300, now_ms=T + 1)
    create(campaigns, "b", 300, now_ms=T + 1)
    redis_client.zadd(keys.due, {"lost:0": T})  # a requeue that skipped the lane index
    redis_client.hset(keys.batch("lost:0"), mapping={"state": "queued", "phones": phone(1), "owner": ""})
    first = [r for _ in range(3) for r in claim(ledger, 1, now_ms=T + 2)]
    assert "lost:0" in first  # the oldest due: repaired into its lane and served in turn, not after 600


def test_a_stale_lane_entry_is_never_claimed(redis_client: redis.Redis, keys: Keys, ledger: Ledger,
                                             campaigns: Campaigns) -> None:
    create(campaigns, "a", 3)
    redis_client.zrem(keys.due, "a:1")  # taken off the due ZSET by a path that left its index entry
    assert claim(ledger, 10) == ["a:0", "a:2"]
    assert lane_keys(redis_client, keys) == []


def test_a_batch_requeued_for_later_waits_for_its_time_in_its_lane(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, "a", 2)
    create(campaigns, "b", 2)
    first = claim(ledger, 1)
    assert first == ["a:0"]
    release(ledger, "a:0", due_in_ms=5_000)
    assert claim(ledger, 10, now_ms=T + 4_999) == ["b:0", "a:1", "b:1"]
    assert claim(ledger, 10, now_ms=T + 5_000) == ["a:0"]


# -- every writer of the due ZSET keeps the lane index --------------------------------------------------


def test_sweep_resume_and_begin_defer_put_batches_back_into_their_lane(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, "otp", 3, priority="urgent")
    create(campaigns, "news", 50)
    refs = claim(ledger, 3, window=3)
    assert refs == ["otp:0", "otp:1", "otp:2"]
    # Nobody began them: their claim lease runs out and the sweeper puts them back, urgent again.
    assert ledger.sweep(T + LEASE + 1) == 3
    assert claim(ledger, 2, now_ms=T + LEASE + 1, window=0) == ["otp:0", "otp:1"]
    # Paused campaign: begin parks it; resume puts it back in its lane.
    campaigns.pause("otp", now_ms=T + LEASE + 1)
    b = ledger.begin("otp:0", token="x", exec_lease_ms=LEASE, account=ACCT, now_ms=T + LEASE + 1)
    assert b.verdict is BeginVerdict.PARKED
    campaigns.resume("otp", now_ms=T + LEASE + 2)
    assert sorted(claim(ledger, 2, now_ms=T + LEASE + 2, window=0)) == ["otp:0", "otp:2"]
    # The account backs off: begin defers the batch, and it comes back in its lane when due.
    redis_client.hset(keys.account(ACCT), "backoff_until", T + LEASE + 10_000)
    b = ledger.begin("otp:0", token="y", exec_lease_ms=LEASE, account=ACCT, now_ms=T + LEASE + 3)
    assert b.verdict is BeginVerdict.DEFERRED
    assert redis_client.zscore(keys.lane("urgent", "otp"), "otp:0") == T + LEASE + 10_000
    redis_client.hdel(keys.account(ACCT), "backoff_until")
    assert claim(ledger, 1, now_ms=T + LEASE + 10_000, window=0) == ["otp:0"]


def test_a_finished_or_cancelled_campaign_leaves_no_lane_keys(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, "done", 3)
    create(campaigns, "gone", 30, priority="bulk")
    create(campaigns, "later", 3, priority="urgent", now_ms=T + 3_600_000)
    for ref in claim(ledger, 3, window=3):
        finish(ledger, ref)
    campaigns.cancel("gone", now_ms=T)
    campaigns.cancel("later", now_ms=T)
    assert claim(ledger, 10) == []
    assert lane_keys(redis_client, keys) == []
    assert campaigns.status("done")["state"] == "completed"


def test_the_keys_module_names_the_lane_keys_the_scripts_write(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    create(campaigns, "otp", 2, priority="urgent", now_ms=T + 1_000)
    assert redis_client.zrange(keys.lane("urgent", "otp"), 0, -1, withscores=True) == [
        (b"otp:0", T + 1_000), (b"otp:1", T + 1_000)]
    assert redis_client.zscore(keys.lane_waiting("urgent"), "otp") == T + 1_000
    Ledger(redis_client, keys).claim(now_ms=T + 1_000, window=1, claim_lease_ms=LEASE, max_claim=1)
    assert redis_client.zscore(keys.lane_rotation("urgent"), "otp") == 1.0
    assert redis_client.hget(keys.lanes, "vt:urgent") == b"0"
    with pytest.raises(ValueError, match="no lane"):
        keys.lane("asap", "otp")


# -- many dispatchers at once ----------------------------------------------------------------------------


def _world(campaigns: Campaigns) -> dict[str, int]:
    sizes = {"otp": 40, "n1": 150, "n2": 150, "n3": 150, "promo": 150}
    for cid, n in sizes.items():
        create(campaigns, cid, n, priority={"otp": "urgent", "promo": "bulk"}.get(cid))
    return sizes


def test_eight_dispatchers_claim_every_batch_exactly_once(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    sizes = _world(campaigns)
    barrier = threading.Barrier(8)
    claimed: list[list[str]] = [[] for _ in range(8)]
    errors: list[BaseException] = []

    def dispatcher(i: int) -> None:
        client = redis_server.client()
        rnd = random.Random(i)
        try:
            led = Ledger(client, keys)
            barrier.wait(timeout=10)
            while refs := claim(led, rnd.randint(1, 8)):
                claimed[i].extend(refs)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=dispatcher, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    everything = [ref for refs in claimed for ref in refs]
    assert len(everything) == len(set(everything))
    assert set(everything) == {batch_ref(cid, n) for cid, n in sizes.items() for n in range(n)}
    assert lane_keys(redis_client, keys) == []


def test_eight_workers_claiming_and_requeueing_at_once_send_every_recipient_once(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    sizes = _world(campaigns)
    barrier = threading.Barrier(8)
    lock = threading.Lock()
    held: set[str] = set()  # batches claimed and not yet given back
    errors: list[BaseException] = []
    twice: list[str] = []

    def worker(i: int) -> None:
        client = redis_server.client()
        rnd = random.Random(100 + i)
        try:
            led = Ledger(client, keys)
            barrier.wait(timeout=10)
            idle = 0
            while idle < 50:
                refs = claim(led, rnd.randint(1, 4), now_ms=T, window=64)
                idle = 0 if refs else idle + 1
                with lock:
                    twice.extend(r for r in refs if r in held)
                    held.update(refs)
                for ref in refs:
                    with lock:
                        held.discard(ref)  # before it can be claimed again
                    if rnd.random() < 0.3:
                        release(led, ref)
                    else:
                        finish(led, ref)
                if not refs:
                    time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert twice == []
    ledger = Ledger(redis_client, keys)
    while refs := claim(ledger, 100):  # what the last idle rounds left (a release after they stopped)
        for ref in refs:
            finish(ledger, ref)
    for cid, n in sizes.items():
        s = campaigns.status(cid)
        assert (s["state"], s["sent"], s["pending"]) == ("completed", n, 0), s
        assert len(list(campaigns.report_rows(cid))) == n
    assert lane_keys(redis_client, keys) == []


# -- any sequence of steps: nothing claimed twice, nothing lost, nothing left behind ----------------------


_step = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(["urgent", "normal", "bulk", ""]), st.integers(1, 4),
              st.integers(0, 3_000)),
    st.tuples(st.just("claim"), st.integers(1, 6), st.integers(0, 12), st.integers(0, 2_000)),
    st.tuples(st.just("finish"), st.integers(0, 50)),
    st.tuples(st.just("release"), st.integers(0, 50), st.integers(0, 3_000)),
    st.tuples(st.just("sweep"), st.integers(0, 2 * LEASE)),
    st.tuples(st.just("skip_index"), st.integers(0, 50)),
    st.tuples(st.just("cancel"), st.integers(0, 10)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_step, min_size=1, max_size=40))
def test_any_sequence_of_steps_claims_each_queued_batch_once_and_leaves_no_lane_keys(
    redis_client: redis.Redis, steps: list[tuple[Any, ...]]
) -> None:
    keys = Keys(f"h{uuid.uuid4().hex[:8]}")  # a namespace per example: examples share the flushed db
    ledger, campaigns = Ledger(redis_client, keys), Campaigns(redis_client, keys)
    now = T
    made: list[str] = []
    leased: list[str] = []
    for step in steps:
        kind = step[0]
        if kind == "create":
            _, lane, n, later = step
            cid = f"c{len(made)}"
            create(campaigns, cid, int(n), priority=str(lane) or None, now_ms=now + int(later))
            made.append(cid)
        elif kind == "claim":
            _, n, window, advance = step
            now += int(advance)
            due = {_s(m) for m in redis_client.zrangebyscore(keys.due, "-inf", now)}
            refs = claim(ledger, int(n), now_ms=now, window=int(window))
            assert len(refs) == len(set(refs))
            assert set(refs) <= due  # only what was queued and due
            assert len(set(refs) & set(leased)) == 0
            assert redis_client.zcard(keys.leased) <= int(window) + URGENT_EXTRA
            leased += refs
        elif kind in ("finish", "release") and leased:
            ref = leased.pop(int(step[1]) % len(leased))
            b = ledger.begin(ref, token="t" + ref, exec_lease_ms=LEASE, account=ACCT, now_ms=now)
            if b.owned:
                if kind == "finish":
                    ledger.record(ref, token="t" + ref, now_ms=now, outcome=Outcome(sent=len(b.phones)))
                else:
                    ledger.release(ref, token="t" + ref, phones=b.phones, due_in_ms=int(step[2]),
                                   now_ms=now)
        elif kind == "sweep":
            ledger.sweep(now + int(step[1]))
            back = {_s(m) for m in redis_client.zrange(keys.due, 0, -1)}
            leased = [r for r in leased if r not in back]
        elif kind == "skip_index":
            queued = [_s(m) for m in redis_client.zrange(keys.due, 0, -1)]
            if queued:
                ref = queued[int(step[1]) % len(queued)]
                for lane in Keys.LANES:
                    redis_client.zrem(keys.lane(lane, split_ref(ref)[0]), ref)
        elif kind == "cancel" and made:
            campaigns.cancel(made[int(step[1]) % len(made)], now_ms=now)
    # Drain: every batch still queued is claimed exactly once, and the lanes are left empty.
    queued = [_s(m) for m in redis_client.zrange(keys.due, 0, -1)]
    end = now + 10 * LEASE
    drained = claim(ledger, 10_000, now_ms=end)
    assert sorted(drained) == sorted(queued)
    for ref in drained + leased:
        b = ledger.begin(ref, token="end", exec_lease_ms=LEASE, account=ACCT, now_ms=end)
        if b.owned:
            ledger.record(ref, token="end", now_ms=end, outcome=Outcome(sent=len(b.phones)))
    assert claim(ledger, 10_000, now_ms=end) == []
    assert lane_keys(redis_client, keys) == []
    for cid in made:
        s = campaigns.status(cid)
        assert s["pending"] == 0 and s["state"] in ("completed", "cancelled"), s


# -- cost: bounded by what is claimed, not by what is due ---------------------------------------------------


_SEED = """
local T, first, last, batches, prefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
for c = first, last do
  local cid = 'c' .. c
  local pairs = {}
  for n = 0, batches - 1 do
    pairs[#pairs + 1] = T
    pairs[#pairs + 1] = cid .. ':' .. n
    if #pairs >= 2000 or n == batches - 1 then
      redis.call('ZADD', KEYS[1], unpack(pairs))
      redis.call('ZADD', prefix .. 'lane:normal:' .. cid, unpack(pairs))
      pairs = {}
    end
  end
  redis.call('ZADD', prefix .. 'lanes:normal:wait', T, cid)
end
return last - first + 1
"""


def _seed(r: redis.Redis, keys: Keys, campaigns: int, batches: int) -> None:
    """What ``campaigns`` commits of ``batches`` normal batches each, all due at ``T``, leave (the
    commit's writes, server side: enqueueing two million recipients would take minutes)."""
    step = max(1, 20_000 // batches)  # a script of a few ms at a time
    for first in range(1, campaigns + 1, step):
        r.eval(_SEED, 1, keys.due, T, first, min(campaigns, first + step - 1), batches, keys.prefix)


def _commands(r: redis.Redis) -> int:
    return sum(int(v["calls"]) for k, v in r.info("commandstats").items() if not k.startswith("cmdstat_eval"))


def _claim_cost(r: redis.Redis, keys: Keys, campaigns: int, batches: int) -> tuple[int, list[str]]:
    _seed(r, keys, campaigns, batches)
    ledger = Ledger(r, keys)
    while r.zcard(keys.lane_waiting("normal")):
        claim(ledger, 32)  # the first claims move every campaign into the rotation (256 a claim)
    r.config_resetstat()
    before = _commands(r)
    refs = claim(ledger, 32)
    return _commands(r) - before - 1, refs  # minus the INFO of `before`


def test_a_claims_work_grows_with_what_it_claims_not_with_what_is_due(redis_client: redis.Redis) -> None:
    small, small_refs = _claim_cost(redis_client, Keys("small"), 10, 20)
    large, large_refs = _claim_cost(redis_client, Keys("large"), 1_000, 200)
    assert len(small_refs) == len(large_refs) == 32
    assert len(set(cids(large_refs))) == 32  # 32 campaigns served, one batch each
    assert large <= small + 8, (small, large)  # 200,000 batches due cost what 200 cost
    assert large <= 16 * 32, large  # a bounded handful of commands per batch claimed
