"""The ledger and guard rules that keep unknown outcomes, restarts and wrong passwords harmless.

Each test here would fail without one fix of the chaos work (on the real redis-server, the truth):
a stray message cannot settle a batch before its request is surely over; a stopped or backing-off
account gets no slot; a process with unproven credentials sends alone; status.php requests respect the
provider's one-minute rule; a fresh namespace does not settle its first campaign needlessly.
"""

from __future__ import annotations

import redis

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.guards import Guards
from scheduler.keys import Keys
from scheduler.ledger import Ledger
from scheduler.recovery import ensure_recovered

T = 1_700_000_000_000
ACCT = "acct"
LEASE = 30_000


def create(campaigns: Campaigns, n: int, *, cid: str = "c1", batch_size: int = 2) -> None:
    spec = CampaignSpec(message="hello", parts=1, account=ACCT, batch_size=batch_size, campaign_id=cid)
    campaigns.create(spec, ((i + 1, f"+7900{i:07d}") for i in range(n)), now_ms=T)


def test_first_campaign_of_a_fresh_namespace_needs_no_settling_but_a_restart_still_settles_it(
        redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 4)
    assert redis_client.hget(keys.meta, "run_id") == redis_client.info("server")["run_id"].encode()
    assert ensure_recovered(redis_client, keys, now_ms=T, deadline_s=40.0)
    assert ledger.claim(now_ms=T, window=10, claim_lease_ms=LEASE, max_claim=10) == ["c1:0", "c1:1"]
    assert not ledger.begin("c1:0", token="a", now_ms=T, exec_lease_ms=LEASE, account=ACCT).settle

    redis_client.hset(keys.meta, "run_id", "an-older-server")  # as after a restart
    create(campaigns, 2, cid="c2")  # a commit never overwrites the recorded server
    assert redis_client.hget(keys.meta, "run_id") == b"an-older-server"
    assert ensure_recovered(redis_client, keys, now_ms=T + 1, deadline_s=40.0)
    assert redis_client.hget(keys.batch("c1:1"), "settle") == b"1"


def test_a_stray_message_cannot_settle_a_batch_marked_by_recovery_before_settle_after(
        redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 2, batch_size=2)
    [ref] = ledger.claim(now_ms=T, window=10, claim_lease_ms=LEASE, max_claim=10)
    assert ledger.begin(ref, token="a", now_ms=T, exec_lease_ms=LEASE, account=ACCT).verdict == "ok"
    assert ledger.mark_sending(ref, token="a", now_ms=T, settle_margin_ms=4_000, lease_ms=LEASE)
    redis_client.hset(keys.meta, "run_id", "an-older-server")
    # The restart: the request may still be in flight until T + 1_000 + 4_000.
    assert ensure_recovered(redis_client, keys, now_ms=T + 1_000, deadline_s=4.0)
    redis_client.zrem(keys.due, ref)  # even without its due-queue entry (the rule does not rest on it) ...
    early = ledger.begin(ref, token="stray", now_ms=T + 1_500, exec_lease_ms=LEASE, account=ACCT)
    assert (early.verdict, early.until_ms) == ("deferred", T + 5_000)  # ... it waits: no status.php yet
    assert redis_client.zscore(keys.due, ref) == T + 5_000
    late = ledger.begin(ref, token="b", now_ms=T + 5_000, exec_lease_ms=LEASE, account=ACCT)
    assert (late.verdict, late.settle) == ("ok", True)


def test_no_slot_for_a_stopped_account_nor_during_a_back_off(guards: Guards) -> None:
    guards.account_outcome(ACCT, "ok", now_ms=T)
    assert guards.try_slot(ACCT, "a", now_ms=T, lease_ms=LEASE, cap=14) == "taken"
    guards.release_slot(ACCT, "a")
    guards.account_outcome(ACCT, "auth", now_ms=T, reason="error 2")
    # The batches already waiting for a slot when the wrong password was refused never send.
    assert guards.try_slot(ACCT, "b", now_ms=T + 1, lease_ms=LEASE, cap=14) == "closed"
    guards.reset_account(ACCT)
    assert guards.try_slot(ACCT, "b", now_ms=T + 2, lease_ms=LEASE, cap=14) == "taken"
    guards.release_slot(ACCT, "b")
    v = guards.account_outcome(ACCT, "block", now_ms=T + 3, reason="error 4", base_backoff_ms=1_000)
    assert v.backoff_until_ms == T + 1_003
    assert guards.try_slot(ACCT, "c", now_ms=T + 1_002, lease_ms=LEASE, cap=14) == "closed"
    assert guards.try_slot(ACCT, "c", now_ms=T + 1_003, lease_ms=LEASE, cap=14) == "taken"


def test_processes_with_unproven_credentials_send_one_at_a_time_even_on_a_proven_account(guards: Guards) -> None:
    guards.account_outcome(ACCT, "ok", now_ms=T)  # proven long ago, perhaps with another password
    assert guards.try_slot(ACCT, "old1", now_ms=T, lease_ms=LEASE, cap=14) == "taken"
    assert guards.try_slot(ACCT, "new1", now_ms=T, lease_ms=LEASE, cap=14, probe=True) == "taken"
    # Every other new process waits for that probe's answer; proven processes go on.
    assert guards.try_slot(ACCT, "new2", now_ms=T, lease_ms=LEASE, cap=14, probe=True) == "busy"
    assert guards.try_slot(ACCT, "old2", now_ms=T, lease_ms=LEASE, cap=14) == "taken"
    guards.release_slot(ACCT, "new1")
    assert guards.try_slot(ACCT, "new2", now_ms=T, lease_ms=LEASE, cap=14, probe=True) == "taken"
    # A probe whose worker died gives its place back with its lease.
    assert guards.try_slot(ACCT, "new3", now_ms=T + LEASE, lease_ms=LEASE, cap=14, probe=True) == "taken"


def test_status_requests_respect_the_providers_one_minute_rule(guards: Guards) -> None:
    mass = [("+79000000001", "c1-0"), ("+79000000002", "c1-0")]
    assert guards.claim_status_request(ACCT, mass) == 0
    wait = guards.claim_status_request(ACCT, mass)
    assert 59_000 < wait <= 60_000  # the same mass request: once a minute
    assert guards.claim_status_request(ACCT, [*mass[:1], ("+79000000003", "c1-0")]) == 0  # another list
    one = [("+79000000009", "c1-1")]
    assert [guards.claim_status_request(ACCT, one) for _ in range(5)] == [0] * 5  # one message: five
    assert guards.claim_status_request(ACCT, one) > 0
