"""Nothing lost, nothing twice: worker crashes, Redis restarts, provider faults and unknown outcomes.

The four scenarios of ``make chaos`` (``worker.dev.chaos``) at test sizes, each with its own real processes;
then what each provider answer does to the account and its campaigns (errors 3, 2, a streak of errors),
the controls under load, and the search for the password that proves it is nowhere.
"""

from __future__ import annotations

import base64
import csv
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.helpers import (
    assert_exactly_once,
    breaches,
    cli,
    last_json,
    numbers,
    status,
    wait_until_final,
    write_phones,
)
from worker.dev import chaos
from worker.dev.chaos import PASSWORD, find_secret_in_files, find_secret_in_redis

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MESSAGE = "Your parcel is on its way: track it at example.com/t"
WRONG_PASSWORD = "Wr0ng-Pa55-chaos"  # deliberately wrong for the simulator
# Faults settle fast: a 2 s client timeout, 10 s leases, a 1 s first back-off.
KNOBS = {"SMSC_TIMEOUT": "2", "SMSC_LEASE": "10", "SMSC_BACKOFF": "1"}


# -- the chaos scenarios ------------------------------------------------------------------------------

# name -> recipients here (the quick sizes of ``smsc-mailer-dev chaos --quick``)
SIZES = {name: small for name, (_, _, small) in chaos.SCENARIOS.items()}


@pytest.mark.parametrize("name", list(SIZES))
def test_chaos_scenario_loses_nothing_sends_nothing_twice_and_breaks_no_rule(name: str, tmp_path: Path) -> None:
    scenario = chaos.SCENARIOS[name][0]
    res = scenario(tmp_path, recipients=SIZES[name])
    figures = {"lost": res.lost, "duplicated": res.duplicated, "breaches": res.breaches, "leaks": res.leaks}
    assert figures == {"lost": 0, "duplicated": 0, "breaches": 0, "leaks": 0}, res.notes
    assert (res.state, res.sent) == ("completed", res.recipients), res.notes
    st = res.details["status"]
    assert (st["failed"], st["cancelled"], st["pending"]) == (0, 0, 0)
    assert st["sms"] == res.recipients  # the provider's own count: one part each, once
    _the_fault_really_happened(name, res)


def _the_fault_really_happened(name: str, res: chaos.ScenarioResult) -> None:
    """The zeros above mean something only if the faults hit."""
    events, faults = res.details["events"], res.details["faults"]
    if name == "worker-kills":
        kills = [e for e in events if "kill" in e]
        assert len(kills) == 3 and len({e["kill"] for e in kills}) == 3, res.notes
        assert all(0 < e["done"] < res.recipients for e in kills), res.notes  # mid-campaign
        assert sum(e["mid_request"] for e in kills) >= 2, res.notes  # mid-batch: a request in flight
    elif name == "redis-restart":
        [restart] = [e for e in events if "restart" in e]
        assert restart["run_id_before"] != restart["run_id_after"], res.notes
        assert 0 < restart["done"] < res.recipients, res.notes
        assert next(e["marked"] for e in events if "marked" in e) > 0, res.notes  # settled first
    elif name == "provider-faults":
        for kind in ("http500", "resets", "delayed", "error9", "error4"):
            assert faults.get(kind, 0) > 0, (kind, res.notes)
    elif name == "two-beats":
        assert "2 beats" in res.notes


