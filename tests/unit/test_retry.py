"""``retry_campaign``: a follow-up campaign of the recipients that failed, each with its own text.

A real redis-server; campaigns made through the real API (``enqueue_campaign``, ``enqueue_table``); their
outcomes made by running their batches as a worker does (``process_batch``) against the simulator in
process — some numbers answered with error 8, some delivered with status 20 and read back by polling — and
the follow-up read where a user reads it: ``status``, its batches, and what the simulator received.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from scheduler.campaigns import CampaignError, Receipt
from scheduler.keys import batch_ref, text
from scheduler.stoplist import StopList
from worker import retry as retry_mod
from worker.api import CampaignOptions, enqueue_campaign, enqueue_table
from worker.delivery.config import DeliveryConfig
from worker.delivery.poller import make_store, poll_batch, tick
from worker.delivery.report import report_rows
from worker.retry import DEFAULT_STATES, RetryStats, parse_codes, parse_states, retry_campaign, retry_id
from worker.runtime import Runtime
from worker.sending import process_batch
from worker.settings import Settings
from worker.sim import SimConfig, SimTransport, Simulator
from worker.smsc.client import SmscClient
from worker.smsc.requests import SendOptions

LOGIN, PASSWORD = "acme", "acme-password"
# Half the messages the provider took end "cannot be delivered" (20), half delivered: drawn per message
# by the simulator's seed; the test reads each one's truth back from the simulator.
HALF_UNDELIVERABLE = {"enabled": True, "rates": {1: 0.5, 20: 0.5}, "delay_s": 0.05, "spread": 0.2,
                      "max_delay_s": 0.2}
# The balance check is the enqueue's (worker.costs), not the retry's: these campaigns skip it.
PARTIAL = CampaignOptions(allow_partial=True)


def phone(i: int) -> str:
    return f"+7902{i:07d}"


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(login=LOGIN, password=PASSWORD, seed=5))


@pytest.fixture
def runtime(redis_server: Any, redis_client: redis.Redis, sim: Simulator) -> Iterator[Runtime]:
    s = Settings(redis_url=redis_server.url, smsc_login=LOGIN, smsc_password=SecretStr(PASSWORD),
                 smsc_base_url="http://smsc.test", smsc_namespace="retry", smsc_timeout=2.0)
    client = SmscClient(base_url=s.smsc_base_url, login=LOGIN, password=SecretStr(PASSWORD), timeout_s=2.0,
                        transport=SimTransport(sim))
    rt = Runtime(s, redis=redis_client, client=client)
    yield rt
    client.close()


def api(rt: Runtime) -> dict[str, Any]:
    """The keyword arguments that point the producer's API at the test's Redis and namespace."""
    return {"settings": rt.settings, "redis_conn": rt.redis}


def run_until_done(rt: Runtime, cid: str, *, timeout_s: float = 60) -> dict[str, Any]:
    """Run what is due, as the dispatcher and a worker would, until the campaign ends."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = rt.campaigns.status(cid)
        if st["state"] in ("completed", "failed", "cancelled") and st["pending"] == 0:
            return st
        refs = rt.ledger.claim(now_ms=int(time.time() * 1000), window=1000, claim_lease_ms=60_000, max_claim=1000)
        for ref in refs:
            process_batch(rt, ref)
        if not refs:
            time.sleep(0.05)
    raise AssertionError(f"campaign {cid} did not end: {rt.campaigns.status(cid)}")


def poll_deliveries(rt: Runtime, cid: str) -> None:
    """Read every sent recipient's final status back from the provider (status.php), as the poller does."""
    cfg = DeliveryConfig(horizon_s=3600)
    store = make_store(rt, cfg)
    tick(rt, store)
    time.sleep(0.3)  # past every drawn delay (at most 0.2 s)
    for i in range(int(rt.campaigns.fields(cid)["batches"])):
        poll_batch(rt, store, cfg, batch_ref(cid, i))


