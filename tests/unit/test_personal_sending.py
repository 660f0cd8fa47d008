"""Personal texts, end to end below Celery: the intake writes each recipient's text with its batch, the
batch goes out (``list`` for different texts, ``phones`` + ``mes`` for one text), and the simulator's record —
what the provider received — holds every text byte for byte, with the parts the provider bills.

A real redis-server; the simulator as the client's in-process transport; ``process_batch`` as a worker runs it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from scheduler.campaigns import CampaignSpec
from scheduler.enqueue import list_safe
from worker.runtime import Runtime
from worker.sending import process_batch
from worker.settings import Settings
from worker.sim import SimConfig, SimTransport, Simulator
from worker.smsc.client import SmscClient
from worker.smsc.encoding import count_segments

LOGIN, PASSWORD = "acme", "acme-password"


@dataclass(frozen=True)
class Person:
    line_no: int
    phone: str
    text: str
    sender: str | None = None
    tz_h: float | None = None


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(login=LOGIN, password=PASSWORD, seed=11))


@pytest.fixture
def runtime(redis_server: Any, redis_client: redis.Redis, sim: Simulator) -> Iterator[Runtime]:
    s = Settings(redis_url=redis_server.url, smsc_login=LOGIN, smsc_password=SecretStr(PASSWORD),
                 smsc_base_url="http://smsc.test", smsc_namespace="personal", smsc_timeout=2.0)
    client = SmscClient(base_url=s.smsc_base_url, login=LOGIN, password=SecretStr(PASSWORD), timeout_s=2.0,
                        transport=SimTransport(sim))
    rt = Runtime(s, redis=redis_client, client=client)
    yield rt
    client.close()


def parts_of(text: str) -> int:
    return count_segments(text).parts


def enqueue(rt: Runtime, people: list[Person], *, cid: str, batch_size: int = 500) -> Any:
    spec = CampaignSpec(message="{{ template }}", parts=0, account=rt.settings.account, batch_size=batch_size,
                        campaign_id=cid, personal=True, parts_of=parts_of)
    return rt.campaigns.create(spec, iter(people), now_ms=int(time.time() * 1000))


def run_until_done(rt: Runtime, cid: str, *, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = rt.campaigns.status(cid)
        if st["state"] in ("completed", "failed"):
            return st
        refs = rt.ledger.claim(now_ms=int(time.time() * 1000), window=1000, claim_lease_ms=60_000, max_claim=1000)
        for ref in refs:
            process_batch(rt, ref)
        if not refs:
            time.sleep(0.05)
    raise AssertionError(f"campaign {cid} did not finish: {rt.campaigns.status(cid)}")


SPECIALS = ["a: colon", "b, comma", "c; semicolon", "d | pipe", "e\nnew line", "ж Кириллица", "emoji 🎉👍"]


def personal_text(i: int, rnd: random.Random) -> str:
    parts = [f"#{i}", *rnd.sample(SPECIALS, k=len(SPECIALS))]
    if i % 20 == 0:
        parts.append(r"C:\new\table and CRLF\r\n" + "\r\n")  # a backslash: only as the one text of a request
    return " ".join(parts)


def test_ten_thousand_personal_texts_arrive_byte_exact_with_the_parts_the_provider_bills(
        runtime: Runtime, sim: Simulator) -> None:
    rnd = random.Random(3)
    people = [Person(i + 1, f"+7901{i:07d}", personal_text(i, rnd)) for i in range(10_000)]
    receipt = enqueue(runtime, people, cid="p10k")
    expected_sms = sum(parts_of(p.text) for p in people)
    assert (receipt.total, receipt.sms_estimate) == (10_000, expected_sms)
    st = run_until_done(runtime, "p10k")
    assert (st["state"], st["sent"], st["failed"], st["pending"]) == ("completed", 10_000, 0, 0)
    got: dict[str, dict[str, Any]] = {}
    offset = 0
    while page := sim.record(offset, 1000):
        for m in page:
            assert m["phone"] not in got, f"{m['phone']} received twice"
            got[m["phone"]] = m
        offset += len(page)
    assert len(got) == 10_000
    for p in people:
        m = got[p.phone.lstrip("+")]
        assert m["text"] == p.text, p.line_no
        assert m["parts"] == parts_of(p.text)
    assert st["sms"] == expected_sms
    # what each recipient's report row says it cost in parts is what the provider billed
    billed = {row[0]: int(row[3]) for row in runtime.campaigns.report_rows("p10k")}
    assert all(billed[p.phone] == parts_of(p.text) for p in people)


def test_texts_that_cannot_share_a_list_travel_as_the_one_text_of_their_request(
        runtime: Runtime, sim: Simulator) -> None:
    texts = ["plain one", r"back\slash one", "plain two", r"back\slash one", r"back\nslash two", "plain three"]
    people = [Person(i + 1, f"+7902{i:07d}", t) for i, t in enumerate(texts)]
    receipt = enqueue(runtime, people, cid="solo")
    st = run_until_done(runtime, "solo")
    assert st["sent"] == 6
    by_request: dict[str, set[str]] = {}
    for m in sim.record(0, 100):
        by_request.setdefault(f"{m['ts_ms']}:{m['id']}", set()).add(m["text"])
    for request_texts in by_request.values():
        unsafe = [t for t in request_texts if not list_safe(t)]
        assert not unsafe or len(request_texts) == 1, request_texts
    assert {m["text"] for m in sim.record(0, 100)} == set(texts)
    assert receipt.batches >= 3  # the plain ones together, each run of one unsafe text alone


def test_recipients_of_one_text_share_one_line_and_a_per_row_sender_travels_with_its_line(
        runtime: Runtime, sim: Simulator) -> None:
    people = [Person(1, "+79030000001", "same", "ShopA"), Person(2, "+79030000002", "same", "ShopA"),
              Person(3, "+79030000003", "other", "ShopB"), Person(4, "+79030000004", "same")]
    enqueue(runtime, people, cid="lines")
    run_until_done(runtime, "lines")
    senders = {m["phone"]: m["sender"] for m in sim.record(0, 10)}
    assert senders == {"79030000001": "ShopA", "79030000002": "ShopA", "79030000003": "ShopB",
                       "79030000004": None}


def test_a_number_put_on_the_stop_list_while_its_campaign_runs_is_not_sent(
        runtime: Runtime, sim: Simulator) -> None:
    people = [Person(i + 1, f"+7904{i:07d}", f"hello {i}") for i in range(6)]
    enqueue(runtime, people, cid="stopmid", batch_size=2)
    runtime.stoplist.add(["+79040000003"], reason="opted out by SMS")
    st = run_until_done(runtime, "stopmid")
    assert (st["sent"], st["cancelled"], st["pending"]) == (5, 1, 0)
    assert "79040000003" not in sim.phones()
    row = {r[0]: r for r in runtime.campaigns.report_rows("stopmid")}["+79040000003"]
    assert row[1] == "cancelled" and "stop list" in row[6]


def test_auto_stop_puts_the_numbers_the_provider_calls_invalid_on_the_stop_list(
        runtime: Runtime, sim: Simulator, redis_client: redis.Redis) -> None:
    sim.configure(undeliverable_prefixes=["79050000002"])
    people = [Person(i + 1, f"+7905{i:07d}", f"hi {i}") for i in range(4)]
    spec = CampaignSpec(message="", parts=0, account=runtime.settings.account, batch_size=10, campaign_id="auto",
                        personal=True, parts_of=parts_of, extra={"auto_stop": "1"})
    runtime.campaigns.create(spec, iter(people))
    st = run_until_done(runtime, "auto")
    assert (st["sent"], st["failed"]) == (3, 1)
    entry = runtime.stoplist.entry("+79050000002")
    assert entry is not None and entry.source == "auto" and "error 8" in entry.reason
    assert runtime.stoplist.contains(["+79050000001"]) == [False]


def test_a_budget_pauses_the_campaign_before_a_batch_would_pass_it_and_resume_goes_on_after_a_raise(
        runtime: Runtime, sim: Simulator) -> None:
    # 1.50 a part at the simulator: batches of 2 one-part texts cost 3.00; a budget of 7.50 pays two of them.
    people = [Person(i + 1, f"+7906{i:07d}", f"hello {i}") for i in range(8)]
    spec = CampaignSpec(message="", parts=0, account=runtime.settings.account, batch_size=2, campaign_id="budget",
                        personal=True, parts_of=parts_of, extra={"max_cost_milli": "7500"})
    runtime.campaigns.create(spec, iter(people))
    deadline = time.monotonic() + 60
    while runtime.campaigns.status("budget")["state"] != "paused" and time.monotonic() < deadline:
        for ref in runtime.ledger.claim(now_ms=int(time.time() * 1000), window=100, claim_lease_ms=60_000,
                                        max_claim=100):
            process_batch(runtime, ref)
    st = runtime.campaigns.status("budget")
    assert st["state"] == "paused" and st["reason"].startswith("budget")
    assert (st["sent"], st["pending"], st["spent"], st["max_cost"]) == (4, 4, "6", "7.5")
    assert len(sim.phones()) == 4  # the provider got exactly what the budget paid for
    assert runtime.budget.reserved("budget") == {}  # nothing held by batches that did not leave
    runtime.budget.set_max("budget", 20_000)
    runtime.campaigns.resume("budget")
    st = run_until_done(runtime, "budget")
    assert (st["state"], st["sent"], st["spent"]) == ("completed", 8, "12")


def test_the_campaigns_translit_reaches_the_provider_and_bills_the_parts_it_counts(
        runtime: Runtime, sim: Simulator) -> None:
    text = "Здравствуйте! Ваш заказ номер 4711 передан в службу доставки и прибудет завтра до обеда."
    assert count_segments(text).parts == 2  # UCS-2: 90 characters in 67-character parts
    people = [Person(1, "+79070000001", text)]
    spec = CampaignSpec(message="", parts=0, account=runtime.settings.account, batch_size=10, campaign_id="tr",
                        personal=True, parts_of=lambda t: 1, extra={"options": '{"translit": 1}'})
    runtime.campaigns.create(spec, iter(people))
    st = run_until_done(runtime, "tr")
    [m] = sim.record(0, 10)
    assert m["options"]["translit"] == 1 and m["text"] == text and m["parts"] == 1
    assert st["sms"] == 1
    assert [row[3] for row in runtime.campaigns.report_rows("tr")] == ["1"]


def test_a_batchs_texts_senders_and_zones_are_stored_as_the_standard_librarys_json(runtime: Runtime) -> None:
    # The intake writes them with orjson, every reader parses them with json: the same bytes either way.
    texts = ['"quoted" \\ back', "tab\tnew\nline\r\x01\x1f\x7f", "line\u2028sep\u2029 € 😀 ё", "{\"a\": [1]}", "x"]
    people = [Person(i + 1, f"+7907000000{i}", t, sender=f"Shop{i}" if i % 2 else None, tz_h=[3, 5.5, -2.75][i % 3])
              for i, t in enumerate(texts)]
    spec = CampaignSpec(message="{{ template }}", parts=0, account=runtime.settings.account, batch_size=500,
                        campaign_id="json1", personal=True, parts_of=parts_of)
    runtime.campaigns.create(spec, iter(people), now_ms=int(time.time() * 1000))
    want = ({p.phone: p.text for p in people}, {p.phone: p.sender for p in people if p.sender},
            {p.phone: round(p.tz_h * 60) for p in people if p.tz_h is not None})
    got: tuple[dict[str, Any], ...] = ({}, {}, {})
    batches = int(runtime.redis.hget(runtime.keys.campaign("json1"), "batches"))
    assert batches == 3  # a text with a backslash or a carriage return goes in a batch of its own
    for n in range(batches):
        for raw, into in zip(runtime.redis.hmget(runtime.keys.batch(f"json1:{n}"), ["texts", "senders", "zones"]),
                             got, strict=True):
            if raw:
                assert raw == json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":")).encode()
                into.update(json.loads(raw))
    assert got == want


def _producer_settings(redis_server: Any) -> Settings:
    """A producer without credentials: nobody to ask about the balance (the workers have them)."""
    return Settings(redis_url=redis_server.url, smsc_namespace="personal")


def test_rows_and_a_template_through_the_python_api_render_each_text_and_refuse_an_unknown_placeholder(
        runtime: Runtime, sim: Simulator, redis_server: Any) -> None:
    from worker.api import enqueue_campaign

    s = _producer_settings(redis_server)
    rows = [{"phone": "+79080000001", "name": "Анна", "order": 4711},
            {"phone": "+79080000002", "name": "Борис", "order": ""},
            {"phone": "+79080000001", "name": "Анна again", "order": 1}]
    rejected: list[Any] = []
    duplicates: list[int] = []
    receipt = enqueue_campaign(rows, template="{{ name }}, заказ {{ order }} отправлен", campaign_id="api1",
                               settings=s, on_rejected=rejected.append,
                               on_duplicate=lambda line, phone: duplicates.append(line))
    assert (receipt.total, receipt.invalid, receipt.duplicates) == (1, 1, 1)
    assert rejected[0].line_no == 2 and "order" in rejected[0].reason and duplicates == [3]
    run_until_done(runtime, "api1")
    assert [m["text"] for m in sim.record(0, 10)] == ["Анна, заказ 4711 отправлен"]
    with pytest.raises(ValueError, match="nmae"):
        enqueue_campaign(rows, template="{{ nmae }}", campaign_id="api2", settings=s)
    assert not runtime.campaigns.exists("api2")


def test_phone_and_text_pairs_through_the_python_api(runtime: Runtime, sim: Simulator, redis_server: Any) -> None:
    from worker.api import enqueue_campaign

    receipt = enqueue_campaign([("+79090000001", "one: a"), ("+79090000002", "two; b"), ("bad", "x")],
                               campaign_id="pairs", settings=_producer_settings(redis_server))
    assert (receipt.total, receipt.invalid) == (2, 1)
    run_until_done(runtime, "pairs")
    assert sorted(m["text"] for m in sim.record(0, 10)) == ["one: a", "two; b"]


def test_a_text_with_a_lone_surrogate_is_refused_by_its_line_and_the_others_are_sent(
        runtime: Runtime, sim: Simulator, redis_server: Any) -> None:
    from worker.api import enqueue_campaign

    # "\ud83d" alone: what json.loads makes of half an escaped emoji (an app's JSON, the HTTP API's body).
    rejected: list[Any] = []
    receipt = enqueue_campaign([("+79090000011", "half \ud83d an emoji"), ("+79090000012", "a whole 😀")],
                               campaign_id="halves", settings=_producer_settings(redis_server),
                               on_rejected=rejected.append)
    assert (receipt.total, receipt.invalid) == (1, 1)
    assert rejected[0].line_no == 1 and "lone surrogate (U+D83D at character 6)" in rejected[0].reason
    run_until_done(runtime, "halves")
    assert [m["text"] for m in sim.record(0, 10)] == ["a whole 😀"]


def test_a_rows_own_time_zone_decides_when_its_window_opens(runtime: Runtime, redis_server: Any) -> None:
    from worker.api import enqueue_campaign

    now_h = time.gmtime(runtime.redis.time()[0]).tm_hour
    # A one-hour window open now for a recipient at UTC+3, closed for one at UTC+10 (and for Moscow's +3
    # the number's own zone would say the same as its column: the column must win for the second).
    start = (now_h + 3) % 24
    window = f"{start}-{(start + 1) % 24}"
    rows = [{"phone": "+79100000001", "tz": "3"}, {"phone": "+79100000002", "tz": "+10"}]
    receipt = enqueue_campaign(rows, template="hi", tz_column="tz", window=window, recipient_time=True,
                               campaign_id="zones", settings=_producer_settings(redis_server))
    assert receipt.batches == 2
    dues = sorted(int(runtime.redis.hget(runtime.keys.batch(f"zones:{n}"), "due")) for n in range(2))
    assert dues[1] - dues[0] >= 6 * 3_600_000  # the UTC+10 one waits for its own local hour
