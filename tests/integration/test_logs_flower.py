"""Real worker processes: their log lines as JSON (no full number, no password), what Flower sees of them
(task events for the work, none for the clock), sending without beat, and a beat schedule of the user's."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from scheduler.keys import Keys
from tests.integration.helpers import assert_exactly_once, cli, last_json, numbers, wait_until_final, write_phones
from worker.dev.chaos import PASSWORD, find_secret_in_files
from worker.dev.stack import CeleryBeat

pytestmark = pytest.mark.integration



class _Events:
    """A Celery event receiver on the stack's broker, in a thread, from now until :meth:`stop`."""

    def __init__(self, broker_url: str) -> None:
        self.client = Celery(broker=broker_url)
        self.seen: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._recv: Any = None
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the event receiver did not start"

    def _listen(self) -> None:
        with self.client.connection() as conn:
            self._recv = self.client.events.Receiver(conn, handlers={"*": self.seen.append})
            self._ready.set()
            with contextlib.suppress(Exception):  # ends with should_stop, or when the stack's Redis goes
                self._recv.capture(limit=None, timeout=None, wakeup=True)

    def tasks(self) -> list[dict[str, Any]]:
        return [e for e in list(self.seen) if str(e.get("type", "")).startswith("task-")]

    def wait_for(self, what: str, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e.get("type") == what for e in list(self.seen)):
            assert time.monotonic() < deadline, f"no {what} event within {timeout_s:g} s"
            time.sleep(0.1)

    def stop(self) -> None:
        if self._recv is not None:
            self._recv.should_stop = True
        self._thread.join(5)


@pytest.fixture
def events_of() -> Iterator[Any]:
    started: list[_Events] = []

    def make(broker_url: str) -> _Events:
        started.append(_Events(broker_url))
        return started[-1]

    yield make
    for e in started:
        e.stop()


def _campaign(stack: Any, tmp_path: Path, count: int, *, message: str = "Hi") -> tuple[str, list[str]]:
    recipients = numbers(count)
    phones = write_phones(tmp_path / f"phones-{count}.txt", recipients)
    out = cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", message, "--json")
    return str(last_json(out)["campaign_id"]), recipients


def test_without_beat_the_workers_clock_sends_and_flower_sees_only_the_batches(
        celery_stack, redis_client, tmp_path: Path, events_of) -> None:
    stack = celery_stack(workers=2, concurrency=2, beats=0, env={"SMSC_BATCH_SIZE": "50"})
    events = events_of(stack.redis_url)
    events.wait_for("worker-heartbeat", timeout_s=15)  # the receiver is bound: events reach it
    time.sleep(5)  # idle: the clock steps dispatch, delivery and webhooks some ten times each
    idle = events.tasks()
    assert idle == [], f"task events while idle: {sorted({(e['type'], e.get('name')) for e in idle})}"

    cid, recipients = _campaign(stack, tmp_path, 200)
    st = wait_until_final(stack.env, cid, timeout_s=60)
    assert (st["state"], st["sent"]) == ("completed", 200)
    assert_exactly_once(stack.simulator.phones(), recipients)

    deadline = time.monotonic() + 10
    refs = {f"{cid}:{n}" for n in range(4)}
    while True:  # every batch's events (a task-succeeded may trail the campaign's end a little)
        tasks = events.tasks()
        succeeded = [e for e in tasks if e["type"] == "task-succeeded"]
        received = [e for e in tasks if e["type"] == "task-received" and e.get("name") == "smsc.send_batch"]
        # Every batch is in Flower: the argument of a task, or one of the batches its run sent (its result).
        shown = {ref for e in received for ref in _args(e)} | {ref for e in succeeded for ref in _result_refs(e)}
        if {e["uuid"] for e in received} <= {e["uuid"] for e in succeeded} and shown >= refs:
            break
        assert time.monotonic() < deadline, f"events incomplete: {len(received)} received, {len(succeeded)} done"
        time.sleep(0.2)
    assert shown == refs
    assert {ref for e in received for ref in _args(e)} <= refs  # only the ref travels
    names = {e.get("name") for e in tasks if e["type"] in ("task-received", "task-sent")}
    assert names <= {"smsc.send_batch", "smsc.poll_batch"}, names  # no clock tick among them


def _result_refs(event: dict[str, Any]) -> list[str]:
    """The batches a ``smsc.send_batch`` run sent, from its result as Flower shows it (saferepr of a dict)."""
    return re.findall(r"'([0-9a-z]+:\d+)'", event.get("result", ""))


