"""Restart recovery (issue 9 items 7 and 10): cancelled campaigns are settled too, the recovery lock is
only ever released by its owner, and the logins stay quiet while requests from before the restart may
still be in flight.

A restart is staged as in ``test_ledger.py``: the stored ``run_id`` is made an old one, and the writes
a crash would lose are undone by hand.
"""

from __future__ import annotations

from typing import Any

import redis

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.guards import Guards, SlotResult
from scheduler.keys import Keys
from scheduler.ledger import BeginVerdict, Ledger, Outcome, Settle, server_time_ms
from scheduler.recovery import ensure_recovered

T = 1_700_000_000_000
ACCT = "acct"
LEASE = 30_000
DEADLINE_S, HORIZON_S = 30.0, 12.0


def create(campaigns: Campaigns, cid: str, n: int, batch_size: int, *, now_ms: int = T,
           account: str = ACCT) -> None:
    spec = CampaignSpec(message="hello", parts=1, account=account, batch_size=batch_size, campaign_id=cid)
    campaigns.create(spec, ((i + 1, f"+7900{i:07d}") for i in range(n)), now_ms=now_ms)


def restart(client: redis.Redis, keys: Keys) -> None:
    client.hset(keys.meta, "run_id", "old")


def test_a_cancelled_campaign_is_recovered_so_what_the_provider_took_is_not_counted_cancelled(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    assert ensure_recovered(redis_client, keys, now_ms=T, deadline_s=DEADLINE_S, horizon_s=HORIZON_S)
    create(campaigns, "c1", 4, 2)
    [ref] = ledger.claim(window=10, claim_lease_ms=10_000, max_claim=1, now_ms=T)  # c1:0
    assert ledger.begin(ref, token="A", exec_lease_ms=LEASE, account=ACCT, now_ms=T).verdict is BeginVerdict.OK
    assert ledger.mark_sending(ref, token="A", lease_ms=LEASE, settle_margin_ms=42_000, now_ms=T)
    # The request is out; the operator cancels (the waiting batch is cancelled, the leased one is not).
    assert campaigns.cancel("c1", now_ms=T + 10)["cancelled_now"] == 2
    # Redis crashes and loses the last second: the claim, the begin and the send intent of c1:0.
    redis_client.zrem(keys.leased, ref)
    redis_client.zadd(keys.due, {ref: T})
    redis_client.hset(keys.batch(ref), mapping={"state": "queued", "owner": "", "attempts": 0})
    redis_client.hdel(keys.batch(ref), "settle_after", "sent_at")
    restart(redis_client, keys)
    assert ensure_recovered(redis_client, keys, now_ms=T + 1_000, deadline_s=DEADLINE_S, horizon_s=HORIZON_S)
    assert redis_client.hget(keys.batch(ref), "settle") == b"1"
    # The operator's cancel, repeated, leaves it alone: its recipients may be with the provider.
    assert campaigns.cancel("c1", now_ms=T + 2_000)["cancelled_now"] == 0
    after = T + 1_000 + 42_000
    b = ledger.begin(ref, token="B", exec_lease_ms=LEASE, account=ACCT, now_ms=after)
    assert (b.verdict, b.settle) == (BeginVerdict.OK, True)  # settle first, though cancelled
    # status.php: the provider took one of the two; the other is cancelled.
    out = Outcome(sent=1, remaining=[b.phones[1]], settle=Settle.CLEAR)
    out.add_row(b.phones[0], "sent", msg_id="c1-0", reason="settled via status.php")
    assert ledger.record(ref, token="B", outcome=out, now_ms=after) == (True, "cancelled")
    s = campaigns.status("c1")
    assert (s["sent"], s["cancelled"], s["pending"]) == (1, 3, 0)


class _StolenLock:
    """A client through which, just before the recovery writes its result, the recovery lock runs out
    and another process takes it (a marking slower than the lock's lease)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client, self._keys = client, keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def hset(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == self._keys.meta and "mapping" in kwargs:
            self._client.set(self._keys.recovery_lock, "another-process", px=60_000)
        return self._client.hset(name, *args, **kwargs)


def test_the_recovery_lock_is_released_only_by_its_owner(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    assert ensure_recovered(redis_client, keys, now_ms=T, deadline_s=DEADLINE_S, horizon_s=HORIZON_S)
    create(campaigns, "c1", 2, 2)
    restart(redis_client, keys)
    slow = _StolenLock(redis_client, keys)
    assert ensure_recovered(slow, keys, now_ms=T + 1, deadline_s=DEADLINE_S,  # type: ignore[arg-type]
                            horizon_s=HORIZON_S, ledger=ledger)
    assert redis_client.get(keys.recovery_lock) == b"another-process"  # theirs, not deleted by us
    # A lock held by another process: we wait, and touch nothing.
    restart(redis_client, keys)
    assert not ensure_recovered(redis_client, keys, now_ms=T + 2, deadline_s=DEADLINE_S, horizon_s=HORIZON_S)
    assert redis_client.get(keys.recovery_lock) == b"another-process"


def test_after_a_restart_the_logins_stay_quiet_until_old_requests_are_over(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns, guards: Guards
) -> None:
    now = server_time_ms(redis_client)
    assert ensure_recovered(redis_client, keys, deadline_s=DEADLINE_S, horizon_s=HORIZON_S)
    create(campaigns, "done", 1, 1, now_ms=now, account="other")  # finished before the crash
    [done] = ledger.claim(window=10, claim_lease_ms=10_000, max_claim=10)
    ledger.begin(done, token="D", exec_lease_ms=LEASE, account="other")
    assert ledger.record(done, token="D", outcome=Outcome(sent=1)) == (True, "completed")
    create(campaigns, "c1", 2, 2, now_ms=now)
    restart(redis_client, keys)
    lo = server_time_ms(redis_client)
    assert ensure_recovered(redis_client, keys, deadline_s=DEADLINE_S, horizon_s=HORIZON_S)
    hi = server_time_ms(redis_client)
    quiet = guards.account_state(ACCT).quiet_until_ms
    assert lo + 30_000 <= quiet <= hi + 30_000
    assert guards.account_state("other").quiet_until_ms == 0  # nothing of it can be in flight
    # No new request leaves on the login until then — neither a slot nor a batch of a new campaign.
    assert guards.try_slot(ACCT, "new", lease_ms=1_000) is SlotResult.CLOSED
    create(campaigns, "c2", 1, 1, now_ms=hi)
    [ref2] = ledger.claim(window=10, claim_lease_ms=10_000, max_claim=10)
    b = ledger.begin(ref2, token="N", exec_lease_ms=LEASE, account=ACCT)
    assert (b.verdict, b.until_ms) == (BeginVerdict.DEFERRED, quiet)
    # The batch that may have left settles only after the deadline and the horizon.
    settle_after = int(redis_client.hget(keys.batch("c1:0"), "settle_after") or 0)
    assert lo + 42_000 <= settle_after <= hi + 42_000
