"""SmscClient: POST-only requests, credentials only in the body, faults classified, no secret anywhere."""

from __future__ import annotations

import json
import logging
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import SecretStr

from worker.smsc import client as client_module
from worker.smsc.client import SmscClient
from worker.smsc.errors import (
    SmscAccountBackoff,
    SmscAuthError,
    SmscBatchRejected,
    SmscConnectError,
    SmscError,
    SmscInsufficientFunds,
    SmscRetryable,
    SmscUnknownOutcome,
)
from worker.smsc.protocol import CostReport, PhoneReport, SendReport, StatusReport

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


def secret_free(exc: BaseException) -> bool:
    text = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
    return PASSWORD not in text and APIKEY not in text


class Recorder:
    """A MockTransport handler that answers ``body`` and keeps every request."""

    def __init__(self, body: str = OK_SEND, status: int = 200) -> None:
        self.body, self.status = body, status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, text=self.body)


def test_client_public_surface_is_pinned() -> None:
    assert client_module.__all__ == ["SmscClient"]


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
        "list": "79990000001,79990000002:Hello\\nworld",
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


def test_status_asks_for_all_pairs_in_one_post() -> None:
    rec = Recorder(
        body=json.dumps(
            [
                {"phone": "79990000001", "id": "b-1", "status": 1, "last_timestamp": 10, "err": 0},
                {"phone": "79990000002", "id": "b-1", "status": -3, "last_timestamp": 0, "err": 0},
            ]
        )
    )
    with make_client(rec) as client:
        reports = client.status([("79990000001", "b-1"), ("79990000002", "b-1")])
        assert client.status([]) == []  # nothing to ask: no request
    (request,) = rec.requests
    assert (request.method, request.url.path) == ("POST", "/sys/status.php")
    assert {k: form(request)[k] for k in ("phone", "id", "fmt")} == {
        "phone": "79990000001,79990000002",
        "id": "b-1,b-1",
        "fmt": "3",
    }
    assert [r.taken for r in reports] == [True, False]


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
    assert isinstance(err.__cause__, exc_type)  # the one translation boundary keeps the cause
    assert secret_free(err)


@pytest.mark.parametrize(
    ("status", "expected", "retry_after_s"),
    [(500, SmscRetryable, 5.0), (502, SmscRetryable, 5.0), (403, SmscBatchRejected, None)],
)
def test_http_errors(status: int, expected: type[SmscError], retry_after_s: float | None) -> None:
    with (
        make_client(Recorder(body="<html>oops</html>", status=status)) as client,
        pytest.raises(SmscError) as info,
    ):
        client.send(lines=LINES, request_id="b-1")
    err = info.value
    assert type(err) is expected
    assert (err.code, err.reason, err.retry_after_s) == (None, f"HTTP {status}", retry_after_s)
    assert secret_free(err)


def test_a_redirect_is_not_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "elsewhere.example":
            pytest.fail("a POST with the password was redirected")
        return httpx.Response(302, headers={"Location": "https://elsewhere.example/sys/send.php"})

    with make_client(handler) as client, pytest.raises(SmscBatchRejected, match="HTTP 302"):
        client.send(lines=LINES, request_id="b-1")


@pytest.mark.parametrize(
    ("body", "expected", "retry_after_s"),
    [
        ('{"error": "duplicate request, wait a minute", "error_code": 9}', SmscRetryable, 60.0),
        ('{"error": "IP blocked", "error_code": 4}', SmscAccountBackoff, 60.0),
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
    assert secret_free(info.value)


def test_an_unreadable_200_answer_is_an_unknown_outcome() -> None:
    with make_client(Recorder(body="<html>maintenance</html>")) as client, pytest.raises(SmscUnknownOutcome):
        client.send(lines=LINES, request_id="b-1")


def test_a_provider_echoing_the_password_is_scrubbed() -> None:
    body = json.dumps({"error": f"bad psw={PASSWORD} for acme", "error_code": 2})
    with make_client(Recorder(body=body)) as client, pytest.raises(SmscAuthError) as info:
        client.send(lines=LINES, request_id="b-1")
    assert secret_free(info.value)
    assert PASSWORD not in str(info.value.args)


# -- logging -------------------------------------------------------------------------------------------


def test_one_log_line_per_request_with_masked_phones_and_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker.smsc.client")
    with make_client(Recorder()) as client:
        client.send(
            lines=[(["79990000001", "79990000002", "79990000003", "79990000004"], "Hi")], request_id="b-1"
        )
    with make_client(raising(httpx.ReadTimeout)) as client, pytest.raises(SmscUnknownOutcome):
        client.send(lines=LINES, request_id="b-2")
    ok, failed = (r.getMessage() for r in caplog.records)
    assert "/sys/send.php" in ok and "id=b-1" in ok and "phones=4" in ok and "-> 200" in ok and " ms" in ok
    assert "****0001" in ok
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
