"""Recurring campaigns from beat schedules: real beat processes, real workers, the simulator over HTTP.

One campaign per scheduled run whatever sends it — two beats at once, a beat killed right after it sent
a run and started again (it sends that run again: its state was not saved), two redbeat beats (one holds
the lock; the other takes over when the first dies) — and each recipient gets one message per run.

The beats and workers run a small app module written into the stack's folder: ``worker.app`` with a
beat schedule of one entry made by :func:`worker.recurring.recurring_entry`, importing
``worker.recurring`` itself (until the app's include list has it).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.schedules import crontab

from scheduler.audiences import Audiences
from scheduler.keys import Keys
from tests.integration.helpers import numbers, wait_for, wait_until_final, write_phones
from worker.app import app
from worker.dev.stack import Stack
from worker.recurring import Cadence, cadence_of, recurring_entry

pytestmark = pytest.mark.integration

MESSAGE = "Weekly digest: new arrivals are in"
APP = '''
import os
from datetime import timedelta

from worker.app import app
import worker.recurring  # the task and the publish-time header (until the app's include list has it)
from worker.recurring import recurring_entry

every = float(os.environ["RECUR_EVERY_S"])
extra = {"at_s": int(os.environ["RECUR_AT_S"]), "every_s": int(every)} if os.environ.get("RECUR_AT_S") else {}
app.conf.beat_schedule = {
    **app.conf.beat_schedule,
    "weekly": recurring_entry("weekly", timedelta(seconds=every), audience=os.environ["RECUR_AUDIENCE"],
                              message=os.environ["RECUR_MESSAGE"], **extra),
}
app.conf.beat_max_loop_interval = 1
if os.environ.get("RECUR_REDBEAT"):
    app.conf.beat_scheduler = "redbeat.RedBeatScheduler"
    app.conf.redbeat_redis_url = app.conf.broker_url
    app.conf.redbeat_key_prefix = "recur-test:"
    app.conf.redbeat_lock_timeout = 5
'''
SENT = re.compile(r"Sending due task weekly \(smsc\.recurring\)")
RUN = re.compile(r"recurring weekly: run [^:]+:[^:]+:\d\d UTC (?:-> campaign (\S+) \((new|existing)|has its campaign "
                 r"(\S+) already)")


def stack_with_schedule(celery_stack: Callable[..., Stack], tmp_path: Path, *, every_s: float, audience: str,
                        beats: int = 0, redbeat: bool = False, at_s: int | None = None) -> Stack:
    workdir = tmp_path / "stack"
    workdir.mkdir()
    (workdir / "recur_app.py").write_text(APP, encoding="utf-8")
    env = {"RECUR_EVERY_S": str(every_s), "RECUR_AUDIENCE": audience, "RECUR_MESSAGE": MESSAGE}
    if redbeat:
        env["RECUR_REDBEAT"] = "1"
    if at_s is not None:
        env["RECUR_AT_S"] = str(at_s)
    stack = celery_stack(workers=0, beats=0, env=env, workdir=workdir, sim_options={"latency_ms": 5})
    stack.add_worker(app="recur_app", concurrency=4)
    for _ in range(beats):
        stack.add_beat(app="recur_app")
    return stack


def log_of(proc: Any) -> str:
    return Path(proc.log_path).read_text(encoding="utf-8", errors="replace")


def sends(beat: Any) -> int:
    return len(SENT.findall(log_of(beat)))


def handled(stack: Stack) -> Counter[str]:
    """Messages the workers handled, by the campaign of their run."""
    out: Counter[str] = Counter()
    for w in stack.workers:
        for new_id, _, existing_id in RUN.findall(log_of(w)):
            out[new_id or existing_id] += 1
    return out


def campaigns(client: redis.Redis) -> list[str]:
    return sorted(x.decode() for x in client.zrange(Keys("smsc").campaigns, 0, -1) if x.startswith(b"weekly."))


def per_campaign_and_phone(stack: Stack) -> Counter[tuple[str, str]]:
    """Messages the provider accepted, by (campaign, phone): the request id is ``<campaign>-<batch>``."""
    assert stack.simulator is not None
    out: Counter[tuple[str, str]] = Counter()
    offset = 0
    while page := stack.simulator.record(offset=offset, limit=10_000):
        for m in page:
            out[(str(m["id"]).rpartition("-")[0], m["phone"])] += 1
        offset += len(page)
    return out


def assert_each_recipient_once_per_run(stack: Stack, cids: list[str], recipients: list[str]) -> None:
    for cid in cids:
        st = wait_until_final(stack.env, cid, timeout_s=90)
        assert (st["state"], st["total"], st["sent"]) == ("completed", len(recipients), len(recipients)), st
    got = per_campaign_and_phone(stack)
    want = {(cid, p.lstrip("+")): 1 for cid in cids for p in recipients}
    assert dict(got) == want


def test_two_beats_make_one_campaign_per_run_of_a_saved_list_and_each_recipient_gets_one_message_per_run(
        celery_stack, redis_client, tmp_path: Path) -> None:
    recipients = numbers(40, prefix="7911")
    Audiences(redis_client, Keys("smsc")).add("vip", recipients)
    stack = stack_with_schedule(celery_stack, tmp_path, every_s=3, audience="list:vip", beats=2)
    wait_for(lambda: len(campaigns(redis_client)) >= 4, timeout_s=60)
    for beat in stack.beats:
        beat.stop()
    wait_for(lambda: sum(handled(stack).values()) >= sum(sends(b) for b in stack.beats), timeout_s=30)
    cids = campaigns(redis_client)
    per_beat = [sends(b) for b in stack.beats]
    assert min(per_beat) >= 2, per_beat  # both beats sent every run they saw
    # Both beats sent each run: the messages are about twice the campaigns, the campaigns one per run.
    assert len(cids) <= max(per_beat) + 1 < sum(per_beat), (cids, per_beat)
    runs = handled(stack)
    assert set(runs) == set(cids)
    assert sum(runs.values()) == sum(per_beat)
    assert_each_recipient_once_per_run(stack, cids, recipients)


def test_a_beat_killed_after_it_sent_a_run_sends_it_again_on_restart_and_the_run_stays_one_campaign(
        celery_stack, redis_client, tmp_path: Path) -> None:
    every_s = 20
    recipients = numbers(60, prefix="7912")
    phones = write_phones(tmp_path / "clients.txt", recipients)
    stack = stack_with_schedule(celery_stack, tmp_path, every_s=every_s, audience=f"file:{phones}", at_s=0)
    # Start the beat just after a grid point: its first send (one period after its start) and its send
    # again after the restart both fall near the next grid point, within half a period of it.
    time.sleep(every_s - time.time() % every_s + 0.2)
    beat = stack.add_beat(app="recur_app")
    wait_for(lambda: campaigns(redis_client), timeout_s=every_s + 30)
    assert sends(beat) == 1
    beat.kill()  # before it saved that it sent the run (the default scheduler saves every 3 minutes)
    beat.start()
    wait_for(lambda: sends(beat) >= 2, timeout_s=30)
    wait_for(lambda: sum(handled(stack).values()) >= 2, timeout_s=30)
    beat.stop()
    cids = campaigns(redis_client)
    assert len(cids) == 1, cids
    assert handled(stack) == {cids[0]: 2}  # the run came twice and made one campaign
    assert_each_recipient_once_per_run(stack, cids, recipients)


def test_two_redbeat_beats_one_holds_the_lock_the_other_takes_over_and_each_run_is_one_campaign(
        celery_stack, redis_client, tmp_path: Path) -> None:
    recipients = numbers(30, prefix="7913")
    Audiences(redis_client, Keys("smsc")).add("vip", recipients)
    stack = stack_with_schedule(celery_stack, tmp_path, every_s=3, audience="list:vip", beats=2, redbeat=True)
    wait_for(lambda: len(campaigns(redis_client)) >= 2, timeout_s=60)
    first, second = stack.beats
    active = [b for b in stack.beats if sends(b)]
    assert len(active) == 1, [sends(b) for b in stack.beats]  # one beat holds redbeat's lock
    standby = second if active[0] is first else first
    before = len(campaigns(redis_client))
    active[0].kill()
    wait_for(lambda: sends(standby) >= 2, timeout_s=60)  # the lock ran out; the standby sends the runs
    wait_for(lambda: len(campaigns(redis_client)) >= before + 2, timeout_s=30)
    standby.stop()
    total_sends = sends(first) + sends(second)
    wait_for(lambda: sum(handled(stack).values()) >= total_sends, timeout_s=30)
    cids = campaigns(redis_client)
    assert set(handled(stack)) == set(cids)
    assert len(cids) <= total_sends
    assert_each_recipient_once_per_run(stack, cids, recipients)


# -- which run a message is (no processes) ----------------------------------------------------------------

def at(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


def test_a_daily_crontab_names_one_run_a_day_however_late_or_early_the_beat_is_within_half_a_day() -> None:
    c = cadence_of(crontab(hour=9, minute=0, app=app))
    assert c == Cadence(86_400, 9 * 3600)
    ids = {c.campaign_id("vip", c.run_ms(at(t))) for t in (
        "2026-12-01T09:00:00.004", "2026-12-01T08:59:59.5", "2026-12-01T14:30:00", "2026-12-01T20:59:59")}
    assert ids == {"vip.261201"}
    assert c.campaign_id("vip", c.run_ms(at("2026-12-01T21:00:01"))) == "vip.261202"


def test_every_fifteen_minutes_and_an_interval_name_their_runs_by_minute_and_by_slot() -> None:
    quarter = cadence_of(crontab(minute="*/15", app=app))
    assert quarter == Cadence(900, 0)
    assert quarter.campaign_id("orders", quarter.run_ms(at("2026-12-01T09:14:59"))) == "orders.261201T0915"
    every = cadence_of(dt.timedelta(seconds=5))
    assert every == Cadence(5)
    assert every.campaign_id("w", every.run_ms(at("2026-12-01T09:00:04.999"))) == "w.261201T090000"
    assert every.campaign_id("w", every.run_ms(at("2026-12-01T09:00:05"))) == "w.261201T090005"


def test_a_crontab_in_the_apps_time_zone_is_put_on_the_utc_grid() -> None:
    moscow = crontab(hour=9, minute=0, app=app)
    moscow.tz = dt.timezone(dt.timedelta(hours=3))  # the app's timezone = Europe/Moscow
    c = cadence_of(moscow)
    assert c == Cadence(86_400, 6 * 3600)
    assert c.campaign_id("vip", c.run_ms(at("2026-12-01T06:00:00.010"))) == "vip.261201"


@pytest.mark.parametrize(("call", "why"), [
    (lambda: cadence_of(crontab(minute="0,20", hour="9-17", app=app)), "its runs are not evenly spaced"),
    (lambda: cadence_of(2.5), "every whole number of seconds"),
    (lambda: recurring_entry("a_very_long_name_x", 86_400, audience="list:vip", message="x"),
     "use 1-17 characters"),
    (lambda: recurring_entry("w", 60, audience="vip", message="x"), "give file:<path"),
    (lambda: recurring_entry("w", 60, audience="list:vip", message="x", template="y"), "not both"),
    (lambda: recurring_entry("w", 60, audience="list:vip", message="x", colour="red"), "unknown option 'colour'"),
])
def test_a_bad_entry_is_refused_in_one_line_when_the_schedule_is_read(call: Callable[[], Any], why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        call()


def test_an_entry_carries_names_and_references_and_expires_after_one_period() -> None:
    entry = recurring_entry("vip", crontab(hour=9, minute=0, app=app), audience="list:vip", message="Hi",
                            window="9-21")
    assert entry["task"] == "smsc.recurring" and entry["options"] == {"expires": 86_400}
    assert entry["kwargs"] == {"schedule": "vip", "audience": "list:vip", "every_s": 86_400, "at_s": 32_400,
                               "message": "Hi", "window": "9-21"}
