"""The lean transport (:mod:`worker.smsc.wire`) over real sockets: the answers a server may give (a length,
chunks, the close), a kept-alive connection the server closed meanwhile, a cut answer, TLS; what each
means to the client (sent, never left, or may have been taken). ``tests/unit/test_client.py`` holds the
rest (the deadline, the pool's cap, keep-alive, a proxy), which run on this transport too."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.unit.test_client import PASSWORD, client_for, raw_server, read_request
from worker.smsc.client import SmscClient
from worker.smsc.deadline import DeadlineTransport
from worker.smsc.errors import SmscConnectError, SmscUnknownOutcome
from worker.smsc.wire import WireTransport, transport_for

BALANCE = b'{"balance": "1.00"}'


def _answer(conn: socket.socket, extra: bytes = b"") -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(BALANCE), extra, BALANCE))


def test_a_chunked_answer_and_one_ended_by_the_close_are_read_whole() -> None:
    def chunked(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"bal\r\n"
                     b"e\r\nance\": \"1.00\"}\r\n0\r\n\r\n")

    def until_close(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + BALANCE)
        conn.shutdown(socket.SHUT_WR)

    for handle in (chunked, until_close):
        with raw_server(handle) as port, client_for(port) as client:
            assert client.balance() == Decimal("1.00")


def test_a_kept_alive_connection_the_server_closed_is_not_used_again() -> None:
    # The server answers (keep-alive) and then closes the idle connection, as servers do after a while:
    # the next request goes on a new connection and is answered, not an unknown outcome.
    connections = 0

    def close_after_one(conn: socket.socket) -> None:
        nonlocal connections
        connections += 1
        read_request(conn)
        _answer(conn)

    with raw_server(close_after_one) as port, client_for(port) as client:
        for _ in range(3):
            assert client.balance() == Decimal("1.00")
            # wait until the server's close has arrived
            for _ in range(100):
                idle = client._wire._idle if client._wire is not None else []
                if not idle or not _open(idle[-1].sock):
                    break
                threading.Event().wait(0.01)
    assert connections == 3


def _open(sock: socket.socket) -> bool:
    import select

    return not select.select([sock], [], [], 0)[0]


def test_an_answer_cut_halfway_may_have_been_taken_and_a_refused_connect_never_left() -> None:
    def cut(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"id\": ")

    with raw_server(cut) as port, client_for(port) as client, pytest.raises(SmscUnknownOutcome) as info:
        client.send(lines=[(["79001234567"], "hi")], request_id="b-1")
    assert "RemoteProtocolError" in str(info.value) and PASSWORD not in str(info.value)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with client_for(port) as client, pytest.raises(SmscConnectError):
        client.balance()


def test_what_is_not_http_is_a_protocol_error_not_a_verdict() -> None:
    def garbage(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    with raw_server(garbage) as port, client_for(port) as client, pytest.raises(SmscUnknownOutcome):
        client.send(lines=[(["79001234567"], "hi")], request_id="b-1")


def test_tls_with_a_certificate_the_client_trusts(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    served: list[bytes] = []

    def tls(conn: socket.socket) -> None:
        with server_ctx.wrap_socket(conn, server_side=True) as c:
            while True:
                served.append(read_request(c).split(b"\r\n")[0])
                _answer(c)

    with raw_server(tls) as port:
        trusting = ssl.create_default_context(cafile=str(cert))
        wire = WireTransport(base_url=f"https://localhost:{port}", max_connections=2, ssl_context=trusting)
        with SmscClient(base_url=f"https://localhost:{port}", login="acme", password=SecretStr(PASSWORD),
                        transport=wire) as client:
            assert [client.balance() for _ in range(2)] == [Decimal("1.00")] * 2
        # The default context (certifi's roots) does not trust a self-signed certificate: never left.
        with SmscClient(base_url=f"https://localhost:{port}", login="acme",
                        password=SecretStr(PASSWORD)) as client, pytest.raises(SmscConnectError):
            client.balance()
    assert served == [b"POST /sys/balance.php HTTP/1.1"] * 2


def test_behind_a_proxy_the_client_uses_httpx_own_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert isinstance(transport_for("https://smsc.ru", max_connections=2), WireTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert isinstance(transport_for("https://smsc.ru", max_connections=2), DeadlineTransport)


def test_the_httpx_interface_answers_as_the_fast_path() -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        _answer(conn, b"X-Thing: 1\r\n")

    with raw_server(handle) as port:
        wire = WireTransport(base_url=f"http://127.0.0.1:{port}", max_connections=1)
        response = wire.handle_request(httpx.Request("POST", f"http://127.0.0.1:{port}/x", content=b"a=1"))
        assert response.status_code == 200 and response.read() == BALANCE and response.headers["x-thing"] == "1"
        with pytest.raises(httpx.UnsupportedProtocol):
            wire.handle_request(httpx.Request("POST", "http://elsewhere.invalid/x", content=b""))
        wire.close()
