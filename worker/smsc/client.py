"""The HTTP client of the provider: send, cost, status and balance over one keep-alive ``httpx.Client``.

Every request is a POST of ``application/x-www-form-urlencoded`` to ``{base_url}/sys/*.php`` with the
credentials in the form body only: never in a URL, a log line or an exception text. httpx exceptions
are translated to :mod:`worker.smsc.errors` at exactly one place (:func:`_translate`); answers are
read by :mod:`worker.smsc.protocol`. The client is thread-safe (one pool shared by the threads of a
worker process).

Log: one line per request on the ``worker.smsc.client`` logger: path, request id, number of phones
(the first few masked to their last 4 digits), outcome and elapsed milliseconds.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from types import TracebackType
from typing import Final, TypeVar

import httpx
from pydantic import SecretStr

from worker.smsc.errors import SmscConnectError, SmscError, SmscUnknownOutcome, classify
from worker.smsc.protocol import (
    CostReport,
    Line,
    SendReport,
    StatusReport,
    cost_params,
    mask_phone,
    parse_balance,
    parse_send,
    parse_status,
    send_params,
)

__all__ = ["SmscClient"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SEND_PATH: Final = "/sys/send.php"
STATUS_PATH: Final = "/sys/status.php"
BALANCE_PATH: Final = "/sys/balance.php"

# httpx failures after which the request certainly never reached the provider: safe to resend.
_NEVER_LEFT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
# Phones shown (masked) in a log line; the count is always logged.
_LOGGED_PHONES: Final = 3
_USER_AGENT: Final = "smsc-mailer/0.1"


@contextmanager
def _translate(path: str) -> Iterator[None]:
    """The one boundary where httpx exceptions become ``SmscError``s.

    The message names only the path and the exception type: an httpx exception holds the request,
    whose body holds the password, so nothing of it is formatted here. (Its own ``str()`` is the
    transport's message, e.g. "timed out", never the body, so keeping it as ``__cause__`` is safe.)
    """
    try:
        yield
    except _NEVER_LEFT as exc:
        raise SmscConnectError(f"{path}: {type(exc).__name__}: the request was not sent") from exc
    except httpx.HTTPError as exc:
        # Read/write timeouts, resets, cut or undecodable answers, and anything else we cannot place:
        # the provider may have taken the request.
        raise SmscUnknownOutcome(f"{path}: {type(exc).__name__}: no complete answer") from exc


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
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            transport=transport,
            # Connecting is fast or broken: give up on it within 5 s (a connect failure is safe to
            # retry); waiting for the answer gets the full timeout (a read failure is not).
            timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,  # a redirected POST would be re-sent as a GET without its body
        )

    def __repr__(self) -> str:
        return f"SmscClient(base_url={str(self._http.base_url)!r}, auth={'/'.join(self._auth)})"

    # -- the API ------------------------------------------------------------------------------------

    def send(self, *, lines: Sequence[Line], request_id: str, sender: str | None = None,
             on_answer: Callable[[], None] | None = None) -> SendReport:
        """Send ``lines`` (``(phones, text)`` pairs) as one request with the deterministic ``request_id``.

        Returns the provider's report (id, SMS count, cost, balance, each number's outcome) or raises
        an ``SmscError`` subclass that says what to do with the batch. ``on_answer`` is called as soon
        as the exchange is over (answer read, or the request failed), before the answer is parsed: the
        caller's slot of requests in flight can go to the next request meanwhile.
        """
        params = send_params(lines=lines, request_id=request_id, sender=sender)
        phones = [p for phone_list, _ in lines for p in phone_list]
        return self._request(
            SEND_PATH,
            params,
            lambda body: parse_send(body, fmt=3, cost=3),
            request_id=request_id,
            phones=phones,
            on_answer=on_answer,
        )

    def cost(self, *, lines: Sequence[Line], sender: str | None = None) -> CostReport:
        """Ask what sending ``lines`` would cost (nothing is sent)."""
        params = cost_params(lines=lines, sender=sender)
        phones = [p for phone_list, _ in lines for p in phone_list]
        return self._request(
            SEND_PATH, params, lambda body: parse_send(body, fmt=3, cost=1), request_id="-", phones=phones
        )

    def status(self, pairs: Sequence[tuple[str, str]]) -> list[StatusReport]:
        """The delivery status of each ``(phone, id)``, in one request; ``status`` -3 means never taken."""
        if not pairs:
            return []
        params = {
            "phone": ",".join(phone for phone, _ in pairs),
            "id": ",".join(mid for _, mid in pairs),
            "fmt": "3",
            "charset": "utf-8",
        }
        return self._request(
            STATUS_PATH,
            params,
            lambda body: parse_status(body, fmt=3, pairs=pairs),
            request_id=pairs[0][1],
            phones=[phone for phone, _ in pairs],
        )

    def balance(self) -> Decimal:
        """The account's balance."""
        return self._request(
            BALANCE_PATH, {"fmt": "3"}, lambda body: parse_balance(body, fmt=3), request_id="-", phones=[]
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
        params: dict[str, str],
        parse: Callable[[str], T],
        *,
        request_id: str,
        phones: Sequence[str],
        on_answer: Callable[[], None] | None = None,
    ) -> T:
        """POST ``params`` + credentials to ``path``, read the answer with ``parse``, log one line."""
        started = time.perf_counter()
        outcome = "?"
        try:
            try:
                with _translate(path):
                    response = self._http.post(path, data={**params, **self._auth})
            finally:
                if on_answer is not None:
                    on_answer()
            outcome = str(response.status_code)
            if response.status_code != 200:
                reason = f"HTTP {response.status_code}"
                if response.is_redirect:
                    reason += " (redirect: check the base URL)"
                raise classify(None, reason, http_status=response.status_code)
            try:
                return parse(response.text)
            except SmscError as exc:
                self._scrub(exc)
                raise
        except SmscError as exc:
            cause = f" ({type(exc.__cause__).__name__})" if exc.__cause__ is not None else ""
            code = f" error {exc.code}" if exc.code is not None else ""
            outcome = f"{outcome if outcome != '?' else ''} {type(exc).__name__}{code}{cause}".strip()
            raise
        finally:
            shown = ",".join(mask_phone(p) for p in phones[:_LOGGED_PHONES])
            more = ",…" if len(phones) > _LOGGED_PHONES else ""
            log.log(
                logging.INFO if outcome == "200" else logging.WARNING,
                "POST %s id=%s phones=%d [%s%s] -> %s in %.1f ms",
                path,
                request_id,
                len(phones),
                shown,
                more,
                outcome,
                (time.perf_counter() - started) * 1000,
            )

    def _scrub(self, exc: SmscError) -> None:
        """Blank a credential quoted in an error's reason (a provider or proxy echoing the request)."""
        for secret in self._auth.values():
            if secret and secret in exc.reason:
                exc.reason = exc.reason.replace(secret, "***")
                exc.args = (exc.reason,)
