"""The provider simulator: answers, rules, faults and the record — in-process and over a real socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

import worker.sim as sim_package
import worker.sim.core as sim_core
import worker.sim.server as sim_server
from worker.sim import BREACHES, SimConfig, SimTransport, Simulator
from worker.sim.server import serve

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"login": "demo", "psw": "demo-password"}
PHONE = "79991234567"


class Clock:
    """A clock the test steps by hand; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Simulator:
    return Simulator(SimConfig(seed=1), clock=clock, sleep=clock.sleep)


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(transport=SimTransport(sim), base_url="http://smsc.test", timeout=5.0) as c:
        yield c


def send(client: httpx.Client, path: str = "/sys/send.php", **params: Any) -> str:
    response = client.post(path, data={**AUTH, **{k: str(v) for k, v in params.items()}})
    assert response.status_code == 200
    return response.text


# -- answers ------------------------------------------------------------------------------------------

SHAPES = {
    (0, 0): "OK - 2 SMS, ID - 42",
    (0, 1): "3.00 (2 SMS)",
    (0, 2): "OK - 2 SMS, ID - 42, COST - 3.00",
    (0, 3): "OK - 2 SMS, ID - 42, COST - 3.00, BALANCE - 997.00",
    (1, 0): "42,2",
    (1, 1): "3.00,2",
    (1, 2): "42,2,3.00",
    (1, 3): "42,2,3.00,997.00",
    (2, 0): "<result><id>42</id><cnt>2</cnt></result>",
    (2, 1): "<result><cost>3.00</cost><cnt>2</cnt></result>",
    (2, 2): "<result><id>42</id><cnt>2</cnt><cost>3.00</cost></result>",
    (2, 3): "<result><id>42</id><cnt>2</cnt><cost>3.00</cost><balance>997.00</balance></result>",
}
JSON_SHAPES: dict[int, dict[str, Any]] = {
    0: {"id": 42, "cnt": 2},
    1: {"cost": "3.00", "cnt": 2},
    2: {"id": 42, "cnt": 2, "cost": "3.00"},
    3: {"id": 42, "cnt": 2, "cost": "3.00", "balance": "997.00"},
}


@pytest.mark.parametrize("fmt", [0, 1, 2, 3])
@pytest.mark.parametrize("cost", [0, 1, 2, 3])
def test_send_answers_every_fmt_and_cost_as_documented(sim: Simulator, client: httpx.Client,
                                                        fmt: int, cost: int) -> None:
    sim.configure(balance="1000")
    body = send(client, phones=f"{PHONE},79991234568", mes="hello", id=42, fmt=fmt, cost=cost)
    if fmt == 3:
        assert json.loads(body) == JSON_SHAPES[cost]
        assert list(json.loads(body)) == list(JSON_SHAPES[cost])  # the documented order
    else:
        assert body == SHAPES[(fmt, cost)]
    # cost=1 only asks: nothing is recorded and nothing is charged
    assert sim.summary()["messages"] == (0 if cost == 1 else 2)
    assert sim.balance == Decimal("1000" if cost == 1 else "997.00")


def test_op1_adds_one_detail_per_number_including_the_invalid_ones(client: httpx.Client) -> None:
    body = send(client, phones=f"+{PHONE},12-34", mes="hi", id=7, fmt=1, op=1)
    assert body.splitlines() == ["7,1", f"{PHONE},25001,1.50,0,0", "12-34,,0.00,22,7"]
    obj = json.loads(send(client, phones=f"{PHONE},bad", mes="hi2", id=8, fmt=3, op=1))
    assert obj["phones"] == [
        {"phone": PHONE, "mccmnc": "25001", "cost": "1.50", "status": "0", "error": "0"},
        {"phone": "bad", "mccmnc": "", "cost": "0.00", "status": "22", "error": "7"},
    ]
    xml = send(client, phones=PHONE, mes="hi3", id=9, fmt=2, op=1)
    assert xml == ('<result><id>9</id><cnt>1</cnt><phones><phone mccmnc="25001" cost="1.50" status="0" '
                   f'error="0">{PHONE}</phone></phones></result>')


