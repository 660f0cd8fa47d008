"""SmscClient: POST-only requests, credentials only in the body, a hard deadline, faults classified,
no secret anywhere (not in the error, not in its chain)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote

import httpx
import pytest
from pydantic import SecretStr

from worker.smsc import client as client_module
from worker.smsc.client import SmscClient
from worker.smsc.errors import (
    SmscAccountBlocked,
    SmscAuthError,
    SmscBatchRejected,
    SmscConnectError,
    SmscError,
    SmscHttpError,
    SmscInsufficientFunds,
    SmscTooManyRequests,
    SmscUnknownOutcome,
)
from worker.smsc.reports import CostReport, PhoneReport, SendReport, StatusReport
from worker.smsc.requests import send_params

PASSWORD = "s3cr3t-Pa55word!"
APIKEY = "k3y-abcdef0123456789"
LINES = [(["79990000001", "79990000002"], "Hello\nworld")]
OK_SEND = json.dumps(
    {
        "id": "b-1",
        "cnt": 2,
        "cost": "3.00",
        "balance": "97.00",
        "phones": [
            {"phone": "79990000001", "mccmnc": "25001", "cost": "1.50", "status": "0", "error": "0"},
            {"phone": "79990000002", "mccmnc": "25001", "cost": "1.50", "status": "0", "error": "0"},
        ],
    }
)

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, *, apikey: bool = False) -> SmscClient:
    creds: dict[str, object] = (
        {"apikey": SecretStr(APIKEY)} if apikey else {"login": "acme", "password": SecretStr(PASSWORD)}
    )
    return SmscClient(
        base_url="https://smsc.example",
        transport=httpx.MockTransport(handler),
        **creds,  # type: ignore[arg-type]
    )


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode(), keep_blank_values=True).items()}


SECRETS = (PASSWORD, quote(PASSWORD, safe=""), APIKEY)


def secret_free(exc: BaseException) -> bool:
    """No secret in the error's text, its traceback, or anything its chain holds (an httpx request)."""
    text = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        chain.append(link)
        text += repr(vars(link)) + repr(link.args)
        request = getattr(link, "_request", None)  # httpx keeps the request of an HTTPError here
        if request is not None:
            text += request.content.decode(errors="replace")
        link = link.__cause__ or link.__context__
    return not any(secret in text for secret in SECRETS)


class Recorder:
    """A MockTransport handler that answers ``body`` and keeps every request."""

    def __init__(self, body: str = OK_SEND, status: int = 200) -> None:
        self.body, self.status = body, status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, text=self.body)


def test_client_public_surface_is_pinned() -> None:
    assert client_module.__all__ == ["Prepared", "SmscClient"]


# -- requests ------------------------------------------------------------------------------------------


def test_send_posts_a_form_with_credentials_only_in_the_body() -> None:
    rec = Recorder()
    with make_client(rec) as client:
        report = client.send(lines=LINES, request_id="b-1", sender="ACME")
    (request,) = rec.requests
    assert request.method == "POST"
    assert str(request.url) == "https://smsc.example/sys/send.php"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert PASSWORD not in str(request.url) and "psw" not in str(request.url)
    assert form(request) == {
        "phones": "79990000001,79990000002",
        "mes": "Hello\nworld",
        "id": "b-1",
        "fmt": "3",
        "charset": "utf-8",
        "cost": "3",
        "op": "1",
        "sender": "ACME",
        "login": "acme",
        "psw": PASSWORD,
    }
    assert report == SendReport(
        id="b-1",
        cnt=2,
        cost=Decimal("3.00"),
        balance=Decimal("97.00"),
        phones=(
            PhoneReport("79990000001", "25001", Decimal("1.50"), 0, 0),
            PhoneReport("79990000002", "25001", Decimal("1.50"), 0, 0),
        ),
    )


