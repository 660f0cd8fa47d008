"""The push endpoint: the provider posts each status change here ("Передача статусов и сообщений на
обработчик Клиента"; docs/delivery.md has the fields and the reading of them).

An ASGI app (:func:`create_app`), served alone by ``smsc-mailer status-receiver --port P``
(:func:`run_receiver`, uvicorn) or mounted into a larger ASGI app (``app.mount("/smsc", receiver)``):

``POST <prefix>/status[/<token>]``  one status, form-encoded (``id``, ``phone``, ``status``, ``err``,
                                   ``time``/``ts``, ``md5``...); answers ``200 OK`` once it is in Redis
``GET <prefix>/health``             ``{"ok": true, "counters": {...}}``

What is checked, in this order — what the provider can prove and what we know:

1. the path's token (``SMSC_PUSH_TOKEN``, compared in constant time): the handler URL set in the
   account is a secret of ours, so a post to another path is ``404``;
2. the sender's address (``SMSC_PUSH_ALLOW_IPS``): else ``403``;
3. the provider's ``md5`` (``SMSC_PUSH_VERIFY``, with the account's password): missing or wrong, ``403``;
4. the fields: ``id``, ``phone`` and an integer ``status`` — a post that can never be read is answered
   ``200`` (logged, counted ``malformed``) so the provider does not retry it for hours; an incoming SMS
   or another type of post is ``200`` too (counted ``not_a_status``);
5. the id is one of ours (:func:`worker.delivery.matching.ref_of`: this namespace's form) and the phone,
   in the provider's spelling, a sent recipient of that batch (:class:`~worker.delivery.matching.RowIndex`);
   else ``200`` (counted ``unmatched``) — unless the batch's request is still out or unsettled (a status
   can arrive before the send's answer is recorded): then ``503`` (counted ``early``), and the retry finds it;
6. the order: a status older than what the record holds, repeated, or an intermediate one after the final
   one changes nothing (:mod:`scheduler.delivery`).

A status is answered ``200`` only once it is in Redis: the statuses of many posts are written together
(one script call for up to ``group`` of them: a group commit), each post waiting for its group's write.
Redis unreachable: ``503``, and the provider retries later.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from scheduler.delivery import FINAL, NOT_A_SENT_ROW, Status, apply_call, parse_rows, script_source
from scheduler.keys import Keys
from worker.delivery.config import DeliveryConfig
from worker.delivery.matching import RowIndex, ref_of

__all__ = ["ReceiverApp", "ReceiverThread", "create_app", "run_receiver", "signature_ok"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_MAX_BODY = 64 * 1024  # one status post is a few hundred bytes
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


def signature_ok(fields: dict[str, str], password: str) -> bool:
    """The provider's ``md5`` of ``id:phone:status:password`` (see docs/delivery.md), in constant time."""
    given = fields.get("md5", "")
    text = f"{fields.get('id', '')}:{fields.get('phone', '')}:{fields.get('status', '')}:{password}"
    want = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()
    return hmac.compare_digest(given.lower(), want)


@dataclass
class _Pending:
    status: Status
    done: asyncio.Future[int]


