"""The campaign pipeline end to end: CLI → Redis → beat → two real worker processes → simulator."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.integration.helpers import (
    assert_exactly_once,
    breaches,
    cli,
    last_json,
    numbers,
    wait_until_final,
    write_phones,
)

pytestmark = pytest.mark.integration

MESSAGE = "Your parcel is on its way: track it at example.com/t"


def test_twenty_thousand_recipients_through_the_cli_reach_the_provider_exactly_once(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = celery_stack(workers=2, concurrency=4, sim_options={"latency_ms": 20},
                         env={"SMSC_BATCH_SIZE": "250"})
    recipients = numbers(20_000)
    # the same numbers written other ways, and lines that are not numbers at all
    extra = ["+" + recipients[0], f"+7 (900) {recipients[1][4:7]}-{recipients[1][7:9]}-{recipients[1][9:]}",
             "hello", "+7 900 1"]
    phones = write_phones(tmp_path / "phones.txt", recipients, extra)

    enq = cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", MESSAGE, "--json")
    receipt = last_json(enq)
    assert receipt["total"] == 20_000
    assert receipt["invalid"] == 2
    assert receipt["duplicates"] == 2
    assert receipt["parts"] == 1
    assert f"{phones}:20003:" in enq.stderr and f"{phones}:20004:" in enq.stderr  # invalid lines, by number

    st = wait_until_final(stack.env, receipt["campaign_id"], timeout_s=240)
    assert st["state"] == "completed"
    assert (st["sent"], st["failed"], st["cancelled"], st["pending"]) == (20_000, 0, 0, 0)
    assert st["sms"] == 20_000  # the provider's own count of SMS parts
    assert float(st["cost"]) > 0

    summary = stack.simulator.summary()
    assert_exactly_once(stack.simulator.phones(), recipients)
    assert summary["duplicates"] == 0
    assert breaches(summary) == {}
    assert summary["peak_inflight"] < 15

    report = tmp_path / "report.csv"
    cli(stack.env, "report", receipt["campaign_id"], "--csv", str(report))
    with report.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20_000
    assert {r["state"] for r in rows} == {"sent"}
    assert all(r["provider_id"].startswith(receipt["campaign_id"] + "-") for r in rows)


def test_numbers_the_provider_rejects_fail_alone_while_the_rest_of_the_batch_is_sent(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = celery_stack(workers=1, concurrency=2, sim_options={"latency_ms": 5})
    stack.simulator.configure(undeliverable_prefixes=["7955"])
    good = numbers(40, prefix="7900")
    bad = numbers(3, prefix="7955")
    phones = write_phones(tmp_path / "phones.txt", good[:20] + bad + good[20:])
    receipt = last_json(cli(stack.env, "enqueue", "--phones-file", str(phones), "--message", MESSAGE, "--json"))

    st = wait_until_final(stack.env, receipt["campaign_id"], timeout_s=60)
    assert (st["state"], st["sent"], st["failed"]) == ("completed", 40, 3)
    assert_exactly_once(stack.simulator.phones(), good)

    report = tmp_path / "report.csv"
    cli(stack.env, "report", receipt["campaign_id"], "--csv", str(report))
    with report.open() as f:
        failed = {r["phone"]: r for r in csv.DictReader(f) if r["state"] == "failed"}
    assert set(failed) == set(bad)
    assert {r["error_code"] for r in failed.values()} == {"8"}
    assert all(r["reason"] for r in failed.values())


def test_a_campaign_whose_every_batch_is_refused_ends_failed_with_the_reason(
        celery_stack, redis_client, tmp_path: Path) -> None:
    stack = celery_stack(workers=1, concurrency=2)
    stack.simulator.configure(forbidden_words=["casino"])
    phones = write_phones(tmp_path / "phones.txt", numbers(30))
    receipt = last_json(cli(stack.env, "enqueue", "--phones-file", str(phones), "--message",
                            "Best casino bonus", "--json", "--batch-size", "10"))
    st = wait_until_final(stack.env, receipt["campaign_id"], timeout_s=60)
    assert (st["state"], st["sent"], st["failed"]) == ("failed", 0, 30)
    assert "error 6" in (st["last_error"] or "")
    assert stack.simulator.summary()["messages"] == 0


def test_two_deployments_on_one_redis_and_one_login_never_take_each_others_batches(
        celery_stack, make_simulator, redis_client, tmp_path: Path) -> None:
    """Two namespaces on one Redis (the README allows it), one login at one provider: each deployment's
    workers take only their own batches (one Celery queue per namespace), and both share the login's
    guards — the provider never sees more than 14 requests in flight from the two together."""
    sim = make_simulator(latency_ms=50)
    shop = celery_stack(workers=1, concurrency=4, namespace="shop", simulator=sim)
    bank = celery_stack(workers=1, concurrency=4, namespace="bank", simulator=sim)
    a, b = numbers(1_000), numbers(1_000, start=5_000_000)
    cids = []
    for stack, recipients, name in ((shop, a, "a"), (bank, b, "b")):
        phones = write_phones(tmp_path / f"{name}.txt", recipients)
        receipt = last_json(cli({**stack.env, "SMSC_BATCH_SIZE": "50"}, "enqueue", "--phones-file", str(phones),
                                "--message", MESSAGE, "--json"))
        cids.append((stack, receipt["campaign_id"]))
    for stack, cid in cids:
        st = wait_until_final(stack.env, cid, timeout_s=120)
        assert (st["state"], st["sent"]) == ("completed", 1_000)
    assert_exactly_once(sim.phones(), a + b)
    summary = sim.summary()
    assert breaches(summary) == {}
    assert summary["peak_inflight"] <= 14
