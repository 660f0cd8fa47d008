"""The producer's Python API — the one function apps call to enqueue a campaign.

    from worker import enqueue_campaign
    receipt = enqueue_campaign(["+79001234567", "79001234568"], "Your code: 4711", sender="MyShop")
    print(receipt.campaign_id, receipt.total, receipt.invalid)

Recipients are streamed (any iterable, a generator of a million numbers included), validated and
deduplicated; invalid ones are reported through ``on_rejected`` and never stop the valid ones. The
campaign is sent by the workers (``celery -A worker worker``) as soon as beat dispatches it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import quote

import redis

from scheduler import spreading
from scheduler.campaigns import Campaigns, CampaignSpec, Receipt
from scheduler.intake import Rejected, iter_phones_file, iter_recipients
from scheduler.keys import Keys
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


def batch_size_for(message: str, parts: int, *, setting: int | None = None) -> int:
    """Recipients per request for this message: the setting, else the default shrunk for long texts;
    always within :data:`MAX_REQUEST_BYTES`."""
    base = setting if setting else min(DEFAULT_BATCH_SIZE, max(50, _MAX_PARTS_PER_BATCH // max(parts, 1)))
    text_bytes = len(quote(message, safe=""))
    cap = max(1, (MAX_REQUEST_BYTES - text_bytes - 2048) // _BYTES_PER_RECIPIENT)
    return max(1, min(base, cap))


def build_plan(*, period_h: float | None = None, freq_min: int | None = None, at: str | None = None,
               tz_h: float | None = None, window: str | None = None, recipient_time: bool = False,
               now_ms: int | None = None) -> spreading.PlanOptions | None:
    """The spreading options of the CLI flags (``PlanError`` with a one-line reason when bad)."""
    if period_h is None and freq_min is None and at is None and window is None and not recipient_time:
        return None
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    start = spreading.parse_start(at, tz_h=tz_h, now_ms=now) if at else now
    win = spreading.parse_window(window) if window else None
    return spreading.PlanOptions(period_h=period_h, freq_min=freq_min, start_ms=start, window=win,
                                 tz_h=tz_h or 0.0, recipient_time=recipient_time)


def enqueue_campaign(recipients: Iterable[str | tuple[int, str]], message: str, *, sender: str | None = None,
                     campaign_id: str | None = None, period_h: float | None = None,
                     freq_min: int | None = None, at: str | None = None, tz_h: float | None = None,
                     window: str | None = None, recipient_time: bool = False,
                     batch_size: int | None = None, on_rejected: Callable[[Rejected], None] | None = None,
                     settings: Settings | None = None, redis_conn: redis.Redis | None = None) -> Receipt:
    """Validate and enqueue a campaign; returns its :class:`~scheduler.campaigns.Receipt`.

    ``ValueError`` (one line) for a bad message, sender or plan — raised before anything is queued.
    Enqueueing again with the same ``campaign_id`` returns the existing campaign.
    """
    s = settings or get_settings()
    segments = validate_message(message)
    if sender is not None:
        sender = validate_sender(sender)
    now = int(time.time() * 1000)
    plan = build_plan(period_h=period_h, freq_min=freq_min, at=at, tz_h=tz_h, window=window,
                      recipient_time=recipient_time, now_ms=now)
    size = batch_size_for(message, segments.parts, setting=batch_size or s.smsc_batch_size)
    spec = CampaignSpec(message=message, parts=segments.parts, account=s.account, sender=sender,
                        batch_size=size, plan=plan, campaign_id=campaign_id)
    conn = redis_conn or redis_client(s.redis_url)
    return Campaigns(conn, Keys(s.smsc_namespace)).create(spec, iter_recipients(_numbered(recipients)),
                                                          now_ms=now, on_rejected=on_rejected)


def enqueue_file(path: str | os.PathLike[str], message: str, **kwargs: object) -> Receipt:
    """:func:`enqueue_campaign` from a phones file (one number per line, ``#`` comments), streamed."""
    return enqueue_campaign(iter_phones_file(path), message, **kwargs)  # type: ignore[arg-type]


def _numbered(items: Iterable[str | tuple[int, str]]) -> Iterator[tuple[int, str]]:
    for i, item in enumerate(items, start=1):
        yield item if isinstance(item, tuple) else (i, item)