def test_cnt_counts_parts_times_recipients(client: httpx.Client) -> None:
    long_latin = "x" * 161  # 2 parts of 153
    cyrillic = "Привет"  # UCS-2, 1 part
    body = send(client, list=f"{PHONE},79991234568:{long_latin}\n79991234569:{cyrillic}", id=1, fmt=1,
                charset="utf-8")
    assert body == "1,5"


# -- errors -------------------------------------------------------------------------------------------

ERROR_SHAPES = {
    0: ("ERROR = 1 (parameters error)", "ERROR = 7 (invalid number), ID - 5"),
    1: ("0,-1", "5,-7"),
    2: ("<result><error>parameters error</error><error_code>1</error_code></result>",
        "<result><error>invalid number</error><error_code>7</error_code><id>5</id></result>"),
    3: ('{"error": "parameters error", "error_code": 1}',
        '{"error": "invalid number", "error_code": 7, "id": 5}'),
}


@pytest.mark.parametrize("fmt", [0, 1, 2, 3])
def test_errors_carry_the_id_only_for_codes_3_6_7_8(client: httpx.Client, fmt: int) -> None:
    without_id, with_id = ERROR_SHAPES[fmt]
    assert send(client, mes="no phones", id=5, fmt=fmt) == without_id
    assert send(client, phones="12345", mes="too short a number", id=5, fmt=fmt) == with_id


@pytest.mark.parametrize("params", [
    {"mes": "no phones"},
    {"phones": PHONE},
    {"phones": PHONE, "mes": "x" * 1001},
    {"phones": PHONE, "mes": "   "},
    {"phones": PHONE, "mes": "bad id", "id": "0"},
    {"phones": PHONE, "mes": "bad id", "id": "2147483648"},
    {"phones": PHONE, "mes": "bad id", "id": "a" * 41},
    {"phones": PHONE, "mes": "bad id", "id": "semi;colon"},
    {"phones": PHONE, "mes": "bad fmt", "fmt": "7"},
    {"list": "no colon here"},
])
def test_bad_parameters_answer_error_1(client: httpx.Client, params: dict[str, str]) -> None:
    body = client.post("/sys/send.php", data={**AUTH, **params}).text
    assert body.startswith("ERROR = 1 ") or body == "0,-1"


def test_ids_of_the_documented_forms_are_accepted(client: httpx.Client) -> None:
    for mid in ("1", "2147483647", "a" * 40, "batch-1.2_x"):
        assert send(client, phones=PHONE, mes=f"id {mid}", id=mid, fmt=1) == f"{mid},1"


def test_wrong_credentials_answer_error_2(sim: Simulator, client: httpx.Client) -> None:
    bad = client.post("/sys/send.php", data={"login": "demo", "psw": "nope", "phones": PHONE, "mes": "x"})
    assert bad.text == "ERROR = 2 (authorise error)"
    assert client.post("/sys/balance.php", data={"apikey": "k", "fmt": "1"}).text == "0,-2"
    sim.configure(apikey="secret-key")
    assert client.post("/sys/balance.php", data={"apikey": "secret-key", "fmt": "3"}).json() == {
        "balance": "1000000.00"}
    assert sim.summary()["errors_answered"] == {2: 2}


def test_insufficient_funds_answers_error_3_with_the_id_and_records_nothing(
        sim: Simulator, client: httpx.Client) -> None:
    sim.configure(balance="2.99")
    assert send(client, phones=f"{PHONE},79991234568", mes="x", id="b-1", fmt=3) == (
        '{"error": "no money", "error_code": 3, "id": "b-1"}')
    assert send(client, phones=PHONE, mes="x", id="b-2", fmt=1, cost=3) == "b-2,1,1.50,1.49"
    assert sim.summary()["messages"] == 1


def test_bad_or_unregistered_sender_or_forbidden_text_answers_error_6(sim: Simulator,
                                                                      client: httpx.Client) -> None:
    assert send(client, phones=PHONE, mes="x", id=3, fmt=1, sender="Way too long name") == "3,-6"
    assert send(client, phones=PHONE, mes="x", id=3, fmt=1, sender="1234567890123456") == "3,-6"
    assert send(client, phones=PHONE, mes="x", id=3, fmt=1, sender="Shop") == "3,1"
    sim.configure(allowed_senders=["Shop"], forbidden_words=["casino"])
    assert send(client, phones=PHONE, mes="y", id=4, fmt=1, sender="Other") == "4,-6"
    assert send(client, list=f"Other,3|{PHONE}:y", id=4, fmt=1, sender="Shop") == "4,-6"
    assert send(client, phones=PHONE, mes="Win at the CASINO", id=5, fmt=1) == "5,-6"
    assert sim.summary()["messages"] == 1


