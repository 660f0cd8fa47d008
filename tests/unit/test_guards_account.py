"""What answers mean for the whole account (every worker of every namespace on one login): the error
streak that keeps us far from the provider's 100-errors block, error 4's back-off, error 2's stop, the
adaptive cap that slows the login down while the provider is slow (issue 9, item 13), and credentials
proven once per credential set.

The pure-logic ones run on the real redis-server and on fakeredis (``backend``); those that need the
semaphore too run on the real server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from scheduler.guards import AccountPolicy, AccountStatus, AdaptivePolicy, Answer, Guards, SlotResult
from scheduler.keys import Keys
from tests.unit.guards_helpers import ACCT, T

BASE = AccountPolicy().base_backoff_ms
MAX = AccountPolicy().max_backoff_ms
SLOW = AdaptivePolicy().slow_answer_ms
HOLD = AdaptivePolicy().hold_ms


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(params=["real", "fake"])
def guards(request: pytest.FixtureRequest) -> Guards:
    client: redis.Redis = request.getfixturevalue("redis_client" if request.param == "real" else "fake_redis")
    return Guards(client, Keys("t"))


@pytest.fixture
def real_guards(redis_client: redis.Redis) -> Guards:
    return Guards(redis_client, Keys("t"))


# -- the error streak, back-off and cool-down ---------------------------------------------------------


def test_account_error_streak_backs_off_after_errors_before_backoff_and_doubles(guards: Guards) -> None:
    before = AccountPolicy().errors_before_backoff
    untils = [guards.account_outcome(ACCT, Answer.ERROR, now_ms=T, reason="error 1").backoff_until_ms
              for _ in range(before + 3)]
    assert untils[: before - 1] == [0] * (before - 1)
    assert untils[before - 1:] == [T + BASE, T + 2 * BASE, T + 4 * BASE, T + 8 * BASE]
    state = guards.account_state(ACCT)
    assert state.errors_in_a_row == before + 3
    assert state.last_error == "error 1"


def test_account_backoff_is_capped(guards: Guards) -> None:
    v = None
    for _ in range(15):
        v = guards.account_outcome(ACCT, Answer.BLOCK, now_ms=T)
    assert v is not None and v.backoff_until_ms == T + MAX


def test_account_block_backs_off_at_once_and_grows(guards: Guards) -> None:
    first = guards.account_outcome(ACCT, Answer.BLOCK, now_ms=T, reason="error 4")
    assert first.backoff_until_ms == T + BASE
    second = guards.account_outcome(ACCT, Answer.BLOCK, now_ms=T + BASE, reason="error 4")
    assert second.backoff_until_ms == T + BASE + 2 * BASE
    third = guards.account_outcome(ACCT, Answer.BLOCK, now_ms=T + 3 * BASE, reason="error 4")
    assert third.backoff_until_ms == T + 3 * BASE + 4 * BASE


def test_account_backoff_never_shrinks(guards: Guards) -> None:
    long = guards.account_outcome(ACCT, Answer.BLOCK, now_ms=T, base_backoff_ms=500_000).backoff_until_ms
    short = guards.account_outcome(ACCT, Answer.ERROR, now_ms=T + 1).backoff_until_ms
    assert short == long == T + 500_000


def test_account_wrong_password_stops_the_account(guards: Guards) -> None:
    v = guards.account_outcome(ACCT, Answer.AUTH, now_ms=T, reason="error 2: invalid login")
    assert v.state is AccountStatus.STOPPED
    state = guards.account_state(ACCT)
    assert (state.state, state.reason) == (AccountStatus.STOPPED, "error 2: invalid login")
    # A later success of a request already in flight does not restart a stopped account.
    assert guards.account_outcome(ACCT, Answer.OK, now_ms=T + 1).state is AccountStatus.STOPPED


def test_account_cools_down_after_stop_after_errors_in_a_row(guards: Guards) -> None:
    p = AccountPolicy()
    assert p.stop_after < 100  # the provider blocks a login after 100 errors in a row
    verdicts = [guards.account_outcome(ACCT, Answer.ERROR, now_ms=T + i, reason="error 1") for i in range(p.stop_after)]
    assert {v.state for v in verdicts[:-1]} == {AccountStatus.OK}
    last = verdicts[-1]
    assert last.state is AccountStatus.COOLDOWN
    assert last.errors_in_a_row == p.stop_after
    assert last.backoff_until_ms >= T + p.stop_after - 1 + p.cooldown_ms


def test_account_success_resets_the_streak(guards: Guards) -> None:
    for _ in range(4):
        guards.account_outcome(ACCT, Answer.ERROR, now_ms=T)
    ok = guards.account_outcome(ACCT, Answer.OK, now_ms=T + 10 * BASE)
    assert ok.errors_in_a_row == 0
    later = T + 10 * BASE + 1
    v = guards.account_outcome(ACCT, Answer.ERROR, now_ms=later)
    assert v.errors_in_a_row == 1
    assert v.backoff_until_ms <= later  # one error after a success: no new back-off


def test_account_success_ends_a_cooldown(guards: Guards) -> None:
    for i in range(AccountPolicy().stop_after):
        guards.account_outcome(ACCT, Answer.ERROR, now_ms=T + i)
    assert guards.account_state(ACCT).state is AccountStatus.COOLDOWN
    assert guards.account_outcome(ACCT, Answer.OK, now_ms=T + AccountPolicy().cooldown_ms + 100).state == "ok"


def test_reset_account_clears_stop_backoff_and_streak(guards: Guards) -> None:
    for _ in range(5):
        guards.account_outcome(ACCT, Answer.BLOCK, now_ms=T)
    guards.account_outcome(ACCT, Answer.AUTH, now_ms=T, reason="error 2")
    guards.reset_account(ACCT)
    state = guards.account_state(ACCT)
    assert (state.state, state.backoff_until_ms, state.errors_in_a_row, state.reason) == (AccountStatus.OK, 0, 0, "")
    # The next error starts a new streak and a new back-off ladder.
    v = guards.account_outcome(ACCT, Answer.BLOCK, now_ms=T + 1)
    assert (v.state, v.errors_in_a_row, v.backoff_until_ms) == (AccountStatus.OK, 1, T + 1 + BASE)


def test_account_outcome_takes_the_plain_words_too(guards: Guards) -> None:
    assert guards.account_outcome(ACCT, "block", now_ms=T).backoff_until_ms == T + BASE
    with pytest.raises(ValueError):
        guards.account_outcome(ACCT, "timeout", now_ms=T)


def test_account_state_is_one_for_every_namespace_on_the_login(redis_client: redis.Redis) -> None:
    Guards(redis_client, Keys("deploy1")).account_outcome(ACCT, Answer.AUTH, now_ms=T, reason="error 2")
    other = Guards(redis_client, Keys("deploy2"))
    assert other.account_state(ACCT).state is AccountStatus.STOPPED
    assert other.try_slot(ACCT, "x", lease_ms=30_000, now_ms=T + 1) is SlotResult.CLOSED


# -- a slow provider slows the login down, it does not stop it ----------------------------------------


def test_timeouts_never_count_toward_the_error_streak_nor_back_the_account_off(guards: Guards) -> None:
    for i in range(100):  # the provider's block counts its error answers; these are our timeouts
        v = guards.account_outcome(ACCT, Answer.UNKNOWN, now_ms=T + i, reason="read timeout")
        assert (v.state, v.errors_in_a_row, v.backoff_until_ms) == (AccountStatus.OK, 0, 0)
    assert guards.account_state(ACCT).slow_answers == 100


def troubled(guards: Guards, now: int) -> float | None:
    """Answers missing until the provider counts as in trouble (half the recent answers slow or missing):
    the first decrease. Returns the adaptive cap after it."""
    cap = None
    for i in range(20):
        cap = guards.account_outcome(ACCT, Answer.UNKNOWN, now_ms=now + i, reason="read timeout").adaptive_cap
        if cap is not None:
            return cap
    return cap


def test_one_late_answer_in_five_keeps_the_account_at_its_cap_and_never_closes_it(real_guards: Guards) -> None:
    # Issue 9, item 13: with 1 answer in 5 after the timeout, the late answers of each wave of requests
    # came in together, counted as errors in a row, and the account backed off for ten minutes with no
    # request at all. Now a late answer now and then neither closes the login nor slows it: its slot is
    # spent already, and fewer requests in flight would only cost the fast answers.
    g, now = real_guards, T
    g.account_outcome(ACCT, Answer.OK, now_ms=now)
    sent, waves = 0, []
    while sent < 150:  # 3,000 recipients in batches of 20
        tokens = []
        while True:  # as many requests at once as the login allows
            token = uuid.uuid4().hex
            res = g.try_slot(ACCT, token, lease_ms=60_000, now_ms=now)
            if res is not SlotResult.TAKEN:
                break
            tokens.append(token)
        assert res is SlotResult.BUSY and tokens, f"the login was closed after {sent} requests"
        waves.append(len(tokens))
        late = {t for i, t in enumerate(tokens) if (sent + i) % 5 == 4}
        verdicts = []
        for token in [t for t in tokens if t not in late]:  # the fast answers first
            now += 50
            verdicts.append(g.account_outcome(ACCT, Answer.OK, now_ms=now, latency_ms=300))
            g.release_slot(ACCT, token)
        now += 30_000
        for token in late:  # then the late ones, all together
            verdicts.append(g.account_outcome(ACCT, Answer.UNKNOWN, now_ms=now, reason="read timeout"))
            g.release_slot(ACCT, token)
        for v in verdicts:
            assert (v.state, v.errors_in_a_row, v.backoff_until_ms) == (AccountStatus.OK, 0, 0)
        sent += len(tokens)
    assert waves == [14] * len(waves)


def test_a_provider_in_trouble_slows_the_login_down_but_never_closes_it(real_guards: Guards) -> None:
    g = real_guards
    g.account_outcome(ACCT, Answer.OK, now_ms=T)
    cap = troubled(g, T)
    assert cap == 7.0  # half the recent answers missing: half the requests in flight
    assert g.account_state(ACCT).state is AccountStatus.OK
    assert g.try_slot(ACCT, "a", lease_ms=60_000, now_ms=T + 100) is SlotResult.TAKEN


def test_each_unknown_outcome_of_a_provider_in_trouble_halves_the_adaptive_cap_down_to_one(guards: Guards) -> None:
    first = troubled(guards, T)
    caps = [first] + [guards.account_outcome(ACCT, Answer.UNKNOWN, now_ms=T + i * HOLD + 100).adaptive_cap
                      for i in range(1, 6)]
    assert caps == [7.0, 3.5, 1.75, 1.0, 1.0, 1.0]


def test_slow_answers_within_the_hold_after_a_decrease_do_not_decrease_again(guards: Guards) -> None:
    assert troubled(guards, T) == 7.0
    # The answers to the other requests that were out at the time of the first come in just after it.
    for i in range(10):
        assert guards.account_outcome(ACCT, Answer.UNKNOWN, now_ms=T + 100 + i).adaptive_cap == 7.0
    assert guards.account_outcome(ACCT, Answer.UNKNOWN, now_ms=T + HOLD + 100).adaptive_cap == 3.5


def test_slow_good_answers_lower_the_cap_and_fast_answers_bring_it_back_to_the_configured_cap(
    guards: Guards,
) -> None:
    caps = [guards.account_outcome(ACCT, Answer.OK, now_ms=T + i, latency_ms=SLOW).adaptive_cap for i in range(20)]
    assert 7.0 in caps and all(c in (None, 7.0) for c in caps)  # one decrease within the hold
    v = guards.account_outcome(ACCT, Answer.OK, now_ms=T + 21, latency_ms=SLOW)
    assert v.adaptive_cap == 7.0 and v.errors_in_a_row == 0
    assert guards.account_outcome(ACCT, Answer.OK, now_ms=T + 22, latency_ms=SLOW - 1).adaptive_cap == pytest.approx(
        7 + 1 / 7, abs=0.001)
    caps = [guards.account_outcome(ACCT, Answer.OK, now_ms=T + 23 + i, latency_ms=200).adaptive_cap
            for i in range(200)]
    assert caps[-1] == 14.0
    assert max(c or 0 for c in caps) == 14.0  # never above the configured cap
    # One slot back per cap's worth of fast answers: from 7 to 14 takes about (14² - 7²) / 2 answers.
    assert 60 <= caps.index(14.0) <= 80


def test_the_semaphore_uses_the_smaller_of_the_configured_and_the_adaptive_cap(real_guards: Guards) -> None:
    g = real_guards
    g.account_outcome(ACCT, Answer.OK, now_ms=T)
    troubled(g, T)
    g.account_outcome(ACCT, Answer.UNKNOWN, now_ms=T + HOLD + 100)  # 3.5: three slots
    assert g.account_state(ACCT).adaptive_cap == 3.5
    now = T + HOLD + 100
    assert [g.try_slot(ACCT, f"a{i}", lease_ms=60_000, now_ms=now) for i in range(4)] == [SlotResult.TAKEN] * 3 + [
        SlotResult.BUSY]
    assert g.try_slot(ACCT, "b", lease_ms=60_000, cap=2, now_ms=now) is SlotResult.BUSY
    g.release_slot(ACCT, "a0")
    g.release_slot(ACCT, "a1")
    assert g.try_slot(ACCT, "b", lease_ms=60_000, cap=2, now_ms=now) is SlotResult.TAKEN
    assert g.try_slot(ACCT, "c", lease_ms=60_000, cap=2, now_ms=now) is SlotResult.BUSY


def test_status_requests_can_settle_unknown_batches_while_the_login_is_slowed(real_guards: Guards) -> None:
    g = real_guards
    g.account_outcome(ACCT, Answer.OK, now_ms=T)
    for i in range(50):
        g.account_outcome(ACCT, Answer.UNKNOWN, now_ms=T + i * HOLD)
    now = T + 50 * HOLD
    assert g.account_state(ACCT).adaptive_cap == 1.0
    assert g.try_slot(ACCT, "settler", lease_ms=60_000, now_ms=now) is SlotResult.TAKEN
    assert g.try_status_slot(ACCT, "settler", lease_ms=60_000, now_ms=now) is SlotResult.TAKEN
    assert g.slot_valid(ACCT, "settler", now_ms=now)


def test_the_adaptive_cap_is_in_the_account_state_for_status(guards: Guards) -> None:
    assert guards.account_state(ACCT).adaptive_cap is None  # never slowed: the configured cap
    troubled(guards, T)
    assert guards.account_state(ACCT).adaptive_cap == 7.0


# -- credentials proven once per credential set -------------------------------------------------------


def test_credentials_proven_by_one_process_let_every_process_with_them_use_the_full_cap(
    redis_client: redis.Redis,
) -> None:
    first, second = Guards(redis_client, Keys("deploy1")), Guards(redis_client, Keys("deploy2"))
    fp = "scrypt$" + "a" * 64
    assert not first.credentials_proven(ACCT, fp)
    assert first.try_slot(ACCT, "probe", lease_ms=30_000, probe=True, now_ms=T) is SlotResult.TAKEN
    first.account_outcome(ACCT, Answer.OK, now_ms=T + 100)
    assert first.prove_credentials(ACCT, fp)
    first.release_slot(ACCT, "probe")
    # A fresh process (here: of another deployment) with the same settings: no probe of its own.
    assert second.credentials_proven(ACCT, fp)
    assert not second.credentials_proven(ACCT, "scrypt$" + "b" * 64)  # other credentials: a probe
    assert [second.try_slot(ACCT, f"t{i}", lease_ms=30_000, now_ms=T + 200) for i in range(15)] == [
        SlotResult.TAKEN] * 14 + [SlotResult.BUSY]


def test_an_auth_failure_clears_the_proof_and_a_proof_after_it_is_refused(guards: Guards) -> None:
    fp = "scrypt$" + "a" * 64
    assert guards.prove_credentials(ACCT, fp)
    guards.account_outcome(ACCT, Answer.AUTH, now_ms=T, reason="error 2")
    assert not guards.credentials_proven(ACCT, fp)
    # A good answer to a request sent before the error 2 (the IP fell off the allow-list since):
    assert not guards.prove_credentials(ACCT, fp)
    assert not guards.credentials_proven(ACCT, fp)
    guards.reset_account(ACCT)
    assert not guards.credentials_proven(ACCT, fp)  # the resume proves nothing: one request must
    assert guards.prove_credentials(ACCT, fp)
    assert guards.credentials_proven(ACCT, fp)
