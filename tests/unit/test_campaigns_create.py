"""One campaign per id, whoever asks at once: the claim, its lease, the fences, a dead intake taken over.

Real concurrency on the real redis-server: threads of one process, and a second process killed with
SIGKILL in the middle of its intake. The outcome a user cares about: one campaign, each recipient in
it exactly once, and nothing left behind by the intake that lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from scheduler.campaigns import CampaignError, Campaigns, CampaignSpec, Receipt
from scheduler.keys import Keys, batch_ref
from scheduler.ledger import server_time_ms
from worker.dev.stack import RedisServer

ACCT = "acct"
CID = "order42"
ROOT = Path(__file__).resolve().parents[2]


def phone(i: int) -> str:
    return f"+7900{i:07d}"


def numbered(n: int, *, start: int = 0, pause_every: int = 0, pause_s: float = 0.0) -> Iterator[tuple[int, str]]:
    for i in range(start, start + n):
        if pause_every and i and i % pause_every == 0:
            time.sleep(pause_s)  # a slow producer: the other intake arrives while this one streams
        yield i + 1, phone(i)


def spec(*, message: str = "hello", batch_size: int = 100) -> CampaignSpec:
    return CampaignSpec(message=message, parts=1, account=ACCT, batch_size=batch_size, campaign_id=CID)


def queued_phones(r: redis.Redis, keys: Keys) -> Counter[str]:
    """Every phone of every batch in the due-queue (what will be sent), with its count."""
    seen: Counter[str] = Counter()
    for ref in r.zrange(keys.due, 0, -1):
        phones = (r.hget(keys.batch(ref.decode()), "phones") or b"").decode()
        seen.update(p for p in phones.split(",") if p)
    return seen


def batch_keys(r: redis.Redis) -> set[str]:
    return {k.decode() for k in r.scan_iter(match="*:b:*", count=1000)}


def run_in_threads(*jobs: Any) -> list[Receipt | BaseException]:
    """Start every job at the same moment (a barrier); their receipts or exceptions, in order."""
    barrier = threading.Barrier(len(jobs))
    out: list[Receipt | BaseException | None] = [None] * len(jobs)

    def run(i: int, job: Any) -> None:
        barrier.wait()
        try:
            out[i] = job()
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(not t.is_alive() for t in threads)
    return [x for x in out if x is not None]


@pytest.mark.parametrize("slow", [False, True], ids=["at-once", "second-arrives-mid-intake"])
def test_two_enqueues_of_one_id_at_once_make_one_campaign_with_each_recipient_once(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys, slow: bool
) -> None:
    n = 6_000
    pause = {"pause_every": 1_000, "pause_s": 0.05} if slow else {}
    # Each thread its own client, as two processes would have.
    a, b = (Campaigns(redis_server.client(), keys) for _ in range(2))
    results = run_in_threads(lambda: a.create(spec(), numbered(n, **pause)),
                             lambda: b.create(spec(), numbered(n, **pause)))
    assert all(isinstance(x, Receipt) for x in results), results
    receipts = [x for x in results if isinstance(x, Receipt)]
    assert sorted(r.existing for r in receipts) == [False, True]
    assert {(r.campaign_id, r.total, r.batches) for r in receipts} == {(CID, n, n // 100)}
    assert queued_phones(redis_client, keys) == Counter({phone(i): 1 for i in range(n)})
    assert len(batch_keys(redis_client)) == n // 100
    assert not redis_client.exists(keys.seen(CID))
    st = a.status(CID)
    assert (st["state"], st["total"], st["pending"]) == ("queued", n, n)


def test_two_enqueues_of_one_id_with_different_texts_at_once_queue_one_and_refuse_the_other(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    a, b = (Campaigns(redis_server.client(), keys) for _ in range(2))
    results = run_in_threads(lambda: a.create(spec(message="first"), numbered(3_000, pause_every=1_000, pause_s=0.05)),
                             lambda: b.create(spec(message="second"), numbered(3_000, start=10_000)))
    receipts = [x for x in results if isinstance(x, Receipt)]
    errors = [x for x in results if isinstance(x, BaseException)]
    assert len(receipts) == 1 and len(errors) == 1
    assert isinstance(errors[0], CampaignError) and "another text" in str(errors[0])
    winner = a.fields(CID)["message"]
    start = 0 if winner == "first" else 10_000
    assert queued_phones(redis_client, keys) == Counter({phone(i): 1 for i in range(start, start + 3_000)})


_CHILD = textwrap.dedent("""
    import sys, time
    import redis
    from scheduler.campaigns import Campaigns, CampaignSpec
    from scheduler.keys import Keys

    def items():
        # The intake reads a chunk (2,000) ahead of its dedup's answer: after 4,500 lines the first
        # chunk's 20 batches are written, the second chunk's dedup is sent, 500 lines wait for theirs.
        for i in range(4_500):
            yield i + 1, f"+7900{i:07d}"
        print("streamed", flush=True)
        time.sleep(600)  # a producer that hangs here, and is then killed

    c = Campaigns(redis.Redis.from_url(sys.argv[1]), Keys("t"), claim_lease_ms=1_000)
    c.create(CampaignSpec(message="hello", parts=1, account="acct", batch_size=100, campaign_id="order42"), items())
