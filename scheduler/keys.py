"""Every Redis key of smsc-mailer is built here; this docstring is the keyspace.

All keys share one hash tag, ``{<namespace>}`` (default ``{smsc}``), so that every Lua script may
touch any of them and the design holds on Redis Cluster (all in one slot). Several deployments can
share one Redis with different namespaces.

==============================  ======  =====  ==================================  ===================
key                             type    TTL    written by                          read by
==============================  ======  =====  ==================================  ===================
``{ns}:due``                    ZSET    -      intake commit, release, sweep,      dispatcher (claim)
                                               resume; member ``cid:n``, score =
                                               due time (ms)
``{ns}:leased``                 ZSET    -      claim, begin, mark_sending;         sweep (expired
                                               score = lease deadline (ms)         leases), begin
``{ns}:campaigns``              ZSET    -      intake commit; score = created ms   status listing
``{ns}:meta``                   HASH    -      recovery (``run_id`` of the Redis   recovery check
                                               server whose batches were settled);
                                               intake commit (HSETNX: the server
                                               a new namespace starts on)
``{ns}:c:<cid>``                HASH    -      intake, ledger scripts, controls    status, begin
                                               (state, counters, message, plan)
``{ns}:c:<cid>:seen``           SET     1 d    intake (dedup keys), deleted at     intake
                                               commit
``{ns}:c:<cid>:parked``         SET     -      begin (paused campaign/stopped      resume
                                               account)
``{ns}:b:<cid>:<n>``            HASH    -      intake, ledger scripts              worker, report
                                               (phones, state, owner, attempts,
                                               settle, results)
``{ns}:a:<acct>``               HASH    -      account outcome script, resume      begin, semaphore
                                               (state, backoff, error streak)
``{ns}:a:<acct>:campaigns``     SET     -      intake commit                       funds/auth pause
``{ns}:a:<acct>:inflight``      ZSET    -      semaphore (token → lease deadline)  semaphore
``{ns}:a:<acct>:probe``         ZSET    -      semaphore: the one request of a     semaphore
                                               process whose credentials are not
                                               proven yet (token → lease deadline)
``{ns}:a:<acct>:freed``         LIST    60 s   semaphore release (one wake-up a    slot waiters
                                               slot given back, at most 14 kept)   (BLPOP)
``{ns}:a:<acct>:f:<phone>``     STRING  ≥60 s  flood guard ("count:last_ms")       flood guard
``{ns}:a:<acct>:r:<sha256>``    STRING  60 s   request dedup (send)                request dedup
``{ns}:a:<acct>:q:<sha256>``    STRING  60 s   request dedup (cost: a counter)     request dedup
``{ns}:a:<acct>:s:<sha256>``    STRING  60 s   status dedup (status.php: a         status dedup
                                               counter of identical requests)
==============================  ======  =====  ==================================  ===================

No key or value holds a password or API key.
"""

from __future__ import annotations

import re

__all__ = ["CAMPAIGN_ID_RE", "Keys", "batch_ref", "split_ref", "text"]

#: What a campaign id may look like: it becomes part of the provider's request ``id`` (≤ 40 chars
#: of ``A-Za-z0-9.-_``) together with ``-<batch number>``.
CAMPAIGN_ID_RE = re.compile(r"^[A-Za-z0-9_.]{1,24}$")


def text(value: object) -> str:
    """A Redis reply (bytes or str) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def batch_ref(campaign_id: str, n: int) -> str:
    """The due-queue member of batch ``n`` of a campaign."""
    return f"{campaign_id}:{n}"


def split_ref(ref: str) -> tuple[str, int]:
    cid, _, n = ref.rpartition(":")
    return cid, int(n)


class Keys:
    """Builds the keys of one namespace."""

    def __init__(self, namespace: str = "smsc") -> None:
        self.namespace = namespace
        self.prefix = "{" + namespace + "}:"
        self.due = self.prefix + "due"
        self.leased = self.prefix + "leased"
        self.campaigns = self.prefix + "campaigns"
        self.meta = self.prefix + "meta"

    def campaign(self, cid: str) -> str:
        return f"{self.prefix}c:{cid}"

    def seen(self, cid: str) -> str:
        return f"{self.prefix}c:{cid}:seen"

    def parked(self, cid: str) -> str:
        return f"{self.prefix}c:{cid}:parked"

    def batch(self, ref: str) -> str:
        return f"{self.prefix}b:{ref}"

    def account(self, acct: str) -> str:
        return f"{self.prefix}a:{acct}"

    def account_campaigns(self, acct: str) -> str:
        return f"{self.prefix}a:{acct}:campaigns"

    def inflight(self, acct: str) -> str:
        return f"{self.prefix}a:{acct}:inflight"

    def probe(self, acct: str) -> str:
        return f"{self.prefix}a:{acct}:probe"

    def slot_freed(self, acct: str) -> str:
        return f"{self.prefix}a:{acct}:freed"

    def flood(self, acct: str, phone_key: str) -> str:
        return f"{self.prefix}a:{acct}:f:{phone_key}"

    def send_request(self, acct: str, fingerprint: str) -> str:
        return f"{self.prefix}a:{acct}:r:{fingerprint}"

    def cost_request(self, acct: str, fingerprint: str) -> str:
        return f"{self.prefix}a:{acct}:q:{fingerprint}"

    def status_request(self, acct: str, fingerprint: str) -> str:
        return f"{self.prefix}a:{acct}:s:{fingerprint}"
