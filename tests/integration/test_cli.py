"""The command line's contract: bad input is one line and a non-zero exit, before anything is queued."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from scheduler.keys import Keys
from tests.integration.helpers import cli, last_json, numbers, write_phones
from worker.dev.stack import child_env

KEYS = Keys("smsc")
MSK = timezone(timedelta(hours=3))

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
    assert redis_client.zcard(KEYS.due) == first["batches"]


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


def _queued(redis_client) -> Counter[int]:
    """Recipients of the due-queue by due time (ms)."""
    out: Counter[int] = Counter()
    for ref, due in redis_client.zrange(KEYS.due, 0, -1, withscores=True):
        phones = (redis_client.hget(KEYS.batch(ref.decode()), "phones") or b"").decode()
        out[int(due)] += len([p for p in phones.split(",") if p])
    return out


def _tomorrow_msk(hh_mm: str) -> tuple[str, datetime]:
    day = (datetime.now(MSK) + timedelta(days=1)).date()
    h, m = (int(x) for x in hh_mm.split(":"))
    when = datetime(day.year, day.month, day.day, h, m, tzinfo=MSK)
    return f"{when:%d.%m.%y %H:%M}", when


# -- the message file ----------------------------------------------------------------------------------


def test_a_missing_message_file_is_one_line_naming_the_option_and_the_file(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(3))
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message-file", str(tmp_path / "nope.txt"),
               check=False)
    assert proc.returncode == 2
    assert _one_line_error(proc.stderr) == f"smsc-mailer: --message-file: {tmp_path / 'nope.txt'}: no such file"
    assert _nothing_queued(redis_client)


def test_an_undecodable_message_file_names_the_option_the_file_and_the_byte(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(3))
    text = tmp_path / "m.txt"
    text.write_bytes("Скидка 10%".encode("cp1251"))
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message-file", str(text), check=False)
    assert proc.returncode == 2
    assert _one_line_error(proc.stderr) == (
        f"smsc-mailer: --message-file: {text}: byte 0xd1 at byte 1 is not UTF-8 (save the file as UTF-8)")
    assert _nothing_queued(redis_client)


def test_a_folder_as_message_file_or_phones_file_is_named_a_folder(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(3))
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message-file", str(tmp_path), check=False)
    assert (proc.returncode, _one_line_error(proc.stderr)) == (
        2, f"smsc-mailer: --message-file: {tmp_path}: is a folder, not a file")
    proc = cli(env, "enqueue", "--phones-file", str(tmp_path), "--message", "hi", check=False)
    assert (proc.returncode, _one_line_error(proc.stderr)) == (
        2, f"smsc-mailer: --phones-file: {tmp_path}: is a folder, not a file of phone numbers")
    assert _nothing_queued(redis_client)


def test_a_message_file_with_a_bom_and_crlf_is_its_text(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(3))
    text = tmp_path / "m.txt"
    text.write_bytes("\ufeffYour code: 4711\r\n".encode())
    cid = last_json(cli(env, "enqueue", "--phones-file", str(phones), "--message-file", str(text), "--json"))[
        "campaign_id"]
    assert redis_client.hget(KEYS.campaign(cid), "message") == b"Your code: 4711"


# -- the report ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "why"), [
    ("{tmp}", "is a folder; give a file name"),
    ("{tmp}/no/such/folder/r.csv", "the folder {tmp}/no/such/folder does not exist"),
    ("/sys/smsc-report.csv", "cannot write: Permission denied"),
])
def test_a_report_that_cannot_be_written_is_one_line(env, redis_client, tmp_path, target: str, why: str) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(3))
    cid = last_json(cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--json"))["campaign_id"]
    path = target.format(tmp=tmp_path)
    proc = cli(env, "report", cid, "--csv", path, check=False)
    assert proc.returncode == 2
    assert _one_line_error(proc.stderr) == f"smsc-mailer: --csv: {path}: {why.format(tmp=tmp_path)}"


# -- the plan options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("at", "line"), [
    ("", "smsc-mailer: --at: cannot read '': expected DDMMYYhhmm, DD.MM.YY hh:mm, +m, 0ts or ISO 8601"),
    ("   ", "smsc-mailer: --at: cannot read '   ': expected DDMMYYhhmm, DD.MM.YY hh:mm, +m, 0ts or ISO 8601"),
    ("01.01.20 10:00", "smsc-mailer: --at: '01.01.20 10:00' is "),
])
def test_an_empty_or_past_start_is_refused_with_one_line(env, redis_client, tmp_path, at: str, line: str) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(3))
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--at", at, check=False)
    assert proc.returncode == 2
    got = _one_line_error(proc.stderr)
    assert got.startswith(line)
    if at.strip():
        assert "in the past (2020-01-01 10:00, now " in got and "UTC+3 (Moscow)); give a later time, or 0" in got
    assert _nothing_queued(redis_client)


def test_an_overnight_window_is_planned_from_22_to_09(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(30))
    at, when = _tomorrow_msk("12:00")
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--at", at, "--window", "22-9",
               "--period", "2", "--freq", "60", "--dry-run", "--json")
    plan = last_json(proc)
    opening = when.replace(hour=22)
    assert [g["due_ms"] for g in plan["groups"]] == [int(opening.timestamp() * 1000),
                                                    int((opening + timedelta(hours=1)).timestamp() * 1000)]
    assert plan["groups"][0]["due"] == f"{opening:%Y-%m-%d} 22:00:00 UTC+3 (Moscow)"
    assert "--window 22-9 is open outside 09:00-22:00" in proc.stderr  # the provider holds bulk SMS at night
    receipt = last_json(cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--at", at, "--window",
                            "22-9", "--period", "2", "--freq", "60", "--json"))
    assert receipt["first_due_ms"] == int(opening.timestamp() * 1000)


def test_the_dry_run_shows_the_plan_the_enqueue_makes_with_recipients_time_zones(env, redis_client, tmp_path) -> None:
    # 06:00 Moscow: closed in Moscow (until 09:00), open in Vladivostok (13:00), closed in New York (22:00)
    # until 09:00 there, 17:00 Moscow.
    moscow = [f"+7495{i:07d}" for i in range(1_000_000, 1_000_040)]
    vladivostok = [f"+7423{i:07d}" for i in range(2_000_000, 2_000_030)]
    new_york = [f"+1212555{i:04d}" for i in range(1000, 1020)]
    mixed = [x for trio in zip(moscow, vladivostok, new_york, strict=False) for x in trio]
    phones = write_phones(tmp_path / "p.txt", mixed + moscow[20:] + vladivostok[20:])
    at, when = _tomorrow_msk("06:00")
    args = ["enqueue", "--phones-file", str(phones), "--message", "m", "--at", at, "--window", "9-22",
            "--recipient-time", "--batch-size", "25"]
    dry = cli(env, *args, "--dry-run", "--json")
    plan = last_json(dry)
    shown = Counter({g["due_ms"]: 0 for g in plan["groups"]})
    for g in plan["groups"]:
        shown[g["due_ms"]] += g["recipients"]
    ny = when.astimezone(ZoneInfo("America/New_York"))
    ny_opening = ny.replace(hour=9, minute=0) + (timedelta(days=1) if ny.hour >= 9 else timedelta(0))
    dues = {int(when.timestamp() * 1000): 30, int(when.replace(hour=9).timestamp() * 1000): 40,
            int(ny_opening.timestamp() * 1000): 20}
    assert shown == Counter(dues)
    assert _nothing_queued(redis_client)
    assert f"{ny_opening.astimezone(MSK):%Y-%m-%d %H:%M}:00 UTC+3 (Moscow)" in dry.stdout
    receipt = last_json(cli(env, *args, "--json"))
    assert _queued(redis_client) == shown
    assert receipt["batches"] == plan["batches"]


def test_the_dry_run_speaks_the_zone_of_its_options_and_counts_in_the_singular(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(1))
    at = (datetime.now(timezone(timedelta(hours=7))) + timedelta(days=1)).strftime("%d.%m.%y") + " 10:00"
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--at", at, "--tz", "4", "--dry-run")
    first = proc.stdout.splitlines()[0]
    assert first.startswith("dry run: 1 recipient (0 invalid, 0 duplicates, 0 suppressed), 1 part each, "
                            "1 SMS in all, 1 group, 1 batch of up to ")
    assert "  times in UTC+7, the zone of --at and --window (--tz)" in proc.stdout
    assert " 10:00:00 UTC+7" in proc.stdout


# -- one campaign per id ---------------------------------------------------------------------------------


def test_the_same_campaign_id_with_another_text_or_file_is_refused_and_nothing_changes(
        env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(20))
    other = write_phones(tmp_path / "q.txt", numbers(20, start=100))
    base = ["enqueue", "--campaign-id", "order42", "--json"]
    first = last_json(cli(env, *base, "--phones-file", str(phones), "--message", "m"))
    before = _queued(redis_client)
    for args, what in [(["--phones-file", str(phones), "--message", "another"], "another text"),
                       (["--phones-file", str(other), "--message", "m"], "other recipients"),
                       (["--phones-file", str(phones), "--message", "m", "--sender", "Shop"], "another sender"),
                       (["--phones-file", str(phones), "--message", "m", "--at", "+30"], "other plan options")]:
        proc = cli(env, *base, *args, check=False)
        assert proc.returncode == 2, args
        assert _one_line_error(proc.stderr) == (
            f"smsc-mailer: campaign id 'order42' is taken by a campaign with {what}; nothing was queued "
            "(use another campaign id, or the same content to get the existing campaign)")
    assert _queued(redis_client) == before
    again = cli(env, *base, "--phones-file", str(phones), "--message", "m")
    assert "campaign order42 already enqueued: 20 recipients" in again.stdout
    assert last_json(again)["existing"] is True and last_json(again)["batches"] == first["batches"]


def test_two_enqueues_of_one_campaign_id_at_the_same_moment_make_one_campaign(env, redis_client, tmp_path) -> None:
    recipients = numbers(6_000)
    phones = write_phones(tmp_path / "p.txt", recipients)
    args = [sys.executable, "-m", "worker.cli", "enqueue", "--phones-file", str(phones), "--message", "m",
            "--campaign-id", "retry1", "--batch-size", "100", "--json"]
    procs = [subprocess.Popen(args, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    receipts = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(r["existing"] for r in receipts) == [False, True]
    assert {r["total"] for r in receipts} == {6_000}
    seen: Counter[str] = Counter()
    for ref in redis_client.zrange(KEYS.due, 0, -1):
        seen.update(p for p in (redis_client.hget(KEYS.batch(ref.decode()), "phones") or b"").decode().split(","))
    assert seen == Counter({p: 1 for p in recipients})


# -- numbers ----------------------------------------------------------------------------------------------


def test_with_a_default_region_national_and_international_spellings_are_one_recipient(env, redis_client,
                                                                                      tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", ["8 900 123-45-67", "+7 900 123 45 67", "79001234567",
                                               "tel:+7-900-123-45-68", "8 (900) 123-45-68", "70000000000"])
    proc = cli({**env, "SMSC_DEFAULT_REGION": "ru"}, "enqueue", "--phones-file", str(phones), "--message", "m",
               "--json")
    receipt = last_json(proc)
    assert (receipt["total"], receipt["duplicates"], receipt["invalid"]) == (2, 3, 1)
    assert f"{phones}:6: '70000000000': not a valid number in region RU" in proc.stderr
    ref = redis_client.zrange(KEYS.due, 0, -1)[0].decode()
    assert redis_client.hget(KEYS.batch(ref), "phones") == b"+79001234567,+79001234568"


def test_without_a_region_a_tel_uri_is_a_number_and_a_national_spelling_stays_as_written(env, redis_client,
                                                                                        tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", ["tel:+7-900-123-45-67", "8 900 123-45-67"])
    receipt = last_json(cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--json"))
    assert (receipt["total"], receipt["invalid"]) == (2, 0)
    ref = redis_client.zrange(KEYS.due, 0, -1)[0].decode()
    assert redis_client.hget(KEYS.batch(ref), "phones") == b"+79001234567,89001234567"


def test_an_unknown_default_region_is_one_line_at_start_up(env, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(1))
    proc = cli({**env, "SMSC_DEFAULT_REGION": "XX"}, "enqueue", "--phones-file", str(phones), "--message", "m",
               check=False)
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert "SMSC_DEFAULT_REGION" in line and "unknown region 'XX'" in line


def test_the_python_api_takes_whole_numbers(redis_server, redis_client) -> None:
    from worker.api import enqueue_campaign
    from worker.settings import Settings

    s = Settings(redis_url=redis_server.url, smsc_login="demo", _env_file=None)  # type: ignore[call-arg]
    rejected = []
    receipt = enqueue_campaign([79060000001, "+79060000002", 7.9e10], "m", settings=s, redis_conn=redis_client,
                               on_rejected=rejected.append)
    assert (receipt.total, receipt.invalid) == (2, 1)
    assert "not float" in rejected[0].reason
    ref = redis_client.zrange(KEYS.due, 0, -1)[0].decode()
    assert redis_client.hget(KEYS.batch(ref), "phones") == b"79060000001,+79060000002"


# -- status and the command line's own errors ---------------------------------------------------------


def test_status_shows_quarantined_recipients_and_a_lowered_login_cap(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(10))
    cid = last_json(cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--json"))["campaign_id"]
    # What the ledger and the guards write: a quarantined batch (counted in failed) and a slowed login.
    redis_client.hset(KEYS.campaign(cid), mapping={"failed": 4, "quarantined": 4})
    redis_client.hset(KEYS.account("demo"), mapping={"adaptive_cap": "3.5", "verified": "1"})
    st = last_json(cli(env, "status", cid, "--json"))
    assert (st["quarantined"], st["failed"], st["pending"], st["account_cap"]) == (4, 4, 6, 3)
    assert {"campaign_id", "state", "total", "sent", "failed", "cancelled", "pending", "invalid", "duplicates",
            "parts", "sms", "cost", "batches", "account", "sender", "created_ms", "started_ms", "finished_ms",
            "reason", "last_error", "account_state", "account_reason", "account_backoff_until_ms",
            "account_backoffs", "account_errors_in_a_row"} <= st.keys()  # the public contract
    text = cli(env, "status", cid).stdout
    assert "  quarantined 4 (counted in failed" in text
    assert "  login cap: 3 of 14 requests in flight (lowered while the provider answers slowly)" in text


def test_a_bad_option_value_is_one_line(env, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(1))
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "m", "--batch-size", "abc", check=False)
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert "--batch-size" in line and "'abc' is not a valid integer" in line


def test_an_enqueue_that_redis_cannot_make_durable_says_so(env, redis_client, tmp_path) -> None:
    phones = write_phones(tmp_path / "p.txt", numbers(3))
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "m")
    assert "is queued, but it is not durable: the Redis server keeps no append-only file" in proc.stderr


def test_strict_reads_standard_input_once(env, redis_client, tmp_path) -> None:
    good = "\n".join(numbers(5)) + "\n"
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "enqueue", "--phones-file", "-", "--message", "m",
                           "--strict", "--json"], input=good + "oops\n", env=child_env(env), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "smsc-mailer: --strict: 1 invalid line; nothing was queued"
    assert "-:6: 'oops'" in proc.stderr
    assert _nothing_queued(redis_client)
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "enqueue", "--phones-file", "-", "--message", "m",
                           "--strict", "--json"], input=good, env=child_env(env), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["total"] == 5
