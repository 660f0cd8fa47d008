"""The controls under load: pause, resume, cancel and report from several places at once while a campaign
is sending — each answers the same, nothing is lost, and exactly the recipients counted sent reached the
provider, once.
"""

from __future__ import annotations

import csv
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    breaches,
    chaos_stack,
    cli,
    enqueue,
    numbers,
    status,
    wait_for,
    wait_until_final,
)

pytestmark = pytest.mark.integration


def _at_once(stack: Any, *args: str, times: int = 3) -> list[str]:
    """The same command from several places at once."""
    barrier = threading.Barrier(times)

    def run(_: int) -> str:
        barrier.wait()
        return cli(stack.env, *args).stdout

    with ThreadPoolExecutor(times) as pool:
        return list(pool.map(run, range(times)))


def test_pause_resume_cancel_and_report_are_safe_from_several_places_at_once_while_sending(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = chaos_stack(celery_stack, workers=2, concurrency=2, env={"SMSC_BATCH_SIZE": "20"},
                   latency_ms=300)
    # Long enough to be still sending when cancelled: 3,000 at ~900/s once ended between the resume's wait
    # (a `status` child a poll) and the three cancels on a slow CI machine.
    total = 10_000
    phones = numbers(total)
    cid = enqueue(stack, tmp_path / "p.txt", phones)
    wait_for(lambda: status(stack.env, cid)["sent"] >= 200, timeout_s=60)

    assert _at_once(stack, "pause", cid) == [f"campaign {cid}: paused\n"] * 3
    time.sleep(2)  # what was in flight settles normally
    frozen = status(stack.env, cid)
    time.sleep(2)
    st = status(stack.env, cid)
    assert st["state"] == "paused" and st["sent"] == frozen["sent"] < total
    assert st["sent"] + st["pending"] == total

    assert _at_once(stack, "resume", cid) == [f"campaign {cid}: running\n"] * 3
    wait_for(lambda: status(stack.env, cid)["sent"] >= frozen["sent"] + 200, timeout_s=60)

    outs = _at_once(stack, "cancel", cid)
    assert all(out.startswith(f"campaign {cid}: cancelled (") for out in outs), outs
    st = wait_until_final(stack.env, cid, timeout_s=60)
    assert st["state"] == "cancelled" and st["pending"] == 0
    assert st["sent"] + st["cancelled"] == total and st["failed"] == 0 and st["cancelled"] > 0
    time.sleep(1)
    seen = stack.simulator.phones()

    reports = [tmp_path / f"r{i}.csv" for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda p: cli(stack.env, "report", cid, "--csv", str(p)), reports))
    texts = {p.read_text() for p in reports}
    assert len(texts) == 1
    with reports[0].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == total and {r["phone"] for r in rows} == set(phones)
    by_state = {s: {r["phone"] for r in rows if r["state"] == s} for s in ("sent", "cancelled")}
    assert len(by_state["sent"]) == st["sent"] and len(by_state["cancelled"]) == st["cancelled"]
    # Exactly the recipients counted sent reached the provider, once; no cancelled one did.
    assert set(seen) == by_state["sent"] and set(seen.values()) == {1}
    # A finished campaign's controls change nothing.
    assert cli(stack.env, "pause", cid).stdout == f"campaign {cid}: cancelled\n"
    assert cli(stack.env, "resume", cid).stdout == f"campaign {cid}: cancelled\n"
    assert status(stack.env, cid)["state"] == "cancelled"
    assert breaches(stack.simulator.summary()) == {}
