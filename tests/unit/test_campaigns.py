"""Campaigns in Redis: intake (dedup, batches, rejected lines), the plan, commit, status, controls, report.

On the real redis-server (the truth), the clock an argument. Recipients are given as the intake gives
them: ``(line_no, phone)`` tuples and :class:`scheduler.intake.Rejected` items, streamed. The fixtures
``keys`` and ``campaigns`` are the unit tests' own (``tests/unit/conftest.py``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.campaigns import CampaignError, Campaigns, CampaignSpec
from scheduler.intake import Rejected, iter_recipients
from scheduler.keys import Keys, batch_ref
from scheduler.ledger import Ledger, Outcome
from scheduler.spreading import PlanOptions, Window

T = 1_700_000_000_000
ACCT = "acct"
CID = "c1"


def phone(i: int) -> str:
    return f"+7900{i:07d}"


def numbered(n: int, start: int = 0) -> Iterator[tuple[int, str]]:
    return ((i + 1, phone(i)) for i in range(start, start + n))


def spec(*, cid: str | None = CID, batch_size: int = 500, plan: PlanOptions | None = None) -> CampaignSpec:
    return CampaignSpec(message="hello", parts=2, account=ACCT, sender="Shop", batch_size=batch_size, plan=plan,
                        campaign_id=cid)


def spread(start_ms: int = T) -> PlanOptions:
    return PlanOptions(period_h=0.1, freq_min=2, start_ms=start_ms, window=None, tz_h=0, recipient_time=False)


def due(r: redis.Redis, keys: Keys) -> list[tuple[str, int]]:
    return [(m.decode(), int(s)) for m, s in r.zrange(keys.due, 0, -1, withscores=True)]


def phones_of(r: redis.Redis, keys: Keys, ref: str) -> list[str]:
    raw = (r.hget(keys.batch(ref), "phones") or b"").decode()
    return raw.split(",") if raw else []


def all_keys(r: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in r.scan_iter(count=1000))


# -- intake ----------------------------------------------------------------------------------------------


def test_create_dedups_the_same_number_with_and_without_plus(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    items = [(1, "+79001234567"), (2, "79001234567"), (3, "+79001234568"), (4, "+79001234567")]
    receipt = campaigns.create(spec(), items, now_ms=T)
    assert (receipt.total, receipt.duplicates, receipt.invalid) == (2, 2, 0)
    assert phones_of(redis_client, keys, batch_ref(CID, 0)) == ["+79001234567", "+79001234568"]
    assert receipt.sms_estimate == 2 * 2


def test_create_dedups_across_intake_chunks(redis_client: redis.Redis, keys: Keys, campaigns: Campaigns) -> None:
    # 5,000 lines (more than one dedup round trip), every number twice, far apart in the input.
    items = list(numbered(2_500)) + list(numbered(2_500))
    receipt = campaigns.create(spec(batch_size=1_000), items, now_ms=T)
    assert (receipt.total, receipt.duplicates) == (2_500, 2_500)
    seen = [p for n in range(receipt.batches) for p in phones_of(redis_client, keys, batch_ref(CID, n))]
    assert sorted(seen) == sorted(phone(i) for i in range(2_500))


def test_create_cuts_batches_of_batch_size_in_input_order(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    receipt = campaigns.create(spec(batch_size=500), numbered(1_234), now_ms=T)
    assert (receipt.total, receipt.batches, receipt.groups) == (1_234, 3, 1)
    sizes = [len(phones_of(redis_client, keys, batch_ref(CID, n))) for n in range(3)]
    assert sizes == [500, 500, 234]
    assert phones_of(redis_client, keys, batch_ref(CID, 1))[0] == phone(500)
    assert due(redis_client, keys) == [(batch_ref(CID, n), T) for n in range(3)]
    assert (receipt.first_due_ms, receipt.last_due_ms) == (T, T)


def test_create_counts_rejected_lines_as_invalid_and_hands_each_to_on_rejected(campaigns: Campaigns) -> None:
    lines = [(1, "+7 900 123-45-67"), (2, "12345"), (3, "+7900abc4567"), (4, "8 (900) 123 45 68")]
    got: list[Rejected] = []
    receipt = campaigns.create(spec(), iter_recipients(lines), now_ms=T, on_rejected=got.append)
    assert (receipt.total, receipt.invalid) == (2, 2)
    assert [r.line_no for r in got] == [2, 3]
    assert campaigns.status(CID)["invalid"] == 2


def test_create_without_valid_recipients_fails_and_leaves_nothing_in_redis(
    redis_client: redis.Redis, campaigns: Campaigns
) -> None:
    with pytest.raises(CampaignError, match="no valid recipients"):
        campaigns.create(spec(), [Rejected(1, "x", "bad"), Rejected(2, "y", "bad")], now_ms=T)
    assert all_keys(redis_client) == []


def test_create_interrupted_by_a_failing_input_leaves_nothing_in_redis(
    redis_client: redis.Redis, campaigns: Campaigns
) -> None:
    def broken() -> Iterable[tuple[int, str]]:
        yield from numbered(4_321)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        campaigns.create(spec(batch_size=100), broken(), now_ms=T)
    assert all_keys(redis_client) == []
    # The same campaign id can then be enqueued for real.
    assert campaigns.create(spec(batch_size=100), numbered(3), now_ms=T).total == 3


def test_create_same_campaign_id_twice_returns_the_existing_campaign(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    first = campaigns.create(spec(batch_size=2, plan=spread()), numbered(5), now_ms=T)
    before = all_keys(redis_client), due(redis_client, keys)
    again = campaigns.create(spec(batch_size=2, plan=spread()), numbered(5), now_ms=T + 1)
    assert again.existing and not first.existing
    assert (again.campaign_id, again.total, again.batches) == (CID, 5, first.batches)
    assert (again.groups, again.first_due_ms, again.last_due_ms) == (first.groups, first.first_due_ms,
                                                                     first.last_due_ms)
    assert (all_keys(redis_client), due(redis_client, keys)) == before


@pytest.mark.parametrize(("change", "named"), [
    ({"message": "another text"}, "another text"),
    ({"sender": "Other"}, "another sender"),
    ({"sender": None}, "another sender"),
    ({"plan": spread(T + 60_000)}, "other plan options"),
    ({"account": "other"}, "another account"),
    ({"message": "x", "sender": "Y"}, "another text and another sender"),
])
def test_the_same_campaign_id_with_another_content_is_refused_naming_what_differs(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, change: dict[str, object], named: str
) -> None:
    campaigns.create(spec(batch_size=2), numbered(5), now_ms=T)
    before = all_keys(redis_client), due(redis_client, keys), campaigns.status(CID)
    base = {"message": "hello", "parts": 2, "account": ACCT, "sender": "Shop", "batch_size": 2, "campaign_id": CID}
    with pytest.raises(CampaignError) as info:
        campaigns.create(CampaignSpec(**{**base, **change}), numbered(5), now_ms=T + 1)  # type: ignore[arg-type]
    assert str(info.value) == (
        f"campaign id 'c1' is taken by a campaign with {named}; nothing was queued "
        "(use another campaign id, or the same content to get the existing campaign)")
    assert (all_keys(redis_client), due(redis_client, keys), campaigns.status(CID)) == before


@pytest.mark.parametrize("other", [
    lambda: numbered(5, start=100),  # other numbers
    lambda: numbered(6),  # one more
    lambda: [*numbered(5), Rejected(6, "x", "bad")],  # one more invalid line
    lambda: reversed(list(numbered(5))),  # another order: other groups
])
def test_the_same_campaign_id_with_other_recipients_is_refused(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, other: Callable[[], Iterable[tuple[int, str]]]
) -> None:
    campaigns.create(spec(batch_size=2), numbered(5), now_ms=T)
    before = all_keys(redis_client), due(redis_client, keys)
    with pytest.raises(CampaignError, match="with other recipients; nothing was queued"):
        campaigns.create(spec(batch_size=2), other(), now_ms=T + 1)
    assert (all_keys(redis_client), due(redis_client, keys)) == before


def test_the_recipients_digest_given_by_the_caller_decides_what_the_same_recipients_are(campaigns: Campaigns) -> None:
    campaigns.create(spec(), numbered(5), now_ms=T, recipients_digest=lambda: "file:abc")
    assert campaigns.create(spec(), numbered(5), now_ms=T, recipients_digest=lambda: "file:abc").existing
    with pytest.raises(CampaignError, match="other recipients"):
        campaigns.create(spec(), numbered(5), now_ms=T, recipients_digest=lambda: "file:abd")


def test_plan_source_makes_a_relative_start_retried_later_the_same_campaign(campaigns: Campaigns) -> None:
    source = {"at": "+10", "window": None}
    campaigns.create(CampaignSpec(message="m", parts=1, account=ACCT, campaign_id=CID, plan=spread(T + 600_000),
                                  plan_source=source), numbered(3), now_ms=T)
    again = campaigns.create(CampaignSpec(message="m", parts=1, account=ACCT, campaign_id=CID,
                                          plan=spread(T + 660_000), plan_source=source), numbered(3), now_ms=T + 60_000)
    assert again.existing


def test_strict_refuses_a_campaign_with_an_invalid_line_and_leaves_nothing(
    redis_client: redis.Redis, campaigns: Campaigns
) -> None:
    got: list[Rejected] = []
    with pytest.raises(CampaignError, match=r"^1 invalid line \(strict\): nothing was queued$"):
        campaigns.create(spec(batch_size=2), [*numbered(5), Rejected(9, "x", "bad")], now_ms=T, strict=True,
                         on_rejected=got.append)
    assert [r.line_no for r in got] == [9]
    assert all_keys(redis_client) == []


def test_create_refuses_a_campaign_id_unfit_for_the_providers_request_id(campaigns: Campaigns) -> None:
    with pytest.raises(CampaignError, match="campaign id"):
        campaigns.create(spec(cid="bad id:1"), numbered(1), now_ms=T)


def test_create_without_an_id_gets_a_fresh_one(campaigns: Campaigns) -> None:
    a = campaigns.create(spec(cid=None), numbered(1), now_ms=T)
    b = campaigns.create(spec(cid=None), numbered(1), now_ms=T)
    assert a.campaign_id != b.campaign_id
    assert set(campaigns.campaign_ids()) == {a.campaign_id, b.campaign_id}


def test_commit_drops_the_dedup_set(redis_client: redis.Redis, keys: Keys, campaigns: Campaigns) -> None:
    campaigns.create(spec(), numbered(10), now_ms=T)
    assert not redis_client.exists(keys.seen(CID))


# -- the plan ---------------------------------------------------------------------------------------------


def test_spread_plan_gives_each_group_its_due_time_and_cuts_batches_at_group_boundaries(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    receipt = campaigns.create(spec(batch_size=3, plan=spread()), numbered(10), now_ms=T - 5_000)
    assert receipt.groups == 3
    assert (receipt.first_due_ms, receipt.last_due_ms) == (T, T + 240_000)
    per_due: Counter[int] = Counter()
    members: list[str] = []
    for ref, due_ms in due(redis_client, keys):
        phones = phones_of(redis_client, keys, ref)
        per_due[due_ms] += len(phones)
        members += phones
    assert sorted(per_due) == [T, T + 120_000, T + 240_000]
    assert sorted(per_due.values(), reverse=True) == [4, 3, 3]
    assert sorted(members) == sorted(phone(i) for i in range(10))  # every recipient once
    assert receipt.batches == len(due(redis_client, keys)) == campaigns.status(CID)["batches"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), batch_size=st.integers(1, 9))
def test_spread_plan_groups_differ_by_at_most_one_whatever_the_sizes(
    redis_client: redis.Redis, keys: Keys, n: int, batch_size: int
) -> None:
    redis_client.flushdb()  # our private server; one campaign per example
    receipt = Campaigns(redis_client, keys).create(spec(batch_size=batch_size, plan=spread()), numbered(n), now_ms=T)
    groups = min(3, n)
    per_due: Counter[int] = Counter()
    members: list[str] = []
    for ref, due_ms in due(redis_client, keys):
        phones = phones_of(redis_client, keys, ref)
        assert 1 <= len(phones) <= batch_size
        per_due[due_ms] += len(phones)
        members += phones
    assert sorted(per_due) == [T + k * 120_000 for k in range(groups)]
    assert max(per_due.values()) - min(per_due.values()) <= 1
    assert sorted(members) == sorted(phone(i) for i in range(n))  # every recipient once
    assert receipt.batches == len(due(redis_client, keys))
    # Groups take the recipients in input order: group k is the k-th slice of the input.
    by_group = [sorted(int(p[5:]) for p in group) for _, group in sorted(groups_of(redis_client, keys).items())]
    assert [i for group in by_group for i in group] == list(range(n))


def groups_of(r: redis.Redis, keys: Keys) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for ref, due_ms in due(r, keys):
        out.setdefault(due_ms, []).extend(phones_of(r, keys, ref))
    return out


def test_plan_with_a_later_start_makes_every_batch_due_then(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    later = PlanOptions(period_h=None, freq_min=None, start_ms=T + 3_600_000, window=None, tz_h=0,
                        recipient_time=False)
    campaigns.create(spec(batch_size=2, plan=later), numbered(5), now_ms=T)
    assert {d for _, d in due(redis_client, keys)} == {T + 3_600_000}


# -- status, controls, report ------------------------------------------------------------------------------


def test_status_counts_add_up_from_the_start(campaigns: Campaigns) -> None:
    campaigns.create(spec(batch_size=2), [*numbered(5), (9, phone(0)), Rejected(10, "x", "bad")], now_ms=T)
    s = campaigns.status(CID)
    assert {k: s[k] for k in ("state", "total", "sent", "failed", "cancelled", "pending")} == {
        "state": "queued", "total": 5, "sent": 0, "failed": 0, "cancelled": 0, "pending": 5}
    assert (s["invalid"], s["duplicates"], s["batches"], s["parts"]) == (1, 1, 3, 2)
    assert (s["account"], s["sender"], s["created_ms"], s["started_ms"], s["finished_ms"]) == (
        ACCT, "Shop", T, None, None)


def test_status_of_an_unknown_campaign_is_a_campaign_error(campaigns: Campaigns) -> None:
    with pytest.raises(CampaignError):
        campaigns.status("nope")


def test_status_follows_the_ledger(redis_client: redis.Redis, keys: Keys, campaigns: Campaigns) -> None:
    campaigns.create(spec(batch_size=3), numbered(6), now_ms=T)
    ledger = Ledger(redis_client, keys)
    ref = ledger.claim(now_ms=T, window=10, claim_lease_ms=10_000, max_claim=1)[0]
    b = ledger.begin(ref, token="A", now_ms=T + 1, exec_lease_ms=30_000, account=ACCT)
    ledger.record(ref, token="A", now_ms=T + 2,
                  outcome=Outcome(sent=2, failed=1, sms=4, cost_milli=3_100, remaining=[], due_at_ms=0))
    s = campaigns.status(CID)
    assert b.verdict == "ok"
    assert (s["state"], s["sent"], s["failed"], s["pending"], s["sms"], s["cost"], s["started_ms"]) == (
        "running", 2, 1, 3, 4, "3.1", T + 1)


def test_cancel_cancels_every_queued_recipient(redis_client: redis.Redis, keys: Keys, campaigns: Campaigns) -> None:
    campaigns.create(spec(batch_size=2), numbered(5), now_ms=T)
    assert campaigns.cancel(CID, now_ms=T + 1) == {"state": "cancelled", "cancelled_now": 5}
    s = campaigns.status(CID)
    assert (s["state"], s["cancelled"], s["pending"], s["finished_ms"]) == ("cancelled", 5, 0, T + 1)
    assert redis_client.zcard(keys.due) == 0
    assert {row[1] for row in campaigns.report_rows(CID)} == {"cancelled"}
    # Idempotent: nothing is cancelled twice.
    assert campaigns.cancel(CID, now_ms=T + 2) == {"state": "cancelled", "cancelled_now": 0}
    assert campaigns.status(CID)["cancelled"] == 5


def test_cancel_of_a_paused_campaign_cancels_its_parked_batches(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    campaigns.create(spec(batch_size=2), numbered(4), now_ms=T)
    campaigns.pause(CID, now_ms=T)
    ledger = Ledger(redis_client, keys)
    for ref in ledger.claim(now_ms=T, window=10, claim_lease_ms=10_000, max_claim=10):
        assert ledger.begin(ref, token="A", now_ms=T, exec_lease_ms=30_000, account=ACCT).verdict == "parked"
    assert campaigns.cancel(CID, now_ms=T + 1)["cancelled_now"] == 4
    assert redis_client.scard(keys.parked(CID)) == 0
    assert campaigns.status(CID)["pending"] == 0


def test_pause_and_resume_are_idempotent(redis_client: redis.Redis, keys: Keys, campaigns: Campaigns) -> None:
    campaigns.create(spec(batch_size=2), numbered(4), now_ms=T)
    assert campaigns.pause(CID, now_ms=T, reason="night") == "paused"
    assert campaigns.pause(CID, now_ms=T + 1) == "paused"
    assert campaigns.status(CID)["reason"] == "paused by operator"
    assert campaigns.resume(CID, now_ms=T + 2) == "queued"
    assert campaigns.resume(CID, now_ms=T + 3) == "queued"
    s = campaigns.status(CID)
    assert (s["state"], s["reason"], s["pending"]) == ("queued", None, 4)
    assert len(due(redis_client, keys)) == 2


def test_pause_does_not_touch_a_finished_campaign(campaigns: Campaigns) -> None:
    campaigns.create(spec(), numbered(2), now_ms=T)
    campaigns.cancel(CID, now_ms=T)
    assert campaigns.pause(CID, now_ms=T + 1) == "cancelled"
    assert campaigns.resume(CID, now_ms=T + 2) == "cancelled"


def test_pause_account_pauses_every_active_campaign_of_the_account(campaigns: Campaigns) -> None:
    campaigns.create(spec(cid="a1"), numbered(2), now_ms=T)
    campaigns.create(spec(cid="a2"), numbered(2), now_ms=T)
    campaigns.cancel("a2", now_ms=T)
    assert campaigns.pause_account(ACCT, now_ms=T, reason="insufficient funds") == ["a1"]
    assert campaigns.status("a1")["reason"] == "insufficient funds"


def test_report_has_one_row_per_recipient(redis_client: redis.Redis, keys: Keys, campaigns: Campaigns) -> None:
    campaigns.create(spec(batch_size=3), numbered(7), now_ms=T)
    ledger = Ledger(redis_client, keys)
    ref = ledger.claim(now_ms=T, window=10, claim_lease_ms=10_000, max_claim=1)[0]
    b = ledger.begin(ref, token="A", now_ms=T, exec_lease_ms=30_000, account=ACCT)
    out = Outcome(sent=1, failed=1, remaining=[b.phones[2]], due_at_ms=T + 62_000)
    out.add_row(b.phones[0], "sent", msg_id="c1-0", parts=2, cost="3.2")
    out.add_row(b.phones[1], "failed", msg_id="c1-0", code=7, reason="no route; to; it\nnow")
    ledger.record(ref, token="A", now_ms=T, outcome=out)
    rows = list(campaigns.report_rows(CID))
    assert sorted(r[0] for r in rows) == sorted(phone(i) for i in range(7))
    assert all(len(r) == 7 for r in rows)
    by_phone = {r[0]: r for r in rows}
    assert by_phone[phone(0)] == [phone(0), "sent", "c1-0", "2", "3.2", "", ""]
    assert by_phone[phone(1)] == [phone(1), "failed", "c1-0", "", "", "7", "no route, to, it now"]
    assert Counter(r[1] for r in rows) == {"pending": 5, "sent": 1, "failed": 1}


# -- memory (design invariant 8) -----------------------------------------------------------------------------


def _used_memory(r: redis.Redis) -> int:
    deadline = time.monotonic() + 5
    while int(r.info("memory").get("lazyfree_pending_objects", 0)) and time.monotonic() < deadline:
        time.sleep(0.01)  # UNLINK frees in the background: wait until it has
    return int(r.info("memory")["used_memory"])


def test_committed_campaign_costs_under_100_bytes_a_pending_recipient(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    n = 100_000
    campaigns.create(spec(cid="warm"), numbered(10), now_ms=T)  # scripts loaded, pools warm
    before = _used_memory(redis_client)
    receipt = campaigns.create(spec(batch_size=500), numbered(n, start=1_000), now_ms=T)
    after = _used_memory(redis_client)
    assert receipt.total == campaigns.status(CID)["pending"] == n
    assert not redis_client.exists(keys.seen(CID)), "the dedup set must be dropped at commit"
    per_recipient = (after - before) / n
    stored = sum(int(redis_client.memory_usage(keys.batch(batch_ref(CID, i))) or 0) for i in range(receipt.batches))
    assert per_recipient <= 100, (
        f"{per_recipient:.1f} bytes of used_memory per pending recipient "
        f"(batch hashes alone {stored / n:.1f} B) > 100"
    )


# -- the dry run is the plan ---------------------------------------------------------------------------------

MSK_0600 = 1_795_662_000_000  # 2026-11-26 06:00 Moscow


def _zoned(n: int) -> list[tuple[int, str]]:
    """Recipients of five zones, interleaved: Moscow, New York, Vladivostok, Novosibirsk, a Russian mobile."""
    kinds = ["+7495{:07d}", "+1212555{:04d}", "+7423{:07d}", "+7383{:07d}", "+7900{:07d}"]
    return [(i + 1, kinds[i % 5].format(1_000_000 + i if i % 5 != 1 else 1_000 + i)) for i in range(n)]


@pytest.mark.parametrize("plan", [
    PlanOptions(period_h=None, freq_min=None, start_ms=MSK_0600, window=Window(9, 22), tz_h=0, recipient_time=True),
    PlanOptions(period_h=2, freq_min=30, start_ms=MSK_0600, window=Window(9, 22), tz_h=0, recipient_time=True),
    PlanOptions(period_h=24, freq_min=60, start_ms=MSK_0600, window=Window(22, 9), tz_h=4, recipient_time=True),
    PlanOptions(period_h=0.1, freq_min=2, start_ms=MSK_0600, window=None, tz_h=0, recipient_time=False),
], ids=["window-recipient-time", "spread-window-recipient-time", "overnight-spread-tz", "spread"])
def test_the_dry_run_shows_exactly_what_the_enqueue_queues(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, plan: PlanOptions
) -> None:
    items = [*_zoned(997), *_zoned(50), (2000, "nope")]  # duplicates and an invalid line too
    items_checked = [x if x[1] != "nope" else Rejected(x[0], x[1], "bad") for x in items]
    preview = campaigns.preview(spec(batch_size=40, plan=plan), items_checked, now_ms=T)
    assert all_keys(redis_client) == []  # a dry run leaves nothing
    receipt = campaigns.create(spec(batch_size=40, plan=plan), items_checked, now_ms=T)
    real: Counter[int] = Counter()
    for ref, due_ms in due(redis_client, keys):
        real[due_ms] += len(phones_of(redis_client, keys, ref))
        assert int(redis_client.hget(keys.batch(ref), "due") or 0) == due_ms  # resume keeps it
    shown: Counter[int] = Counter()
    for row in preview["groups"]:
        shown[row["due_ms"]] += row["recipients"]
    assert shown == real
    assert (preview["total"], preview["duplicates"], preview["invalid"], preview["batches"]) == (
        receipt.total, receipt.duplicates, receipt.invalid, receipt.batches)
    if plan.recipient_time:
        assert len(real) > 1  # the zones really do differ here


def test_without_now_ms_the_plan_is_on_the_redis_servers_clock(
    redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    server_ms = int(redis_client.time()[0]) * 1000
    receipt = campaigns.create(spec(cid=None), numbered(3))
    assert abs(receipt.first_due_ms - server_ms) < 5_000
    assert abs(campaigns.status(receipt.campaign_id)["created_ms"] - server_ms) < 5_000