def test_invalid_numbers_fail_alone_and_a_request_of_only_invalid_numbers_answers_error_7(
        sim: Simulator, client: httpx.Client) -> None:
    assert send(client, phones=f"{PHONE};+1 (234) 567-8901;123;abc", mes="x", id=11, fmt=1) == "11,2"
    assert sim.phones() == {PHONE: 1, "12345678901": 1}
    assert send(client, phones="123,+1234567890123456", mes="x", id=12, fmt=1) == "12,-7"
    sim.configure(undeliverable_prefixes=["7000"])
    assert send(client, phones="70001234567", mes="x", id=13, fmt=1) == "13,-8"


def test_invalid_time_answers_error_5(client: httpx.Client) -> None:
    assert send(client, phones=PHONE, mes="x", id=1, fmt=1, time="tomorrow") == "0,-5"
    assert send(client, phones=PHONE, mes="x", id=2, fmt=1, time="0101301200") == "2,1"


# -- the anti-abuse rules -----------------------------------------------------------------------------


def test_identical_send_within_a_minute_is_error_9_and_a_breach_then_allowed(
        sim: Simulator, clock: Clock, client: httpx.Client) -> None:
    params: dict[str, Any] = {"phones": PHONE, "mes": "same", "id": 1, "fmt": 1}
    assert send(client, **params) == "1,1"
    clock.advance(59.9)
    assert send(client, **params) == "0,-9"
    assert send(client, **{**params, "id": 2}) == "2,1"  # a different request is fine
    clock.advance(0.1)
    assert send(client, **params) == "1,1"
    summary = sim.summary()
    assert summary["breaches"]["identical_send"] == 1
    assert summary["messages"] == 3 and summary["duplicates"] == 2


def test_more_than_five_identical_cost_requests_a_minute_is_error_9(
        sim: Simulator, clock: Clock, client: httpx.Client) -> None:
    for _ in range(5):
        assert send(client, phones=PHONE, mes="price?", cost=1, fmt=1) == "1.50,1"
    assert send(client, phones=PHONE, mes="price?", cost=1, fmt=1) == "0,-9"
    clock.advance(60)
    assert send(client, phones=PHONE, mes="price?", cost=1, fmt=1) == "1.50,1"
    assert sim.summary()["breaches"]["identical_cost"] == 1


def test_fifteen_concurrent_requests_of_one_login_get_error_9() -> None:
    sim = Simulator(SimConfig(latency_ms=600))
    transport = SimTransport(sim)
    start = threading.Barrier(15)
    bodies: list[str] = []

    def one(n: int) -> None:
        with httpx.Client(transport=transport, base_url="http://smsc.test") as c:
            start.wait()
            if n == 14:
                time.sleep(0.2)  # the 15th arrives while the 14 others are being processed
            bodies.append(c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": f"m{n}",
                                                        "id": n + 1, "fmt": 1}).text)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(bodies).count("0,-9") == 1
    summary = sim.summary()
    assert summary["breaches"]["concurrency"] == 1
    assert summary["peak_inflight"] == 15 and summary["inflight"] == 0
    assert summary["messages"] == 14


def test_a_request_stops_counting_as_in_flight_once_its_answer_is_ready(clock: Clock) -> None:
    sim = Simulator(SimConfig(delayed_answer_rate=1.0, delayed_answer_s=100), clock=clock, sleep=clock.sleep)
    for n in range(20):
        assert sim.handle("POST", "/sys/send.php", {**AUTH, "phones": PHONE, "mes": f"{n}"}).delay_s == 100
    assert sim.summary()["peak_inflight"] == 1


