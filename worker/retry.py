"""Retry a campaign: a follow-up campaign of the recipients that failed (listmonk's "retry failed").

    from worker.retry import retry_campaign
    receipt = retry_campaign("c1")                    # failed sends and failed deliveries
    receipt = retry_campaign("c1", codes={8, 20})     # only send error 8 / delivery status 20
    receipt = retry_campaign("c1", states={"failed", "cancelled"})

**Who is retried.** A recipient of campaign ``cid`` is selected when its outcome is one of ``states``:

- a *ledger* state, ``failed`` or ``cancelled`` (the report's ``state``), or
- for a recipient that was sent, a failed *delivery* state (the report's ``delivery_state``):
  ``expired``, ``undeliverable``, ``unreachable``, ``invalid_number``, ``prohibited``, ``no_funds``,
  ``stopped`` or ``unknown`` (no final status within the horizon).

The default (:data:`DEFAULT_STATES`) is ``failed`` + ``expired``, ``undeliverable``, ``unreachable``:
what another attempt may change. ``invalid_number`` and ``prohibited`` will fail again; ``unknown``
may well have been delivered — ask for them by name. With ``codes``, a selected recipient must also
have its send error code (the report's ``error_code``) or its delivery status (``delivery_status``)
in ``codes``. A recipient still pending, or sent and delivered (or not yet final), is never selected.

**What the follow-up keeps.** Each recipient's own text, sender and time zone (a personal campaign's
batch ``texts``/``senders``/``zones``; texts byte for byte) or the campaign's one ``message``; the
campaign's sender, its provider options (``options``), ``auto_stop``, ``allow_partial``, its send
window (``--window`` with its zone and ``--recipient-time``; not its start, period or frequency: those
times have passed) and its webhook. Not its budget: ``max_cost`` only when given (the original's was for the original's
spend). Numbers now on the stop list are left out (:attr:`RetryStats.suppressed`).

**Never twice.** The follow-up's intake deduplicates as any campaign's does, and a recipient who is
already in an earlier follow-up of the same campaign (one of its ``retries``) is left out
(:attr:`RetryStats.already_retried`): retry *that* follow-up to try its failures again
(``retry c1.r1``), so nobody gets a message from two follow-ups of one failure.

**Idempotent.** The follow-up's id is deterministic (:func:`retry_id`: ``<cid>.r<k>``, ``k`` = 1 +
the follow-ups linked so far), so an app that runs the retry again after a crash between the
enqueue and the link gets the same campaign (the enqueue of an id answers the one campaign with that
content, and a committed follow-up of ``cid`` that is not linked yet is answered as it is). The link
is two fields: ``retry_of`` on the follow-up (written at its claim, :class:`worker.api.CampaignOptions`)
and ``retries`` on the original (comma-joined ids, appended in one WATCH/MULTI transaction, never twice).

**Memory.** The original's batches are read a chunk at a time (report rows and delivery records,
then the texts of only the batches that have a selected recipient), and the follow-up's intake
streams them, so a million-recipient campaign is retried with flat memory; the earlier follow-ups'
recipients are held as a sorted array of 8 bytes each.
"""

from __future__ import annotations

import hashlib
import json
import logging
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain
from typing import Any, Final

import redis

from scheduler.campaigns import CampaignError, Campaigns, Receipt
from scheduler.delivery import DeliveryStore, decode_record, status_of
from scheduler.durability import wait_durable
from scheduler.enqueue import Item
from scheduler.intake import phone_key
from scheduler.keys import CAMPAIGN_ID_RE, Keys, batch_ref
from scheduler.keys import text as _s
from scheduler.stoplist import StopList
from worker.api import CampaignOptions, enqueue_campaign
from worker.delivery.states import state_of
from worker.rows import Row
from worker.runtime import redis_client
from worker.settings import Settings, get_settings
from worker.smsc.phones import mask_phone
from worker.smsc.requests import SendOptions

__all__ = [
    "DEFAULT_STATES",
    "DELIVERY_STATES",
    "LEDGER_STATES",
    "RetryStats",
    "parse_codes",
    "parse_states",
    "retry_campaign",
    "retry_id",
]

log = logging.getLogger(__name__)

#: Final ledger states a recipient may be retried from.
LEDGER_STATES: Final = frozenset({"failed", "cancelled"})
#: Failed final delivery states of a sent recipient (:mod:`worker.delivery.states`), and ``unknown``.
DELIVERY_STATES: Final = frozenset({"expired", "undeliverable", "unreachable", "invalid_number", "prohibited",
                                    "no_funds", "stopped", "unknown"})