def recipients_of(rt: Runtime, cid: str) -> list[str]:
    """The phones queued in a campaign's batches (a follow-up before it is sent)."""
    out: list[str] = []
    for i in range(int(rt.campaigns.fields(cid)["batches"])):
        out += [p for p in text(rt.redis.hget(rt.keys.batch(batch_ref(cid, i)), "phones") or b"").split(",") if p]
    return out


def truth_by_phone(sim: Simulator) -> dict[str, int]:
    """The final status the provider drew for each number it took."""
    return {"+" + t["phone"]: t["status"] for t in sim.truth(0, 100_000)}


# -- who is retried ---------------------------------------------------------------------------------------
def test_a_retry_takes_the_failed_recipients_only_and_the_link_shows_both_ways(runtime: Runtime,
                                                                               sim: Simulator) -> None:
    phones = [phone(i) for i in range(12)]
    bad = phones[2], phones[7], phones[11]
    sim.configure(undeliverable_prefixes=[p.lstrip("+") for p in bad])
    enqueue_campaign(phones, "Your code: 4711", sender="MyShop", campaign_id="c1", batch_size=5,
                     options=PARTIAL, **api(runtime))
    st = run_until_done(runtime, "c1")
    assert (st["sent"], st["failed"]) == (9, 3)

    receipt = retry_campaign("c1", **api(runtime))
    assert receipt is not None
    assert (receipt.campaign_id, receipt.total, receipt.existing) == ("c1.r1", 3, False)
    assert sorted(recipients_of(runtime, "c1.r1")) == sorted(bad)
    follow = runtime.campaigns.status("c1.r1")
    assert (follow["retry_of"], follow["sender"], follow["state"]) == ("c1", "MyShop", "queued")
    assert runtime.campaigns.status("c1")["retries"] == ["c1.r1"]

    sim.configure(undeliverable_prefixes=[])  # the operator fixed whatever made them fail
    done = run_until_done(runtime, "c1.r1")
    assert (done["sent"], done["failed"]) == (3, 0)
    received = [m for m in sim.record(0, 1000)]
    assert sorted(m["phone"] for m in received) == sorted(p.lstrip("+") for p in phones)  # each one, once
    assert {m["text"] for m in received} == {"Your code: 4711"}


def test_codes_pick_send_errors_or_delivery_statuses_and_nobody_is_in_two_follow_ups(runtime: Runtime,
                                                                                    sim: Simulator) -> None:
    sim.configure(delivery=HALF_UNDELIVERABLE)
    phones = [phone(i) for i in range(40)]
    error_8 = set(phones[:4])
    sim.configure(undeliverable_prefixes=[p.lstrip("+") for p in error_8])
    enqueue_campaign(phones, "Hello", campaign_id="c2", batch_size=10, options=PARTIAL, **api(runtime))
    run_until_done(runtime, "c2")
    poll_deliveries(runtime, "c2")
    truth = truth_by_phone(sim)
    status_20 = {p for p, status in truth.items() if status == 20}
    assert status_20 and len(status_20) < len(phones) - len(error_8)  # both kinds are there
    report = {r[0]: r for r in report_rows(make_store(runtime, DeliveryConfig()), "c2")}
    assert {p for p, r in report.items() if r[7] == "undeliverable"} == status_20  # what the report shows

    by_8 = retry_campaign("c2", codes={8}, **api(runtime))
    assert by_8 is not None and by_8.campaign_id == "c2.r1"
    assert set(recipients_of(runtime, "c2.r1")) == error_8
    by_20 = retry_campaign("c2", codes=parse_codes("20"), **api(runtime))
    assert by_20 is not None and by_20.campaign_id == "c2.r2"
    assert set(recipients_of(runtime, "c2.r2")) == status_20

    # Both kinds again (the default states): every one of them is in a follow-up already.
    stats = RetryStats()
    assert retry_campaign("c2", **api(runtime), stats=stats) is None
    assert (stats.matched, stats.already_retried, stats.selected) == (len(error_8) + len(status_20),) * 2 + (0,)
    assert runtime.campaigns.status("c2")["retries"] == ["c2.r1", "c2.r2"]


