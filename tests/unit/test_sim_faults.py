"""Injected faults: reset, HTTP 500, provider errors, delayed answers; reproducible with a seed."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.sim_helpers import AUTH, PHONE, Clock, send
from worker.sim import SimConfig, SimTransport, Simulator

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


