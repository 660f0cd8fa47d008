"""A provider slower than the client: processing before acceptance, accepted after the client gave up."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.unit.sim_helpers import AUTH, PHONE, Clock, status, stepped_sim
from worker.sim import SimConfig, SimTransport, Simulator

SEND = {**AUTH, "phones": PHONE, "mes": "slow", "id": "1", "fmt": "1"}


def test_a_slow_request_is_in_flight_while_processed_and_accepted_at_its_end() -> None:
    clock = Clock()
    sim = stepped_sim(clock, slow_accept_rate=1.0, slow_accept_s=40)
    arrived_at = clock.now
    request = sim.arrive("POST", "/sys/send.php", SEND)
    assert request.processing_s == 40
    assert sim.summary()["inflight"] == 1 and sim.phones() == {}
    # status.php meanwhile: the provider has not taken the message yet
    assert sim.handle("POST", "/sys/status.php", {**AUTH, "phone": PHONE, "id": "1", "fmt": "1"}).body == "-3,0,0"
    assert request.finish().body == "1,1"
    assert sim.record()[0]["ts_ms"] == int((arrived_at + 40) * 1000)  # stamped at acceptance
    summary = sim.summary()
    assert summary["inflight"] == 0 and summary["slow_requests"] == 1
    assert summary["accepted_after_client_gone"] == 0  # nobody said the client had left
    assert request.finish().body == "1,1"  # a second finish repeats the answer, accepts nothing more
    assert sim.phones() == {PHONE: 1}


def test_the_slow_part_comes_on_top_of_the_latency() -> None:
    sim = Simulator(SimConfig(slow_accept_rate=1.0, slow_accept_s=40, latency_ms=500))
    assert sim.arrive("POST", "/sys/send.php", SEND).processing_s == pytest.approx(40.5)


def test_the_identical_request_rule_is_judged_at_acceptance() -> None:
    clock = Clock()
    sim = stepped_sim(clock, slow_accept_rate=1.0, slow_accept_s=40)
    slow = sim.arrive("POST", "/sys/send.php", SEND)
    sim.configure(slow_accept_rate=0.0)
    # The client gave up and sent the same request again; the provider takes the retry first ...
    assert sim.handle("POST", "/sys/send.php", SEND).body == "1,1"
    # ... and refuses the first when its processing ends: one message, not two.
    assert slow.finish().body == "0,-9"
    assert sim.phones() == {PHONE: 1} and sim.summary()["breaches"]["identical_send"] == 1


def test_concurrency_is_judged_at_arrival_while_slow_requests_are_processed() -> None:
    sim = Simulator(SimConfig(slow_accept_rate=1.0, slow_accept_s=40))
    pending = [sim.arrive("POST", "/sys/send.php", {**SEND, "id": str(n + 1)}) for n in range(14)]
    refused = sim.arrive("POST", "/sys/send.php", {**SEND, "id": "15"})
    assert refused.processing_s == 0 and refused.finish().body == "0,-9"
    assert sim.summary()["breaches"]["concurrency"] == 1 and sim.summary()["peak_inflight"] == 15
    assert all(p.processing_s == 40 for p in pending)


def test_the_slow_share_follows_slow_accept_rate_reproducibly() -> None:
    def slow_ids() -> list[int]:
        sim = stepped_sim(Clock(), seed=5, slow_accept_rate=0.5, slow_accept_s=1)
        slow = []
        for n in range(40):
            request = sim.arrive("POST", "/sys/send.php", {**SEND, "id": str(n + 1)})
            if request.processing_s:
                slow.append(n)
            request.finish()
        assert sim.summary()["slow_requests"] == len(slow)
        return slow

    assert slow_ids() == slow_ids() and 5 < len(slow_ids()) < 35
    sim = Simulator(SimConfig(slow_accept_rate=1.0, slow_accept_s=1))
    assert sim.arrive("POST", "/sys/status.php", {**AUTH, "phone": PHONE, "id": "1"}).processing_s == 0
    assert sim.arrive("POST", "/sys/balance.php", AUTH).processing_s == 0  # only send requests are slow


def test_the_transport_times_out_at_the_read_timeout_and_the_provider_accepts_afterwards() -> None:
    sim = Simulator(SimConfig(slow_accept_rate=1.0, slow_accept_s=0.5))
    with httpx.Client(transport=SimTransport(sim), base_url="http://smsc.test", timeout=0.15) as c:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            c.post("/sys/send.php", data=SEND)
        assert 0.15 <= time.monotonic() - started < 0.45
        # The client settles at once: the provider is still processing, status.php does not know it.
        sim.configure(slow_accept_rate=0.0)
        assert status(c, PHONE, "1") == "-3,0,0"
        assert sim.summary()["inflight"] == 1
        assert sim.wait_idle(timeout_s=5)
        assert sim.phones() == {PHONE: 1}
        assert status(c, PHONE, "1").startswith("1,")
    summary = sim.summary()
    assert summary["accepted_after_client_gone"] == 1 and summary["slow_requests"] == 1


def test_the_transport_on_a_stepped_clock_accepts_when_the_processing_time_has_passed() -> None:
    clock = Clock()
    sim = stepped_sim(clock, slow_accept_rate=1.0, slow_accept_s=40)
    arrived_at = clock.now
    with httpx.Client(transport=SimTransport(sim), base_url="http://smsc.test", timeout=30) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/sys/send.php", data=SEND)
    assert clock.slept[0] == 30  # the client waited its timeout ...
    assert sim.wait_idle(timeout_s=5)
    assert sim.record()[0]["ts_ms"] == int((arrived_at + 40) * 1000)  # ... the provider accepted at 40 s
    assert sim.summary()["accepted_after_client_gone"] == 1


def test_a_client_that_waits_long_enough_gets_the_answer_and_is_not_counted_as_gone() -> None:
    clock = Clock()
    sim = stepped_sim(clock, slow_accept_rate=1.0, slow_accept_s=20)
    with httpx.Client(transport=SimTransport(sim), base_url="http://smsc.test", timeout=30) as c:
        assert c.post("/sys/send.php", data=SEND).text == "1,1"
    assert clock.slept == [20]
    assert sim.summary()["accepted_after_client_gone"] == 0 and sim.phones() == {PHONE: 1}


def test_a_slow_request_refused_at_acceptance_is_not_counted_as_accepted() -> None:
    sim = Simulator(SimConfig(slow_accept_rate=1.0, slow_accept_s=0.3, balance="0"))
    with httpx.Client(transport=SimTransport(sim), base_url="http://smsc.test", timeout=0.1) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/sys/send.php", data=SEND)
    assert sim.wait_idle(timeout_s=5)
    summary = sim.summary()
    assert summary["errors_answered"] == {3: 1} and summary["accepted_after_client_gone"] == 0


def test_a_reset_while_a_request_is_processed_forgets_it_cleanly() -> None:
    clock = Clock()
    sim = stepped_sim(clock, slow_accept_rate=1.0, slow_accept_s=40)
    request = sim.arrive("POST", "/sys/send.php", SEND)
    sim.reset()
    assert sim.summary()["inflight"] == 0 and sim.wait_idle(timeout_s=0)
    assert request.finish().body == "1,1"  # the provider still answers it ...
    assert sim.summary()["inflight"] == 0  # ... and the counters of the new run stay right
    assert sim.arrive("POST", "/sys/send.php", {**SEND, "id": "2"}).processing_s == 40


def test_wait_idle_says_when_a_request_is_still_in_flight() -> None:
    sim = Simulator(SimConfig(slow_accept_rate=1.0, slow_accept_s=60))
    request = sim.arrive("POST", "/sys/send.php", SEND)
    assert sim.wait_idle(timeout_s=0.05) is False
    request.finish(wait=lambda seconds: None)  # the caller may spend the processing time its own way
    assert sim.wait_idle(timeout_s=0) is True and sim.phones() == {PHONE: 1}