def test_a_campaign_where_everyone_was_sent_has_nothing_to_retry(runtime: Runtime) -> None:
    enqueue_campaign([phone(i) for i in range(5)], "Hi", campaign_id="ok", options=PARTIAL, **api(runtime))
    run_until_done(runtime, "ok")
    stats = RetryStats()
    assert retry_campaign("ok", **api(runtime), stats=stats) is None
    assert stats.as_dict() == {"matched": 0, "already_retried": 0, "suppressed": 0, "selected": 0}
    assert runtime.campaigns.status("ok")["retries"] == []


def test_cancelled_recipients_are_retried_only_when_asked_and_the_budget_is_not_copied(runtime: Runtime) -> None:
    send = SendOptions(translit=1, valid="3")
    enqueue_campaign([phone(i) for i in range(6)], "Скидка 10%", sender="MyShop", campaign_id="c3", options=
                     CampaignOptions(send=send, max_cost=Decimal("50"), allow_partial=True, auto_stop=True),
                     window="9-22", tz_h=2, **api(runtime))
    runtime.campaigns.cancel("c3")
    assert retry_campaign("c3", **api(runtime)) is None  # cancelled is not in the default states
    receipt = retry_campaign("c3", states=parse_states("cancelled"), **api(runtime))
    assert receipt is not None and receipt.total == 6
    follow = runtime.campaigns.status("c3.r1")
    assert follow["options"] == runtime.campaigns.status("c3")["options"] == {
        "translit": 1, "tinyurl": False, "flash": False, "valid": "3", "maxsms": None}
    assert (follow["sender"], follow["auto_stop"], follow["max_cost"]) == ("MyShop", True, None)
    assert runtime.campaigns.fields("c3.r1")["message"] == "Скидка 10%"
    plan = runtime.campaigns.fields("c3.r1")["plan"]
    assert '"window": "9-22"' in plan and '"tz_h": 2.0' in plan  # the send window goes with it


def test_a_given_max_cost_is_the_follow_ups_budget(runtime: Runtime) -> None:
    enqueue_campaign([phone(i) for i in range(3)], "Hi", campaign_id="c4", options=PARTIAL, **api(runtime))
    runtime.campaigns.cancel("c4")
    receipt = retry_campaign("c4", states={"cancelled"}, max_cost=Decimal("12.5"), **api(runtime))
    assert receipt is not None
    assert runtime.campaigns.status(receipt.campaign_id)["max_cost"] == "12.5"


def test_numbers_put_on_the_stop_list_since_are_left_out(runtime: Runtime, sim: Simulator) -> None:
    phones = [phone(i) for i in range(4)]
    sim.configure(undeliverable_prefixes=[p.lstrip("+") for p in phones])
    enqueue_campaign(phones, "Hi", campaign_id="c5", options=PARTIAL, **api(runtime))
    run_until_done(runtime, "c5")
    StopList(runtime.redis, runtime.keys).add([phones[0], phones[1]], reason="opted out")
    stats = RetryStats()
    receipt = retry_campaign("c5", **api(runtime), stats=stats)
    assert receipt is not None and sorted(recipients_of(runtime, receipt.campaign_id)) == phones[2:]
    assert (stats.matched, stats.suppressed, stats.selected) == (4, 2, 2)


# -- personal texts ---------------------------------------------------------------------------------------
TEXTS = ["Анна, заказ 4711: готов", "b; semicolon, comma | pipe", "new\nline and 🎉", r"C:\new\table back\slash",
         "  spaces kept  ", "quote \" and ' apostrophe"]


