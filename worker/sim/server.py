"""The simulator over real sockets: a threaded HTTP/1.1 server, and ``python -m worker.sim.server``.

``serve(sim)`` starts a :class:`SimServer` on a background thread and returns it (``.url``, ``.port``,
``.close()``, a context manager). The CLI prints one line, ``simulator listening on http://HOST:PORT``,
and serves until SIGTERM or SIGINT::

    python -m worker.sim.server --port 0 --latency-ms 200 --login demo --password demo-password

Keep-alive matters for throughput figures: every answer carries ``Content-Length``, and the handler sets
TCP_NODELAY (``disable_nagle_algorithm``), without which a keep-alive exchange stalls ~40 ms on delayed
ACKs. A reset fault closes the socket with ``SO_LINGER`` 0, so the client sees a real RST.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Final

from worker.sim.core import SimConfig, SimResponse, Simulator
from worker.sim.transport import route

__all__ = ["SimServer", "main", "run", "serve"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 16 * 1024 * 1024  # a list of thousands of lines is far below this


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms stall between headers and body
    server_version = "smsc-simulator"
    server: SimServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self._write(SimResponse(400, "bad Content-Length"))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        answer = route(self.server.sim, self.command, self.path, body,
                       content_type=self.headers.get("Content-Type", ""), client_ip=self.client_address[0])
        if answer.reset:
            self._reset()
            return
        if answer.delay_s > 0 and self.server.stopping.wait(answer.delay_s):
            self.close_connection = True
            return
        try:
            self._write(answer)
        except OSError:  # the client gave up waiting (a delayed answer) and closed
            self.close_connection = True

    def _write(self, answer: SimResponse) -> None:
        data = answer.body.encode("utf-8")
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        """Cut the connection without an answer: RST (linger 0), not a polite FIN."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


class SimServer(ThreadingHTTPServer):
    """A :class:`Simulator` served over HTTP; one daemon thread per connection."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # bursts of many workers connecting at once must not be refused

    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.sim = sim
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = str(self.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> SimServer:
        """Serve on a background (daemon) thread."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"smsc-simulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, release delayed answers, close the socket."""
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()

    def __enter__(self) -> SimServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def serve(sim: Simulator | SimConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> SimServer:
    """Serve ``sim`` (or a new simulator of a config) on ``host:port`` (0 = a free port) in the background."""
    if not isinstance(sim, Simulator):
        sim = Simulator(sim)
    return SimServer(sim, host, port).start()


# -- the command line --------------------------------------------------------------------------------


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc


def _error_rate(text: str) -> tuple[int, float]:
    code, sep, rate = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return int(code), float(rate)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected CODE=RATE such as 9=0.2, got {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    d = SimConfig()
    p = argparse.ArgumentParser(prog="python -m worker.sim.server",
                                description="Serve a simulator of the SMSC HTTP API.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port (the line printed names it)")
    p.add_argument("--login", default=d.login)
    p.add_argument("--password", default=d.password)
    p.add_argument("--apikey", default=None)
    p.add_argument("--balance", type=_decimal, default=d.balance)
    p.add_argument("--price-per-part", type=_decimal, default=d.price_per_part)
    p.add_argument("--latency-ms", type=float, default=d.latency_ms)
    p.add_argument("--latency-jitter-ms", type=float, default=d.latency_jitter_ms)
    p.add_argument("--error-rate", type=_error_rate, action="append", default=[], metavar="CODE=RATE",
                   help="answer provider error CODE to this share of send requests (repeatable)")
    p.add_argument("--http500-rate", type=float, default=0.0)
    p.add_argument("--reset-rate", type=float, default=0.0)
    p.add_argument("--delayed-answer-rate", type=float, default=0.0)
    p.add_argument("--delayed-answer-s", type=float, default=d.delayed_answer_s)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--log-level", default="WARNING")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        login=args.login, password=args.password, apikey=args.apikey, balance=args.balance,
        price_per_part=args.price_per_part, latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms, error_rates=dict(args.error_rate),
        http500_rate=args.http500_rate, reset_rate=args.reset_rate,
        delayed_answer_rate=args.delayed_answer_rate, delayed_answer_s=args.delayed_answer_s,
        seed=args.seed,
    )


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve until SIGTERM/SIGINT, return the exit code (0 on a clean stop)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Signal handlers can only be installed from the main thread; elsewhere the caller stops us.
    on_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)} if on_main else {}
    try:
        with serve(Simulator(config), args.host, args.port) as server:
            print(f"simulator listening on {server.url}", flush=True)
            while not stop.wait(0.5):
                pass
            log.info("stopping; summary %s", json.dumps(server.sim.summary(), default=str))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m worker.sim.server``."""
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
