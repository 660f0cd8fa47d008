"""After a Redis restart: settle every batch that could have left before anything is sent again.

With ``appendfsync everysec`` a crash may lose the last second of writes — among them a batch's
``mark_sending`` (the send intent) whose request did reach the provider. We do not try to make each
intent durable (``WAITAOF`` needs Redis 7.2 and costs a disk sync per batch); instead, whenever the
server's ``run_id`` differs from the one whose batches we last settled, every unfinished batch that
was already due is marked "settle first": before it is sent, its recipients are looked up through
``status.php`` (by the batch's request id and each phone) and only those the provider never took go
out again. Old executions are fenced off (their token is wiped), and the settlement waits until any
request sent before the restart is surely over (``settle_after_ms``).

The check is one round trip (``INFO server`` + ``HGET``) and runs at every batch start and dispatch
tick; the marking runs once per restart, under a lock, and is idempotent if interrupted. A new
namespace records its server at its first dispatch tick or first campaign commit (``HSETNX``), so the
campaigns of a fresh start are not settled needlessly; should that write be lost in a crash, so is
everything after it, and the next server's run_id differs anyway.
"""

from __future__ import annotations

import logging

import redis

from scheduler.campaigns import Campaigns
from scheduler.keys import Keys
from scheduler.ledger import Ledger

__all__ = ["ensure_recovered"]

log = logging.getLogger(__name__)


def ensure_recovered(client: redis.Redis, keys: Keys, *, now_ms: int, settle_after_ms: int,
                     ledger: Ledger | None = None, campaigns: Campaigns | None = None) -> bool:
    """True when the batches of this Redis server's life are known to be settled; False while another
    process is doing it (the caller should try again in a moment)."""
    pipe = client.pipeline(transaction=False)
    pipe.info("server")
    pipe.hget(keys.meta, "run_id")
    info, known = pipe.execute()
    run_id = str(info["run_id"])
    if _text(known) == run_id:
        return True
    lock = keys.meta + ":recovering"
    if not client.set(lock, run_id, nx=True, px=120_000):
        return False
    try:
        # Another process may have finished the recovery between our read and our lock: once per restart.
        if _text(client.hget(keys.meta, "run_id")) == run_id:
            return True
        ledger = ledger or Ledger(client, keys)
        campaigns = campaigns or Campaigns(client, keys)
        unfinished = campaigns.unfinished()
        marked = ledger.recover(now_ms=now_ms, settle_after_ms=settle_after_ms, horizon_ms=now_ms + 1000,
                                campaign_ids=iter([c for c, _ in unfinished]), batches_of=dict(unfinished))
        client.hset(keys.meta, mapping={"run_id": run_id, "recovered_ms": now_ms, "marked": marked})
        if known is not None or marked:
            log.warning("redis server %s is new: %d batches of %d campaigns will be settled before sending",
                        run_id[:8], marked, len(unfinished))
        return True
    finally:
        client.delete(lock)


def _text(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v
