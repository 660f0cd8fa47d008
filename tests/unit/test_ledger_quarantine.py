"""A poison batch does not loop for ever (issue 9 item 6).

An execution that begins and never records (an exception outside the classified errors, bad stored
input, a worker that keeps dying on it) used to leave the batch to be swept and fail again, for ever.
``begin`` counts such executions; after ``quarantine_after`` (default 5) the batch's recipients fail
with the reason, the counters add up and the campaign reaches its final state. A batch whose request
may be with the provider is settled before its recipients are failed.
"""

from __future__ import annotations

import pytest
import redis

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.keys import Keys
from scheduler.ledger import Begin, BeginVerdict, Ledger, Outcome, Settle

T = 1_700_000_000_000
ACCT = "acct"
CID = "c1"
LEASE = 30_000
STEP = LEASE + 1  # each attempt begins after the last one's lease ran out


def phone(i: int) -> str:
    return f"+7900{i:07d}"


def create(campaigns: Campaigns, n: int, batch_size: int) -> None:
    spec = CampaignSpec(message="hello", parts=1, account=ACCT, batch_size=batch_size, campaign_id=CID)
    campaigns.create(spec, ((i + 1, phone(i)) for i in range(n)), now_ms=T)


def crash(ledger: Ledger, ref: str, attempts: int, *, start: int = 0, sending: bool = False) -> int:
    """``attempts`` executions that begin and die without recording; returns the next attempt's number."""
    for i in range(start, start + attempts):
        now = T + i * STEP
        b = ledger.begin(ref, token=f"x{i}", exec_lease_ms=LEASE, account=ACCT, now_ms=now)
        assert b.verdict is BeginVerdict.OK, (i, b)
        if sending:  # the request left; the worker died before the answer was recorded
            assert ledger.mark_sending(ref, token=f"x{i}", lease_ms=LEASE, settle_margin_ms=1_000, now_ms=now)
    return start + attempts


def begin_at(ledger: Ledger, ref: str, attempt: int, execution: str = "q") -> Begin:
    return ledger.begin(ref, token=execution, exec_lease_ms=LEASE, account=ACCT, now_ms=T + attempt * STEP)


def counters(campaigns: Campaigns) -> dict[str, int]:
    s = campaigns.status(CID)
    return {k: s[k] for k in ("total", "sent", "failed", "cancelled", "pending")}


def rows(campaigns: Campaigns) -> dict[str, list[str]]:
    return {r[0]: r for r in campaigns.report_rows(CID)}


def test_a_batch_that_never_records_is_quarantined_after_five_attempts_with_the_last_error(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 3, 3)
    ref = f"{CID}:0"
    nxt = crash(ledger, ref, 4)
    crash(ledger, ref, 1, start=nxt)
    ledger.note_error(ref, reason="ValueError: cannot parse phone\n'+7900'")
    b = ledger.begin(ref, token="q", exec_lease_ms=LEASE, account=ACCT, now_ms=T + 5 * STEP)
    assert b.verdict is BeginVerdict.QUARANTINE and not b.owned
    assert b.quarantined == 3
    assert b.reason == "quarantined after 5 attempts: ValueError: cannot parse phone '+7900'"
    # Every recipient has its final state, with the reason; the campaign says so, and ends.
    assert counters(campaigns) == {"total": 3, "sent": 0, "failed": 3, "cancelled": 0, "pending": 0}
    assert campaigns.status(CID)["state"] == "failed"
    assert redis_client.hget(keys.campaign(CID), "quarantined") == b"3"
    assert campaigns.status(CID)["last_error"] == b.reason
    assert {p: (r[1], r[6]) for p, r in rows(campaigns).items()} == {phone(i): ("failed", b.reason) for i in range(3)}
    assert redis_client.zscore(keys.due, ref) is None and redis_client.zscore(keys.leased, ref) is None
    # A message still in the broker finds it done.
    assert ledger.begin(ref, token="late", exec_lease_ms=LEASE, account=ACCT, now_ms=T + 6 * STEP).verdict \
        is BeginVerdict.DONE


def test_without_a_noted_error_the_reason_says_no_outcome_was_recorded(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 2, 2)
    crash(ledger, f"{CID}:0", 5)
    b = begin_at(ledger, f"{CID}:0", 5)
    assert b.verdict is BeginVerdict.QUARANTINE
    assert b.reason.startswith("quarantined after 5 attempts: no outcome was ever recorded")


