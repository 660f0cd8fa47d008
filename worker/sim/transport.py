"""The simulator's HTTP face, shared by the socket server and the in-process httpx transport.

- :func:`parse_params`: a request's parameters as the provider reads them: query string and
  url-encoded form merged (the body wins), decoded in the request's ``charset`` (``windows-1251`` when
  absent, like the provider); ``/rest/send/`` takes a JSON object.
- :func:`route`: API paths go to :meth:`Simulator.handle`; control paths under ``/_sim/``:

  ======================  ========================================================================
  ``GET /_sim/summary``   :meth:`Simulator.summary` (JSON object)
  ``GET /_sim/record``    ``?offset=0&limit=1000`` (limit at most 100000): JSON list of
                          ``{"ts_ms", "login", "id", "phone", "text", "parts", "flood", "delivered",
                          "options", "sender"}`` (:meth:`Simulator.record`)
  ``GET /_sim/phones``    JSON object phone digits -> accepted messages
  ``GET /_sim/truth``     ``?offset=0&limit=1000``: JSON list of each accepted message's fate
                          ``{"id", "phone", "status", "err", "final_ms", "accepted_ms"}``
                          (:meth:`Simulator.truth`)
  ``GET /_sim/config``    the config, secrets masked
  ``POST /_sim/config``   JSON object, partial update (``{"error_rates": {"9": 0.2}}``); answers the config
  ``POST /_sim/reset``    forget messages, counters, windows; ``{"ok": true}``
  ``GET /_sim/health``    ``{"ok": true}``
  ======================  ========================================================================

- :func:`begin`: the same, in two steps: the request arrives (and counts as in flight), then
  :meth:`~worker.sim.core.SimRequest.finish` spends its processing time and answers.
- :class:`SimTransport`: ``httpx.BaseTransport`` in-process; a reset raises ``httpx.ReadError``, an
  answer not ready or delayed past the request's read timeout sleeps that timeout and raises
  ``httpx.ReadTimeout`` (what a socket transport would do), and a request still being processed then is
  accepted later on a background thread.
"""

from __future__ import annotations

import codecs
import json
import re
import threading
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from worker.sim.core import SimRequest, SimResponse, Simulator

__all__ = ["MAX_RECORD_PAGE", "SimTransport", "begin", "parse_params", "route"]

MAX_RECORD_PAGE: Final = 100_000
DEFAULT_CHARSET: Final = "windows-1251"  # the provider's default when ``charset`` is absent
_JSON: Final = "application/json; charset=utf-8"


def _codec(charset: str | None) -> str:
    try:
        return codecs.lookup(charset or DEFAULT_CHARSET).name
    except LookupError:
        return codecs.lookup(DEFAULT_CHARSET).name


#: A run of %XX escapes: decoded by one C call (``bytes.fromhex``) instead of urllib's byte by byte.
_ESCAPES = re.compile(rb"(?:%[0-9A-Fa-f]{2})+")


def _unescape_run(m: re.Match[bytes]) -> bytes:
    return bytes.fromhex(m.group().replace(b"%", b"").decode("ascii"))


def _unquote(text: str) -> str:
    """``urllib.parse.unquote(text, encoding="latin-1")`` for a latin-1 ``text``: %XX escapes become
    their bytes (as latin-1 characters), a ``%`` not followed by two hex digits stays; a 500-text
    Cyrillic ``list`` (~190 KB of escapes) takes ~1 ms instead of ~15 ms of the simulator's CPU."""
    if "%" not in text:
        return text
    return _ESCAPES.sub(_unescape_run, text.encode("latin-1")).decode("latin-1")


def _pairs(raw: bytes) -> list[tuple[str, str]]:
    """``parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="latin-1")``, faster: latin-1
    maps bytes 1:1, so the percent-decoded bytes survive until the charset is known."""
    out: list[tuple[str, str]] = []
    for field in raw.decode("latin-1").split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        out.append((_unquote(name.replace("+", " ")), _unquote(value.replace("+", " "))))
    return out


