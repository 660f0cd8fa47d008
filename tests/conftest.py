"""Fixtures: real processes on free ports of 127.0.0.1 (see :mod:`worker.dev.stack`).

Never the system's Redis: every server here is a private ``redis-server`` started for the tests, so a
``FLUSHDB`` on it touches nobody else's data.

- ``redis_server`` (session) — the shared private server; ``redis_client`` — a client of it
  (``decode_responses=False``), its db flushed before each test.
- ``make_redis(**kw)`` — extra private servers (``appendonly=True``...), stopped after the test.
- ``make_simulator(**kw)`` / ``simulator`` — the provider simulator over HTTP.
- ``celery_stack(**kw)`` — workers and beats against a Redis and a simulator (by default the session
  server and a fresh simulator); ``kw`` go to :class:`worker.dev.stack.Stack`.

A fixture that cannot start its process fails the test with what failed and the log tail.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from worker.dev.stack import RedisServer, SimulatorProcess, Stack, StackError

T = TypeVar("T")


def _start(what: str, start: Callable[[], T]) -> T:
    try:
        return start()
    except StackError as exc:
        pytest.fail(f"fixture could not start {what}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    _start("the session redis-server", server.start)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client(decode_responses=False)
    client.flushdb()  # our private server, never the system's
    try:
        yield client
    finally:
        client.close()


P = TypeVar("P", RedisServer, SimulatorProcess)


def _factory(cls: type[P], what: str, defaults: Callable[[], dict[str, Any]]) -> Iterator[Callable[..., P]]:
    """A fixture body: ``make(**kw)`` starts one more ``cls`` (``defaults()`` under ``kw``); all are stopped
    at the end of the test, the last first."""
    started: list[P] = []

    def make(**kwargs: Any) -> P:
        proc = cls(**{**defaults(), **kwargs})
        started.append(proc)
        return _start(what, proc.start)

    yield make
    for proc in reversed(started):
        with contextlib.suppress(Exception):
            proc.stop()


@pytest.fixture
def make_redis() -> Iterator[Callable[..., RedisServer]]:
    yield from _factory(RedisServer, "a private redis-server", dict)


@pytest.fixture
def make_simulator(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    counter = itertools.count(1)
    yield from _factory(SimulatorProcess, "the simulator",
                        lambda: {"log_path": tmp_path / f"simulator-{next(counter)}.log"})


@pytest.fixture
def simulator(make_simulator: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    return make_simulator()


@pytest.fixture
def celery_stack(
    request: pytest.FixtureRequest, tmp_path: Path, make_simulator: Callable[..., SimulatorProcess]
) -> Iterator[Callable[..., Stack]]:
    """Factory: ``celery_stack(workers=2, beats=1, env={...}, redis=..., simulator=...) -> Stack``.

    ``redis`` defaults to the session ``redis_server`` and ``simulator`` to a fresh one; the stack's
    logs are under the test's ``tmp_path`` (kept by pytest for a failed test). The stack does not flush
    Redis: ask for ``redis_client`` for that.
    """
    stacks: list[Stack] = []
    counter = itertools.count(1)

    def make(**kwargs: Any) -> Stack:
        if kwargs.get("redis") is None and not kwargs.get("use_existing"):
            kwargs["redis"] = request.getfixturevalue("redis_server")
        sim_options = dict(kwargs.pop("sim_options", None) or {})
        if kwargs.get("simulator", True) is True:
            for key in ("login", "password"):  # the workers' account is the simulator's
                if kwargs.get(key):
                    sim_options.setdefault(key, kwargs[key])
            kwargs["simulator"] = make_simulator(**sim_options)
        kwargs.setdefault("workdir", tmp_path / f"stack-{next(counter)}")
        stack = Stack(**kwargs)
        stacks.append(stack)
        return _start("the celery stack", stack.start)

    yield make
    for stack in reversed(stacks):
        with contextlib.suppress(Exception):
            stack.stop()