#: What another attempt may change: a failed send, and a message the phone did not take (off for the
#: message's lifetime, refused by the network, not reachable). Not ``invalid_number``/``prohibited``
#: (they fail again) nor ``unknown`` (it may have been delivered).
DEFAULT_STATES: Final = frozenset({"failed", "expired", "undeliverable", "unreachable"})
#: Batches read per round trip (each: its report rows and its delivery record, ~8 bytes a row).
_CHUNK = 100
#: Follow-up ids tried past the linked ones before giving up (ids taken by campaigns of other origins).
_MAX_ID_TRIES = 100


@dataclass
class RetryStats:
    """What a retry found: recipients whose outcome matched, those left out because an earlier
    follow-up has them or the stop list does, and those handed to the follow-up."""

    matched: int = 0
    already_retried: int = 0
    suppressed: int = 0
    selected: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"matched": self.matched, "already_retried": self.already_retried, "suppressed": self.suppressed,
                "selected": self.selected}


def parse_states(text: str | Iterable[str] | None) -> frozenset[str]:
    """``failed,cancelled`` (or an iterable of names) as a set of states; None or empty: the default.
    ``ValueError`` (one line) for a name that is not a failed state."""
    if text is None:
        return DEFAULT_STATES
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        return DEFAULT_STATES
    allowed = LEDGER_STATES | DELIVERY_STATES
    for n in names:
        if n not in allowed:
            raise ValueError(f"--states {n!r}: not a failed state; give some of "
                             f"{', '.join(sorted(LEDGER_STATES))}, {', '.join(sorted(DELIVERY_STATES))}")
    return frozenset(names)


def parse_codes(text: str | Iterable[int] | None) -> frozenset[int] | None:
    """``8,20`` (or an iterable of whole numbers) as a set of codes; None or empty: no code filter.
    ``ValueError`` (one line) for anything but whole numbers."""
    if text is None:
        return None
    if not isinstance(text, str):
        return frozenset(int(c) for c in text) or None
    out: set[int] = set()
    for part in text.split(","):
        p = part.strip()
        if not p:
            continue
        try:
            out.add(int(p))
        except ValueError:
            raise ValueError(f"--codes {p!r}: give the provider's codes as whole numbers, e.g. 8,20") from None
    return frozenset(out) or None


def retry_id(cid: str, k: int) -> str:
    """The id of follow-up number ``k`` of ``cid``: ``<cid>.r<k>``; where that is longer than a campaign
    id may be (24 characters), ``r`` + 12 hex digits of the original's id digest + ``.<k>`` — still the
    same for every run, so a retried retry finds its campaign."""
    plain = f"{cid}.r{k}"
    if CAMPAIGN_ID_RE.match(plain):
        return plain
    return f"r{hashlib.sha256(cid.encode()).hexdigest()[:12]}.{k}"


def retry_campaign(cid: str, *, codes: Iterable[int] | None = None, states: Iterable[str] | None = None,
                   settings: Settings | None = None, redis_conn: redis.Redis | None = None,
                   campaign_id: str | None = None, max_cost: Decimal | None = None,
                   allow_partial: bool | None = None, stats: RetryStats | None = None) -> Receipt | None:
    """Enqueue the follow-up of campaign ``cid`` (see the module docstring); its receipt, or None when
    no recipient is left to retry (``stats`` then says why).

    ``states``: :data:`DEFAULT_STATES` when None; ``codes``: no code filter when None. ``campaign_id``:
    the follow-up's id (default :func:`retry_id`); the same id with the same content answers the one
    campaign. ``max_cost``: the follow-up's budget (none by default: the original's is not copied).
    ``allow_partial``: the original's setting when None. ``CampaignError`` (one line) for a campaign that
    does not exist or is still being enqueued (``planning``), and whatever the enqueue refuses;
    ``ValueError`` for a bad state name.
    """
    s = settings or get_settings()
    want_states, want_codes = parse_states(states), parse_codes(codes)
    conn = redis_conn or redis_client(s.redis_url)
    keys = Keys(s.smsc_namespace)
    camps = Campaigns(conn, keys)
    f = camps.fields(cid)
    if f.get("state", "planning") == "planning":
        raise CampaignError(f"campaign {cid} is still being enqueued (planning): nothing of it was sent; "
                            "retry it once it is queued")
    linked = _split_ids(f.get("retries"))
    new_id = campaign_id or _next_retry_id(camps, cid, linked)
    found = _answer_existing(camps, cid, new_id)
    if found is not None:
        _link(conn, keys, cid, new_id)
        return found
    st = stats if stats is not None else RetryStats()
    excluded = _Recipients.of(conn, keys, [r for r in linked if r != new_id])
    personal = f.get("personal") == "1"
    items = _selected(conn, keys, cid, f, states=want_states, codes=want_codes, excluded=excluded,
                      stoplist=StopList(conn, keys), stats=st, personal=personal)
    first = next(items, None)
    if first is None:
        log.info("retry %s: nothing to retry (%d matched, %d already retried, %d on the stop list)",
                 cid, st.matched, st.already_retried, st.suppressed)
        return None
    options = _options(f, max_cost=max_cost, allow_partial=allow_partial, retry_of=cid)
    plan = _window_of(f.get("plan"))
    webhook = DeliveryStore(conn, keys).fields(cid).get("webhook") or None
    message = f.get("message", "")
    try:
        receipt = enqueue_campaign((), None if personal else message, template=message if personal else None,
                                   sender=f.get("sender") or None, campaign_id=new_id, options=options,
                                   settings=s, redis_conn=conn, webhook=webhook,
                                   _items_override=chain([first], items), **plan)
    except CampaignError:
        # Another run of this retry committed the id first (the original moved on meanwhile, so its
        # content differs from ours): that campaign is the follow-up.
        found = _answer_existing(camps, cid, new_id)
        if found is None:
            raise
        receipt = found
    _link(conn, keys, cid, receipt.campaign_id)
    log.info("retry %s: follow-up %s with %d recipients (%d already retried, %d on the stop list)",
             cid, receipt.campaign_id, receipt.total, st.already_retried, st.suppressed)
    return receipt


