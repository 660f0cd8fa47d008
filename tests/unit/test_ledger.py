"""The ledger and the due-queue (design invariants 1, 3, 4) and the recovery after a Redis restart.

Every script runs on the real redis-server; the clock is an argument (``T``), so leases, settle
waits and back-offs are stepped, never slept. A batch's life: claim (due → leased) → begin (a token
fences the execution) → mark_sending (the intent) → record (the outcome, counters in one step).
"""



from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.guards import Guards
from scheduler.keys import Keys, batch_ref
from scheduler.ledger import Begin, BeginVerdict, Ledger, Outcome, Settle
from scheduler.recovery import ensure_recovered
from scheduler.spreading import PlanOptions
from worker.dev.stack import RedisServer

T = 1_700_000_000_000
ACCT = "acct"
CID = "c1"
LEASE = 30_000
#: The request's hard deadline and the settle horizon of the recovery tests: settle 42 s after.
DEADLINE_S, HORIZON_S = 30.0, 12.0


def phone(i: int) -> str:
    return f"+7900{i:07d}"


def create(campaigns: Campaigns, n: int, batch_size: int, *, cid: str = CID, now_ms: int = T,
           plan: PlanOptions | None = None) -> None:
    spec = CampaignSpec(message="hello", parts=1, account=ACCT, batch_size=batch_size, campaign_id=cid, plan=plan)
    campaigns.create(spec, ((i + 1, phone(i)) for i in range(n)), now_ms=now_ms)


def claim_all(ledger: Ledger, now_ms: int = T) -> list[str]:
    return ledger.claim(now_ms=now_ms, window=10_000, claim_lease_ms=10_000, max_claim=10_000)


def begin(ledger: Ledger, ref: str, token: str, now_ms: int = T) -> Begin:
    return ledger.begin(ref, token=token, now_ms=now_ms, exec_lease_ms=LEASE, account=ACCT)


def recovered(client: redis.Redis, keys: Keys, now_ms: int, **kw: Any) -> bool:
    return ensure_recovered(client, keys, now_ms=now_ms, deadline_s=DEADLINE_S, horizon_s=HORIZON_S, **kw)


def counters(campaigns: Campaigns, cid: str = CID) -> dict[str, int]:
    s = campaigns.status(cid)
    return {k: s[k] for k in ("total", "sent", "failed", "cancelled", "pending")}


def due_score(r: redis.Redis, keys: Keys, ref: str) -> float | None:
    return r.zscore(keys.due, ref)


def batch(r: redis.Redis, keys: Keys, ref: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(keys.batch(ref)).items()}


# -- claim --------------------------------------------------------------------------------------------


def test_claim_takes_only_due_batches_oldest_first(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 2, 1, cid="late", now_ms=T + 5_000)
    create(campaigns, 2, 1, cid="early", now_ms=T)
    assert claim_all(ledger, T + 4_999) == ["early:0", "early:1"]
    assert claim_all(ledger, T + 5_000) == ["late:0", "late:1"]
    assert claim_all(ledger, T + 6_000) == []


def test_claim_window_limits_how_many_batches_are_leased_at_once(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 10, 1)
    first = ledger.claim(now_ms=T, window=4, claim_lease_ms=10_000, max_claim=100)
    assert len(first) == 4
    assert ledger.claim(now_ms=T, window=4, claim_lease_ms=10_000, max_claim=100) == []
    # One batch done: room for exactly one more.
    b = begin(ledger, first[0], "tok")
    ok, _ = ledger.record(first[0], token="tok", now_ms=T, outcome=Outcome(sent=len(b.phones)))
    assert ok
    assert len(ledger.claim(now_ms=T, window=4, claim_lease_ms=10_000, max_claim=100)) == 1
    assert len(ledger.claim(now_ms=T, window=100, claim_lease_ms=10_000, max_claim=2)) == 2  # max_claim


