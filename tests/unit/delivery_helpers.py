"""What the delivery tests share: a campaign sent through the real ledger, on the real redis-server."""

from __future__ import annotations

import uuid

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.keys import batch_ref
from scheduler.ledger import Ledger, Outcome

ACCT = "acct"


def phone(i: int) -> str:
    return f"+7900{i:07d}"


def request_id(cid: str, n: int) -> str:
    return f"{cid}-{n}"


def send_campaign(campaigns: Campaigns, ledger: Ledger, n: int, batch_size: int, *, cid: str = "c1",
                  failed: frozenset[int] = frozenset(), hold: frozenset[int] = frozenset()) -> list[str]:
    """Enqueue ``n`` recipients and record every batch as the worker would: recipient ``i`` sent, failed
    (``i`` in ``failed``) or held back for a second execution (``i`` in ``hold``, then sent). Returns refs."""
    spec = CampaignSpec(message="hello", parts=1, account=ACCT, batch_size=batch_size, campaign_id=cid)
    campaigns.create(spec, ((i + 1, phone(i)) for i in range(n)))
    refs = [batch_ref(cid, b) for b in range(int(campaigns.fields(cid)["batches"]))]
    index = {phone(i): i for i in range(n)}
    for ref in refs:
        for attempt in (1, 2):
            token = uuid.uuid4().hex
            b = ledger.begin(ref, token=token, exec_lease_ms=30_000, account=ACCT)
            if not b.owned:
                break
            assert ledger.mark_sending(ref, token=token, lease_ms=30_000, settle_margin_ms=1_000)
            out = Outcome()
            for p in b.phones:
                i = index[p]
                if attempt == 1 and i in hold:
                    out.remaining.append(p)
                elif i in failed:
                    out.failed += 1
                    out.add_row(p, "failed", msg_id=request_id(*_split(ref)), code=8, reason="cannot deliver")
                else:
                    out.sent += 1
                    out.add_row(p, "sent", msg_id=request_id(*_split(ref)), parts=1, cost="1.50")
            ok, _ = ledger.record(ref, token=token, outcome=out)
            assert ok
    return refs


def _split(ref: str) -> tuple[str, int]:
    cid, _, n = ref.rpartition(":")
    return cid, int(n)
