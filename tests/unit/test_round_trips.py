"""The batch's Redis work in fewer round trips (issue 13): ``lua/launch.lua`` decides as the three steps it
replaces did (the request dedup, the slot's last check, the send intent) and writes nothing unless the
request may leave; scripts queued bare on a pipeline (:meth:`scheduler.scripts.Script.queue`) survive a
server that forgot them (``SCRIPT FLUSH``, as a restart does): the command that did not run says so, and
the next call finds them loaded. All on the real redis-server, the clock stepped."""

from __future__ import annotations

import redis

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.guards import Guards, SlotResult, Take, TakeVerdict
from scheduler.keys import Keys, batch_ref
from scheduler.ledger import Launch, LaunchVerdict, Ledger, Outcome

T = 1_700_000_000_000
ACCT = "acct"
LOGIN = "acct"
LEASE = 30_000


def _batch(campaigns: Campaigns, ledger: Ledger, owner: str = "A") -> str:
    spec = CampaignSpec(message="hello", parts=1, account=ACCT, batch_size=3, campaign_id="c1")
    campaigns.create(spec, ((i + 1, f"+7900000000{i}") for i in range(3)), now_ms=T)
    ref = batch_ref("c1", 0)
    assert ledger.begin(ref, token=owner, now_ms=T, exec_lease_ms=LEASE, account=ACCT).owned
    return ref


def _slot(guards: Guards, owner: str = "A") -> None:
    guards.prove_credentials(LOGIN, "fp")
    assert guards.try_slot(LOGIN, owner, lease_ms=10_000, now_ms=T) is SlotResult.TAKEN


def _launch(ledger: Ledger, ref: str, owner: str = "A", fp: str = "f1", now_ms: int = T + 1) -> Launch:
    return ledger.launch(ref, token=owner, login=LOGIN, fingerprint=fp, slot_lease_ms=20_000, lease_ms=LEASE,
                         settle_margin_ms=40_000, now_ms=now_ms)


def test_launch_marks_sending_sets_the_dedup_and_renews_the_slot(redis_client: redis.Redis, keys: Keys,
                                                                  campaigns: Campaigns, ledger: Ledger,
                                                                  guards: Guards) -> None:
    ref = _batch(campaigns, ledger)
    _slot(guards)
    got = _launch(ledger, ref)
    assert got.verdict is LaunchVerdict.SEND and got.sending is not None
    assert got.sending.sent_ms == T + 1 and got.sending.settle_after_ms == T + 1 + 40_000
    assert redis_client.hget(keys.batch(ref), "state") == b"sending"
    assert 0 < redis_client.pttl(keys.send_request(LOGIN, "f1")) <= 60_000
    assert redis_client.zscore(keys.inflight(LOGIN), "A") == T + 1 + 20_000
    # The identical request again: refused with the time left, and nothing else changes.
    again = _launch(ledger, ref, now_ms=T + 2)
    assert again.verdict is LaunchVerdict.DEDUPLICATED and 0 < again.wait_ms <= 60_000
    assert redis_client.hget(keys.batch(ref), "attempts") == b"1"


def test_a_closed_slot_or_a_lost_batch_sends_nothing_and_leaves_no_dedup(redis_client: redis.Redis, keys: Keys,
                                                                         campaigns: Campaigns, ledger: Ledger,
                                                                         guards: Guards) -> None:
    ref = _batch(campaigns, ledger)
    _slot(guards)
    redis_client.hset(keys.account(LOGIN), "state", "stopped")  # an error 2 since the slot was taken
    assert _launch(ledger, ref).verdict is LaunchVerdict.SLOT_CLOSED
    assert not redis_client.exists(keys.send_request(LOGIN, "f1"))
    assert redis_client.hget(keys.batch(ref), "state") != b"sending"
    redis_client.hdel(keys.account(LOGIN), "state")
    # Another execution owns the batch now (this one's lease ran out and it was begun again).
    assert _launch(ledger, ref, owner="B").verdict is LaunchVerdict.SLOT_CLOSED  # B holds no slot either
    _slot(guards, "B")
    got = _launch(ledger, ref, owner="B")
    assert got.verdict is LaunchVerdict.LOST and got.sending is None
    assert not redis_client.exists(keys.send_request(LOGIN, "f1"))
    assert _launch(ledger, ref).verdict is LaunchVerdict.SEND  # the owner still may


def test_a_pipeline_of_bare_scripts_after_the_server_forgot_them(redis_client: redis.Redis, keys: Keys,
                                                                 campaigns: Campaigns, ledger: Ledger,
                                                                 guards: Guards) -> None:
    ref = _batch(campaigns, ledger)
    _slot(guards)
    assert _launch(ledger, ref).verdict is LaunchVerdict.SEND
    redis_client.script_flush()
    pipe = redis_client.pipeline(transaction=False)
    pipe.hget(keys.batch(ref), "state")
    ledger.record_on(pipe, ref, token="A", outcome=Outcome(sent=3))
    state, reply = ledger.scripts.execute(pipe)
    assert state == b"sending" and isinstance(reply, redis.exceptions.NoScriptError)
    assert redis_client.hget(keys.campaign("c1"), "sent") in (None, b"0")  # it did not run
    # Loaded again for the next call, queued the same way.
    pipe = redis_client.pipeline(transaction=False)
    ledger.record_on(pipe, ref, token="A", outcome=Outcome(sent=3))
    (reply,) = ledger.scripts.execute(pipe)
    assert ledger.recorded(reply)[0]
    assert redis_client.hget(keys.campaign("c1"), "sent") == b"3"


