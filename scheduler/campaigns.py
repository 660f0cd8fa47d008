"""Campaigns in Redis: claim → intake → plan → commit, status, controls (pause, resume, cancel), report.

**One campaign per id, whoever asks at once** (``lua/create.lua``). An intake first *claims* the
campaign id: the campaign HASH is created in state ``planning`` with the intake's random token and
a lease on the server's clock, renewed (every third of the lease, by a thread of its own) while the
intake streams. A second intake of the same id (an app retrying after a timeout, two operators)
waits while that lease runs and then answers with the campaign the first one committed; if the
first one died, its lease runs out and the second takes the id over, drops what the first wrote and
enqueues the campaign itself. Every write of an intake (dedup, batches, commit) is fenced by its
token in the script that makes it, so an intake that stalls past its lease and wakes up after
another took over writes nothing: each recipient is in one campaign once.

**The same id is the same content.** The claim stores a digest of what the campaign is: account,
message, sender, the plan options as the caller wrote them, and at the commit the recipients' digest
(``recipients_digest``: the raw bytes of a recipients file as read; without one, the normalized
stream of numbers and rejected lines). Enqueueing an existing id with the same content answers the
existing campaign (``Receipt.existing``); with a different content it is refused (CampaignError
naming what differs) and nothing is queued.

**Streaming.** Recipients are deduplicated in Redis (a SET per campaign, dropped at commit) and
written as batches of ``batch_size`` while the input is read, so the producer's memory does not grow
with the campaign. The plan (:class:`scheduler.spreading.Plan`, also behind :meth:`Campaigns.preview`,
the dry run) then gives every batch its due time, cutting batches where the due time changes, and
the commit puts every batch into the due-queue and the campaign into ``queued`` in one script: a
campaign is either fully enqueued or not at all.

**Durable before acknowledged.** The commit and every control (pause, resume, cancel) wait for the
server's disk (:func:`scheduler.durability.wait_durable`) before they return; what that found is in
``Receipt.durable`` and :attr:`Campaigns.last_durable`. A campaign never stays ``planning`` for ever
after a crash: its lease runs out, :meth:`Campaigns.status` says the intake stopped, and enqueueing
the same id again takes it over.

Every instant is the Redis server's clock unless a test passes ``now_ms``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import redis

from scheduler import spreading
from scheduler.durability import Durable, wait_durable
from scheduler.intake import Rejected, phone_key
from scheduler.keys import CAMPAIGN_ID_RE, Keys, batch_ref
from scheduler.keys import text as _s
from scheduler.ledger import server_time_ms
from scheduler.scripts import Arg, Scripts

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
#: How long a claim on a campaign id lasts without renewal: an intake renews it every third of this, so
#: only a dead (or frozen) producer loses it; a retry of the same id waits at most this long for a dead
#: one. Long enough for a stalled disk or a Redis failover, short enough for an app's retry.
CLAIM_LEASE_MS = 30_000
#: The dedup SET of an intake that died expires (a day covers any retry worth waiting for).
_SEEN_TTL_MS = 86_400_000
#: The dedup SET of a dry run: the preview needs it for seconds.
_PREVIEW_SEEN_TTL_MS = 600_000
#: Between two looks at a campaign id another intake holds.
_WAIT_POLL_S = 0.1
#: Batches (or keys) per fenced write: bounded script arguments.
_STAGE_CHUNK = 200
_DIGEST_FIELDS = {"account": "another account", "message": "another text", "sender": "another sender",
                  "plan": "other plan options", "recipients": "other recipients"}


class CampaignError(ValueError):
    """Raised for a request about a campaign that cannot be carried out (one line)."""


class _LostClaim(Exception):
    """Raised inside an intake whose claim another intake took over (or an operator cancelled)."""


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
    #: The plan options as the caller wrote them (``{"at": "+10", ...}``), which the content digest
    #: compares: the same request retried later is the same campaign although ``+10`` then names
    #: another instant. None: the resolved :attr:`plan` is compared.
    plan_source: Mapping[str, object] | None = None


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
    #: What the wait for the server's disk found after the commit (``on disk (WAITAOF, 3 ms)``, or why
    #: not); '' for an existing campaign (its commit was confirmed when it was made).
    durable: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Intake:
    cid: str
    token: str
    batch_size: int
    total: int = 0
    invalid: int = 0
    duplicates: int = 0
    batches: int = 0
    pending: list[str] = field(default_factory=list)  # normalized, waiting for dedup
    current: list[str] = field(default_factory=list)  # deduplicated, waiting for a full batch


class _StreamDigest:
    """The digest of recipients given as an iterable: the normalized numbers and rejected lines, in order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, item: tuple[int, str] | Rejected) -> None:
        if isinstance(item, Rejected):
            self._h.update(b"!" + item.raw.encode("utf-8", "surrogatepass") + b"\n")
        else:
            self._h.update(item[1].encode("ascii", "replace") + b"\n")

    def hexdigest(self) -> str:
        return "items:" + self._h.hexdigest()


