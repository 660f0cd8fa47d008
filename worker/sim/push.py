"""The provider's posts of status changes to the client's handler, with its retries (no Celery, no Redis).

:class:`Pusher` keeps one heap of posts by due time: each accepted message's final status at its final
time (and its ``0`` at acceptance with ``push_intermediate``). A post is a form-encoded ``POST`` of
:func:`worker.sim.delivery.push_fields` to ``push_url``; an answer other than 2xx, a refused
connection or a timeout is a failure, retried after ``push_retry_s``, doubling up to
``push_retry_cap_s``, for ``push_give_up_s`` after its first attempt — so a handler that is down for a
while gets every status afterwards, some of them late, some twice (a post whose answer was lost), and in
any order (a retried ``0`` may come after the final status): the receiver must cope with all three.

With threads (the default; :mod:`worker.sim.server`), a dispatcher hands due posts to
``push_concurrency`` senders on real time; without (``threads=False``, unit tests on a stepped clock),
:meth:`Pusher.run_due` posts what is due inline.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

from worker.sim.delivery import DeliveryConfig, push_fields

__all__ = ["PostFn", "Pusher", "http_post"]

#: ``post(url, fields, timeout_s) -> HTTP status``; raises OSError when no answer came.
PostFn = Callable[[str, Mapping[str, str], float], int]


class _Post(NamedTuple):
    due_ms: int
    seq: int
    message_id: str
    phone: str
    status: int
    err: int
    changed_ms: int
    parts: int
    attempt: int
    first_ms: int


_local = threading.local()


def http_post(url: str, fields: Mapping[str, str], timeout_s: float) -> int:
    """POST ``fields`` form-encoded over a keep-alive connection of this thread; the answer's status."""
    parts = urlsplit(url)
    key = (parts.scheme, parts.netloc)
    conns: dict[tuple[str, str], http.client.HTTPConnection] = getattr(_local, "conns", None) or {}
    _local.conns = conns
    conn = conns.get(key)
    if conn is None:
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conns[key] = cls(parts.netloc, timeout=timeout_s)
    conn.timeout = timeout_s
    body = urlencode(fields).encode()
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        if response.will_close:
            conn.close()
            del conns[key]
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        conns.pop(key, None)
        raise OSError(f"push to {parts.netloc} failed: {type(exc).__name__}") from None


class Pusher:
    """The posts still to make; thread-safe (one lock), cheap to schedule (called under the simulator's lock)."""

    def __init__(self, *, config: Callable[[], tuple[DeliveryConfig, str]], clock: Callable[[], float],
                 post: PostFn | None = None, threads: bool = True) -> None:
        self._config = config  # -> (delivery config, the account's password for the signature)
        self._clock = clock
        self._post = post or http_post
        self._threads = threads
        self._heap: list[_Post] = []
        self._seq = itertools.count()
        self._lock = threading.Condition()
        self._work: queue.Queue[_Post | None] = queue.Queue()
        self._started: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.pushed = self.attempts = self.failures = self.dropped = 0
        self.inflight = 0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- scheduling -------------------------------------------------------------------------------
    def schedule(self, *, message_id: str, phone: str, accepted_ms: int, parts: int, status: int, err: int,
                 final_ms: int, intermediate: bool) -> None:
        """Queue the posts of one accepted message: its ``0`` now (``intermediate``) and its final status at
        ``final_ms`` (``status`` 0: never final, nothing more)."""
        with self._lock:
            if intermediate:
                self._push(_Post(accepted_ms, next(self._seq), message_id, phone, 0, 0, accepted_ms, parts, 0, 0))
            if status:
                self._push(_Post(final_ms, next(self._seq), message_id, phone, status, err, final_ms, parts, 0, 0))
            self._lock.notify()
        if self._threads and not self._started:
            self.start()

    def _push(self, item: _Post) -> None:
        heapq.heappush(self._heap, item)

    def clear(self) -> None:
        with self._lock:
            self._heap.clear()
            self.pushed = self.attempts = self.failures = self.dropped = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"pushed": self.pushed, "push_attempts": self.attempts, "push_failures": self.failures,
                    "push_dropped": self.dropped, "push_queued": len(self._heap) + self.inflight}

    def next_due_ms(self) -> int | None:
        with self._lock:
            return self._heap[0].due_ms if self._heap else None

    # -- posting ----------------------------------------------------------------------------------
    def _take_due(self, now_ms: int) -> list[_Post]:
        out = []
        while self._heap and self._heap[0].due_ms <= now_ms:
            out.append(heapq.heappop(self._heap))
        self.inflight += len(out)
        return out

    def run_due(self, now_ms: int | None = None) -> int:
        """Post everything due by ``now_ms`` (default: the clock) on this thread; returns how many were tried."""
        with self._lock:
            due = self._take_due(self._now_ms() if now_ms is None else now_ms)
        for item in due:
            self._attempt(item)
        return len(due)

    def _attempt(self, item: _Post) -> None:
        cfg, password = self._config()
        url = cfg.push_url
        ok = False
        if url:
            fields = push_fields(message_id=item.message_id, phone=item.phone, status=item.status, err=item.err,
                                 changed_ms=item.changed_ms, parts=item.parts, password=password)
            try:
                ok = 200 <= self._post(url, fields, cfg.push_timeout_s) < 300
            except OSError:
                ok = False
        now = self._now_ms()
        with self._lock:
            self.inflight -= 1
            self.attempts += 1
            if ok:
                self.pushed += 1
                return
            self.failures += 1
            first = item.first_ms or now
            if now - first >= cfg.push_give_up_s * 1000:
                self.dropped += 1
                return
            wait_ms = int(min(cfg.push_retry_s * 2 ** item.attempt, cfg.push_retry_cap_s) * 1000)
            self._push(item._replace(due_ms=now + max(wait_ms, 1), seq=next(self._seq), attempt=item.attempt + 1,
                                     first_ms=first))
            self._lock.notify()

    # -- threads ----------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            cfg, _ = self._config()
            self._stopping.clear()
            threads = [threading.Thread(target=self._dispatch, name="smsc-sim-push", daemon=True)]
            threads += [threading.Thread(target=self._send_loop, name=f"smsc-sim-push-{i}", daemon=True)
                        for i in range(cfg.push_concurrency)]
            self._started = threads
        for t in threads:
            t.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
            threads, self._started = self._started, []
        for _ in threads:
            self._work.put(None)
        for t in threads:
            t.join(timeout=5)

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                now = self._now_ms()
                due = self._take_due(now)
                if not due:
                    wait_s = 0.2 if not self._heap else min(max((self._heap[0].due_ms - now) / 1000, 0.001), 0.2)
                    self._lock.wait(wait_s)
                    continue
            for item in due:
                self._work.put(item)

    def _send_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            self._attempt(item)

    def wait_empty(self, timeout_s: float = 10.0) -> bool:
        """Wait (real time) until no post is queued or in flight."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._heap and not self.inflight:
                    return True
            time.sleep(0.02)
        return False

    def describe(self) -> dict[str, Any]:
        return {"threads": len(self._started), **self.stats()}