def test_a_prepared_body_is_the_same_request_and_never_shows_the_password() -> None:
    rec = Recorder()
    with make_client(rec) as client:
        params = send_params(lines=LINES, request_id="b-1", sender="ACME")
        prepared = client.prepare(params)
        assert PASSWORD not in repr(prepared) and "psw" not in repr(prepared)
        client.send(lines=LINES, request_id="b-1", sender="ACME", params=params, prepared=prepared)
        client.send(lines=LINES, request_id="b-1", sender="ACME")
    first, second = rec.requests
    assert first.content == second.content and form(first)["psw"] == PASSWORD


def test_apikey_replaces_login_and_password() -> None:
    rec = Recorder(body='{"balance": "10.50"}')
    with make_client(rec, apikey=True) as client:
        assert client.balance() == Decimal("10.50")
    (request,) = rec.requests
    assert (request.method, request.url.path) == ("POST", "/sys/balance.php")
    body = form(request)
    assert body["apikey"] == APIKEY
    assert "login" not in body and "psw" not in body
    assert APIKEY not in str(request.url)


def test_cost_asks_without_sending() -> None:
    rec = Recorder(body='{"cost": "3.00", "cnt": 2}')
    with make_client(rec) as client:
        assert client.cost(lines=LINES) == CostReport(cost=Decimal("3.00"), cnt=2)
    body = form(rec.requests[0])
    assert body["cost"] == "1" and "id" not in body


def test_status_asks_for_all_pairs_in_one_post_by_the_providers_spelling() -> None:
    rec = Recorder(
        body=json.dumps(
            [
                {"phone": "79990000001", "id": "b-1", "status": 1, "last_timestamp": 10, "err": 0,
                 "cost": "1.50", "sms_cnt": 1},
                {"phone": "79990000002", "id": "b-1", "status": -3, "last_timestamp": 0, "err": 0},
                {"phone": "79990000003", "id": "b-1", "status": 22, "last_timestamp": 11, "err": 1, "cost": "0"},
            ]
        )
    )
    pairs = [("89990000001", "b-1"), ("+79990000002", "b-1"), ("9990000003", "b-1")]
    with make_client(rec) as client:
        reports = client.status(pairs)
        assert client.status([]) == []  # nothing to ask: no request
    (request,) = rec.requests
    assert (request.method, request.url.path) == ("POST", "/sys/status.php")
    assert {k: form(request)[k] for k in ("phone", "id", "fmt", "all", "charset")} == {
        "phone": "79990000001,+79990000002,79990000003",  # as the provider stores 8999... and 999...
        "id": "b-1,b-1,b-1",
        "fmt": "3",
        "all": "1",  # the full record: it carries the cost
        "charset": "utf-8",
    }
    # One report per pair, in order, under our spelling, with what the runtime records.
    assert [(r.phone, r.outcome, r.cost, r.parts) for r in reports] == [
        ("89990000001", "sent", Decimal("1.50"), 1),
        ("+79990000002", "not-found", None, None),
        ("9990000003", "failed", Decimal("0"), None),
    ]
    assert reports[2].reason == "invalid number (subscriber does not exist)"


def test_status_of_one_message_is_tied_to_its_phone_and_id() -> None:
    rec = Recorder(body='{"status": 1, "last_date": "01.01.2025 10:00:00", "last_timestamp": 7, "err": 0}')
    with make_client(rec) as client:
        assert client.status([("79990000001", "b-1")]) == [StatusReport("79990000001", "b-1", 1, 0, 7)]


def test_bad_input_is_refused_before_any_request() -> None:
    rec = Recorder()
    with make_client(rec) as client, pytest.raises(ValueError):
        client.send(lines=[(["79990000001"], "x" * 1001)], request_id="b-1")
    assert rec.requests == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"login": "acme"},
        {"password": SecretStr(PASSWORD)},
        {"login": "acme", "password": SecretStr("")},
        {"apikey": SecretStr("")},
    ],
)
def test_client_needs_credentials(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="login \\+ password, or an API key") as info:
        SmscClient(base_url="https://smsc.example", **kwargs)  # type: ignore[arg-type]
    assert secret_free(info.value)


