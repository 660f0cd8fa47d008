"""The dry run of an enqueue: what it would queue — counts, due times, batches — without queueing.

The same dedup (:func:`scheduler.enqueue.deduplicated`, on a temporary seen SET deleted at the end)
and the same planner (:class:`scheduler.spreading.Plan`) as :meth:`scheduler.enqueue.Enqueue.create`,
so the two cannot disagree. Every instant is the Redis server's clock unless a test passes ``now_ms``.
"""

from __future__ import annotations

import secrets
from array import array
from collections.abc import Callable, Iterable
from typing import Any

import redis

from scheduler import spreading
from scheduler.enqueue import CampaignSpec, IntakeCounts, Item, PersonalBatcher, deduplicated
from scheduler.intake import Rejected
from scheduler.keys import Keys
from scheduler.keys import text as _s
from scheduler.ledger import server_time_ms
from scheduler.scripts import Scripts

__all__ = ["preview"]


def _layout(sizes: list[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for size in sizes:
        out.append((start, size))
        start += size
    return out

#: The dedup SET of a dry run: the preview needs it for seconds.
_PREVIEW_SEEN_TTL_MS = 600_000


def preview(client: redis.Redis, keys: Keys, spec: CampaignSpec, recipients: Iterable[Item],
            *, scripts: Scripts | None = None, now_ms: int | None = None,
            on_rejected: Callable[[Rejected], None] | None = None,
            on_duplicate: Callable[[int, str], None] | None = None,
            stopped: Callable[[list[str]], list[bool]] | None = None,
            on_suppressed: Callable[[int, str], None] | None = None,
            each_new: Callable[[list[Any]], None] | None = None) -> dict[str, Any]:
    """What an enqueue of ``spec`` and ``recipients`` would queue: counts, due times, batches.

    ``groups`` lists one row per group and due time: ``{"group", "recipients", "due_ms"}``, ordered
    by due time; ``recipient_offsets_min`` counts the recipients per UTC offset when the window is read
    in each recipient's zone (else None).
    """
    scripts = scripts or Scripts(client)
    now = now_ms if now_ms is not None else server_time_ms(client)
    probe = spreading.Plan(spec.plan, 0, now)
    offsets: array[int] = array("h")
    by_offset: dict[int, int] = {}
    seen = keys.seen("_pv" + secrets.token_hex(8))
    counts = IntakeCounts()

    def ask(joined: str) -> str:
        return _s(scripts.intake(keys=[seen], args=[joined, _PREVIEW_SEEN_TTL_MS]))

    batcher = PersonalBatcher(spec) if spec.personal else None
    sizes: list[int] = []
    try:
        for new in deduplicated(recipients, ask, counts, on_rejected=on_rejected, on_duplicate=on_duplicate,
                                stopped=stopped, on_suppressed=on_suppressed):
            if each_new is not None:
                each_new(new)
            for e in new:
                phone = e if isinstance(e, str) else e.phone
                zone = None if isinstance(e, str) else getattr(e, "tz_h", None)
                if batcher is not None and not isinstance(e, str):
                    sizes += [len(b.phones) for b in batcher.add(e.phone, e.text, e.sender, zone)]
                if probe.per_recipient:
                    off = round(zone * 60) if zone is not None else probe.offset_of(phone)
                    offsets.append(off)
                    by_offset[off] = by_offset.get(off, 0) + 1
    finally:
        client.delete(seen)
    total = counts.total
    layout: list[tuple[int, int]] = []  # (start, size) of every batch, as the enqueue writes them
    if batcher is not None:
        sizes += [len(b.phones) for b in batcher.finish()]
        counts.sms = batcher.sms
        layout = _layout(sizes)
    else:
        counts.sms = total * spec.parts
        layout = [(start, min(spec.batch_size, total - start)) for start in range(0, total, spec.batch_size)]
    plan = spreading.Plan(spec.plan, total, now)
    rows: dict[tuple[int, int], int] = {}
    batches = 0
    for start, size in layout:
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
        "total": total, "invalid": counts.invalid, "duplicates": counts.duplicates, "parts": spec.parts,
        "sms_estimate": counts.sms, "suppressed": counts.suppressed, "batch_size": spec.batch_size, "batches": batches,
        "groups": [{"group": g, "recipients": n, "due_ms": due} for (due, g), n in sorted(rows.items())],
        "recipient_offsets_min": dict(sorted(by_offset.items())) or None, "now_ms": now, "queued": False,
    }
