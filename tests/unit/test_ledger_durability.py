"""Durable before acknowledged (issue 9 item 9): ``wait_durable`` on real redis-servers, one per
persistence setting.

On Redis ≥ 7.2 the answer comes from ``WAITAOF``; on older servers (this machine's Debian redis-server
is 7.0) from the setting and the server's fsync schedule. Each test asserts the branch the server in
use must take, so running the module with ``REDIS_SERVER=<a 7.2+ redis-server>`` checks the other one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from scheduler.durability import Durability, Durable, wait_durable
from scheduler.ledger import server_time_ms
from worker.dev.stack import RedisServer


def _has_waitaof(client: redis.Redis) -> bool:
    major, minor = (int(x) for x in str(client.info("server")["redis_version"]).split(".")[:2])
    return (major, minor) >= (7, 2)


def _server(make_redis: Callable[..., RedisServer], **kw: object) -> redis.Redis:
    return make_redis(**kw).client()


def test_without_an_append_only_file_the_answer_says_the_writes_are_not_durable(redis_client: redis.Redis) -> None:
    redis_client.set("k", "v")
    got = wait_durable(redis_client)
    assert got.state is Durability.NO_AOF
    assert not got
    assert "not durable" in str(got) and "appendonly no" in str(got)


def test_with_appendfsync_always_an_acknowledged_write_is_on_disk_at_once(
    make_redis: Callable[..., RedisServer]
) -> None:
    client = _server(make_redis, appendonly=True, appendfsync="always")
    client.set("k", "v")
    got = wait_durable(client)
    assert got.state is Durability.SYNCED and got
    assert got.via == ("WAITAOF" if _has_waitaof(client) else "appendfsync always")
    assert got.waited_ms < 500


def test_with_appendfsync_everysec_the_answer_waits_for_the_fsync_after_the_write(
    make_redis: Callable[..., RedisServer]
) -> None:
    client = _server(make_redis, appendonly=True, appendfsync="everysec")
    for _ in range(3):  # wherever in its second the write falls
        client.hset("{smsc}:t:c:c1", "state", "paused")
        written_ms = server_time_ms(client)
        got = wait_durable(client, marker_key="{smsc}:t:meta")
        answered_ms = server_time_ms(client)
        assert got.state is Durability.SYNCED, str(got)
        if _has_waitaof(client):
            assert got.via == "WAITAOF"
        else:
            # The everysec fsync that covers the write starts in the next whole second at the earliest:
            # an answer before then would be a promise the disk has not kept yet.
            assert got.via == "everysec fsync"
            assert answered_ms >= (written_ms // 1000 + 1) * 1000, (written_ms, answered_ms)
        assert got.waited_ms < 2_500
        time.sleep(0.31)
    assert int(client.hget("{smsc}:t:meta", "durable_checks") or 0) == 3


def test_with_appendfsync_everysec_a_timeout_too_short_for_the_fsync_is_reported(
    make_redis: Callable[..., RedisServer]
) -> None:
    client = _server(make_redis, appendonly=True, appendfsync="everysec")
    if _has_waitaof(client):
        # WAITAOF's own timeout: a 1 ms wait can still see an fsync that happened meanwhile; what is
        # certain is that the answer is one of the two and says which.
        client.set("k", "v")
        assert wait_durable(client, timeout_ms=1).state in (Durability.SYNCED, Durability.TIMEOUT)
        return
    client.set("k", "v")
    got = wait_durable(client, timeout_ms=1)
    assert got.state is Durability.TIMEOUT
    assert not got
    assert "not confirmed" in str(got)


def test_with_appendfsync_no_the_answer_says_the_os_decides(make_redis: Callable[..., RedisServer]) -> None:
    client = _server(make_redis, appendonly=True, appendfsync="no")
    client.set("k", "v")
    got = wait_durable(client)
    assert (got.state, got.via) == (Durability.UNSYNCED, "appendfsync no")  # not WAITAOF's timeout
    assert not got
    assert got.waited_ms < 500


@pytest.mark.parametrize("state", list(Durability))
def test_every_answer_reads_as_one_line(state: Durability) -> None:
    text = str(Durable(state, "x", 12))
    assert text and "\n" not in text and "12 ms" in text
    assert bool(Durable(state, "x", 12)) is (state is Durability.SYNCED)
