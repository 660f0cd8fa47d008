"""Delivery state per recipient, in flat memory: one compact record per batch, counters per campaign.

What a sent recipient became at the phone comes from the provider's status codes (pushed to the
status receiver, or polled through status.php): this module keeps them in Redis, atomically, by code —
what the codes *mean* (states, words) is the runtime's (:mod:`worker.delivery.states`).

**The record** (``Keys.delivery_record``): 8 bytes per row of the batch's report rows, in their order
(rows are only appended, so a row's index never changes): code, err, time of the last change, flags
(layout in ``lua/delivery/_lib.lua``). A million recipients cost ~8 MB of records — no key per recipient.
Codes: :data:`CODE_NONE` (not a sent row), :data:`CODE_PENDING` (sent, no status yet),
:data:`CODE_UNKNOWN` (the horizon passed without a final status), else ``status + 10``.

**Tracking**: a batch's rows that the record does not hold yet are read from the batch's ``rows`` tail
by every script that touches the batch (:meth:`DeliveryStore.apply`, :meth:`DeliveryStore.discover`),
so a status pushed before the poller has seen the batch is never lost.

**Schedule** (``Keys.delivery_due``): each tracked batch is due for a status.php poll at steps that
back off as it ages (:class:`DeliveryPolicy`); at its horizon it is polled once more and what is still
pending becomes unknown (:meth:`DeliveryStore.expire`).

**The campaign** (:meth:`DeliveryStore.finish`): ``delivered_final`` once the ledger has ended it, every
sent row is tracked and none is pending. Webhook events (final states per batch, the campaign's
transitions) are queued in the outbox keys ``{ns}:wh:*`` (see :mod:`worker.delivery.webhooks`).

One clock: every script decides by the server's ``TIME``; ``now_ms`` only for tests that step time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple, cast

import redis

from scheduler.keys import Keys, batch_ref, split_ref
from scheduler.keys import text as _s
from scheduler.scripts import clock_arg

__all__ = [
    "APPLIED",
    "CODE_NONE",
    "CODE_PENDING",
    "CODE_UNKNOWN",
    "FINAL",
    "IGNORED",
    "NOT_A_SENT_ROW",
    "NOT_KNOWN_YET",
    "DeliveryPolicy",
    "DeliveryStore",
    "Event",
    "Row",
    "RowDelivery",
    "Status",
    "apply_call",
    "code_of",
    "counts_of",
    "decode_record",
    "is_final",
    "is_pending",
    "parse_rows",
    "script_source",
    "status_of",
]

CODE_NONE, CODE_PENDING, CODE_UNKNOWN = 0, 1, 2
#: What :meth:`DeliveryStore.apply` answers per status.
NOT_A_SENT_ROW, APPLIED, IGNORED, FINAL, NOT_KNOWN_YET = 0, 1, 2, 3, 4
_RECORD = struct.Struct(">BBIBB")  # code, err, ts (u32, BITFIELD is big-endian), polls (unused), flags
_SCRIPTS = ("apply", "claim", "expire", "finish", "cut")  # scheduler/lua/delivery/<name>.lua


def code_of(status: int) -> int:
    """The record's code of a provider status (-2..25 -> 8..35)."""
    return status + 10


def status_of(code: int) -> int | None:
    """The provider status of a record code; ``None`` for the codes of our own (none, pending, unknown)."""
    return code - 10 if code >= 8 else None


def is_final(code: int) -> bool:
    return code >= 8 and code not in (9, 10)


def is_pending(code: int) -> bool:
    return code in (CODE_PENDING, 9, 10)


@dataclass(frozen=True)
class DeliveryPolicy:
    """When a tracked batch is polled: ``steps_s`` after it was first tracked (each at least a minute
    after the one before, so the same mass request never repeats within the provider's minute), then
    once more at ``horizon_s`` — after which what is still pending is unknown. ``poll`` false (statuses
    come by push): only the horizon's poll, which recovers what the push lost."""

    #: 24 h: the provider's longest message lifetime (``valid`` is 1..24 h); the issue's default.
    horizon_s: float = 86_400.0
    steps_s: tuple[float, ...] = (30, 90, 180, 360, 600, 1200, 1800, 3600, 7200, 14400, 28800, 57600)
    poll: bool = True

    def __post_init__(self) -> None:
        if self.horizon_s <= 0 or any(s <= 0 for s in self.steps_s) or list(self.steps_s) != sorted(self.steps_s):
            raise ValueError("a delivery policy needs a horizon > 0 and rising steps > 0")

    @property
    def first_poll_s(self) -> float:
        return self.steps_s[0] if self.poll and self.steps_s else self.horizon_s

    def next_poll_in_s(self, age_s: float) -> float:
        """Seconds from now to the next poll of a batch ``age_s`` old (0 or less: the horizon is due)."""
        if self.poll:
            for step in self.steps_s:
                if step > age_s + 0.001 and step < self.horizon_s:
                    return step - age_s
        return self.horizon_s - age_s


