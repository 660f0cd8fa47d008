"""status.php as the provider answers it: statuses, the list form, its own limits, the lag."""

from __future__ import annotations

import threading
import time

import httpx

from tests.unit.sim_helpers import AUTH, PHONE, Clock, send, status
from worker.sim import SimConfig, SimTransport, Simulator


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


def test_a_single_message_with_a_trailing_comma_keeps_the_list_form(clock: Clock, client: httpx.Client) -> None:
    send(client, phones=PHONE, mes="a", id="7", fmt=1)
    listed = client.post("/sys/status.php", data={**AUTH, "phone": f"+{PHONE},", "id": "7,", "fmt": "3"}).json()
    assert listed == [{"phone": PHONE, "id": 7, "status": 1, "last_timestamp": int(clock.now),
                       "last_date": "15.11.2023 01:13:20", "flag": 0, "err": 0}]
    xml = status(client, f"{PHONE},", "7,", fmt=2)
    assert xml.startswith("<list><result>") and xml.endswith("</result></list>")
    assert status(client, PHONE, "7", fmt=2).startswith("<result><status>1</status>")


def test_status_not_found_error_answers_error_3_for_a_single_message_only(sim: Simulator,
                                                                           client: httpx.Client) -> None:
    assert status(client, PHONE, "404") == "-3,0,0"  # by default: status -3
    sim.configure(status_not_found_error=True)
    assert status(client, PHONE, "405") == "0,-3"
    assert status(client, PHONE, "405", fmt=3) == '{\n"error": "message not found",\n"error_code": 3\n}'
    assert status(client, f"{PHONE},", "405,") == "-3,0,0"  # the list form answers -3
    assert status(client, f"{PHONE},79991234568", "406,406") == "-3,0,0\n-3,0,0"
    send(client, phones=PHONE, mes="known", id="407")
    assert status(client, PHONE, "407").startswith("1,")
    assert sim.summary()["errors_answered"] == {3: 2}


# -- status.php's own limits ------------------------------------------------------------------------


def test_more_than_five_status_requests_for_one_message_a_minute_is_error_9(sim: Simulator, clock: Clock,
                                                                           client: httpx.Client) -> None:
    for _ in range(5):
        assert status(client, PHONE, "1") == "-3,0,0"
        clock.advance(10)
    assert status(client, PHONE, "1") == "0,-9"
    assert status(client, PHONE, "2") == "-3,0,0"  # another message is fine
    clock.advance(10.001)  # the first request is a minute old: one place again
    assert status(client, PHONE, "1") == "-3,0,0"
    assert status(client, PHONE, "1") == "0,-9"
    assert sim.summary()["breaches"]["status_rate"] == 2


def test_a_mass_request_counts_toward_the_limit_of_each_message_it_asks_for(sim: Simulator,
                                                                             client: httpx.Client) -> None:
    for n in range(5):
        assert status(client, f"{PHONE},7999000000{n}", f"1,{n}") == "-3,0,0\n-3,0,0"
    assert status(client, PHONE, "1") == "0,-9"  # the sixth request naming (PHONE, 1) within the minute
    breaches = sim.summary()["breaches"]
    assert breaches["status_rate"] == 1 and breaches["status_mass"] == 0


def test_the_same_mass_request_twice_a_minute_is_error_9_and_any_two_with_strict_mass_status(
        sim: Simulator, clock: Clock, client: httpx.Client) -> None:
    mass = (f"{PHONE},79991234568", "1,1")
    other = (f"{PHONE},79991234569", "2,2")
    assert status(client, *mass) == "-3,0,0\n-3,0,0"
    assert status(client, *mass) == "0,-9"
    assert status(client, *other) == "-3,0,0\n-3,0,0"  # another list: allowed by default
    clock.advance(60)
    assert status(client, *mass) == "-3,0,0\n-3,0,0"
    assert sim.summary()["breaches"]["status_mass"] == 1
    sim.configure(strict_mass_status=True)
    clock.advance(60)
    assert status(client, *other) == "-3,0,0\n-3,0,0"
    assert status(client, f"{PHONE},79991234560", "3,3") == "0,-9"  # any second mass request within a minute
    assert status(client, PHONE, "3") == "-3,0,0"  # a single request is not a mass request
    clock.advance(60)
    assert status(client, f"{PHONE},79991234560", "3,3") == "-3,0,0\n-3,0,0"
    assert sim.summary()["breaches"]["status_mass"] == 2 and sim.summary()["breaches"]["status_rate"] == 0


def test_five_status_requests_at_once_of_one_login_get_error_9_too_many_concurrent() -> None:
    sim = Simulator(SimConfig(latency_ms=500))
    start = threading.Barrier(6)
    bodies: dict[str, str] = {}

    def ask(name: str, path: str, data: dict[str, str]) -> None:
        with httpx.Client(transport=SimTransport(sim), base_url="http://smsc.test", timeout=5) as c:
            start.wait()
            if name == "status-4":
                time.sleep(0.2)  # arrives while the four others are being processed
            bodies[name] = c.post(path, data={**AUTH, "fmt": "1", **data}).text

    jobs = [(f"status-{n}", "/sys/status.php", {"phone": PHONE, "id": str(n + 1)}) for n in range(5)]
    jobs.append(("send", "/sys/send.php", {"phones": PHONE, "mes": "a send is not a status request", "id": "9"}))
    threads = [threading.Thread(target=ask, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bodies.pop("status-4") == "0,-9" and bodies.pop("send") == "9,1"
    assert set(bodies.values()) == {"-3,0,0"}
    summary = sim.summary()
    assert summary["breaches"]["status_concurrency"] == 1 and summary["breaches"]["concurrency"] == 0
    assert summary["peak_status_inflight"] == 5 and summary["inflight"] == 0


# -- status.php behind acceptance -------------------------------------------------------------------


def test_status_lags_behind_acceptance_by_status_lag_s(sim: Simulator, clock: Clock, client: httpx.Client) -> None:
    sim.configure(status_lag_s=3)
    accepted_at = int(clock.now)
    send(client, phones=f"{PHONE},79991234568", mes="lag", id="1")
    clock.advance(2.9)
    assert status(client, PHONE, "1") == "-3,0,0"  # accepted, but status.php does not know it yet
    assert status(client, f"{PHONE},79991234568", "1,1") == "-3,0,0\n-3,0,0"
    clock.advance(0.1)
    assert status(client, PHONE, "1") == f"1,{accepted_at},0"
    assert sim.phones() == {PHONE: 1, "79991234568": 1}
