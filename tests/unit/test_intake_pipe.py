"""The intake's round trips on a pipe (``scheduler/_pipe.py``): sent at once, answered a chunk later.

The dedup and stage scripts leave while the next rows are read; what Redis answers is read in order and
checked before the plan. These tests break the pipe mid-intake: whatever was sent and not answered is
unknown, so the intake queues nothing, leaves nothing behind, says so in one line, and the same
campaign can be enqueued again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from scheduler.campaigns import CampaignError, Campaigns, CampaignSpec
from scheduler.keys import Keys

CID = "order42"


def _numbered(n: int, *, after: int = 0, then: Callable[[], Any] | None = None) -> Iterator[tuple[int, str]]:
    for i in range(n):
        if then is not None and i == after:
            then()
        yield i + 1, f"+7900{i:07d}"


def _spec() -> CampaignSpec:
    return CampaignSpec(message="hello", parts=1, account="acct", batch_size=100, campaign_id=CID)


def test_scripts_lost_mid_intake_queue_nothing_and_the_campaign_can_be_enqueued_again(
        redis_client: redis.Redis, keys: Keys) -> None:
    c = Campaigns(redis_client, keys)
    with pytest.raises(CampaignError, match=r"Redis lost the intake's scripts .*nothing was queued: enqueue it again"):
        c.create(_spec(), _numbered(9_000, after=4_500, then=redis_client.script_flush))
    assert list(redis_client.scan_iter(count=1000)) == []
    receipt = c.create(_spec(), _numbered(9_000))
    assert (receipt.existing, receipt.total, receipt.batches) == (False, 9_000, 90)


def test_a_connection_cut_mid_intake_queues_nothing_and_the_campaign_can_be_enqueued_again(
        make_redis: Callable[..., Any]) -> None:
    server = make_redis()
    r, keys = server.client(), Keys("t")
    c = Campaigns(r, keys)

    def cut() -> None:  # every connection but the one asking (the intake's pipe among them)
        server.client().client_kill_filter(_type="normal", skipme=True)

    with pytest.raises(CampaignError, match=r"the connection to Redis failed during the intake .*nothing was queued"):
        c.create(_spec(), _numbered(9_000, after=4_500, then=cut))
    assert list(r.scan_iter(count=1000)) == []
    receipt = c.create(_spec(), _numbered(9_000))
    assert (receipt.existing, receipt.total, receipt.batches) == (False, 9_000, 90)


def test_the_first_line_of_a_number_wins_across_chunks_answered_a_chunk_late(
        redis_client: redis.Redis, keys: Keys) -> None:
    # Every number twice, the second time in a later chunk: the first line of each always wins.
    items = [(i + 1, f"+7900{i % 3_000:07d}") for i in range(6_000)]
    duplicates: list[int] = []
    receipt = Campaigns(redis_client, keys).create(_spec(), iter(items),
                                                   on_duplicate=lambda line, _: duplicates.append(line))
    assert (receipt.total, receipt.duplicates) == (3_000, 3_000)
    assert duplicates == list(range(3_001, 6_001))


def test_on_staged_tells_how_many_recipients_redis_holds_staged_while_the_input_is_still_read(
        redis_client: redis.Redis, keys: Keys) -> None:
    told: list[tuple[int, int, int]] = []  # (n told, recipients in the batches Redis holds now, lines read)
    read = 0

    def numbered() -> Iterator[tuple[int, str]]:
        nonlocal read
        for item in _numbered(9_000):
            read += 1
            yield item

    def on_staged(cid: str, n: int) -> None:
        assert cid == CID
        held = int(redis_client.hget(keys.campaign(cid), "batches") or 0)
        in_redis = sum(int(redis_client.hget(keys.batch(f"{cid}:{i}"), "n") or 0) for i in range(held))
        told.append((n, in_redis, read))

    receipt = Campaigns(redis_client, keys).create(_spec(), numbered(), on_staged=on_staged)
    assert receipt.total == 9_000
    ns = [n for n, _, _ in told]
    assert ns == sorted(ns) and ns[-1] == 9_000  # growing, the last one all of them
    assert all(in_redis >= n for n, in_redis, _ in told)  # what it tells is there to be read
    assert any(lines < 9_000 for _, _, lines in told)  # and it is told while the input is read on


def test_an_input_that_pauses_longer_than_the_clients_health_check_interval_is_still_queued_whole(
        redis_server: Any, redis_client: redis.Redis, keys: Keys) -> None:  # redis_client: a flushed server
    # An app's rows from a slow source: a pause past health_check_interval (30 s in production, 1 s
    # here) used to send a PING on the pipe's connection with replies still unread there, which read
    # a script's reply as the PING's and ended the intake ("Bad response from PING health check").
    r = redis.Redis.from_url(redis_server.url, health_check_interval=1)
    try:
        receipt = Campaigns(r, keys).create(_spec(), _numbered(9_000, after=4_500, then=lambda: time.sleep(1.5)))
        assert (receipt.existing, receipt.total, receipt.batches) == (False, 9_000, 90)
    finally:
        r.close()
