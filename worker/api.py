"""The producer's Python API — the one function apps call to enqueue a campaign.

    from worker import enqueue_campaign
    receipt = enqueue_campaign(["+79001234567", "79001234568"], "Your code: 4711", sender="MyShop")
    print(receipt.campaign_id, receipt.total, receipt.invalid)

Recipients are streamed (any iterable of strings or whole numbers, a generator of a million numbers
included), validated and deduplicated; invalid ones are reported through ``on_rejected`` and never
stop the valid ones. The campaign is sent by the workers (``celery -A worker worker``) as soon as
beat dispatches it.

``campaign_id`` makes a retry safe: enqueueing the same id again — also while the first call is still
running, from another process — answers the one campaign (``receipt.existing``), provided the content
is the same (text, sender, plan options as given, and the recipients: the file's bytes, or the
normalized numbers of an iterable); another content under an existing id is refused with a
``CampaignError`` naming what differs. Every instant is the Redis server's clock.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import redis

from scheduler import spreading
from scheduler.campaigns import CampaignError, Campaigns, CampaignSpec, Receipt
from scheduler.delivery import DeliveryStore
from scheduler.intake import Rejected, iter_phones_file, iter_recipients, region_error
from scheduler.keys import Keys
from scheduler.ledger import server_time_ms
from worker.runtime import redis_client
from worker.settings import Settings, get_settings
from worker.smsc.encoding import validate_message, validate_sender

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_REQUEST_BYTES",
    "batch_size_for",
    "build_plan",
    "enqueue_campaign",
    "enqueue_file",
    "preview_campaign",
    "preview_file",
]

#: Recipients per send.php request when SMSC_BATCH_SIZE is not set: large enough that the per-request
#: cost (one task, one HTTP round trip, a few Redis scripts) is spread thin, small enough that an
#: unknown outcome settles with a few status requests and a request stays well under a megabyte.
DEFAULT_BATCH_SIZE = 500
#: Upper bound on one request's body; the batch shrinks for long texts so it is never exceeded.
MAX_REQUEST_BYTES = 256 * 1024
#: At most this many SMS parts at stake in one request (long texts get smaller batches).
_MAX_PARTS_PER_BATCH = 1_500
#: A recipient in a ``list`` line costs its digits, a ``+`` (``%2B``) and a comma (``%2C``).
_BYTES_PER_RECIPIENT = 22

Recipients = Iterable[str | int | tuple[int, str | int]]


def batch_size_for(message: str, parts: int, *, setting: int | None = None) -> int:
    """Recipients per request for this message: the setting, else the default shrunk for long texts;
    always within :data:`MAX_REQUEST_BYTES`."""
    base = setting if setting else min(DEFAULT_BATCH_SIZE, max(50, _MAX_PARTS_PER_BATCH // max(parts, 1)))
    text_bytes = len(quote(message, safe=""))
    cap = max(1, (MAX_REQUEST_BYTES - text_bytes - 2048) // _BYTES_PER_RECIPIENT)
    return max(1, min(base, cap))


def build_plan(*, period_h: float | None = None, freq_min: int | None = None, at: str | None = None,
               tz_h: float | None = None, window: str | None = None, recipient_time: bool = False,
               now_ms: int | None = None, refuse_past: bool = True) -> spreading.PlanOptions | None:
    """The spreading options of the CLI flags (``PlanError`` with a one-line reason when bad).

    ``at``: an empty text is an error, not "now" (say ``0``); a time more than a minute in the past
    is refused unless ``refuse_past`` is false (the provider would send at once, which is rarely what
    a past date meant). ``now_ms``: the Redis server's clock (the host's clock only when none is
    given, for a plan without Redis).
    """
    if period_h is None and freq_min is None and at is None and window is None and not recipient_time:
        return None
    # The host's clock only for a plan built without a Redis server; the API passes the server's.
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    past = spreading.PAST_GRACE_MS if refuse_past else None
    start = spreading.parse_start(at, tz_h=tz_h, now_ms=now, max_past_ms=past) if at is not None else now
    win = spreading.parse_window(window) if window is not None else None
    return spreading.PlanOptions(period_h=period_h, freq_min=freq_min, start_ms=start, window=win,
                                 tz_h=tz_h or 0.0, recipient_time=recipient_time)


def _plan_source(*, period_h: float | None, freq_min: int | None, at: str | None, tz_h: float | None,
                 window: str | None, recipient_time: bool) -> dict[str, object]:
    """The plan options as given, for the content digest (``--at +10`` retried later is the same)."""
    return {"period_h": None if period_h is None else float(period_h), "freq_min": freq_min,
            "at": None if at is None else at.strip(), "tz_h": None if tz_h is None else float(tz_h),
            "window": None if window is None else str(spreading.parse_window(window)),
            "recipient_time": recipient_time}


class _Prepared:
    """What enqueue and preview share: validated text and sender, the plan on the server's clock."""

    def __init__(self, message: str, *, sender: str | None, campaign_id: str | None, period_h: float | None,
                 freq_min: int | None, at: str | None, tz_h: float | None, window: str | None,
                 recipient_time: bool, batch_size: int | None, region: str | None, settings: Settings | None,
                 redis_conn: redis.Redis | None, on_warning: Callable[[str], None] | None) -> None:
        s = settings or get_settings()
        segments = validate_message(message)
        if sender is not None:
            sender = validate_sender(sender)
        if region is not None and (error := region_error(region)):
            raise ValueError(f"region: {error}")
        self.conn = redis_conn or redis_client(s.redis_url)
        self.now = server_time_ms(self.conn)
        self.campaigns = Campaigns(self.conn, Keys(s.smsc_namespace))
        options: dict[str, Any] = {"period_h": period_h, "freq_min": freq_min, "at": at, "tz_h": tz_h,
                                   "window": window, "recipient_time": recipient_time, "now_ms": self.now}
        try:
            plan = build_plan(**options)
        except spreading.PlanError:
            # A retry of a committed campaign whose start has passed since is the same campaign, not a
            # mistake: let the content decide (the plan options as given are what is compared).
            if campaign_id is None or not self._committed(campaign_id):
                raise
            plan = build_plan(**options, refuse_past=False)
        source = _plan_source(period_h=period_h, freq_min=freq_min, at=at, tz_h=tz_h, window=window,
                              recipient_time=recipient_time)
        size = batch_size_for(message, segments.parts, setting=batch_size or s.smsc_batch_size)
        self.spec = CampaignSpec(message=message, parts=segments.parts, account=s.account, sender=sender,
                                 batch_size=size, plan=plan, campaign_id=campaign_id, plan_source=source)
        self.region = region if region is not None else s.smsc_default_region
        if plan is not None and on_warning is not None:
            for warning in plan.warnings:
                on_warning(warning)


    def _committed(self, cid: str) -> bool:
        try:
            return self.campaigns.fields(cid).get("state", "planning") != "planning"
        except CampaignError:
            return False


