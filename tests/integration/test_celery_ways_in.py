"""The users' other ways in: the Celery task by name (apps, beat schedules) and task events (Flower)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
from celery import Celery

from scheduler.keys import Keys
from tests.integration.helpers import assert_exactly_once, numbers, wait_until_final, write_phones

pytestmark = pytest.mark.integration


def test_an_app_that_does_not_import_the_package_enqueues_by_task_name_and_gets_one_campaign(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = celery_stack(workers=1, concurrency=4, sim_options={"latency_ms": 5})
    recipients = numbers(300)
    phones = write_phones(tmp_path / "phones.txt", recipients)
    client = Celery(broker=stack.redis_url)
    result = client.send_task("smsc.enqueue", kwargs={"phones_file": str(phones), "message": "By task name"},
                              queue="smsc")
    cid = "t" + result.id.replace("-", "")[:20]
    deadline = time.monotonic() + 60
    key = Keys(stack.env.get("SMSC_NAMESPACE", "smsc")).campaign(cid)
    while not redis_client.exists(key):
        assert time.monotonic() < deadline, "smsc.enqueue never created the campaign"
        time.sleep(0.2)
    st = wait_until_final(stack.env, cid, timeout_s=60)
    assert (st["state"], st["sent"]) == ("completed", 300)
    assert_exactly_once(stack.simulator.phones(), recipients)


def test_workers_send_task_events_for_flower(celery_stack, redis_client, tmp_path: Path) -> None:
    stack = celery_stack(workers=1, concurrency=2)
    client = Celery(broker=stack.redis_url)
    seen: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        with client.connection() as conn:
            recv = client.events.Receiver(conn, handlers={"*": seen.append})
            ready.set()
            # the capture ends with its timeout, or when the stack (and its Redis) is stopped
            with contextlib.suppress(Exception):
                recv.capture(limit=None, timeout=20, wakeup=True)

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    ready.wait(10)
    deadline = time.monotonic() + 15
    while not seen:  # the receiver is bound once any event (a worker's heartbeat) shows up
        assert time.monotonic() < deadline, "no events at all"
        time.sleep(0.1)
    phones = write_phones(tmp_path / "phones.txt", numbers(20))
    client.send_task("smsc.enqueue", kwargs={"phones_file": str(phones), "message": "events"}, queue="smsc")
    deadline = time.monotonic() + 20
    names = set()
    while time.monotonic() < deadline:
        names = {e.get("name") for e in list(seen) if e.get("type") == "task-received"}
        if {"smsc.enqueue", "smsc.send_batch"} <= names:
            break
        time.sleep(0.2)
    assert {"smsc.enqueue", "smsc.send_batch"} <= names
    assert "smsc.dispatch" not in names  # the clock is not work: it runs in the workers, not as tasks
    succeeded = [e for e in list(seen) if e.get("type") == "task-succeeded"]
    assert succeeded, "no task-succeeded events"
    received = [e for e in list(seen) if e.get("type") == "task-received" and e.get("name") == "smsc.send_batch"]
    assert all(len(e["args"]) < 64 for e in received)  # only a batch id travels