@dataclass
class ReceiverApp:
    """The ASGI app; one per process (its Redis client and group commit live on the serving loop)."""

    cfg: DeliveryConfig
    redis_url: str
    namespace: str = "smsc"
    prefix: str = "/smsc"
    group: int = 500
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = Keys(self.namespace)
        self.rows = RowIndex()
        self._redis: aioredis.Redis | None = None
        self._apply: Any = None
        self._queue: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._loading: dict[str, asyncio.Future[None]] = {}
        self.default_webhook = bool(self.cfg.webhook_url)

    # -- ASGI -------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if path.startswith(self.prefix):
            path = path[len(self.prefix):]
        if scope["method"] == "GET" and path == "/health":
            await _answer(send, 200, json.dumps({"ok": True, "counters": self.counters}).encode(),
                          [(b"content-type", b"application/json")])
            return
        if scope["method"] != "POST" or not self._path_ok(path):
            await _answer(send, 404, b"not found")
            return
        body = await _read_body(receive)
        code, text = await self.handle(body, client=(scope.get("client") or ("", 0))[0])
        await _answer(send, code, text.encode())

    def _path_ok(self, path: str) -> bool:
        token = self.cfg.push_token
        if not token:
            return path in ("/status", "/status/")
        head, _, given = path.rpartition("/")
        return head == "/status" and hmac.compare_digest(given.encode(), token.encode())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.redis_url, socket_timeout=10, socket_connect_timeout=5)
            self._apply = self._redis.register_script(script_source("apply"))
            self._wake = asyncio.Event()
            self._flusher = asyncio.create_task(self._flush_loop())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # -- one post ---------------------------------------------------------------------------------
    async def handle(self, body: bytes, *, client: str = "") -> tuple[int, str]:
        """Check, match and store one status post: ``(HTTP status, text)``."""
        if self._redis is None:
            await self.start()
        self._count("received")
        cfg = self.cfg
        if cfg.push_allow_ips and client not in cfg.push_allow_ips:
            self._count("forbidden")
            return 403, "forbidden"
        fields = _form(body)
        if cfg.push_verify and not (cfg.password and signature_ok(fields, cfg.password)):
            self._count("bad_signature")
            return 403, "bad signature"
        if "id" not in fields or "status" not in fields or "phone" not in fields:
            self._count("not_a_status")  # an incoming SMS, a service message: not ours to handle here
            return 200, "OK"
        try:
            status = int(fields["status"])
            err = int(fields.get("err") or 0)
            ts = int(fields.get("time") or 0) or _ts_of(fields.get("ts", "")) or int(time.time())
        except ValueError:
            self._count("malformed")
            log.warning("status post with a malformed field ignored (id=%s)", fields.get("id", "")[:40])
            return 200, "OK"
        ref = ref_of(fields["id"], namespace=self.namespace)
        if ref is None:
            self._count("unmatched")
            return 200, "OK"
        try:
            hit = await self._find(ref, fields["phone"])
            if hit is None:
                if await self._in_flight(ref):
                    # The provider took the request and posts before its answer is recorded here: a
                    # retry finds the row.
                    self._count("early")
                    return 503, "not recorded yet, try again"
                self._count("unmatched")
                return 200, "OK"
            result = await self._submit(Status(ref, hit[0], status, err, ts, hit[1]))
        except (RedisError, OSError) as exc:
            self._count("unavailable")
            log.warning("status not stored (%s): answered 503, the provider will retry", type(exc).__name__)
            return 503, "try again later"
        self._count("final" if result == FINAL else "applied" if result != NOT_A_SENT_ROW else "unmatched")
        return 200, "OK"

    async def _in_flight(self, ref: str) -> bool:
        """The batch's request is out (or its outcome not settled yet): its rows may still come."""
        assert self._redis is not None
        state = await self._redis.hget(self.keys.batch(ref), "state")
        return state in (b"sending", b"queued")

    async def _find(self, ref: str, phone: str) -> tuple[int, str] | None:
        hit = self.rows.find(ref, phone)
        if hit is not None:
            return hit
        # Not indexed yet, or the batch's rows grew since: read them once for every waiting post.
        loading = self._loading.get(ref)
        if loading is None:
            loading = asyncio.get_running_loop().create_future()
            self._loading[ref] = loading
            try:
                assert self._redis is not None
                raw = await self._redis.hget(self.keys.batch(ref), "rows")
                self.rows.put(ref, parse_rows(raw))
                loading.set_result(None)
            except BaseException as exc:
                loading.set_exception(exc)
                raise
            finally:
                del self._loading[ref]
        else:
            await loading
        return self.rows.find(ref, phone)

    # -- the group commit -------------------------------------------------------------------------
    async def _submit(self, status: Status) -> int:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(status, done))
        assert self._wake is not None
        self._wake.set()
        return await done

    async def _flush_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:self.group], self._queue[self.group:]
                try:
                    k, a = apply_call(self.keys, [p.status for p in batch], default_webhook=self.default_webhook,
                                      first_poll_ms=int(self.cfg.policy.first_poll_s * 1000))
                    results = await self._apply(keys=k, args=a)
                except Exception as exc:  # every waiting post learns it (503), nothing is lost silently
                    for p in batch:
                        if not p.done.done():
                            p.done.set_exception(RedisError(type(exc).__name__))
                    continue
                for p, r in zip(batch, results, strict=True):
                    if not p.done.done():
                        p.done.set_result(int(r))


