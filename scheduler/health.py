"""Health checks of a namespace's campaigns, read from Redis cheaply — in the spirit of GOV.UK Notify's
scheduled checks (a job stuck in progress, notifications stuck in sending, a failure rate to look at).

:func:`health` answers a list of :class:`Finding` — campaign id, kind, a one-line detail — of three kinds:

- ``stalled``: a queued or running campaign with recipients pending and batches due now or in the
  workers' hands, of which no recipient became final for ``stall_s``. Nothing is wrong with a campaign
  that waits for its next group, a back-off or the flood guard: then none of its batches is due now.
- ``due_overdue``: batches due for more than ``due_age_s`` that no dispatcher has claimed (no worker
  runs, the clock is off, or the window is held full). A campaign larger than the login sends in
  ``due_age_s`` shows it too while its last batches wait their turn: spread it, or raise the limit.
- ``failure_rate``: more than ``failure_rate`` of the recipients with an outcome failed, once
  ``min_attempts`` of them have one (``failed / (sent + failed)``; cancelled recipients are no attempt).

Only campaigns that are not final are looked at (``queued``, ``running``, ``paused``; an intake still
``planning`` has nothing queued). The checks are pure (:func:`check`): :func:`health` reads what they need
in two pipelined round trips — the server's clock and the campaign list; the campaigns' counters, the
due-queue's head (at most ``due_scan`` members, oldest due first), the batches in the workers' hands and
the progress snapshot — and the metrics collector (:mod:`worker.metrics`) feeds them from its own scrape.

**When a recipient last became final.** The ledger keeps no such time yet (a campaign field
``progress_ms`` written by ``lua/record.lua`` would be it, and is used once it exists). Until then
:class:`Progress` remembers, per campaign, the final count (sent + failed + cancelled) and when it was
first seen at that count; :func:`health` keeps that in the HASH ``{ns}:health`` (campaign id ->
``<final>:<since_ms>``, a week's TTL renewed by each write; a third round trip only when a count
changed), so every caller — ``status``, the dashboard, a periodic check — shares it. A campaign seen for
the first time with recipients already final is judged from then on (its stall shows ``stall_s`` after
that first look); one with none final yet is judged from its ``queued_ms``.

Every instant is the Redis server's clock unless a test passes ``now_ms``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis

from scheduler.keys import Keys
from scheduler.keys import text as _s

__all__ = [
    "ACTIVE_STATES",
    "KINDS",
    "CampaignView",
    "Finding",
    "Progress",
    "Thresholds",
    "campaign_queues",
    "check",
    "health",
]

#: The kinds of finding, in the order :func:`health` lists them within a campaign.
KINDS = ("stalled", "due_overdue", "failure_rate")
#: The states a campaign is checked in.
ACTIVE_STATES = frozenset({"queued", "running", "paused"})
#: The states in which a campaign with due batches should be making progress.
_MOVING_STATES = frozenset({"queued", "running"})
#: How long the progress snapshot lives after its last write (a namespace that stops leaves nothing).
_SNAPSHOT_TTL_MS = 7 * 86_400_000
_FIELDS = ("state", "total", "sent", "failed", "cancelled", "queued_ms", "progress_ms")


@dataclass(frozen=True)
class Finding:
    """Something wrong with one campaign: its id, what (:data:`KINDS`), and one line saying it."""

    campaign_id: str
    kind: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """When a campaign is reported (the settings ``SMSC_HEALTH_*``; see :meth:`from_settings`)."""

    #: No recipient became final for this long while batches are due or in hand: ``stalled`` (s).
    stall_s: float = 600.0
    #: A batch due for longer than this and not claimed: ``due_overdue`` (s).
    due_age_s: float = 300.0
    #: Failed / (sent + failed) above this: ``failure_rate``...
    failure_rate: float = 0.2
    #: ...once this many recipients have an outcome (a handful of bad numbers is no trend).
    min_attempts: int = 50

    def __post_init__(self) -> None:
        if self.stall_s <= 0 or self.due_age_s <= 0:
            raise ValueError("stall_s and due_age_s must be positive")
        if not 0 < self.failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        if self.min_attempts < 1:
            raise ValueError("min_attempts must be at least 1")

    @classmethod
    def from_settings(cls, s: object) -> Thresholds:
        """From settings with ``smsc_health_stall_s``, ``smsc_health_due_age_s``, ``smsc_health_failure_rate``
        and ``smsc_health_min_attempts``; one the settings do not have keeps its default."""
        d = cls()

        def get(name: str, default: float) -> Any:
            value = getattr(s, f"smsc_health_{name}", None)
            return default if value is None else value

        return cls(stall_s=float(get("stall_s", d.stall_s)), due_age_s=float(get("due_age_s", d.due_age_s)),
                   failure_rate=float(get("failure_rate", d.failure_rate)),
                   min_attempts=int(get("min_attempts", d.min_attempts)))


@dataclass(frozen=True)
class CampaignView:
    """What the checks read of one campaign (counters from its HASH, batches from the queues)."""

    campaign_id: str
    state: str
    total: int = 0
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    queued_ms: int = 0
    #: When a recipient last became final, if the ledger keeps it (``progress_ms``); None: it does not.
    progress_ms: int | None = None
    #: Its batches due now (of those read), the oldest one's due time, its batches in the workers' hands.
    due_now: int = 0
    oldest_due_ms: int | None = None
    overdue: int = 0
    leased: int = 0

    @property
    def final(self) -> int:
        return self.sent + self.failed + self.cancelled

    @property
    def pending(self) -> int:
        return self.total - self.final

    @classmethod
    def from_fields(cls, cid: str, f: Mapping[str, str], **queues: Any) -> CampaignView:
        def n(name: str) -> int:
            try:
                return int(float(f.get(name) or 0))
            except ValueError:
                return 0

        progress = n("progress_ms") if f.get("progress_ms") else None
        return cls(cid, f.get("state", ""), n("total"), n("sent"), n("failed"), n("cancelled"), n("queued_ms"),
                   progress, **queues)


class Progress:
    """When each campaign's final count last changed, as far as the looks at it tell (see the module
    docstring): a mapping of campaign id -> (final count, first seen at it, ms), in memory or loaded
    from the ``{ns}:health`` snapshot. :attr:`changed` holds what to write back."""

    def __init__(self, seen: MutableMapping[str, tuple[int, int]] | None = None) -> None:
        self.seen: MutableMapping[str, tuple[int, int]] = seen if seen is not None else {}
        self.changed: dict[str, tuple[int, int]] = {}

    def since(self, v: CampaignView, now_ms: int) -> int:
        """When a recipient of ``v`` last became final (the ledger's ``progress_ms`` when it keeps it)."""
        if v.progress_ms is not None:
            return max(v.progress_ms, v.queued_ms)
        old = self.seen.get(v.campaign_id)
        if old is not None and old[0] == v.final:
            return old[1]
        since = v.queued_ms if old is None and v.final == 0 and v.queued_ms else now_ms
        self.seen[v.campaign_id] = self.changed[v.campaign_id] = (v.final, since)
        return since

    def forget(self, keep: Iterable[str]) -> list[str]:
        """Drop every campaign not in ``keep`` (final, gone); the ids dropped."""
        keep = set(keep)
        gone = [cid for cid in self.seen if cid not in keep]
        for cid in gone:
            del self.seen[cid]
            self.changed.pop(cid, None)
        return gone


def check(v: CampaignView, *, now_ms: int, since_ms: int, thresholds: Thresholds = Thresholds()) -> list[Finding]:
    """The findings of one campaign (pure: what :func:`health` and the metrics both apply)."""
    t = thresholds
    out: list[Finding] = []
    if v.state not in ACTIVE_STATES:
        return out
    quiet_ms = now_ms - since_ms
    if (v.state in _MOVING_STATES and v.pending > 0 and (v.due_now or v.leased)
            and quiet_ms >= t.stall_s * 1000):
        out.append(Finding(v.campaign_id, "stalled",
                           f"no recipient became final for {_age(quiet_ms)} while {v.pending:,} are pending "
                           f"({_batches(v.due_now)} due now, {_batches(v.leased)} in the workers' hands)"))
    if v.overdue and v.oldest_due_ms is not None:
        out.append(Finding(v.campaign_id, "due_overdue",
                           f"{_batches(v.overdue)} due for more than {_age(t.due_age_s * 1000)} and not taken "
                           f"(the oldest for {_age(now_ms - v.oldest_due_ms)}): are the workers running?"))
    attempts = v.sent + v.failed
    if attempts >= t.min_attempts and v.failed > t.failure_rate * attempts:
        out.append(Finding(v.campaign_id, "failure_rate",
                           f"{v.failed / attempts:.0%} of the recipients with an outcome failed ({v.failed:,} of "
                           f"{attempts:,}; the limit is {t.failure_rate:.0%}): see its report's codes"))
    return out


def health(client: redis.Redis, keys: Keys, *, now_ms: int | None = None, stall_s: float = 600.0,
           due_age_s: float = 300.0, failure_rate: float = 0.2, min_attempts: int = 50,
           campaign_ids: Sequence[str] | None = None, scan: int = 1000, due_scan: int = 2000,
           remember: bool = True, thresholds: Thresholds | None = None) -> list[Finding]:
    """The findings of the namespace's campaigns that are not final, most recent campaign first.

    ``campaign_ids``: only these (``status ID``: ``campaign_ids=[ID]``); else the ``scan`` most recent
    campaigns. ``due_scan``: due-now batches read (oldest first). ``remember``: keep the progress
    snapshot in Redis (a read-only caller passes False and only learns from what others wrote).
    ``thresholds`` (e.g. :meth:`Thresholds.from_settings`) replaces the four limits given one by one.
    """
    t = thresholds or Thresholds(stall_s=stall_s, due_age_s=due_age_s, failure_rate=failure_rate,
                                 min_attempts=min_attempts)
    snapshot = keys.prefix + "health"
    pipe = client.pipeline(transaction=False)
    pipe.time()
    if campaign_ids is None:
        pipe.zrevrange(keys.campaigns, 0, scan - 1)
    res = pipe.execute()
    secs, micros = res[0]
    now = now_ms if now_ms is not None else int(secs) * 1000 + int(micros) // 1000
    cids = list(campaign_ids) if campaign_ids is not None else [_s(x) for x in res[1]]

    pipe = client.pipeline(transaction=False)
    for cid in cids:
        pipe.hmget(keys.campaign(cid), *_FIELDS)
    pipe.zrangebyscore(keys.due, "-inf", now, start=0, num=due_scan, withscores=True)
    pipe.zrange(keys.leased, 0, -1)
    if cids:
        pipe.hmget(snapshot, cids)
    res = pipe.execute()
    fields = [{name: _s(v) for name, v in zip(_FIELDS, row, strict=True) if v is not None} for row in res[:len(cids)]]
    due, leased = res[len(cids)], res[len(cids) + 1]
    stored = res[len(cids) + 2] if cids else []
    queues = _queues(due, leased, now_ms=now, due_age_ms=int(t.due_age_s * 1000))

    seen: dict[str, tuple[int, int]] = {}
    for cid, raw in zip(cids, stored, strict=True):
        if raw is not None and (parsed := _parse(raw)) is not None:
            seen[cid] = parsed
    progress = Progress(seen)
    findings: list[Finding] = []
    active: list[str] = []
    for cid, f in zip(cids, fields, strict=True):
        v = CampaignView.from_fields(cid, f, **queues.get(cid, {}))
        if v.state not in ACTIVE_STATES:
            continue
        active.append(cid)
        findings += check(v, now_ms=now, since_ms=progress.since(v, now), thresholds=t)
    gone = progress.forget(active)
    if remember and (progress.changed or gone):
        pipe = client.pipeline(transaction=False)
        if progress.changed:
            pipe.hset(snapshot, mapping={cid: f"{final}:{since}" for cid, (final, since) in progress.changed.items()})
            pipe.pexpire(snapshot, _SNAPSHOT_TTL_MS)
        if gone:
            pipe.hdel(snapshot, *gone)
        pipe.execute()
    return findings


def _queues(due: Sequence[tuple[Any, float]], leased: Sequence[Any], *, now_ms: int,
            due_age_ms: int) -> dict[str, dict[str, Any]]:
    """Per campaign: ``due_now``, ``oldest_due_ms``, ``overdue``, ``leased`` (keyword arguments of
    :class:`CampaignView`) from the due-now members (with their due times) and the leased members."""
    out: dict[str, dict[str, Any]] = {}
    for member, score in due:
        q = out.setdefault(_s(member).rpartition(":")[0], {"due_now": 0, "oldest_due_ms": None, "overdue": 0})
        q["due_now"] += 1
        if q["oldest_due_ms"] is None or score < q["oldest_due_ms"]:
            q["oldest_due_ms"] = int(score)
        if score <= now_ms - due_age_ms:
            q["overdue"] += 1
    for member in leased:
        q = out.setdefault(_s(member).rpartition(":")[0], {})
        q["leased"] = q.get("leased", 0) + 1
    return out


def campaign_queues(due: Sequence[tuple[Any, float]], leased: Sequence[Any], *, now_ms: int,
                    due_age_s: float) -> dict[str, dict[str, Any]]:
    """:func:`_queues` for a caller that read the due-queue's head and the leased batches itself (the
    metrics' scrape): per campaign id, the queue keyword arguments of :class:`CampaignView`."""
    return _queues(due, leased, now_ms=now_ms, due_age_ms=int(due_age_s * 1000))


def _parse(raw: object) -> tuple[int, int] | None:
    try:
        final, since = _s(raw).split(":", 1)
        return int(final), int(since)
    except ValueError:
        return None


def _batches(n: int) -> str:
    return f"{n:,} batch" + ("" if n == 1 else "es")


def _age(ms: float) -> str:
    s = int(ms // 1000)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