# -- the follow-up's id and the link -------------------------------------------------------------------
def _split_ids(value: str | None) -> list[str]:
    return [x for x in (value or "").split(",") if x]


def _next_retry_id(camps: Campaigns, cid: str, linked: Sequence[str]) -> str:
    """The first :func:`retry_id` from ``len(linked) + 1`` that is free, or a follow-up of ``cid`` that
    is not linked yet (a run that crashed before its link); ids taken by other campaigns are skipped."""
    k = len(linked) + 1
    for _ in range(_MAX_ID_TRIES):
        candidate = retry_id(cid, k)
        raw = camps.r.hmget(camps.keys.campaign(candidate), "state", "retry_of")
        if raw[0] is None or (_s(raw[1] or b"") == cid and candidate not in linked):
            return candidate
        k += 1
    raise CampaignError(f"campaign {cid}: no free follow-up id after {retry_id(cid, k)}; give one with --campaign-id")


def _answer_existing(camps: Campaigns, cid: str, new_id: str) -> Receipt | None:
    """The receipt of ``new_id`` if it is a committed follow-up of ``cid``; None otherwise (absent,
    being enqueued, or another campaign: the enqueue decides those)."""
    raw = camps.r.hgetall(camps.keys.campaign(new_id))
    f = {_s(k): _s(v) for k, v in raw.items()}
    if not f or f.get("state", "planning") == "planning" or f.get("retry_of") != cid:
        return None

    def num(name: str) -> int:
        return int(f.get(name) or 0)

    total, parts = num("total"), num("parts")
    return Receipt(new_id, total, num("invalid"), num("duplicates"), parts, num("batches"), num("groups"),
                   num("first_due_ms"), num("last_due_ms"), existing=True,
                   sms_estimate=num("sms_estimate") or total * parts, suppressed=num("suppressed"))


def _link(conn: redis.Redis, keys: Keys, cid: str, new_id: str) -> None:
    """Append ``new_id`` to the original's ``retries`` once (WATCH/MULTI: a concurrent retry or a
    worker's counter update makes it run again), then wait for the disk like a control."""
    ckey = keys.campaign(cid)

    def append(pipe: Any) -> None:
        current, exists = pipe.hget(ckey, "retries"), pipe.exists(ckey)
        ids = _split_ids(_s(current) if current is not None else "")
        pipe.multi()
        if exists and new_id not in ids:
            pipe.hset(ckey, "retries", ",".join([*ids, new_id]))

    conn.transaction(append, ckey)
    wait_durable(conn, marker_key=ckey)


# -- what the follow-up keeps ----------------------------------------------------------------------------
def _options(f: dict[str, str], *, max_cost: Decimal | None, allow_partial: bool | None,
             retry_of: str) -> CampaignOptions:
    partial = f.get("allow_partial") == "1" if allow_partial is None else allow_partial
    return CampaignOptions(send=SendOptions.from_json(f.get("options")), max_cost=max_cost, allow_partial=partial,
                           auto_stop=f.get("auto_stop") == "1", retry_of=retry_of)


def _window_of(plan_json: str | None) -> dict[str, Any]:
    """The original's send window as enqueue arguments (its start, period and frequency have passed)."""
    try:
        plan = json.loads(plan_json) if plan_json else {}
    except ValueError:
        plan = {}
    if not isinstance(plan, dict) or not plan.get("window"):
        return {}
    return {"window": str(plan["window"]), "tz_h": float(plan.get("tz_h") or 0.0),
            "recipient_time": bool(plan.get("recipient_time"))}