@pytest.mark.parametrize("url", ["smsc.ru", "ftp://smsc.ru", "https://acme:pw@smsc.ru", ""])
def test_client_refuses_a_base_url_that_is_not_plain_http(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        SmscClient(base_url=url, login="acme", password=SecretStr(PASSWORD))


def test_client_repr_has_no_secret() -> None:
    with make_client(Recorder()) as client:
        assert PASSWORD not in repr(client) and "acme" not in repr(client)


# -- faults ------------------------------------------------------------------------------------------


def raising(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return handler


@pytest.mark.parametrize(
    ("exc_type", "expected"),
    [
        (httpx.ConnectError, SmscConnectError),
        (httpx.ConnectTimeout, SmscConnectError),
        (httpx.PoolTimeout, SmscConnectError),
        (httpx.ReadTimeout, SmscUnknownOutcome),
        (httpx.ReadError, SmscUnknownOutcome),
        (httpx.WriteTimeout, SmscUnknownOutcome),
        (httpx.WriteError, SmscUnknownOutcome),
        (httpx.RemoteProtocolError, SmscUnknownOutcome),
    ],
)
def test_transport_faults_say_whether_the_request_may_have_been_taken(
    exc_type: type[httpx.TransportError], expected: type[SmscError]
) -> None:
    with make_client(raising(exc_type)) as client, pytest.raises(SmscError) as info:
        client.send(lines=LINES, request_id="b-1")
    err = info.value
    assert type(err) is expected
    assert err.code is None
    assert exc_type.__name__ in str(err) and "/sys/send.php" in str(err)
    # The one translation boundary keeps only a description: the httpx error (which holds the request,
    # whose body holds the password) is neither the cause nor the context.
    assert err.__cause__ is None and err.__context__ is None
    assert secret_free(err)


@pytest.mark.parametrize(
    ("status", "retry_after_s"),
    [(500, 5.0), (502, 5.0), (503, 5.0), (408, 5.0), (403, 60.0), (404, 60.0), (429, 60.0)],
)
def test_every_non_200_answer_is_an_http_error_not_a_verdict(status: int, retry_after_s: float) -> None:
    # A proxy's 403/404/408/429 says nothing about the messages: the batch must not fail for good.
    with (
        make_client(Recorder(body=f"<html>oops {PASSWORD}</html>", status=status)) as client,
        pytest.raises(SmscError) as info,
    ):
        client.send(lines=LINES, request_id="b-1")
    err = info.value
    assert type(err) is SmscHttpError
    assert (err.http_status, err.code, err.reason, err.retry_after_s) == (
        status, None, f"HTTP {status}", retry_after_s
    )
    assert secret_free(err)


def test_a_retry_after_header_sets_the_wait() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "120"})

    with make_client(handler) as client, pytest.raises(SmscHttpError) as info:
        client.balance()
    assert (info.value.http_status, info.value.retry_after_s) == (429, 120.0)


def test_a_redirect_is_not_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "elsewhere.example":
            pytest.fail("a POST with the password was redirected")
        return httpx.Response(302, headers={"Location": "https://elsewhere.example/sys/send.php"})

    with make_client(handler) as client, pytest.raises(SmscHttpError, match="HTTP 302 \\(redirect") as info:
        client.send(lines=LINES, request_id="b-1")
    assert info.value.http_status == 302


