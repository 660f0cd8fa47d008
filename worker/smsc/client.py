"""The HTTP client of the provider: send, cost, status and balance over one keep-alive pool.

Every request is a POST of ``application/x-www-form-urlencoded`` to ``{base_url}/sys/*.php`` with the
credentials in the form body only: never in a URL, a log line or an exception. Requests are built by
:mod:`worker.smsc.requests`, answers read by :mod:`worker.smsc.responses`.

**Deadline.** ``timeout_s`` is a hard wall-clock bound on each request, from the call to the last byte
of the answer (pool wait, connect, write, every read: :mod:`worker.smsc.deadline`); connecting gets at
most 5 s of it. A request that has not been answered completely by then raises
:class:`~worker.smsc.errors.SmscUnknownOutcome` (or :class:`~worker.smsc.errors.SmscConnectError` if
it never left), so a caller may count on ``send()`` being over ``timeout_s`` after it began.

**The one boundary.** httpx exceptions become :mod:`worker.smsc.errors` in :meth:`SmscClient._exchange`
only, and are raised *outside* the ``except`` block that caught them: an httpx exception holds the
request, whose body holds the password, so it is kept neither as ``__cause__`` nor as ``__context__``.
Only its type name and the path go into the error.

**Answers** are decoded as UTF-8, the charset every request asks for (``charset=utf-8``), whatever the
``Content-Type`` header says; an answer that is not UTF-8 falls back to the header's charset.

The client is thread-safe (one pool shared by the threads of a worker process: size it to the
login's slots with ``max_connections``). Log: one line per request on the ``worker.smsc.client``
logger: path, request id, number of phones (the first few masked to their last 4 digits), outcome and
elapsed milliseconds.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Final, NamedTuple, TypeVar

import httpx
from pydantic import SecretStr

from worker.smsc.deadline import deadline
from worker.smsc.errors import (
    SmscConnectError,
    SmscError,
    SmscTransportError,
    SmscUnknownOutcome,
    classify,
)
from worker.smsc.phones import mask_phone
from worker.smsc.reports import CostReport, SendReport, StatusReport
from worker.smsc.requests import (
    AnyLine,
    SendOptions,
    balance_params,
    cost_params,
    form_body,
    send_params,
    status_params,
)
from worker.smsc.responses import parse_balance, parse_send, parse_status
from worker.smsc.wire import WireTransport, transport_for

__all__ = ["Prepared", "SmscClient"]

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}

log = logging.getLogger(__name__)

T = TypeVar("T")

SEND_PATH: Final = "/sys/send.php"
STATUS_PATH: Final = "/sys/status.php"
BALANCE_PATH: Final = "/sys/balance.php"

# httpx failures after which the request certainly never reached the provider: safe to resend.
_NEVER_LEFT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
# Connecting is fast or broken: give up on it within 5 s (a connect failure is safe to retry).
_CONNECT_S: Final = 5.0
# An answer longer than this is not the provider's (a status answer of 200 messages is ~250 KB).
_MAX_ANSWER_BYTES: Final = 32 * 1024 * 1024
# Phones shown (masked) in a log line; the count is always logged.
_LOGGED_PHONES: Final = 3
_USER_AGENT: Final = "smsc-mailer/0.1"
_REDIRECT_CODES: Final = frozenset({301, 302, 303, 307, 308})


class _Answer(NamedTuple):
    status: int
    retry_after: str | None
    redirect: bool
    text: str


def _decode(body: bytes, content_type: str | None) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    charset = re.search(r"charset=\"?([\w.:-]+)", content_type or "", re.IGNORECASE)
    if charset is not None:
        try:
            return body.decode(codecs.lookup(charset[1]).name, errors="replace")
        except LookupError:
            pass
    return body.decode("utf-8", errors="replace")


class Prepared:
    """A request's form body, credentials included (:meth:`SmscClient.prepare`): held in memory only, never
    shown (its ``repr`` says what it is, not what it holds)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Prepared request body, {len(self.data)} bytes>"


