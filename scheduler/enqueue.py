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
does not grow with the campaign. Those round trips do not hold the reading up: the dedup and stage
scripts are sent on a connection of the intake's own and their replies read a chunk later
(:mod:`scheduler._pipe`; the stop list is looked up by the dedup script itself). The plan
(:class:`scheduler.spreading.Plan`, also behind the dry run in :mod:`scheduler.preview`) then gives
every batch its due time, cutting batches where the due time changes, and the commit puts every batch
into the due-queue and the campaign into ``queued`` in one script: a campaign is either fully enqueued
or not at all.

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
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeAlias

import orjson
import redis

from scheduler import spreading
from scheduler._gc import fewer_collections
from scheduler._pipe import Pipe, PipeBroken
from scheduler.durability import Durable, wait_durable
from scheduler.intake import Rejected, phone_key, phone_keys
from scheduler.keys import CAMPAIGN_ID_RE, Keys, batch_ref
from scheduler.keys import text as _s
from scheduler.ledger import server_time_ms
from scheduler.scripts import Arg, Scripts, clock_arg
from scheduler.stoplist import StopList

__all__ = [
    "CLAIM_LEASE_MS",
    "CampaignError",
    "CampaignSpec",
    "Enqueue",
    "Entry",
    "IntakeCounts",
    "Item",
    "Personal",
    "PersonalBatcher",
    "Receipt",
    "deduplicated",
    "list_safe",
    "new_campaign_id",
]

#: Recipients deduplicated per round trip during intake.
_INTAKE_CHUNK = 2_000
#: Chunks whose dedup may be in flight (sent, its answer not read yet) while the next one is read.
_AHEAD = 1
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
#: A personal recipient's share of a request body beyond its text: its digits, ``%2B``, separators.
_PERSONAL_BYTES_PER_RECIPIENT = 26
_DIGEST_FIELDS = {"account": "another account", "message": "another text", "sender": "another sender",
                  "plan": "other plan options", "recipients": "other recipients",
                  "options": "other options (provider options, budget, stop rules)"}


