"""After a Redis restart: settle every batch that could have left before anything is sent again.

With ``appendfsync everysec`` a crash may lose the last second of writes — among them a batch's
``mark_sending`` (the send intent) whose request did reach the provider. We do not make each intent
durable (``WAITAOF`` needs Redis 7.2 and costs a disk sync per batch); instead, whenever the server's
``run_id`` differs from the one whose batches we last settled, every unfinished batch that was already
due is marked "settle first": before it is sent, its recipients are looked up through ``status.php``
(by the batch's request id and each phone) and only those the provider never took go out again.

- **Which campaigns**: every one whose counters do not add up yet, *cancelled ones included* — a
  cancelled campaign's batch may have left just before the restart, and what the provider took must
  be counted ``sent``, not ``cancelled`` (``cancel`` and ``begin`` never cancel a batch marked to settle).
- **Old executions are fenced off** (their token is wiped), and the settlement waits until any request
  sent before the restart is surely over (:func:`scheduler.ledger.settle_margin_ms` from now).
- **The logins go quiet** (:meth:`scheduler.guards.Guards.quiet`) until the requests sent before the
  restart are surely no longer in flight (their hard deadline from now): the semaphore's memory of them
  may be gone, and a new request must not make a 15th at the provider.
- **Once per restart, under a lock** that holds a token and is released by compare-and-delete
  (redis-py's :class:`~redis.lock.Lock`), so a process whose lock ran out never deletes another's. The
  marking is idempotent if interrupted. A new namespace records its server at its first dispatch tick or
  first campaign commit (``HSETNX``), so the campaigns of a fresh start are not settled needlessly; should
  that write be lost in a crash, so is everything after it, and the next server's run_id differs anyway.

The check is one round trip (``INFO server`` + ``HGET``) at every batch start and dispatch tick.
"""

from __future__ import annotations

import logging
import math

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from scheduler.guards import Guards
from scheduler.keys import Keys, batch_ref
from scheduler.keys import text as _s
from scheduler.ledger import Ledger, server_time_ms, settle_margin_ms

__all__ = ["ensure_recovered"]

log = logging.getLogger(__name__)

#: The recovery lock's lease: far longer than marking takes (one script call per 500 batches); if a
#: process dies holding it, the next one recovers after this.
_LOCK_S = 120.0


def ensure_recovered(client: redis.Redis, keys: Keys, *, deadline_s: float, horizon_s: float = 0.0,
                     now_ms: int | None = None, ledger: Ledger | None = None, guards: Guards | None = None) -> bool:
    """True when the batches of this Redis server's life are known to be settled; False while another
    process is doing it (the caller should try again in a moment).

    ``deadline_s``: the hard deadline of one provider request (``SMSC_TIMEOUT``); ``horizon_s``: the
    settle horizon (``SMSC_SETTLE_HORIZON``). ``now_ms``: ``None`` = the server's clock (a value only
    for tests)."""
    margin_ms = settle_margin_ms(deadline_s=deadline_s, horizon_s=horizon_s)
    quiet_ms = math.ceil(deadline_s * 1000)
    pipe = client.pipeline(transaction=False)
    pipe.info("server")
    pipe.hget(keys.meta, "run_id")
    info, known = pipe.execute()
    run_id = str(info["run_id"])
    if known is not None and _s(known) == run_id:
        return True
    lock = Lock(client, keys.recovery_lock, timeout=_LOCK_S, blocking=False)
    if not lock.acquire():
        return False
    try:
        # Another process may have finished the recovery between our read and our lock: once per restart.
        again = client.hget(keys.meta, "run_id")
        if again is not None and _s(again) == run_id:
            return True
        ledger = ledger or Ledger(client, keys)
        guards = guards or Guards(client, keys, scripts=ledger.scripts)
        now = now_ms if now_ms is not None else server_time_ms(client)
        unsettled = _unsettled_campaigns(client, keys)
        # First the quiet: no new request on these logins while one from before the restart may be out.
        for login in sorted({login for _, _, login in unsettled if login}):
            guards.quiet(login, until_ms=now + quiet_ms)
        refs = [batch_ref(cid, n) for cid, batches, _ in unsettled for n in range(batches)]
        marked = ledger.recover(refs, settle_margin_ms=margin_ms, now_ms=now_ms)
        client.hset(keys.meta, mapping={"run_id": run_id, "recovered_ms": now, "marked": marked})
        if known is not None or marked:
            log.warning("redis server %s is new: %d batches of %d campaigns will be settled before sending",
                        run_id[:8], marked, len(unsettled))
        return True
    finally:
        try:
            lock.release()
        except LockError:
            # Our lease ran out (a very slow marking): another process may be recovering too, which is
            # harmless (the marking is idempotent); its lock is not ours to delete.
            log.warning("recovery lock of server %s expired before it was released", run_id[:8])


def _unsettled_campaigns(client: redis.Redis, keys: Keys) -> list[tuple[str, int, str]]:
    """(campaign id, batches, login) of every committed campaign whose counters do not add up yet —
    whatever its state, cancelled included."""
    cids = [_s(x) for x in client.zrange(keys.campaigns, 0, -1)]
    out: list[tuple[str, int, str]] = []
    for i in range(0, len(cids), 500):
        chunk = cids[i:i + 500]
        pipe = client.pipeline(transaction=False)
        for cid in chunk:
            pipe.hmget(keys.campaign(cid), "state", "batches", "total", "sent", "failed", "cancelled", "account")
        for cid, row in zip(chunk, pipe.execute(), strict=True):
            state, batches, total, sent, failed, cancelled, login = (_s(x) if x is not None else "" for x in row)
            if not state or state == "planning":
                continue  # never committed: none of its batches was ever due
            if sum(int(x or 0) for x in (sent, failed, cancelled)) >= int(total or 0):
                continue  # every recipient has its final state
            out.append((cid, int(batches or 0), login))
    return out
