"""What the simulator's tests share: a clock stepped by hand, the demo account, a send helper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from worker.sim import SimConfig, SimTransport, Simulator

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


def stepped_sim(clock: Clock, **config: Any) -> Simulator:
    """A seeded simulator on ``clock`` (its sleeps step the clock)."""
    return Simulator(SimConfig(**{"seed": 1, **config}), clock=clock, sleep=clock.sleep)


def client_of(sim: Simulator, *, timeout: float = 5.0) -> Iterator[httpx.Client]:
    """An ``httpx.Client`` served in-process by ``sim`` (for a fixture: ``yield from client_of(sim)``)."""
    with httpx.Client(transport=SimTransport(sim), base_url="http://smsc.test", timeout=timeout) as c:
        yield c


def send(client: httpx.Client, path: str = "/sys/send.php", **params: Any) -> str:
    """POST a send request of the demo account; the body of its (HTTP 200) answer."""
    response = client.post(path, data={**AUTH, **{k: str(v) for k, v in params.items()}})
    assert response.status_code == 200
    return response.text


def status(client: httpx.Client, phone: str, mid: str, fmt: int = 1, **params: Any) -> str:
    """POST a status request of the demo account; the body of its answer."""
    data = {**AUTH, "phone": phone, "id": mid, "fmt": str(fmt), **{k: str(v) for k, v in params.items()}}
    response = client.post("/sys/status.php", data=data)
    assert response.status_code == 200
    return response.text
