"""The ledger: batches move due → leased → sending → done, every step fenced and atomic.

A batch is taken by one task execution at a time (a fresh token per execution, written by
``begin``); ``mark_sending`` records the send intent before the request leaves; ``record`` applies
the outcome to the batch and the campaign's counters in one script. A message delivered twice, a
worker killed mid-batch or a lease that ran out can never make a recipient count twice: the token
fences every write, and a batch caught ``sending`` is settled through the provider's status before
anything is sent again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import redis

from scheduler.keys import Keys, split_ref
from scheduler.keys import text as _s
from scheduler.scripts import Scripts

__all__ = ["Begin", "Ledger", "Outcome"]


@dataclass(frozen=True)
class Begin:
    verdict: str  # ok | missing | done | busy | cancelled | parked | deferred
    phones: tuple[str, ...] = ()
    settle: bool = False
    attempts: int = 0
    until_ms: int = 0
    cancelled: int = 0


@dataclass
class Outcome:
    """What one execution learned; applied by :meth:`Ledger.record` in one atomic step."""

    sent: int = 0
    failed: int = 0
    sms: int = 0
    cost_milli: int = 0
    rows: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    due_at_ms: int = 0
    settle: str = ""  # '1' set, '0' clear, '' keep
    reason: str = ""

    def add_row(self, phone: str, state: str, *, msg_id: str = "", parts: int | str = "",
                cost: str = "", code: int | str = "", reason: str = "") -> None:
        clean = reason.replace(";", ",").replace("\n", " ")
        self.rows.append(f"{phone};{state};{msg_id};{parts};{cost};{code};{clean}\n")


class Ledger:
    def __init__(self, client: redis.Redis, keys: Keys, *, scripts: Scripts | None = None) -> None:
        self.r = client
        self.keys = keys
        self.scripts = scripts or Scripts(client)

    # -- dispatch ------------------------------------------------------------------------------
    def claim(self, *, now_ms: int, window: int, claim_lease_ms: int, max_claim: int) -> list[str]:
        refs = self.scripts.claim(keys=[self.keys.due, self.keys.leased],
                                  args=[now_ms, window, claim_lease_ms, max_claim])
        return [_s(x) for x in refs]

    def expired_leases(self, now_ms: int, limit: int = 500) -> list[str]:
        return [_s(x) for x in self.r.zrangebyscore(self.keys.leased, "-inf", now_ms, start=0, num=limit)]

    def sweep(self, now_ms: int, limit: int = 500) -> int:
        """Put back every batch whose lease ran out; returns how many went back."""
        n = 0
        for ref in self.expired_leases(now_ms, limit):
            n += int(self.scripts.sweep(keys=[self.keys.batch(ref), self.keys.leased, self.keys.due],
                                        args=[ref, now_ms]))
        return n

    # -- one execution -------------------------------------------------------------------------
    def begin(self, ref: str, *, token: str, now_ms: int, exec_lease_ms: int, account: str) -> Begin:
        cid, _ = split_ref(ref)
        k = self.keys
        res = self.scripts.begin(
            keys=[k.batch(ref), k.leased, k.due, k.campaign(cid), k.account(account), k.parked(cid)],
            args=[ref, now_ms, token, exec_lease_ms])
        verdict = _s(res[0])
        if verdict == "ok":
            phones = _s(res[1])
            return Begin("ok", tuple(phones.split(",")) if phones else (), _s(res[2]) == "1",
                         int(res[3]))
        if verdict == "deferred":
            return Begin("deferred", until_ms=int(float(_s(res[1]))))
        if verdict == "cancelled":
            return Begin("cancelled", cancelled=int(res[1]))
        return Begin(verdict)

    def mark_sending(self, ref: str, *, token: str, now_ms: int, settle_after_ms: int,
                     lease_until_ms: int) -> bool:
        return bool(self.scripts.mark_sending(keys=[self.keys.batch(ref), self.keys.leased],
                                              args=[ref, token, now_ms, settle_after_ms, lease_until_ms]))

    def record(self, ref: str, *, token: str, now_ms: int, outcome: Outcome) -> tuple[bool, str]:
        cid, _ = split_ref(ref)
        k = self.keys
        ok, state = self.scripts.record(
            keys=[k.batch(ref), k.leased, k.due, k.campaign(cid)],
            args=[ref, token, now_ms, outcome.sent, outcome.failed, outcome.sms, outcome.cost_milli,
                  "".join(outcome.rows), ",".join(outcome.remaining), outcome.due_at_ms or now_ms,
                  outcome.settle, outcome.reason[:300]])
        return bool(int(ok)), _s(state)

    def release(self, ref: str, *, token: str, now_ms: int, phones: Sequence[str], due_at_ms: int,
                settle: str = "", reason: str = "") -> bool:
        """Put the batch back, unchanged, for a later attempt."""
        ok, _ = self.record(ref, token=token, now_ms=now_ms,
                            outcome=Outcome(remaining=list(phones), due_at_ms=due_at_ms, settle=settle,
                                            reason=reason))
        return ok

    # -- recovery after a Redis restart --------------------------------------------------------
    def recovered_run_id(self) -> str | None:
        v = self.r.hget(self.keys.meta, "run_id")
        return _s(v) if v is not None else None

    def server_run_id(self) -> str:
        return str(self.r.info("server")["run_id"])

    def recover(self, *, now_ms: int, settle_after_ms: int, horizon_ms: int,
                campaign_ids: Iterator[str], batches_of: dict[str, int]) -> int:
        """Mark every batch that could have been sent as 'settle first'; returns how many."""
        marked = 0
        k = self.keys
        for cid in campaign_ids:
            for n in range(batches_of.get(cid, 0)):
                ref = f"{cid}:{n}"
                marked += int(self.scripts.recover(keys=[k.batch(ref), k.leased, k.due],
                                                   args=[ref, settle_after_ms, horizon_ms]))
        return marked