def test_claim_race_between_two_beats_claims_every_batch_exactly_once(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys, campaigns: Campaigns
) -> None:
    create(campaigns, 200, 1)
    barrier = threading.Barrier(2)
    claimed: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def beat(i: int) -> None:
        client = redis_server.client()
        try:
            led = Ledger(client, keys)
            barrier.wait(timeout=10)
            while refs := led.claim(now_ms=T, window=10_000, claim_lease_ms=10_000, max_claim=3):
                claimed[i].extend(refs)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    beats = [threading.Thread(target=beat, args=(i,)) for i in range(2)]
    for t in beats:
        t.start()
    for t in beats:
        t.join(timeout=30)
    assert not errors, errors
    everything = claimed[0] + claimed[1]
    assert len(everything) == 200, f"claimed {len(claimed[0])} + {len(claimed[1])}"
    assert sorted(everything) == sorted(batch_ref(CID, n) for n in range(200))
    assert redis_client.zcard(keys.due) == 0
    assert redis_client.zcard(keys.leased) == 200


# -- begin: the fence --------------------------------------------------------------------------------


def test_begin_second_execution_is_busy_while_the_first_holds_the_lease(ledger: Ledger,
                                                                         campaigns: Campaigns) -> None:
    create(campaigns, 5, 5)
    [ref] = claim_all(ledger)
    first = begin(ledger, ref, "A")
    assert first.verdict is BeginVerdict.OK
    assert first.phones == tuple(phone(i) for i in range(5))
    assert not first.settle
    assert begin(ledger, ref, "B", T + LEASE - 1).verdict is BeginVerdict.BUSY


def test_begin_after_the_lease_expired_fences_off_the_old_execution(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 5, 5)
    [ref] = claim_all(ledger)
    assert begin(ledger, ref, "A").verdict is BeginVerdict.OK
    new = begin(ledger, ref, "B", T + LEASE + 1)
    assert new.verdict is BeginVerdict.OK
    assert len(new.phones) == 5
    before = redis_client.hgetall(keys.batch(ref))
    # The old execution wakes up: it may neither send nor count anything.
    assert not ledger.mark_sending(ref, token="A", now_ms=T + LEASE + 2, settle_margin_ms=50_000, lease_ms=50_000)
    out = Outcome(sent=5)
    for i in range(5):
        out.add_row(phone(i), "sent", msg_id="c1-0")
    assert ledger.record(ref, token="A", now_ms=T + LEASE + 3, outcome=out) == (False, "")
    assert redis_client.hgetall(keys.batch(ref)) == before
    assert counters(campaigns) == {"total": 5, "sent": 0, "failed": 0, "cancelled": 0, "pending": 5}
    # The new owner carries on.
    assert ledger.mark_sending(ref, token="B", now_ms=T + LEASE + 4, settle_margin_ms=50_000, lease_ms=50_000)
    assert ledger.record(ref, token="B", now_ms=T + LEASE + 5, outcome=out) == (True, "completed")


def test_repeated_message_after_the_batch_is_done_sends_nothing_twice(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 3, 3)
    [ref] = claim_all(ledger)
    assert begin(ledger, ref, "A").verdict is BeginVerdict.OK
    assert ledger.mark_sending(ref, token="A", now_ms=T, settle_margin_ms=40_000, lease_ms=LEASE)
    assert ledger.record(ref, token="A", now_ms=T + 1, outcome=Outcome(sent=3)) == (True, "completed")
    assert begin(ledger, ref, "B", T + 2).verdict is BeginVerdict.DONE  # a Celery redelivery of the same message
    assert counters(campaigns)["sent"] == 3


def test_begin_of_an_unknown_batch_is_missing(ledger: Ledger) -> None:
    assert begin(ledger, "nope:0", "A").verdict is BeginVerdict.MISSING


# -- record: the counters ----------------------------------------------------------------------------


def test_record_updates_counters_so_they_always_add_up_to_the_total(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 10, 5)
    ref = claim_all(ledger)[0]
    b = begin(ledger, ref, "A")
    ledger.mark_sending(ref, token="A", now_ms=T, settle_margin_ms=40_000, lease_ms=LEASE)
    out = Outcome(sent=3, failed=1, sms=3, cost_milli=4500, remaining=list(b.phones[4:]), due_at_ms=T + 62_000)
    for p in b.phones[:3]:
        out.add_row(p, "sent", msg_id="c1-0", parts=1, cost="1.5")
    out.add_row(b.phones[3], "failed", code=7, reason="no route; sorry")
    assert ledger.record(ref, token="A", now_ms=T + 1, outcome=out) == (True, "running")
    assert counters(campaigns) == {"total": 10, "sent": 3, "failed": 1, "cancelled": 0, "pending": 6}
    s = campaigns.status(CID)
    assert (s["sms"], s["cost"]) == (3, "4.5")


