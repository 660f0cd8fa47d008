"""The provider's rules, enforced in Redis for all workers together (design invariant 5).

Every behaviour runs on the real redis-server (the truth); the pure-logic ones also run on fakeredis
with its Lua extra (``backend`` = ``real`` | ``fake``). The races use several real clients, one per
thread, against the private test server: the server's atomicity is what is under test.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis

from scheduler.guards import AccountPolicy, FloodPolicy, Guards
from scheduler.keys import Keys
from worker.dev.stack import RedisServer

T = 1_700_000_000_000  # the controllable clock of these tests (ms)
ACCT = "acct"
PHONE = "+79001234567"
GAP = FloodPolicy().gap_ms
LIMIT = FloodPolicy().limit


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()  # Lua through lupa (the fakeredis[lua] extra)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(params=["real", "fake"])
def backend(request: pytest.FixtureRequest) -> redis.Redis:
    """A flushed client of the private redis-server, or a fakeredis one (fast pure-logic checks)."""
    name = "redis_client" if request.param == "real" else "fake_redis"
    client: redis.Redis = request.getfixturevalue(name)
    return client


@pytest.fixture
def guards(backend: redis.Redis) -> Guards:
    return Guards(backend, Keys("t"))


@pytest.fixture
def real_guards(redis_client: redis.Redis) -> Guards:
    return Guards(redis_client, Keys("t"))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def hammer(n_threads: int, server: RedisServer, work: Callable[[Guards, int], Any]) -> list[Any]:
    """Run ``work(guards, i)`` in ``n_threads`` threads, each with its own client, started together."""
    barrier = threading.Barrier(n_threads)
    results: list[Any] = [None] * n_threads
    errors: list[BaseException] = []

    def run(i: int) -> None:
        client = server.client()
        try:
            g = Guards(client, Keys("t"))
            barrier.wait(timeout=10)
            results[i] = work(g, i)
        except BaseException as exc:  # surfaced below: a thread's failure fails the test
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    return results


# -- flood guard ------------------------------------------------------------------------------------


def test_flood_guard_admits_fifty_in_a_chain_and_holds_the_51st_until_the_gap_after_the_last(
    guards: Guards,
) -> None:
    for i in range(LIMIT):
        assert guards.admit_phones(ACCT, [PHONE], T + i * 1000) == [0], f"message {i + 1} was held"
    last = T + (LIMIT - 1) * 1000
    assert guards.admit_phones(ACCT, [PHONE], last + 1000) == [last + GAP]
    # Still held right up to the end of the gap: a hold does not count as a message.
    assert guards.admit_phones(ACCT, [PHONE], last + GAP - 1) == [last + GAP]


def test_flood_guard_starts_a_new_chain_once_the_gap_has_passed(guards: Guards) -> None:
    assert guards.admit_phones(ACCT, [PHONE] * LIMIT, T) == [0] * LIMIT
    assert guards.admit_phones(ACCT, [PHONE], T + 1) == [T + GAP]
    # A full new chain of 50 from the end of the gap on.
    assert guards.admit_phones(ACCT, [PHONE] * LIMIT, T + GAP) == [0] * LIMIT
    assert guards.admit_phones(ACCT, [PHONE], T + GAP) == [T + 2 * GAP]


def test_flood_guard_chain_goes_on_while_every_gap_is_shorter_than_the_guards_gap(guards: Guards) -> None:
    step = GAP - 1  # just under the gap: one unbroken chain however long it lasts
    for i in range(LIMIT):
        assert guards.admit_phones(ACCT, [PHONE], T + i * step) == [0]
    last = T + (LIMIT - 1) * step
    assert guards.admit_phones(ACCT, [PHONE], last + step) == [last + GAP]


def test_flood_guard_held_phone_does_not_hold_the_other_phones_of_the_same_call(guards: Guards) -> None:
    assert guards.admit_phones(ACCT, [PHONE] * LIMIT, T) == [0] * LIMIT
    others = ["+79001230001", "79001230002"]
    assert guards.admit_phones(ACCT, [others[0], PHONE, others[1]], T + 5) == [0, T + GAP, 0]
    # The others were counted once each, the held one not at all.
    assert guards.admit_phones(ACCT, others, T + 6) == [0, 0]


def test_flood_guard_counts_a_number_with_and_without_plus_as_one_subscriber(guards: Guards) -> None:
    assert guards.admit_phones(ACCT, ["+79001234567"] * 25 + ["79001234567"] * 25, T) == [0] * LIMIT
    assert guards.admit_phones(ACCT, ["79001234567"], T + 1) == [T + GAP]


def test_flood_guard_is_per_account(guards: Guards) -> None:
    assert guards.admit_phones(ACCT, [PHONE] * LIMIT, T) == [0] * LIMIT
    assert guards.admit_phones("other", [PHONE], T) == [0]


def test_flood_guard_admission_on_a_slower_clock_does_not_shorten_the_chain(guards: Guards) -> None:
    # Two workers whose clocks differ by a second: the later message must stay the chain's last one,
    # or the 51st would be released a second before the provider sees a 60 s gap.
    assert guards.admit_phones(ACCT, [PHONE] * (LIMIT - 1), T + 1000) == [0] * (LIMIT - 1)
    assert guards.admit_phones(ACCT, [PHONE], T) == [0]  # the 50th, stamped by a slower clock
    assert guards.admit_phones(ACCT, [PHONE], T + 1001) == [T + 1000 + GAP]
    assert guards.admit_phones(ACCT, [PHONE], T + GAP + 500) == [T + 1000 + GAP]


def test_flood_guard_empty_call_admits_nothing(guards: Guards) -> None:
    assert guards.admit_phones(ACCT, [], T) == []


def test_flood_guard_race_never_admits_more_than_fifty_in_one_chain(redis_server: RedisServer,
                                                                  redis_client: redis.Redis) -> None:
    def work(g: Guards, i: int) -> int:
        admitted = 0
        for _ in range(40):
            waits = g.admit_phones(ACCT, [PHONE] * 3 + [f"+7900555{i:04d}"], now_ms())
            admitted += waits[:3].count(0)
        return admitted

    started = now_ms()
    admitted = hammer(8, redis_server, work)
    assert now_ms() - started < GAP, "the race must stay within one chain to be meaningful"
    # 8 threads x 40 calls x 3 = 960 attempts at one number within one chain: exactly 50 got through.
    assert sum(admitted) == LIMIT, f"admitted per thread: {admitted}"


# -- login semaphore ----------------------------------------------------------------------------------


def test_semaphore_never_admits_more_than_cap_holders(guards: Guards) -> None:
    guards.account_outcome(ACCT, "ok", now_ms=T)  # a proven password: the full cap
    taken = [guards.acquire_slot(ACCT, f"tok{i}", now_ms=T, lease_ms=30_000, cap=14) for i in range(20)]
    assert taken == [True] * 14 + [False] * 6
    assert guards.slots_in_use(ACCT, T) == 14
    guards.release_slot(ACCT, "tok3")
    assert guards.acquire_slot(ACCT, "late", now_ms=T + 1, lease_ms=30_000, cap=14)
    assert not guards.acquire_slot(ACCT, "later", now_ms=T + 2, lease_ms=30_000, cap=14)


def test_semaphore_slot_of_a_holder_that_died_comes_back_after_its_lease(guards: Guards) -> None:
    guards.account_outcome(ACCT, "ok", now_ms=T)
    for i in range(14):
        assert guards.acquire_slot(ACCT, f"dead{i}", now_ms=T, lease_ms=10_000, cap=14)
    # The holders never release (killed): the login stays full until their lease ends, then frees.
    assert not guards.acquire_slot(ACCT, "next", now_ms=T + 9_999, lease_ms=10_000, cap=14)
    assert guards.slots_in_use(ACCT, T + 10_000) == 0
    assert guards.acquire_slot(ACCT, "next", now_ms=T + 10_000, lease_ms=10_000, cap=14)


def test_semaphore_unverified_account_gets_one_slot_until_a_successful_answer(guards: Guards) -> None:
    assert guards.account_state(ACCT).get("verified") != "1"
    assert guards.acquire_slot(ACCT, "a", now_ms=T, lease_ms=30_000, cap=14)
    assert not guards.acquire_slot(ACCT, "b", now_ms=T, lease_ms=30_000, cap=14)
    guards.account_outcome(ACCT, "ok", now_ms=T + 1)
    assert all(guards.acquire_slot(ACCT, f"t{i}", now_ms=T + 2, lease_ms=30_000, cap=14) for i in range(13))
    assert not guards.acquire_slot(ACCT, "over", now_ms=T + 2, lease_ms=30_000, cap=14)


def test_semaphore_wrong_password_brings_the_cap_back_to_one(guards: Guards) -> None:
    guards.account_outcome(ACCT, "ok", now_ms=T)
    guards.account_outcome(ACCT, "auth", now_ms=T + 1, reason="error 2: bad login")
    guards.reset_account(ACCT)  # the operator fixed the settings: the password must prove itself again
    assert guards.acquire_slot(ACCT, "a", now_ms=T + 2, lease_ms=30_000, cap=14)
    assert not guards.acquire_slot(ACCT, "b", now_ms=T + 2, lease_ms=30_000, cap=14)


def test_semaphore_is_closed_while_the_account_is_stopped(guards: Guards) -> None:
    guards.account_outcome(ACCT, "ok", now_ms=T)
    guards.account_outcome(ACCT, "auth", now_ms=T + 1, reason="error 2")
    assert guards.try_slot(ACCT, "a", now_ms=T + 2, lease_ms=30_000, cap=14) == "closed"
    assert guards.slots_in_use(ACCT, T + 2) == 0  # nothing taken: the batch goes back without a request
    guards.reset_account(ACCT)
    assert guards.try_slot(ACCT, "a", now_ms=T + 3, lease_ms=30_000, cap=14) == "taken"


def test_semaphore_is_closed_until_the_accounts_backoff_ends(guards: Guards) -> None:
    guards.account_outcome(ACCT, "ok", now_ms=T)
    until = guards.account_outcome(ACCT, "block", now_ms=T).backoff_until_ms
    assert guards.try_slot(ACCT, "a", now_ms=until - 1, lease_ms=30_000, cap=14) == "closed"
    assert guards.try_slot(ACCT, "a", now_ms=until, lease_ms=30_000, cap=14) == "taken"
    assert guards.try_slot(ACCT, "b", now_ms=until, lease_ms=30_000, cap=1) == "busy"


def test_semaphore_race_never_exceeds_the_cap(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    cap = 14
    g0 = Guards(redis_client, Keys("t"))
    g0.account_outcome(ACCT, "ok", now_ms=now_ms())
    inflight = Keys("t").inflight(ACCT)
    stop = threading.Event()
    holding = 0
    peak_holding = 0
    lock = threading.Lock()
    peak_zcard = 0

    def monitor() -> None:
        nonlocal peak_zcard
        client = redis_server.client()
        try:
            while not stop.is_set():
                peak_zcard = max(peak_zcard, int(client.zcard(inflight)))
        finally:
            client.close()

    def work(g: Guards, i: int) -> int:
        nonlocal holding, peak_holding
        rnd = random.Random(i)
        acquired = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            token = uuid.uuid4().hex
            if not g.acquire_slot(ACCT, token, now_ms=now_ms(), lease_ms=60_000, cap=cap):
                time.sleep(0.0005)
                continue
            acquired += 1
            with lock:
                holding += 1
                peak_holding = max(peak_holding, holding)
            time.sleep(rnd.uniform(0, 0.003))
            with lock:
                holding -= 1
            g.release_slot(ACCT, token)
        return acquired

    mon = threading.Thread(target=monitor)
    mon.start()
    try:
        acquired = hammer(32, redis_server, work)
    finally:
        stop.set()
        mon.join(timeout=10)
    assert peak_zcard <= cap, f"{peak_zcard} requests in flight at once (cap {cap})"
    assert peak_holding <= cap, f"{peak_holding} holders at once (cap {cap})"
    assert peak_zcard == cap, f"the race never filled the login (peak {peak_zcard}): it proved nothing"
    assert sum(acquired) > 200, f"only {sum(acquired)} acquisitions in the race"
    assert redis_client.zcard(inflight) == 0  # every slot given back


# -- request dedup ----------------------------------------------------------------------------------


def test_identical_send_request_is_refused_within_a_minute(guards: Guards) -> None:
    fp = "f" * 64
    assert guards.claim_send_request(ACCT, fp) == 0
    wait = guards.claim_send_request(ACCT, fp)
    assert 0 < wait <= 60_000
    assert guards.claim_send_request(ACCT, "e" * 64) == 0  # a different request is not held
    assert guards.claim_send_request("other", fp) == 0  # nor the same request of another account


def test_identical_send_request_may_go_again_after_it_was_forgotten(guards: Guards) -> None:
    fp = "f" * 64
    assert guards.claim_send_request(ACCT, fp) == 0
    guards.forget_send_request(ACCT, fp)  # refused before the provider took it (connect error)
    assert guards.claim_send_request(ACCT, fp) == 0
    assert guards.claim_send_request(ACCT, fp) > 0


def test_identical_send_request_may_go_again_after_the_window(real_guards: Guards) -> None:
    fp = "f" * 64
    assert real_guards.claim_send_request(ACCT, fp, window_ms=50) == 0
    assert 0 < real_guards.claim_send_request(ACCT, fp, window_ms=50) <= 50
    time.sleep(0.08)
    assert real_guards.claim_send_request(ACCT, fp, window_ms=50) == 0


def test_identical_cost_request_five_allowed_the_sixth_refused(guards: Guards) -> None:
    fp = "c" * 64
    assert [guards.claim_cost_request(ACCT, fp) for _ in range(5)] == [0] * 5
    wait = guards.claim_cost_request(ACCT, fp)
    assert 0 < wait <= 60_000
    assert guards.claim_cost_request(ACCT, "d" * 64) == 0


def test_identical_cost_requests_are_allowed_again_after_the_window(real_guards: Guards) -> None:
    fp = "c" * 64
    assert [real_guards.claim_cost_request(ACCT, fp, window_ms=60) for _ in range(6)][-1] > 0
    time.sleep(0.09)
    assert real_guards.claim_cost_request(ACCT, fp, window_ms=60) == 0


def test_status_request_for_one_message_five_allowed_the_sixth_refused(guards: Guards) -> None:
    pair = [(PHONE, "c1-0")]
    assert [guards.claim_status_request(ACCT, pair) for _ in range(5)] == [0] * 5
    assert 0 < guards.claim_status_request(ACCT, pair) <= 60_000
    assert guards.claim_status_request(ACCT, [(PHONE, "c1-1")]) == 0  # another message


def test_identical_mass_status_request_is_refused_within_a_minute(guards: Guards) -> None:
    pairs = [(PHONE, "c1-0"), ("+79001230001", "c1-0")]
    assert guards.claim_status_request(ACCT, pairs) == 0
    assert 0 < guards.claim_status_request(ACCT, pairs) <= 60_000
    assert guards.claim_status_request(ACCT, [*pairs, ("+79001230002", "c1-0")]) == 0  # not identical


def test_send_request_race_has_exactly_one_winner(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    fp = "a" * 64
    waits = hammer(16, redis_server, lambda g, i: [g.claim_send_request(ACCT, fp) for _ in range(5)])
    flat = [w for per_thread in waits for w in per_thread]
    assert flat.count(0) == 1
    assert all(0 < w <= 60_000 for w in flat if w)


def test_cost_request_race_has_exactly_five_winners(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    fp = "b" * 64
    waits = hammer(16, redis_server, lambda g, i: [g.claim_cost_request(ACCT, fp) for _ in range(5)])
    flat = [w for per_thread in waits for w in per_thread]
    assert flat.count(0) == 5
    assert all(0 < w <= 60_000 for w in flat if w)


# -- account outcome ----------------------------------------------------------------------------------

BASE = AccountPolicy().base_backoff_ms
MAX = AccountPolicy().max_backoff_ms


def test_account_error_streak_backs_off_after_errors_before_backoff_and_doubles(guards: Guards) -> None:
    before = AccountPolicy().errors_before_backoff
    untils = [guards.account_outcome(ACCT, "error", now_ms=T, reason="HTTP 500").backoff_until_ms
              for _ in range(before + 3)]
    assert untils[: before - 1] == [0] * (before - 1)
    assert untils[before - 1:] == [T + BASE, T + 2 * BASE, T + 4 * BASE, T + 8 * BASE]
    state = guards.account_state(ACCT)
    assert state["errors_in_a_row"] == str(before + 3)
    assert state["last_error"] == "HTTP 500"


def test_account_backoff_is_capped(guards: Guards) -> None:
    v = None
    for _ in range(15):
        v = guards.account_outcome(ACCT, "block", now_ms=T)
    assert v is not None and v.backoff_until_ms == T + MAX


def test_account_block_backs_off_at_once_and_grows(guards: Guards) -> None:
    first = guards.account_outcome(ACCT, "block", now_ms=T, reason="error 4")
    assert first.backoff_until_ms == T + BASE
    second = guards.account_outcome(ACCT, "block", now_ms=T + BASE, reason="error 4")
    assert second.backoff_until_ms == T + BASE + 2 * BASE
    third = guards.account_outcome(ACCT, "block", now_ms=T + 3 * BASE, reason="error 4")
    assert third.backoff_until_ms == T + 3 * BASE + 4 * BASE


def test_account_backoff_never_shrinks(guards: Guards) -> None:
    long = guards.account_outcome(ACCT, "block", now_ms=T, base_backoff_ms=500_000).backoff_until_ms
    short = guards.account_outcome(ACCT, "error", now_ms=T + 1).backoff_until_ms
    assert short == long == T + 500_000


def test_account_wrong_password_stops_the_account(guards: Guards) -> None:
    v = guards.account_outcome(ACCT, "auth", now_ms=T, reason="error 2: invalid login")
    assert v.state == "stopped"
    state = guards.account_state(ACCT)
    assert state["state"] == "stopped"
    assert state["reason"] == "error 2: invalid login"
    # A later success of a request already in flight does not restart a stopped account.
    assert guards.account_outcome(ACCT, "ok", now_ms=T + 1).state == "stopped"


def test_account_cools_down_after_stop_after_errors_in_a_row(guards: Guards) -> None:
    p = AccountPolicy()
    assert p.stop_after < 100  # the provider blocks a login after 100 errors in a row
    verdicts = [guards.account_outcome(ACCT, "error", now_ms=T + i, reason="timeout") for i in range(p.stop_after)]
    assert {v.state for v in verdicts[:-1]} == {"ok"}
    last = verdicts[-1]
    assert last.state == "cooldown"
    assert last.errors_in_a_row == p.stop_after
    assert last.backoff_until_ms >= T + p.stop_after - 1 + p.cooldown_ms


def test_account_success_resets_the_streak(guards: Guards) -> None:
    for _ in range(4):
        guards.account_outcome(ACCT, "error", now_ms=T)
    ok = guards.account_outcome(ACCT, "ok", now_ms=T + 10 * BASE)
    assert ok.errors_in_a_row == 0
    later = T + 10 * BASE + 1
    v = guards.account_outcome(ACCT, "error", now_ms=later)
    assert v.errors_in_a_row == 1
    assert v.backoff_until_ms <= later  # one error after a success: no new back-off


def test_account_success_ends_a_cooldown(guards: Guards) -> None:
    for i in range(AccountPolicy().stop_after):
        guards.account_outcome(ACCT, "error", now_ms=T + i)
    assert guards.account_state(ACCT)["state"] == "cooldown"
    assert guards.account_outcome(ACCT, "ok", now_ms=T + AccountPolicy().cooldown_ms + 100).state == "ok"


def test_reset_account_clears_stop_backoff_and_streak(guards: Guards) -> None:
    for _ in range(5):
        guards.account_outcome(ACCT, "block", now_ms=T)
    guards.account_outcome(ACCT, "auth", now_ms=T, reason="error 2")
    guards.reset_account(ACCT)
    state = guards.account_state(ACCT)
    assert state["state"] == "ok"
    assert state["backoff_until"] == "0"
    assert state["errors_in_a_row"] == "0"
    assert "reason" not in state
    # The next error starts a new streak and a new back-off ladder.
    v = guards.account_outcome(ACCT, "block", now_ms=T + 1)
    assert (v.state, v.errors_in_a_row, v.backoff_until_ms) == ("ok", 1, T + 1 + BASE)