def test_personal_texts_and_senders_go_into_the_follow_up_byte_for_byte(runtime: Runtime, sim: Simulator,
                                                                        tmp_path: Path) -> None:
    table = tmp_path / "people.csv"
    people = [(phone(100 + i), TEXTS[i % len(TEXTS)], "Shop" + str(i % 3) if i % 2 else "") for i in range(18)]
    with table.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["phone", "text", "sender"])
        w.writerows(people)
    failing = {p for i, (p, _, _) in enumerate(people) if i % 3 == 0}
    sim.configure(undeliverable_prefixes=[p.lstrip("+") for p in failing])
    enqueue_table(table, "{{ text }}", sender_column="sender", sender="Main", campaign_id="p1", batch_size=4,
                  options=PARTIAL, **api(runtime))
    run_until_done(runtime, "p1")
    assert runtime.campaigns.status("p1")["failed"] == len(failing)

    receipt = retry_campaign("p1", **api(runtime))
    assert receipt is not None and receipt.total == len(failing)
    want = {p: (t, s or None) for p, t, s in people if p in failing}
    got: dict[str, tuple[str, str | None]] = {}
    for i in range(receipt.batches):
        texts, senders = runtime.redis.hmget(runtime.keys.batch(batch_ref(receipt.campaign_id, i)), "texts", "senders")
        t, s = json.loads(text(texts)), json.loads(text(senders)) if senders else {}
        got.update({p: (t[p], s.get(p)) for p in t})
    assert got == want
    follow = runtime.campaigns.status(receipt.campaign_id)
    assert follow["personal"] and follow["sender"] == "Main"

    sim.configure(undeliverable_prefixes=[])
    run_until_done(runtime, receipt.campaign_id)
    second = {m["phone"]: m for m in sim.record(0, 1000) if "+" + m["phone"] in failing}
    assert {"+" + p: m["text"] for p, m in second.items()} == {p: t for p, (t, _) in want.items()}


def test_each_recipients_own_time_zone_still_decides_when_the_follow_ups_window_opens(runtime: Runtime) -> None:
    now_h = time.gmtime(runtime.redis.time()[0]).tm_hour
    start = (now_h + 3) % 24  # a one-hour window open now at UTC+3, closed at UTC+10
    window = f"{start}-{(start + 1) % 24}"
    rows = [{"phone": "+79100000001", "tz": "3"}, {"phone": "+79100000002", "tz": "+10"}]
    enqueue_campaign(rows, template="hi", tz_column="tz", window=window, recipient_time=True, campaign_id="z",
                     options=PARTIAL, **api(runtime))
    runtime.campaigns.cancel("z")
    receipt = retry_campaign("z", states={"cancelled"}, **api(runtime))
    assert receipt is not None and receipt.batches == 2
    due = {}
    for n in range(2):
        phones, at = runtime.redis.hmget(runtime.keys.batch(f"z.r1:{n}"), "phones", "due")
        due[text(phones or b"")] = int(at or 0)
    assert due["+79100000002"] - due["+79100000001"] >= 6 * 3_600_000  # the UTC+10 one waits for its hour


