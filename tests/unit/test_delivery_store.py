"""Delivery state in Redis (every script on the real redis-server): records, counters, schedule, outbox."""

from __future__ import annotations

import uuid

import redis

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.delivery import (
    APPLIED,
    CODE_PENDING,
    CODE_UNKNOWN,
    FINAL,
    IGNORED,
    NOT_A_SENT_ROW,
    NOT_KNOWN_YET,
    DeliveryPolicy,
    DeliveryStore,
    Status,
    code_of,
)
from scheduler.keys import Keys, batch_ref
from scheduler.ledger import Ledger, Outcome, server_time_ms
from tests.unit.delivery_helpers import ACCT, phone, send_campaign


def _store(redis_client: redis.Redis, keys: Keys, **kw: object) -> DeliveryStore:
    return DeliveryStore(redis_client, keys, default_webhook=True, **kw)  # type: ignore[arg-type]


def test_statuses_are_applied_in_the_providers_order_and_counted(redis_client: redis.Redis, keys: Keys,
                                                                 campaigns: Campaigns, ledger: Ledger) -> None:
    refs = send_campaign(campaigns, ledger, 10, 10, failed=frozenset({9}))
    store = _store(redis_client, keys)
    ref = refs[0]
    t = 1_700_000_000
    got = store.apply([
        Status(ref, 0, 0, 0, t, phone(0)),  # handed to the operator
        Status(ref, 1, 1, 0, t + 5, phone(1)),  # delivered
        Status(ref, 2, 20, 13, t + 5, phone(2)),  # cannot be delivered: subscriber blocked
        Status(ref, 9, 1, 0, t, phone(9)),  # a row the ledger failed: not a sent row
        Status(ref, 3, -3, 0, t, phone(3)),  # not known at the provider yet
    ])
    assert got == [APPLIED, FINAL, FINAL, NOT_A_SENT_ROW, NOT_KNOWN_YET]
    got = store.apply([
        Status(ref, 1, 0, 0, t + 9, phone(1)),  # an intermediate status after a final one (a late retry)
        Status(ref, 0, 0, 0, t - 1, phone(0)),  # older than what the record holds
        Status(ref, 2, 20, 13, t + 5, phone(2)),  # the same again (a push whose answer was lost)
        Status(ref, 1, 2, 0, t + 60, phone(1)),  # read after delivered: the later final status wins
        Status(ref, 0, 3, 0, t + 3600, phone(0)),  # expired
    ])
    assert got == [IGNORED, IGNORED, IGNORED, APPLIED, FINAL]
    rec = store.record(ref, 10)
    assert [r.code for r in rec[:3]] == [code_of(3), code_of(2), code_of(20)] and rec[2].err == 13
    assert rec[1].ts == t + 60 and rec[9].code == 0 and rec[3].code == CODE_PENDING
    assert store.counts("c1") == {CODE_PENDING: 6, code_of(3): 1, code_of(2): 1, code_of(20): 1}
    assert int(store.fields("c1")["tracked"]) == 9  # nine sent rows, one failed
    assert len(redis_client.get(keys.delivery_record(ref)) or b"") <= 10 * 8