def test_flood_chain_of_51_is_counted_and_a_60_s_gap_starts_a_new_chain(
        sim: Simulator, clock: Clock, client: httpx.Client) -> None:
    for n in range(51):
        assert send(client, phones=PHONE, mes=f"n{n}", id=n + 1, fmt=1) == f"{n + 1},1"
        clock.advance(59)
    summary = sim.summary()
    assert summary["breaches"]["flood"] == 1 and summary["messages"] == 51  # recorded, flagged
    assert [m["flood"] for m in sim.record(49, 5)] == [False, True]
    clock.advance(1)  # 60 s after the last message: the chain is broken
    for n in range(50):
        send(client, phones=PHONE, mes=f"again {n}", fmt=1)
    assert sim.summary()["breaches"]["flood"] == 1
    status = client.post("/sys/status.php", data={**AUTH, "phone": PHONE, "id": "51", "fmt": "3"}).json()
    assert status["status"] == 20  # what the flood rule held back is never delivered


def test_a_list_with_fifty_one_messages_to_one_phone_floods_at_once(sim: Simulator,
                                                                    client: httpx.Client) -> None:
    send(client, list="\n".join(f"{PHONE}:text {n}" for n in range(51)), id=1, fmt=1)
    assert sim.summary()["breaches"]["flood"] == 1


def test_status_of_accepted_is_1_and_of_unknown_is_minus_3(clock: Clock, client: httpx.Client) -> None:
    send(client, list=f"{PHONE},79991234568:a\n79991234569:b", id="batch-7", fmt=1)
    one = client.post("/sys/status.php", data={**AUTH, "phone": PHONE, "id": "batch-7", "fmt": "3"}).json()
    assert one == {"status": 1, "last_date": "15.11.2023 01:13:20", "last_timestamp": int(clock.now),
                   "flag": 0, "err": 0}
    many = client.post("/sys/status.php", data={
        **AUTH, "phone": f"79991234569,{PHONE},79990000000,{PHONE}", "id": "batch-7,batch-7,batch-7,other",
        "fmt": "3"}).json()
    assert [(m["phone"], m["id"], m["status"]) for m in many] == [
        ("79991234569", "batch-7", 1), (PHONE, "batch-7", 1), ("79990000000", "batch-7", -3),
        (PHONE, "other", -3)]
    assert set(many[0]) == {"phone", "id", "status", "last_timestamp", "last_date", "flag", "err"}
    lines = client.post("/sys/status.php", data={**AUTH, "phone": f"{PHONE},+79991234568",
                                                 "id": "batch-7,batch-7", "fmt": "1"}).text
    assert lines.splitlines() == [f"1,{int(clock.now)},0"] * 2
    assert client.post("/sys/status.php", data={**AUTH, "phone": PHONE, "id": "a,b"}).text.startswith(
        "ERROR = 1")


def test_status_requests_are_rate_limited_like_the_provider(sim: Simulator, clock: Clock,
                                                            client: httpx.Client) -> None:
    single = {**AUTH, "phone": PHONE, "id": "1", "fmt": "1"}
    for _ in range(5):
        assert client.post("/sys/status.php", data=single).text == "-3,0,0"
    assert client.post("/sys/status.php", data=single).text == "0,-9"
    mass = {**AUTH, "phone": f"{PHONE},79991234568", "id": "1,1", "fmt": "1"}
    assert client.post("/sys/status.php", data=mass).text == "-3,0,0\n-3,0,0"
    assert client.post("/sys/status.php", data=mass).text == "0,-9"
    clock.advance(60)
    assert client.post("/sys/status.php", data=mass).text == "-3,0,0\n-3,0,0"
    assert sim.summary()["breaches"]["status_rate"] == 2


def test_a_hundred_erroneous_sends_in_a_row_block_the_ip_for_ten_minutes(
        sim: Simulator, clock: Clock, client: httpx.Client) -> None:
    for n in range(99):
        send(client, phones="1", mes=f"bad {n}", id=1)
    assert sim.summary()["errors_in_a_row"] == {"demo": 99}
    send(client, phones=PHONE, mes="good", id=1)  # a success ends the streak
    for n in range(100):
        assert send(client, phones="1", mes=f"bad {n}", id=1, fmt=1) == "1,-7"
    assert send(client, phones=PHONE, mes="blocked", id=2, fmt=1) == "0,-4"
    clock.advance(600)
    assert send(client, phones=PHONE, mes="free again", id=2, fmt=1) == "2,1"
    assert sim.summary()["breaches"]["ip_blocked"] == 1