def _args(event: dict[str, Any]) -> list[str]:
    # Celery renders the arguments with saferepr: "('3f9a0c21b7:0',)"
    args = event.get("args", "")
    refs = re.findall(r"'([^']*)'", args)
    assert args == repr(tuple(refs)), f"more than the ref in a task's arguments: {args}"
    return refs


def test_json_logs_every_worker_line_is_json_with_the_batch_and_no_number_or_password(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = celery_stack(workers=1, concurrency=2, beats=1, login="logs", password=PASSWORD,
                         env={"SMSC_LOG_FORMAT": "json", "SMSC_BATCH_SIZE": "20"})
    cid, recipients = _campaign(stack, tmp_path, 60)
    # and a task that fails with a number in its exception (the traceback goes to the log)
    Celery(broker=stack.redis_url).send_task(
        "smsc.enqueue", kwargs={"phones_file": f"/nonexistent/{recipients[0]}.txt", "message": "x"}, queue="smsc")
    st = wait_until_final(stack.env, cid, timeout_s=60)
    assert (st["state"], st["sent"]) == ("completed", 60)
    worker_log = stack.workers[0].log_text
    deadline = time.monotonic() + 20
    while "smsc.enqueue" not in worker_log() or "Traceback" not in worker_log():
        assert time.monotonic() < deadline, "the failing smsc.enqueue left no traceback in the log"
        time.sleep(0.2)
    stack.workers[0].terminate()
    stack.beats[0].stop()

    for proc in (stack.workers[0], stack.beats[0]):
        lines = proc.log_text().splitlines()
        assert lines, f"{proc.what} wrote nothing"
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                pytest.fail(f"{proc.what}: not a JSON line: {line!r}")
        assert all({"timestamp", "level", "logger", "message"} <= r.keys() for r in records)
        for line in lines:
            leaked = [p for p in recipients if p in line or p[1:] in line]  # as sent, or without the 7
            assert not leaked, f"{proc.what}: a full number in {line!r}"
    records = [json.loads(line) for line in stack.workers[0].log_text().splitlines()]
    batch_lines = [r for r in records if r.get("batch")]
    assert {r["batch"] for r in batch_lines} == {f"{cid}:{n}" for n in range(3)}
    assert all(r["campaign"] == cid for r in batch_lines)
    assert any("ready." in r["message"] for r in records)
    assert find_secret_in_files(stack.workdir, PASSWORD) == []


def test_a_beat_schedule_of_the_users_enqueues_its_recurring_campaign(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = celery_stack(workers=1, concurrency=2, beats=0)
    recipients = numbers(30, start=7_000)
    phones = write_phones(tmp_path / "recurring.txt", recipients)
    # what a user writes: their own module with the app's beat_schedule (every second here, for the test)
    (stack.workdir / "my_schedule.py").write_text(
        "from worker.app import app\n"
        "app.conf.beat_schedule = {'recurring': {'task': 'smsc.enqueue', 'schedule': 1.0,\n"
        f"    'kwargs': {{'phones_file': {str(phones)!r}, 'message': 'Recurring'}}}}}}\n")
    beat = CeleryBeat(env=stack.env, name="users-beat", app="my_schedule", workdir=stack.workdir)
    beat.start()
    key = Keys(stack.namespace).campaigns
    try:
        deadline = time.monotonic() + 30
        while not redis_client.zcard(key):
            assert time.monotonic() < deadline, f"the schedule's smsc.enqueue made no campaign:\n{beat.log_tail()}"
            time.sleep(0.2)
    finally:
        beat.stop()
    first = redis_client.zrange(key, 0, 0)[0].decode()  # by creation time
    st = wait_until_final(stack.env, first, timeout_s=60)
    assert (st["state"], st["sent"]) == ("completed", 30)
    assert set(stack.simulator.phones()) >= set(recipients)


def test_a_worker_without_clock_sends_only_once_a_worker_with_one_runs(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = celery_stack(workers=0, beats=0)
    stack.add_worker(extra_args=["--without-clock"])
    cid, recipients = _campaign(stack, tmp_path, 40)
    time.sleep(4)  # four dispatch intervals
    assert stack.simulator.phones() == {}
    stack.add_worker(pool="threads", concurrency=4)  # its clock hands the batches to both workers
    st = wait_until_final(stack.env, cid, timeout_s=60)
    assert (st["state"], st["sent"]) == ("completed", 40)
    assert_exactly_once(stack.simulator.phones(), recipients)
