"""A campaign's budget (``max-cost``): what its requests may cost in all, never overshot.

The budget is the campaign's ``max_cost_milli`` (thousandths of the account's currency, like its
``cost_milli``, the cost recorded so far). Before a budgeted batch's request leaves, its execution
**reserves** what that request will cost (the provider's own quote for it, see :mod:`worker.costs`):
one script (``lua/budget.lua``) checks, for every worker at once, that

    spent (``cost_milli``) + every other reservation of the campaign + this estimate ≤ max

and stores the reservation, or else **pauses the campaign** in the same step, with the fields and the
shape of an operator's pause (``state`` ``paused``, ``paused_from``, ``paused_ms`` and
``pause_reason`` = ``budget: spent X + this batch Y would pass max-cost Z; …``), so that ``status``
shows the reason and, once an operator raised the budget (:meth:`Budget.set_max`), ``resume`` goes
on. The batch that was refused sends nothing: its execution gives it back, and the next begin parks
it like any batch of a paused campaign.

**Reservations** live in one HASH per campaign (``Keys.budget``: field = batch ref, value = milli).
The field is the batch's ref, so a re-run of the same batch replaces its own reservation and never
counts twice; :meth:`Budget.release` drops it once the batch's outcome (with its cost) is recorded.
Between the record and the release both count — a moment's caution, never an overshoot; done in the
record's own script the two are one step. A reservation must stay while the batch's outcome is
unknown (a request that may have been taken): its cost is not in ``cost_milli`` until status.php
settled it, and the settling execution's release drops it. A crashed execution's reservation is
replaced when its batch runs again (the sweeper brings it back); one whose batch never runs again
(the campaign was cancelled, the batch quarantined) is dropped by :meth:`Budget.release` on that path,
or else with the HASH, whose TTL (:data:`RESERVATIONS_TTL_MS`) every reserve renews: it outlives any
batch in flight, and a campaign that ends releases every reservation (an empty HASH is no key).

A campaign without a budget never needs a reservation; :meth:`Budget.reserve` then always says yes.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from scheduler.durability import wait_durable
from scheduler.enqueue import CampaignError
from scheduler.keys import Keys
from scheduler.keys import text as _s
from scheduler.scripts import Scripts, clock_arg

__all__ = ["RESERVATIONS_TTL_MS", "Budget", "Reservation"]

#: The reservations HASH lives this long after the campaign's last reserve. Far longer than any batch
#: holds a reservation (its request's deadline, or until an unknown outcome is settled: the settle
#: horizon is at most an hour), so it only ever drops leftovers of batches that will not run again.
RESERVATIONS_TTL_MS = 7 * 86_400_000


@dataclass(frozen=True)
class Reservation:
    """What :meth:`Budget.reserve` decided."""

    #: The batch may send: its estimate is reserved. False: it would pass the budget (nothing reserved).
    ok: bool
    #: The campaign's recorded cost (``cost_milli``).
    spent_milli: int
    #: What the campaign's reservations hold now (this batch's included when ``ok``).
    reserved_milli: int
    #: The budget applied (None: the campaign has none).
    max_milli: int | None = None
    #: The campaign's state after the call (``paused`` when this refusal paused it).
    state: str = ""


class Budget:
    def __init__(self, client: redis.Redis, keys: Keys, *, scripts: Scripts | None = None,
                 ttl_ms: int = RESERVATIONS_TTL_MS) -> None:
        self.r = client
        self.keys = keys
        self.scripts = scripts or Scripts(client)
        self.ttl_ms = ttl_ms

    def reserve(self, cid: str, ref: str, estimate_milli: int, *, max_milli: int | None = None,
                now_ms: int | None = None) -> Reservation:
        """Reserve ``estimate_milli`` for batch ``ref``'s request, or pause the campaign (reason
        ``budget: …``) when spent + the other reservations + this estimate would pass the budget.

        ``max_milli`` None (what sending should pass): the campaign's ``max_cost_milli``, read in the
        same script, so a budget raised by :meth:`set_max` counts at once; a value overrides it. A
        refusal that paused the campaign waits for the server's disk, as an operator's pause does.
        Raises ``CampaignError`` for an unknown campaign, ``ValueError`` for a negative amount."""
        _check_milli("estimate_milli", estimate_milli)
        if max_milli is not None:
            _check_milli("max_milli", max_milli)
        ok, spent, reserved, limit, state = self.scripts.budget(
            keys=[self.keys.campaign(cid), self.keys.budget(cid)],
            args=["reserve", clock_arg(now_ms), ref, int(estimate_milli),
                  "" if max_milli is None else int(max_milli), self.ttl_ms])
        if int(ok) < 0:
            raise CampaignError(f"no campaign with id {cid!r}")
        res = Reservation(ok=int(ok) == 1, spent_milli=int(spent), reserved_milli=int(reserved),
                          max_milli=None if int(limit) < 0 else int(limit), state=_s(state))
        if not res.ok and res.state == "paused":
            wait_durable(self.r, marker_key=self.keys.campaign(cid))
        return res

    def release(self, cid: str, ref: str) -> None:
        """Drop batch ``ref``'s reservation (its outcome and cost are recorded, or it sent nothing)."""
        self.r.hdel(self.keys.budget(cid), ref)

    def set_max(self, cid: str, max_milli: int | None) -> None:
        """Set the campaign's budget (milli; None: no budget). Raise it, then ``resume`` a campaign that
        the budget paused. Takes effect at the next reserve of any worker. Raises ``CampaignError``
        for an unknown campaign, ``ValueError`` for a negative amount."""
        if max_milli is not None:
            _check_milli("max_milli", max_milli)
        ok = self.scripts.budget(keys=[self.keys.campaign(cid), self.keys.budget(cid)],
                                 args=["max", "" if max_milli is None else int(max_milli)])[0]
        if int(ok) < 0:
            raise CampaignError(f"no campaign with id {cid!r}")

    def reserved(self, cid: str) -> dict[str, int]:
        """The campaign's reservations: batch ref -> milli (for status and tests)."""
        return {_s(k): int(v) for k, v in self.r.hgetall(self.keys.budget(cid)).items()}


def _check_milli(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number of milli >= 0, got {value!r}")