@pytest.mark.parametrize(
    ("body", "expected", "retry_after_s"),
    [
        ('{"error": "duplicate request, wait a minute", "error_code": 9}', SmscTooManyRequests, 60.0),
        ('{"error": "IP blocked", "error_code": 4}', SmscAccountBlocked, 60.0),
        ('{"error": "authorise error", "error_code": 2}', SmscAuthError, None),
        ('{"error": "no money", "error_code": 3, "id": "b-1"}', SmscInsufficientFunds, None),
        ('{"error": "parameters error", "error_code": 1}', SmscBatchRejected, None),
    ],
)
def test_provider_errors_are_classified(
    body: str, expected: type[SmscError], retry_after_s: float | None
) -> None:
    with make_client(Recorder(body=body)) as client, pytest.raises(SmscError) as info:
        client.send(lines=LINES, request_id="b-1")
    assert type(info.value) is expected
    assert info.value.retry_after_s == retry_after_s
    assert info.value.__context__ is None
    assert secret_free(info.value)


def test_an_unreadable_200_answer_is_an_unknown_outcome() -> None:
    with make_client(Recorder(body=f"<html>maintenance {PASSWORD}</html>")) as client:
        with pytest.raises(SmscUnknownOutcome) as info:
            client.send(lines=LINES, request_id="b-1")
    assert secret_free(info.value)


def test_a_provider_echoing_the_password_is_scrubbed() -> None:
    body = json.dumps({"error": f"bad psw={PASSWORD} for acme", "error_code": 2})
    with make_client(Recorder(body=body)) as client, pytest.raises(SmscAuthError) as info:
        client.send(lines=LINES, request_id="b-1")
    assert secret_free(info.value)
    assert PASSWORD not in str(info.value.args)


def test_an_answer_is_decoded_as_the_utf8_the_request_asked_for_whatever_the_header() -> None:
    # A recorded provider answer says windows-1251 in its header; the body is what was asked: UTF-8.
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.dumps({"error": "ошибка авторизации", "error_code": 2}, ensure_ascii=False).encode()
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json; charset=windows-1251"})

    with make_client(handler) as client, pytest.raises(SmscAuthError) as info:
        client.balance()
    assert info.value.reason == "ошибка авторизации"


def test_an_answer_that_is_not_utf8_falls_back_to_the_headers_charset() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = '{"error": "ошибка авторизации", "error_code": 2}'.encode("cp1251")
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json; charset=windows-1251"})

    with make_client(handler) as client, pytest.raises(SmscAuthError) as info:
        client.balance()
    assert info.value.reason == "ошибка авторизации"


def test_on_answer_is_called_once_whether_the_request_succeeds_or_fails() -> None:
    calls: list[str] = []
    with make_client(Recorder()) as client:
        client.send(lines=LINES, request_id="b-1", on_answer=lambda: calls.append("ok"))
    with make_client(raising(httpx.ReadError)) as client, pytest.raises(SmscUnknownOutcome):
        client.send(lines=LINES, request_id="b-1", on_answer=lambda: calls.append("failed"))
    assert calls == ["ok", "failed"]


def test_the_credentials_fingerprint_names_them_without_revealing_them() -> None:
    def fp(**kwargs: object) -> str:
        creds = {"base_url": "https://smsc.example", "login": "acme", "password": SecretStr(PASSWORD), **kwargs}
        with SmscClient(transport=httpx.MockTransport(Recorder()), **creds) as client:  # type: ignore[arg-type]
            return client.credentials_fingerprint

    same = fp()
    assert same == fp() and len(same) == 64 and int(same, 16) >= 0
    assert len({same, fp(password=SecretStr(PASSWORD + "x")), fp(login="acme2"),
                fp(base_url="http://127.0.0.1:9")}) == 4
    assert not any(secret in same for secret in SECRETS)


# -- logging -------------------------------------------------------------------------------------------