class Row(NamedTuple):
    """One report row of a batch: its place in the rows (``row``), our phone, its ledger state, the provider id."""

    row: int
    phone: str
    state: str
    msg_id: str


class RowDelivery(NamedTuple):
    code: int
    err: int
    ts: int
    flags: int


class Status(NamedTuple):
    """One status to apply: the batch (ref), the row, the provider's status, err and time (Unix s), and
    our phone (carried into the webhook)."""

    ref: str
    row: int
    status: int
    err: int
    ts: int
    phone: str


class Event(NamedTuple):
    """A webhook event taken for posting: its id, its frozen content, attempts so far, first queued (ms)."""

    id: str
    value: str
    attempts: int
    first_ms: int


def parse_rows(raw: bytes | str | None) -> list[Row]:
    """A batch's ``rows`` (``phone;state;id;parts;cost;code;reason\\n`` each) as rows."""
    out = []
    for i, line in enumerate(_s(raw or b"").splitlines()):
        phone, state, msg_id = [*line.split(";", 3), "", "", ""][:3]
        out.append(Row(i, phone, state, msg_id))
    return out


def decode_record(raw: bytes | str | None, n: int) -> list[RowDelivery]:
    """The first ``n`` entries of a delivery record (missing ones are code 0)."""
    data = (raw.encode("latin-1") if isinstance(raw, str) else raw or b"").ljust(n * 8, b"\0")
    return [RowDelivery(*_unpack(data, i)) for i in range(n)]


def _unpack(data: bytes, i: int) -> tuple[int, int, int, int]:
    code, err, ts, _, flags = _RECORD.unpack_from(data, i * 8)
    return code, err, ts, flags


def script_source(name: str) -> str:
    """A delivery script as sent to Redis: ``lua/_lib.lua``, ``lua/delivery/_lib.lua``, then
    ``lua/delivery/<name>.lua`` (a folder of their own: the ledger's and guards' scripts are listed in
    :data:`scheduler.scripts.SCRIPT_NAMES`, these are registered here)."""
    if name not in _SCRIPTS:
        raise ValueError(f"no delivery script {name!r}")
    folder = resources.files("scheduler") / "lua"
    parts = (folder / "_lib.lua", folder / "delivery" / "_lib.lua", folder / "delivery" / f"{name}.lua")
    return "\n".join(p.read_text(encoding="utf-8") for p in parts)


