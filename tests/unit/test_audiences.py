"""Saved lists (``scheduler.audiences``), their CLI (``smsc-mailer audience``, run as a user runs it) and a
recurring run made from one (``worker.recurring.run``), on the private real redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from scheduler.audiences import AudienceError, Audiences, ListDigest
from scheduler.campaigns import CampaignError
from scheduler.intake import InvalidPhone
from scheduler.keys import Keys
from scheduler.stoplist import StopList
from worker.dev.stack import child_env
from worker.recurring import run
from worker.runtime import Runtime
from worker.settings import Settings

NS = "aud"


@pytest.fixture
def lists(redis_client: redis.Redis) -> Audiences:
    return Audiences(redis_client, Keys(NS))


# -- the store -----------------------------------------------------------------------------------

def test_a_number_in_two_spellings_is_one_member_and_the_later_spelling_and_columns_win(lists: Audiences) -> None:
    assert lists.add("vip", ["+7 900 123-45-67", "79001234568"]) == 2
    assert lists.add("vip", [("79001234567", {"name": "Anna"})]) == 0
    members = {m.phone: dict(m.columns) for m in lists.scan("vip")}
    assert members == {"79001234567": {"name": "Anna"}, "79001234568": {}}
    assert lists.columns("vip") == ["name"]
    assert lists.contains("vip", "+7 (900) 123-45-67")


def test_remove_takes_any_spelling_off_and_counts_what_was_there(lists: Audiences) -> None:
    lists.add("vip", ["+79001234567", "+79001234568"])
    assert lists.remove("vip", ["79001234567", "+79009999999"]) == 1
    assert [m.phone for m in lists.scan("vip")] == ["+79001234568"]


def test_a_bad_number_is_refused_without_the_number_in_the_error(lists: Audiences) -> None:
    with pytest.raises(InvalidPhone) as exc:
        lists.add("vip", ["+79001234567", "12345"])
    assert "12345" not in str(exc.value)


def test_a_bad_name_or_a_missing_list_is_a_one_line_error(lists: Audiences) -> None:
    with pytest.raises(AudienceError, match="list name 'a b'"):
        lists.add("a b", ["+79001234567"])
    with pytest.raises(AudienceError, match="no saved list 'nope'"):
        list(lists.scan("nope"))


def test_a_replacing_import_switches_in_one_step_and_a_read_in_progress_finishes_on_the_old_members(
        lists: Audiences) -> None:
    old = [f"+7900{i:07d}" for i in range(3000)]
    lists.add("vip", old)
    reading = lists.scan("vip")
    first = [next(reading).phone for _ in range(10)]
    assert lists.replace("vip", [f"+7911{i:07d}" for i in range(5)]) == 5
    rest = [m.phone for m in reading]
    assert set(first + rest) == set(old)  # whole, and nothing of the new list
    assert {m.phone for m in lists.scan("vip")} == {f"+7911{i:07d}" for i in range(5)}


def test_a_replacing_import_that_fails_midway_leaves_the_list_as_it_was(lists: Audiences) -> None:
    lists.add("vip", ["+79001234567"])

    def members() -> Any:
        yield "+79005550000"
        raise InvalidPhone("unexpected character")

    with pytest.raises(InvalidPhone):
        lists.replace("vip", members())
    assert [m.phone for m in lists.scan("vip")] == ["+79001234567"]
    assert len(lists.r.keys(lists.index + ":vip:*")) == 1  # nothing left behind


def test_the_stop_list_is_not_applied_to_the_list_but_show_counts_the_stopped_members(
        lists: Audiences, redis_client: redis.Redis) -> None:
    lists.add("vip", ["+79001234567", "+79001234568"])
    stop = StopList(redis_client, Keys(NS))
    stop.add(["89001234567"])
    assert lists.count("vip") == 2
    assert lists.stopped("vip", stop) == 1


def test_the_list_digest_does_not_depend_on_the_order_and_changes_with_a_member(lists: Audiences) -> None:
    a, b = ListDigest(), ListDigest()
    a.add("1", "x")
    a.add("2", "y")
    b.add("2", "y")
    b.add("1", "x")
    assert a.hexdigest() == b.hexdigest()
    b.add("3", "z")
    assert a.hexdigest() != b.hexdigest()


def test_delete_keeps_the_members_readable_for_an_enqueue_in_progress_then_the_list_is_gone(
        lists: Audiences) -> None:
    lists.add("vip", ["+79001234567"])
    key = lists.key("vip")
    assert lists.delete("vip") and not lists.exists("vip")
    assert 0 < lists.r.pttl(key) <= 3_600_000
    assert lists.delete("vip") is False


# -- a recurring run of a saved list ------------------------------------------------------------------

@pytest.fixture
def rt(redis_server: Any, redis_client: redis.Redis) -> Runtime:
    # No credentials: the enqueue has no balance to check (the workers would say so); nothing is sent here.
    return Runtime(Settings(redis_url=redis_server.url, smsc_namespace=NS), redis=redis_client)


def test_two_messages_for_one_run_at_once_make_one_campaign_of_the_list(lists: Audiences, rt: Runtime) -> None:
    lists.add("vip", [f"+7900{i:07d}" for i in range(2500)])
    out: list[dict[str, Any]] = []
    at = 1_764_579_601_234  # 2025-12-01 09:00:01 UTC

    def one() -> None:
        out.append(run(rt, schedule="weekly", audience="list:vip", every_s=86_400, at_s=9 * 3600,
                       message="Hello", published_ms=at))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {o["campaign_id"] for o in out} == {"weekly.251201"}
    assert sorted(bool(o["existing"]) for o in out) == [False, True]
    assert rt.campaigns.status("weekly.251201")["total"] == 2500
    assert rt.campaigns.campaign_ids() == ["weekly.251201"]


def test_the_next_run_is_a_campaign_of_its_own_and_stop_listed_members_are_left_out(
        lists: Audiences, rt: Runtime) -> None:
    lists.add("vip", ["+79001234567", "+79001234568"])
    rt.stoplist.add(["+79001234568"])
    day1 = run(rt, schedule="weekly", audience="list:vip", every_s=86_400, at_s=32_400, message="Hi",
               published_ms=1_764_579_600_000)
    late = run(rt, schedule="weekly", audience="list:vip", every_s=86_400, at_s=32_400, message="Hi",
               published_ms=1_764_579_600_000 + 5 * 3_600_000)  # a beat restarted 5 h late: the same run
    day2 = run(rt, schedule="weekly", audience="list:vip", every_s=86_400, at_s=32_400, message="Hi",
               published_ms=1_764_579_600_000 + 86_400_000)
    assert (day1["campaign_id"], late["campaign_id"], day2["campaign_id"]) == ("weekly.251201", "weekly.251201",
                                                                               "weekly.251202")
    assert late["existing"] and not day2["existing"]
    assert (day1["total"], day1["suppressed"]) == (1, 1)


def test_a_list_edited_between_two_messages_of_one_run_still_makes_one_campaign(
        lists: Audiences, rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    lists.add("vip", ["+79001234567"])
    first = run(rt, schedule="w", audience="list:vip", every_s=60, message="Hi", published_ms=1_764_579_601_000)
    lists.add("vip", ["+79001234568"])

    def still_planning(cid: str) -> dict[str, str]:  # the second message looked while the first was planning
        raise CampaignError(f"no campaign with id {cid!r}")

    monkeypatch.setattr(rt.campaigns, "fields", still_planning)
    second = run(rt, schedule="w", audience="list:vip", every_s=60, message="Hi", published_ms=1_764_579_602_000)
    assert first["campaign_id"] == second["campaign_id"] == "w.251201T0900"
    assert second["existing"] and "error" not in second
    assert "made from another content of list:vip" in caplog.text
    monkeypatch.undo()
    assert rt.campaigns.campaign_ids() == ["w.251201T0900"]
    assert rt.campaigns.status("w.251201T0900")["total"] == 1


def test_a_run_of_a_template_uses_the_columns_the_members_were_saved_with(lists: Audiences, rt: Runtime) -> None:
    lists.add("vip", [("+79001234567", {"name": "Anna"}), ("+79001234568", {"name": ""})])
    out = run(rt, schedule="w", audience="list:vip", every_s=60, template="{{ name }}, hello",
              published_ms=1_764_579_601_000)
    assert (out["total"], out["invalid"]) == (1, 1)  # the empty name is refused, by its column
    assert json.loads(rt.redis.hget(Keys(NS).batch("w.251201T0900:0"), "texts")) == {"+79001234567": "Anna, hello"}


@pytest.mark.parametrize(("audience", "why"), [
    ("list:nope", "no saved list 'nope'"),
    ("file:/nonexistent/phones.txt", "/nonexistent/phones.txt: cannot open: no such file"),
])
def test_a_run_whose_audience_is_missing_makes_no_campaign_and_says_why_in_one_line(
        rt: Runtime, audience: str, why: str) -> None:
    out = run(rt, schedule="w", audience=audience, every_s=60, message="Hi", published_ms=1_764_579_601_000)
    assert why in out["error"] and "\n" not in out["error"]
    assert rt.campaigns.campaign_ids() == []


def test_an_empty_list_makes_no_campaign(lists: Audiences, rt: Runtime) -> None:
    lists.replace("vip", [])
    out = run(rt, schedule="w", audience="list:vip", every_s=60, message="Hi", published_ms=1_764_579_601_000)
    assert "no valid recipients" in out["error"]


# -- the CLI ---------------------------------------------------------------------------------------

def cli(env: Mapping[str, str], *args: str, stdin: str | None = None,
        code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "worker.cli_audience", *args], env=child_env(env), input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == code, f"audience {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def env(redis_server: Any, redis_client: redis.Redis) -> dict[str, str]:
    return {"REDIS_URL": redis_server.url, "SMSC_NAMESPACE": NS}


def test_cli_import_of_a_csv_keeps_its_columns_names_bad_lines_and_exports_back_whole(
        env: dict[str, str], tmp_path: Path) -> None:
    table = tmp_path / "clients.csv"
    table.write_text("phone;name\n+7 900 111-22-33;Anna\nnot a phone;Bob\n89001112234;Clara\n", encoding="utf-8")
    out = cli(env, "import", "vip", str(table), "--json")
    assert last_json(out) == {"list": "vip", "added": 2, "already": 0, "invalid": 1, "members": 2}
    assert out.stderr.strip() == (f"{table}:3: 'not a phone': column 'phone': unexpected character 'n'; "
                                  "expected digits, one leading '+' and separators")
    exported = cli(env, "export", "vip", "--csv").stdout.splitlines()
    assert exported[0] == "phone,name" and sorted(exported[1:]) == ["+79001112233,Anna", "89001112234,Clara"]
    again = tmp_path / "again.csv"
    again.write_text("\n".join(exported) + "\n", encoding="utf-8")
    assert last_json(cli(env, "import", "copy", str(again), "--json"))["members"] == 2


def test_cli_show_counts_the_members_on_the_stop_list_and_list_names_every_list(
        env: dict[str, str], redis_client: redis.Redis) -> None:
    cli(env, "add", "vip", "+79001234567", "+79001234568")
    cli(env, "add", "other", "-", stdin="79005550000\n")
    StopList(redis_client, Keys(NS)).add(["89001234567"])
    shown = last_json(cli(env, "show", "vip", "--json"))
    assert (shown["members"], shown["stopped"]) == (2, 1)
    assert [i["name"] for i in last_json(cli(env, "list", "--json"))["lists"]] == ["other", "vip"]


def test_cli_replace_makes_the_list_exactly_the_file_and_remove_and_delete_work(
        env: dict[str, str], tmp_path: Path) -> None:
    cli(env, "add", "vip", "+79001234567", "+79001234568")
    phones = tmp_path / "phones.txt"
    phones.write_text("+79009990000\n", encoding="utf-8")
    assert last_json(cli(env, "import", "vip", str(phones), "--replace", "--json"))["members"] == 1
    assert last_json(cli(env, "remove", "vip", "79009990000", "--json"))["removed"] == 1
    cli(env, "delete", "vip")
    assert "no saved list 'vip'" in cli(env, "show", "vip", code=2).stderr


@pytest.mark.parametrize(("args", "why"), [
    (("add", "vip", "12"), "audience add: argument 1 ('12'): 2 digits; a number needs 10 to 15"),
    (("add", "a b", "+79001234567"), "list name 'a b': use 1-64 characters of A-Za-z0-9_-"),
    (("export", "nope"), "no saved list 'nope'"),
    (("import", "vip", "/nonexistent.txt"), "/nonexistent.txt: cannot open: no such file"),
])
def test_cli_bad_input_is_one_line_and_exit_2(env: dict[str, str], args: tuple[str, ...], why: str) -> None:
    err = cli(env, *args, code=2).stderr.strip()
    assert len(err.splitlines()) == 1 and why in err


def test_cli_redis_unreachable_is_one_line_and_exit_1() -> None:
    err = cli({"REDIS_URL": "redis://127.0.0.1:1/0"}, "list", code=1).stderr.strip()
    assert err == "smsc-mailer: cannot reach Redis at redis://127.0.0.1:1/0 (set REDIS_URL)"


def test_the_public_surface_is_pinned() -> None:
    import scheduler.audiences
    import worker.cli_audience
    import worker.recurring

    assert sorted(scheduler.audiences.__all__) == sorted([
        "CHUNK", "NAME_RE", "OLD_VERSION_TTL_MS", "AudienceError", "Audiences", "ListDigest", "Member", "check_name"])
    assert worker.cli_audience.__all__ == ["audience"]
    assert sorted(worker.recurring.__all__) == sorted([
        "HEADER", "OPTIONS", "TASK", "Cadence", "Reference", "cadence_of", "recurring", "recurring_entry", "run"])
    for module in (scheduler.audiences, worker.cli_audience, worker.recurring):
        assert all(hasattr(module, name) for name in module.__all__)
