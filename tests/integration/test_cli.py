"""The command line's contract: bad input is one line and a non-zero exit, before anything is queued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import cli, last_json, numbers, write_phones

pytestmark = pytest.mark.integration


@pytest.fixture
def env(redis_server, redis_client) -> dict[str, str]:
    return {"REDIS_URL": redis_server.url, "SMSC_LOGIN": "demo", "SMSC_PASSWORD": "demo-password",
            "SMSC_BASE_URL": "http://127.0.0.1:9"}


def _nothing_queued(redis_client) -> bool:
    return not any(k for k in redis_client.scan_iter("*") if b":due" in k or b":c:" in k or b":b:" in k)


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(("message", "why"), [
    ("x" * 1001, "1000"),
    ("   ", "empty"),
])
def test_a_message_the_provider_would_refuse_is_one_line_and_nothing_is_queued(
        env, redis_client, tmp_path: Path, message: str, why: str) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(5))
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", message, check=False)
    assert proc.returncode == 2
    assert why in _one_line_error(proc.stderr)
    assert _nothing_queued(redis_client)


def test_a_sender_the_provider_forbids_is_refused_before_anything_is_queued(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(5))
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "hi", "--sender", "A sender too long!",
               check=False)
    assert proc.returncode == 2
    assert "sender" in _one_line_error(proc.stderr).lower()
    assert _nothing_queued(redis_client)


def test_invalid_lines_are_named_and_the_valid_recipients_are_enqueued(env, redis_client, tmp_path) -> None:
    good = numbers(7)
    phones = write_phones(tmp_path / "p.txt", ["# header comment", "", *good[:3], "12ab", *good[3:], "+7 900"])
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "hello", "--json")
    receipt = last_json(proc)
    assert {"campaign_id", "total", "invalid", "parts"} <= receipt.keys()
    assert (receipt["total"], receipt["invalid"], receipt["parts"]) == (7, 2, 1)
    assert f"{phones}:6:" in proc.stderr and "'12ab'" in proc.stderr
    assert f"{phones}:11:" in proc.stderr
    st = last_json(cli(env, "status", receipt["campaign_id"], "--json"))
    assert st["state"] == "queued"
    assert (st["total"], st["pending"], st["sent"], st["failed"], st["cancelled"]) == (7, 7, 0, 0, 0)


def test_strict_refuses_a_file_with_invalid_lines_and_queues_nothing(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", [*numbers(3), "nope"])
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "hello", "--strict", check=False)
    assert proc.returncode == 2
    assert "--strict" in proc.stderr
    assert _nothing_queued(redis_client)


def test_a_malformed_setting_is_one_line_at_start_up(env, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(1))
    proc = cli({**env, "SMSC_TIMEOUT": "soon"}, "enqueue", "--phones-file", str(phones), "--message", "x",
               check=False)
    assert proc.returncode == 2
    assert "SMSC_TIMEOUT" in _one_line_error(proc.stderr)


def test_an_unreachable_redis_is_one_line_without_its_password(env, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(1))
    proc = cli({**env, "REDIS_URL": "redis://:hunter2@127.0.0.1:9/0"}, "enqueue", "--phones-file", str(phones),
               "--message", "x", check=False)
    assert proc.returncode == 1
    line = _one_line_error(proc.stderr)
    assert "cannot reach Redis" in line and "hunter2" not in line


def test_status_of_an_unknown_campaign_is_one_line(env) -> None:
    proc = cli(env, "status", "nosuchid", "--json", check=False)
    assert proc.returncode == 2
    assert "nosuchid" in _one_line_error(proc.stderr)


def test_enqueueing_the_same_campaign_id_twice_makes_one_campaign(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(20))
    first = last_json(cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--campaign-id",
                          "order42", "--json"))
    again = last_json(cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--campaign-id",
                          "order42", "--json"))
    assert first["campaign_id"] == again["campaign_id"] == "order42"
    assert again["existing"] is True
    assert redis_client.zcard("{smsc}:due") == first["batches"]


def test_dry_run_prints_the_plan_and_queues_nothing(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(100))
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--period", "0.1", "--freq", "2",
               "--at", "0", "--dry-run", "--json")
    plan = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [g["recipients"] for g in plan["groups"]] == [34, 33, 33]
    due = [g["due_ms"] for g in plan["groups"]]
    assert [d - due[0] for d in due] == [0, 120_000, 240_000]
    assert plan["sms_estimate"] == 100
    assert _nothing_queued(redis_client)


def test_pause_resume_cancel_are_idempotent_and_counters_add_up(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(50))
    cid = last_json(cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--json",
                        "--batch-size", "10"))["campaign_id"]
    for _ in range(2):
        assert "paused" in cli(env, "pause", cid).stdout
    assert last_json(cli(env, "status", cid, "--json"))["state"] == "paused"
    for _ in range(2):
        assert "queued" in cli(env, "resume", cid).stdout
    cli(env, "cancel", cid)
    cli(env, "cancel", cid)
    st = last_json(cli(env, "status", cid, "--json"))
    assert (st["state"], st["cancelled"], st["pending"]) == ("cancelled", 50, 0)
    report = tmp_path / "r.csv"
    cli(env, "report", cid, "--csv", str(report))
    rows = report.read_text().splitlines()
    assert len(rows) == 51 and all(",cancelled," in r for r in rows[1:])
