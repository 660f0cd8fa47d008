"""Durable before acknowledged: wait until the writes a caller just made are on the Redis server's disk.

A campaign commit, a pause, a resume, a cancel and an account's stop are promises to a user; with
``appendfsync everysec`` a crash loses up to the last second (two, on a slow disk) of acknowledged
writes, so such a control waits for the disk before it answers (:func:`wait_durable`, called after the
write was acknowledged). The per-batch ledger writes do not wait: a restart is handled by settling
(:mod:`scheduler.recovery`).

How it waits, by what the server offers:

- **Redis ≥ 7.2**: ``WAITAOF 1 0 <timeout>`` — the server answers once the local AOF has fsynced every
  write this connection made (the caller must use the connection of its writes: a plain
  :class:`redis.Redis` pool hands back the most recently returned connection, which is that one in a
  single-threaded caller; several threads should pass a client of their own).
- **Older servers** (Redis 7.0 on Debian 12), by ``appendfsync``:

  - ``always``: the server fsyncs before it answers a write, so an acknowledged write is on disk.
  - ``everysec``: the server fsyncs in the background at most once a second: the first fsync *started*
    after our write covers it. One starts at the first event-loop turn of the next whole second (the
    cron runs ``hz`` times a second), unless one is still running (then at the turn after it ends, or
    the server postpones the write itself up to two seconds and counts ``aof_delayed_fsync``). So: wait
    until the server's clock is past the next whole second by a cron tick, then until
    ``INFO persistence`` shows no fsync pending twice, a cron tick apart (an fsync still running at the
    first look was started before ours, and ours is started at the turn after it ends); a postponed
    write (``aof_delayed_fsync`` grew, or an fsync was pending when we began) starts the wait again from
    the moment it is written. Typically 0.1-1.3 s.
  - ``no``: the operating system decides when the file reaches the disk (up to ~30 s): nothing to
    wait for; the answer says so.

- **No AOF** (``appendonly no``): a crash loses the writes whatever we wait for (RDB snapshots are not
  an acknowledgement); the answer says so, so the caller can tell the user.

The answer is a :class:`Durable`: true only when the writes are known to be on disk.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from scheduler.keys import text

__all__ = ["DEFAULT_TIMEOUT_MS", "Durability", "Durable", "wait_durable"]

#: Long enough for everysec's next fsync on a slow disk (Redis itself postpones up to 2 s).
DEFAULT_TIMEOUT_MS = 3_000
#: Between two looks at INFO persistence.
_POLL_S = 0.02


class Durability(StrEnum):
    SYNCED = "synced"  # on disk (WAITAOF, appendfsync always, or an fsync seen after the writes)
    TIMEOUT = "timeout"  # not confirmed within the timeout (a slow or failing disk)
    UNSYNCED = "unsynced"  # appendfsync no: written to the file, the OS flushes it when it likes
    NO_AOF = "no-aof"  # the server keeps no append-only file: a crash loses the writes
    WRITE_ERROR = "write-error"  # the server reports failing AOF writes (disk full, I/O error)


_TEXT = {
    Durability.SYNCED: "on disk",
    Durability.TIMEOUT: "not confirmed on disk in time",
    Durability.UNSYNCED: "written, but the server leaves the disk sync to the OS (appendfsync no)",
    Durability.NO_AOF: "not durable: the Redis server keeps no append-only file (appendonly no)",
    Durability.WRITE_ERROR: "not durable: the Redis server reports failing AOF writes",
}


@dataclass(frozen=True)
class Durable:
    """What :func:`wait_durable` found; true only when the writes are known to be on disk."""

    state: Durability
    #: How it was established: ``WAITAOF``, ``appendfsync always``, ``everysec fsync``, or the setting.
    via: str
    waited_ms: int

    def __bool__(self) -> bool:
        return self.state is Durability.SYNCED

    def __str__(self) -> str:
        return f"{_TEXT[self.state]} ({self.via}, {self.waited_ms} ms)"


def wait_durable(client: redis.Redis, *, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                 marker_key: str | None = None) -> Durable:
    """Wait until the writes acknowledged to the caller are on the server's disk, at most ``timeout_ms``;
    the answer says whether they are, and how that is known.

    ``marker_key``: a HASH of the caller's (e.g. ``Keys.meta``, or the campaign's hash) in which the
    field ``durable_checks`` is counted up on the same connection just before ``WAITAOF``, so that the
    wait covers that write and with it every write acknowledged before it, on any connection (the
    server's replication offset is one sequence). Without it ``WAITAOF`` covers the writes of the pooled
    connection it runs on — the caller's own in a single-threaded caller, not necessarily in a
    multi-threaded one."""
    started = time.monotonic()
    appendonly, appendfsync = _aof_config(client)
    if appendonly == "no":
        return Durable(Durability.NO_AOF, "appendonly no", _since(started))
    if appendfsync == "no":
        # Written to the file, never synced by the server (WAITAOF would wait out its timeout).
        return Durable(Durability.UNSYNCED, "appendfsync no", _since(started))
    pipe = client.pipeline(transaction=False)
    if marker_key is not None:
        pipe.hincrby(marker_key, "durable_checks", 1)
    pipe.execute_command("WAITAOF", 1, 0, max(int(timeout_ms), 1))  # type: ignore[no-untyped-call]
    reply = pipe.execute(raise_on_error=False)[-1]
    if isinstance(reply, redis.ResponseError):
        message = str(reply).lower()
        if "appendonly is disabled" in message:
            return Durable(Durability.NO_AOF, "WAITAOF", _since(started))
        if "unknown command" not in message:
            raise reply
        return _fallback(client, started, timeout_ms, always=appendfsync == "always")
    local = int(reply[0])
    return Durable(Durability.SYNCED if local >= 1 else Durability.TIMEOUT, "WAITAOF", _since(started))


def _fallback(client: redis.Redis, started: float, timeout_ms: int, *, always: bool) -> Durable:
    now_ms, info = _look(client)
    if str(info.get("aof_enabled", "0")) != "1":
        return Durable(Durability.NO_AOF, "appendonly no", _since(started))
    if str(info.get("aof_last_write_status", "ok")) != "ok":
        return Durable(Durability.WRITE_ERROR, "aof_last_write_status", _since(started))
    if always:
        return Durable(Durability.SYNCED, "appendfsync always", _since(started))
    hz = max(int(info.get("hz", 10) or 10), 1)
    tick_ms = math.ceil(1000 / hz) + 20
    deadline = started + timeout_ms / 1000
    delayed = int(info.get("aof_delayed_fsync", 0))
    # A write postponed behind a running fsync is written once it ends: count from then.
    written_ms = None if int(info.get("aof_pending_bio_fsync", 0)) else now_ms
    target_ms = 0
    clear_looks = 0
    while True:
        if written_ms is not None and not target_ms:
            target_ms = (written_ms // 1000 + 1) * 1000 + tick_ms
        pending = int(info.get("aof_pending_bio_fsync", 0))
        if int(info.get("aof_delayed_fsync", 0)) != delayed:
            # The server gave up waiting for a slow fsync and wrote anyway: ours is yet to come.
            delayed = int(info.get("aof_delayed_fsync", 0))
            written_ms, target_ms, clear_looks = now_ms, 0, 0
            continue
        if str(info.get("aof_last_write_status", "ok")) != "ok":
            return Durable(Durability.WRITE_ERROR, "aof_last_write_status", _since(started))
        if written_ms is None:
            if not pending:
                written_ms = now_ms
                continue
        elif pending:
            clear_looks = 0
        elif now_ms >= target_ms:
            clear_looks += 1
            if clear_looks == 2:
                return Durable(Durability.SYNCED, "everysec fsync", _since(started))
            target_ms = now_ms + tick_ms
        if time.monotonic() >= deadline:
            return Durable(Durability.TIMEOUT, "everysec fsync", _since(started))
        wait_s = _POLL_S if not target_ms or pending else max(min((target_ms - now_ms) / 1000, 0.5), 0.001)
        time.sleep(min(wait_s, max(deadline - time.monotonic(), 0.0)) or 0.001)
        now_ms, info = _look(client)


def _aof_config(client: redis.Redis) -> tuple[str | None, str | None]:
    """``appendonly`` and ``appendfsync`` (None where CONFIG is not allowed, as on some hosted Redis:
    then WAITAOF, or INFO, tells; and an unknown fsync policy is waited for as everysec)."""
    try:
        got = client.config_get("append*")
    except redis.ResponseError:
        return None, None
    values = {text(k): text(v).lower() for k, v in got.items()}
    return values.get("appendonly"), values.get("appendfsync")


def _look(client: redis.Redis) -> tuple[int, dict[str, Any]]:
    """The server's clock (ms) and its persistence and server facts, in one round trip."""
    pipe = client.pipeline(transaction=True)
    pipe.time()
    pipe.info("persistence")
    pipe.info("server")
    (seconds, micros), persistence, server = pipe.execute()
    facts: dict[str, Any] = {**server, **persistence}
    return int(seconds) * 1000 + int(micros) // 1000, facts


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