def test_record_requeues_the_remaining_recipients_at_their_due_time(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 5, 5)
    [ref] = claim_all(ledger)
    b = begin(ledger, ref, "A")
    held = list(b.phones[3:])
    ledger.record(ref, token="A", now_ms=T, outcome=Outcome(sent=3, remaining=held, due_at_ms=T + 62_000))
    assert due_score(redis_client, keys, ref) == T + 62_000
    assert redis_client.zscore(keys.leased, ref) is None
    assert claim_all(ledger, T + 61_999) == []
    assert claim_all(ledger, T + 62_000) == [ref]
    again = begin(ledger, ref, "B", T + 62_000)
    assert (again.verdict, again.phones) == (BeginVerdict.OK, tuple(held))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), batch_size=st.integers(1, 5), rnd=st.randoms(use_true_random=False))
def test_counters_add_up_after_every_step_whatever_the_outcomes(
    redis_client: redis.Redis, n: int, batch_size: int, rnd: random.Random
) -> None:
    keys = Keys(f"h{uuid.uuid4().hex[:8]}")  # a namespace per example: examples share the flushed db
    ledger, campaigns = Ledger(redis_client, keys), Campaigns(redis_client, keys)
    create(campaigns, n, batch_size)
    now = T
    for round_no in range(6):
        last_round = round_no == 5  # then every recipient left gets its final state
        for ref in claim_all(ledger, now):
            token = uuid.uuid4().hex
            b = begin(ledger, ref, token, now)
            assert b.verdict is BeginVerdict.OK
            phones = list(b.phones)
            rnd.shuffle(phones)
            k_sent = rnd.randint(0, len(phones))
            k_failed = len(phones) - k_sent if last_round else rnd.randint(0, len(phones) - k_sent)
            out = Outcome(sent=k_sent, failed=k_failed, remaining=phones[k_sent + k_failed:], due_at_ms=now + 1)
            assert ledger.record(ref, token=token, now_ms=now, outcome=out)[0]
            c = counters(campaigns)
            assert c["sent"] + c["failed"] + c["cancelled"] + c["pending"] == c["total"] == n
            assert c["pending"] >= 0
        now += 1
    c = counters(campaigns)
    assert c["pending"] == 0
    assert c["sent"] + c["failed"] == n
    assert campaigns.status(CID)["state"] in {"completed", "failed"}


def test_campaign_completes_when_every_recipient_has_a_final_state(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 4, 2)
    refs = claim_all(ledger)
    assert ledger.record(refs[0], token="x", now_ms=T, outcome=Outcome(sent=2)) == (False, "")  # no begin
    begin(ledger, refs[0], "A")
    begin(ledger, refs[1], "B")
    assert ledger.record(refs[0], token="A", now_ms=T, outcome=Outcome(sent=2)) == (True, "running")
    assert ledger.record(refs[1], token="B", now_ms=T + 5, outcome=Outcome(failed=2)) == (True, "completed")
    s = campaigns.status(CID)
    assert (s["state"], s["sent"], s["failed"], s["finished_ms"]) == ("completed", 2, 2, T + 5)


def test_campaign_where_every_recipient_failed_ends_failed(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 2, 2)
    [ref] = claim_all(ledger)
    begin(ledger, ref, "A")
    assert ledger.record(ref, token="A", now_ms=T, outcome=Outcome(failed=2)) == (True, "failed")


# -- sweep and settle: an execution that died mid-send -------------------------------------------------


def test_sweep_takes_back_a_claimed_batch_whose_task_never_started(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 3, 3)
    [ref] = ledger.claim(now_ms=T, window=10, claim_lease_ms=5_000, max_claim=10)
    assert ledger.sweep(T + 4_999) == 0
    assert ledger.sweep(T + 5_000) == 1
    assert due_score(redis_client, keys, ref) == T + 5_000
    assert claim_all(ledger, T + 5_000) == [ref]
    assert begin(ledger, ref, "A", T + 5_000).verdict is BeginVerdict.OK


