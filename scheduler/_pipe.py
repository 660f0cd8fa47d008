"""An intake's Redis round trips without the wait: commands sent at once, their replies read later, in order.

The producer (:class:`scheduler.enqueue.Enqueue`) sends a chunk's dedup script and the stage scripts of
the batches it filled, and reads on while Redis runs them; it reads a dedup's answer once the next chunk
is read, when it is there already. A million personal rows spent ~4 s waiting on those round trips, one
after another; now they overlap the parsing. One connection and one thread: a writer thread was tried
and measured worse, its replies waiting for the GIL (CPython hands it over every 5 ms) while the
producer parsed, 0.35 s of 3 s waiting again.

Redis runs a connection's commands in the order they arrive, so it sees exactly the calls a synchronous
intake would make, in the same order. Every reply is read and checked: :meth:`Pipe.result` reads up to the
one asked for, running the check each earlier command was sent with (a stage that finds the claim lost
raises there), and :meth:`Pipe.drain` reads them all. What a reply says is raised no later than the
drain, and the intake drains before its plan and commit. A reply that is an error, or a connection that
fails, ends the pipe: its connection is closed rather than handed back with replies unread, and nothing
more is sent on it. The scripts are sent by their SHA (EVALSHA), loaded once when the pipe opens: a
server that loses them meanwhile (a restart, SCRIPT FLUSH) answers NOSCRIPT, which ends the intake
(nothing is committed; enqueueing it again starts afresh) rather than resending out of order.

Commands go out without redis-py's health check (``health_check_interval``, 30 s in
:func:`worker.runtime.redis_client`): after an input that paused that long (an app's rows from a slow
source) it would send a PING on this connection and read the next reply waiting there, a script's, as
the PING's — and end the intake ("Bad response from PING health check"). A connection that died
meanwhile fails at the send or the read instead, which ends the pipe as above.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis

from scheduler.keys import text
from scheduler.scripts import Arg, source


class PipeBroken(redis.ConnectionError):
    """The pipe's connection failed, or the server lost the scripts (NOSCRIPT): what was sent on it and
    not answered is unknown. One line, naming neither a key nor a number."""


class Pipe:
    """Commands sent on a connection of this pipe's own, replies read in order (a context manager that
    reads what is left and hands the connection back, or closes it when a reply is missing or failed).

    ``scripts``: the names of the scripts :meth:`call` runs (``scheduler/lua``), loaded now."""

    def __init__(self, client: redis.Redis, scripts: Sequence[str]) -> None:
        self._sha = {name: text(client.script_load(source(name))) for name in scripts}
        self._pool = client.connection_pool
        self._conn = self._pool.get_connection()
        self._sent = 0
        self._read = 0
        #: Per reply not read yet: what to do with it (a check, or keep it for result()).
        self._unread: deque[Callable[[Any], None] | None] = deque()
        self._kept: dict[int, Any] = {}
        self._broken = False

    def call(self, script: str, keys: Sequence[str], args: Sequence[Arg], *,
             check: Callable[[Any], None] | None = None) -> int:
        """Send ``script`` (EVALSHA); return its ticket for :meth:`result`, or, with ``check``, run
        ``check(reply)`` when its reply is read (its ticket then has no result)."""
        if self._broken:
            raise PipeBroken("the connection to Redis failed earlier in the intake")
        try:
            # No health check: its PING would read a reply of ours as its own (see the module docstring).
            self._conn.send_command("EVALSHA", self._sha[script], len(keys), *keys, *args,  # type: ignore[no-untyped-call]
                                    check_health=False)
        except BaseException as exc:
            self._broken = True
            raise _broken(exc) from exc
        self._sent += 1
        self._unread.append(check)
        return self._sent

    def result(self, ticket: int) -> Any:
        """The reply of ``ticket`` (sent without a check), reading (and checking) the replies before it."""
        while self._read < ticket:
            self._next()
        return self._kept.pop(ticket)

    def drain(self) -> None:
        """Read (and check) every reply not read yet."""
        while self._read < self._sent:
            self._next()

    def _next(self) -> None:
        check = self._unread.popleft()
        try:
            reply = self._conn.read_response()
        except BaseException as exc:
            self._broken = True
            raise _broken(exc) from exc
        self._read += 1
        if check is None:
            self._kept[self._read] = reply
        else:
            check(reply)

    def close(self) -> None:
        """Hand the connection back with every reply read; close it instead when some are not."""
        # On the way out of a failed intake: the replies are read (the connection stays in step), not
        # checked (the way out has an exception of its own).
        try:
            while self._read < self._sent and not self._broken:
                self._unread.popleft()
                self._conn.read_response()
                self._read += 1
        except BaseException:
            self._broken = True
        if self._broken:
            self._conn.disconnect()  # type: ignore[no-untyped-call]
        self._pool.release(self._conn)

    def __enter__(self) -> Pipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _broken(exc: BaseException) -> BaseException:
    """What a failed send or read raises: :class:`PipeBroken` for a lost connection or lost scripts, the
    exception itself otherwise (an error the script raised, an interrupt)."""
    if isinstance(exc, redis.exceptions.NoScriptError):
        return PipeBroken("Redis lost the intake's scripts (was it restarted, or SCRIPT FLUSH run, during the "
                          "intake?)")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return PipeBroken(f"the connection to Redis failed during the intake ({_first_line(exc)})")
    return exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
