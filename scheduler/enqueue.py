"""A campaign's way in: claim → streaming intake → plan → commit (``lua/create.lua``, ``lua/intake.lua``).

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

**Streaming.** Recipients are deduplicated in Redis (:func:`deduplicated`: a SET per campaign, dropped
at commit) and written as batches of ``batch_size`` while the input is read, so the producer's memory
does not grow with the campaign. The plan (:class:`scheduler.spreading.Plan`, also behind the dry run
in :mod:`scheduler.preview`) then gives every batch its due time, cutting batches where the due time
changes, and the commit puts every batch into the due-queue and the campaign into ``queued`` in one
script: a campaign is either fully enqueued or not at all.

**Durable before acknowledged.** The commit waits for the server's disk
(:func:`scheduler.durability.wait_durable`) before it returns; what that found is in
``Receipt.durable`` and :attr:`Enqueue.last_durable`. A campaign never stays ``planning`` for ever
after a crash: its lease runs out, and enqueueing the same id again takes it over.

Every instant is the Redis server's clock unless a test passes ``now_ms``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from scheduler import spreading
from scheduler.durability import Durable, wait_durable
from scheduler.intake import Rejected, phone_key
from scheduler.keys import CAMPAIGN_ID_RE, Keys, batch_ref
from scheduler.keys import text as _s
from scheduler.ledger import server_time_ms
from scheduler.scripts import Arg, Scripts, clock_arg

__all__ = [
    "CLAIM_LEASE_MS",
    "CampaignError",
    "CampaignSpec",
    "Enqueue",
    "IntakeCounts",
    "Receipt",
    "deduplicated",
    "new_campaign_id",
]

#: Recipients deduplicated per round trip during intake.
_INTAKE_CHUNK = 2_000
#: How long a claim on a campaign id lasts without renewal: an intake renews it every third of this, so
#: only a dead (or frozen) producer loses it; a retry of the same id waits at most this long for a dead
#: one. Long enough for a stalled disk or a Redis failover, short enough for an app's retry.
CLAIM_LEASE_MS = 30_000
#: The dedup SET of an intake that died expires (a day covers any retry worth waiting for); every
#: dedup call renews it, and the commit unlinks it.
_SEEN_TTL_MS = 86_400_000
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
class IntakeCounts:
    """What an intake has read so far: new recipients, rejected lines, duplicates of earlier lines."""

    total: int = 0
    invalid: int = 0
    duplicates: int = 0


def deduplicated(items: Iterable[tuple[int, str] | Rejected], ask: Callable[[str], str], counts: IntakeCounts, *,
                 on_rejected: Callable[[Rejected], None] | None = None,
                 each: Callable[[tuple[int, str] | Rejected], None] | None = None) -> Iterator[list[str]]:
    """The new recipients of ``items`` (normalized phones, in order), one chunk of the input at a time.

    ``ask(keys)`` runs ``lua/intake.lua`` for a chunk's dedup keys (:func:`~scheduler.intake.phone_key`,
    joined by ',') and returns its answer, one character per recipient ('1' = new). Rejected lines go
    to ``on_rejected``; ``counts`` adds up the new recipients, the rejected lines and the duplicates;
    ``each`` sees every item first (a digest of the stream). The one dedup of the enqueue and its dry run.
    """
    pending: list[str] = []
    for item in items:
        if each is not None:
            each(item)
        if isinstance(item, Rejected):
            counts.invalid += 1
            if on_rejected is not None:
                on_rejected(item)
            continue
        pending.append(item[1])
        if len(pending) >= _INTAKE_CHUNK:
            yield _new_ones(pending, ask, counts)
            pending = []
    if pending:
        yield _new_ones(pending, ask, counts)


def _new_ones(pending: list[str], ask: Callable[[str], str], counts: IntakeCounts) -> list[str]:
    answer = ask(",".join(map(phone_key, pending)))
    new = [phone for phone, is_new in zip(pending, answer, strict=True) if is_new == "1"]
    counts.total += len(new)
    counts.duplicates += len(pending) - len(new)
    return new


@dataclass
class _Intake:
    cid: str
    token: str
    batch_size: int
    counts: IntakeCounts = field(default_factory=IntakeCounts)
    batches: int = 0
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

    def __init__(self, enqueue: Enqueue, ckey: str, token: str, now_ms: int | None) -> None:
        self._e, self._ckey, self._token, self._now = enqueue, ckey, token, now_ms
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
        every_s = self._e.claim_lease_ms / 3000
        while not self._stop.wait(every_s):
            try:
                ok = self._e._op("renew", self._ckey, self._token, self._now)
            except redis.RedisError:
                continue  # the next renewal tries again; a claim lasts three of these
            if not ok:
                self.lost.set()
                return


class Enqueue:
    """Creates campaigns in Redis: one claim, one streaming intake, one plan and one commit per campaign."""

    def __init__(self, client: redis.Redis, keys: Keys, *, scripts: Scripts | None = None,
                 claim_lease_ms: int = CLAIM_LEASE_MS) -> None:
        self.r = client
        self.keys = keys
        self.scripts = scripts or Scripts(client)
        self.claim_lease_ms = claim_lease_ms
        #: What the last commit's wait for the server's disk found.
        self.last_durable: Durable | None = None

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
                "claim", token, self.claim_lease_ms, clock_arg(now_ms), json.dumps(content, sort_keys=True),
                *initial])
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
        n = st.counts
        own_digest = _StreamDigest() if recipients_digest is None else None
        lease = _Lease(self, ckey, token, now_ms)
        try:
            with lease:
                for new in deduplicated(items, lambda joined: self._dedup(st, joined, now_ms), n,
                                        on_rejected=on_rejected,
                                        each=own_digest.add if own_digest is not None else None):
                    st.current += new
                    if len(st.current) >= st.batch_size:
                        self._write_batches(st, now_ms, final=False)
                    if lease.lost.is_set():
                        raise _LostClaim
                self._write_batches(st, now_ms, final=True)
                if n.total == 0:
                    raise CampaignError("no valid recipients: nothing was queued")
                if strict and n.invalid:
                    raise CampaignError(f"{_plural(n.invalid, 'invalid line')} (strict): nothing was queued")
                plan = spreading.Plan(spec.plan, n.total, now_ms if now_ms is not None else server_time_ms(self.r))
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
        return Receipt(cid, n.total, n.invalid, n.duplicates, spec.parts, len(refs_due), plan.groups,
                       min(dues), max(dues), sms_estimate=n.total * spec.parts, durable=str(durable))

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
        f = {_s(k): _s(v) for k, v in self.r.hgetall(self.keys.campaign(cid)).items()}
        if not f:
            raise CampaignError(f"no campaign with id {cid!r}")
        total, parts = int(f.get("total", 0)), int(f.get("parts", 0))
        return Receipt(cid, total, int(f.get("invalid", 0)), int(f.get("duplicates", 0)), parts,
                       int(f.get("batches", 0)), int(f.get("groups", 0) or 0), int(f.get("first_due_ms", 0) or 0),
                       int(f.get("last_due_ms", 0) or 0), existing=True, sms_estimate=total * parts)

    def _op(self, op: str, ckey: str, token: str, now_ms: int | None, *, keys: Sequence[str] = (),
            args: Sequence[Arg] = ()) -> bool:
        res = self.scripts.create(keys=[ckey, *keys], args=[op, token, self.claim_lease_ms, clock_arg(now_ms), *args])
        return bool(res == 1)

    def _dedup(self, st: _Intake, joined: str, now_ms: int | None) -> str:
        """intake.lua under the intake's claim (it renews the claim too)."""
        new = self.scripts.intake(keys=[self.keys.seen(st.cid), self.keys.campaign(st.cid)],
                                  args=[joined, _SEEN_TTL_MS, st.token, self.claim_lease_ms, clock_arg(now_ms)])
        if isinstance(new, int):
            raise _LostClaim
        return _s(new)

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
            size = min(st.batch_size, st.counts.total - start)
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
        k, n = self.keys, st.counts
        # A namespace's first campaign records the Redis server it starts on (unless a recovery or an
        # earlier commit already did): its batches need no settling before their first send, while any
        # later restart still makes the run_id differ (see scheduler.recovery).
        run_id = str(self.r.info("server")["run_id"])
        dues = [d for _, d in refs_due]
        fields: list[Arg] = [
            "total", n.total, "invalid", n.invalid, "duplicates", n.duplicates, "batches", st.batches,
            "groups", groups, "first_due_ms", min(dues), "last_due_ms", max(dues), "recipients", digest]
        pairs: list[Arg] = []
        for ref, due in refs_due:
            pairs += [ref, due]
        ok = self.scripts.create(
            keys=[k.campaign(st.cid), k.due, k.account_campaigns(spec.account), k.campaigns, k.seen(st.cid), k.meta,
                  *[k.batch(ref) for ref, _ in refs_due]],
            args=["commit", st.token, self.claim_lease_ms, clock_arg(now_ms), run_id, n.total, len(fields) // 2,
                  *fields, *pairs])
        if ok == -1:
            raise CampaignError(
                f"campaign {st.cid}: some of the intake's writes are not in Redis (was it restarted during the "
                "intake?); nothing was queued: enqueue it again")
        if ok != 1:
            raise _LostClaim



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
