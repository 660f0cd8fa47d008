"""The provider's anti-abuse rules, enforced and counted as breaches by the simulator."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests.unit.sim_helpers import AUTH, PHONE, Clock, send, status
from worker.sim import SimConfig, SimTransport, Simulator


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




def test_error_answers_of_every_endpoint_count_toward_the_hundred_in_a_row(
        sim: Simulator, clock: Clock, client: httpx.Client) -> None:
    bad_status = {**AUTH, "phone": PHONE, "id": "a,b"}  # error 1: two ids for one phone
    bad_balance = {**AUTH, "fmt": "9"}  # error 1: no such fmt
    for n in range(33):
        assert client.post("/sys/status.php", data=bad_status).text == "ERROR = 1 (parameters error)"
        assert client.post("/sys/balance.php", data=bad_balance).text == "ERROR = 1 (parameters error)"
        assert send(client, phones="1", mes=f"cost of nothing {n}", cost=1, fmt=1) == "0,-7"
    assert sim.summary()["errors_in_a_row"] == {"demo": 99}
    assert status(client, PHONE, "1") == "-3,0,0"  # a status answer ends the streak, as a send would
    assert sim.summary()["errors_in_a_row"] == {"demo": 0}
    for _ in range(99):
        client.post("/sys/balance.php", data=bad_balance)
    assert sim.summary()["breaches"]["ip_blocked"] == 0
    assert client.post("/sys/status.php", data=bad_status).text == "ERROR = 1 (parameters error)"  # the 100th
    assert sim.summary()["breaches"]["ip_blocked"] == 1
    assert client.post("/sys/balance.php", data={**AUTH, "fmt": "1"}).text == "0,-4"
    assert send(client, phones=PHONE, mes="blocked", id=1, fmt=1) == "0,-4"
    clock.advance(600)
    assert send(client, phones=PHONE, mes="free again", id=1, fmt=1) == "1,1"


def test_wrong_passwords_on_any_endpoint_count_toward_the_auth_block(sim: Simulator, clock: Clock,
                                                                     client: httpx.Client) -> None:
    wrong = {"login": "demo", "psw": "guess", "fmt": "1"}
    assert client.post("/sys/send.php", data={**wrong, "phones": PHONE, "mes": "x"}).text == "0,-2"
    assert client.post("/sys/send.php", data={**wrong, "phones": PHONE, "mes": "x", "cost": "1"}).text == "0,-2"
    assert client.post("/sys/status.php", data={**wrong, "phone": PHONE, "id": "1"}).text == "0,-2"
    assert client.post("/sys/balance.php", data=wrong).text == "0,-2"
    assert client.post("/rest/send/", json={**wrong, "phones": PHONE, "mes": "x"}).text == "0,-2"
    assert sim.summary()["breaches"]["auth_block"] == 1
    assert status(client, PHONE, "1") == "0,-4"


def test_more_than_ten_balance_requests_a_minute_is_error_9(sim: Simulator, clock: Clock,
                                                            client: httpx.Client) -> None:
    for _ in range(10):
        assert client.post("/sys/balance.php", data={**AUTH, "fmt": "1"}).text == "1000000.00"
        clock.advance(5)
    assert client.post("/sys/balance.php", data={**AUTH, "fmt": "3"}).json() == {
        "error": "duplicate request, wait a minute", "error_code": 9}
    clock.advance(10)  # the first request is a minute old
    assert client.post("/sys/balance.php", data={**AUTH, "fmt": "1"}).text == "1000000.00"
    assert sim.summary()["breaches"]["balance_rate"] == 1
