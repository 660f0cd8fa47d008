"""A task that raised leaves no Redis connection owing a reply (``worker.tasks._fresh_connections``): the
reply of a request whose task was stopped before reading it (Celery's limits, or anything raised from
outside the code) is never read as the answer to the next command of that process."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis

from worker import tasks
from worker.dev.stack import RedisServer


def test_after_a_failed_task_a_reply_owed_to_it_is_not_read_as_the_next_ones(
        redis_server: RedisServer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis.Redis.from_url(redis_server.url)  # a pool of its own: one connection, reused
    client.set("k:a", "A")
    client.set("k:b", "B")
    # A request sent and its task stopped before its reply was read; the connection went back to the pool.
    conn = client.connection_pool.get_connection()
    conn.send_command("GET", "k:a")
    client.connection_pool.release(conn)
    monkeypatch.setattr(tasks, "get_runtime", lambda: SimpleNamespace(redis=client))
    tasks._fresh_connections()  # what the task_failure signal runs
    assert client.get("k:b") == b"B"  # not "A", the reply owed to the stopped request
