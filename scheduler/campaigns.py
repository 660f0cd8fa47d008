"""Campaigns in Redis: intake → plan → commit, status, controls (pause, resume, cancel) and report.

Intake streams: recipients are deduplicated in Redis (a temporary SET per campaign, dropped at
commit) and written as batches of ``batch_size`` while the input is read, so the producer's memory
does not grow with the campaign. The plan then gives every batch its due time (cutting batches at
group boundaries when the campaign is spread), and the commit puts every batch into the due-queue
and the campaign into ``queued`` in one MULTI: a campaign is either fully enqueued or not at all, and
enqueueing the same ``campaign_id`` again returns the existing campaign instead of a second one.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import redis

from scheduler import spreading
from scheduler.intake import Rejected, phone_key
from scheduler.keys import CAMPAIGN_ID_RE, Keys, batch_ref
from scheduler.keys import text as _s
from scheduler.scripts import Scripts

__all__ = [
    "FINAL_STATES",
    "CampaignError",
    "CampaignSpec",
    "Campaigns",
    "Receipt",
    "new_campaign_id",
]

FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
#: Recipients deduplicated per round trip during intake.
_INTAKE_CHUNK = 2_000


class CampaignError(ValueError):
    """Raised for a request about a campaign that cannot be carried out (one line)."""


def new_campaign_id() -> str:
    return secrets.token_hex(5)


@dataclass(frozen=True)
class CampaignSpec:
    message: str
    parts: int
    account: str
    sender: str | None = None
    batch_size: int = 500
    plan: spreading.PlanOptions | None = None
    campaign_id: str | None = None


@dataclass
class Receipt:
    campaign_id: str
    total: int
    invalid: int
    duplicates: int
    parts: int
    batches: int
    groups: int
    first_due_ms: int
    last_due_ms: int
    existing: bool = False
    sms_estimate: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Intake:
    cid: str
    batch_size: int
    total: int = 0
    invalid: int = 0
    duplicates: int = 0
    batches: int = 0
    pending: list[str] = field(default_factory=list)  # normalized, waiting for dedup
    current: list[str] = field(default_factory=list)  # deduplicated, waiting for a full batch


class Campaigns:
    def __init__(self, client: redis.Redis, keys: Keys, *, scripts: Scripts | None = None) -> None:
        self.r = client
        self.keys = keys
        self.scripts = scripts or Scripts(client)

    # -- intake --------------------------------------------------------------------------------
    def create(self, spec: CampaignSpec, recipients: Iterable[tuple[int, str] | Rejected], *, now_ms: int,
               on_rejected: Callable[[Rejected], None] | None = None) -> Receipt:
        """Enqueue a campaign from (line_no, normalized phone) items and rejected lines, streaming."""
        cid = spec.campaign_id or new_campaign_id()
        if not CAMPAIGN_ID_RE.match(cid):
            raise CampaignError(f"campaign id {cid!r}: use 1-24 characters of A-Za-z0-9_.")
        ckey = self.keys.campaign(cid)
        state = self.r.hget(ckey, "state")
        if state is not None and _s(state) != "planning":
            return self._receipt(cid, existing=True)
        if state is not None:
            self._drop_partial(cid)
        plan = spec.plan
        self.r.hset(ckey, mapping={
            "id": cid, "account": spec.account, "message": spec.message, "sender": spec.sender or "",
            "parts": spec.parts, "state": "planning", "created_ms": now_ms, "batches": 0,
            "total": 0, "sent": 0, "failed": 0, "cancelled": 0, "sms": 0, "cost_milli": 0,
            "plan": json.dumps(_plan_json(plan)),
        })
        st = _Intake(cid=cid, batch_size=spec.batch_size)
        try:
            for item in recipients:
                if isinstance(item, Rejected):
                    st.invalid += 1
                    if on_rejected is not None:
                        on_rejected(item)
                    continue
                st.pending.append(item[1])
                if len(st.pending) >= _INTAKE_CHUNK:
                    self._flush_pending(st)
            self._flush_pending(st)
            self._write_batch(st, final=True)
            self.r.hset(ckey, "batches", st.batches)
            if st.total == 0:
                raise CampaignError("no valid recipients: nothing was queued")
            refs_due, groups = self._plan(st, plan, now_ms)
            self._commit(spec, st, refs_due, now_ms)
        except BaseException:
            # Nothing of a campaign that did not commit stays behind (it was never in the due-queue).
            self.r.hset(ckey, "batches", max(st.batches, int(self.r.hget(ckey, "batches") or 0)))
            self._drop_partial(cid)
            self.r.delete(ckey)
            raise
        dues = [d for _, d in refs_due]
        return Receipt(cid, st.total, st.invalid, st.duplicates, spec.parts, len(refs_due), groups,
                       min(dues), max(dues), sms_estimate=st.total * spec.parts)

    def _flush_pending(self, st: _Intake) -> None:
        if not st.pending:
            return
        new = self.scripts.intake(keys=[self.keys.seen(st.cid)], args=[",".join(map(phone_key, st.pending))])
        for phone, is_new in zip(st.pending, _s(new), strict=True):
            if is_new == "1":
                st.current.append(phone)
                st.total += 1
            else:
                st.duplicates += 1
        st.pending.clear()
        if len(st.current) >= st.batch_size:
            self._write_batch(st, final=False)

    def _write_batch(self, st: _Intake, *, final: bool) -> None:
        pipe = self.r.pipeline(transaction=False)
        size = st.batch_size
        while len(st.current) >= size or (final and st.current):
            chunk, st.current = st.current[:size], st.current[size:]
            pipe.hset(self.keys.batch(batch_ref(st.cid, st.batches)),
                      mapping={"phones": ",".join(chunk), "state": "queued", "attempts": 0, "owner": ""})
            st.batches += 1
        pipe.execute()

    def _drop_partial(self, cid: str) -> None:
        n = int(self.r.hget(self.keys.campaign(cid), "batches") or 0)
        pipe = self.r.pipeline(transaction=False)
        for i in range(max(n, 0)):
            pipe.unlink(self.keys.batch(batch_ref(cid, i)))
        pipe.unlink(self.keys.seen(cid))
        pipe.execute()

    # -- plan ----------------------------------------------------------------------------------
    def _plan(self, st: _Intake, plan: spreading.PlanOptions | None,
              now_ms: int) -> tuple[list[tuple[str, int]], int]:
        """Every batch's due time; batches are cut where a group or a time zone changes."""
        if plan is None:
            return [(batch_ref(st.cid, n), now_ms) for n in range(st.batches)], 1
        groups = spreading.group_count(plan.period_h, plan.freq_min) if plan.period_h and plan.freq_min else 1
        groups = max(1, min(groups, st.total))
        default_off = plan.utc_offset_min
        by_recipient = plan.recipient_time and plan.window is not None  # a zone changes nothing without a window
        simple = groups == 1 and not by_recipient
        out: list[tuple[str, int]] = []
        if simple:
            due = spreading.due_ms_for_group(0, plan, default_off)
            return [(batch_ref(st.cid, n), due) for n in range(st.batches)], 1
        pipe = self.r.pipeline(transaction=False)
        extra = st.batches
        for n in range(st.batches):
            start = n * st.batch_size
            size = min(st.batch_size, st.total - start)
            g_first = spreading.group_of(start, st.total, groups)
            g_last = spreading.group_of(start + size - 1, st.total, groups)
            if g_first == g_last and not by_recipient:
                ref = batch_ref(st.cid, n)
                due = spreading.due_ms_for_group(g_first, plan, default_off)
                pipe.hset(self.keys.batch(ref), "due", due)
                out.append((ref, due))
                continue
            phones = _s(self.r.hget(self.keys.batch(batch_ref(st.cid, n)), "phones") or b"").split(",")
            pieces: dict[tuple[int, int], list[str]] = {}
            for i, phone in enumerate(phones):
                g = spreading.group_of(start + i, st.total, groups)
                off = default_off
                if by_recipient:
                    off = spreading.recipient_utc_offset_min(phone, at_ms=plan.start_ms, default_min=default_off)
                pieces.setdefault((g, off), []).append(phone)
            for j, ((g, off), members) in enumerate(sorted(pieces.items())):
                num = n if j == 0 else extra
                if j:
                    extra += 1
                ref = batch_ref(st.cid, num)
                due = spreading.due_ms_for_group(g, plan, off)
                pipe.hset(self.keys.batch(ref), mapping={
                    "phones": ",".join(members), "state": "queued", "attempts": 0, "owner": "", "due": due})
                out.append((ref, due))
        pipe.execute()
        st.batches = extra
        return out, groups

    def _commit(self, spec: CampaignSpec, st: _Intake, refs_due: list[tuple[str, int]], now_ms: int) -> None:
        k = self.keys
        # A namespace's first campaign records the Redis server it starts on (unless a recovery or an
        # earlier commit already did): its batches need no settling before their first send, while any
        # later restart still makes the run_id differ (see scheduler.recovery).
        run_id = str(self.r.info("server")["run_id"])
        pipe = self.r.pipeline(transaction=True)
        pipe.hsetnx(k.meta, "run_id", run_id)
        for i in range(0, len(refs_due), 1000):
            pipe.zadd(k.due, dict(refs_due[i:i + 1000]))
        pipe.hset(k.campaign(st.cid), mapping={
            "state": "queued", "total": st.total, "invalid": st.invalid, "duplicates": st.duplicates,
            "batches": st.batches, "queued_ms": now_ms})
        pipe.sadd(k.account_campaigns(spec.account), st.cid)
        pipe.zadd(k.campaigns, {st.cid: now_ms})
        pipe.unlink(k.seen(st.cid))
        pipe.execute()

    # -- reading -------------------------------------------------------------------------------
    def exists(self, cid: str) -> bool:
        return bool(self.r.exists(self.keys.campaign(cid)))

    def fields(self, cid: str) -> dict[str, str]:
        raw = self.r.hgetall(self.keys.campaign(cid))
        if not raw:
            raise CampaignError(f"no campaign with id {cid!r}")
        return {_s(k): _s(v) for k, v in raw.items()}

    def status(self, cid: str) -> dict[str, Any]:
        """The campaign as a user sees it; ``sent + failed + cancelled + pending == total`` always."""
        f = self.fields(cid)
        total, sent, failed, cancelled = (int(f.get(x, 0) or 0) for x in ("total", "sent", "failed", "cancelled"))
        acct = self.r.hgetall(self.keys.account(f.get("account", "")))
        a = {_s(k): _s(v) for k, v in acct.items()}
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
            "account": f.get("account", ""),
            "sender": f.get("sender") or None,
            "created_ms": int(f.get("created_ms", 0) or 0),
            "started_ms": int(f.get("started_ms", 0) or 0) or None,
            "finished_ms": int(f.get("finished_ms", 0) or 0) or None,
            "reason": f.get("pause_reason") or None,
            "last_error": f.get("last_error") or None,
            "account_state": a.get("state", "ok"),
            "account_reason": a.get("reason") or None,
            "account_backoff_until_ms": int(float(a.get("backoff_until", 0) or 0)) or None,
            "account_backoffs": int(a.get("backoffs", 0) or 0),
            "account_errors_in_a_row": int(a.get("errors_in_a_row", 0) or 0),
        }
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

    # -- controls (idempotent, safe from several places at once) ---------------------------------
    def pause(self, cid: str, *, now_ms: int, reason: str = "paused by operator") -> str:
        self.fields(cid)
        return _s(self.scripts.pause(keys=[self.keys.campaign(cid)], args=[now_ms, reason]))

    def resume(self, cid: str, *, now_ms: int) -> str:
        f = self.fields(cid)
        k = self.keys
        state = f.get("state", "")
        moved_any = True
        while moved_any:
            members = [_s(x) for x in self.r.srandmember(k.parked(cid), 500) or []]
            res = self.scripts.resume(
                keys=[k.campaign(cid), k.parked(cid), k.due, *[k.batch(m) for m in members]],
                args=[now_ms, *members])
            state = _s(res[0])
            moved_any = bool(members)
        return state

    def cancel(self, cid: str, *, now_ms: int) -> dict[str, Any]:
        n = int(self.fields(cid).get("batches", 0) or 0)
        k = self.keys
        state, cancelled = "", 0
        for lo in range(0, max(n, 1), 500):
            refs = [batch_ref(cid, i) for i in range(lo, min(n, lo + 500))]
            res = self.scripts.cancel(
                keys=[k.campaign(cid), k.due, k.leased, k.parked(cid), *[k.batch(x) for x in refs]],
                args=[now_ms, *refs])
            state, cancelled = _s(res[0]), cancelled + int(res[1])
        return {"state": state, "cancelled_now": cancelled}

    def pause_account(self, account: str, *, now_ms: int, reason: str) -> list[str]:
        """Pause every queued or running campaign of an account (insufficient funds, bad login)."""
        paused = []
        for cid in (_s(x) for x in self.r.smembers(self.keys.account_campaigns(account))):
            if self.scripts.pause(keys=[self.keys.campaign(cid)], args=[now_ms, reason]) in (b"paused", "paused"):
                paused.append(cid)
        return paused

    def _receipt(self, cid: str, *, existing: bool) -> Receipt:
        f = self.fields(cid)
        total, parts = int(f.get("total", 0)), int(f.get("parts", 0))
        return Receipt(cid, total, int(f.get("invalid", 0)), int(f.get("duplicates", 0)), parts,
                       int(f.get("batches", 0)), 0, 0, 0, existing=existing, sms_estimate=total * parts)

    # -- recovery ------------------------------------------------------------------------------
    def unfinished(self) -> list[tuple[str, int]]:
        out = []
        for cid in self.campaign_ids():
            state, batches = self.r.hmget(self.keys.campaign(cid), "state", "batches")
            if state is not None and _s(state) not in FINAL_STATES and _s(state) != "planning":
                out.append((cid, int(batches or 0)))
        return out


def _plan_json(plan: spreading.PlanOptions | None) -> dict[str, Any]:
    if plan is None:
        return {}
    d = asdict(plan)
    if plan.window is not None:
        d["window"] = f"{plan.window.h1}-{plan.window.h2}"
    return d

