"""The scheduler's objects on the private real redis-server (``redis_client``, flushed per test)."""

from __future__ import annotations

import pytest
import redis

from scheduler.campaigns import Campaigns
from scheduler.guards import Guards
from scheduler.keys import Keys
from scheduler.ledger import Ledger


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
