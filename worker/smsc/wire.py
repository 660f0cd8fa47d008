"""A lean HTTP/1.1 transport for the provider's requests: keep-alive sockets, answers parsed by httptools (C),
every blocking step bounded by the request's :func:`~worker.smsc.deadline.deadline` as
:class:`~worker.smsc.deadline.DeadlineTransport` bounds it.

Why not httpx's own transport on this path: httpcore's HTTP/1.1 runs on h11, a pure-Python state machine;
measured on a batch's POST and its 100-number answer, it costs ~180 µs of CPU a request, this transport
~30 µs (``httptools`` is llhttp, the parser of Node.js, already pinned for the push receiver's uvicorn).
With a batch of 100 that was an eighth of a worker's CPU. It speaks only what this API needs: one origin
(the base URL), POST with a body of known length, answers with a ``Content-Length``, chunked or ended by
the close; plain TCP or TLS (httpx's default context: certifi's roots). Behind a proxy (``HTTPS_PROXY`` and
the other variables httpx reads) :func:`transport_for` picks :class:`DeadlineTransport` instead.

Errors are httpx's, as httpx's transport raises them, so the client classifies both the same way:
``PoolTimeout``/``ConnectTimeout``/``ConnectError`` (the request never left: safe to resend),
``WriteTimeout``/``WriteError``/``ReadTimeout``/``ReadError``/``RemoteProtocolError`` (it may have).
A kept-alive connection that the server closed meanwhile is dropped before it is used (readable while
idle means closed or out of step), and one idle longer than ``keepalive_expiry_s`` is never reused.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from typing import Final

import httptools
import httpx

from worker.smsc.deadline import DeadlineTransport, proxy_for, time_left

__all__ = ["WireTransport", "transport_for"]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: Read this much at a time (a 500-number answer is ~60 KB).
_CHUNK: Final = 256 * 1024


def transport_for(base_url: str, *, max_connections: int) -> httpx.BaseTransport:
    """The transport of a client of ``base_url``: this one, or httpx's (deadlined) behind a proxy."""
    if proxy_for(base_url) is not None:
        return DeadlineTransport(base_url=base_url, max_connections=max_connections)
    return WireTransport(base_url=base_url, max_connections=max_connections)