class Personal(Protocol):
    """A recipient with a text of its own (``worker.rows.Row``): the phone normalized, the text rendered."""

    @property
    def line_no(self) -> int: ...
    @property
    def phone(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def sender(self) -> str | None: ...


#: What an intake reads: ``(line_no, phone)`` (the campaign's text), a personal recipient, or a refused line.
Item: TypeAlias = "tuple[int, str] | Personal | Rejected"
#: A new recipient as the dedup hands it on: its phone (the campaign's text), or the personal recipient.
Entry: TypeAlias = "str | Personal"


def list_safe(text: str) -> bool:
    """Whether ``text`` can share a request with other texts (the provider's ``list``).

    A ``list`` line has one escape, ``\\n`` for a newline, and none for a backslash: a text holding a
    backslash (``C:\\new`` would arrive with a line break) or a carriage return can only travel as the
    one text of a request (``phones`` + ``mes``, no escape). Such recipients are written into batches
    of a single text (see :mod:`worker.smsc.requests`)."""
    return "\\" not in text and "\r" not in text


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
    #: Per-recipient texts (the recipients are :class:`Personal`): ``message`` is then the template as
    #: given (for the content digest), ``parts`` 0, and every recipient's parts come from ``parts_of``.
    personal: bool = False
    #: SMS parts of one text as the provider bills it (after transliteration and ``maxsms``).
    parts_of: Callable[[str], int] | None = None
    #: Bounds of one request of a personal campaign: its body (form-encoded) and the SMS parts at stake.
    max_batch_bytes: int = 256 * 1024
    max_batch_parts: int = 1_500
    #: More fields of the campaign HASH (the provider's options, budget, links), written at the claim
    #: and part of the content digest (``options``).
    extra: Mapping[str, str] = field(default_factory=dict)


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
    #: Recipients left out because their number is on the stop list.
    suppressed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IntakeCounts:
    """What an intake has read so far: new recipients, rejected lines, duplicates of earlier lines,
    stop-listed ones, and the SMS parts of the new recipients' texts (personal campaigns)."""

    total: int = 0
    invalid: int = 0
    duplicates: int = 0
    suppressed: int = 0
    sms: int = 0


def deduplicated(items: Iterable[Item], ask: Callable[[str], str], counts: IntakeCounts, *,
                 on_rejected: Callable[[Rejected], None] | None = None,
                 each: Callable[[Item], None] | None = None,
                 on_duplicate: Callable[[int, str], None] | None = None,
                 stopped: Callable[[list[str]], list[bool]] | None = None,
                 on_suppressed: Callable[[int, str], None] | None = None) -> Iterator[list[Entry]]:
    """The new recipients of ``items`` (in order), one chunk of the input at a time: phones, or the
    :class:`Personal` recipients themselves.

    ``ask(keys)`` runs ``lua/intake.lua`` for a chunk's dedup keys (:func:`~scheduler.intake.phone_key`,
    joined by ',') and returns its answer, one character per recipient ('1' = new). Rejected lines go
    to ``on_rejected``, later lines of a number already read to ``on_duplicate(line_no, phone)`` (the
    first line wins); ``stopped(phones)`` says which numbers are on the stop list: those are left out
    before the dedup and go to ``on_suppressed``. ``counts`` adds it all up; ``each`` sees every item
    first (a digest of the stream). The one dedup of the enqueue and its dry run.
    """
    def start(pending: list[Entry]) -> Callable[[], _Answer]:
        answer = _asked(pending, ask, stopped)
        return lambda: answer

    return _deduplicated(items, start, counts, ahead=0, on_rejected=on_rejected, each=each,
                         on_duplicate=on_duplicate, on_suppressed=on_suppressed)


#: What the stop list and the dedup said of a chunk: its phones, and one character per recipient
#: ('1' new, '0' a duplicate of an earlier line, 's' on the stop list).
_Answer: TypeAlias = "tuple[list[str], str]"


def _deduplicated(items: Iterable[Item], start: Callable[[list[Entry]], Callable[[], _Answer]],
                  counts: IntakeCounts, *, ahead: int, on_rejected: Callable[[Rejected], None] | None,
                  each: Callable[[Item], None] | None, on_duplicate: Callable[[int, str], None] | None,
                  on_suppressed: Callable[[int, str], None] | None) -> Iterator[list[Entry]]:
    """:func:`deduplicated`, each chunk's round trips started by ``start(chunk)``, which returns how to
    wait for its answer: up to ``ahead`` chunks are read meanwhile, so a chunk's new recipients come
    that much later (the same ones, in the same order)."""
    pending: list[Entry] = []
    lines: list[int] = []
    waiting: deque[tuple[list[Entry], list[int], Callable[[], _Answer]]] = deque()
    for item in items:
        if each is not None:
            each(item)
        if isinstance(item, Rejected):
            counts.invalid += 1
            if on_rejected is not None:
                on_rejected(item)
            continue
        if isinstance(item, tuple):
            pending.append(item[1])
            lines.append(item[0])
        else:
            pending.append(item)
            lines.append(item.line_no)
        if len(pending) >= _INTAKE_CHUNK:
            waiting.append((pending, lines, start(pending)))
            pending, lines = [], []
            if len(waiting) > ahead:
                done, done_lines, answer = waiting.popleft()
                yield _settled(done, done_lines, answer(), counts, on_duplicate, on_suppressed)
    if pending:
        waiting.append((pending, lines, start(pending)))
    while waiting:
        done, done_lines, answer = waiting.popleft()
        yield _settled(done, done_lines, answer(), counts, on_duplicate, on_suppressed)


def _asked(pending: Sequence[Entry], ask: Callable[[str], str],
           stopped: Callable[[list[str]], list[bool]] | None) -> _Answer:
    """A chunk's round trips, one after the other: the stop list, then the dedup of what it does not stop."""
    phones = [e if isinstance(e, str) else e.phone for e in pending]
    flags = stopped(phones) if stopped is not None else None
    if flags is None or not any(flags):
        return phones, ask(",".join(phone_keys(phones)))
    kept = [phone_key(p) for p, f in zip(phones, flags, strict=True) if not f]
    return phones, _merged(flags, ask(",".join(kept)) if kept else "")


def _merged(flags: list[bool], said: str) -> str:
    """The answer for a whole chunk: 's' where ``flags`` stop a number, the dedup's ``said`` for the rest."""
    if len(said) != flags.count(False):
        raise ValueError(f"the dedup answered for {len(said)} numbers, not {flags.count(False)}")
    each = iter(said)
    return "".join("s" if f else next(each) for f in flags)


def _settled(pending: list[Entry], lines: list[int], answer: _Answer, counts: IntakeCounts,
             on_duplicate: Callable[[int, str], None] | None,
             on_suppressed: Callable[[int, str], None] | None) -> list[Entry]:
    """The new recipients of a chunk, by its answer; the stopped and the duplicates counted and told."""
    phones, said = answer
    new = [e for e, c in zip(pending, said, strict=True) if c == "1"]
    stopped = said.count("s")
    if stopped:
        counts.suppressed += stopped
        if on_suppressed is not None:
            for line_no, phone, c in zip(lines, phones, said, strict=True):
                if c == "s":
                    on_suppressed(line_no, phone)
    counts.total += len(new)
    dups = len(pending) - len(new) - stopped
    counts.duplicates += dups
    if on_duplicate is not None and dups:
        for line_no, phone, c in zip(lines, phones, said, strict=True):
            if c == "0":
                on_duplicate(line_no, phone)
    return new


#: A staged batch: its number, phones, due time (None: not yet planned), and the JSON of its
#: per-recipient texts, senders and UTC offsets in minutes ('' = none).
_Staged: TypeAlias = "tuple[int, Sequence[str], int | None, str | bytes, str | bytes, str | bytes]"


@dataclass
class _Pending:
    """Recipients waiting for a full batch: phones, and for a personal campaign their texts and senders."""

    phones: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    senders: dict[str, str] = field(default_factory=dict)
    #: Recipients' own UTC offsets in minutes (a time-zone column), for a window in their time.
    zones: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    parts: int = 0
    #: The one text of a batch of list-unsafe texts (see :func:`list_safe`).
    text: str | None = None

    def clear(self) -> None:
        self.phones, self.texts, self.senders, self.zones = [], {}, {}, {}
        self.bytes, self.parts, self.text = 0, 0, None


#: What :meth:`PersonalBatcher.add` has completed, most of the time (never appended to).
_NONE_DONE: list[_Pending] = []


class PersonalBatcher:
    """Where a personal campaign's batches end — the one rule of the enqueue and its dry run.

    A batch ends at ``batch_size`` recipients, at ``max_batch_bytes`` of request body (the texts
    form-encoded) or at ``max_batch_parts`` SMS parts. Recipients whose text cannot travel in a
    ``list`` (:func:`list_safe`) go into batches of one text each: consecutive recipients with that
    same text share one; another such text starts the next. Memory: two batches in hand.
    """

    def __init__(self, spec: CampaignSpec) -> None:
        assert spec.parts_of is not None
        self.parts_of = spec.parts_of
        self.size, self.max_bytes, self.max_parts = spec.batch_size, spec.max_batch_bytes, spec.max_batch_parts
        self.mixed, self.solo = _Pending(), _Pending()
        self.sms = 0

    def add(self, phone: str, text: str, sender: str | None, tz_h: float | None = None,
            parts: int | None = None) -> list[_Pending]:
        """Take one recipient (``tz_h``: its own UTC offset in hours, if known; ``parts``: its text's
        ``parts_of``, when the reader counted it already); returns the batches it completed (none, one, or
        two)."""
        if parts is None:
            parts = self.parts_of(text)
        self.sms += parts
        # Its share of the request body: the text form-encoded (a Cyrillic letter is 6 bytes: each byte
        # outside the unreserved set becomes three, len(quote(text, safe="")) in C, ~0.3 µs against ~5 µs),
        # the phone and separators; a text shared by several recipients is counted each time (an upper bound).
        b = text.encode("utf-8", "surrogatepass")
        size = len(b) + 2 * len(b.translate(None, _UNRESERVED)) + _PERSONAL_BYTES_PER_RECIPIENT
        done: list[_Pending] = _NONE_DONE
        if "\\" not in text and "\r" not in text:  # list_safe(text), inline: a million calls
            pend = self.mixed
        else:
            pend = self.solo
            if pend.text is not None and pend.text != text:
                done = [self._take(pend)]
            pend.text = text
        if pend.phones and (len(pend.phones) >= self.size or pend.bytes + size > self.max_bytes
                            or pend.parts + parts > self.max_parts):
            keep = pend.text
            done = [*done, self._take(pend)]
            pend.text = keep
        pend.phones.append(phone)
        pend.texts[phone] = text
        if sender:
            pend.senders[phone] = sender
        if tz_h is not None:
            pend.zones[phone] = round(tz_h * 60)
        pend.bytes += size
        pend.parts += parts
        return [d for d in done if d.phones] if done else []

    def finish(self) -> list[_Pending]:
        """The batches still in hand, at the end of the input."""
        return [d for d in (self._take(self.mixed), self._take(self.solo)) if d.phones]

    @staticmethod
    def _take(pend: _Pending) -> _Pending:
        out = _Pending(pend.phones, pend.texts, pend.senders, pend.zones, pend.bytes, pend.parts, pend.text)
        pend.clear()
        return out


@dataclass
class _Intake:
    cid: str
    token: str
    batch_size: int
    counts: IntakeCounts = field(default_factory=IntakeCounts)
    batches: int = 0
    current: list[str] = field(default_factory=list)  # deduplicated, waiting for a full batch
    #: Per batch number: the index of its first recipient in the campaign and its size (the plan's input).
    starts: array[int] = field(default_factory=lambda: array("q"))
    sizes: array[int] = field(default_factory=lambda: array("q"))
    written: int = 0
    #: While the input is read: the connection its dedup and stage scripts are sent on, their replies
    #: read later (see _pipe.py).
    pipe: Pipe | None = None
    #: Told how many recipients are staged, each time a stage's reply says so (Enqueue.create's hook).
    on_staged: Callable[[str, int], None] | None = None


class _StreamDigest:
    """The digest of recipients given as an iterable: the normalized numbers and rejected lines, in order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, item: Item) -> None:
        if isinstance(item, Rejected):
            self._h.update(b"!" + item.raw.encode("utf-8", "surrogatepass") + b"\n")
        elif isinstance(item, tuple):
            self._h.update(item[1].encode("ascii", "replace") + b"\n")
        else:
            record = json.dumps([item.phone, item.text, item.sender], ensure_ascii=False)
            self._h.update(record.encode("utf-8", "surrogatepass") + b"\n")

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

    def create(self, spec: CampaignSpec, recipients: Iterable[Item], *,
               now_ms: int | None = None, on_rejected: Callable[[Rejected], None] | None = None,
               recipients_digest: Callable[[], str] | None = None, strict: bool = False,
               on_duplicate: Callable[[int, str], None] | None = None,
               stopped: Callable[[list[str]], list[bool]] | None = None,
               on_suppressed: Callable[[int, str], None] | None = None,
               before_commit: Callable[[str, IntakeCounts], None] | None = None,
               on_staged: Callable[[str, int], None] | None = None,
               stoplist: StopList | None = None) -> Receipt:
        """Enqueue a campaign from (line_no, normalized phone) items (or :class:`Personal` recipients of
        a ``spec.personal`` campaign) and rejected lines, streaming.

        ``recipients_digest``: called once the input is read, the digest of what was read (e.g. the
        raw bytes of the recipients file); without it, the stream itself is digested. ``strict``:
        refuse the whole campaign (CampaignError, nothing queued) if any line was rejected; every
        rejected line still goes to ``on_rejected``. ``on_duplicate``, ``stopped``, ``on_suppressed``:
        see :func:`deduplicated`; ``stoplist``, instead of ``stopped``: the stop list, checked by the dedup
        script itself (one round trip a chunk). ``before_commit(cid, counts)``: the last word before the commit, the
        batches staged (a balance check); whatever it raises abandons the campaign, nothing queued.
        ``on_staged(cid, n)``: while the input is read, each time Redis confirms that the first ``n``
        recipients are staged (in order, ``n`` growing; what :func:`worker.costs.staged_batches` can read
        of them now is what ``before_commit`` would read); whatever it raises abandons the campaign.
        ``now_ms``: only for tests that step time.
        """
        cid = spec.campaign_id or new_campaign_id()
        if not CAMPAIGN_ID_RE.match(cid):
            raise CampaignError(f"campaign id {cid!r}: use 1-24 characters of A-Za-z0-9_.")
        if spec.personal and spec.parts_of is None:
            raise ValueError("a personal campaign needs parts_of")
        ckey = self.keys.campaign(cid)
        content = _content(spec)
        token = secrets.token_hex(8)
        items = iter(recipients)
        initial: list[Arg] = [
            "id", cid, "account", spec.account, "message", spec.message, "sender", spec.sender or "",
            "parts", spec.parts, "total", 0, "sent", 0, "failed", 0, "cancelled", 0, "sms", 0, "cost_milli", 0,
            "plan", json.dumps(_plan_json(spec.plan))]
        if spec.personal:
            initial += ["personal", "1"]
        for name, value in spec.extra.items():
            initial += [name, value]
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
        st = _Intake(cid=cid, token=token, batch_size=spec.batch_size, on_staged=on_staged)
        n = st.counts
        batcher = PersonalBatcher(spec) if spec.personal else None
        own_digest = _StreamDigest() if recipients_digest is None else None
        lease = _Lease(self, ckey, token, now_ms)
        try:
            # The dedup and stage scripts go out on a pipe of their own while the input is read on; their
            # replies are read (and checked) a chunk later, all of them before the plan.
            with lease, fewer_collections(), Pipe(self.r, ("intake", "create")) as pipe:
                st.pipe = pipe
                for new in _deduplicated(items, lambda chunk: self._ask(st, chunk, stopped, stoplist, now_ms), n,
                                         ahead=_AHEAD, on_rejected=on_rejected,
                                         each=own_digest.add if own_digest is not None else None,
                                         on_duplicate=on_duplicate, on_suppressed=on_suppressed):
                    if batcher is not None:
                        self._add_personal(st, batcher, new, now_ms)
                    else:
                        st.current += new  # type: ignore[arg-type]  # phones only in a campaign of one text
                        if len(st.current) >= st.batch_size:
                            self._write_batches(st, now_ms, final=False)
                    if lease.lost.is_set():
                        raise _LostClaim
                if batcher is not None:
                    self._stage_pending(st, batcher.finish(), now_ms)
                    n.sms = batcher.sms
                else:
                    self._write_batches(st, now_ms, final=True)
                pipe.drain()
                st.pipe = None
                if n.total == 0:
                    raise CampaignError("no valid recipients: nothing was queued"
                                        + (f" ({_plural(n.suppressed, 'number')} on the stop list)"
                                           if n.suppressed else ""))
                if strict and n.invalid:
                    raise CampaignError(f"{_plural(n.invalid, 'invalid line')} (strict): nothing was queued")
                if not spec.personal:
                    n.sms = n.total * spec.parts
                if before_commit is not None:
                    before_commit(cid, n)
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
        except PipeBroken as exc:
            # What went out on the pipe and was not answered is unknown: drop it all (as a dead intake's).
            self._abandon(cid, token, st.batches, now_ms)
            raise CampaignError(f"campaign {cid}: {exc}; nothing was queued: enqueue it again") from exc
        except BaseException:
            # Nothing of a campaign that did not commit stays behind (it was never in the due-queue).
            self._abandon(cid, token, st.batches, now_ms)
            raise
        self.last_durable = durable = wait_durable(self.r, marker_key=ckey)
        return Receipt(cid, n.total, n.invalid, n.duplicates, spec.parts, len(refs_due), plan.groups,
                       min(dues), max(dues), sms_estimate=n.sms, durable=str(durable), suppressed=n.suppressed)

    # -- personal campaigns: batches by request size, list-unsafe texts in batches of their own ---------
    def _add_personal(self, st: _Intake, batcher: PersonalBatcher, new: list[Entry], now_ms: int | None) -> None:
        done: list[_Pending] = []
        add = batcher.add
        for e in new:
            assert not isinstance(e, str)
            if completed := add(e.phone, e.text, e.sender, getattr(e, "tz_h", None), getattr(e, "parts", None)):
                done += completed
        self._stage_pending(st, done, now_ms)

    def _stage_pending(self, st: _Intake, done: Sequence[_Pending], now_ms: int | None) -> None:
        staged: list[_Staged] = []
        for pend in done:
            staged.append((self._number(st, len(pend.phones)), pend.phones, None, orjson.dumps(pend.texts),
                           _json(pend.senders), _json(pend.zones)))
        if staged:
            self._stage(st, staged, now_ms)

    def _number(self, st: _Intake, size: int) -> int:
        """The next batch number, for a batch of ``size`` recipients written now."""
        num = st.batches
        st.batches += 1
        st.starts.append(st.written)
        st.sizes.append(size)
        st.written += size
        return num

    def _existing(self, cid: str, content: dict[str, str], stored: str, stored_recipients: str,
                  items: Iterator[Item], recipients_digest: Callable[[], str] | None) -> Receipt:
        """The answer for an id that is committed already: its receipt, if the content is the same."""
        if stored:  # campaigns committed before content digests were kept are taken as the same
            theirs = json.loads(stored)
            differ = [name for name in ("account", "message", "sender", "plan", "options")
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
                       int(f.get("last_due_ms", 0) or 0), existing=True,
                       sms_estimate=int(f.get("sms_estimate") or total * parts),
                       suppressed=int(f.get("suppressed") or 0))

    def _op(self, op: str, ckey: str, token: str, now_ms: int | None, *, keys: Sequence[str] = (),
            args: Sequence[Arg] = ()) -> bool:
        res = self.scripts.create(keys=[ckey, *keys], args=[op, token, self.claim_lease_ms, clock_arg(now_ms), *args])
        return bool(res == 1)

    def _ask(self, st: _Intake, chunk: list[Entry], stopped: Callable[[list[str]], list[bool]] | None,
             stoplist: StopList | None, now_ms: int | None) -> Callable[[], _Answer]:
        """Send a chunk's intake.lua under the intake's claim (it renews the claim too), the stop list checked
        inside (``stoplist``) or by ``stopped`` first; return how to read its answer."""
        assert st.pipe is not None
        phones = [e if isinstance(e, str) else e.phone for e in chunk]  # a million rows: no call a row
        flags = stopped(phones) if stopped is not None else None
        if flags is not None and any(flags):
            kept = [p for p, f in zip(phones, flags, strict=True) if not f]
        else:
            flags, kept = None, phones
        if not kept:
            return lambda: (phones, "s" * len(phones))
        keys = [self.keys.seen(st.cid), self.keys.campaign(st.cid)]
        dedup_keys = phone_keys(kept)
        args: list[Arg] = [",".join(dedup_keys), _SEEN_TTL_MS, st.token, self.claim_lease_ms, clock_arg(now_ms)]
        if stoplist is not None:
            keys.append(stoplist.key)
            args.append(stoplist.intake_keys(kept, dedup_keys))
        ticket = st.pipe.call("intake", keys, args)
        pipe = st.pipe

        def answer() -> _Answer:
            said = pipe.result(ticket)
            if isinstance(said, int):
                raise _LostClaim
            return phones, _s(said) if flags is None else _merged(flags, _s(said))

        return answer

    def _write_batches(self, st: _Intake, now_ms: int | None, *, final: bool) -> None:
        size = st.batch_size
        batches: list[_Staged] = []
        while len(st.current) >= size or (final and st.current):
            chunk, st.current = st.current[:size], st.current[size:]
            batches.append((self._number(st, len(chunk)), chunk, None, "", "", ""))
        self._stage(st, batches, now_ms)

    def _stage(self, st: _Intake, batches: Sequence[_Staged], now_ms: int | None) -> None:
        """Write batches (number, phones, due, texts, senders) under the intake's claim; ``st.batches``
        is the high-water mark."""
        ckey = self.keys.campaign(st.cid)
        for lo in range(0, len(batches), _STAGE_CHUNK):
            part = batches[lo:lo + _STAGE_CHUNK]
            args: list[Arg] = [st.batches]
            for _, phones, due, texts, senders, zones in part:
                args += [",".join(phones), "" if due is None else due, texts, senders, zones]
            keys = [self.keys.batch(batch_ref(st.cid, n)) for n, *_ in part]
            if st.pipe is not None:  # its reply is checked when it is read, before the plan at the latest
                st.pipe.call("create", [ckey, *keys], ["stage", st.token, self.claim_lease_ms, clock_arg(now_ms),
                                                      *args], check=_staged if st.on_staged is None else
                             _staged_then(st.on_staged, st.cid, st.starts[part[-1][0]] + st.sizes[part[-1][0]]))
            elif not self._op("stage", ckey, st.token, now_ms, keys=keys, args=args):
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
        pieces_out: list[_Staged] = []
        first_extra = st.batches
        for n in range(first_extra):
            start, size = st.starts[n], st.sizes[n]
            due = plan.uniform_due(start, size)
            if due is not None:
                out.append((batch_ref(st.cid, n), due))
                dues.append((n, due))
                continue
            raw = self.r.hmget(self.keys.batch(batch_ref(st.cid, n)), ["phones", "texts", "senders", "zones"])
            phones = _s(raw[0] or b"").split(",")
            texts: dict[str, str] = json.loads(_s(raw[1])) if raw[1] else {}
            senders: dict[str, str] = json.loads(_s(raw[2])) if raw[2] else {}
            zones: dict[str, int] = json.loads(_s(raw[3])) if raw[3] else {}
            pieces = plan.split(start, [zones[p] if p in zones and plan.per_recipient else plan.offset_of(p)
                                        for p in phones])
            for j, (piece_due, _, members) in enumerate(pieces):
                num = n
                if j:
                    num, st.batches = st.batches, st.batches + 1
                mine = [phones[i] for i in members]
                pieces_out.append((num, mine, piece_due, _subset_json(texts, mine), _subset_json(senders, mine),
                                   _subset_json(zones, mine)))
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
            "groups", groups, "first_due_ms", min(dues), "last_due_ms", max(dues), "recipients", digest,
            "suppressed", n.suppressed, "sms_estimate", n.sms]
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



def _staged_then(tell: Callable[[str, int], None], cid: str, upto: int) -> Callable[[object], None]:
    """A stage's reply check that then tells ``tell`` the first ``upto`` recipients are staged."""
    def check(reply: object) -> None:
        _staged(reply)
        tell(cid, upto)

    return check


def _staged(reply: object) -> None:
    if reply != 1:
        raise _LostClaim


#: The bytes a form encoding keeps as they are (``quote(..., safe="")``): every other byte is ``%XX``.
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def _json(values: Mapping[str, object]) -> bytes | str:
    """A batch's field of per-recipient values: orjson's JSON (what json.dumps(..., ensure_ascii=False,
    separators=(",", ":")) writes, as UTF-8), or '' for none (the field is not written)."""
    return orjson.dumps(values) if values else ""


def _subset_json(values: Mapping[str, object], phones: Sequence[str]) -> bytes | str:
    return orjson.dumps({p: values[p] for p in phones if p in values}) if values else ""


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
    content = {"v": "1", "account": spec.account, "message": _sha(spec.message), "sender": _sha(spec.sender or ""),
               "plan": _sha(json.dumps(plan, sort_keys=True, default=str))}
    if spec.extra or spec.personal:
        # The provider's options, the budget, the kind of campaign: another value is another campaign.
        content["options"] = _sha(json.dumps({"personal": spec.personal, **spec.extra}, sort_keys=True))
    return content


def _plan_json(plan: spreading.PlanOptions | None) -> dict[str, Any]:
    if plan is None:
        return {}
    d = asdict(plan)
    if plan.window is not None:
        d["window"] = f"{plan.window.h1}-{plan.window.h2}"
    return d
