"""While an intake runs the cyclic collector runs less often (scheduler/_gc.py); after it, as it was."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import redis

from scheduler._gc import INTAKE_THRESHOLD, fewer_collections
from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.keys import Keys


def test_an_intake_collects_less_often_and_leaves_the_collector_as_it_was(redis_client: redis.Redis,
                                                                           keys: Keys) -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    seen: list[tuple[int, int, int]] = []

    def items() -> Iterator[tuple[int, str]]:
        for i in range(3_000):
            if i == 2_500:
                seen.append(gc.get_threshold())
            yield i + 1, f"+7900{i:07d}"

    receipt = Campaigns(redis_client, keys).create(
        CampaignSpec(message="hi", parts=1, account="acct", campaign_id="c1"), items())
    assert receipt.total == 3_000
    assert seen == [(max(before[0], INTAKE_THRESHOLD), *before[1:])]
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)


def test_intakes_at_once_restore_the_collector_when_the_last_one_ends() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    first_in, first_out = threading.Event(), threading.Event()

    def first() -> None:
        with fewer_collections():
            first_in.set()
            first_out.wait(10)

    t = threading.Thread(target=first)
    t.start()
    first_in.wait(10)
    with fewer_collections():
        first_out.set()
        t.join(10)
        assert gc.get_threshold()[0] == max(before[0], INTAKE_THRESHOLD)  # the first one ended, not the second
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)
