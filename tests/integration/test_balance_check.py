"""The enqueue's balance check (issue 10) against the simulator over HTTP, through the Python API: its
requests leave while the input is still being read, and a campaign the balance cannot pay is refused
all the same, with nothing queued."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from scheduler.campaigns import CampaignError
from scheduler.keys import Keys
from worker.api import enqueue_campaign
from worker.dev.stack.simulator import DEMO_LOGIN, DEMO_PASSWORD
from worker.settings import Settings

pytestmark = pytest.mark.integration

ROWS = 20_000
WAIT_AT = 12_000  # rows read before the input waits for the check (its first 1,000 are staged by then)


def _settings(redis_server: Any, sim: Any, namespace: str, password: str = DEMO_PASSWORD) -> Settings:
    return Settings(redis_url=redis_server.url, smsc_login=DEMO_LOGIN, smsc_password=SecretStr(password),
                    smsc_base_url=sim.url, smsc_namespace=namespace)


def _queued(r: redis.Redis, namespace: str) -> list[bytes]:
    """The namespace's campaign, batch and due-queue keys."""
    prefix = Keys(namespace).prefix
    return [k for k in r.scan_iter(prefix + "*", count=1000)
            if k.decode().removeprefix(prefix).startswith(("c:", "b:", "due"))]


def _pairs(sim: Any, seen: list[int], requests: int = 3) -> Iterator[tuple[str, str]]:
    """``ROWS`` personal texts; at ``WAIT_AT`` the input waits (up to 30 s) for the balance check's
    ``requests`` — three: the quote of the first 1,000 recipients (two batches of 500) and balance.php —
    and ``seen`` keeps the simulator's request count then."""
    for i in range(ROWS):
        if i == WAIT_AT:
            deadline = time.monotonic() + 30
            while sim.summary()["requests"] < requests and time.monotonic() < deadline:
                time.sleep(0.02)
            seen.append(sim.summary()["requests"])
        yield f"+7918{i:07d}", f"Заказ {i} готов к выдаче"


def test_the_balance_is_asked_while_the_rows_are_still_read_and_not_again_at_the_commit(
        make_simulator: Any, redis_server: Any, redis_client: redis.Redis) -> None:
    sim = make_simulator(latency_ms=50)
    seen: list[int] = []
    receipt = enqueue_campaign(_pairs(sim, seen), settings=_settings(redis_server, sim, "early"))
    assert receipt.total == ROWS
    assert seen == [3]  # both quotes and balance.php answered before the input was read to its end
    assert sim.summary()["requests"] == 3  # and nothing more asked before the commit
    assert sim.summary()["messages"] == 0
    assert len(_queued(redis_client, "early")) > ROWS // 500  # the campaign, its batches and the due queue


def test_a_campaign_the_balance_cannot_pay_is_refused_from_the_early_answer_with_nothing_queued(
        make_simulator: Any, redis_server: Any, redis_client: redis.Redis) -> None:
    sim = make_simulator(extra_args=["--balance", "100"])
    seen: list[int] = []
    with pytest.raises(CampaignError) as refused:
        enqueue_campaign(_pairs(sim, seen), settings=_settings(redis_server, sim, "short"))
    line = str(refused.value)
    # 20,000 one-part texts at 1.50, estimated from the first 1,000.
    assert line.startswith("balance 100.00 is 29900.00 short of the estimate 30000.00 (cost 30000.00 for 20,000 SMS "
                           "to 20,000 recipients (estimated from 1,000 of 20,000 recipients)); nothing was queued")
    assert "\n" not in line
    assert seen == [3]
    assert _queued(redis_client, "short") == []


def test_wrong_credentials_found_by_the_early_check_refuse_the_enqueue_once_with_nothing_queued(
        make_simulator: Any, redis_server: Any, redis_client: redis.Redis) -> None:
    sim = make_simulator()
    seen: list[int] = []
    with pytest.raises(CampaignError) as refused:
        enqueue_campaign(_pairs(sim, seen, requests=1), settings=_settings(redis_server, sim, "typo", "a-typo"))
    line = str(refused.value)
    assert line.startswith("the provider refused the account's credentials (") and "nothing was queued" in line
    assert "a-typo" not in line and "\n" not in line
    assert seen == [1] and sim.summary()["errors_answered"] == {"2": 1}  # the first quote; nothing after it
    assert _queued(redis_client, "typo") == []
