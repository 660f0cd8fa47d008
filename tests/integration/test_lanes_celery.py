"""Priority lanes through real workers: an urgent campaign enqueued while a bulk one keeps every slot busy
reaches the provider ahead of the bulk batches already due, and two normal campaigns progress together.

What is asserted is order at the provider (the simulator's record), never a wall-clock figure."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import cli, last_json, numbers, wait_for, wait_until_final, write_phones

pytestmark = pytest.mark.integration


def _messages(sim: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while page := sim.record(offset=len(out), limit=1000):
        out += page
    return out


def test_an_urgent_code_overtakes_the_bulk_campaign_already_due(celery_stack: Any, redis_client: Any,
                                                               tmp_path: Path) -> None:
    stack = celery_stack(workers=1, concurrency=4, sim_options={"latency_ms": 150})
    bulk = write_phones(tmp_path / "bulk.txt", numbers(8_000, prefix="7930"))
    b = last_json(cli(stack.env, "enqueue", "--phones-file", str(bulk), "--message", "Sale", "--priority", "bulk",
                      "--batch-size", "20", "--json"))
    wait_for(lambda: len(_messages(stack.simulator)) >= 200, timeout_s=60)  # bulk is under way, slots busy
    before = len(_messages(stack.simulator))
    code = write_phones(tmp_path / "code.txt", ["+79399999999"])
    u = last_json(cli(stack.env, "enqueue", "--phones-file", str(code), "--message", "Your code: 4711",
                      "--priority", "urgent", "--json"))
    ust = wait_until_final(stack.env, u["campaign_id"], timeout_s=60)
    msgs = _messages(stack.simulator)
    code_ms = next(m["ts_ms"] for m in msgs if m["phone"] == "79399999999")
    # Between the urgent campaign's commit and its arrival only what was already in the workers' hands
    # went out: the requests in flight and the tasks prefetched (4 + 4 batches of 20) and the one or two
    # claims in between — not the bulk's remaining batches (hundreds of them were due).
    overtaken = [m for m in msgs if ust["queued_ms"] <= m["ts_ms"] < code_ms and m["phone"].startswith("7930")]
    assert len(overtaken) <= 12 * 20, (len(overtaken), before)
    st = wait_until_final(stack.env, b["campaign_id"], timeout_s=240)
    bulk_msgs = [m for m in _messages(stack.simulator) if m["phone"].startswith("7930")]
    assert st["sent"] == len(bulk_msgs) == 8_000
    assert sum(1 for m in bulk_msgs if m["ts_ms"] > code_ms) > 1_000  # it went ahead of most of the bulk


def test_two_normal_campaigns_started_together_progress_together(celery_stack: Any, redis_client: Any,
                                                                tmp_path: Path) -> None:
    stack = celery_stack(workers=1, concurrency=4, sim_options={"latency_ms": 20})
    ids = []
    start = f"0{int(time.time()) + 8}"  # both due at the same second (a Unix time), enqueued before it
    for name, prefix in (("a", "7931"), ("b", "7932")):
        phones = write_phones(tmp_path / f"{name}.txt", numbers(2_000, prefix=prefix))
        ids.append(last_json(cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", f"hi {name}",
                                 "--batch-size", "20", "--at", start, "--json"))["campaign_id"])
    for cid in ids:
        wait_until_final(stack.env, cid, timeout_s=240)
    msgs = _messages(stack.simulator)
    # At every point of the run the two are within 10 % of each other (plus a batch or two in flight).
    a = b = 0
    worst = 0
    for m in msgs:
        if m["phone"].startswith("7931"):
            a += 1
        elif m["phone"].startswith("7932"):
            b += 1
        worst = max(worst, abs(a - b))
    assert (a, b) == (2_000, 2_000)
    assert worst <= 200, worst  # within 10 % of 2,000 at every point