def test_one_log_line_per_request_with_masked_phones_and_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="worker.smsc.client")
    with make_client(Recorder()) as client:
        client.send(
            lines=[(["79990000001", "79990000002", "79990000003", "79990000004"], "Hi")], request_id="b-1"
        )
    with make_client(raising(httpx.ReadTimeout)) as client, pytest.raises(SmscUnknownOutcome):
        client.send(lines=LINES, request_id="b-2")
    ok, failed = (r.getMessage() for r in caplog.records)
    assert "/sys/send.php" in ok and "id=b-1" in ok and "phones=4" in ok and "-> 200" in ok and " ms" in ok
    assert "****0001" in ok
    assert caplog.records[0].levelno == logging.DEBUG  # answered: the batch's INFO line says what it did
    assert "ReadTimeout" in failed and caplog.records[1].levelno == logging.WARNING
    for text in (ok, failed):
        assert PASSWORD not in text and "acme" not in text
        assert "7999000000" not in text  # no full number


# -- real sockets: the real httpx exceptions are mapped, and connections are reused ----------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_nothing_listening_is_a_connect_error() -> None:
    port = free_port()  # closed again: connecting is refused
    with SmscClient(
        base_url=f"http://127.0.0.1:{port}", login="acme", password=SecretStr(PASSWORD)
    ) as client:
        with pytest.raises(SmscConnectError) as info:
            client.send(lines=LINES, request_id="b-1")
    assert secret_free(info.value)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections, reads the request, never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conns.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in conns:
        conn.close()
    server.close()


def test_no_answer_in_time_is_an_unknown_outcome(silent_server: int) -> None:
    with SmscClient(
        base_url=f"http://127.0.0.1:{silent_server}",
        login="acme",
        password=SecretStr(PASSWORD),
        timeout_s=0.3,
    ) as client:
        with pytest.raises(SmscUnknownOutcome, match="ReadTimeout") as info:
            client.send(lines=LINES, request_id="b-1")
    assert secret_free(info.value)


def test_requests_reuse_one_keep_alive_connection() -> None:
    peers: list[tuple[str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            peers.append(self.client_address)
            body = b'{"balance": "1.00"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with SmscClient(
            base_url=f"http://127.0.0.1:{port}", login="acme", password=SecretStr(PASSWORD)
        ) as client:
            assert [client.balance() for _ in range(3)] == [Decimal("1.00")] * 3
    finally:
        server.shutdown()
        server.server_close()
    assert len(peers) == 3 and len(set(peers)) == 1


# -- the hard deadline -------------------------------------------------------------------------------------


@contextlib.contextmanager
def raw_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that runs ``handle(conn)`` in a thread per connection; yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.05)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def run(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            handle(conn)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=run, args=(conn,), daemon=True)
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        acceptor.join()
        server.close()
        for t in threads:
            t.join(timeout=5)


def read_request(conn: socket.socket) -> bytes:
    """Read one request; its head. ``ConnectionError`` when the client closed the connection."""

    def more() -> bytes:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        return chunk

    data = b""
    while b"\r\n\r\n" not in data:
        data += more()
    head, _, body = data.partition(b"\r\n\r\n")
    fields = (line.partition(b": ") for line in head.split(b"\r\n")[1:])
    length = int(next(value for name, _, value in fields if name.lower() == b"content-length"))
    while len(body) < length:
        body += more()
    return head


def trickle(head_too: bool, pause_s: float, stop: threading.Event) -> Callable[[socket.socket], None]:
    """Answer a complete, valid send answer, one byte per ``pause_s`` (headers too if ``head_too``)."""
    body = b'{"id": "b-1", "cnt": 2, "cost": "3.00", "balance": "97.00"}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)

    def handle(conn: socket.socket) -> None:
        read_request(conn)
        if not head_too:
            conn.sendall(head)
        for byte in (head if head_too else b"") + body:
            if stop.wait(pause_s):
                return
            conn.sendall(bytes([byte]))

    return handle


