"""Campaigns in Redis, the one object callers use: create and its dry run, status, report, controls.

What a campaign goes through lives in modules of its own, and :class:`Campaigns` is their front:

* :mod:`scheduler.enqueue` — claim → streaming intake → plan → commit (:meth:`Campaigns.create`):
  one campaign per id whoever asks at once, the same id only with the same content, every write of
  an intake fenced by its claim, all of a campaign queued at once or nothing; also the names of a
  campaign's enqueue (:class:`CampaignSpec`, :class:`Receipt`, :class:`CampaignError`), re-exported here;
* :mod:`scheduler.preview` — the dry run (:meth:`Campaigns.preview`), by the same dedup and planner;
* here — reading (:meth:`Campaigns.status`, :meth:`Campaigns.report_rows`, the campaign list) and the
  controls (pause, resume, cancel): idempotent, safe from several places at once.

**Durable before acknowledged.** The commit and every control wait for the server's disk
(:func:`scheduler.durability.wait_durable`) before they return; what that found is in
``Receipt.durable`` and :attr:`Campaigns.last_durable`. A campaign never stays ``planning`` for ever
after a crash: its lease runs out, :meth:`Campaigns.status` says the intake stopped, and enqueueing
the same id again takes it over.

Every instant is the Redis server's clock unless a test passes ``now_ms``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

import redis

from scheduler.durability import Durable, wait_durable
from scheduler.enqueue import (
    CLAIM_LEASE_MS,
    CampaignError,
    CampaignSpec,
    Enqueue,
    Item,
    Receipt,
    new_campaign_id,
)
from scheduler.intake import Rejected
from scheduler.keys import Keys, batch_ref
from scheduler.keys import text as _s
from scheduler.ledger import server_time_ms
from scheduler.preview import preview as _preview
from scheduler.scripts import Scripts, clock_arg

__all__ = [
    "FINAL_STATES",
    "CampaignError",
    "CampaignSpec",
    "Campaigns",
    "Receipt",
    "new_campaign_id",
]

FINAL_STATES = frozenset({"completed", "failed", "cancelled"})


class Campaigns:
    def __init__(self, client: redis.Redis, keys: Keys, *, scripts: Scripts | None = None,
                 claim_lease_ms: int = CLAIM_LEASE_MS) -> None:
        self.r = client
        self.keys = keys
        self.scripts = scripts or Scripts(client)
        self._enqueue = Enqueue(client, keys, scripts=self.scripts, claim_lease_ms=claim_lease_ms)
        #: What the last commit's or control's wait for the server's disk found.
        self.last_durable: Durable | None = None

    @property
    def claim_lease_ms(self) -> int:
        """How long an intake's claim on its campaign id lasts without renewal (ms)."""
        return self._enqueue.claim_lease_ms

    # -- intake --------------------------------------------------------------------------------
    def create(self, spec: CampaignSpec, recipients: Iterable[Item], *,
               now_ms: int | None = None, on_rejected: Callable[[Rejected], None] | None = None,
               recipients_digest: Callable[[], str] | None = None, strict: bool = False,
               **hooks: Any) -> Receipt:
        """Enqueue a campaign, streaming: :meth:`scheduler.enqueue.Enqueue.create` (its arguments — the
        ``hooks`` are its keyword-only callbacks — its receipt); :attr:`last_durable` then says what the
        commit's wait for the disk found."""
        receipt = self._enqueue.create(spec, recipients, now_ms=now_ms, on_rejected=on_rejected,
                                       recipients_digest=recipients_digest, strict=strict, **hooks)
        if not receipt.existing:
            self.last_durable = self._enqueue.last_durable
        return receipt

    # -- dry run ---------------------------------------------------------------------------------
    def preview(self, spec: CampaignSpec, recipients: Iterable[Item], *,
                now_ms: int | None = None, on_rejected: Callable[[Rejected], None] | None = None,
                **hooks: Any) -> dict[str, Any]:
        """What :meth:`create` would queue, without queueing: counts, due times, batches (the dry run).

        The same dedup (a temporary seen SET, deleted at the end) and the same planner as
        :meth:`create`, so the two cannot disagree. ``groups`` lists one row per group and due time:
        ``{"group", "recipients", "due_ms"}``, ordered by due time (see :mod:`scheduler.preview`).
        """
        return _preview(self.r, self.keys, spec, recipients, scripts=self.scripts, now_ms=now_ms,
                        on_rejected=on_rejected, **hooks)

    # -- reading -------------------------------------------------------------------------------
    def exists(self, cid: str) -> bool:
        return bool(self.r.exists(self.keys.campaign(cid)))

    def fields(self, cid: str) -> dict[str, str]:
        raw = self.r.hgetall(self.keys.campaign(cid))
        if not raw:
            raise CampaignError(f"no campaign with id {cid!r}")
        return {_s(k): _s(v) for k, v in raw.items()}

    def status(self, cid: str, *, configured_cap: int | None = None) -> dict[str, Any]:
        """The campaign as a user sees it; ``sent + failed + cancelled + pending == total`` always.

        ``quarantined`` (a part of ``failed``: recipients of batches that failed too often) and the
        login's ``account_adaptive_cap`` (lowered while the provider answers slowly; None = not
        lowered) and ``account_verified`` are read where the ledger and the guards keep them;
        ``account_cap`` is the login's effective cap when ``configured_cap`` (``SMSC_CONCURRENCY``) is
        given. While ``planning``: ``intake_alive`` (its intake still renews its claim) and
        ``intake_lease_until_ms``; a ``planning`` campaign whose intake is not alive was interrupted:
        nothing of it is queued, and enqueueing the same id again finishes it.
        """
        f = self.fields(cid)
        total, sent, failed, cancelled = (int(f.get(x, 0) or 0) for x in ("total", "sent", "failed", "cancelled"))
        account = f.get("account", "")
        a: dict[str, str] = {}
        if account:
            try:
                a = {_s(k): _s(v) for k, v in self.r.hgetall(self.keys.account(account)).items()}
            except ValueError:  # not a login id: no account state to show
                a = {}
        adaptive = float(a["adaptive_cap"]) if a.get("adaptive_cap") else None
        verified = a.get("verified") == "1"
        out: dict[str, Any] = {
            "campaign_id": cid,
            "state": f.get("state", ""),
            "total": total,
            "sent": sent,
            "failed": failed,
            "cancelled": cancelled,
            "pending": total - sent - failed - cancelled,
            "invalid": int(f.get("invalid", 0) or 0),
            "duplicates": int(f.get("duplicates", 0) or 0),
            "parts": int(f.get("parts", 0) or 0),
            "sms": int(f.get("sms", 0) or 0),
            "cost": str(Decimal(int(f.get("cost_milli", 0) or 0)) / 1000),
            "batches": int(f.get("batches", 0) or 0),
            "account": account,
            "sender": f.get("sender") or None,
            "created_ms": int(f.get("created_ms", 0) or 0),
            "queued_ms": int(f.get("queued_ms", 0) or 0) or None,
            "started_ms": int(f.get("started_ms", 0) or 0) or None,
            "finished_ms": int(f.get("finished_ms", 0) or 0) or None,
            "reason": f.get("pause_reason") or None,
            "last_error": f.get("last_error") or None,
            "account_state": a.get("state", "ok"),
            "account_reason": a.get("reason") or None,
            "account_backoff_until_ms": int(float(a.get("backoff_until", 0) or 0)) or None,
            "account_backoffs": int(a.get("backoffs", 0) or 0),
            "account_errors_in_a_row": int(a.get("errors_in_a_row", 0) or 0),
            "quarantined": int(f.get("quarantined", 0) or 0),
            "account_adaptive_cap": adaptive,
            "account_verified": verified,
            "suppressed": int(f.get("suppressed", 0) or 0),
            "sms_estimate": int(f.get("sms_estimate", 0) or 0) or int(f.get("parts", 0) or 0) * total,
            "spent": str(Decimal(int(f.get("cost_milli", 0) or 0)) / 1000),
            "max_cost": str(Decimal(int(f["max_cost_milli"])) / 1000) if f.get("max_cost_milli") else None,
            "personal": f.get("personal") == "1",
            "options": json.loads(f["options"]) if f.get("options") else {},
            "auto_stop": f.get("auto_stop") == "1",
            "retry_of": f.get("retry_of") or None,
            "account_name": f.get("account_name") or "default",
            "priority": f.get("priority") or "normal",
            "weight": int(f.get("weight") or 1),
            "retries": [r for r in (f.get("retries") or "").split(",") if r],
        }
        if configured_cap is not None:
            cap = configured_cap if adaptive is None else min(configured_cap, max(1, int(adaptive)))
            out["account_cap"] = cap if verified else 1
        if out["state"] == "planning":
            out["intake_lease_until_ms"] = _lease_until(f) or None
            out["intake_alive"] = self._intake_alive(f)
        return out

    def campaign_ids(self) -> list[str]:
        return [_s(x) for x in self.r.zrange(self.keys.campaigns, 0, -1)]

    def report_rows(self, cid: str) -> Iterator[list[str]]:
        """One row per recipient: phone, state, provider id, parts, cost, error code, reason."""
        n = int(self.fields(cid).get("batches", 0) or 0)
        for lo in range(0, n, 200):
            pipe = self.r.pipeline(transaction=False)
            for i in range(lo, min(n, lo + 200)):
                pipe.hmget(self.keys.batch(batch_ref(cid, i)), "rows", "phones")
            for rows, phones in pipe.execute():
                for line in _s(rows or b"").splitlines():
                    yield line.split(";", 6)
                for phone in filter(None, _s(phones or b"").split(",")):
                    yield [phone, "pending", "", "", "", "", ""]

    # -- controls (idempotent, safe from several places at once, durable before they return) ------
    def pause(self, cid: str, *, now_ms: int | None = None, reason: str = "paused by operator") -> str:
        self._controllable(cid)
        state = self._pause(cid, now_ms, reason)
        self._durable(cid)
        return state

    def resume(self, cid: str, *, now_ms: int | None = None) -> str:
        f = self._controllable(cid)
        k = self.keys
        state = f.get("state", "")
        moved_any = True
        while moved_any:
            members = [_s(x) for x in self.r.srandmember(k.parked(cid), 500) or []]
            res = self.scripts.resume(
                keys=[k.campaign(cid), k.parked(cid), k.due, *[k.batch(m) for m in members]],
                args=[clock_arg(now_ms), *members])
            state = _s(res[0])
            moved_any = bool(members)
        self._durable(cid)
        return state

    def cancel(self, cid: str, *, now_ms: int | None = None) -> dict[str, Any]:
        n = int(self._controllable(cid).get("batches", 0) or 0)
        k = self.keys
        state, cancelled = "", 0
        for lo in range(0, max(n, 1), 500):
            refs = [batch_ref(cid, i) for i in range(lo, min(n, lo + 500))]
            res = self.scripts.cancel(
                keys=[k.campaign(cid), k.due, k.leased, k.parked(cid), *[k.batch(x) for x in refs]],
                args=[clock_arg(now_ms), *refs])
            state, cancelled = _s(res[0]), cancelled + int(res[1])
        self._durable(cid)
        return {"state": state, "cancelled_now": cancelled}

    def _controllable(self, cid: str) -> dict[str, str]:
        """The campaign's fields; CampaignError while it is being enqueued (there is nothing to control
        yet: the commit queues all of it at once) or after its enqueue was interrupted."""
        f = self.fields(cid)
        if f.get("state") == "planning":
            if self._intake_alive(f):
                raise CampaignError(f"campaign {cid} is being enqueued right now: nothing of it is queued yet; "
                                    "try again once it is queued")
            raise CampaignError(f"campaign {cid}: its enqueue was interrupted and nothing of it is queued; "
                                "enqueue it again with the same campaign id to finish it")
        return f

    def _intake_alive(self, f: dict[str, str]) -> bool:
        """Whether the intake of a ``planning`` campaign still renews its claim."""
        return _lease_until(f) >= server_time_ms(self.r)

    def _durable(self, cid: str) -> Durable:
        self.last_durable = durable = wait_durable(self.r, marker_key=self.keys.campaign(cid))
        return durable

    def pause_account(self, account: str, *, now_ms: int | None = None, reason: str) -> list[str]:
        """Pause every queued or running campaign of an account (insufficient funds, bad login)."""
        paused = []
        for cid in (_s(x) for x in self.r.smembers(self.keys.account_campaigns(account))):
            if self._pause(cid, now_ms, reason) == "paused":
                paused.append(cid)
        return paused

    def _pause(self, cid: str, now_ms: int | None, reason: str) -> str:
        return _s(self.scripts.pause(keys=[self.keys.campaign(cid)], args=[clock_arg(now_ms), reason]))

    # -- recovery ------------------------------------------------------------------------------
    def unfinished(self) -> list[tuple[str, int]]:
        out = []
        for cid in self.campaign_ids():
            state, batches = self.r.hmget(self.keys.campaign(cid), "state", "batches")
            if state is not None and _s(state) not in FINAL_STATES and _s(state) != "planning":
                out.append((cid, int(batches or 0)))
        return out


def _lease_until(f: dict[str, str]) -> int:
    return int(f.get("lease_until", 0) or 0)