def test_a_push_before_the_poller_saw_the_batch_tracks_it_and_rows_keep_their_index(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    # Recipients 1 and 3 were held back by the flood guard and sent by a second execution: their rows come last.
    refs = send_campaign(campaigns, ledger, 5, 5, hold=frozenset({1, 3}))
    store = _store(redis_client, keys)
    rows = store.rows(refs[0])
    assert [r.phone for r in rows] == [phone(0), phone(2), phone(4), phone(1), phone(3)]
    assert store.apply([Status(refs[0], 3, 1, 0, 1, phone(1))]) == [FINAL]  # tracked on the way
    assert redis_client.zscore(keys.delivery_due, refs[0]) is not None  # and scheduled for polling
    assert store.discover("c1") == 0  # nothing new
    assert store.record(refs[0], 5)[3].code == code_of(1)


def test_discover_tracks_batches_whose_rows_grew(redis_client: redis.Redis, keys: Keys, campaigns: Campaigns,
                                                 ledger: Ledger) -> None:
    send_campaign(campaigns, ledger, 1200, 500)
    store = _store(redis_client, keys, policy=DeliveryPolicy(steps_s=(30, 90)))
    before = server_time_ms(redis_client)
    assert store.discover("c1") == 3
    assert store.discover("c1") == 0
    due = dict(redis_client.zrange(keys.delivery_due, 0, -1, withscores=True))
    assert len(due) == 3 and all(before + 30_000 <= s <= before + 32_000 for s in due.values())
    assert int(store.fields("c1")["tracked"]) == 1200


def test_discover_grown_tracks_exactly_the_batches_that_grew_without_reading_the_others(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    # Every script that appends rows marks its batch; tracking takes the mark out as it reads the rows.
    refs = send_campaign(campaigns, ledger, 5, 5, hold=frozenset({1, 3}))
    assert {x.decode() for x in redis_client.smembers(keys.delivery_grown)} == set(refs)
    store = _store(redis_client, keys, policy=DeliveryPolicy(steps_s=(30, 90)))
    assert store.discover_grown() == 1
    assert redis_client.scard(keys.delivery_grown) == 0
    assert int(store.fields("c1")["tracked"]) == 5  # both executions' rows, the held ones last
    assert store.discover_grown() == 0 and store.discover("c1") == 0  # the full scan agrees: nothing missed
    # A campaign sent later grows the set again; the first one's batches are not read.
    send_campaign(campaigns, ledger, 1200, 500, cid="c2")
    assert store.discover_grown() == 3
    assert int(store.fields("c2")["tracked"]) == 1200 and int(store.fields("c1")["tracked"]) == 5


def test_a_batch_that_grows_after_it_was_tracked_is_marked_again(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    # The flood guard held two of five back: the first execution records three rows, a second one two more.
    spec = CampaignSpec(message="hello", parts=1, account=ACCT, batch_size=5, campaign_id="c1")
    campaigns.create(spec, ((i + 1, phone(i)) for i in range(5)))
    ref = batch_ref("c1", 0)
    store = _store(redis_client, keys)
    for attempt, held in ((1, {phone(1), phone(3)}), (2, set())):
        token = uuid.uuid4().hex
        b = ledger.begin(ref, token=token, exec_lease_ms=30_000, account=ACCT)
        assert b.owned and ledger.mark_sending(ref, token=token, lease_ms=30_000, settle_margin_ms=1_000)
        out = Outcome()
        for p in b.phones:
            if p in held:
                out.remaining.append(p)
            else:
                out.sent += 1
                out.add_row(p, "sent", msg_id=f"m{attempt}", parts=1, cost="1.50")
        assert ledger.record(ref, token=token, outcome=out)[0]
        assert redis_client.sismember(keys.delivery_grown, ref)
        assert store.discover_grown() == 1 and not redis_client.sismember(keys.delivery_grown, ref)
        assert int(store.fields("c1")["tracked"]) == (3 if attempt == 1 else 5)


def test_the_horizon_makes_the_rest_unknown_and_a_late_final_status_still_counts(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    refs = send_campaign(campaigns, ledger, 4, 4)
    store = _store(redis_client, keys)
    store.apply([Status(refs[0], 0, 1, 0, 10, phone(0))])
    assert store.expire(refs[0]) == 3
    assert store.counts("c1") == {code_of(1): 1, CODE_UNKNOWN: 3}
    assert redis_client.zscore(keys.delivery_due, refs[0]) is None
    assert store.apply([Status(refs[0], 1, 0, 0, 99, phone(1)), Status(refs[0], 2, 20, 1, 99, phone(2))]) == [
        IGNORED, FINAL]
    assert store.counts("c1") == {code_of(1): 1, CODE_UNKNOWN: 2, code_of(20): 1}
    # The webhook got each row's final state once, the one that came after unknown again.
    assert store.cut_events() == 1
    (event,) = store.claim_events(max_events=10, lease_ms=1000)
    items = event.value.split("|", 3)[3]
    assert items.count(";") == 1 + 3 + 1 and f"{phone(2)},{code_of(20)},1,99;" in items


def test_delivered_final_once_the_ledger_ended_and_nothing_is_pending(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    refs = send_campaign(campaigns, ledger, 6, 3, failed=frozenset({5}))
    store = _store(redis_client, keys)
    assert campaigns.status("c1")["state"] == "completed"
    assert store.finish("c1") == ("delivering", 0, 0, 5)  # nothing tracked yet: not final
    store.discover("c1")
    assert store.finish("c1")[0:2] == ("delivering", 5)
    store.apply([Status(refs[0], i, 1, 0, 5, phone(i)) for i in range(3)]
                + [Status(refs[1], 0, 1, 0, 5, phone(3))])
    assert store.finish("c1")[0:2] == ("delivering", 1)
    store.expire(refs[1])
    assert store.finish("c1") == ("delivered_final", 0, 5, 5)
    assert store.finish("c1")[0] == "delivered_final"
    events = sorted(e.id for e in store.claim_events(max_events=10, lease_ms=1000))
    assert events == ["c:c1:completed", "c:c1:delivered_final"]  # each transition queued once


def test_the_webhook_cut_makes_one_event_per_batch_with_a_stable_id(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    refs = send_campaign(campaigns, ledger, 30, 15)
    store = _store(redis_client, keys)
    store.apply([Status(ref, i, 1, 0, 7, "+x") for ref in refs for i in range(15)])
    assert store.cut_events(max_items=10) == 4  # 15 = 10 + 5, twice
    ids = sorted(e.id for e in store.claim_events(max_events=10, lease_ms=60_000))
    assert ids == ["d:c1:0:1", "d:c1:0:2", "d:c1:1:1", "d:c1:1:2"]
    assert store.claim_events(max_events=10, lease_ms=60_000) == []  # leased
    store.event_done("d:c1:0:1")
    assert store.outbox() == {"waiting": 3, "dead": 0, "uncut_batches": 0}


def test_no_webhook_no_outbox(redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    refs = send_campaign(campaigns, ledger, 3, 3)
    store = DeliveryStore(redis_client, keys, default_webhook=False)
    store.apply([Status(refs[0], 0, 1, 0, 1, phone(0))])
    assert store.cut_events() == 0
    store.set_webhook("c1", "http://app.test/hook")
    store.apply([Status(refs[0], 1, 1, 0, 1, phone(1))])
    assert store.cut_events() == 1 and store.webhook_url("c1") == "http://app.test/hook"


def test_memory_is_a_record_per_batch_not_a_key_per_recipient(redis_client: redis.Redis, keys: Keys,
                                                              campaigns: Campaigns, ledger: Ledger) -> None:
    refs = send_campaign(campaigns, ledger, 5000, 500)
    keys_before = redis_client.dbsize()
    store = _store(redis_client, keys)
    store.apply([Status(ref, i, 1, 0, 3, phone(i)) for ref in refs for i in range(500)])
    records = sum(len(redis_client.get(keys.delivery_record(ref)) or b"") for ref in refs)
    assert records == 5000 * 8
    # ten records, the campaign's delivery HASH, the schedule, the outbox's new HASH; the set of batches
    # that grew is gone (all ten are tracked)
    assert redis_client.dbsize() - keys_before == 10 + 3 - 1
    assert not redis_client.exists(keys.delivery_grown)


def test_claimed_polls_are_leased(redis_client: redis.Redis, keys: Keys, campaigns: Campaigns,
                                  ledger: Ledger) -> None:
    send_campaign(campaigns, ledger, 20, 10)
    store = _store(redis_client, keys)
    store.discover("c1")
    now = server_time_ms(redis_client)
    assert store.claim_polls(max_batches=5, lease_ms=10_000, now_ms=now) == []  # not due yet
    later = now + 31_000
    assert sorted(store.claim_polls(max_batches=5, lease_ms=10_000, now_ms=later)) == ["c1:0", "c1:1"]
    assert store.claim_polls(max_batches=5, lease_ms=10_000, now_ms=later + 1) == []


def test_the_poll_schedule_backs_off_as_a_batch_ages() -> None:
    p = DeliveryPolicy(horizon_s=3600, steps_s=(30, 90, 300, 1800))
    assert [p.next_poll_in_s(a) for a in (0, 30, 100, 400, 1800, 3000)] == [30, 60, 200, 1400, 1800, 600]
    assert DeliveryPolicy(poll=False, horizon_s=500).next_poll_in_s(100) == 400


def test_a_batch_ages_from_its_send_not_from_when_it_was_first_tracked(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    refs = send_campaign(campaigns, ledger, 3, 3)
    sent_at = int(redis_client.hget(keys.batch(refs[0]), "sent_at") or 0)
    store = _store(redis_client, keys)
    store.apply([], track=refs, now_ms=sent_at + 2 * 86_400_000)  # tracked two days after it was sent
    assert store.first_tracked_ms(refs[0]) == sent_at  # so it is past a 24 h horizon at once