class SmscClient:
    """A client of one provider account (login + password, or an API key)."""

    def __init__(
        self,
        *,
        base_url: str,
        login: str | None = None,
        password: SecretStr | None = None,
        apikey: SecretStr | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 16,
    ) -> None:
        if not re.match(r"^https?://[^\s/@]+(/|$)", base_url):
            raise ValueError("base_url must be an http(s) URL without credentials, such as https://smsc.ru")
        if apikey is not None and apikey.get_secret_value():
            self._auth = {"apikey": apikey.get_secret_value()}
        elif login and password is not None and password.get_secret_value():
            self._auth = {"login": login, "psw": password.get_secret_value()}
        else:
            raise ValueError("SmscClient needs login + password, or an API key")
        if timeout_s <= 0 or max_connections < 1:
            raise ValueError("timeout_s must be > 0 and max_connections >= 1")
        self.timeout_s = timeout_s
        self._urls: dict[str, httpx.URL] = {}
        base = base_url.rstrip("/")
        self._transport = transport or transport_for(base, max_connections=max_connections)
        self._wire = self._transport if isinstance(self._transport, WireTransport) else None
        self._http = httpx.Client(
            base_url=base,
            transport=self._transport,
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,  # a redirected POST would be re-sent as a GET without its body
            trust_env=False,  # no ~/.netrc credentials; proxies from the environment: DeadlineTransport
        )

    @functools.cached_property
    def _headers(self) -> httpx.Headers:
        """The client's headers (User-Agent, Accept…) and the form's Content-Type: every POST's."""
        return httpx.Headers({**self._http.headers, **_FORM})

    @functools.cached_property
    def _wire_headers(self) -> list[tuple[str, str]]:
        """:attr:`_headers` as the lean transport writes them (it adds Host and Content-Length itself)."""
        return [(k, v) for k, v in self._headers.items() if k.lower() not in ("host", "content-length")]

    def _url(self, path: str) -> httpx.URL:
        """The absolute URL of an API path (the client's merging, once a path)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._http.build_request("POST", path).url
        return url

    def __repr__(self) -> str:
        return f"SmscClient(base_url={str(self._http.base_url)!r}, auth={'/'.join(self._auth)})"

    @functools.cached_property
    def credentials_fingerprint(self) -> str:
        """A stable name of these credentials at this base URL that reveals nothing of them (64 hex).

        scrypt (16 MiB, ~50 ms, once per client) of the credentials, salted with the base URL: equal for
        every process with the same settings, so "these credentials were accepted" can be shared through
        Redis without storing the secret or a hash that a weak password could be guessed back from.
        """
        secret = "\x00".join(f"{name}={value}" for name, value in sorted(self._auth.items()))
        salt = f"smsc-mailer credentials {self._http.base_url}".encode()
        return hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32).hex()

    # -- the API ------------------------------------------------------------------------------------

    def prepare(self, params: Mapping[str, str]) -> Prepared:
        """The form body of a request of ``params`` (:func:`~worker.smsc.requests.send_params`), encoded
        now, with the credentials: :meth:`send` (``prepared=``) then has nothing to encode — a caller
        encodes a 500-text body before it waits for a login slot, not while it holds one."""
        return Prepared(form_body({**params, **self._auth}))

    def send(self, *, lines: Sequence[AnyLine], request_id: str, sender: str | None = None,
             on_answer: Callable[[], None] | None = None, options: SendOptions | None = None,
             params: Mapping[str, str] | None = None, prepared: Prepared | None = None) -> SendReport:
        """Send ``lines`` (``(phones, text)`` pairs, or ``(phones, text, sender)``) as one request with the
        deterministic ``request_id``; ``options``: the provider's options of the campaign.

        Returns the provider's report (id, SMS count, cost, balance, each number's outcome) or raises
        an ``SmscError`` subclass that says what to do with the batch. ``on_answer`` is called as soon
        as the exchange is over (answer read, or the request failed), before the answer is parsed: the
        caller's slot of requests in flight can go to the next request meanwhile. ``params``: what
        ``send_params`` gave for these same arguments (a caller that already built them, for their
        fingerprint, spares building and checking 500 texts twice); ``prepared``: :meth:`prepare` of
        those params.
        """
        if params is None:
            params = send_params(lines=lines, request_id=request_id, sender=sender, options=options)
        phones = [p for line in lines for p in line[0]]
        return self._request(
            SEND_PATH,
            params,
            lambda body: parse_send(body, fmt=3, cost=3),
            request_id=request_id,
            phones=phones,
            on_answer=on_answer,
            prepared=prepared,
        )

    def cost(self, *, lines: Sequence[AnyLine], sender: str | None = None,
             options: SendOptions | None = None) -> CostReport:
        """Ask what sending ``lines`` would cost (nothing is sent)."""
        params = cost_params(lines=lines, sender=sender, options=options)
        phones = [p for line in lines for p in line[0]]
        return self._request(
            SEND_PATH, params, lambda body: parse_send(body, fmt=3, cost=1), request_id="-", phones=phones
        )

    def status(self, pairs: Sequence[tuple[str, str]]) -> list[StatusReport]:
        """The status of each ``(phone, id)``, in one request: one report per pair, in their order.

        Each phone is asked as the provider stores it (``89001234567`` as ``79001234567``) and each
        report carries the phone and id as given here, with the cost when the provider reports it.
        """
        if not pairs:
            return []
        return self._request(
            STATUS_PATH,
            status_params(pairs),
            lambda body: parse_status(body, fmt=3, pairs=pairs),
            request_id=pairs[0][1],
            phones=[phone for phone, _ in pairs],
        )

    def balance(self) -> Decimal:
        """The account's balance."""
        return self._request(
            BALANCE_PATH, balance_params(), lambda body: parse_balance(body, fmt=3), request_id="-", phones=[]
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SmscClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------

    def _request(
        self,
        path: str,
        params: Mapping[str, str],
        parse: Callable[[str], T],
        *,
        request_id: str,
        phones: Sequence[str],
        on_answer: Callable[[], None] | None = None,
        prepared: Prepared | None = None,
    ) -> T:
        """POST ``params`` + credentials (or their ``prepared`` body) to ``path`` within the deadline, read
        the answer, log one line."""
        started = time.monotonic()
        outcome = "?"
        try:
            try:
                answer = self._exchange(path, params, started + self.timeout_s, prepared)
            finally:
                if on_answer is not None:
                    on_answer()
            if isinstance(answer, SmscTransportError):
                raise answer  # outside the except that caught the httpx error: no __context__
            outcome = str(answer.status)
            if answer.status != 200:
                reason = f"HTTP {answer.status}"
                if answer.redirect:
                    reason += " (redirect: check the base URL)"
                raise classify(None, reason, http_status=answer.status, retry_after=answer.retry_after)
            try:
                return parse(answer.text)
            except SmscError as exc:
                self._scrub(exc)
                raise
        except SmscError as exc:
            code = f" error {exc.code}" if exc.code is not None else ""
            detail = f" ({exc.reason})" if isinstance(exc, SmscTransportError) else ""
            outcome = f"{outcome if outcome != '?' else ''} {type(exc).__name__}{code}{detail}".strip()
            raise
        finally:
            shown = ",".join(mask_phone(p) for p in phones[:_LOGGED_PHONES])
            more = ",…" if len(phones) > _LOGGED_PHONES else ""
            # A request that was answered is DEBUG: the batch's own line (worker.sending) says what it did.
            log.log(
                logging.DEBUG if outcome == "200" else logging.WARNING,
                "POST %s id=%s phones=%d [%s%s] -> %s in %.1f ms",
                path,
                request_id,
                len(phones),
                shown,
                more,
                outcome,
                (time.monotonic() - started) * 1000,
            )

    def _exchange(self, path: str, params: Mapping[str, str], deadline_at: float,
                  prepared: Prepared | None = None) -> _Answer | SmscTransportError:
        """One POST, answer read whole by ``deadline_at``; a failure is *returned*, built from a safe text.

        The credentials live only in this frame, which is gone by the time the caller raises.
        """
        body = prepared.data if prepared is not None else form_body({**params, **self._auth})
        if self._wire is not None:
            return self._exchange_wire(self._wire, path, body, deadline_at)
        try:
            with deadline(deadline_at):
                left = deadline_at - time.monotonic()
                # Built here, not by the client's build_request: its URL merging and header merging
                # cost more than the request's own encoding; the URL and headers are the same each time.
                request = httpx.Request(
                    "POST", self._url(path), content=body, headers=self._headers,
                    extensions={"timeout": httpx.Timeout(left, connect=min(_CONNECT_S, left)).as_dict()},
                )
                # Straight to the transport: the client's layers around it (cookies, redirects, auth, its
                # INFO line) are nothing this API uses, and cost a batch more CPU than the request itself.
                response = self._transport.handle_request(request)
                try:
                    answer = bytearray()
                    for chunk in response.iter_bytes():
                        answer += chunk
                        # A socket is bounded by the deadline itself; this bounds in-process transports.
                        if time.monotonic() > deadline_at:
                            return self._late(path)
                        if len(answer) > _MAX_ANSWER_BYTES:
                            return SmscUnknownOutcome(f"{path}: answer longer than {_MAX_ANSWER_BYTES} bytes")
                finally:
                    response.close()
            if time.monotonic() > deadline_at:  # an in-process transport that answered late
                return self._late(path)
            return _Answer(
                response.status_code,
                response.headers.get("retry-after"),
                response.is_redirect,
                _decode(bytes(answer), response.headers.get("content-type")),
            )
        except httpx.HTTPError as exc:
            return self._failed(path, exc, deadline_at)

    def _exchange_wire(self, wire: WireTransport, path: str, body: bytes,
                       deadline_at: float) -> _Answer | SmscTransportError:
        """:meth:`_exchange` on the lean transport (no httpx request or response built); the same
        errors, classified the same way."""
        try:
            with deadline(deadline_at):
                left = deadline_at - time.monotonic()
                status, headers, answer = wire.post(self._url(path).raw_path.decode("ascii"), body,
                                                    self._wire_headers, connect_timeout=min(_CONNECT_S, left),
                                                    timeout=left)
            if time.monotonic() > deadline_at:
                return self._late(path)
            return _Answer(status, headers.get("retry-after"), status in _REDIRECT_CODES and "location" in headers,
                           _decode(answer, headers.get("content-type")))
        except httpx.HTTPError as exc:
            return self._failed(path, exc, deadline_at)

    def _failed(self, path: str, exc: httpx.HTTPError, deadline_at: float) -> SmscTransportError:
        """What a transport's failure means: the request never left (safe to resend), or — read/write
        timeouts, resets, cut or undecodable answers, and anything else we cannot place — the provider
        may have taken it. Built from a safe text (the exception's class, never its message)."""
        if isinstance(exc, _NEVER_LEFT):
            return SmscConnectError(f"{path}: {type(exc).__name__}: the request was not sent")
        if time.monotonic() >= deadline_at:
            return self._late(path, type(exc).__name__)
        return SmscUnknownOutcome(f"{path}: {type(exc).__name__}: no complete answer")

    def _late(self, path: str, what: str = "deadline") -> SmscUnknownOutcome:
        return SmscUnknownOutcome(f"{path}: {what}: no complete answer within {self.timeout_s:g} s")

    def _scrub(self, exc: SmscError) -> None:
        """Blank a credential quoted in an error's reason (a provider or proxy echoing the request)."""
        for secret in self._auth.values():
            if secret and secret in exc.reason:
                exc.reason = exc.reason.replace(secret, "***")
                exc.args = (exc.reason,)
