"""The delivery of a campaign as ``status`` and ``report`` show it (functions the CLI and API call).

- :func:`delivery_status` — the ``"delivery"`` object of ``status --json``: the funnel
  (``delivered``, ``failed``, ``pending``, ``unknown``: they add up to ``sent``), counts by state, the
  campaign's delivery state (``delivering`` / ``delivered_final``), the webhook's outbox;
- :func:`campaign_state` — ``delivered_final`` for a completed campaign whose delivery is final;
- :func:`report_rows` — the report's rows with :data:`REPORT_COLUMNS` appended;
- :func:`status_lines` — the lines ``status``/``watch`` print.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

from scheduler.campaigns import Campaigns
from scheduler.delivery import DeliveryStore, counts_of, status_of
from scheduler.health import Thresholds, health
from worker.delivery.config import DeliveryConfig
from worker.delivery.states import DELIVERED, funnel, reason_of, state_of

__all__ = ["REPORT_COLUMNS", "campaign_state", "campaign_status", "delivery_status", "report_rows", "status_lines",
           "store_for"]

REPORT_COLUMNS: Final = ("delivery_state", "delivery_status", "delivery_err", "delivery_reason", "delivered_at")


def campaign_status(settings: Any, camp: Campaigns, cid: str) -> dict[str, Any]:
    """What ``status --json`` prints and ``GET /v1/campaigns/{id}`` answers — one source for both: the
    ledger's status, its delivery, the delivery state and the health findings."""
    st = camp.status(cid, configured_cap=settings.smsc_concurrency)
    st["delivery"] = delivery_status(store_for(settings, camp), cid, sent=st["sent"])
    st["delivery_state"] = campaign_state(st["state"], st["delivery"])
    st["health"] = [f.as_dict() for f in health(camp.r, camp.keys, campaign_ids=[cid],
                                                thresholds=Thresholds.from_settings(settings))]
    return st


def store_for(settings: Any, campaigns: Campaigns) -> DeliveryStore:
    """The delivery store beside ``campaigns`` (same Redis, same namespace), with the settings' policy."""
    cfg = DeliveryConfig.from_settings(settings)
    return DeliveryStore(campaigns.r, campaigns.keys, policy=cfg.policy, default_webhook=bool(cfg.webhook_url))


def delivery_status(store: DeliveryStore, cid: str, *, sent: int) -> dict[str, Any]:
    """The campaign's delivery (``sent``: the campaign's sent counter, which the funnel adds up to)."""
    fields = store.fields(cid)
    out = funnel(counts_of(fields), sent)
    out["state"] = fields.get("state") or ("delivering" if sent else "")
    out["final_ms"] = int(fields["final_ms"]) if fields.get("final_ms") else None
    out["webhook"] = fields.get("webhook") or None
    out["outbox"] = store.outbox()
    return out


def campaign_state(ledger_state: str, delivery: dict[str, Any]) -> str:
    """The state to show: ``delivered_final`` once a completed campaign's delivery is final."""
    return "delivered_final" if ledger_state == "completed" and delivery.get("state") == "delivered_final" \
        else ledger_state


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else ""


def report_rows(store: DeliveryStore, cid: str) -> Iterator[list[str]]:
    """One row per recipient: the 7 columns of :meth:`scheduler.campaigns.Campaigns.report_rows`, then
    :data:`REPORT_COLUMNS` (empty for a recipient that was not sent)."""
    for row, d in store.report(cid):
        row = [*row, "", "", "", "", "", "", ""][:7]
        if d is None or d.code == 0:
            yield [*row, "", "", "", "", ""]
            continue
        state = state_of(d.code)
        status = status_of(d.code)
        yield [*row, state, "" if status is None else str(status), str(d.err) if status is not None else "",
               reason_of(d.code, d.err), _iso(d.ts) if state in DELIVERED else ""]


def status_lines(delivery: dict[str, Any]) -> list[str]:
    """``  delivery: delivered 9 120  failed 410  pending 70  unknown 0 (delivering)`` and the states."""
    d = delivery
    lines = [f"  delivery: delivered {d['delivered']}  failed {d['failed']}  pending {d['pending']}  "
             f"unknown {d['unknown']}" + (f" ({d['state']})" if d.get("state") else "")]
    states = ", ".join(f"{k} {v}" for k, v in d["by_state"].items())
    if states:
        lines.append(f"    by state: {states}")
    box = d.get("outbox") or {}
    if box.get("waiting") or box.get("dead"):
        lines.append(f"    webhook: {box.get('waiting', 0)} events waiting, {box.get('dead', 0)} given up")
    return lines
