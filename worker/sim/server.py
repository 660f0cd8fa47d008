"""The simulator over real sockets: a threaded HTTP/1.1 server, and ``python -m worker.sim.server``.

``serve(sim)`` starts a :class:`SimServer` on a background thread and returns it (``.url``, ``.port``,
``.close()``, a context manager). The CLI prints one line, ``simulator listening on http://HOST:PORT``,
and serves until SIGTERM or SIGINT::

    python -m worker.sim.server --port 0 --latency-ms 200 --login demo --password demo-password \
        --extra-login brand2=brand2-password

``--extra-login LOGIN=PASSWORD`` (repeatable) adds a login of the provider with limits of its own
(``SimConfig.logins``); no line printed or logged ever shows its password, nor a malformed value.

Keep-alive matters for throughput figures: every answer carries ``Content-Length``, and the handler sets
TCP_NODELAY (``disable_nagle_algorithm``), without which a keep-alive exchange stalls ~40 ms on delayed
ACKs. A reset fault closes the socket with ``SO_LINGER`` 0, so the client sees a real RST.

Like the provider, the handler goes on processing a request whose client has gone (timed out, closed):
it watches the connection while it spends the processing time, so the messages it then accepts are
counted in the summary's ``accepted_after_client_gone``, and it writes no answer to a closed connection.
The waits here are real time, whatever clock the simulator was given.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Final

from worker.sim.core import SimConfig, SimRequest, SimResponse, Simulator
from worker.sim.delivery import DeliveryConfig
from worker.sim.transport import begin

__all__ = ["SimServer", "main", "run", "serve"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 16 * 1024 * 1024  # a list of thousands of lines is far below this
_SECRET_PARAM: Final = re.compile(r"\b(psw|apikey)=[^&\s]*", re.IGNORECASE)


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
        call = begin(self.server.sim, self.command, self.path, body,
                     content_type=self.headers.get("Content-Type", ""), client_ip=self.client_address[0])
        # The provider goes on processing when the client leaves: nothing here stops the request.
        answer = call.finish(wait=lambda seconds: self._wait_watching(call, seconds))
        if call.processing_s > 0 and not call.client_gone and self._peer_closed():
            call.mark_client_gone()
        if call.client_gone:
            self.close_connection = True
            return
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

    def _wait_watching(self, call: SimRequest, seconds: float) -> None:
        """Spend the processing time (real time), noting when the client closes its end meanwhile."""
        deadline = time.monotonic() + seconds
        poller = select.poll()
        poller.register(self.connection, select.POLLIN | select.POLLHUP | select.POLLERR)
        while (left := deadline - time.monotonic()) > 0:
            if not poller.poll(left * 1000):
                continue
            if self._peer_closed():
                call.mark_client_gone()
            # Readable stays readable (an end of file, or a pipelined request): no more to watch.
            time.sleep(max(deadline - time.monotonic(), 0.0))
            return

    def _peer_closed(self) -> bool:
        """True when the client has closed or reset its end (a zero-byte peek); never consumes data."""
        try:
            return bool(self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
        except BlockingIOError:
            return False
        except OSError:
            return True

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
        # The request line of a GET carries the password (the official libraries send it so): mask it.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.client_address[0], _SECRET_PARAM.sub(r"\1=***", format % args))


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
        self.sim.close()
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


def _extra_login(text: str) -> tuple[str, str]:
    """``LOGIN=PASSWORD``; an error names neither the value nor the password (it may be a mistyped one)."""
    login, sep, password = text.partition("=")
    if not sep or not login.strip() or not password:
        raise argparse.ArgumentTypeError("expected LOGIN=PASSWORD with both parts non-empty (value not shown)")
    return login.strip(), password


def build_parser() -> argparse.ArgumentParser:
    d = SimConfig()
    p = argparse.ArgumentParser(prog="python -m worker.sim.server",
                                description="Serve a simulator of the SMSC HTTP API.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port (the line printed names it)")
    p.add_argument("--login", default=d.login)
    p.add_argument("--password", default=d.password)
    p.add_argument("--apikey", default=None)
    p.add_argument("--extra-login", type=_extra_login, action="append", default=[], metavar="LOGIN=PASSWORD",
                   help="one more login of the provider, with its own limits (repeatable)")
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
    p.add_argument("--slow-accept-rate", type=float, default=d.slow_accept_rate,
                   help="this share of send requests is processed for --slow-accept-s before acceptance")
    p.add_argument("--slow-accept-s", type=float, default=d.slow_accept_s)
    p.add_argument("--status-lag-s", type=float, default=d.status_lag_s,
                   help="status.php answers -3 for a message until this long after its acceptance")
    p.add_argument("--autocorrect", action="store_true",
                   help="correct numbers written without + as the provider does (8... -> 7..., 9... -> 79...)")
    p.add_argument("--strict-mass-status", action="store_true",
                   help="at most one mass status request a minute, whatever it asks")
    p.add_argument("--status-not-found-error", action="store_true",
                   help="a single-message status request for an unknown message answers error 3")
    dd = d.delivery
    g = p.add_argument_group("delivery", "what becomes of each accepted message (off unless --delivery)")
    g.add_argument("--delivery", action="store_true",
                   help="each message reaches a final status after a drawn delay (status.php answers it)")
    g.add_argument("--delivery-rates", type=_rates, default=None, metavar="CODE=SHARE,...",
                   help="final status -> share, e.g. 1=0.85,3=0.05,20=0.06 (the rest: never final)")
    g.add_argument("--delivery-delay-s", type=float, default=dd.delay_s, help="median delay to the final status")
    g.add_argument("--delivery-spread", type=float, default=dd.spread, help="sigma of the log-normal delay")
    g.add_argument("--delivery-max-delay-s", type=float, default=dd.max_delay_s)
    g.add_argument("--push-url", default=None, help="post each status change to this handler URL")
    g.add_argument("--push-intermediate", action="store_true", help="also post the 0 of each accepted message")
    g.add_argument("--push-retry-s", type=float, default=dd.push_retry_s, help="first retry of a failed post")
    g.add_argument("--push-retry-cap-s", type=float, default=dd.push_retry_cap_s)
    g.add_argument("--push-give-up-s", type=float, default=dd.push_give_up_s)
    g.add_argument("--push-timeout-s", type=float, default=dd.push_timeout_s)
    g.add_argument("--push-concurrency", type=int, default=dd.push_concurrency)
    p.add_argument("--log-level", default="WARNING")
    return p


def _rates(text: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        code, sep, share = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[int(code)] = float(share)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected CODE=SHARE,... such as 1=0.9,20=0.1, got {text!r}") from exc
    return out


def _delivery_from_args(args: argparse.Namespace) -> DeliveryConfig:
    d = DeliveryConfig()
    return DeliveryConfig(
        enabled=args.delivery, rates=args.delivery_rates if args.delivery_rates is not None else d.rates,
        delay_s=args.delivery_delay_s, spread=args.delivery_spread, max_delay_s=args.delivery_max_delay_s,
        push_url=args.push_url, push_intermediate=args.push_intermediate, push_retry_s=args.push_retry_s,
        push_retry_cap_s=args.push_retry_cap_s, push_give_up_s=args.push_give_up_s,
        push_timeout_s=args.push_timeout_s, push_concurrency=args.push_concurrency,
    )


def _logins_from_args(args: argparse.Namespace) -> dict[str, str]:
    """``--extra-login`` as ``SimConfig.logins``; a login given twice, or that is ``--login``, is refused."""
    logins: dict[str, str] = {}
    for login, password in args.extra_login:
        if login == args.login or login in logins:
            raise ValueError(f"--extra-login {login!r}: this login is given more than once")
        logins[login] = password
    return logins


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        login=args.login, password=args.password, apikey=args.apikey, logins=_logins_from_args(args),
        balance=args.balance,
        price_per_part=args.price_per_part, latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms, error_rates=dict(args.error_rate),
        http500_rate=args.http500_rate, reset_rate=args.reset_rate,
        delayed_answer_rate=args.delayed_answer_rate, delayed_answer_s=args.delayed_answer_s,
        seed=args.seed, slow_accept_rate=args.slow_accept_rate, slow_accept_s=args.slow_accept_s,
        status_lag_s=args.status_lag_s, autocorrect=args.autocorrect, strict_mass_status=args.strict_mass_status,
        status_not_found_error=args.status_not_found_error, delivery=_delivery_from_args(args),
    )


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve until SIGTERM/SIGINT, return the exit code (0 on a clean stop).

    A config the simulator refuses, a port out of range or one that cannot be listened on (taken, a host
    that is not this machine's) prints one line to stderr and returns 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        return _refuse(str(exc))
    if not 0 <= args.port <= 65535:
        return _refuse(f"--port {args.port} is out of range (0..65535; 0 = a free port)")
    try:
        server = serve(Simulator(config), args.host, args.port)
    except OSError as exc:
        return _refuse(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Signal handlers can only be installed from the main thread; elsewhere the caller stops us.
    on_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)} if on_main else {}
    try:
        with server:
            print(f"simulator listening on {server.url}", flush=True)
            if config.logins:  # the names only, never a password
                log.info("logins: %s", ", ".join([config.login, *config.logins]))
            while not stop.wait(0.5):
                pass
            log.info("stopping; summary %s", json.dumps(server.sim.summary(), default=str))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _refuse(reason: str) -> int:
    print(f"simulator: {reason}", file=sys.stderr, flush=True)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m worker.sim.server``."""
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