class _Lease:
    """Renews an intake's claim every third of the lease until stopped; ``lost`` once it cannot."""

    def __init__(self, campaigns: Campaigns, ckey: str, token: str, now_ms: int | None) -> None:
        self._c, self._ckey, self._token, self._now = campaigns, ckey, token, now_ms
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"claim {ckey}", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        every_s = self._c.claim_lease_ms / 3000
        while not self._stop.wait(every_s):
            try:
                ok = self._c._op("renew", self._ckey, self._token, self._now)
            except redis.RedisError:
                continue  # the next renewal tries again; a claim lasts three of these
            if not ok:
                self.lost.set()
                return


class Campaigns:
    def __init__(self, client: redis.Redis, keys: Keys, *, scripts: Scripts | None = None,
                 claim_lease_ms: int = CLAIM_LEASE_MS) -> None:
        self.r = client
        self.keys = keys
        self.scripts = scripts or Scripts(client)
        self.claim_lease_ms = claim_lease_ms
        #: What the last commit's or control's wait for the server's disk found.
        self.last_durable: Durable | None = None

    # -- intake --------------------------------------------------------------------------------
    def create(self, spec: CampaignSpec, recipients: Iterable[tuple[int, str] | Rejected], *,
               now_ms: int | None = None, on_rejected: Callable[[Rejected], None] | None = None,
               recipients_digest: Callable[[], str] | None = None, strict: bool = False) -> Receipt:
        """Enqueue a campaign from (line_no, normalized phone) items and rejected lines, streaming.

        ``recipients_digest``: called once the input is read, the digest of what was read (e.g. the
        raw bytes of the recipients file); without it, the stream itself is digested. ``strict``:
        refuse the whole campaign (CampaignError, nothing queued) if any line was rejected; every
        rejected line still goes to ``on_rejected``. ``now_ms``: only for tests that step time.
        """
        cid = spec.campaign_id or new_campaign_id()
        if not CAMPAIGN_ID_RE.match(cid):
            raise CampaignError(f"campaign id {cid!r}: use 1-24 characters of A-Za-z0-9_.")
        ckey = self.keys.campaign(cid)
        content = _content(spec)
        token = secrets.token_hex(8)
        items = iter(recipients)
        initial: list[Arg] = [
            "id", cid, "account", spec.account, "message", spec.message, "sender", spec.sender or "",
            "parts", spec.parts, "total", 0, "sent", 0, "failed", 0, "cancelled", 0, "sms", 0, "cost_milli", 0,
            "plan", json.dumps(_plan_json(spec.plan))]
        while True:
            res = self.scripts.create(keys=[ckey], args=[
                "claim", token, self.claim_lease_ms, _clock(now_ms), json.dumps(content, sort_keys=True), *initial])
            assert isinstance(res, list)
            kind = _s(res[0])
            if kind == "exists":
                return self._existing(cid, content, _s(res[2]), _s(res[3]), items, recipients_digest)
            if kind == "busy":
                time.sleep(_WAIT_POLL_S)  # another intake holds the id and renews it: wait for its commit
                continue
            if kind == "taken_over":
                self._drop(cid, token, int(res[1]), now_ms)  # what the dead intake wrote
            break
        st = _Intake(cid=cid, token=token, batch_size=spec.batch_size)
        own_digest = _StreamDigest() if recipients_digest is None else None
        lease = _Lease(self, ckey, token, now_ms)
        try:
            with lease:
                for item in items:
                    if own_digest is not None:
                        own_digest.add(item)
                    if isinstance(item, Rejected):
                        st.invalid += 1
                        if on_rejected is not None:
                            on_rejected(item)
                        continue
                    st.pending.append(item[1])
                    if len(st.pending) >= _INTAKE_CHUNK:
                        self._flush_pending(st, now_ms)
                        if lease.lost.is_set():
                            raise _LostClaim
                self._flush_pending(st, now_ms)
                self._write_batches(st, now_ms, final=True)
                if st.total == 0:
                    raise CampaignError("no valid recipients: nothing was queued")
                if strict and st.invalid:
                    raise CampaignError(f"{_plural(st.invalid, 'invalid line')} (strict): nothing was queued")
                plan = spreading.Plan(spec.plan, st.total, now_ms if now_ms is not None else server_time_ms(self.r))
                refs_due = self._plan(st, plan, now_ms)
            if lease.lost.is_set():
                raise _LostClaim
            digest = recipients_digest() if recipients_digest is not None else _hexdigest(own_digest)
            dues = [d for _, d in refs_due]
            self._commit(spec, st, refs_due, plan.groups, digest, now_ms)
        except _LostClaim:
            raise CampaignError(
                f"campaign {cid}: another enqueue of this id took it over (this one could not renew its claim "
                f"for {self.claim_lease_ms / 1000:g} s), or it was cancelled; this one queued nothing") from None
        except BaseException:
            # Nothing of a campaign that did not commit stays behind (it was never in the due-queue).
            self._abandon(cid, token, st.batches, now_ms)
            raise
        self.last_durable = durable = wait_durable(self.r, marker_key=ckey)
        return Receipt(cid, st.total, st.invalid, st.duplicates, spec.parts, len(refs_due), plan.groups,
                       min(dues), max(dues), sms_estimate=st.total * spec.parts, durable=str(durable))

    def _existing(self, cid: str, content: dict[str, str], stored: str, stored_recipients: str,
                  items: Iterator[tuple[int, str] | Rejected], recipients_digest: Callable[[], str] | None) -> Receipt:
        """The answer for an id that is committed already: its receipt, if the content is the same."""
        if stored:  # campaigns committed before content digests were kept are taken as the same
            theirs = json.loads(stored)
            differ = [name for name in ("account", "message", "sender", "plan")
                      if theirs.get(name) != content.get(name)]
            if not differ and stored_recipients:
                # The same text and plan: the recipients decide, so ours are read (nothing is written).
                mine = _StreamDigest()
                for item in items:
                    mine.add(item)
                ours = recipients_digest() if recipients_digest is not None else mine.hexdigest()
                if ours != stored_recipients:
                    differ.append("recipients")
            if differ:
                what = " and ".join(_DIGEST_FIELDS[d] for d in differ)
                raise CampaignError(
                    f"campaign id {cid!r} is taken by a campaign with {what}; nothing was queued "
                    "(use another campaign id, or the same content to get the existing campaign)")
        return self._receipt(cid, existing=True)

    def _op(self, op: str, ckey: str, token: str, now_ms: int | None, *, keys: Sequence[str] = (),
            args: Sequence[Arg] = ()) -> bool:
        res = self.scripts.create(keys=[ckey, *keys], args=[op, token, self.claim_lease_ms, _clock(now_ms), *args])
        return bool(res == 1)

    def _flush_pending(self, st: _Intake, now_ms: int | None) -> None:
        if not st.pending:
            return
        new = self.scripts.intake(keys=[self.keys.seen(st.cid), self.keys.campaign(st.cid)],
                                  args=[",".join(map(phone_key, st.pending)), _SEEN_TTL_MS, st.token,
                                        self.claim_lease_ms, _clock(now_ms)])
        if isinstance(new, int):
            raise _LostClaim
        for phone, is_new in zip(st.pending, _s(new), strict=True):
            if is_new == "1":
                st.current.append(phone)
                st.total += 1
            else:
                st.duplicates += 1
        st.pending.clear()
        if len(st.current) >= st.batch_size:
            self._write_batches(st, now_ms, final=False)

    def _write_batches(self, st: _Intake, now_ms: int | None, *, final: bool) -> None:
        size = st.batch_size
        batches: list[tuple[int, list[str], int | None]] = []
        while len(st.current) >= size or (final and st.current):
            chunk, st.current = st.current[:size], st.current[size:]
            batches.append((st.batches, chunk, None))
            st.batches += 1
        self._stage(st, batches, now_ms)

    def _stage(self, st: _Intake, batches: Sequence[tuple[int, Sequence[str], int | None]],
               now_ms: int | None) -> None:
        """Write batches (number, phones, due) under the intake's claim; ``st.batches`` is the high-water."""
        ckey = self.keys.campaign(st.cid)
        for lo in range(0, len(batches), _STAGE_CHUNK):
            part = batches[lo:lo + _STAGE_CHUNK]
            args: list[Arg] = [st.batches]
            for _, phones, due in part:
                args += [",".join(phones), "" if due is None else due]
            if not self._op("stage", ckey, st.token, now_ms, keys=[self.keys.batch(batch_ref(st.cid, n))
                                                                     for n, _, _ in part], args=args):
                raise _LostClaim

    def _drop(self, cid: str, token: str, batches: int, now_ms: int | None) -> None:
        """Unlink batches 0..batches-1 and the seen SET of ``cid``, under the claim of ``token``."""
        ckey = self.keys.campaign(cid)
        refs = [self.keys.batch(batch_ref(cid, i)) for i in range(max(batches, 0))] + [self.keys.seen(cid)]
        for lo in range(0, len(refs), _STAGE_CHUNK):
            last = lo + _STAGE_CHUNK >= len(refs)
            if not self._op("drop", ckey, token, now_ms, keys=refs[lo:lo + _STAGE_CHUNK], args=["0" if last else ""]):
                return

    def _abandon(self, cid: str, token: str, batches: int, now_ms: int | None) -> None:
        ckey = self.keys.campaign(cid)
        try:
            mark = int(self.r.hget(ckey, "batches") or 0)
            self._drop(cid, token, max(batches, mark), now_ms)
            self._op("abandon", ckey, token, now_ms)
        except redis.RedisError:
            pass  # the claim runs out, and the next enqueue of this id drops what is left

    # -- plan ----------------------------------------------------------------------------------
    def _plan(self, st: _Intake, plan: spreading.Plan, now_ms: int | None) -> list[tuple[str, int]]:
        """Every batch's due time (written into the batch); batches are cut where the due time changes."""
        out: list[tuple[str, int]] = []
        dues: list[tuple[int, int]] = []
        pieces_out: list[tuple[int, Sequence[str], int | None]] = []
        first_extra = st.batches
        for n in range(first_extra):
            start = n * st.batch_size
            size = min(st.batch_size, st.total - start)
            due = plan.uniform_due(start, size)
            if due is not None:
                out.append((batch_ref(st.cid, n), due))
                dues.append((n, due))
                continue
            phones = _s(self.r.hget(self.keys.batch(batch_ref(st.cid, n)), "phones") or b"").split(",")
            pieces = plan.split(start, [plan.offset_of(p) for p in phones])
            for j, (piece_due, _, members) in enumerate(pieces):
                num = n
                if j:
                    num, st.batches = st.batches, st.batches + 1
                pieces_out.append((num, [phones[i] for i in members], piece_due))
                out.append((batch_ref(st.cid, num), piece_due))
            if len(pieces_out) >= _STAGE_CHUNK:
                self._stage(st, pieces_out, now_ms)
                pieces_out = []
        self._stage(st, pieces_out, now_ms)
        ckey = self.keys.campaign(st.cid)
        for lo in range(0, len(dues), _STAGE_CHUNK):
            part = dues[lo:lo + _STAGE_CHUNK]
            if not self._op("due", ckey, st.token, now_ms, args=[d for _, d in part],
                            keys=[self.keys.batch(batch_ref(st.cid, n)) for n, _ in part]):
                raise _LostClaim
        return out

    def _commit(self, spec: CampaignSpec, st: _Intake, refs_due: list[tuple[str, int]], groups: int,
                digest: str, now_ms: int | None) -> None:
        k = self.keys
        # A namespace's first campaign records the Redis server it starts on (unless a recovery or an
        # earlier commit already did): its batches need no settling before their first send, while any
        # later restart still makes the run_id differ (see scheduler.recovery).
        run_id = str(self.r.info("server")["run_id"])
        dues = [d for _, d in refs_due]
        fields: list[Arg] = [
            "total", st.total, "invalid", st.invalid, "duplicates", st.duplicates, "batches", st.batches,
            "groups", groups, "first_due_ms", min(dues), "last_due_ms", max(dues), "recipients", digest]
        pairs: list[Arg] = []
        for ref, due in refs_due:
            pairs += [ref, due]
        ok = self.scripts.create(
            keys=[k.campaign(st.cid), k.due, k.account_campaigns(spec.account), k.campaigns, k.seen(st.cid), k.meta,
                  *[k.batch(ref) for ref, _ in refs_due]],
            args=["commit", st.token, self.claim_lease_ms, _clock(now_ms), run_id, st.total, len(fields) // 2,
                  *fields, *pairs])
        if ok == -1:
            raise CampaignError(
                f"campaign {st.cid}: some of the intake's writes are not in Redis (was it restarted during the "
                "intake?); nothing was queued: enqueue it again")
        if ok != 1:
            raise _LostClaim

    # -- dry run ---------------------------------------------------------------------------------
    def preview(self, spec: CampaignSpec, recipients: Iterable[tuple[int, str] | Rejected], *,
                now_ms: int | None = None, on_rejected: Callable[[Rejected], None] | None = None) -> dict[str, Any]:
        """What :meth:`create` would queue, without queueing: counts, due times, batches (the dry run).

        The same dedup (a temporary seen SET, deleted at the end) and the same planner as
        :meth:`create`, so the two cannot disagree. ``groups`` lists one row per group and due time:
        ``{"group", "recipients", "due_ms"}``, ordered by due time.
        """
        now = now_ms if now_ms is not None else server_time_ms(self.r)
        probe = spreading.Plan(spec.plan, 0, now)
        offsets: array[int] = array("h")
        by_offset: dict[int, int] = {}
        seen = self.keys.seen("_pv" + secrets.token_hex(8))
        total = invalid = duplicates = 0
        pending: list[str] = []

        def flush() -> None:
            nonlocal total, duplicates
            if not pending:
                return
            new = _s(self.scripts.intake(keys=[seen], args=[",".join(map(phone_key, pending)), _PREVIEW_SEEN_TTL_MS]))
            for phone, is_new in zip(pending, new, strict=True):
                if is_new != "1":
                    duplicates += 1
                    continue
                total += 1
                if probe.per_recipient:
                    off = probe.offset_of(phone)
                    offsets.append(off)
                    by_offset[off] = by_offset.get(off, 0) + 1
            pending.clear()

        try:
            for item in recipients:
                if isinstance(item, Rejected):
                    invalid += 1
                    if on_rejected is not None:
                        on_rejected(item)
                    continue
                pending.append(item[1])
                if len(pending) >= _INTAKE_CHUNK:
                    flush()
            flush()
        finally:
            self.r.delete(seen)
        plan = spreading.Plan(spec.plan, total, now)
        rows: dict[tuple[int, int], int] = {}
        batches = 0
        size_max = spec.batch_size
        for start in range(0, total, size_max):
            size = min(size_max, total - start)
            due = plan.uniform_due(start, size)
            if due is not None:
                key = (due, spreading.group_of(start, total, plan.groups))
                rows[key] = rows.get(key, 0) + size
                batches += 1
                continue
            pieces = plan.split(start, offsets[start:start + size] if plan.per_recipient
                                else [plan.utc_offset_min] * size)
            for piece_due, g, members in pieces:
                rows[(piece_due, g)] = rows.get((piece_due, g), 0) + len(members)
            batches += len(pieces)
        return {
            "total": total, "invalid": invalid, "duplicates": duplicates, "parts": spec.parts,
            "sms_estimate": total * spec.parts, "batch_size": spec.batch_size, "batches": batches,
            "groups": [{"group": g, "recipients": n, "due_ms": due} for (due, g), n in sorted(rows.items())],
            "recipient_offsets_min": dict(sorted(by_offset.items())) or None, "now_ms": now, "queued": False,
        }

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
        }
        if configured_cap is not None:
            cap = configured_cap if adaptive is None else min(configured_cap, max(1, int(adaptive)))
            out["account_cap"] = cap if verified else 1
        if out["state"] == "planning":
            until = int(f.get("lease_until", 0) or 0)
            out["intake_lease_until_ms"] = until or None
            out["intake_alive"] = until >= server_time_ms(self.r)
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
        state = _s(self.scripts.pause(keys=[self.keys.campaign(cid)], args=[_clock(now_ms), reason]))
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
                args=[_clock(now_ms), *members])
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
                args=[_clock(now_ms), *refs])
            state, cancelled = _s(res[0]), cancelled + int(res[1])
        self._durable(cid)
        return {"state": state, "cancelled_now": cancelled}

    def _controllable(self, cid: str) -> dict[str, str]:
        """The campaign's fields; CampaignError while it is being enqueued (there is nothing to control
        yet: the commit queues all of it at once) or after its enqueue was interrupted."""
        f = self.fields(cid)
        if f.get("state") == "planning":
            until = int(f.get("lease_until", 0) or 0)
            if until >= server_time_ms(self.r):
                raise CampaignError(f"campaign {cid} is being enqueued right now: nothing of it is queued yet; "
                                    "try again once it is queued")
            raise CampaignError(f"campaign {cid}: its enqueue was interrupted and nothing of it is queued; "
                                "enqueue it again with the same campaign id to finish it")
        return f

    def _durable(self, cid: str) -> Durable:
        self.last_durable = durable = wait_durable(self.r, marker_key=self.keys.campaign(cid))
        return durable

    def pause_account(self, account: str, *, now_ms: int | None = None, reason: str) -> list[str]:
        """Pause every queued or running campaign of an account (insufficient funds, bad login)."""
        paused = []
        for cid in (_s(x) for x in self.r.smembers(self.keys.account_campaigns(account))):
            res = self.scripts.pause(keys=[self.keys.campaign(cid)], args=[_clock(now_ms), reason])
            if _s(res) == "paused":
                paused.append(cid)
        return paused

    def _receipt(self, cid: str, *, existing: bool) -> Receipt:
        f = self.fields(cid)
        total, parts = int(f.get("total", 0)), int(f.get("parts", 0))
        return Receipt(cid, total, int(f.get("invalid", 0)), int(f.get("duplicates", 0)), parts,
                       int(f.get("batches", 0)), int(f.get("groups", 0) or 0), int(f.get("first_due_ms", 0) or 0),
                       int(f.get("last_due_ms", 0) or 0), existing=existing, sms_estimate=total * parts)

    # -- recovery ------------------------------------------------------------------------------
    def unfinished(self) -> list[tuple[str, int]]:
        out = []
        for cid in self.campaign_ids():
            state, batches = self.r.hmget(self.keys.campaign(cid), "state", "batches")
            if state is not None and _s(state) not in FINAL_STATES and _s(state) != "planning":
                out.append((cid, int(batches or 0)))
        return out


def _clock(now_ms: int | None) -> Arg:
    """The scripts' ``now_ms`` argument: '' = the Redis server's clock."""
    return "" if now_ms is None else int(now_ms)


def _hexdigest(d: _StreamDigest | None) -> str:
    assert d is not None
    return d.hexdigest()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _content(spec: CampaignSpec) -> dict[str, str]:
    """What "the same campaign" means: digests of its text, sender and plan, and its account."""
    plan: Any = spec.plan_source if spec.plan_source is not None else _plan_json(spec.plan)
    return {"v": "1", "account": spec.account, "message": _sha(spec.message), "sender": _sha(spec.sender or ""),
            "plan": _sha(json.dumps(plan, sort_keys=True, default=str))}


def _plan_json(plan: spreading.PlanOptions | None) -> dict[str, Any]:
    if plan is None:
        return {}
    d = asdict(plan)
    if plan.window is not None:
        d["window"] = f"{plan.window.h1}-{plan.window.h2}"
    return d