def test_sweep_puts_a_batch_caught_sending_back_only_after_settle_after(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 3, 3)
    [ref] = claim_all(ledger)
    assert begin(ledger, ref, "A").verdict is BeginVerdict.OK
    settle_after = T + 40_000
    sending = ledger.mark_sending(ref, token="A", now_ms=T, settle_margin_ms=40_000, lease_ms=35_000)
    assert (sending.ok, sending.sent_ms, sending.settle_after_ms) == (True, T, settle_after)
    # The worker is killed with the request in flight; its lease runs out.
    assert ledger.sweep(T + 34_999) == 0
    assert ledger.sweep(T + 35_001) == 1
    assert due_score(redis_client, keys, ref) == settle_after
    assert claim_all(ledger, settle_after - 1) == []
    # A stray duplicate message before that is deferred, not sent.
    early = begin(ledger, ref, "B", T + 36_000)
    assert (early.verdict, early.until_ms) == (BeginVerdict.DEFERRED, settle_after)
    assert due_score(redis_client, keys, ref) == settle_after
    assert claim_all(ledger, settle_after) == [ref]
    b = begin(ledger, ref, "C", settle_after)
    assert (b.verdict, b.settle, b.phones) == (BeginVerdict.OK, True, tuple(phone(i) for i in range(3)))
    assert b.attempts == 1
    # The old execution is fenced off.
    assert ledger.record(ref, token="A", now_ms=settle_after, outcome=Outcome(sent=3)) == (False, "")


def test_begin_on_a_sending_batch_whose_lease_ran_out_settles_first(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 2, 2)
    [ref] = claim_all(ledger)
    begin(ledger, ref, "A")
    ledger.mark_sending(ref, token="A", now_ms=T, settle_margin_ms=40_000, lease_ms=35_000)
    # No sweep yet: a redelivered message comes first, after settle_after.
    b = begin(ledger, ref, "B", T + 50_000)
    assert (b.verdict, b.settle) == (BeginVerdict.OK, True)
    # Settled: one recipient was already with the provider; the other is sent now; the flag clears.
    out = Outcome(sent=1, remaining=[b.phones[1]], due_at_ms=T + 50_000, settle=Settle.CLEAR)
    assert ledger.record(ref, token="B", now_ms=T + 50_000, outcome=out)[0]
    assert "settle" not in batch(redis_client, keys, ref)
    assert claim_all(ledger, T + 50_000) == [ref]
    again = begin(ledger, ref, "C", T + 50_000)
    assert (again.verdict, again.settle, again.phones) == (BeginVerdict.OK, False, (b.phones[1],))


# -- pause, cancel, account gate -----------------------------------------------------------------------


def test_paused_campaign_parks_its_batches_and_resume_puts_them_back(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 4, 2)
    assert campaigns.pause(CID, now_ms=T) == "paused"
    refs = claim_all(ledger)
    assert [begin(ledger, ref, f"t{ref}").verdict for ref in refs] == [BeginVerdict.PARKED] * 2
    assert redis_client.zcard(keys.due) == redis_client.zcard(keys.leased) == 0
    assert counters(campaigns)["pending"] == 4  # parked, not lost
    assert campaigns.resume(CID, now_ms=T + 1_000) == "queued"
    assert {m.decode() for m in redis_client.zrange(keys.due, 0, -1)} == set(refs)
    assert claim_all(ledger, T + 1_000) == refs
    assert [begin(ledger, ref, f"u{ref}", T + 1_000).verdict for ref in refs] == [BeginVerdict.OK] * 2


def test_stopped_account_parks_batches(redis_client: redis.Redis, keys: Keys, ledger: Ledger,
                                       campaigns: Campaigns) -> None:
    create(campaigns, 2, 2)
    Guards(redis_client, keys).account_outcome(ACCT, "auth", now_ms=T, reason="error 2")
    [ref] = claim_all(ledger)
    assert begin(ledger, ref, "A").verdict is BeginVerdict.PARKED
    assert redis_client.sismember(keys.parked(CID), ref)