# -- the selection ---------------------------------------------------------------------------------------
class _Recipients:
    """The recipients of some campaigns (the earlier follow-ups), as a sorted array of their dedup keys:
    8 bytes a recipient, a binary search a lookup."""

    def __init__(self, values: array[int]) -> None:
        self._a = values

    @classmethod
    def of(cls, conn: redis.Redis, keys: Keys, cids: Sequence[str]) -> _Recipients:
        a: array[int] = array("q")
        for c in cids:
            n = int(conn.hget(keys.campaign(c), "batches") or 0)
            for lo in range(0, n, _CHUNK):
                pipe = conn.pipeline(transaction=False)
                for i in range(lo, min(n, lo + _CHUNK)):
                    pipe.hmget(keys.batch(batch_ref(c, i)), "rows", "phones")
                for rows, phones in pipe.execute():
                    for line in _s(rows or b"").splitlines():
                        a.append(_key(line.split(";", 1)[0]))
                    a.extend(_key(p) for p in _s(phones or b"").split(",") if p)
        return cls(array("q", sorted(a)))

    def __contains__(self, phone: str) -> bool:
        k = _key(phone)
        i = bisect_left(self._a, k)
        return i < len(self._a) and self._a[i] == k

    def __len__(self) -> int:
        return len(self._a)


def _key(phone: str) -> int:
    """A number's dedup key as one integer (a leading 1 keeps leading zeros apart; ≤ 16 digits)."""
    return int("1" + phone_key(phone))


def _matches(state: str, code: str, dcode: int, states: frozenset[str], codes: frozenset[int] | None) -> bool:
    """Whether a report row (ledger ``state``, send error ``code``, delivery record ``dcode``) is retried."""
    if state in LEDGER_STATES:
        if state not in states:
            return False
        return codes is None or (code.lstrip("-").isdigit() and int(code) in codes)
    if state != "sent" or state_of(dcode) not in states:
        return False
    status = status_of(dcode)
    return codes is None or (status is not None and status in codes)


def _selected(conn: redis.Redis, keys: Keys, cid: str, f: dict[str, str], *, states: frozenset[str],
              codes: frozenset[int] | None, excluded: _Recipients, stoplist: StopList, stats: RetryStats,
              personal: bool) -> Iterator[Item]:
    """The follow-up's recipients in the original's batch order: ``(line_no, phone)`` for a campaign of
    one text, :class:`worker.rows.Row` (its own text, sender and time zone) for a personal one."""
    n = int(f.get("batches", 0) or 0)
    line_no = 0
    for lo in range(0, n, _CHUNK):
        refs = [batch_ref(cid, i) for i in range(lo, min(n, lo + _CHUNK))]
        pipe = conn.pipeline(transaction=False)
        for ref in refs:
            pipe.hget(keys.batch(ref), "rows")
            pipe.get(keys.delivery_record(ref))
        res = pipe.execute()
        picked: list[tuple[str, list[str]]] = []  # (ref, phones) of the batches with someone to retry
        for j, ref in enumerate(refs):
            lines = _s(res[2 * j] or b"").splitlines()
            record = decode_record(res[2 * j + 1], len(lines))
            phones = []
            for line, d in zip(lines, record, strict=True):
                row = line.split(";", 6)
                if len(row) < 6 or not _matches(row[1], row[5], d.code, states, codes):
                    continue
                stats.matched += 1
                if row[0] in excluded:
                    stats.already_retried += 1
                    continue
                phones.append(row[0])
            if phones:
                stopped = stoplist.contains(phones)
                stats.suppressed += sum(stopped)
                phones = [p for p, stop in zip(phones, stopped, strict=True) if not stop]
            if phones:
                picked.append((ref, phones))
        if not personal:
            for _, phones in picked:
                for p in phones:
                    line_no += 1
                    stats.selected += 1
                    yield (line_no, p)
            continue
        pipe = conn.pipeline(transaction=False)
        for ref, _ in picked:
            pipe.hmget(keys.batch(ref), "texts", "senders", "zones")
        for (ref, phones), (texts_raw, senders_raw, zones_raw) in zip(picked, pipe.execute(), strict=True):
            texts: dict[str, str] = json.loads(_s(texts_raw)) if texts_raw else {}
            senders: dict[str, str] = json.loads(_s(senders_raw)) if senders_raw else {}
            zones: dict[str, int] = json.loads(_s(zones_raw)) if zones_raw else {}  # UTC offset, minutes
            for p in phones:
                text = texts.get(p)
                if text is None:
                    raise CampaignError(f"campaign {cid}: batch {ref} keeps no text for a recipient "
                                        f"({mask_phone(p)}); nothing was queued")
                line_no += 1
                stats.selected += 1
                zone = zones.get(p)
                yield Row(line_no, p, text, senders.get(p) or None, None if zone is None else zone / 60)