def test_chaos_command_prints_the_table_and_exits_zero(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from worker.dev.cli import cli as smsc_mailer_dev

    result = CliRunner().invoke(smsc_mailer_dev, ["chaos", "--quick", "--only", "two-beats", "--json"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert any(line.split()[:1] == ["scenario"] and "duplicated" in line for line in lines)
    [row] = json.loads(lines[-1])
    assert (row["name"], row["lost"], row["duplicated"], row["breaches"], row["ok"]) == ("two-beats", 0, 0, 0, True)
    bad = CliRunner().invoke(smsc_mailer_dev, ["chaos", "--only", "nope"])
    assert bad.exit_code == 2


# -- the password search ----------------------------------------------------------------------------


def test_the_password_search_finds_it_in_keys_values_celery_messages_and_files(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    """The leak figure of the scenarios is zero because nothing is there, not because nobody looked."""
    assert find_secret_in_redis(redis_client, PASSWORD) == []
    body = base64.b64encode(json.dumps([["x"], {"psw": PASSWORD}, {}]).encode()).decode()
    message = json.dumps({"body": body, "content-encoding": "utf-8", "headers": {"task": "smsc.send_batch"},
                          "properties": {"body_encoding": "base64"}})
    redis_client.lpush(b"smsc", message)  # a task message in the broker's queue
    redis_client.hset(b"unacked", b"tag", json.dumps([message, "", "smsc"]))  # and one in flight
    redis_client.hset(b"{smsc}:c:x", b"note", f"login=chaos&psw={PASSWORD}".encode())
    redis_client.set(f"{{smsc}}:k:{PASSWORD}".encode(), b"1")
    redis_client.zadd(b"{smsc}:z", {f"m{PASSWORD}".encode(): 1})
    redis_client.set(b"clean", b"nothing here")
    hits = find_secret_in_redis(redis_client, PASSWORD)
    assert len(hits) == 5, hits
    assert not any("clean" in h for h in hits)

    (tmp_path / "w.log").write_text(f"POST /sys/send.php?psw={PASSWORD}\n")
    (tmp_path / "ok.log").write_text("POST /sys/send.php id=1 phones=3\n")
    assert find_secret_in_files(tmp_path, PASSWORD) == [str(tmp_path / "w.log")]


def _no_secret_anywhere(stack: Any, root: Path, *secrets: str) -> None:
    client = stack.redis_client()
    try:
        for secret in secrets:
            assert find_secret_in_redis(client, secret) == []
            assert find_secret_in_files(root, secret) == []
    finally:
        client.close()


# -- what the provider's answers do to the account ------------------------------------------------------


def _stack(celery_stack: Callable[..., Any], *, latency_ms: float = 20, sim_config: dict[str, Any] | None = None,
           **kwargs: Any) -> Any:
    """Workers and beat on the session Redis, a fresh simulator configured with ``sim_config``."""
    env = {**KNOBS, **kwargs.pop("env", {})}
    stack = celery_stack(login="chaos", password=PASSWORD, env=env,
                         sim_options={"latency_ms": latency_ms, "seed": 3}, **kwargs)
    if sim_config:
        stack.simulator.configure(**sim_config)
    return stack


def _enqueue(stack: Any, path: Path, phones: list[str], *extra: str) -> str:
    write_phones(path, phones)
    out = cli(stack.env, "enqueue", "--phones-file", str(path), "--message", MESSAGE, "--json", *extra)
    return str(last_json(out)["campaign_id"])


def _wait_for(what: Callable[[], Any], *, timeout_s: float, poll_s: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what.__doc__ or what}")
        time.sleep(poll_s)


def test_insufficient_funds_pauses_the_accounts_campaigns_and_resume_continues_them(
        celery_stack, redis_client, tmp_path: Path) -> None:
    # 1.50 a part: money for exactly five batches of 50, then error 3.
    stack = _stack(celery_stack, workers=1, concurrency=4, env={"SMSC_BATCH_SIZE": "50"},
                   sim_config={"balance": "375", "price_per_part": "1.50"})
    a_phones, b_phones = numbers(300, prefix="7901"), numbers(300, prefix="7902")
    a = _enqueue(stack, tmp_path / "a.txt", a_phones)
    b = _enqueue(stack, tmp_path / "b.txt", b_phones)

    def both_paused() -> list[dict[str, Any]] | None:
        sts = [status(stack.env, cid) for cid in (a, b)]
        return sts if all(st["state"] == "paused" for st in sts) else None

    sts = _wait_for(both_paused, timeout_s=60)
    time.sleep(3)  # what was in flight has settled; nothing more goes out
    sts = [status(stack.env, cid) for cid in (a, b)]
    for st in sts:
        assert st["state"] == "paused"
        assert "insufficient funds" in st["reason"] and "error 3" in st["reason"]
        assert st["failed"] == 0 and st["cancelled"] == 0  # nothing lost: the rest is pending
        assert st["sent"] + st["pending"] == st["total"] == 300
    assert sum(st["sent"] for st in sts) == 250
    assert "insufficient funds" in cli(stack.env, "status", a).stdout
    summary = stack.simulator.summary()
    assert summary["messages"] == 250 and summary["errors_answered"].get("3", 0) >= 1

    stack.simulator.configure(balance="100000")
    for cid in (a, b):  # (a campaign whose first batch had not begun yet goes back to queued)
        assert cli(stack.env, "resume", cid).stdout in (f"campaign {cid}: running\n", f"campaign {cid}: queued\n")
    for cid in (a, b):
        st = wait_until_final(stack.env, cid, timeout_s=150, poll_s=1)
        assert (st["state"], st["sent"], st["failed"]) == ("completed", 300, 0)
    assert_exactly_once(stack.simulator.phones(), a_phones + b_phones)
    assert breaches(stack.simulator.summary()) == {}


def test_a_wrong_password_stops_the_account_after_one_attempt_and_resume_after_the_fix_continues(
        celery_stack, redis_client, tmp_path: Path) -> None:
    # Eight worker slots, a 14-request cap, an account proven by an earlier run with the old password
    # (workers restarted with a typo): still the provider sees the wrong password once per start.
    stack = _stack(celery_stack, workers=2, concurrency=4, env={"SMSC_BATCH_SIZE": "50",
                                                                "SMSC_PASSWORD": WRONG_PASSWORD})
    redis_client.hset(b"{smsc}:a:chaos", b"verified", b"1")
    phones = numbers(1_000)
    cid = _enqueue(stack, tmp_path / "p.txt", phones)

    def stopped() -> dict[str, Any] | None:
        st = status(stack.env, cid)
        return st if st["state"] == "paused" and st["account_state"] == "stopped" else None

    _wait_for(stopped, timeout_s=60)
    time.sleep(5)  # every worker slot had its chance to try again: none does
    st = status(stack.env, cid)
    assert "error 2" in st["reason"] and "fix the settings" in st["reason"]
    assert "error 2" in st["account_reason"]
    assert "stopped" in cli(stack.env, "status", cid).stdout
    summary = stack.simulator.summary()
    assert summary["errors_answered"] == {"2": 1}
    assert summary["messages"] == 0

    # A resume before the settings are fixed costs one more attempt, not one per slot.
    cli(stack.env, "resume", cid)
    _wait_for(stopped, timeout_s=60)
    time.sleep(3)
    assert stack.simulator.summary()["errors_answered"] == {"2": 2}

    for w in stack.workers:  # fix the settings: the workers restart with the right password
        w.terminate(timeout_s=30)
    stack.add_worker(env={"SMSC_PASSWORD": PASSWORD})
    stack.add_worker(env={"SMSC_PASSWORD": PASSWORD})
    assert "running" in cli(stack.env, "resume", cid).stdout
    st = wait_until_final(stack.env, cid, timeout_s=150, poll_s=1)
    assert (st["state"], st["sent"], st["failed"], st["account_state"]) == ("completed", 1_000, 0, "ok")
    summary = stack.simulator.summary()
    assert_exactly_once(stack.simulator.phones(), phones)
    assert summary["errors_answered"].get("2", 0) < 5
    assert breaches(summary) == {}  # no auth block
    _no_secret_anywhere(stack, tmp_path, PASSWORD, WRONG_PASSWORD)


def test_errors_in_a_row_back_the_account_off_long_before_a_hundred_and_resume_continues(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = _stack(celery_stack, workers=2, concurrency=2, env={"SMSC_BATCH_SIZE": "100"})
    stack.simulator.configure(http500_rate=1.0)  # every request fails, status.php included
    phones = numbers(2_000)
    cid = _enqueue(stack, tmp_path / "p.txt", phones)
    time.sleep(20)
    failed_requests = stack.simulator.summary()["http500"]
    st = status(stack.env, cid)
    # Three errors in a row, then an account-wide back-off that doubles: a handful of requests, not 100.
    assert 3 <= failed_requests <= 20, failed_requests
    assert st["account_backoffs"] >= 3 and st["account_errors_in_a_row"] >= 3
    assert st["account_backoff_until_ms"] and st["account_backoff_until_ms"] > time.time() * 1000
    assert "HTTP 500" in st["last_error"]
    text = cli(stack.env, "status", cid).stdout
    assert "backing off until" in text and "back-offs" in text
    assert (st["sent"], st["failed"], st["pending"]) == (0, 0, 2_000)  # nothing failed for it

    stack.simulator.configure(http500_rate=0.0)
    cli(stack.env, "resume", cid)  # on command: the back-off is lifted at once
    st = wait_until_final(stack.env, cid, timeout_s=150, poll_s=1)
    assert (st["state"], st["sent"], st["failed"], st["account_errors_in_a_row"]) == ("completed", 2_000, 0, 0)
    assert_exactly_once(stack.simulator.phones(), phones)
    assert breaches(stack.simulator.summary()) == {}


def test_errors_1_5_and_7_fail_the_batch_with_the_code_and_the_campaign_ends_failed(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = _stack(celery_stack, workers=1, concurrency=2, env={"SMSC_BATCH_SIZE": "10"})
    for code, prefix in (("5", "7911"), ("7", "7912"), ("1", "7913")):
        stack.simulator.configure(error_rates={code: 1.0})
        cid = _enqueue(stack, tmp_path / f"e{code}.txt", numbers(20, prefix=prefix))
        st = wait_until_final(stack.env, cid, timeout_s=60)
        assert (st["state"], st["sent"], st["failed"]) == ("failed", 0, 20)
        assert f"error {code}" in st["last_error"]
        report = tmp_path / f"e{code}.csv"
        cli(stack.env, "report", cid, "--csv", str(report))
        with report.open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 20 and {(r["state"], r["error_code"]) for r in rows} == {("failed", code)}
        assert all(r["reason"] for r in rows)
    assert stack.simulator.summary()["messages"] == 0


def test_error_8_for_single_numbers_fails_them_and_error_6_fails_only_its_batches(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = _stack(celery_stack, workers=1, concurrency=2, env={"SMSC_BATCH_SIZE": "10"},
                   sim_config={"undeliverable_prefixes": ["7966"]})
    good, bad = numbers(25, prefix="7900"), numbers(5, prefix="7966")
    cid = _enqueue(stack, tmp_path / "p.txt", good[:12] + bad + good[12:])
    st = wait_until_final(stack.env, cid, timeout_s=60)
    assert (st["state"], st["sent"], st["failed"]) == ("completed", 25, 5)
    assert_exactly_once(stack.simulator.phones(), good)
    # Error 6 on some batches only: those recipients fail with the code, the others are sent.
    stack.simulator.configure(error_rates={"6": 0.5}, seed=11)
    more = numbers(100, prefix="7977")
    cid2 = _enqueue(stack, tmp_path / "q.txt", more)
    st = wait_until_final(stack.env, cid2, timeout_s=90)
    assert st["state"] == "completed" and st["sent"] > 0 and st["failed"] > 0
    assert st["sent"] + st["failed"] == 100 and st["failed"] % 10 == 0
    report = tmp_path / "q.csv"
    cli(stack.env, "report", cid2, "--csv", str(report))
    with report.open() as f:
        rows = list(csv.DictReader(f))
    assert {r["error_code"] for r in rows if r["state"] == "failed"} == {"6"}
    sent = {r["phone"] for r in rows if r["state"] == "sent"}
    seen = stack.simulator.phones()
    assert {p for p in more if p in seen} == sent and all(seen[p] == 1 for p in sent)


# -- the controls under load ------------------------------------------------------------------------


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
    stack = _stack(celery_stack, workers=2, concurrency=2, env={"SMSC_BATCH_SIZE": "20"},
                   latency_ms=300)
    phones = numbers(3_000)
    cid = _enqueue(stack, tmp_path / "p.txt", phones)
    _wait_for(lambda: status(stack.env, cid)["sent"] >= 200, timeout_s=60)

    assert _at_once(stack, "pause", cid) == [f"campaign {cid}: paused\n"] * 3
    time.sleep(2)  # what was in flight settles normally
    frozen = status(stack.env, cid)
    time.sleep(2)
    st = status(stack.env, cid)
    assert st["state"] == "paused" and st["sent"] == frozen["sent"] < 3_000
    assert st["sent"] + st["pending"] == 3_000

    assert _at_once(stack, "resume", cid) == [f"campaign {cid}: running\n"] * 3
    _wait_for(lambda: status(stack.env, cid)["sent"] >= frozen["sent"] + 200, timeout_s=60)

    outs = _at_once(stack, "cancel", cid)
    assert all(out.startswith(f"campaign {cid}: cancelled (") for out in outs), outs
    st = wait_until_final(stack.env, cid, timeout_s=60)
    assert st["state"] == "cancelled" and st["pending"] == 0
    assert st["sent"] + st["cancelled"] == 3_000 and st["failed"] == 0 and st["cancelled"] > 0
    time.sleep(1)
    seen = stack.simulator.phones()

    reports = [tmp_path / f"r{i}.csv" for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda p: cli(stack.env, "report", cid, "--csv", str(p)), reports))
    texts = {p.read_text() for p in reports}
    assert len(texts) == 1
    with reports[0].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3_000 and {r["phone"] for r in rows} == set(phones)
    by_state = {s: {r["phone"] for r in rows if r["state"] == s} for s in ("sent", "cancelled")}
    assert len(by_state["sent"]) == st["sent"] and len(by_state["cancelled"]) == st["cancelled"]
    # Exactly the recipients counted sent reached the provider, once; no cancelled one did.
    assert set(seen) == by_state["sent"] and set(seen.values()) == {1}
    # A finished campaign's controls change nothing.
    assert cli(stack.env, "pause", cid).stdout == f"campaign {cid}: cancelled\n"
    assert cli(stack.env, "resume", cid).stdout == f"campaign {cid}: cancelled\n"
    assert status(stack.env, cid)["state"] == "cancelled"
    assert breaches(stack.simulator.summary()) == {}