def test_a_recorded_outcome_starts_the_count_again(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 3, 3)
    ref = f"{CID}:0"
    nxt = crash(ledger, ref, 4)
    # The fifth execution records (a classified error gave the batch back): not a poison batch.
    b = ledger.begin(ref, token="ok", exec_lease_ms=LEASE, account=ACCT, now_ms=T + nxt * STEP)
    assert ledger.release(ref, token="ok", phones=b.phones, now_ms=T + nxt * STEP)
    nxt = crash(ledger, ref, 4, start=nxt + 1)  # would be the 9th unrecorded without the reset
    assert begin_at(ledger, ref, nxt).verdict is BeginVerdict.OK
    assert counters(campaigns)["pending"] == 3


def test_quarantine_after_is_a_setting_of_the_ledger(redis_client: redis.Redis, keys: Keys,
                                                     campaigns: Campaigns) -> None:
    ledger = Ledger(redis_client, keys, quarantine_after=2)
    create(campaigns, 2, 2)
    crash(ledger, f"{CID}:0", 2)
    b = begin_at(ledger, f"{CID}:0", 2)
    assert (b.verdict, b.quarantined) == (BeginVerdict.QUARANTINE, 2)
    assert b.reason.startswith("quarantined after 2 attempts")
    with pytest.raises(ValueError):
        Ledger(redis_client, keys, quarantine_after=0)


def test_a_batch_whose_request_may_be_out_is_settled_before_its_recipients_fail(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 3, 3)
    ref = f"{CID}:0"
    crash(ledger, ref, 5, sending=True)
    b = ledger.begin(ref, token="q", exec_lease_ms=LEASE, account=ACCT, now_ms=T + 5 * STEP)
    # Not failed yet: this execution owns the batch, to ask status.php first.
    assert (b.verdict, b.settle, b.owned, b.quarantined) == (BeginVerdict.QUARANTINE, True, True, 0)
    assert b.phones == (phone(0), phone(1), phone(2))
    assert counters(campaigns)["pending"] == 3
    # status.php: the provider has the first one; the other two fail with the reason.
    out = Outcome(sent=1, sms=1, remaining=[phone(1), phone(2)], settle=Settle.CLEAR)
    out.add_row(phone(0), "sent", msg_id="c1-0", parts=1, reason="settled via status.php")
    assert ledger.quarantine(ref, token="q", reason=b.reason, outcome=out, now_ms=T + 5 * STEP + 1) == \
        (True, "completed")
    assert counters(campaigns) == {"total": 3, "sent": 1, "failed": 2, "cancelled": 0, "pending": 0}
    assert redis_client.hget(keys.campaign(CID), "quarantined") == b"2"
    r = rows(campaigns)
    assert r[phone(0)][1] == "sent"
    assert (r[phone(1)][1], r[phone(1)][6]) == ("failed", b.reason)
    assert "may have been sent" not in b.reason  # settled: nobody failed here can have it
    # A stale execution cannot quarantine anything.
    assert ledger.quarantine(ref, token="x1", reason="x", outcome=Outcome(remaining=[phone(1)])) == (False, "")


def test_a_settle_first_execution_that_dies_too_fails_the_recipients_saying_some_may_have_been_sent(
    ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 3, 3)
    ref = f"{CID}:0"
    crash(ledger, ref, 5, sending=True)
    assert begin_at(ledger, ref, 5).owned  # ...and it dies as well
    b = begin_at(ledger, ref, 6, "r")
    assert (b.verdict, b.settle, b.quarantined) == (BeginVerdict.QUARANTINE, False, 3)
    assert "may have been sent" in b.reason
    assert counters(campaigns) == {"total": 3, "sent": 0, "failed": 3, "cancelled": 0, "pending": 0}


def test_the_counters_add_up_and_the_campaign_completes_when_one_batch_is_quarantined(
    ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 4, 2)
    b = ledger.begin(f"{CID}:1", token="good", exec_lease_ms=LEASE, account=ACCT, now_ms=T)
    assert ledger.record(f"{CID}:1", token="good", outcome=Outcome(sent=len(b.phones)), now_ms=T) == (True, "running")
    crash(ledger, f"{CID}:0", 5)
    assert begin_at(ledger, f"{CID}:0", 5).verdict is BeginVerdict.QUARANTINE
    s = campaigns.status(CID)
    assert (s["state"], s["sent"], s["failed"], s["pending"]) == ("completed", 2, 2, 0)


def test_a_paused_campaign_is_parked_not_quarantined(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 2, 2)
    crash(ledger, f"{CID}:0", 5)
    campaigns.pause(CID, now_ms=T + 5 * STEP)
    assert begin_at(ledger, f"{CID}:0", 5).verdict is BeginVerdict.PARKED
    assert counters(campaigns)["pending"] == 2
