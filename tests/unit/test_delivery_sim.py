"""The simulator learns delivery: a drawn fate per message, status.php answers it, the push and its retries."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from statistics import median
from urllib.parse import parse_qsl

import httpx
import pytest

from tests.unit.sim_helpers import Clock, send, status, stepped_sim
from worker.sim import SimConfig, SimTransport, Simulator, serve
from worker.sim.delivery import ERRORS_BY_STATUS, DeliveryConfig, push_signature
from worker.sim.server import build_parser, config_from_args

MIXED = {1: 0.80, 3: 0.05, 20: 0.08, 25: 0.02}  # 0.05 never final


def _client(sim: Simulator) -> httpx.Client:
    return httpx.Client(transport=SimTransport(sim), base_url="http://smsc.test", timeout=5.0)


def _phones(n: int, start: int = 0) -> list[str]:
    return [f"7900{start + i:07d}" for i in range(n)]


def _send_all(client: httpx.Client, phones: list[str], mid: str) -> None:
    for i in range(0, len(phones), 500):
        body = send(client, phones=",".join(phones[i:i + 500]), mes="hi", id=f"{mid}-{i}", fmt=3)
        assert "error" not in body, body


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_the_drawn_fates_follow_the_configured_distribution(clock: Clock) -> None:
    cfg = DeliveryConfig(enabled=True, rates=MIXED, delay_s=4.0, spread=0.8)
    fates = [cfg.truth(7, "c-1", p, 1_000_000) for p in _phones(20_000)]
    shares = Counter(f.status for f in fates)
    for code, rate in MIXED.items():
        assert abs(shares[code] / 20_000 - rate) < 0.01, (code, shares[code])
    assert abs(shares[0] / 20_000 - 0.05) < 0.01  # never final
    assert all(f.err in ERRORS_BY_STATUS[f.status] for f in fates if f.status)
    assert all(f.err == 0 for f in fates if f.status == 1)
    assert {f.err for f in fates if f.status == 20} == set(ERRORS_BY_STATUS[20])  # every code of the table shows up
    delays = [(f.final_ms - 1_000_000) / 1000 for f in fates if f.status]
    assert 3.6 < median(delays) < 4.4 and max(delays) <= cfg.max_delay_s
    # The same seed, id and phone: the same fate, whoever asks; another seed: other fates.
    assert fates[:50] == [cfg.truth(7, "c-1", p, 1_000_000) for p in _phones(50)]
    assert fates[:50] != [cfg.truth(8, "c-1", p, 1_000_000) for p in _phones(50)]


def test_status_php_answers_0_until_the_final_status_then_the_final_status_with_its_err(clock: Clock) -> None:
    sim = stepped_sim(clock, delivery={"enabled": True, "rates": MIXED, "delay_s": 2.0, "spread": 0.5})
    client = _client(sim)
    phones = _phones(300)
    _send_all(client, phones, "c")
    truth = {(t["id"], t["phone"]): t for t in sim.truth(0, 1000)}
    assert len(truth) == 300

    def answers() -> dict[tuple[str, str], tuple[int, int, int]]:
        out = {}
        for i in range(0, 300, 100):
            pairs = [(p, f"c-{(i // 500) * 500}") for p in phones[i:i + 100]]
            body = status(client, ",".join(p for p, _ in pairs), ",".join(m for _, m in pairs), fmt=3)
            for row in json.loads(body):
                out[(str(row["id"]), row["phone"])] = (row["status"], row["err"], row["last_timestamp"])
        return out

    early = answers()
    assert {s for s, _, _ in early.values()} == {0}  # handed to the operator, nothing final yet
    clock.advance(3600)  # past every drawn delay (max_delay_s 3600)
    late = answers()
    for key, (st, err, ts) in late.items():
        t = truth[key]
        assert (st, err) == (t["status"], t["err"])
        assert ts == (t["final_ms"] if t["status"] else t["accepted_ms"]) // 1000
    assert Counter(st for st, _, _ in late.values())[0] == sum(1 for t in truth.values() if t["status"] == 0)


def test_delivery_off_keeps_the_old_answers(clock: Clock) -> None:
    sim = stepped_sim(clock)
    client = _client(sim)
    send(client, phones="79001234567", mes="hi", id="x-1", fmt=3)
    assert status(client, "79001234567", "x-1", fmt=1).startswith("1,")
    assert sim.truth()[0]["status"] == 1


class _Handler:
    """A handler URL stand-in: records posts; ``down`` makes it fail."""

    def __init__(self) -> None:
        self.posts: list[dict[str, str]] = []
        self.down = False

    def __call__(self, url: str, fields: Mapping[str, str], timeout_s: float) -> int:
        if self.down:
            raise OSError("connection refused")
        self.posts.append(dict(fields))
        return 200


def test_the_push_posts_each_final_status_signed_as_the_provider_does(clock: Clock) -> None:
    handler = _Handler()
    sim = Simulator(SimConfig(seed=3, delivery={"enabled": True, "rates": MIXED, "delay_s": 1.0,
                                                "push_url": "http://handler.test/smsc", "push_intermediate": True}),
                    clock=clock, sleep=clock.sleep, push_threads=False, push_post=handler)
    client = _client(sim)
    phones = _phones(200)
    _send_all(client, phones, "p")
    sim.push_due()
    assert [p["status"] for p in handler.posts] == ["0"] * 200  # the intermediate 0 at acceptance
    clock.advance(3600)
    sim.push_due()
    truth = {(t["id"], t["phone"]): t for t in sim.truth(0, 1000)}
    finals = [p for p in handler.posts if p["status"] != "0"]
    assert len(finals) == sum(1 for t in truth.values() if t["status"])
    for p in finals:
        t = truth[(p["id"], p["phone"])]
        assert (int(p["status"]), int(p["err"]), int(p["time"])) == (t["status"], t["err"], t["final_ms"] // 1000)
        assert p["md5"] == push_signature(p["id"], p["phone"], int(p["status"]), "demo-password")
        assert p["cnt"] == "1" and p["type"] == "0" and len(p["ts"]) == 19
    assert sim.summary()["delivery"]["pushed"] == 200 + len(finals)


def test_a_handler_that_is_down_gets_every_status_afterwards_retried_with_back_off(clock: Clock) -> None:
    handler = _Handler()
    sim = Simulator(SimConfig(seed=4, delivery={"enabled": True, "rates": {1: 1.0}, "delay_s": 1.0, "spread": 0.1,
                                                "push_url": "http://handler.test/", "push_retry_s": 10,
                                                "push_retry_cap_s": 40, "push_give_up_s": 3600}),
                    clock=clock, sleep=clock.sleep, push_threads=False, push_post=handler)
    client = _client(sim)
    _send_all(client, _phones(50), "d")
    handler.down = True
    tried_at = []
    for _ in range(60):  # five minutes, a step of 5 s
        clock.advance(5)
        if sim.push_due():
            tried_at.append(clock.now)
    gaps = [round(b - a) for a, b in itertools.pairwise(tried_at)]
    assert gaps[:3] == [10, 20, 40] and set(gaps[3:]) == {40}  # doubling, capped
    assert handler.posts == [] and sim.summary()["delivery"]["push_queued"] == 50
    handler.down = False
    clock.advance(40)
    sim.push_due()
    assert len(handler.posts) == 50 and sim.summary()["delivery"]["push_dropped"] == 0
    # Given up after push_give_up_s: counted, not posted.
    handler.down, handler.posts = True, []
    _send_all(client, _phones(10, start=100), "e")
    for _ in range(200):
        clock.advance(40)
        sim.push_due()
    assert sim.summary()["delivery"]["push_dropped"] == 10 and sim.summary()["delivery"]["push_queued"] == 0


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    posts: list[dict[str, str]] = []
    fail_first = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            fail = type(self).fail_first > 0
            if fail:
                type(self).fail_first -= 1
            else:
                self.posts.append(dict(parse_qsl(body.decode())))
        code = 500 if fail else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[_Recorder]]]:
    cls = type("Rec", (_Recorder,), {"posts": [], "fail_first": 5, "lock": threading.Lock()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), cls)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/smsc/status", cls
    server.shutdown()
    server.server_close()


def test_the_served_simulator_pushes_over_http_and_retries_500s(recorder: tuple[str, type[_Recorder]]) -> None:
    url, cls = recorder
    cfg = SimConfig(seed=5, delivery={"enabled": True, "rates": {1: 0.5, 20: 0.5}, "delay_s": 0.05, "spread": 0.2,
                                      "push_url": url, "push_retry_s": 0.05, "push_retry_cap_s": 0.2})
    with serve(cfg) as server, httpx.Client(base_url=server.url) as client:
        phones = _phones(40)
        body = client.post("/sys/send.php", data={"login": "demo", "psw": "demo-password", "phones": ",".join(phones),
                                                  "mes": "hi", "id": "h-1", "fmt": "3"}).text
        assert "error" not in body
        deadline = time.monotonic() + 10
        while server.sim.summary()["delivery"]["pushed"] < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        summary = server.sim.summary()["delivery"]
    assert sorted(p["phone"] for p in cls.posts) == phones
    assert summary["push_failures"] == 5 and summary["pushed"] == 40


def test_the_delivery_flags_of_the_server() -> None:
    args = build_parser().parse_args(["--delivery", "--delivery-rates", "1=0.9,20=0.1", "--delivery-delay-s", "2",
                                      "--push-url", "http://127.0.0.1:9/x", "--push-retry-s", "1.5"])
    d = config_from_args(args).delivery
    assert d.enabled and d.rates == {1: 0.9, 20: 0.1} and d.delay_s == 2 and d.push_retry_s == 1.5
    assert d.push_url == "http://127.0.0.1:9/x"
    assert SimConfig().replace({"delivery": {"push_url": "http://h/"}}).delivery.push_url == "http://h/"
    with pytest.raises(ValueError, match="not a final status"):
        DeliveryConfig(rates={0: 0.5})
    with pytest.raises(ValueError, match="more than 1"):
        DeliveryConfig(rates={1: 0.7, 20: 0.7})
    assert SimConfig(delivery={"enabled": True}).public()["delivery"]["enabled"] is True