def test_five_wrong_passwords_in_30_minutes_block_for_30_minutes(sim: Simulator, clock: Clock,
                                                                  client: httpx.Client) -> None:
    wrong = {"login": "demo", "psw": "guess", "fmt": "1"}
    for _ in range(5):
        assert client.post("/sys/balance.php", data=wrong).text == "0,-2"
        clock.advance(60)
    assert client.post("/sys/balance.php", data={**AUTH, "fmt": "1"}).text == "0,-4"
    clock.advance(30 * 60)
    assert client.post("/sys/balance.php", data={**AUTH, "fmt": "1"}).text == "1000000.00"
    assert sim.summary()["breaches"]["auth_block"] == 1


# -- faults -------------------------------------------------------------------------------------------


def test_delayed_answer_records_the_message_but_answers_after_the_client_timeout(
        sim: Simulator, clock: Clock) -> None:
    sim.configure(delayed_answer_rate=1.0, delayed_answer_s=40)
    with httpx.Client(transport=SimTransport(sim), base_url="http://smsc.test", timeout=30) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "late", "id": "9"})
    assert clock.slept == [30]
    assert sim.summary()["delayed"] == 1 and sim.phones() == {PHONE: 1}


def test_reset_fault_cuts_the_connection_and_records_nothing(sim: Simulator, client: httpx.Client) -> None:
    sim.configure(reset_rate=1.0)
    with pytest.raises(httpx.ReadError):
        client.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "lost"})
    assert sim.summary()["resets"] == 1 and sim.summary()["messages"] == 0


def test_http500_and_injected_error_rates(sim: Simulator, client: httpx.Client) -> None:
    sim.configure({"http500_rate": 1.0})
    assert client.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "x"}).status_code == 500
    sim.configure(http500_rate=0, error_rates={"8": 1.0})
    assert send(client, phones=PHONE, mes="x", id=3, fmt=1) == "3,-8"
    summary = sim.summary()
    assert summary["http500"] == 1 and summary["errors_answered"] == {8: 1} and summary["messages"] == 0


def test_fault_rates_are_reproducible_with_a_seed() -> None:
    def outcomes() -> list[int]:
        s = Simulator(SimConfig(seed=7, http500_rate=0.5))
        return [s.handle("POST", "/sys/balance.php", AUTH).status for _ in range(20)]

    assert outcomes() == outcomes() and set(outcomes()) == {200, 500}


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="probability"):
        SimConfig(reset_rate=2)
    with pytest.raises(ValueError, match=r"1\.\.9"):
        SimConfig(error_rates={10: 0.1})
    with pytest.raises(ValueError, match="unknown"):
        Simulator().configure(nonsense=1)


# -- request forms and the record --------------------------------------------------------------------


def test_list_lines_unescape_newlines_and_share_one_id(sim: Simulator, client: httpx.Client) -> None:
    send(client, list=f"{PHONE}:Hello\\nworld!\nShop,3|79991234568,79991234569:Hi", id=5)
    assert [(m["phone"], m["text"], m["id"]) for m in sim.record()] == [
        (PHONE, "Hello\nworld!", "5"), ("79991234568", "Hi", "5"), ("79991234569", "Hi", "5")]


def test_rest_json_get_query_and_charsets(sim: Simulator, client: httpx.Client) -> None:
    r = client.post("/rest/send/", json={**AUTH, "phones": [PHONE], "mes": "Привет", "id": 1, "fmt": 3})
    assert r.json() == {"id": 1, "cnt": 1}
    r = client.get("/sys/send.php", params={**AUTH, "phones": PHONE, "mes": "via get", "id": 2, "fmt": 1})
    assert r.text == "2,1"
    # no charset parameter: the provider reads windows-1251
    cp1251 = urlencode({**AUTH, "phones": "79991234568", "id": 3, "mes": "Привет"}, encoding="cp1251")
    client.post("/sys/send.php", content=cp1251.encode(),
                headers={"content-type": "application/x-www-form-urlencoded"})
    send(client, phones="79991234569", mes="Привет", id=4, charset="utf-8")
    assert [m["text"] for m in sim.record()] == ["Привет", "via get", "Привет", "Привет"]


