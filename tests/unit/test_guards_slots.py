"""The login semaphore (fewer than 15 requests in flight per login, every namespace together), its
leases and their renewal, the gate that closes it (error 2, back-off, quiet after a Redis restart), and
the status semaphore (fewer than 5 status.php requests in flight) — on the real redis-server, races
with one client per thread.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
import redis

from scheduler.guards import Answer, Guards, SlotResult
from scheduler.keys import Keys
from tests.unit.guards_helpers import ACCT, PeakMonitor, T, hammer, server_ms
from worker.dev.stack import RedisServer

LEASE = 30_000
TAKEN, BUSY, CLOSED, LOST = SlotResult.TAKEN, SlotResult.BUSY, SlotResult.CLOSED, SlotResult.LOST


@pytest.fixture
def guards(redis_client: redis.Redis) -> Guards:
    return Guards(redis_client, Keys("t"))


@pytest.fixture
def proven(guards: Guards) -> Guards:
    """An account that has had a good answer: the full cap."""
    guards.account_outcome(ACCT, Answer.OK, now_ms=T)
    return guards


def take(g: Guards, token: str, now_ms: int = T, *, lease_ms: int = LEASE, probe: bool = False) -> SlotResult:
    return g.try_slot(ACCT, token, lease_ms=lease_ms, probe=probe, now_ms=now_ms)


# -- the cap ------------------------------------------------------------------------------------------


def test_semaphore_never_admits_more_than_cap_holders(proven: Guards) -> None:
    assert [take(proven, f"tok{i}") for i in range(20)] == [TAKEN] * 14 + [BUSY] * 6
    assert proven.slots_in_use(ACCT, T) == 14
    proven.release_slot(ACCT, "tok3")
    assert take(proven, "late", T + 1) == TAKEN
    assert take(proven, "later", T + 2) == BUSY


def test_two_namespaces_on_one_login_share_its_fourteen_slots(redis_client: redis.Redis) -> None:
    first, second = Guards(redis_client, Keys("deploy1")), Guards(redis_client, Keys("deploy2"))
    first.account_outcome(ACCT, Answer.OK, now_ms=T)
    assert [take(first, f"a{i}") for i in range(10)] == [TAKEN] * 10
    assert [take(second, f"b{i}") for i in range(6)] == [TAKEN] * 4 + [BUSY] * 2
    assert second.slots_in_use(ACCT, T) == 14


def test_semaphore_result_is_a_str_enum_the_old_comparisons_still_hold(proven: Guards) -> None:
    res = take(proven, "a")
    assert res is SlotResult.TAKEN and res == "taken" and isinstance(res, str)


def test_semaphore_slot_of_a_holder_that_died_comes_back_after_its_lease(proven: Guards) -> None:
    for i in range(14):
        assert take(proven, f"dead{i}", lease_ms=10_000) == TAKEN
    # The holders never release (killed): the login stays full until their lease ends, then frees.
    assert take(proven, "next", T + 9_999, lease_ms=10_000) == BUSY
    assert proven.slots_in_use(ACCT, T + 10_000) == 0
    assert take(proven, "next", T + 10_000, lease_ms=10_000) == TAKEN


def test_semaphore_unverified_account_gets_one_slot_until_a_good_answer(guards: Guards) -> None:
    assert not guards.account_state(ACCT).verified
    assert take(guards, "a") == TAKEN
    assert take(guards, "b") == BUSY
    guards.account_outcome(ACCT, Answer.OK, now_ms=T + 1)
    assert [take(guards, f"t{i}", T + 2) for i in range(14)] == [TAKEN] * 13 + [BUSY]


def test_semaphore_wrong_password_brings_the_cap_back_to_one(proven: Guards) -> None:
    proven.account_outcome(ACCT, Answer.AUTH, now_ms=T + 1, reason="error 2: bad login")
    proven.reset_account(ACCT)  # the operator fixed the settings: the password must prove itself again
    assert take(proven, "a", T + 2) == TAKEN
    assert take(proven, "b", T + 2) == BUSY


def test_semaphore_answer_to_a_request_sent_before_the_stop_does_not_prove_the_account_again(
    proven: Guards,
) -> None:
    proven.account_outcome(ACCT, Answer.AUTH, now_ms=T + 1, reason="error 2")
    proven.account_outcome(ACCT, Answer.OK, now_ms=T + 2)  # an answer to a request already in flight
    proven.reset_account(ACCT)
    assert not proven.account_state(ACCT).verified
    assert [take(proven, "a", T + 3), take(proven, "b", T + 3)] == [TAKEN, BUSY]


def test_processes_with_unproven_credentials_send_one_at_a_time_even_on_a_proven_account(proven: Guards) -> None:
    assert take(proven, "old1") == TAKEN
    assert take(proven, "new1", probe=True) == TAKEN
    assert take(proven, "new2", probe=True) == BUSY  # one probe at a time
    assert take(proven, "old2") == TAKEN  # proven credentials are not held back by a probe
    proven.release_slot(ACCT, "new1")
    assert take(proven, "new2", probe=True) == TAKEN
    assert take(proven, "new3", T + LEASE, probe=True) == TAKEN  # a dead probe's lease ran out


# -- the gate -----------------------------------------------------------------------------------------


def test_semaphore_is_closed_while_the_account_is_stopped(proven: Guards) -> None:
    proven.account_outcome(ACCT, Answer.AUTH, now_ms=T + 1, reason="error 2")
    assert take(proven, "a", T + 2) == CLOSED
    assert proven.slots_in_use(ACCT, T + 2) == 0  # nothing taken: the batch goes back without a request
    proven.reset_account(ACCT)
    assert take(proven, "a", T + 3) == TAKEN


def test_semaphore_is_closed_until_the_accounts_backoff_ends(proven: Guards) -> None:
    until = proven.account_outcome(ACCT, Answer.BLOCK, now_ms=T).backoff_until_ms
    assert take(proven, "a", until - 1) == CLOSED
    assert take(proven, "a", until) == TAKEN
    assert proven.try_slot(ACCT, "b", lease_ms=LEASE, cap=1, now_ms=until) == BUSY


def test_after_the_first_error_2_no_slot_taken_before_it_may_carry_a_request(proven: Guards) -> None:
    for token in ("a", "b", "c"):
        assert take(proven, token) == TAKEN
        assert proven.slot_valid(ACCT, token, now_ms=T)
    proven.account_outcome(ACCT, Answer.AUTH, now_ms=T + 5, reason="error 2")  # the answer to a's request
    assert not proven.slot_valid(ACCT, "b", now_ms=T + 6)  # b's execution checks before its POST: none
    assert not proven.renew_slot(ACCT, "c", lease_ms=LEASE, now_ms=T + 6)
    assert proven.slots_in_use(ACCT, T + 6) == 3  # what is out still counts until it is released
    # The operator resumes: the slots taken before the stop stay unusable; a new one is not.
    proven.reset_account(ACCT)
    assert not proven.slot_valid(ACCT, "b", now_ms=T + 7)
    assert take(proven, "d", T + 7) == BUSY  # unproven again (cap 1), and three requests are still out
    for token in ("a", "b", "c"):
        proven.release_slot(ACCT, token)
    assert take(proven, "d", T + 8) == TAKEN
    assert proven.slot_valid(ACCT, "d", now_ms=T + 8)


def test_slot_valid_is_false_during_a_back_off_and_true_again_after(proven: Guards) -> None:
    assert take(proven, "a", lease_ms=120_000) == TAKEN
    until = proven.account_outcome(ACCT, Answer.BLOCK, now_ms=T + 1, reason="error 4").backoff_until_ms
    assert not proven.slot_valid(ACCT, "a", now_ms=T + 2)
    assert proven.slot_valid(ACCT, "a", now_ms=until)  # not revoked: only an error 2 revokes


def test_error_2_race_no_check_that_starts_after_it_lets_a_request_leave(redis_server: RedisServer,
                                                                     redis_client: redis.Redis) -> None:
    Guards(redis_client, Keys("t")).account_outcome(ACCT, Answer.OK)
    stopped = threading.Event()
    late_posts: list[str] = []

    def work(g: Guards, i: int) -> int:
        posts = 0
        if i == 0:  # the execution whose request draws the error 2
            time.sleep(0.2)
            g.account_outcome(ACCT, Answer.AUTH, reason="error 2")
            stopped.set()
            return posts
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            token = uuid.uuid4().hex
            if g.try_slot(ACCT, token, lease_ms=60_000) is not TAKEN:
                time.sleep(0.001)
                continue
            after_stop = stopped.is_set()
            if g.slot_valid(ACCT, token):  # the last step before the POST
                posts += 1
                if after_stop:
                    late_posts.append(token)
            g.release_slot(ACCT, token)
        return posts

    posts = hammer(16, redis_server, work)
    assert sum(posts) > 20, "the race never sent anything: it proved nothing"
    assert late_posts == []


# -- leases and their renewal -------------------------------------------------------------------------


def test_a_renewed_slot_survives_past_its_first_lease_and_an_unrenewed_one_expires(
    guards: Guards, redis_client: redis.Redis,
) -> None:
    guards.account_outcome(ACCT, Answer.OK)
    lease = 400
    assert guards.try_slot(ACCT, "renewed", lease_ms=lease) == TAKEN
    assert guards.try_slot(ACCT, "forgotten", lease_ms=lease) == TAKEN
    started = server_ms(redis_client)
    while server_ms(redis_client) < started + 2 * lease:
        time.sleep(lease / 4000)
        assert guards.renew_slot(ACCT, "renewed", lease_ms=lease)
    assert guards.slot_valid(ACCT, "renewed")
    assert not guards.slot_valid(ACCT, "forgotten")
    assert not guards.renew_slot(ACCT, "forgotten", lease_ms=lease)  # lost: renewing brings nothing back
    assert guards.slots_in_use(ACCT) == 1


def test_renewal_never_shortens_a_lease_and_a_released_slot_cannot_be_renewed(proven: Guards) -> None:
    assert take(proven, "a", lease_ms=10_000) == TAKEN
    assert proven.renew_slot(ACCT, "a", lease_ms=10, now_ms=T + 1)
    assert proven.slot_valid(ACCT, "a", now_ms=T + 9_999)
    proven.release_slot(ACCT, "a")
    assert not proven.renew_slot(ACCT, "a", lease_ms=10_000, now_ms=T + 2)
    assert proven.slots_in_use(ACCT, T + 2) == 0


def test_renewal_keeps_a_revoked_slot_counted_while_its_request_is_out(proven: Guards) -> None:
    assert take(proven, "a", lease_ms=1_000) == TAKEN
    proven.account_outcome(ACCT, Answer.AUTH, now_ms=T + 1, reason="error 2")
    assert not proven.renew_slot(ACCT, "a", lease_ms=5_000, now_ms=T + 500)
    proven.reset_account(ACCT)
    assert proven.slots_in_use(ACCT, T + 3_000) == 1  # renewed all the same: its request still counts
    assert not proven.slot_valid(ACCT, "a", now_ms=T + 3_000)


# -- quiet after a Redis restart ----------------------------------------------------------------------


def test_a_quiet_login_grants_no_slot_until_the_quiet_ends(proven: Guards) -> None:
    assert proven.quiet(ACCT, T + 5_000) == T + 5_000
    assert proven.quiet(ACCT, T + 1_000) == T + 5_000  # a later, shorter quiet never shortens it
    assert take(proven, "a", T + 4_999) == CLOSED
    assert proven.slots_in_use(ACCT, T + 4_999) == 0
    assert proven.account_state(ACCT).quiet_until_ms == T + 5_000
    assert take(proven, "a", T + 5_000) == TAKEN


def test_a_quiet_login_lets_no_held_slot_carry_a_request(proven: Guards) -> None:
    assert take(proven, "a") == TAKEN
    proven.quiet(ACCT, T + 5_000)
    assert not proven.slot_valid(ACCT, "a", now_ms=T + 1)
    assert proven.try_status_slot(ACCT, "a", lease_ms=LEASE, now_ms=T + 1) == CLOSED
    assert proven.slot_valid(ACCT, "a", now_ms=T + 5_000)


# -- status semaphore ---------------------------------------------------------------------------------


def status(g: Guards, token: str, now_ms: int = T, lease_ms: int = LEASE) -> SlotResult:
    return g.try_status_slot(ACCT, token, lease_ms=lease_ms, now_ms=now_ms)


def test_status_semaphore_admits_four_status_requests_at_once(proven: Guards) -> None:
    for i in range(6):
        assert take(proven, f"t{i}") == TAKEN
    assert [status(proven, f"t{i}") for i in range(6)] == [TAKEN] * 4 + [BUSY] * 2
    assert status(proven, "t0") == TAKEN  # the holder asking again keeps its one slot
    proven.release_status_slot(ACCT, "t1")
    assert status(proven, "t4") == TAKEN
    assert status(proven, "t5") == BUSY
    proven.release_slot(ACCT, "t2")  # giving the login slot back gives its status slot back too
    assert status(proven, "t5") == TAKEN


def test_status_semaphore_needs_a_live_login_slot(proven: Guards) -> None:
    assert status(proven, "nobody") == LOST
    assert take(proven, "a", lease_ms=1_000) == TAKEN
    assert status(proven, "a", T + 1_000) == LOST  # its login slot's lease ran out


def test_status_semaphore_is_closed_with_the_account(proven: Guards) -> None:
    assert take(proven, "a") == TAKEN
    assert take(proven, "b") == TAKEN
    proven.account_outcome(ACCT, Answer.AUTH, now_ms=T + 1, reason="error 2")
    assert status(proven, "a", T + 2) == CLOSED
    proven.reset_account(ACCT)
    assert status(proven, "b", T + 3) == CLOSED  # revoked: taken before the error 2


def test_status_slot_of_a_holder_that_died_comes_back_after_its_lease_and_renewal_extends_it(
    proven: Guards,
) -> None:
    for i in range(5):
        assert take(proven, f"t{i}", lease_ms=60_000) == TAKEN
    assert [status(proven, f"t{i}", lease_ms=1_000) for i in range(4)] == [TAKEN] * 4
    assert proven.renew_slot(ACCT, "t0", lease_ms=5_000, now_ms=T + 500)
    assert status(proven, "t4", T + 999) == BUSY
    assert status(proven, "t4", T + 1_000) == TAKEN  # t1..t3 died; t0 renewed
    assert status(proven, "t1", T + 1_000) == TAKEN
    assert status(proven, "t2", T + 1_000) == TAKEN
    assert status(proven, "t3", T + 1_000) == BUSY


# -- races --------------------------------------------------------------------------------------------


def test_semaphore_race_never_exceeds_the_cap_across_two_namespaces(redis_server: RedisServer,
                                                                   redis_client: redis.Redis) -> None:
    cap = 14
    Guards(redis_client, Keys("t")).account_outcome(ACCT, Answer.OK)
    holding = peak_holding = 0
    lock = threading.Lock()

    def work(g: Guards, i: int) -> int:
        nonlocal holding, peak_holding
        rnd = random.Random(i)
        acquired = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            token = uuid.uuid4().hex
            if g.try_slot(ACCT, token, lease_ms=60_000, cap=cap) is not TAKEN:
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

    inflight = Keys("t").inflight(ACCT)
    with PeakMonitor(redis_server, inflight) as mon:
        acquired = hammer(32, redis_server, work, make=lambda c, i: Guards(c, Keys(f"deploy{i % 2}")))
    assert mon.peak <= cap, f"{mon.peak} requests in flight at once (cap {cap})"
    assert peak_holding <= cap, f"{peak_holding} holders at once (cap {cap})"
    assert mon.peak == cap, f"the race never filled the login (peak {mon.peak}): it proved nothing"
    assert sum(acquired) > 200, f"only {sum(acquired)} acquisitions in the race"
    assert redis_client.zcard(inflight) == 0  # every slot given back


def test_status_semaphore_race_never_has_five_status_requests_in_flight(redis_server: RedisServer,
                                                                        redis_client: redis.Redis) -> None:
    Guards(redis_client, Keys("t")).account_outcome(ACCT, Answer.OK)

    def work(g: Guards, i: int) -> int:
        token = uuid.uuid4().hex
        while g.try_slot(ACCT, token, lease_ms=60_000) is not TAKEN:
            time.sleep(0.001)
        asked = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if g.try_status_slot(ACCT, token, lease_ms=60_000) is not TAKEN:
                time.sleep(0.0005)
                continue
            asked += 1
            time.sleep(0.001)
            g.release_status_slot(ACCT, token)
        g.release_slot(ACCT, token)
        return asked

    with PeakMonitor(redis_server, Keys("t").status_inflight(ACCT)) as mon:
        asked = hammer(14, redis_server, work)
    assert mon.peak <= 4, f"{mon.peak} status requests in flight at once"
    assert mon.peak == 4, f"the race never filled the status semaphore (peak {mon.peak})"
    assert sum(asked) > 100