def test_account_backoff_defers_the_batch_to_the_end_of_the_backoff(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 2, 2)
    until = Guards(redis_client, keys).account_outcome(ACCT, "block", now_ms=T).backoff_until_ms
    [ref] = claim_all(ledger)
    b = begin(ledger, ref, "A")
    assert (b.verdict, b.until_ms) == (BeginVerdict.DEFERRED, until)
    assert due_score(redis_client, keys, ref) == until
    assert redis_client.zscore(keys.leased, ref) is None
    assert claim_all(ledger, until) == [ref]
    assert begin(ledger, ref, "B", until).verdict is BeginVerdict.OK


def test_cancelled_campaign_begin_cancels_the_batch_recipients(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 6, 3)
    first = ledger.claim(now_ms=T, window=10, claim_lease_ms=10_000, max_claim=1)  # one batch in flight
    result = campaigns.cancel(CID, now_ms=T)
    assert result == {"state": "cancelled", "cancelled_now": 3}  # the waiting batch at once
    b = begin(ledger, first[0], "A")
    assert (b.verdict, b.cancelled) == (BeginVerdict.CANCELLED, 3)
    assert counters(campaigns) == {"total": 6, "sent": 0, "failed": 0, "cancelled": 6, "pending": 0}
    assert redis_client.zcard(keys.due) == redis_client.zcard(keys.leased) == 0
    assert campaigns.status(CID)["finished_ms"] == T


def test_cancelled_campaign_record_cancels_the_remaining_recipients(ledger: Ledger, campaigns: Campaigns) -> None:
    create(campaigns, 4, 4)
    [ref] = claim_all(ledger)
    b = begin(ledger, ref, "A")
    campaigns.cancel(CID, now_ms=T)  # while the batch is being sent
    out = Outcome(sent=1, remaining=list(b.phones[1:]), due_at_ms=T + 62_000)
    assert ledger.record(ref, token="A", now_ms=T + 1, outcome=out) == (True, "cancelled")
    assert counters(campaigns) == {"total": 4, "sent": 1, "failed": 0, "cancelled": 3, "pending": 0}


def test_cancelled_campaign_batch_to_settle_is_settled_before_it_is_cancelled(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 4, 4)
    [ref] = claim_all(ledger)
    begin(ledger, ref, "A")
    ledger.mark_sending(ref, token="A", now_ms=T, settle_margin_ms=40_000, lease_ms=35_000)
    ledger.sweep(T + 35_001)  # the worker died with its request in flight
    assert campaigns.cancel(CID, now_ms=T + 36_000)["cancelled_now"] == 0  # may be with the provider
    assert counters(campaigns)["cancelled"] == 0
    [ref] = claim_all(ledger, T + 40_000)
    b = begin(ledger, ref, "B", T + 40_000)
    assert (b.verdict, b.settle) == (BeginVerdict.OK, True)  # settle first, even though cancelled
    # status.php: two were taken by the provider; the other two are cancelled, not sent.
    out = Outcome(sent=2, remaining=list(b.phones[2:]), due_at_ms=T + 40_000, settle=Settle.CLEAR)
    assert ledger.record(ref, token="B", now_ms=T + 40_001, outcome=out) == (True, "cancelled")
    assert counters(campaigns) == {"total": 4, "sent": 2, "failed": 0, "cancelled": 2, "pending": 0}


def test_cancelled_campaign_queued_batch_with_settle_is_not_cancelled_before_it_is_settled(
    ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 3, 3)
    [ref] = claim_all(ledger)
    b = begin(ledger, ref, "A")
    # Unknown outcome: back to the queue, to be settled.
    ledger.record(ref, token="A", now_ms=T, outcome=Outcome(remaining=list(b.phones), due_at_ms=T + 40_000,
                                                             settle=Settle.SET))
    assert campaigns.cancel(CID, now_ms=T + 1)["cancelled_now"] == 0
    [ref] = claim_all(ledger, T + 40_000)
    b = begin(ledger, ref, "B", T + 40_000)
    assert (b.verdict, b.settle, len(b.phones)) == (BeginVerdict.OK, True, 3)


