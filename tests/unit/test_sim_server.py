"""The simulator over a real socket: keep-alive, control endpoints, faults, a client that leaves; its CLI."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

import worker.sim.server as sim_server
from tests.unit.sim_helpers import AUTH, PHONE, ROOT
from worker.sim import SimConfig, Simulator
from worker.sim.server import serve


@pytest.fixture
def server() -> Iterator[sim_server.SimServer]:
    with serve(Simulator(SimConfig(seed=3))) as srv:
        yield srv


def test_served_over_a_socket_with_keep_alive_and_control_endpoints(server: sim_server.SimServer) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as c:
        started = time.perf_counter()
        for n in range(40):  # without TCP_NODELAY each keep-alive exchange would stall ~40 ms
            r = c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": f"m{n}", "id": n + 1, "fmt": 3})
            assert r.json() == {"id": n + 1, "cnt": 1}
        assert time.perf_counter() - started < 1.0
        assert r.headers["content-type"].startswith("application/json")
        assert c.post("/_sim/config", json={"error_rates": {"9": 1.0}}).json()["error_rates"] == {"9": 1.0}
        assert c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "x", "fmt": "1"}).text == "0,-9"
        masked = c.post("/_sim/config", json={"error_rates": {}, "password": "other"}).json()
        assert "other" not in json.dumps(masked) and masked["error_rates"] == {}
        assert c.post("/_sim/config", json={"password": AUTH["psw"]}).status_code == 200
        assert c.post("/_sim/config", json={"reset_rate": 3}).status_code == 400
        summary = c.get("/_sim/summary").json()
        assert summary["messages"] == 40 and summary["errors_answered"] == {"9": 1}
        assert summary["breaches"]["identical_send"] == 0
        record = c.get("/_sim/record", params={"offset": 39, "limit": 5}).json()
        assert [(m["id"], m["text"]) for m in record] == [("40", "m39")]
        assert c.get("/_sim/phones").json() == {PHONE: 40}
        assert c.post("/_sim/reset").json() == {"ok": True}
        assert c.get("/_sim/summary").json()["messages"] == 0


def test_faults_over_a_socket_reset_and_delayed_answer(server: sim_server.SimServer) -> None:
    server.sim.configure(reset_rate=1.0)
    with httpx.Client(base_url=server.url, timeout=5) as c:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "cut"})
    server.sim.configure(reset_rate=0, delayed_answer_rate=1.0, delayed_answer_s=1.0)
    with httpx.Client(base_url=server.url, timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "late", "id": "1"})
    summary = server.sim.summary()
    assert summary["resets"] == 1 and summary["delayed"] == 1 and summary["messages"] == 1


def test_a_request_whose_client_timed_out_is_still_accepted_and_counted(server: sim_server.SimServer) -> None:
    server.sim.configure(slow_accept_rate=1.0, slow_accept_s=0.6)
    with httpx.Client(base_url=server.url, timeout=0.2) as c:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "slow", "id": "1", "fmt": "1"})
        assert time.monotonic() - started < 0.5  # the client gave up at its timeout ...
    assert server.sim.summary()["inflight"] == 1 and server.sim.phones() == {}  # ... still processing
    assert server.sim.wait_idle(timeout_s=5)
    summary = server.sim.summary()
    assert server.sim.phones() == {PHONE: 1}  # accepted after the client had gone
    assert summary["slow_requests"] == 1 and summary["accepted_after_client_gone"] == 1


def test_a_slow_request_whose_client_waits_is_answered_and_not_counted_as_gone(
        server: sim_server.SimServer) -> None:
    server.sim.configure(slow_accept_rate=1.0, slow_accept_s=0.3)
    with httpx.Client(base_url=server.url, timeout=5) as c:
        started = time.monotonic()
        r = c.post("/sys/send.php", data={**AUTH, "phones": PHONE, "mes": "slow", "id": "2", "fmt": "1"})
        assert r.text == "2,1" and time.monotonic() - started >= 0.3
    assert server.sim.summary()["accepted_after_client_gone"] == 0


def test_a_client_that_closes_its_socket_mid_request_gets_its_message_accepted_anyway(
        server: sim_server.SimServer) -> None:
    server.sim.configure(slow_accept_rate=1.0, slow_accept_s=0.5)
    body = f"login=demo&psw=demo-password&phones={PHONE}&mes=bye&id=3&fmt=1".encode()
    with socket.create_connection((server.server_address[0], server.port)) as sock:
        sock.sendall(b"POST /sys/send.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                     b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.1)
    assert server.sim.wait_idle(timeout_s=5)
    assert server.sim.phones() == {PHONE: 1}
    assert server.sim.summary()["accepted_after_client_gone"] == 1


def test_the_request_log_never_shows_the_password(server: sim_server.SimServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="worker.sim.server"):
        httpx.get(f"{server.url}/sys/balance.php", params={**AUTH, "fmt": "1"}, timeout=5)
        httpx.get(f"{server.url}/sys/balance.php", params={"apikey": "the-key", "fmt": "1"}, timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.sim.server"]
    assert any("/sys/balance.php" in line and "psw=***" in line for line in lines), lines
    assert not any(AUTH["psw"] in line or "the-key" in line for line in lines), lines


# -- the command line ---------------------------------------------------------------------------------


def _simulator(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "worker.sim.server", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_cli_flags_set_the_strict_provider_config() -> None:
    proc = _simulator("--port", "0", "--slow-accept-rate", "0.25", "--slow-accept-s", "40", "--status-lag-s", "3",
                      "--autocorrect", "--strict-mass-status", "--status-not-found-error")
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rsplit(" ", 1)[1]
        config = httpx.get(f"{url}/_sim/config", timeout=5).json()
        assert {k: config[k] for k in ("slow_accept_rate", "slow_accept_s", "status_lag_s", "autocorrect",
                                        "strict_mass_status", "status_not_found_error")} == {
            "slow_accept_rate": 0.25, "slow_accept_s": 40.0, "status_lag_s": 3.0, "autocorrect": True,
            "strict_mass_status": True, "status_not_found_error": True}
        changed = httpx.post(f"{url}/_sim/config", json={"autocorrect": False, "status_lag_s": 0}, timeout=5)
        assert changed.json()["autocorrect"] is False and changed.json()["status_lag_s"] == 0
        assert httpx.post(f"{url}/_sim/config", json={"slow_accept_rate": 2}, timeout=5).status_code == 400
        assert httpx.post(f"{url}/_sim/config", json={"status_lag_s": -1}, timeout=5).status_code == 400
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_cli_prints_the_url_serves_and_stops_cleanly_on_sigterm() -> None:
    proc = _simulator("--port", "0", "--latency-ms", "1", "--login", "acme", "--password", "pw", "--balance", "10",
                      "--seed", "1", "--error-rate", "9=0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert not url.endswith(":0")
        r = httpx.post(f"{url}/sys/balance.php", data={"login": "acme", "psw": "pw", "fmt": "3"})
        assert r.json() == {"balance": "10.00"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()



@pytest.mark.parametrize("port", ["70000", "-1"])
def test_cli_port_out_of_range_prints_one_line_and_exits_non_zero(port: str) -> None:
    proc = _simulator("--port", port)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and out == ""
    assert err.splitlines() == [f"simulator: --port {port} is out of range (0..65535; 0 = a free port)"]


def test_cli_port_taken_prints_one_line_and_exits_non_zero() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _simulator("--port", str(port))
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and out == ""
    assert err.splitlines() == [f"simulator: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_cli_refused_config_prints_one_line_and_exits_non_zero() -> None:
    proc = _simulator("--port", "0", "--slow-accept-rate", "1.5")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and out == ""
    assert err.splitlines() == ["simulator: slow_accept_rate must be a probability 0..1, got 1.5"]