class _Answer:
    """httptools' callbacks: the status, the headers (lower-case names) and the body of one answer."""

    __slots__ = ("_name", "body", "complete", "headers", "headers_done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headers_done = self.complete = self.keep_alive = False
        self._name = ""
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self._name = name.decode("latin-1").lower()
        self.headers[self._name] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        # Asked here: once the callback returns, llhttp is ready for the next answer and says False.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()


class _Connection:
    __slots__ = ("idle_since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_since = 0.0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _bounded(timeout: float, expired: type[httpx.TimeoutException]) -> float:
    left = time_left()
    if left is not None:
        if left <= 0:
            raise expired("the request's deadline has passed")
        timeout = min(timeout, left)
    return max(timeout, 0.001)


class WireTransport(httpx.BaseTransport):
    """POSTs to one origin over at most ``max_connections`` keep-alive connections (one per login slot)."""

    def __init__(self, *, base_url: str, max_connections: int, keepalive_expiry_s: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None, max_answer_bytes: int = 32 * 1024 * 1024) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https"):
            raise ValueError("base_url must be http:// or https://")
        self._tls = url.scheme == "https"
        self._host = url.host
        self._port = url.port or (443 if self._tls else 80)
        self._authority = url.netloc.decode("ascii")
        self._ssl = (ssl_context or httpx.create_ssl_context()) if self._tls else None
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._expiry = keepalive_expiry_s
        self._max = max_answer_bytes

    # -- httpx's interface (tests and tools; the client calls :meth:`post`) -------------------------
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != self._host or (request.url.port or self._port) != self._port:
            raise httpx.UnsupportedProtocol(f"this transport serves {self._authority} only")
        timeouts = request.extensions.get("timeout", {})
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                   if k.lower() not in (b"host", b"content-length", b"transfer-encoding", b"connection")]
        status, answer_headers, body = self.post(
            request.url.raw_path.decode("ascii"), request.read(), headers,
            connect_timeout=timeouts.get("connect") or 5.0, timeout=timeouts.get("read") or 30.0,
            method=request.method)
        return httpx.Response(status, headers=answer_headers, content=body, request=request)

    # -- the request -------------------------------------------------------------------------------
    def post(self, target: str, body: bytes, headers: list[tuple[str, str]], *, connect_timeout: float,
             timeout: float, method: str = "POST") -> tuple[int, dict[str, str], bytes]:
        """One request: its status, headers (lower-case names) and body."""
        if not self._slots.acquire(timeout=_bounded(timeout, httpx.PoolTimeout)):
            raise httpx.PoolTimeout("no connection came free in time")
        conn: _Connection | None = None
        try:
            conn = self._idle_connection() or self._connect(connect_timeout)
            head = [f"{method} {target} HTTP/1.1", f"Host: {self._authority}", f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers]
            data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
            try:
                conn.sock.settimeout(_bounded(timeout, httpx.WriteTimeout))
                conn.sock.sendall(data)
            except TimeoutError as exc:
                raise httpx.WriteTimeout("writing the request timed out") from exc
            except OSError as exc:
                raise httpx.WriteError(f"writing the request failed: {type(exc).__name__}") from exc
            status, answer, keep = self._read(conn, timeout)
            if keep and status not in _REDIRECTS:
                conn.idle_since = time.monotonic()
                with self._lock:
                    self._idle.append(conn)
                conn = None
            return status, answer.headers, b"".join(answer.body)
        finally:
            if conn is not None:
                conn.close()
            self._slots.release()

    def _read(self, conn: _Connection, timeout: float) -> tuple[int, _Answer, bool]:
        answer = _Answer()
        parser = answer.parser = httptools.HttpResponseParser(answer)
        size = 0
        while not answer.complete:
            try:
                conn.sock.settimeout(_bounded(timeout, httpx.ReadTimeout))
                data = conn.sock.recv(_CHUNK)
            except TimeoutError as exc:
                raise httpx.ReadTimeout("reading the answer timed out") from exc
            except OSError as exc:
                raise httpx.ReadError(f"reading the answer failed: {type(exc).__name__}") from exc
            if not data:
                # Closed: the end of an answer delimited by the close, else a cut one.
                if answer.headers_done and "content-length" not in answer.headers and \
                        "chunked" not in answer.headers.get("transfer-encoding", "").lower():
                    answer.parser = None
                    return parser.get_status_code(), answer, False
                raise httpx.RemoteProtocolError("the server closed the connection before a complete answer")
            size += len(data)
            if size > self._max:
                raise httpx.ReadError(f"answer longer than {self._max} bytes")
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                raise httpx.RemoteProtocolError("the server switched protocols") from exc
            except httptools.HttpParserError as exc:
                raise httpx.RemoteProtocolError(f"not an HTTP answer ({type(exc).__name__})") from exc
        answer.parser = None
        return parser.get_status_code(), answer, answer.keep_alive

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            # Readable while idle: the server closed it (or sent what nobody asked for): not reusable.
            if now - conn.idle_since < self._expiry and not select.select([conn.sock], [], [], 0)[0]:
                return conn
            conn.close()

    def _connect(self, connect_timeout: float) -> _Connection:
        bounded = _bounded(connect_timeout, httpx.ConnectTimeout)
        try:
            sock = socket.create_connection((self._host, self._port), timeout=bounded)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {self._authority} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"connecting to {self._authority} failed: {type(exc).__name__}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock.settimeout(_bounded(connect_timeout, httpx.ConnectTimeout))
                sock = self._ssl.wrap_socket(sock, server_hostname=self._host)
        except TimeoutError as exc:
            sock.close()
            raise httpx.ConnectTimeout(f"TLS with {self._authority} timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise httpx.ConnectError(f"TLS with {self._authority} failed: {type(exc).__name__}") from exc
        except httpx.TimeoutException:
            sock.close()
            raise
        return _Connection(sock)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
