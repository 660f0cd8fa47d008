"""``smsc-mailer retry``: a follow-up campaign of the recipients that failed, run as a user runs it (a
separate process), against a real redis-server — and, for the sending, Celery workers and the simulator."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import numbers, wait_until_final, write_phones
from worker.dev.stack import child_env

pytestmark = pytest.mark.integration


def _entry_point() -> list[str]:
    """``smsc-mailer`` itself (the console script's module, run by this interpreter)."""
    return [sys.executable, "-m", "worker.cli"]


def run(env: Mapping[str, str], *args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*_entry_point(), *args], env=child_env(env), capture_output=True, text=True,
                          timeout=300, check=False)
    if code is not None:
        assert proc.returncode == code, f"smsc-mailer {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    return lines[0]


@pytest.fixture
def env(redis_server: Any, redis_client: Any) -> dict[str, str]:
    # No provider to ask for the balance: --allow-partial where a campaign is enqueued here.
    return {"REDIS_URL": redis_server.url, "SMSC_LOGIN": "demo", "SMSC_PASSWORD": "demo-password",
            "SMSC_BASE_URL": "http://127.0.0.1:9", "SMSC_NAMESPACE": "retrytest"}


def test_failed_recipients_are_sent_again_by_the_workers_and_the_link_shows_in_status(
        celery_stack: Any, redis_client: Any, tmp_path: Path) -> None:
    stack = celery_stack(workers=1, concurrency=2, sim_options={"latency_ms": 5})
    sim = stack.simulator
    recipients = numbers(30, prefix="7903")
    bad = recipients[3:30:7]  # 4 numbers the provider refuses with error 8
    sim.configure(undeliverable_prefixes=bad)
    phones = write_phones(tmp_path / "p.txt", recipients)
    first = last_json(run(stack.env, "enqueue", "--phones-file", str(phones), "--message", "Parcel 4711 is here",
                          "--sender", "MyShop", "--json"))
    cid = first["campaign_id"]
    st = wait_until_final(stack.env, cid, timeout_s=120)
    assert (st["sent"], st["failed"]) == (26, 4)

    sim.configure(undeliverable_prefixes=[])  # whatever made them fail is fixed
    receipt = last_json(run(stack.env, "retry", cid, "--codes", "8", "--json"))
    assert receipt.keys() == first.keys()  # the object enqueue --json prints
    assert (receipt["campaign_id"], receipt["total"], receipt["existing"]) == (f"{cid}.r1", 4, False)
    follow = wait_until_final(stack.env, receipt["campaign_id"], timeout_s=120)
    assert (follow["state"], follow["sent"], follow["failed"]) == ("completed", 4, 0)
    assert (follow["retry_of"], follow["sender"]) == (cid, "MyShop")
    assert last_json(run(stack.env, "status", cid, "--json"))["retries"] == [f"{cid}.r1"]
    got = sim.phones()
    assert got == dict.fromkeys(recipients, 1)  # everyone once: the 26 first, the 4 by the follow-up
    assert {m["text"] for m in sim.record(limit=100)} == {"Parcel 4711 is here"}

    # The same retry again: its recipients are in the follow-up already; nothing new, exit 0.
    again = run(stack.env, "retry", cid, "--json")
    assert "nothing to retry" in again.stdout
    assert last_json(again) == {"retried": 0, "retry_of": cid, "matched": 4, "already_retried": 4,
                                "suppressed": 0, "selected": 0}
    assert last_json(run(stack.env, "status", cid, "--json"))["retries"] == [f"{cid}.r1"]
    assert sim.phones() == got


def test_two_retries_started_together_make_one_follow_up(env: dict[str, str], tmp_path: Path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(40, prefix="7904"))
    cid = last_json(run(env, "enqueue", "--phones-file", str(phones), "--message", "Hi", "--allow-partial",
                        "--batch-size", "10", "--json"))["campaign_id"]
    run(env, "cancel", cid)
    procs = [subprocess.Popen([*_entry_point(), "retry", cid, "--states", "cancelled", "--json"],
                              env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    answers = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    made = [a for a in answers if "campaign_id" in a]
    assert made and {a["campaign_id"] for a in made} == {f"{cid}.r1"}
    assert all(a["total"] == 40 for a in made)
    assert all(a == {"retried": 0, "retry_of": cid, "matched": 40, "already_retried": 40, "suppressed": 0,
                     "selected": 0} for a in answers if "campaign_id" not in a)
    st = last_json(run(env, "status", cid, "--json"))
    assert st["retries"] == [f"{cid}.r1"]
    follow = last_json(run(env, "status", f"{cid}.r1", "--json"))
    assert (follow["retry_of"], follow["total"], follow["state"]) == (cid, 40, "queued")


def test_a_campaign_with_no_failures_has_nothing_to_retry(env: dict[str, str], tmp_path: Path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(5, prefix="7905"))
    cid = last_json(run(env, "enqueue", "--phones-file", str(phones), "--message", "Hi", "--allow-partial",
                        "--json"))["campaign_id"]
    proc = run(env, "retry", cid)  # queued, nobody failed yet
    assert proc.stdout.strip() == f"campaign {cid}: nothing to retry (0 recipients matched)"


@pytest.mark.parametrize(("args", "why"), [
    (["nosuch"], "no campaign with id 'nosuch'"),
    (["nosuch", "--states", "delivered"], "--states 'delivered': not a failed state"),
    (["nosuch", "--codes", "eight"], "--codes 'eight': give the provider's codes as whole numbers"),
    (["nosuch", "--max-cost", "-5"], "--max-cost '-5': give a positive amount"),
])
def test_bad_input_is_one_line_and_exit_2(env: dict[str, str], args: list[str], why: str) -> None:
    proc = run(env, "retry", *args, code=2)
    assert why in one_line(proc.stderr)


def test_an_unreachable_redis_is_one_line_and_exit_1(env: dict[str, str]) -> None:
    proc = run({**env, "REDIS_URL": "redis://:hunter2@127.0.0.1:9/0"}, "retry", "c1", code=1)
    line = one_line(proc.stderr)
    assert "cannot reach Redis" in line and "hunter2" not in line