# -- idempotence ----------------------------------------------------------------------------------------
def failed_campaign(rt: Runtime, sim: Simulator, cid: str, n: int = 6) -> list[str]:
    phones = [phone(200 + i) for i in range(n)]
    sim.configure(undeliverable_prefixes=[p.lstrip("+") for p in phones[: n // 2]])
    enqueue_campaign(phones, "Hi", campaign_id=cid, options=PARTIAL, **api(rt))
    run_until_done(rt, cid)
    return phones[: n // 2]


def test_a_retry_run_again_after_a_crash_before_the_link_gets_the_same_campaign(
        runtime: Runtime, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = failed_campaign(runtime, sim, "c6")
    real_link = retry_mod._link

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt("killed between the enqueue and the link")

    monkeypatch.setattr(retry_mod, "_link", crash)
    with pytest.raises(KeyboardInterrupt):
        retry_campaign("c6", **api(runtime))
    assert runtime.campaigns.status("c6")["retries"] == []  # the follow-up exists, the link does not
    monkeypatch.setattr(retry_mod, "_link", real_link)

    again = retry_campaign("c6", **api(runtime))
    assert again is not None and (again.campaign_id, again.existing, again.total) == ("c6.r1", True, len(bad))
    assert runtime.campaigns.status("c6")["retries"] == ["c6.r1"]
    assert [c for c in runtime.campaigns.campaign_ids() if c.startswith("c6.")] == ["c6.r1"]
    assert sorted(recipients_of(runtime, "c6.r1")) == sorted(bad)


def test_two_retries_at_once_make_one_follow_up_linked_once(runtime: Runtime, sim: Simulator) -> None:
    bad = failed_campaign(runtime, sim, "c7")
    out: list[Receipt | None] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(retry_campaign("c7", **api(runtime)))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ids = {r.campaign_id for r in out if r is not None}
    # Whoever came after the link found everyone retried already (None); the others got c7.r1.
    assert ids == {"c7.r1"}
    assert runtime.campaigns.status("c7")["retries"] == ["c7.r1"]
    assert sorted(recipients_of(runtime, "c7.r1")) == sorted(bad)


def test_a_retry_of_a_retry_and_a_long_id_stay_deterministic(runtime: Runtime, sim: Simulator) -> None:
    assert retry_id("c1", 1) == "c1.r1" and retry_id("c1.r1", 2) == "c1.r1.r2"
    long = "x" * 22
    assert retry_id(long, 1) == retry_id(long, 1) != retry_id(long, 2)
    assert len(retry_id(long, 12)) <= 24
    bad = failed_campaign(runtime, sim, "c8")
    first = retry_campaign("c8", **api(runtime))
    assert first is not None
    run_until_done(runtime, first.campaign_id)  # fails again: the numbers still answer error 8
    second = retry_campaign(first.campaign_id, **api(runtime))
    assert second is not None and second.campaign_id == "c8.r1.r1"
    assert sorted(recipients_of(runtime, "c8.r1.r1")) == sorted(bad)
    assert runtime.campaigns.status("c8.r1.r1")["retry_of"] == "c8.r1"


# -- refusals ---------------------------------------------------------------------------------------------
def test_an_unknown_campaign_is_refused_in_one_line(runtime: Runtime) -> None:
    with pytest.raises(CampaignError, match="no campaign with id 'nope'"):
        retry_campaign("nope", **api(runtime))


def test_a_campaign_still_being_enqueued_is_refused(runtime: Runtime) -> None:
    reading, release = threading.Event(), threading.Event()

    def slow() -> Iterator[str]:
        yield phone(1)
        reading.set()
        release.wait(10)
        yield phone(2)

    t = threading.Thread(target=lambda: enqueue_campaign(slow(), "Hi", campaign_id="slow", options=PARTIAL,
                                                         **api(runtime)))
    t.start()
    try:
        assert reading.wait(10)
        with pytest.raises(CampaignError, match="planning"):
            retry_campaign("slow", **api(runtime))
    finally:
        release.set()
        t.join()
    assert runtime.campaigns.status("slow")["retries"] == []


@pytest.mark.parametrize(("states", "codes", "why"), [
    ("delivered", None, "not a failed state"),
    ("pending", None, "not a failed state"),
    (None, "8,x", "whole numbers"),
])
def test_bad_states_or_codes_are_one_line(states: str | None, codes: str | None, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_codes(codes) if states is None else parse_states(states)


def test_the_default_states_are_the_failures_another_attempt_may_change() -> None:
    assert parse_states(None) == parse_states("") == DEFAULT_STATES
    assert DEFAULT_STATES == {"failed", "expired", "undeliverable", "unreachable"}
    assert parse_states(" Failed , cancelled ") == {"failed", "cancelled"}
    assert parse_codes(None) is None
    assert parse_codes("8, 20") == frozenset({8, 20})