def client_for(port: int, **kwargs: object) -> SmscClient:
    return SmscClient(base_url=f"http://127.0.0.1:{port}", login="acme", password=SecretStr(PASSWORD),
                      **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("head_too", [False, True], ids=["trickled-body", "trickled-headers"])
def test_an_answer_trickled_byte_by_byte_cannot_outlast_the_deadline(head_too: bool) -> None:
    # Each byte comes well within httpx's per-read timeout; the whole answer would take ~6 s.
    stop = threading.Event()
    with raw_server(trickle(head_too, 0.05, stop)) as port, client_for(port, timeout_s=1.0) as client:
        started = time.monotonic()
        with pytest.raises(SmscUnknownOutcome) as info:
            client.send(lines=LINES, request_id="b-1")
        elapsed = time.monotonic() - started
        stop.set()
    assert 0.9 <= elapsed < 1.5, elapsed
    assert "within 1 s" in str(info.value)
    assert info.value.__context__ is None and secret_free(info.value)


def test_a_slow_answer_that_completes_within_the_deadline_is_read() -> None:
    stop = threading.Event()
    with raw_server(trickle(False, 0.005, stop)) as port, client_for(port, timeout_s=5.0) as client:
        report = client.send(lines=LINES, request_id="b-1")
    assert (report.id, report.cnt) == ("b-1", 2)


def test_an_answer_that_never_comes_ends_at_the_deadline_not_at_a_read_timeout_later() -> None:
    # The request's write takes part of the budget; the wait for the answer gets only what is left.
    gone = threading.Event()

    def silent(conn: socket.socket) -> None:
        read_request(conn)
        gone.wait(5)

    with raw_server(silent) as port, client_for(port, timeout_s=0.5) as client:
        started = time.monotonic()
        with pytest.raises(SmscUnknownOutcome, match=r"within 0\.5 s"):
            client.balance()
        assert time.monotonic() - started < 0.9
        gone.set()


def test_an_in_process_transport_that_answers_late_is_an_unknown_outcome() -> None:
    # The simulator's transport cannot be interrupted; the answer it gives after the deadline is not used.
    def slow(request: httpx.Request) -> httpx.Response:
        time.sleep(0.3)
        return httpx.Response(200, text=OK_SEND)

    with SmscClient(base_url="https://smsc.example", login="acme", password=SecretStr(PASSWORD),
                    transport=httpx.MockTransport(slow), timeout_s=0.1) as client:
        with pytest.raises(SmscUnknownOutcome, match="deadline"):
            client.send(lines=LINES, request_id="b-1")


def test_the_pool_never_opens_more_connections_than_its_slots() -> None:
    lock = threading.Lock()
    open_now, peak, served = 0, 0, 0

    def handle(conn: socket.socket) -> None:
        nonlocal open_now, peak, served
        with lock:
            open_now += 1
            peak = max(peak, open_now)
        try:
            while True:
                read_request(conn)  # until the client closes the connection
                time.sleep(0.1)
                body = b'{"balance": "1.00"}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                with lock:
                    served += 1
        finally:
            with lock:
                open_now -= 1

    with raw_server(handle) as port, client_for(port, max_connections=2, timeout_s=5.0) as client:
        results: list[Decimal] = []
        threads = [threading.Thread(target=lambda: results.append(client.balance())) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [Decimal("1.00")] * 6 and served == 6
    assert peak == 2


def test_a_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    def proxy(conn: socket.socket) -> None:
        seen.append(read_request(conn).split(b"\r\n")[0])
        body = b'{"balance": "2.00"}'
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    with raw_server(proxy) as port:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with SmscClient(base_url="http://smsc.invalid", login="acme", password=SecretStr(PASSWORD)) as client:
            assert client.balance() == Decimal("2.00")
    assert seen == [b"POST http://smsc.invalid/sys/balance.php HTTP/1.1"]


def test_deadline_public_surface_is_pinned() -> None:
    from worker.smsc import deadline

    assert sorted(deadline.__all__) == ["DeadlineTransport", "deadline", "proxy_for", "time_left"]
    assert deadline.time_left() is None
    with deadline.deadline(time.monotonic() + 10):
        left = deadline.time_left()
        assert left is not None and 9 < left <= 10
    assert deadline.time_left() is None