def _take(guards: Guards, ref: str, phones: list[str], *, owner: str = "A", fp: str = "f1", cap: int = 14,
          stop_key: str = "", now_ms: int = T + 1) -> Take:
    return guards.take(LOGIN, owner, lease_ms=20_000, cap=cap, probe=False, ref=ref, fingerprint=fp, phones=phones,
                       stop_key=stop_key, stop_fields=phones, exec_lease_ms=LEASE, settle_margin_ms=40_000,
                       now_ms=now_ms)


PHONES = [f"7900000000{i}" for i in range(3)]


def test_take_gives_the_slot_and_the_way_to_the_post_in_one_step(redis_client: redis.Redis, keys: Keys,
                                                                 campaigns: Campaigns, ledger: Ledger,
                                                                 guards: Guards) -> None:
    ref = _batch(campaigns, ledger)
    guards.prove_credentials(LOGIN, "fp")
    got = _take(guards, ref, PHONES, stop_key=keys.stoplist)
    assert got.verdict is TakeVerdict.SEND and got.sent_ms == T + 1
    assert redis_client.zscore(keys.inflight(LOGIN), "A") == T + 1 + 20_000  # the slot, this execution's
    assert redis_client.hget(keys.batch(ref), "state") == b"sending"
    assert redis_client.exists(keys.send_request(LOGIN, "f1"))
    assert guards.admit_phones(LOGIN, PHONES, now_ms=T + 2) == [0, 0, 0]  # each counted: the second of a chain
    assert redis_client.get(keys.flood(LOGIN, PHONES[0])).startswith(b"2:")
    # Again (another execution's identical request): it gets a slot and is told to wait.
    again = _take(guards, ref, PHONES, owner="B", stop_key=keys.stoplist)
    assert again.verdict is TakeVerdict.DEDUPLICATED and again.wait_ms > 0


def test_take_takes_nothing_when_no_slot_is_free_or_the_account_is_closed(redis_client: redis.Redis, keys: Keys,
                                                                          campaigns: Campaigns, ledger: Ledger,
                                                                          guards: Guards) -> None:
    ref = _batch(campaigns, ledger)
    guards.prove_credentials(LOGIN, "fp")
    assert guards.try_slot(LOGIN, "other", lease_ms=10_000, cap=1, now_ms=T) is SlotResult.TAKEN
    assert _take(guards, ref, PHONES, cap=1, stop_key=keys.stoplist).verdict is TakeVerdict.BUSY
    redis_client.hset(keys.account(LOGIN), "state", "stopped")
    assert _take(guards, ref, PHONES, stop_key=keys.stoplist).verdict is TakeVerdict.CLOSED
    # Nothing was written: no slot for A, no flood count, no dedup, no intent.
    assert redis_client.zscore(keys.inflight(LOGIN), "A") is None
    assert not any(redis_client.exists(keys.flood(LOGIN, p)) for p in PHONES)
    assert not redis_client.exists(keys.send_request(LOGIN, "f1"))
    assert redis_client.hget(keys.batch(ref), "state") != b"sending"


def test_a_stop_listed_or_held_recipient_hands_the_request_back_to_be_built_again(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger, guards: Guards) -> None:
    ref = _batch(campaigns, ledger)
    guards.prove_credentials(LOGIN, "fp")
    redis_client.hset(keys.stoplist, PHONES[0], "1|cli|")
    guards.flood_policy = type(guards.flood_policy)(limit=1, gap_ms=guards.flood_policy.gap_ms)
    assert guards.admit_phones(LOGIN, [PHONES[2]], now_ms=T) == [0]  # its chain is full (limit 1)
    got = _take(guards, ref, PHONES, stop_key=keys.stoplist)
    assert got.verdict is TakeVerdict.SCREENED
    assert got.stopped == [True, False, False]
    assert got.waits[0] == 0 and got.waits[1] == 0 and got.waits[2] > T
    # The slot is the caller's; the admitted one is counted, the stop-listed one is not; no dedup, no intent.
    assert redis_client.zscore(keys.inflight(LOGIN), "A") is not None
    assert redis_client.exists(keys.flood(LOGIN, PHONES[1])) and not redis_client.exists(keys.flood(LOGIN, PHONES[0]))
    assert not redis_client.exists(keys.send_request(LOGIN, "f1"))
    assert redis_client.hget(keys.batch(ref), "state") != b"sending"
