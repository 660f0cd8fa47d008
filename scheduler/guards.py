"""The provider's rules, kept here for all workers together (design invariant 5).

Each guard is one atomic step in Redis (a Lua script or a single ``SET NX``), never a check-then-act
from Python:

- :meth:`Guards.admit_phones` — the subscriber flood guard (≤ 50 messages in a < 60 s chain);
- :meth:`Guards.claim_send_request` / :meth:`Guards.claim_cost_request` — request dedup (one identical
  send per 60 s, five identical cost requests per 60 s); :meth:`Guards.claim_status_request` — the same
  for status.php (one identical mass request, five for one message, per 60 s);
- :meth:`Guards.try_slot` / :meth:`Guards.release_slot` — the login semaphore (< 15 in flight), closed
  while the account is stopped or backing off;
- :meth:`Guards.account_outcome` — what an answer means for the whole account (back-off, stop).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from scheduler.keys import Keys
from scheduler.keys import text as _s
from scheduler.scripts import Scripts

__all__ = ["AccountPolicy", "AccountVerdict", "FloodPolicy", "Guards"]


#: Wake-ups kept for slot waiters (one a released slot): no more than slots can come free at once.
_MAX_WAKEUPS = 16


@dataclass(frozen=True)
class FloodPolicy:
    #: The provider's rule: 50 messages to one subscriber in an unbroken chain.
    limit: int = 50
    #: A chain breaks after a 60 s gap; the extra 2 s cover the request's travel to the provider, so
    #: that the provider, which measures arrival times, never sees a shorter gap than we did.
    gap_ms: int = 62_000


@dataclass(frozen=True)
class AccountPolicy:
    #: First account-wide wait after error 4 (and after a streak of errors); doubles each time.
    base_backoff_ms: int = 30_000
    max_backoff_ms: int = 600_000
    #: Ordinary failed requests in a row before the whole account backs off.
    errors_before_backoff: int = 3
    #: Errors in a row after which the account cools down — far below the provider's 100-in-a-row block.
    stop_after: int = 20
    cooldown_ms: int = 600_000


@dataclass(frozen=True)
class AccountVerdict:
    state: str
    backoff_until_ms: int
    errors_in_a_row: int


class Guards:
    def __init__(self, client: redis.Redis, keys: Keys, *, scripts: Scripts | None = None,
                 flood: FloodPolicy | None = None, account_policy: AccountPolicy | None = None) -> None:
        self.r = client
        self.keys = keys
        self.scripts = scripts or Scripts(client)
        self.flood = flood or FloodPolicy()
        self.policy = account_policy or AccountPolicy()

    # -- flood -----------------------------------------------------------------------------------
    def admit_phones(self, account: str, phones: Sequence[str], now_ms: int) -> list[int]:
        """Per phone: 0 if admitted now (and counted), else the time (ms) it may be sent from."""
        if not phones:
            return []
        keys = [self.keys.flood(account, p.lstrip("+")) for p in phones]
        out = self.scripts.flood(keys=keys, args=[now_ms, self.flood.limit, self.flood.gap_ms])
        return [int(x) for x in out]

    # -- request dedup ---------------------------------------------------------------------------
    def claim_send_request(self, account: str, fingerprint: str, *, window_ms: int = 60_000) -> int:
        """0 if this identical send request may leave now; else ms to wait until it may."""
        key = self.keys.send_request(account, fingerprint)
        if self.r.set(key, b"1", nx=True, px=window_ms):
            return 0
        ttl = int(self.r.pttl(key))
        return max(ttl, 1)

    def forget_send_request(self, account: str, fingerprint: str) -> None:
        """The request was refused before the provider took it (connect error): it may go again."""
        self.r.delete(self.keys.send_request(account, fingerprint))

    def claim_cost_request(self, account: str, fingerprint: str, *, limit: int = 5,
                           window_ms: int = 60_000) -> int:
        """0 if one more identical cost request may leave now; else ms to wait."""
        key = self.keys.cost_request(account, fingerprint)
        return self._count_in_window(key, limit=limit, window_ms=window_ms)

    def claim_status_request(self, account: str, pairs: Sequence[tuple[str, str]], *,
                             window_ms: int = 60_000) -> int:
        """0 if this status.php request (``(phone, id)`` pairs) may leave now; else ms to wait.

        The provider answers error 9 to more than five status requests for one message, or to the
        same mass request more than once, within a minute: a batch settled twice in a row (a retry
        refused again, a lost lease) must wait, not ask again.
        """
        digest = hashlib.sha256("\n".join(f"{p},{i}" for p, i in pairs).encode()).hexdigest()
        key = self.keys.status_request(account, digest)
        limit = 5 if len(pairs) == 1 else 1
        return self._count_in_window(key, limit=limit, window_ms=window_ms)

    def _count_in_window(self, key: str, *, limit: int, window_ms: int) -> int:
        """Count one more request in the key's window (opened by the first); 0 while within ``limit``,
        else ms until the window closes. One MULTI: atomic for all workers."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(key, b"0", nx=True, px=window_ms)
        pipe.incr(key)
        pipe.pttl(key)
        _, count, ttl = pipe.execute()
        if int(count) <= limit:
            return 0
        return max(int(ttl), 1)

    # -- login semaphore -------------------------------------------------------------------------
    def acquire_slot(self, account: str, token: str, *, now_ms: int, lease_ms: int, cap: int) -> bool:
        """True when the slot is taken (see :meth:`try_slot` for why it was not)."""
        return self.try_slot(account, token, now_ms=now_ms, lease_ms=lease_ms, cap=cap) == "taken"

    def try_slot(self, account: str, token: str, *, now_ms: int, lease_ms: int, cap: int,
                 probe: bool = False) -> str:
        """``"taken"``; ``"busy"`` when the login is at its cap (wait a moment); ``"closed"`` when the
        account must not send now (stopped, or backing off): give the batch back without a request.

        ``probe``: the calling process has had no good answer with its credentials yet; such requests
        go out one at a time for the whole account, so a wrong password is refused once, not per slot."""
        res = int(self.scripts.acquire(
            keys=[self.keys.inflight(account), self.keys.account(account), self.keys.probe(account)],
            args=[token, now_ms, now_ms + lease_ms, cap, "1" if probe else "0"]))
        return "taken" if res == 1 else "busy" if res == 0 else "closed"

    def release_slot(self, account: str, token: str) -> None:
        """Give the slot back and wake one execution waiting for it (:meth:`wait_for_slot`)."""
        freed = self.keys.slot_freed(account)
        pipe = self.r.pipeline(transaction=False)
        pipe.zrem(self.keys.inflight(account), token)
        pipe.zrem(self.keys.probe(account), token)
        # A wake-up is only a hint (the semaphore's ZSET stays the truth): unclaimed ones are capped, so
        # a waiter that finds a stale one just tries once more.
        pipe.lpush(freed, b"1")
        pipe.ltrim(freed, 0, _MAX_WAKEUPS - 1)
        pipe.pexpire(freed, 60_000)
        pipe.execute()

    def wait_for_slot(self, account: str, timeout_s: float) -> bool:
        """Block until a slot of the login was given back or ``timeout_s`` passed (True: try again now).

        Redis serves blocked clients first come, first served, so the execution that has waited longest
        is woken first, at once — not at its next poll, while a newcomer takes the slot. A slot freed
        by an expired lease wakes nobody: the timeout covers it."""
        return self.r.blpop([self.keys.slot_freed(account)], timeout=max(timeout_s, 0.001)) is not None

    def slots_in_use(self, account: str, now_ms: int) -> int:
        return int(self.r.zcount(self.keys.inflight(account), now_ms + 1, "+inf"))

    # -- account ---------------------------------------------------------------------------------
    def account_outcome(self, account: str, outcome: str, *, now_ms: int, reason: str = "",
                        base_backoff_ms: int | None = None) -> AccountVerdict:
        p = self.policy
        state, until, streak = self.scripts.account(
            keys=[self.keys.account(account)],
            args=[outcome, now_ms, reason[:300], base_backoff_ms or p.base_backoff_ms, p.max_backoff_ms,
                  p.stop_after, p.cooldown_ms, p.errors_before_backoff])
        return AccountVerdict(_s(state), int(until), int(streak))

    def account_state(self, account: str) -> dict[str, str]:
        raw = self.r.hgetall(self.keys.account(account))
        return {_s(k): _s(v) for k, v in raw.items()}

    def reset_account(self, account: str) -> None:
        """An operator's resume: clear a stop, a cool-down and a back-off (a password must be proven
        again by one request before the full concurrency returns)."""
        key = self.keys.account(account)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping={"state": "ok", "backoff_until": "0", "errors_in_a_row": "0", "level": "0"})
        pipe.hdel(key, "reason")
        pipe.execute()