def _json_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(_json_value(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def parse_params(path: str, query: bytes, body: bytes, content_type: str) -> dict[str, str]:
    """The request's parameters; raises ``ValueError`` for a body that cannot be read."""
    if path == "/rest/send/" and body.strip():
        data = json.loads(body.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the JSON body must be an object")
        return {str(k): _json_value(v) for k, v in data.items() if v is not None}
    pairs = _pairs(query)
    if body and content_type.split(";")[0].strip().lower() in ("application/x-www-form-urlencoded", ""):
        pairs += _pairs(body)
    raw = dict(pairs)
    codec = _codec(raw.get("charset"))
    return {k.encode("latin-1").decode(codec, "replace"): v.encode("latin-1").decode(codec, "replace")
            for k, v in raw.items()}


def _json(status: int, data: Any) -> SimResponse:
    return SimResponse(status, json.dumps(data, ensure_ascii=False), content_type=_JSON)


def begin(sim: Simulator, method: str, target: str, body: bytes = b"", *, content_type: str = "",
          client_ip: str = "127.0.0.1") -> SimRequest:
    """Let one HTTP request (``target`` = path and query) arrive: its :meth:`SimRequest.finish` answers it.

    Control endpoints and unreadable requests are answered at once (``processing_s`` 0); an API request
    counts as in flight at the simulator until ``finish()``.
    """
    url = urlsplit(target)
    path, query = url.path, url.query.encode("latin-1", "replace")
    method = method.upper()
    if path.startswith("/_sim/"):
        return SimRequest(sim, _control(sim, method, path, query, body))
    if method not in ("GET", "POST"):
        return SimRequest(sim, SimResponse(405, "method not allowed"))
    try:
        params = parse_params(path, query, body, content_type)
    except (ValueError, UnicodeDecodeError):
        return SimRequest(sim, SimResponse(400, "bad request body"))
    return sim.arrive(method, path, params, client_ip=client_ip)


def route(sim: Simulator, method: str, target: str, body: bytes = b"", *,
          content_type: str = "", client_ip: str = "127.0.0.1") -> SimResponse:
    """Answer one HTTP request (``target`` = path and query) from the API or the control endpoints."""
    return begin(sim, method, target, body, content_type=content_type, client_ip=client_ip).finish()


def _control(sim: Simulator, method: str, path: str, query: bytes, body: bytes) -> SimResponse:
    args = dict(_pairs(query))
    if method == "GET" and path == "/_sim/summary":
        summary = sim.summary()
        summary["errors_answered"] = {str(k): v for k, v in summary["errors_answered"].items()}
        return _json(200, summary)
    if method == "GET" and path == "/_sim/record":
        try:
            offset = max(int(args.get("offset", "0")), 0)
            limit = min(max(int(args.get("limit", "1000")), 0), MAX_RECORD_PAGE)
        except ValueError:
            return _json(400, {"error": "offset and limit must be integers"})
        return _json(200, sim.record(offset, limit))
    if method == "GET" and path == "/_sim/truth":
        try:
            offset = max(int(args.get("offset", "0")), 0)
            limit = min(max(int(args.get("limit", "1000")), 0), MAX_RECORD_PAGE)
        except ValueError:
            return _json(400, {"error": "offset and limit must be integers"})
        return _json(200, sim.truth(offset, limit))
    if method == "GET" and path == "/_sim/phones":
        return _json(200, sim.phones())
    if method == "GET" and path == "/_sim/health":
        return _json(200, {"ok": True})
    if path == "/_sim/config" and method in ("GET", "POST"):
        if method == "POST":
            try:
                changes = json.loads(body.decode("utf-8") or "{}")
                if not isinstance(changes, Mapping):
                    raise ValueError("the config update must be a JSON object")
                sim.configure(changes)
            except (ValueError, UnicodeDecodeError) as exc:
                return _json(400, {"error": str(exc)})
        return _json(200, sim.config.public())
    if method == "POST" and path == "/_sim/reset":
        sim.reset()
        return _json(200, {"ok": True})
    return _json(404, {"error": f"no control endpoint {method} {path}"})


class SimTransport(httpx.BaseTransport):
    """Serve an ``httpx.Client`` from a :class:`Simulator` in this process (unit tests; no sockets).

    Time is the simulator's (``sim.sleep``), so a stepped clock steps the waits too. A request whose
    processing takes as long as the request's read timeout raises ``httpx.ReadTimeout`` at that timeout,
    as a socket would, and goes on being processed on a background thread: its messages are accepted at
    the end of the processing time (``sim.wait_idle()`` waits for that).
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        target = request.url.raw_path.decode("ascii")
        call = begin(self.sim, request.method, target, body, content_type=request.headers.get("content-type", ""))
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        if read_timeout is not None and 0 < read_timeout <= call.processing_s:
            self._give_up_and_accept_later(call, read_timeout)
            raise httpx.ReadTimeout("the simulator answered too late", request=request)
        answer = call.finish()
        if answer.reset:
            raise httpx.ReadError("connection reset by the simulator", request=request)
        if answer.delay_s > 0:
            left = None if read_timeout is None else read_timeout - call.processing_s
            if left is not None and answer.delay_s >= left:
                self.sim.sleep(max(left, 0.0))
                call.mark_client_gone()
                raise httpx.ReadTimeout("the simulator answered too late", request=request)
            self.sim.sleep(answer.delay_s)
        return httpx.Response(answer.status, headers={"content-type": answer.content_type},
                              content=answer.body.encode("utf-8"), request=request)

    def _give_up_and_accept_later(self, call: SimRequest, read_timeout: float) -> None:
        """Wait the read timeout, leave, and let the provider finish the request on its own thread."""
        left = threading.Event()

        def finish_alone() -> None:
            left.wait()
            call.finish(wait=lambda processing_s: self.sim.sleep(max(processing_s - read_timeout, 0.0)))

        threading.Thread(target=finish_alone, name="smsc-sim-late-accept", daemon=True).start()
        try:
            self.sim.sleep(read_timeout)
        finally:
            call.mark_client_gone()
            left.set()
