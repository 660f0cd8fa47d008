"""A hard wall-clock deadline on every request: :func:`deadline`, which both transports of
:class:`~worker.smsc.client.SmscClient` keep — :class:`~worker.smsc.wire.WireTransport` (the default) and
:class:`DeadlineTransport` here (httpx's own, used behind a proxy: :func:`worker.smsc.wire.transport_for`).

httpx's timeouts bound each socket operation, not the request: an answer trickled a byte at a time
never trips a 1 s read timeout and kept ``send()`` running for 14 s. A worker that gives up later than
it believes breaks the settle horizon (the batch is asked about while its request is still being
answered). So every blocking step of a request — waiting for a pooled connection, connecting, TLS,
writing the body, each read of the answer — gets at most what is left until the request's deadline,
and none starts once it has passed.

How: :func:`deadline` sets the deadline of the current thread's request (a ``ContextVar``); the
network backend of :class:`DeadlineTransport` wraps httpcore's own and shrinks the timeout of every
``connect``/``read``/``write`` to ``min(timeout, deadline - now)``, raising the matching httpcore
timeout when nothing is left (connect: the request never left; read/write: it may have). The
transport is httpx's default one rebuilt on public parts (``httpcore.ConnectionPool`` with a
``network_backend``, httpcore exceptions mapped to httpx's), keeping one keep-alive pool of
``max_connections`` (one per login slot). Proxies come from the usual environment variables
(``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), as httpx's default transport reads them.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from ssl import SSLContext
from typing import Any, Final

import httpcore
import httpx

__all__ = ["DeadlineTransport", "deadline", "proxy_for", "time_left"]

_deadline: ContextVar[float | None] = ContextVar("smsc_request_deadline", default=None)

# Most specific first: httpcore's exception -> httpx's (what httpx's own transport raises).
_EXCEPTIONS: Final[tuple[tuple[type[Exception], type[httpx.HTTPError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def deadline(at_monotonic: float) -> Iterator[None]:
    """Within the block, no socket operation of this thread's requests outlasts ``at_monotonic``."""
    token = _deadline.set(at_monotonic)
    try:
        yield
    finally:
        _deadline.reset(token)


def time_left() -> float | None:
    """Seconds until the current deadline (negative once passed), or ``None`` outside :func:`deadline`."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    left = time_left()
    if left is None:
        return timeout
    if left <= 0:
        raise expired("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the current request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout))
        return _Stream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """httpcore's synchronous backend, with connections that keep the request's deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise _httpx_error(exc) from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise _httpx_error(exc) from None


def _httpx_error(exc: Exception) -> httpx.HTTPError:
    for core, ours in _EXCEPTIONS:
        if isinstance(exc, core):
            return ours(str(exc))
    return httpx.TransportError(str(exc))  # pragma: no cover - every httpcore error is in the table


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _mapped():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


def proxy_for(base_url: str) -> httpcore.Proxy | None:
    """The proxy the environment names for ``base_url`` (``NO_PROXY`` honoured), as httpx reads it."""
    url = httpx.URL(base_url)
    if urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies()
    named = proxies.get(url.scheme) or proxies.get("all")
    if not named:
        return None
    proxy = httpx.URL(named if "://" in named else f"http://{named}")
    if proxy.scheme not in ("http", "https"):
        raise ValueError(f"proxy scheme {proxy.scheme!r} is not supported (use an http:// or https:// proxy)")
    auth = (proxy.username, proxy.password) if proxy.username else None
    return httpcore.Proxy(url=str(proxy.copy_with(username=None, password=None)), auth=auth)


class DeadlineTransport(httpx.BaseTransport):
    """httpx's default transport, with every socket operation bounded by the request's :func:`deadline`."""

    def __init__(self, *, base_url: str, max_connections: int, keepalive_expiry_s: float = 5.0) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            proxy=proxy_for(base_url),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry_s,
            network_backend=_Backend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped():
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
