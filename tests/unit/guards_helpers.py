"""What the guards' tests share: a stepped clock, the test login, the server's clock, a thread race."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis

from scheduler.guards import Guards
from scheduler.keys import Keys
from worker.dev.stack import RedisServer

T = 1_700_000_000_000  # the stepped clock of the pure-logic tests (ms)
ACCT = "acct"  # the login
PHONE = "+79001234567"


def server_ms(client: redis.Redis) -> int:
    """The Redis server's clock (ms): the one every guard decides by."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def hammer(n_threads: int, server: RedisServer, work: Callable[[Guards, int], Any], *,
           make: Callable[[redis.Redis, int], Guards] | None = None) -> list[Any]:
    """Run ``work(guards, i)`` in ``n_threads`` threads, each with its own client (and its own
    ``Guards``, built by ``make(client, i)``), started together; returns their results in order."""
    barrier = threading.Barrier(n_threads)
    results: list[Any] = [None] * n_threads
    errors: list[BaseException] = []

    def run(i: int) -> None:
        client = server.client()
        try:
            g = make(client, i) if make is not None else Guards(client, Keys("t"))
            barrier.wait(timeout=10)
            results[i] = work(g, i)
        except BaseException as exc:  # surfaced below: a thread's failure fails the test
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


class PeakMonitor:
    """Samples ``ZCARD key`` from its own client until stopped: the most members the key ever held."""

    def __init__(self, server: RedisServer, key: str) -> None:
        self.server, self.key, self.peak = server, key, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        client = self.server.client()
        try:
            while not self._stop.is_set():
                self.peak = max(self.peak, int(client.zcard(self.key)))
        finally:
            client.close()

    def __enter__(self) -> PeakMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
