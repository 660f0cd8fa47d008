"""The provider's rules on messages and requests, enforced in Redis for all workers together (design
invariant 5), by the Redis server's clock (invariant 9), per login across namespaces.

Every behaviour runs on the real redis-server (the truth); the pure-logic ones also run on fakeredis
with its Lua extra (``backend`` = ``real`` | ``fake``). The races use several real clients, one per
thread, against the private test server: the server's atomicity is what is under test.
(The login semaphore is in ``test_guards_slots.py``, the account state in ``test_guards_account.py``.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import fakeredis
import pytest
import redis
from redis.crc import key_slot

from scheduler.guards import FloodPolicy, Guards, StatusPolicy
from scheduler.keys import Keys, login_id
from tests.unit.guards_helpers import ACCT, PHONE, T, hammer, server_ms
from worker.dev.stack import RedisServer

GAP = FloodPolicy().gap_ms
LIMIT = FloodPolicy().limit
MINUTE = 60_000


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


# -- keys ---------------------------------------------------------------------------------------------


def test_login_keys_are_the_same_in_every_namespace_and_namespace_keys_are_not() -> None:
    a, b = Keys("a"), Keys("b")
    for build in ("account", "inflight", "probe", "revoked", "status_inflight", "slot_freed",
                  "balance_requests", "status_mass_any"):
        assert getattr(a, build)(ACCT) == getattr(b, build)(ACCT), build
    assert a.flood(ACCT, "79001234567") == b.flood(ACCT, "79001234567")
    assert a.send_request(ACCT, "f" * 64) == b.send_request(ACCT, "f" * 64)
    assert a.inflight(ACCT) != a.inflight("other")
    assert a.due != b.due
    assert a.campaign("c1") != b.campaign("c1")
    assert a.inflight(ACCT) == "{smsc}:login:acct:inflight"
    assert a.due == "{smsc}:a:due"


def test_every_key_shares_one_hash_slot_so_one_script_may_touch_namespace_and_login_keys() -> None:
    k = Keys("ns1")
    every = [k.due, k.leased, k.campaigns, k.meta, k.recovery_lock, k.campaign("c"), k.seen("c"),
             k.parked("c"), k.batch("c:0"), k.account_campaigns(ACCT), k.account(ACCT), k.inflight(ACCT),
             k.probe(ACCT), k.revoked(ACCT), k.status_inflight(ACCT), k.slot_freed(ACCT),
             k.flood(ACCT, "7900"), k.send_request(ACCT, "f"), k.cost_request(ACCT, "f"),
             k.status_message(ACCT, "c-0", "7900"), k.status_mass(ACCT, "f"), k.status_mass_any(ACCT),
             k.balance_requests(ACCT), Keys("ns2").due]
    assert all(key.startswith("{smsc}:") for key in every)
    assert {key_slot(key.encode()) for key in every} == {key_slot(b"{smsc}")}


def test_an_api_key_account_is_named_by_a_digest_of_the_key_never_the_key() -> None:
    name = login_id(apikey="s3cret-api-key-0123456789")
    assert name == login_id(apikey="s3cret-api-key-0123456789")  # every process agrees
    assert name != login_id(apikey="another-api-key")
    assert "s3cret" not in name and "0123456789" not in name
    assert name.startswith("#") and len(name) == 25
    assert "s3cret" not in Keys("t").inflight(name)
    assert login_id("acme", apikey="ignored-when-there-is-a-login") == "acme"
    with pytest.raises(ValueError):
        login_id()


def test_a_namespace_cannot_be_called_login_and_a_login_cannot_hold_a_colon() -> None:
    with pytest.raises(ValueError, match="namespace"):
        Keys("login")
    with pytest.raises(ValueError, match="login"):
        Keys("t").inflight("acme:inflight")


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


def test_flood_guard_is_per_login(guards: Guards) -> None:
    assert guards.admit_phones(ACCT, [PHONE] * LIMIT, T) == [0] * LIMIT
    assert guards.admit_phones("other", [PHONE], T) == [0]


def test_flood_guard_is_shared_by_every_namespace_sending_with_one_login(backend: redis.Redis) -> None:
    first, second = Guards(backend, Keys("deploy1")), Guards(backend, Keys("deploy2"))
    assert first.admit_phones(ACCT, [PHONE] * LIMIT, T) == [0] * LIMIT
    assert second.admit_phones(ACCT, [PHONE], T + 1) == [T + GAP]


def test_flood_guard_chain_end_never_moves_back_when_time_is_stepped_back(guards: Guards) -> None:
    # A server clock set back a second (or a test stepping time) must not shorten the chain: the
    # later message stays the chain's last one.
    assert guards.admit_phones(ACCT, [PHONE] * (LIMIT - 1), T + 1000) == [0] * (LIMIT - 1)
    assert guards.admit_phones(ACCT, [PHONE], T) == [0]
    assert guards.admit_phones(ACCT, [PHONE], T + 1001) == [T + 1000 + GAP]
    assert guards.admit_phones(ACCT, [PHONE], T + GAP + 500) == [T + 1000 + GAP]


def test_flood_guard_empty_call_admits_nothing(guards: Guards) -> None:
    assert guards.admit_phones(ACCT, [], T) == []


def test_flood_guard_decides_by_the_servers_clock_so_a_host_5s_fast_cannot_send_the_51st_early(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    gap = 1_500  # a short gap keeps the test short; the rule is the same
    g = Guards(redis_client, Keys("t"), flood=FloodPolicy(gap_ms=gap))
    assert g.admit_phones(ACCT, [PHONE] * LIMIT) == [0] * LIMIT  # sent from a host with a true clock
    # The 51st is tried from a host whose clock runs 5 s fast: by its clock the gap is long over.
    real_time, real_time_ns = time.time, time.time_ns
    monkeypatch.setattr(time, "time", lambda: real_time() + 5.0)
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + 5_000_000_000)
    [held_until] = g.admit_phones(ACCT, [PHONE])
    assert 0 < held_until - server_ms(redis_client) <= gap
    time.sleep(gap / 2000)
    assert g.admit_phones(ACCT, [PHONE]) == [held_until]
    while server_ms(redis_client) < held_until:
        time.sleep(0.05)
    assert g.admit_phones(ACCT, [PHONE]) == [0]


def test_flood_guard_race_never_admits_more_than_fifty_in_one_chain(redis_server: RedisServer,
                                                                  redis_client: redis.Redis) -> None:
    def work(g: Guards, i: int) -> int:
        admitted = 0
        for _ in range(40):
            waits = g.admit_phones(ACCT, [PHONE] * 3 + [f"+7900555{i:04d}"])
            admitted += waits[:3].count(0)
        return admitted

    started = server_ms(redis_client)
    admitted = hammer(8, redis_server, work)
    assert server_ms(redis_client) - started < GAP, "the race must stay within one chain to be meaningful"
    # 8 threads x 40 calls x 3 = 960 attempts at one number within one chain: exactly 50 got through.
    assert sum(admitted) == LIMIT, f"admitted per thread: {admitted}"


# -- send and cost requests ---------------------------------------------------------------------------


def test_identical_send_request_is_refused_within_a_minute(guards: Guards) -> None:
    fp = "f" * 64
    assert guards.claim_send_request(ACCT, fp) == 0
    wait = guards.claim_send_request(ACCT, fp)
    assert 0 < wait <= MINUTE
    assert guards.claim_send_request(ACCT, "e" * 64) == 0  # a different request is not held
    assert guards.claim_send_request("other", fp) == 0  # nor the same request of another login


def test_identical_send_request_is_refused_to_another_namespace_on_the_same_login(backend: redis.Redis) -> None:
    fp = "f" * 64
    assert Guards(backend, Keys("deploy1")).claim_send_request(ACCT, fp) == 0
    assert Guards(backend, Keys("deploy2")).claim_send_request(ACCT, fp) > 0


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
    assert [guards.claim_cost_request(ACCT, fp, now_ms=T) for _ in range(5)] == [0] * 5
    assert guards.claim_cost_request(ACCT, fp, now_ms=T + 1) == MINUTE - 1
    assert guards.claim_cost_request(ACCT, "d" * 64, now_ms=T + 1) == 0


def test_cost_requests_are_limited_within_any_minute_not_per_window_opened_by_the_first(guards: Guards) -> None:
    fp = "c" * 64
    assert guards.claim_cost_request(ACCT, fp, now_ms=T) == 0
    assert [guards.claim_cost_request(ACCT, fp, now_ms=T + 50_000) for _ in range(4)] == [0] * 4
    # A minute after the first, one more may go — not five more: four of the minute are 10 s old.
    assert guards.claim_cost_request(ACCT, fp, now_ms=T + MINUTE) == 0
    assert guards.claim_cost_request(ACCT, fp, now_ms=T + MINUTE + 1) == 50_000 + MINUTE - (MINUTE + 1)
    assert guards.claim_cost_request(ACCT, fp, now_ms=T + 50_000 + MINUTE) == 0


def test_identical_cost_requests_are_allowed_again_after_the_window(real_guards: Guards) -> None:
    fp = "c" * 64
    assert [real_guards.claim_cost_request(ACCT, fp, window_ms=60) for _ in range(6)][-1] > 0
    time.sleep(0.09)
    assert real_guards.claim_cost_request(ACCT, fp, window_ms=60) == 0


def test_send_request_race_has_exactly_one_winner(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    fp = "a" * 64
    waits = hammer(16, redis_server, lambda g, i: [g.claim_send_request(ACCT, fp) for _ in range(5)])
    flat = [w for per_thread in waits for w in per_thread]
    assert flat.count(0) == 1
    assert all(0 < w <= MINUTE for w in flat if w)


def test_cost_request_race_has_exactly_five_winners(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    fp = "b" * 64
    waits = hammer(16, redis_server, lambda g, i: [g.claim_cost_request(ACCT, fp) for _ in range(5)])
    flat = [w for per_thread in waits for w in per_thread]
    assert flat.count(0) == 5
    assert all(0 < w <= MINUTE for w in flat if w)


# -- status.php and balance.php -----------------------------------------------------------------------

MASS = [(PHONE, "c1-0"), ("+79001230001", "c1-0")]


def test_status_request_for_one_message_five_allowed_the_sixth_refused(guards: Guards) -> None:
    pair = [(PHONE, "c1-0")]
    assert [guards.claim_status_request(ACCT, pair, now_ms=T) for _ in range(5)] == [0] * 5
    assert guards.claim_status_request(ACCT, pair, now_ms=T + 10) == MINUTE - 10
    assert guards.claim_status_request(ACCT, [(PHONE, "c1-1")], now_ms=T + 10) == 0  # another message
    assert guards.claim_status_request(ACCT, pair, now_ms=T + MINUTE) == 0


def test_a_message_asked_within_mass_requests_counts_toward_its_five_a_minute(guards: Guards) -> None:
    for i in range(5):  # five different mass requests, each asking about the same message among others
        assert guards.claim_status_request(ACCT, [(PHONE, "c1-0"), (f"+7900123000{i}", "c1-0")], now_ms=T) == 0
    assert guards.claim_status_request(ACCT, [(PHONE, "c1-0")], now_ms=T) > 0
    assert guards.claim_status_request(ACCT, [(PHONE, "c1-0"), ("+79001239999", "c1-0")], now_ms=T) > 0


def test_a_message_is_one_message_with_and_without_plus(guards: Guards) -> None:
    assert [guards.claim_status_request(ACCT, [("+79001234567", "c1-0")], now_ms=T) for _ in range(3)] == [0] * 3
    assert [guards.claim_status_request(ACCT, [("79001234567", "c1-0")], now_ms=T) for _ in range(2)] == [0] * 2
    assert guards.claim_status_request(ACCT, [("79001234567", "c1-0")], now_ms=T) > 0


def test_identical_mass_status_request_is_refused_within_a_minute(guards: Guards) -> None:
    assert guards.claim_status_request(ACCT, MASS, now_ms=T) == 0
    assert guards.claim_status_request(ACCT, MASS, now_ms=T + 1) == MINUTE - 1
    assert guards.claim_status_request(ACCT, [*MASS, ("+79001230002", "c1-0")], now_ms=T + 1) == 0
    assert guards.claim_status_request(ACCT, MASS, now_ms=T + MINUTE) == 0


def test_a_refused_status_request_counts_toward_nothing(guards: Guards) -> None:
    assert guards.claim_status_request(ACCT, MASS, now_ms=T) == 0
    assert guards.claim_status_request(ACCT, MASS, now_ms=T) > 0  # refused: its messages not counted
    one = [MASS[0]]
    assert [guards.claim_status_request(ACCT, one, now_ms=T) for _ in range(4)] == [0] * 4  # 1 + 4 = 5
    assert guards.claim_status_request(ACCT, one, now_ms=T) > 0


def test_strict_reading_allows_one_mass_request_a_minute_per_login_whatever_it_asks(backend: redis.Redis) -> None:
    strict = Guards(backend, Keys("t"), status=StatusPolicy(strict_mass=True))
    assert strict.claim_status_request(ACCT, MASS, now_ms=T) == 0
    other = [("+79001230005", "c2-0"), ("+79001230006", "c2-0")]
    assert strict.claim_status_request(ACCT, other, now_ms=T + 1_000) == MINUTE - 1_000
    assert strict.claim_status_request(ACCT, [("+79001230005", "c2-0")], now_ms=T + 1_000) == 0  # not mass
    assert strict.claim_status_request("other", other, now_ms=T + 1_000) == 0  # another login
    assert strict.claim_status_request(ACCT, other, now_ms=T + MINUTE) == 0
    # The default reading lets a different mass request through.
    assert Guards(backend, Keys("t")).claim_status_request(ACCT, [("+1", "x"), ("+2", "x")], now_ms=T + MINUTE) == 0


def test_status_limits_are_shared_by_every_namespace_on_one_login(backend: redis.Redis) -> None:
    assert Guards(backend, Keys("deploy1")).claim_status_request(ACCT, MASS, now_ms=T) == 0
    assert Guards(backend, Keys("deploy2")).claim_status_request(ACCT, MASS, now_ms=T) > 0


def test_an_empty_status_request_is_a_mistake(guards: Guards) -> None:
    with pytest.raises(ValueError):
        guards.claim_status_request(ACCT, [])


def test_balance_ten_a_minute_the_eleventh_refused(guards: Guards) -> None:
    assert [guards.claim_balance_request(ACCT, now_ms=T + i) for i in range(10)] == [0] * 10
    assert guards.claim_balance_request(ACCT, now_ms=T + 10) == MINUTE - 10
    assert guards.claim_balance_request("other", now_ms=T + 10) == 0
    assert guards.claim_balance_request(ACCT, now_ms=T + MINUTE) == 0  # the first has left the minute
    assert guards.claim_balance_request(ACCT, now_ms=T + MINUTE) > 0


def test_status_request_race_for_one_message_has_exactly_five_winners(redis_server: RedisServer,
                                                                     redis_client: redis.Redis) -> None:
    waits = hammer(16, redis_server, lambda g, i: [g.claim_status_request(ACCT, [MASS[0]]) for _ in range(3)])
    flat = [w for per_thread in waits for w in per_thread]
    assert flat.count(0) == 5
    assert all(0 < w <= MINUTE for w in flat if w)


def test_identical_mass_status_request_race_has_exactly_one_winner(redis_server: RedisServer,
                                                                  redis_client: redis.Redis) -> None:
    waits = hammer(16, redis_server, lambda g, i: [g.claim_status_request(ACCT, MASS) for _ in range(3)])
    assert [w for per_thread in waits for w in per_thread].count(0) == 1


def test_strict_mass_status_race_has_exactly_one_winner_among_different_requests(
    redis_server: RedisServer, redis_client: redis.Redis,
) -> None:
    def make(client: redis.Redis, i: int) -> Guards:
        return Guards(client, Keys("t"), status=StatusPolicy(strict_mass=True))

    def work(g: Guards, i: int) -> list[int]:
        return [g.claim_status_request(ACCT, [(f"+7900{i:03d}{j:04d}", "c-0"), (PHONE, f"c-{i}-{j}")])
                for j in range(3)]

    waits = hammer(16, redis_server, work, make=make)
    assert [w for per_thread in waits for w in per_thread].count(0) == 1


def test_balance_request_race_has_exactly_ten_winners(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    waits = hammer(16, redis_server, lambda g, i: [g.claim_balance_request(ACCT) for _ in range(3)])
    assert [w for per_thread in waits for w in per_thread].count(0) == 10
