"""A status's request id and phone to the batch and report row it is about (no Redis of its own).

The provider names a message by the request id we gave it (``<cid>-<n>``, or ``<tag>.<cid>-<n>`` in a
namespace other than the default: :func:`worker.sending.request_id`) and the phone as it stores it (our
number auto-corrected, without ``+``: :mod:`worker.smsc.phones`). :class:`RowIndex` maps a batch's
report rows to those spellings once per batch and keeps the most recent batches.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from scheduler.delivery import Row
from scheduler.keys import CAMPAIGN_ID_RE, batch_ref
from worker.smsc.phones import echo_index

__all__ = ["RowIndex", "ref_of"]

_DEFAULT_NAMESPACE = "smsc"


@functools.lru_cache(maxsize=64)
def _tag(namespace: str) -> str:
    return hashlib.sha256(namespace.encode()).hexdigest()[:6] + "."


def ref_of(request_id: str, *, namespace: str = _DEFAULT_NAMESPACE) -> str | None:
    """The batch (``cid:n``) of our request id in this namespace, or ``None`` when it is not ours."""
    body = request_id.strip()
    if namespace != _DEFAULT_NAMESPACE:
        tag = _tag(namespace)
        if not body.startswith(tag):
            return None
        body = body[len(tag):]
    cid, dash, n = body.rpartition("-")
    if not dash or not n.isdigit() or not CAMPAIGN_ID_RE.match(cid):
        return None
    return batch_ref(cid, int(n))


class RowIndex:
    """``{provider's spelling: (row, our phone)}`` per batch, the ``max_batches`` most recent kept."""

    def __init__(self, max_batches: int = 256) -> None:
        self.max_batches = max_batches
        self._batches: OrderedDict[str, tuple[int, dict[str, tuple[int, str]]]] = OrderedDict()

    def known(self, ref: str) -> int | None:
        """How many rows the index of ``ref`` was built from (``None``: not indexed)."""
        hit = self._batches.get(ref)
        return None if hit is None else hit[0]

    def put(self, ref: str, rows: Sequence[Row]) -> None:
        sent = [r for r in rows if r.state == "sent"]
        spellings = echo_index(r.phone for r in sent)
        by_phone = {r.phone: r.row for r in sent}
        index = {digits: (by_phone[ours], ours) for digits, ours in spellings.items()}
        self._batches[ref] = (len(rows), index)
        self._batches.move_to_end(ref)
        while len(self._batches) > self.max_batches:
            self._batches.popitem(last=False)

    def find(self, ref: str, phone: str) -> tuple[int, str] | None:
        """``(row, our phone)`` of the provider's ``phone`` in batch ``ref``, if indexed."""
        hit = self._batches.get(ref)
        if hit is None:
            return None
        self._batches.move_to_end(ref)
        digits = phone.strip().lstrip("+")
        return hit[1].get(digits)
