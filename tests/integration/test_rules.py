"""The provider's rules, kept by all workers together (real workers, the simulator counts breaches)."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.integration.helpers import (
    assert_exactly_once,
    breaches,
    cli,
    last_json,
    numbers,
    wait_until_final,
    write_phones,
)
from worker.api import enqueue_campaign
from worker.settings import Settings

pytestmark = pytest.mark.integration


def _settings(stack) -> Settings:
    return Settings(redis_url=stack.redis_url, smsc_login="demo", smsc_password="demo-password",
                    smsc_base_url=stack.smsc_base_url)


def test_sixty_campaigns_to_the_same_ten_numbers_respect_the_subscriber_chain_rule(
        celery_stack, redis_client) -> None:
    stack = celery_stack(workers=2, concurrency=8, sim_options={"latency_ms": 20})
    phones = numbers(10)
    s = _settings(stack)
    cids = [enqueue_campaign(phones, f"Campaign {i}: your offer #{i}", settings=s).campaign_id for i in range(60)]

    for cid in cids:  # the 51st message to a number waits for a 60 s gap: about a minute in all
        st = wait_until_final(stack.env, cid, timeout_s=180, poll_s=1)
        assert (st["state"], st["sent"]) == ("completed", 10)

    summary = stack.simulator.summary()
    assert_exactly_once(stack.simulator.phones(), phones, times=60)
    assert summary["breaches"]["flood"] == 0
    assert summary["breaches"]["identical_send"] == 0
    assert breaches(summary) == {}
    per_pair = Counter((r["phone"], r["text"]) for r in stack.simulator.record(limit=1000))
    assert set(per_pair.values()) == {1}  # every number got every one of the 60 texts once


def test_sixteen_worker_slots_never_put_fifteen_requests_in_flight(celery_stack, redis_client, tmp_path) -> None:
    stack = celery_stack(workers=2, concurrency=8, sim_options={"latency_ms": 100},
                         env={"SMSC_BATCH_SIZE": "10", "SMSC_WINDOW": "48"})
    recipients = numbers(5_000)
    phones = write_phones(tmp_path / "p.txt", recipients)
    cid = last_json(cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", "hi", "--json"))[
        "campaign_id"]
    st = wait_until_final(stack.env, cid, timeout_s=240)
    assert st["state"] == "completed"
    summary = stack.simulator.summary()
    assert_exactly_once(stack.simulator.phones(), recipients)
    assert summary["peak_inflight"] <= 14, summary
    assert summary["peak_inflight"] >= 8  # the slots were really used, not idle
    assert breaches(summary) == {}


def test_error_9_and_error_4_are_retried_until_everything_is_sent_once_and_the_back_off_shows(
        celery_stack, redis_client, tmp_path) -> None:
    stack = celery_stack(workers=2, concurrency=4, sim_options={"latency_ms": 10, "seed": 7},
                         env={"SMSC_BATCH_SIZE": "20", "SMSC_BACKOFF": "1"})
    # The first request meets error 4 for sure (a 3 % rate may not come up in a small campaign), then
    # the provider answers error 9 to 20 % of the requests and error 4 to 3 %.
    stack.simulator.configure(error_rates={"4": 1.0})
    recipients = numbers(300)
    phones = write_phones(tmp_path / "p.txt", recipients)
    cid = last_json(cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", "hi", "--json"))[
        "campaign_id"]
    deadline = time.monotonic() + 30
    while not stack.simulator.summary()["errors_answered"].get("4"):
        assert time.monotonic() < deadline, "no request reached the provider"
        time.sleep(0.1)
    stack.simulator.configure(error_rates={"9": 0.2, "4": 0.03})
    st = wait_until_final(stack.env, cid, timeout_s=400, poll_s=1)
    assert (st["state"], st["sent"], st["failed"]) == ("completed", 300, 0)
    summary = stack.simulator.summary()
    assert summary["errors_answered"].get("9", 0) > 0 and summary["errors_answered"].get("4", 0) > 0
    assert_exactly_once(stack.simulator.phones(), recipients)
    assert breaches(summary) == {}
    assert st["account_backoffs"] > 0  # the account-wide back-off is visible in the status
    text = cli(stack.env, "status", cid).stdout
    assert re.search(r"\d+ back-offs?\b", text), text


def test_a_spread_campaign_leaves_in_groups_at_its_due_times(celery_stack, redis_client, tmp_path: Path) -> None:
    """0.1 h, a group every 2 minutes: three groups at 0, 120 and 240 s (± 2 s) — in real time."""
    stack = celery_stack(workers=1, concurrency=4, sim_options={"latency_ms": 10})
    recipients = numbers(90)
    phones = write_phones(tmp_path / "p.txt", recipients)
    t0 = time.time()
    receipt = last_json(cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", "spread",
                            "--period", "0.1", "--freq", "2", "--json"))
    assert receipt["groups"] == 3
    st = wait_until_final(stack.env, receipt["campaign_id"], timeout_s=300, poll_s=2)
    assert st["sent"] == 90
    arrivals: dict[str, float] = {r["phone"]: r["ts_ms"] / 1000 for r in stack.simulator.record(limit=1000)}
    by_group: dict[int, list[float]] = defaultdict(list)
    for i, phone in enumerate(recipients):
        by_group[i // 30].append(arrivals[phone])
    start = receipt["first_due_ms"] / 1000
    assert start - t0 < 5
    for k in range(3):
        first, last = min(by_group[k]), max(by_group[k])
        assert abs(first - (start + 120 * k)) <= 2, f"group {k} left {first - start:.1f} s after the start"
        assert last - first <= 2, f"group {k} took {last - first:.1f} s"