def apply_call(keys: Keys, statuses: Sequence[Status], *, track: Sequence[str] = (), default_webhook: bool,
               first_poll_ms: int, now_ms: int | None = None) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of ``lua/delivery/apply.lua`` for ``statuses`` (and the batches ``track`` to track even
    without a status): one group per batch."""
    groups: dict[str, int] = {}
    for ref in [*track, *(st.ref for st in statuses)]:
        groups.setdefault(ref, len(groups) + 1)
    k: list[str] = [keys.webhook_new, keys.delivery_due]
    a: list[str | int] = ["" if now_ms is None else int(now_ms), "1" if default_webhook else "0", int(first_poll_ms),
                          len(groups)]
    for ref in groups:
        cid, n = split_ref(ref)
        k += [keys.batch(ref), keys.delivery_record(ref), keys.delivery(cid)]
        a += [ref, n]
    for st in statuses:
        phone = st.phone.replace(",", "").replace(";", "")  # the outbox's separators
        a.append(f"{groups[st.ref]},{st.row},{st.status},{max(st.err, 0)},{max(int(st.ts), 0)},{phone}")
    return k, a



class DeliveryStore:
    """The delivery side of one namespace in Redis (sync; the push receiver uses :func:`apply_call`
    with an asyncio client)."""

    def __init__(self, client: redis.Redis, keys: Keys, *, policy: DeliveryPolicy | None = None,
                 default_webhook: bool = False) -> None:
        self.r = client
        self.keys = keys
        self.policy = policy or DeliveryPolicy()
        self.default_webhook = default_webhook
        self._scripts = {name: client.register_script(script_source(name)) for name in _SCRIPTS}

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self._scripts[name](keys=list(keys), args=list(args))

    # -- statuses in ------------------------------------------------------------------------------
    def apply(self, statuses: Sequence[Status], *, track: Sequence[str] = (), now_ms: int | None = None) -> list[int]:
        """Apply statuses (one script); per status :data:`APPLIED`, :data:`FINAL`, :data:`IGNORED`,
        :data:`NOT_A_SENT_ROW` or :data:`NOT_KNOWN_YET`."""
        if not statuses and not track:
            return []
        k, a = apply_call(self.keys, statuses, track=track, default_webhook=self.default_webhook,
                          first_poll_ms=int(self.policy.first_poll_s * 1000), now_ms=now_ms)
        return [int(x) for x in self._run("apply", k, a)]

    def rows(self, ref: str) -> list[Row]:
        return parse_rows(self.r.hget(self.keys.batch(ref), "rows"))

    def record(self, ref: str, n: int) -> list[RowDelivery]:
        return decode_record(self.r.get(self.keys.delivery_record(ref)), n)

    def discover_grown(self, *, most: int = 20_000, now_ms: int | None = None) -> int:
        """Track the batches whose rows grew since they were last tracked (``Keys.delivery_grown``: every
        script that appends rows marks its batch there, and tracking takes it out in the same script that
        reads the rows, so a growth is never missed); up to ``most``; returns how many were read.

        The tick's cost follows what was sent since the last one, not the size of the campaigns: reading
        every batch (:meth:`discover`) every 2 s was O(batches) a tick, 10,000 reads a tick for a
        1,000,000-recipient campaign in batches of 100."""
        done = 0
        while done < most:
            got = cast(list[bytes], self.r.srandmember(self.keys.delivery_grown, min(500, most - done)))
            refs = [_s(x) for x in got]
            if not refs:
                break
            for lo in range(0, len(refs), 100):
                self.apply([], track=refs[lo:lo + 100], now_ms=now_ms)
            done += len(refs)
            if len(refs) < 500:
                break
        return done

    def discover(self, cid: str, *, now_ms: int | None = None) -> int:
        """Track every batch of the campaign whose rows grew since it was last tracked; returns how many
        batches were tracked now. It reads every batch: the fallback of :meth:`discover_grown` (rows written
        before the grown set existed, or by a path that does not mark it), once a minute."""
        n = int(self.r.hget(self.keys.campaign(cid), "batches") or 0)
        dkey = self.keys.delivery(cid)
        grown: list[str] = []
        for lo in range(0, n, 500):
            refs = [batch_ref(cid, i) for i in range(lo, min(n, lo + 500))]
            pipe = self.r.pipeline(transaction=False)
            for ref in refs:
                pipe.hstrlen(self.keys.batch(ref), "rows")
            pipe.hmget(dkey, [f"b{split_ref(ref)[1]}" for ref in refs])
            *lengths, metas = pipe.execute()
            for ref, length, meta in zip(refs, lengths, metas, strict=True):
                seen = int(_s(meta).split(",", 1)[0]) if meta else 0
                if int(length) > seen:
                    grown.append(ref)
        for lo in range(0, len(grown), 100):
            self.apply([], track=grown[lo:lo + 100], now_ms=now_ms)
        return len(grown)

    # -- the polling schedule ---------------------------------------------------------------------
    def claim_polls(self, *, max_batches: int, lease_ms: int, now_ms: int | None = None) -> list[str]:
        """Batches due for a status.php poll, taken for ``lease_ms``."""
        got = self._run("claim", [self.keys.delivery_due], [clock_arg(now_ms), int(lease_ms), int(max_batches)])
        return [_s(x) for x in got]

    def first_tracked_ms(self, ref: str) -> int:
        cid, n = split_ref(ref)
        meta = self.r.hget(self.keys.delivery(cid), f"b{n}")
        return int(_s(meta).split(",")[2]) if meta else 0

    def reschedule(self, ref: str, due_ms: int) -> None:
        self.r.zadd(self.keys.delivery_due, {ref: int(due_ms)})

    def unschedule(self, ref: str) -> None:
        self.r.zrem(self.keys.delivery_due, ref)

    def expire(self, ref: str, *, now_ms: int | None = None) -> int:
        """The batch's horizon passed: its pending rows become unknown; returns how many."""
        cid, n = split_ref(ref)
        k = self.keys
        return int(self._run("expire",
                             [k.webhook_new, k.delivery_due, k.batch(ref), k.delivery_record(ref), k.delivery(cid)],
                             [clock_arg(now_ms), "1" if self.default_webhook else "0", ref, n]))

    # -- the campaign -----------------------------------------------------------------------------
    def finish(self, cid: str, *, now_ms: int | None = None) -> tuple[str, int, int, int]:
        """Move the campaign's delivery state on: ``(state, pending, tracked, sent)``."""
        k = self.keys
        state, pending, tracked, sent = self._run(
            "finish", [k.campaign(cid), k.delivery(cid), k.webhook_events, k.webhook_due, k.webhook_tries],
            [clock_arg(now_ms), "1" if self.default_webhook else "0", cid])
        return _s(state), int(pending), int(tracked), int(sent)

    def fields(self, cid: str) -> dict[str, str]:
        return {_s(f): _s(v) for f, v in self.r.hgetall(self.keys.delivery(cid)).items()}

    def counts(self, cid: str) -> dict[int, int]:
        """Tracked rows by code (zero counts left out)."""
        return counts_of(self.fields(cid))

    def set_webhook(self, cid: str, url: str | None) -> None:
        """The campaign's webhook URL (``None``: none, the default applies)."""
        if url:
            self.r.hset(self.keys.delivery(cid), "webhook", url)
        else:
            self.r.hdel(self.keys.delivery(cid), "webhook")

    def webhook_url(self, cid: str) -> str | None:
        url = self.r.hget(self.keys.delivery(cid), "webhook")
        return _s(url) if url else None

    def report(self, cid: str) -> Iterator[tuple[list[str], RowDelivery | None]]:
        """Every recipient's report row with its delivery (``None`` for a pending recipient), in the order of
        :meth:`scheduler.campaigns.Campaigns.report_rows`."""
        n = int(self.r.hget(self.keys.campaign(cid), "batches") or 0)
        for lo in range(0, n, 100):
            pipe = self.r.pipeline(transaction=False)
            for i in range(lo, min(n, lo + 100)):
                ref = batch_ref(cid, i)
                pipe.hmget(self.keys.batch(ref), "rows", "phones")
                pipe.get(self.keys.delivery_record(ref))
            res = pipe.execute()
            for j in range(0, len(res), 2):
                rows, phones = res[j]
                lines = _s(rows or b"").splitlines()
                record = decode_record(res[j + 1], len(lines))
                for line, d in zip(lines, record, strict=True):
                    yield line.split(";", 6), d
                for phone in filter(None, _s(phones or b"").split(",")):
                    yield [phone, "pending", "", "", "", "", ""], None

    # -- the webhook outbox -----------------------------------------------------------------------
    def cut_events(self, *, max_batches: int = 500, max_items: int = 500, now_ms: int | None = None) -> int:
        k = self.keys
        return int(self._run("cut", [k.webhook_new, k.webhook_events, k.webhook_due, k.webhook_tries,
                                             k.webhook_seq], [clock_arg(now_ms), int(max_batches), int(max_items)]))

    def claim_events(self, *, max_events: int, lease_ms: int, now_ms: int | None = None) -> list[Event]:
        k = self.keys
        ids = [_s(x) for x in self._run("claim", [k.webhook_due], [clock_arg(now_ms), int(lease_ms),
                                                                           int(max_events)])]
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(k.webhook_events, ids)
        pipe.hmget(k.webhook_tries, ids)
        values, tries = pipe.execute()
        out = []
        for eid, value, t in zip(ids, values, tries, strict=True):
            if value is None:  # acknowledged meanwhile by another sender
                self.r.zrem(k.webhook_due, eid)
                continue
            attempts, first = [*_s(t).split(","), "0", "0"][:2] if t else ("0", "0")
            out.append(Event(eid, _s(value), int(attempts), int(first)))
        return out

    def event_done(self, event_id: str) -> None:
        k = self.keys
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(k.webhook_due, event_id)
        pipe.hdel(k.webhook_events, event_id)
        pipe.hdel(k.webhook_tries, event_id)
        pipe.execute()

    def event_retry(self, event: Event, *, due_ms: int) -> None:
        k = self.keys
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(k.webhook_tries, event.id, f"{event.attempts + 1},{event.first_ms}")
        pipe.zadd(k.webhook_due, {event.id: int(due_ms)}, xx=True)
        pipe.execute()

    def event_dead(self, event: Event, *, now_ms: int) -> None:
        """Given up: out of the schedule, into the dead ZSET (its content is kept for an operator)."""
        k = self.keys
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(k.webhook_due, event.id)
        pipe.zadd(k.webhook_dead, {event.id: int(now_ms)})
        pipe.hset(k.webhook_tries, event.id, f"{event.attempts + 1},{event.first_ms}")
        pipe.execute()

    def outbox(self) -> dict[str, int]:
        """What the webhook outbox holds: events waiting, dead, batches with final states not cut yet."""
        k = self.keys
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(k.webhook_due)
        pipe.zcard(k.webhook_dead)
        pipe.hlen(k.webhook_new)
        waiting, dead, uncut = pipe.execute()
        return {"waiting": int(waiting), "dead": int(dead), "uncut_batches": int(uncut)}


def counts_of(fields: Mapping[str, str]) -> dict[int, int]:
    """The ``c<code>`` counters of a campaign's delivery HASH, as ``{code: n}`` (zeros left out)."""
    out = {}
    for f, v in fields.items():
        if f.startswith("c") and f[1:].isdigit() and int(v):
            out[int(f[1:])] = int(v)
    return out
