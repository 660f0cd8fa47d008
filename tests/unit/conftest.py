"""The scheduler's objects on the private real redis-server (``redis_client``, flushed per test), and the
simulator on a stepped clock for the simulator's own tests (``clock``, ``sim``, ``client``; a module that
needs another simulator defines its own ``sim``)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from scheduler.campaigns import Campaigns
from scheduler.guards import Guards
from scheduler.keys import Keys
from scheduler.ledger import Ledger
from tests.unit.sim_helpers import Clock, client_of, stepped_sim
from worker.sim import Simulator


@pytest.fixture
def keys() -> Keys:
    return Keys("t")


@pytest.fixture
def ledger(redis_client: redis.Redis, keys: Keys) -> Ledger:
    return Ledger(redis_client, keys)


@pytest.fixture
def campaigns(redis_client: redis.Redis, keys: Keys) -> Campaigns:
    return Campaigns(redis_client, keys)


@pytest.fixture
def guards(redis_client: redis.Redis, keys: Keys) -> Guards:
    return Guards(redis_client, keys)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Simulator:
    return stepped_sim(clock)


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    yield from client_of(sim)