""")


def test_an_intake_killed_mid_stream_is_taken_over_by_the_next_enqueue_of_its_id(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, redis_server.url], env=env, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "streamed"
        dead = Campaigns(redis_client, keys, claim_lease_ms=1_000)
        st = dead.status(CID)
        assert (st["state"], st["intake_alive"]) == ("planning", True)
        deadline = time.monotonic() + 10  # its last stage was sent before it said so, not answered yet
        while len(batch_keys(redis_client)) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(batch_keys(redis_client)) == 20  # it wrote batches, and committed nothing
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    # The interrupted campaign says so, and refuses controls that would mean nothing.
    time.sleep(1.1)
    st = dead.status(CID)
    assert (st["state"], st["intake_alive"], st["total"]) == ("planning", False, 0)
    with pytest.raises(CampaignError, match="its enqueue was interrupted and nothing of it is queued"):
        dead.cancel(CID)
    # Enqueueing the same id again takes the claim over, drops what the dead intake wrote, and finishes.
    receipt = Campaigns(redis_client, keys, claim_lease_ms=1_000).create(spec(), numbered(1_234))
    assert (receipt.existing, receipt.total, receipt.batches) == (False, 1_234, 13)
    assert queued_phones(redis_client, keys) == Counter({phone(i): 1 for i in range(1_234)})
    assert batch_keys(redis_client) == {keys.batch(batch_ref(CID, i)) for i in range(13)}
    assert not redis_client.exists(keys.seen(CID))


def test_a_second_enqueue_waits_while_the_first_is_alive_and_answers_with_its_campaign(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    # The first intake outlives several leases (its claim is renewed), the second waits it out.
    first = Campaigns(redis_server.client(), keys, claim_lease_ms=1_000)
    second = Campaigns(redis_server.client(), keys, claim_lease_ms=1_000)

    def later() -> Receipt:
        time.sleep(0.2)
        return second.create(spec(), numbered(1_000))

    results = run_in_threads(lambda: first.create(spec(), numbered(1_000, pause_every=100, pause_s=0.3)), later)
    assert [r.existing for r in results if isinstance(r, Receipt)] == [False, True], results
    assert queued_phones(redis_client, keys) == Counter({phone(i): 1 for i in range(1_000)})


def test_an_intake_that_stalled_past_its_lease_writes_nothing_after_the_takeover(
    redis_client: redis.Redis, keys: Keys
) -> None:
    t0 = server_time_ms(redis_client)
    stalled = Campaigns(redis_client, keys, claim_lease_ms=1_000)
    taker = Campaigns(redis_client, keys, claim_lease_ms=1_000)
    taken: list[Receipt] = []

    def stalling() -> Iterator[tuple[int, str]]:
        # Dedup'ed, and the first chunk's 20 batches written (the intake reads a chunk ahead of the answer).
        yield from numbered(4_500)
        # Frozen here past its lease (stepped clock): another enqueue of the id takes over and commits.
        taken.append(taker.create(spec(), numbered(700, start=5_000), now_ms=t0 + 5_000))
        yield from numbered(500, start=4_500)  # woken up: its next write must be refused

    with pytest.raises(CampaignError, match="another enqueue of this id took it over"):
        stalled.create(spec(), stalling(), now_ms=t0)
    assert (taken[0].existing, taken[0].total) == (False, 700)
    assert queued_phones(redis_client, keys) == Counter({phone(i): 1 for i in range(5_000, 5_700)})
    assert batch_keys(redis_client) == {keys.batch(batch_ref(CID, i)) for i in range(7)}
    st = taker.status(CID)
    assert (st["state"], st["total"], st["batches"]) == ("queued", 700, 7)


def test_a_campaign_being_enqueued_refuses_controls_and_says_so(redis_client: redis.Redis, keys: Keys) -> None:
    c = Campaigns(redis_client, keys)
    seen: dict[str, Any] = {}

    def items() -> Iterator[tuple[int, str]]:
        yield from numbered(10)
        seen["status"] = c.status(CID)
        for control in (lambda: c.pause(CID), lambda: c.resume(CID), lambda: c.cancel(CID)):
            with pytest.raises(CampaignError, match="is being enqueued right now"):
                control()
        yield from numbered(10, start=10)

    assert c.create(spec(), items()).total == 20
    assert (seen["status"]["state"], seen["status"]["intake_alive"]) == ("planning", True)
    assert c.pause(CID) == "paused"


def test_the_commit_and_the_controls_wait_for_the_disk_and_say_what_they_found(
    make_redis: Any, keys: Keys
) -> None:
    aof = make_redis(appendonly=True).client()
    c = Campaigns(aof, keys)
    receipt = c.create(spec(), numbered(10))
    assert receipt.durable.startswith("on disk")
    assert c.last_durable is not None and bool(c.last_durable)
    c.pause(CID)
    assert c.last_durable is not None and bool(c.last_durable)


def test_a_commit_on_a_server_without_aof_says_it_is_not_durable(redis_client: redis.Redis, keys: Keys) -> None:
    receipt = Campaigns(redis_client, keys).create(spec(), numbered(10))
    assert receipt.durable.startswith("not durable") and "appendonly no" in receipt.durable


def test_every_intake_write_is_fenced_by_the_claim(redis_client: redis.Redis, keys: Keys) -> None:
    # The scripts' contract, directly: with a token that no longer holds the claim nothing is written.
    c = Campaigns(redis_client, keys)
    ckey, seen = keys.campaign(CID), keys.seen(CID)
    claim = c.scripts.create(keys=[ckey], args=["claim", "mine", 30_000, "", "{}", "id", CID])
    assert isinstance(claim, list) and claim[0] == b"claimed"
    assert c.scripts.intake(keys=[seen, ckey], args=["79001", 60_000, "stale", 30_000, ""]) == 0
    assert not redis_client.exists(seen)
    assert c.scripts.intake(keys=[seen, ckey], args=["79001,79001", 60_000, "mine", 30_000, ""]) == b"10"
    bkey = keys.batch(batch_ref(CID, 0))
    for op, extra_keys, args in [("stage", [bkey], [1, "+79001", ""]), ("due", [bkey], [5]),
                                 ("drop", [seen], [""]), ("renew", [], []), ("abandon", [], []),
                                 ("commit", [keys.due, keys.account_campaigns(ACCT), keys.campaigns, seen, keys.meta],
                                  ["run", 0])]:
        assert c.scripts.create(keys=[ckey, *extra_keys], args=[op, "stale", 30_000, "", *args]) == 0, op
    assert not redis_client.exists(bkey) and redis_client.exists(seen) and not redis_client.exists(keys.due)
    assert redis_client.hget(ckey, "state") == b"planning"


@pytest.mark.parametrize("loss", ["a batch", "a dedup key"])
def test_a_commit_refuses_an_intake_whose_writes_were_lost_and_leaves_nothing(
    redis_client: redis.Redis, keys: Keys, loss: str
) -> None:
    # What a Redis restart in the middle of an intake does (appendfsync everysec: the last second of
    # writes gone, while the producer goes on): the commit finds fewer recipients than were counted.
    c = Campaigns(redis_client, keys)

    def items() -> Iterator[tuple[int, str]]:
        # The intake reads a chunk (2,000 lines) ahead of its dedup's answer: after 4,500 lines the first
        # chunk's batches are sent (wait until Redis has them), then they are lost.
        yield from numbered(4_500)
        bkey, seen, key = keys.batch(batch_ref(CID, 3)), keys.seen(CID), phone(7).lstrip("+")
        deadline = time.monotonic() + 10
        while not (redis_client.exists(bkey) and redis_client.sismember(seen, key)) and time.monotonic() < deadline:
            time.sleep(0.01)
        if loss == "a batch":
            redis_client.delete(bkey)
        else:
            redis_client.srem(seen, key)
        yield from numbered(500, start=4_500)

    with pytest.raises(CampaignError, match="some of the intake's writes are not in Redis"):
        c.create(spec(), items())
    assert [k for k in redis_client.scan_iter(count=1000)] == []
    assert c.create(spec(), numbered(3_000)).total == 3_000  # and it can be enqueued again