def test_summary_counts_messages_duplicates_requests_and_errors(sim: Simulator, clock: Clock,
                                                                client: httpx.Client) -> None:
    send(client, phones=f"{PHONE},79991234568", mes="a", id=1)
    send(client, phones=PHONE, mes="a", id=2)  # a duplicate (same phone, same text)
    send(client, phones=PHONE, mes="b", id=3)
    send(client, phones="1", mes="b", id=4)  # error 7
    summary = sim.summary()
    assert {k: summary[k] for k in ("messages", "unique_messages", "duplicates", "requests")} == {
        "messages": 4, "unique_messages": 3, "duplicates": 1, "requests": 4}
    assert summary["breaches"] == dict.fromkeys(BREACHES, 0)
    assert summary["errors_answered"] == {7: 1}
    assert summary["balance"] == "999994.00"
    assert sim.phones() == {PHONE: 3, "79991234568": 1}
    assert sim.record(1, 1) == [{"ts_ms": int(clock.now * 1000), "login": "demo", "id": "1",
                                 "phone": "79991234568", "text": "a", "parts": 1, "flood": False}]
    sim.reset()
    assert sim.summary()["messages"] == 0 and sim.summary()["requests"] == 0 and sim.record() == []


# -- over a real socket -------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[sim_server.SimServer]:
    with serve(Simulator(SimConfig(seed=3))) as srv:
        yield srv


def test_served_over_a_socket_with_keep_alive_and_control_endpoints(server: sim_server.SimServer) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as c:
        started = time.perf_counter()
        for n in range(40):  # without TCP_NODELAY each keep-alive exchange would stall ~40 ms
            r = c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": f"m{n}", "id": n + 1, "fmt": 3})
            assert r.json() == {"id": n + 1, "cnt": 1}
        assert time.perf_counter() - started < 1.0
        assert r.headers["content-type"].startswith("application/json")
        assert c.post("/_sim/config", json={"error_rates": {"9": 1.0}}).json()["error_rates"] == {"9": 1.0}
        assert c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "x", "fmt": "1"}).text == "0,-9"
        masked = c.post("/_sim/config", json={"error_rates": {}, "password": "other"}).json()
        assert "other" not in json.dumps(masked) and masked["error_rates"] == {}
        assert c.post("/_sim/config", json={"password": AUTH["psw"]}).status_code == 200
        assert c.post("/_sim/config", json={"reset_rate": 3}).status_code == 400
        summary = c.get("/_sim/summary").json()
        assert summary["messages"] == 40 and summary["errors_answered"] == {"9": 1}
        assert summary["breaches"]["identical_send"] == 0
        record = c.get("/_sim/record", params={"offset": 39, "limit": 5}).json()
        assert [(m["id"], m["text"]) for m in record] == [("40", "m39")]
        assert c.get("/_sim/phones").json() == {PHONE: 40}
        assert c.post("/_sim/reset").json() == {"ok": True}
        assert c.get("/_sim/summary").json()["messages"] == 0


def test_faults_over_a_socket_reset_and_delayed_answer(server: sim_server.SimServer) -> None:
    server.sim.configure(reset_rate=1.0)
    with httpx.Client(base_url=server.url, timeout=5) as c:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "cut"})
    server.sim.configure(reset_rate=0, delayed_answer_rate=1.0, delayed_answer_s=1.0)
    with httpx.Client(base_url=server.url, timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "late", "id": "1"})
    summary = server.sim.summary()
    assert summary["resets"] == 1 and summary["delayed"] == 1 and summary["messages"] == 1


def test_cli_prints_the_url_serves_and_stops_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.sim.server", "--port", "0", "--latency-ms", "1", "--login", "acme",
         "--password", "pw", "--balance", "10", "--seed", "1", "--error-rate", "9=0"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert not url.endswith(":0")
        r = httpx.post(f"{url}/sys/balance.php", data={"login": "acme", "psw": "pw", "fmt": "3"})
        assert r.json() == {"balance": "10.00"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_public_surface() -> None:
    assert sim_core.__all__ == ["BREACHES", "SimConfig", "SimResponse", "Simulator"]
    assert sim_server.__all__ == ["SimServer", "main", "run", "serve"]
    assert sim_package.__all__ == ["BREACHES", "SimConfig", "SimResponse", "SimServer", "SimTransport", "Simulator",
                                   "serve"]