def _form(body: bytes) -> dict[str, str]:
    """A form body's fields (the last of a repeated name); unquoted only where needed (the common post
    is digits and letters: ~3x faster than ``parse_qsl``)."""
    out: dict[str, str] = {}
    for pair in body.decode("utf-8", "replace").split("&"):
        name, _, value = pair.partition("=")
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name:
            out[name] = value
    return out


def _ts_of(text: str) -> int:
    """``DD.MM.YYYY hh:mm:ss`` in Moscow time (UTC+3) as Unix seconds; 0 when it cannot be read."""
    try:
        t = time.strptime(text.strip(), "%d.%m.%Y %H:%M:%S")
    except ValueError:
        return 0
    import calendar

    return calendar.timegm(t) - 3 * 3600


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= _MAX_BODY:
            chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*(headers or _TEXT), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(cfg: DeliveryConfig, *, redis_url: str, namespace: str = "smsc", prefix: str = "/smsc") -> ReceiverApp:
    """The push endpoint as an ASGI app (mount it, or serve it with :func:`run_receiver`)."""
    return ReceiverApp(cfg, redis_url, namespace=namespace, prefix=prefix.rstrip("/"))


def run_receiver(app: ReceiverApp, *, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning") -> None:
    """Serve ``app`` with uvicorn until SIGTERM/SIGINT (``smsc-mailer status-receiver``)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                http="httptools" if _has("httptools") else "h11", loop="auto")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class ReceiverThread:
    """``app`` served by uvicorn on a background thread (tests, the benchmark): ``.url``, ``.stop()``."""

    def __init__(self, app: ReceiverApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import socket
        import threading

        import uvicorn

        self.app = app
        # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (else ~40 ms a keep-alive exchange)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = host, int(self._sock.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", loop="auto",
                                http="httptools" if _has("httptools") else "h11")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"status-receiver:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("the status receiver did not start")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.app.prefix}/status" + (
            f"/{self.app.cfg.push_token}" if self.app.cfg.push_token else "")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ReceiverThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def app_from_settings(settings: Any, **overrides: Any) -> ReceiverApp:
    """The receiver of these settings (``redis_url``, ``smsc_namespace``, the delivery fields)."""
    cfg = DeliveryConfig.from_settings(settings, **overrides)
    return create_app(cfg, redis_url=settings.redis_url, namespace=settings.smsc_namespace)


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.delivery.receiver [--host H] [--port P] [--redis-url U] [--namespace N]``: serve
    the receiver of the settings (environment / ``.env``), printing ``status-receiver listening on URL``."""
    import argparse
    import socket

    from worker.settings import ConfigError, get_settings

    p = argparse.ArgumentParser(prog="python -m worker.delivery.receiver")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 = a free port (the printed line names it)")
    p.add_argument("--redis-url")
    p.add_argument("--namespace")
    args = p.parse_args(argv)
    try:
        s = get_settings()
    except ConfigError as exc:
        print(f"status-receiver: {exc}", flush=True)
        return 2
    cfg = DeliveryConfig.from_settings(s)
    app = create_app(cfg, redis_url=args.redis_url or s.redis_url, namespace=args.namespace or s.smsc_namespace)
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"status-receiver: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", flush=True)
        return 2
    port = sock.getsockname()[1]
    print(f"status-receiver listening on http://{args.host}:{port}{app.prefix}/status", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", loop="auto",
                            http="httptools" if _has("httptools") else "h11")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
