"""Nothing lost, nothing twice, no rule broken: the scenarios of ``make chaos`` (``worker.dev.chaos``) at
test sizes, each with its own real processes, within its time bound; the command's table; and the search for
the password that proves it is nowhere.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import redis

from worker.dev import chaos
from worker.dev.chaos import PASSWORD, find_secret_in_files, find_secret_in_redis

pytestmark = [pytest.mark.integration, pytest.mark.chaos]



# -- the chaos scenarios ------------------------------------------------------------------------------

# name -> recipients here (the quick sizes of ``smsc-mailer-dev chaos --quick``: every scenario runs in
# ``make test``, sized down; the longest, fast-clock, waits out the provider's 60 s flood gap by design)
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
    # No stall: the time to completed, by the Redis server's clock, within the scenario's stated bound.
    assert res.completed_s is not None and res.completed_s <= res.bound_s, res.notes
    # The zeros above mean something only if the fault really hit (a kill mid-request, a restart, a
    # freeze, two enqueues at once ...): each scenario says so in its checks, with its own promises.
    assert res.checks, f"{name} checks nothing about its fault"
    assert [c for c, ok in res.checks.items() if not ok] == [], res.notes
    assert res.ok


def test_chaos_command_prints_the_table_and_exits_zero(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from worker.dev.cli import cli as smsc_mailer_dev

    result = CliRunner().invoke(smsc_mailer_dev, ["chaos", "--quick", "--only", "two-beats", "--json"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert any(line.split()[:1] == ["scenario"] and "duplicated" in line for line in lines)
    [row] = json.loads(lines[-1])
    assert (row["name"], row["lost"], row["duplicated"], row["breaches"], row["ok"]) == ("two-beats", 0, 0, 0, True)
    assert row["in_time"] and row["completed_s"] <= row["bound_s"]


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