def test_cancelled_campaign_parked_batch_to_settle_goes_back_to_be_settled(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> None:
    create(campaigns, 3, 3)
    [ref] = claim_all(ledger)
    b = begin(ledger, ref, "A")
    ledger.record(ref, token="A", now_ms=T, outcome=Outcome(remaining=list(b.phones), due_at_ms=T + 40_000,
                                                             settle=Settle.SET))  # unknown outcome
    campaigns.pause(CID, now_ms=T + 1)
    [ref] = claim_all(ledger, T + 40_000)
    assert begin(ledger, ref, "B", T + 40_000).verdict is BeginVerdict.PARKED
    assert campaigns.cancel(CID, now_ms=T + 41_000)["cancelled_now"] == 0
    assert not redis_client.sismember(keys.parked(CID), ref)
    assert due_score(redis_client, keys, ref) == T + 41_000
    [ref] = claim_all(ledger, T + 41_000)
    b = begin(ledger, ref, "C", T + 41_000)
    assert (b.verdict, b.settle) == (BeginVerdict.OK, True)
    out = Outcome(sent=1, remaining=list(b.phones[1:]), due_at_ms=T + 41_000, settle=Settle.CLEAR)
    assert ledger.record(ref, token="C", now_ms=T + 41_001, outcome=out) == (True, "cancelled")
    assert counters(campaigns) == {"total": 3, "sent": 1, "failed": 0, "cancelled": 2, "pending": 0}


# -- recovery after a Redis restart ----------------------------------------------------------------------


def test_recovery_first_call_on_a_fresh_server_records_its_run_id(redis_client: redis.Redis, keys: Keys) -> None:
    assert recovered(redis_client, keys, T)
    run_id = redis_client.info("server")["run_id"]
    assert redis_client.hget(keys.meta, "run_id") == run_id.encode()
    assert redis_client.hget(keys.meta, "marked") == b"0"
    assert recovered(redis_client, keys, T + 1)


@pytest.fixture
def after_restart(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns
) -> Iterator[dict[str, str]]:
    """Two campaigns, recorded under this server's run_id; then the stored run_id is made an old one."""
    assert recovered(redis_client, keys, T)
    create(campaigns, 6, 2, cid="now")  # three batches due at T
    later = PlanOptions(period_h=None, freq_min=None, start_ms=T + 3_600_000, window=None, tz_h=0,
                        recipient_time=False)
    create(campaigns, 4, 2, cid="later", plan=later)  # due in an hour: cannot have been sent
    [sending] = ledger.claim(now_ms=T, window=10, claim_lease_ms=10_000, max_claim=1)
    assert begin(ledger, sending, "A").verdict is BeginVerdict.OK
    assert ledger.mark_sending(sending, token="A", now_ms=T, settle_margin_ms=40_000, lease_ms=LEASE)
    # Same server: nothing to recover, nothing touched.
    assert recovered(redis_client, keys, T + 1)
    assert "settle" not in batch(redis_client, keys, "now:1")
    redis_client.hset(keys.meta, "run_id", "old")
    yield {"sending": sending}


def test_recovery_after_a_restart_marks_due_batches_to_settle_at_settle_after(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, after_restart: dict[str, str]
) -> None:
    now, settle_after = T + 5_000, T + 47_000
    assert recovered(redis_client, keys, now)
    for ref in ("now:0", "now:1", "now:2"):
        b = batch(redis_client, keys, ref)
        assert (b["settle"], b["owner"], b["state"]) == ("1", "", "queued"), ref
        assert due_score(redis_client, keys, ref) == settle_after, ref
        assert redis_client.zscore(keys.leased, ref) is None
    assert redis_client.hget(keys.meta, "run_id") == redis_client.info("server")["run_id"].encode()
    assert redis_client.hget(keys.meta, "marked") == b"3"
    # The execution from before the restart is fenced off, and every batch settles before sending.
    assert ledger.record(after_restart["sending"], token="A", now_ms=now, outcome=Outcome(sent=2)) == (False, "")
    assert claim_all(ledger, settle_after - 1) == []
    refs = claim_all(ledger, settle_after)
    assert sorted(refs) == ["now:0", "now:1", "now:2"]
    assert {begin(ledger, ref, f"n{ref}", settle_after).settle for ref in refs} == {True}


def test_recovery_marked_batch_is_not_settled_before_settle_after_by_a_stray_message(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, after_restart: dict[str, str]
) -> None:
    settle_after = T + 47_000
    assert recovered(redis_client, keys, T + 5_000)
    early = begin(ledger, "now:1", "S", T + 6_000)  # a redelivered message, right after the restart
    assert (early.verdict, early.until_ms) == (BeginVerdict.DEFERRED, settle_after)
    assert due_score(redis_client, keys, "now:1") == settle_after
    assert batch(redis_client, keys, "now:1")["owner"] == ""


def test_recovery_after_a_restart_leaves_batches_not_yet_due_untouched(
    redis_client: redis.Redis, keys: Keys, after_restart: dict[str, str]
) -> None:
    before = {ref: batch(redis_client, keys, ref) for ref in ("later:0", "later:1")}
    assert recovered(redis_client, keys, T + 5_000)
    for ref, fields in before.items():
        assert batch(redis_client, keys, ref) == fields
        assert "settle" not in fields
        assert due_score(redis_client, keys, ref) == T + 3_600_000


def test_recovery_in_progress_elsewhere_makes_the_caller_wait(
    redis_client: redis.Redis, keys: Keys, after_restart: dict[str, str]
) -> None:
    redis_client.set(keys.meta + ":recovering", "someone", px=10_000)
    assert not recovered(redis_client, keys, T + 5_000)
    assert "settle" not in batch(redis_client, keys, "now:1")
    redis_client.delete(keys.meta + ":recovering")
    assert recovered(redis_client, keys, T + 5_000)
    assert batch(redis_client, keys, "now:1")["settle"] == "1"


class _LockHook:
    """A client that runs ``hook`` just before it takes the recovery lock: the interleaving where this
    process read the old run_id, and meanwhile another process finished the recovery and let go of it."""

    def __init__(self, client: redis.Redis, lock: str, hook: Callable[[], None]) -> None:
        self._client, self._lock, self._hook = client, lock, hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def set(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == self._lock:
            hook, self._hook = self._hook, lambda: None
            hook()
        return self._client.set(name, *args, **kwargs)


def test_recovery_runs_once_per_restart_even_when_a_late_process_took_the_lock_after_it(
    redis_client: redis.Redis, keys: Keys, ledger: Ledger, campaigns: Campaigns, after_restart: dict[str, str]
) -> None:
    settle_after = T + 47_000

    def another_process_recovers_and_a_batch_starts() -> None:
        assert recovered(redis_client, keys, T + 5_000)
        assert claim_all(ledger, settle_after)
        assert begin(ledger, "now:0", "N", settle_after).settle

    late = _LockHook(redis_client, keys.meta + ":recovering", another_process_recovers_and_a_batch_starts)
    assert recovered(late, keys, T + 6_000, ledger=ledger)  # type: ignore[arg-type]
    # The execution that began after the recovery keeps its batch: it was not fenced off a second time.
    assert batch(redis_client, keys, "now:0")["owner"] == "N"
    assert ledger.mark_sending("now:0", token="N", now_ms=settle_after, settle_margin_ms=40_000, lease_ms=LEASE)
    assert redis_client.hget(keys.meta, "marked") == b"3"  # the first recovery's figure, not a second one


def test_a_batch_to_settle_is_claimed_before_fresh_batches_that_were_due_earlier(
        ledger: Ledger, campaigns: Campaigns) -> None:
    """A campaign's fresh batches are all due at its start: in due order a batch whose outcome is unknown
    would wait behind every one of them, and the campaign would settle in one long tail at its end."""
    create(campaigns, 8, 2)  # four batches, all due at T
    [first] = ledger.claim(now_ms=T, window=10, claim_lease_ms=LEASE, max_claim=1)
    assert begin(ledger, first, "A").verdict is BeginVerdict.OK
    ledger.mark_sending(first, token="A", now_ms=T, settle_margin_ms=1_000, lease_ms=LEASE)
    ok, _ = ledger.record(first, token="A", now_ms=T + 100, outcome=Outcome(
        remaining=[phone(0), phone(1)], due_at_ms=T + 1_100, settle=Settle.SET))  # a timeout: settle at T + 1.1 s
    assert ok
    assert ledger.claim(now_ms=T + 500, window=10, claim_lease_ms=LEASE, max_claim=1) != [first]  # not before
    assert ledger.claim(now_ms=T + 1_100, window=10, claim_lease_ms=LEASE, max_claim=1) == [first]
    rest = claim_all(ledger, now_ms=T + 1_100)
    assert first not in rest and len(rest) == 2  # nothing claimed twice, nothing left behind