def enqueue_campaign(recipients: Recipients, message: str, *, sender: str | None = None,
                     campaign_id: str | None = None, period_h: float | None = None,
                     freq_min: int | None = None, at: str | None = None, tz_h: float | None = None,
                     window: str | None = None, recipient_time: bool = False,
                     batch_size: int | None = None, on_rejected: Callable[[Rejected], None] | None = None,
                     strict: bool = False, region: str | None = None, settings: Settings | None = None,
                     redis_conn: redis.Redis | None = None, on_warning: Callable[[str], None] | None = None,
                     recipients_digest: Callable[[], str] | None = None, webhook: str | None = None) -> Receipt:
    """Validate and enqueue a campaign; returns its :class:`~scheduler.campaigns.Receipt`.

    ``ValueError`` (one line) for a bad message, sender or plan — raised before anything is queued;
    ``CampaignError`` for an id taken by another content, or (``strict``) an input with an invalid
    line. ``region``: overrides ``SMSC_DEFAULT_REGION``. Recipients are strings or whole numbers
    (``79001234567``), or ``(line_no, number)`` pairs. ``on_warning`` hears the plan's warnings (one
    line each) before the intake starts. ``receipt.durable`` says whether the commit is on the
    server's disk. ``webhook``: the campaign's webhook URL (final delivery states, completion), else
    ``SMSC_WEBHOOK_URL``.
    """
    if webhook is not None and not re.match(r"^https?://[^\s/]+", webhook):
        raise ValueError(f"--webhook {webhook!r}: give an http(s) URL")
    p = _Prepared(message, sender=sender, campaign_id=campaign_id, period_h=period_h, freq_min=freq_min, at=at,
                  tz_h=tz_h, window=window, recipient_time=recipient_time, batch_size=batch_size, region=region,
                  settings=settings, redis_conn=redis_conn, on_warning=on_warning)
    items = iter_recipients(_numbered(recipients), region=p.region)
    receipt = p.campaigns.create(p.spec, items, on_rejected=on_rejected, recipients_digest=recipients_digest,
                                 strict=strict)
    if webhook and not receipt.existing:
        DeliveryStore(p.campaigns.r, p.campaigns.keys).set_webhook(receipt.campaign_id, webhook)
    return receipt


def enqueue_file(path: str | os.PathLike[str], message: str, **kwargs: Any) -> Receipt:
    """:func:`enqueue_campaign` from a phones file (one number per line, ``#`` comments), streamed;
    the file's bytes are the recipients' content digest."""
    digest = hashlib.sha256()
    return enqueue_campaign(iter_phones_file(path, digest=digest), message,
                            recipients_digest=lambda: "file:" + digest.hexdigest(), **kwargs)


def preview_campaign(recipients: Recipients, message: str, *, sender: str | None = None,
                     period_h: float | None = None, freq_min: int | None = None, at: str | None = None,
                     tz_h: float | None = None, window: str | None = None, recipient_time: bool = False,
                     batch_size: int | None = None, on_rejected: Callable[[Rejected], None] | None = None,
                     region: str | None = None, settings: Settings | None = None,
                     redis_conn: redis.Redis | None = None,
                     on_warning: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The dry run of :func:`enqueue_campaign`: what it would queue (counts, due times, batches), by the
    same dedup and planner, on the same clock; nothing is queued (see :meth:`Campaigns.preview`)."""
    p = _Prepared(message, sender=sender, campaign_id=None, period_h=period_h, freq_min=freq_min, at=at, tz_h=tz_h,
                  window=window, recipient_time=recipient_time, batch_size=batch_size, region=region,
                  settings=settings, redis_conn=redis_conn, on_warning=on_warning)
    out = p.campaigns.preview(p.spec, iter_recipients(_numbered(recipients), region=p.region), now_ms=p.now,
                              on_rejected=on_rejected)
    out["utc_offset_min"] = spreading.Plan(p.spec.plan, 0, p.now).utc_offset_min
    return out


def preview_file(path: str | os.PathLike[str], message: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`preview_campaign` from a phones file."""
    return preview_campaign(iter_phones_file(path), message, **kwargs)


def _numbered(items: Recipients) -> Iterator[tuple[int, object]]:
    for i, item in enumerate(items, start=1):
        yield item if isinstance(item, tuple) else (i, item)
