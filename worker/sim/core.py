"""A production-quality simulator of the SMSC HTTP API: one core mapping a request to the provider's answer.

:class:`Simulator` has no sockets: :func:`worker.sim.server.serve` serves it over HTTP (integration
tests, the demo, the benchmark) and :class:`worker.sim.transport.SimTransport` plugs it into an ``httpx.Client``
(unit tests). It answers ``/sys/send.php``, ``/rest/send/``, ``/sys/status.php`` and ``/sys/balance.php``
as ``smsc-http-api.md`` describes, enforces and **counts** the provider's anti-abuse rules as breaches,
injects faults, and records every accepted message compactly (about 40 bytes a message plus one entry
per distinct phone, so a million messages fit in a couple of hundred megabytes).

Message options are billed as the provider bills them (:mod:`worker.smsc.encoding`: the same model the
client counts with, since the provider publishes no tables): ``tinyurl=1`` shortens every link,
``translit=1|2`` transliterates, then the parts are counted and ``maxsms=N`` cuts the text to N parts;
``cnt``, the cost and the record follow the delivered text. ``translit``, ``tinyurl``, ``flash``,
``valid`` and ``maxsms`` outside their documented values are error 1, as strictly as documented
(:func:`worker.sim.rules.parse_options`). The record keeps the text as received, byte for byte, beside
the delivered one and the options.

Timing model: a request is *in flight* from its arrival (:meth:`Simulator.arrive`, where the concurrency
limits are judged) until its answer is ready (:meth:`SimRequest.finish`). Its processing time — the
configured latency, plus ``slow_accept_s`` for the slow share of the send requests — is spent before the
other rules are judged and the messages accepted, and while the request counts as in flight; whoever
serves the request may stop waiting for it (:meth:`SimRequest.mark_client_gone`) and the messages are
still accepted at the end. ``SimResponse.delay_s`` (the delayed-answer fault) is spent by the caller
after the answer is ready, when the request no longer counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from worker.sim import rules
from worker.sim.config import SimConfig
from worker.sim.push import PostFn, Pusher
from worker.sim.state import Ledger, Windows
from worker.smsc.encoding import count_segments, delivered_text

__all__ = ["BREACHES", "SimConfig", "SimRequest", "SimResponse", "Simulator"]

# Every breach the summary reports, always present (0 when none happened).
BREACHES: Final = ("identical_send", "identical_cost", "concurrency", "flood", "status_rate",
                   "status_concurrency", "status_mass", "balance_rate", "ip_blocked", "auth_block")
SEND_PATHS: Final = frozenset({"/sys/send.php", "/rest/send/"})
STATUS_PATH: Final = "/sys/status.php"
BALANCE_PATH: Final = "/sys/balance.php"
API_PATHS: Final = SEND_PATHS | {STATUS_PATH, BALANCE_PATH}

MAX_CONCURRENT: Final = 15  # the 15th concurrent request of a login is refused (error 9)
MAX_STATUS_CONCURRENT: Final = 5  # ... and the 5th concurrent status request ("too many concurrent requests")
ERRORS_BEFORE_BLOCK: Final = 100  # error answers (any endpoint) in a row before the IP is blocked ...
ERROR_BLOCK_MS: Final = 10 * 60_000  # ... for 10 minutes (provider FAQ)
AUTH_FAILS_BEFORE_BLOCK: Final = 5  # wrong-password answers within AUTH_WINDOW_MS before a block ...
AUTH_WINDOW_MS: Final = 30 * 60_000
AUTH_BLOCK_MS: Final = 30 * 60_000  # ... of 30 minutes (provider FAQ)
MSK_OFFSET_S: Final = 3 * 3600  # last_date is written in Moscow time, like the provider's
NOT_FOUND_TEXT: Final = "message not found"  # status.php's error 3


@dataclass(frozen=True)
class SimResponse:
    """An answer: HTTP ``status`` and ``body``; wait ``delay_s`` before writing it; ``reset``: cut instead."""

    status: int
    body: str
    delay_s: float = 0.0
    reset: bool = False
    content_type: str = "text/plain; charset=utf-8"


_CONTENT_TYPES: Final = {0: "text/plain; charset=utf-8", 1: "text/plain; charset=utf-8",
                         2: "text/xml; charset=utf-8", 3: "application/json; charset=utf-8"}


class _Answer(Exception):
    """Internal: stop processing and answer provider error ``code`` (``breach`` counted if given)."""

    def __init__(self, code: int, *, breach: str | None = None, message_id: str | None = None,
                 text: str | None = None) -> None:
        super().__init__(code)
        self.code, self.breach, self.message_id, self.text = code, breach, message_id, text


class SimRequest:
    """One request that has arrived: in flight until :meth:`finish` has its answer.

    ``processing_s`` is the provider's processing time still to spend (0 for a request answered at the
    door). :meth:`finish` spends it (``wait``, the simulator's ``sleep`` by default), then judges the
    rules, accepts the messages and answers. :meth:`mark_client_gone` says that nobody waits for the
    answer any more; messages accepted after that are counted in ``accepted_after_client_gone``.
    """

    def __init__(self, sim: Simulator, answer: SimResponse | None = None, *,
                 work: Callable[[], tuple[SimResponse, bool]] | None = None, processing_s: float = 0.0,
                 login: str = "", status: bool = False, generation: int = 0) -> None:
        self._sim = sim
        self._answer = answer
        self._work = work
        self.processing_s = processing_s
        self.login, self.status, self.generation = login, status, generation
        self._gone = False
        self._accepted = False

    @property
    def client_gone(self) -> bool:
        return self._gone

    def mark_client_gone(self) -> None:
        """Nobody will read this answer (the client timed out or disconnected)."""
        with self._sim._lock:
            self._gone = True

    def finish(self, wait: Callable[[float], None] | None = None) -> SimResponse:
        """Spend the processing time, then answer (and accept) exactly once; later calls repeat the answer."""
        if self._work is None:
            if self._answer is None:
                raise RuntimeError("SimRequest.finish: the request is still being processed")
            return self._answer
        work, self._work = self._work, None
        sim = self._sim
        try:
            if self.processing_s > 0:
                (wait or sim.sleep)(self.processing_s)
            with sim._lock:
                answer, accepted = work()
                self._answer, self._accepted = answer, accepted
                if accepted and self._gone:
                    sim._accepted_after_gone += 1
        finally:
            sim._release(self)
        return answer


class Simulator:
    """The simulated provider: ``handle()`` a request, read ``summary()`` and ``record()``.

    Thread-safe: one lock guards the state; the processing time is slept outside it. ``clock`` (seconds
    since the epoch) and ``sleep`` are injectable so that unit tests can step time.

    The push to the client's handler (``config.delivery.push_url``) runs on threads of its own unless
    ``push_threads`` is false: then :meth:`push_due` posts what is due (``push_post`` replaces the HTTP
    post, for tests).
    """

    def __init__(self, config: SimConfig | None = None, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, push_threads: bool = True,
                 push_post: PostFn | None = None) -> None:
        self._config = config if config is not None else SimConfig()
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._generation = 0
        self._pusher = Pusher(config=lambda: (self._config.delivery, self._config.password), clock=clock,
                              post=push_post, threads=push_threads)
        self._reset_state()

    def _reset_state(self) -> None:
        self._generation += 1  # requests still in flight from before a reset no longer count
        self._rng = random.Random(self._config.seed)
        self._balance = self._config.balance
        self._ledger = Ledger()
        self._windows = Windows()
        self._auto_ids = itertools.count(1_000_000)
        self._requests = 0
        self._breaches = dict.fromkeys(BREACHES, 0)
        self._errors: dict[int, int] = {}
        self._http500 = self._resets = self._delayed = self._slow = self._accepted_after_gone = 0
        self._inflight: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._inflight_total = self._peak_total = 0  # every login together (sub-accounts in parallel)
        self._status_inflight: dict[str, int] = {}
        self._status_peak = 0
        self._errors_in_a_row: dict[str, int] = {}
        self._blocked_until: dict[str, int] = {}  # client ip -> ms
        self._auth_fails: dict[str, deque[int]] = {}  # client ip -> ms of wrong-password answers

    # -- configuration ---------------------------------------------------------------------------

    @property
    def config(self) -> SimConfig:
        return self._config

    def configure(self, changes: Mapping[str, Any] | None = None, /, **kwargs: Any) -> SimConfig:
        """Change the config at run time; ``balance`` also sets the current balance, ``seed`` reseeds."""
        merged = {**(changes or {}), **kwargs}
        with self._lock:
            self._config = self._config.replace(merged)
            if "balance" in merged:
                self._balance = self._config.balance
            if "seed" in merged:
                self._rng = random.Random(self._config.seed)
            return self._config

    def reset(self) -> None:
        """Forget every message, counter, window and block; the balance returns to ``config.balance``."""
        with self._lock:
            self._reset_state()
            self._idle.notify_all()
        self._pusher.clear()

    # -- delivery and the push -------------------------------------------------------------------

    def push_due(self, now_ms: int | None = None) -> int:
        """Post the status changes due by ``now_ms`` (default: the clock) on this thread; how many were tried."""
        return self._pusher.run_due(now_ms)

    def wait_pushed(self, timeout_s: float = 10.0) -> bool:
        """Wait (real time) until no status post is queued or in flight."""
        return self._pusher.wait_empty(timeout_s)

    def close(self) -> None:
        """Stop the push threads (the server calls this when it closes)."""
        self._pusher.stop()

    def truth(self, offset: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """A page of accepted messages with their fate: id, phone, status, err, final_ms (0: never final),
        as status.php will answer once ``final_ms`` has passed; ``delivery`` off: status 1 (20 flood) at once."""
        with self._lock:
            cfg = self._config
            page = self._ledger.page(offset, limit)
        out = []
        for m in page:
            if m["flood"]:
                status, err, final_ms = 20, 0, m["ts_ms"]
            elif cfg.delivery.enabled:
                status, err, final_ms = cfg.delivery.truth(cfg.seed, m["id"], m["phone"], m["ts_ms"])
            else:
                status, err, final_ms = 1, 0, m["ts_ms"]
            out.append({"id": m["id"], "phone": m["phone"], "status": status, "err": err, "final_ms": final_ms,
                        "accepted_ms": m["ts_ms"]})
        return out

    @property
    def balance(self) -> Decimal:
        with self._lock:
            return self._balance

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait (real time) until no request is in flight, e.g. one accepted after its client left."""
        with self._idle:
            return self._idle.wait_for(lambda: not any(self._inflight.values()), timeout=timeout_s)

    # -- the request -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: Mapping[str, str], *,
               client_ip: str = "127.0.0.1") -> SimResponse:
        """Answer one API request as the provider would (``method`` is accepted for symmetry: GET = POST)."""
        return self.arrive(method, path, params, client_ip=client_ip).finish()

    def arrive(self, method: str, path: str, params: Mapping[str, str], *,
               client_ip: str = "127.0.0.1") -> SimRequest:
        """A request arrives: count it in flight, judge the concurrency limits, draw its processing time."""
        del method  # the provider reads GET query and POST body alike
        if path not in API_PATHS:
            return SimRequest(self, SimResponse(404, "not found"))
        cfg = self._config
        login = self._login_of(params, cfg)
        fmt = _small_int(params.get("fmt"), 0, 3)
        is_status = path == STATUS_PATH
        with self._lock:
            self._requests += 1
            inflight = self._inflight.get(login, 0) + 1
            self._inflight[login] = inflight
            self._peak[login] = max(self._peak.get(login, 0), inflight)
            self._inflight_total += 1
            self._peak_total = max(self._peak_total, self._inflight_total)
            status_inflight = 0
            if is_status:
                status_inflight = self._status_inflight.get(login, 0) + 1
                self._status_inflight[login] = status_inflight
                self._status_peak = max(self._status_peak, status_inflight)
            request = SimRequest(self, login=login, status=is_status, generation=self._generation)
            processing_s = self._latency_s(cfg)
            refusal: _Answer | None = None
            if inflight >= MAX_CONCURRENT:
                refusal = _Answer(9, breach="concurrency")
            elif status_inflight >= MAX_STATUS_CONCURRENT:
                refusal = _Answer(9, breach="status_concurrency")
            if refusal is not None:  # refused at the door, without the processing time
                answer = self._error(refusal, fmt if fmt is not None else 0, path, login, client_ip,
                                     self._now_ms())
                self._release_locked(request)
                return SimRequest(self, answer)
            if path in SEND_PATHS and cfg.slow_accept_rate and self._rng.random() < cfg.slow_accept_rate:
                processing_s += cfg.slow_accept_s
                self._slow += 1
        request.processing_s = processing_s
        request._work = lambda: self._process(path, params, login, client_ip, fmt)
        return request

    def _release(self, request: SimRequest) -> None:
        with self._lock:
            self._release_locked(request)

    def _release_locked(self, request: SimRequest) -> None:
        if request.generation != self._generation:
            return
        self._inflight[request.login] -= 1
        self._inflight_total -= 1
        if request.status:
            self._status_inflight[request.login] -= 1
        self._idle.notify_all()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _process(self, path: str, params: Mapping[str, str], login: str, client_ip: str,
                 fmt: int | None) -> tuple[SimResponse, bool]:
        """The answer (under the lock, once the processing time is spent) and whether messages were accepted."""
        cfg = self._config
        if cfg.reset_rate and self._rng.random() < cfg.reset_rate:
            self._resets += 1
            return SimResponse(0, "", reset=True), False
        if cfg.http500_rate and self._rng.random() < cfg.http500_rate:
            self._http500 += 1
            return SimResponse(500, "Internal Server Error"), False
        now_ms = self._now_ms()
        try:
            if self._blocked_until.get(client_ip, 0) > now_ms:
                raise _Answer(4)
            self._authenticate(params, cfg, client_ip, now_ms)
            if fmt is None:
                raise _Answer(1)
            accepted = False
            if path in SEND_PATHS:
                response, accepted = self._send(params, login, fmt, now_ms)
            elif path == STATUS_PATH:
                response = self._status(params, login, fmt, now_ms)
            else:
                response = self._balance_answer(params, login, fmt, now_ms)
            self._errors_in_a_row[login] = 0  # any answer that is not an error ends the streak
            return response, accepted
        except _Answer as answer:
            return self._error(answer, fmt if fmt is not None else 0, path, login, client_ip, now_ms), False

    def _error(self, answer: _Answer, fmt: int, path: str, login: str, client_ip: str,
               now_ms: int) -> SimResponse:
        """Count an error answer (its breach, and the error streak of every endpoint) and format it."""
        del path  # every endpoint's errors count toward the block (provider FAQ)
        self._errors[answer.code] = self._errors.get(answer.code, 0) + 1
        if answer.breach is not None:
            self._breaches[answer.breach] += 1
        if answer.code != 4:
            streak = self._errors_in_a_row.get(login, 0) + 1
            self._errors_in_a_row[login] = streak
            if streak >= ERRORS_BEFORE_BLOCK:
                self._errors_in_a_row[login] = 0
                self._blocked_until[client_ip] = now_ms + ERROR_BLOCK_MS
                self._breaches["ip_blocked"] += 1
        body = rules.error_body(answer.code, fmt, answer.message_id, answer.text)
        return SimResponse(200, body, content_type=_CONTENT_TYPES[fmt])

    @staticmethod
    def _login_of(params: Mapping[str, str], cfg: SimConfig) -> str:
        if "login" in params:
            return params["login"]
        if cfg.apikey is not None and params.get("apikey") == cfg.apikey:
            return cfg.login
        return "apikey:?" if "apikey" in params else "?"

    def _latency_s(self, cfg: SimConfig) -> float:
        ms = cfg.latency_ms
        if cfg.latency_jitter_ms:
            ms += self._rng.uniform(-cfg.latency_jitter_ms, cfg.latency_jitter_ms)
        return max(ms, 0.0) / 1000.0

    def _authenticate(self, params: Mapping[str, str], cfg: SimConfig, client_ip: str, now_ms: int) -> None:
        if "login" in params:
            login, psw = params["login"], params.get("psw")
            ok = (login == cfg.login and psw == cfg.password) or (login in cfg.logins and psw == cfg.logins[login])
        else:
            ok = cfg.apikey is not None and params.get("apikey") == cfg.apikey
        if ok:
            return
        fails = self._auth_fails.setdefault(client_ip, deque())
        fails.append(now_ms)
        while fails and fails[0] <= now_ms - AUTH_WINDOW_MS:
            fails.popleft()
        if len(fails) >= AUTH_FAILS_BEFORE_BLOCK:
            fails.clear()
            self._blocked_until[client_ip] = now_ms + AUTH_BLOCK_MS
            self._breaches["auth_block"] += 1
        raise _Answer(2)

    # -- send.php --------------------------------------------------------------------------------

    def _send(self, params: Mapping[str, str], login: str, fmt: int, now_ms: int) -> tuple[SimResponse, bool]:
        cfg = self._config
        cost_mode = _small_int(params.get("cost"), 0, 3)
        given_id = params.get("id")
        if given_id in ("", "0"):  # the official libraries send id=0 when the caller gives none
            given_id = None
        if cost_mode is None or (given_id is not None and not rules.valid_id(given_id)):
            raise _Answer(1)
        # Without an id the provider assigns one to a send (echoed by errors 3, 6, 7, 8 and by the answer);
        # a cost request sends nothing and gets none ("0,-N" in fmt=1, as the official libraries expect).
        message_id = given_id
        if message_id is None and cost_mode != 1:
            message_id = str(next(self._auto_ids))
        try:
            lines = rules.parse_lines(params)
            options = rules.parse_options(params)
            if "time" in params and params["time"].strip() and not rules.valid_time(params["time"]):
                raise rules.ParamError(5, "invalid time")
        except rules.ParamError as exc:
            raise _Answer(exc.code, message_id=message_id) from exc
        for line in lines:
            sender = line.sender if line.sender is not None else params.get("sender")
            if sender is not None and not self._sender_ok(sender, cfg):
                raise _Answer(6, message_id=message_id)
            lowered = line.text.lower()
            if any(word.lower() in lowered for word in cfg.forbidden_words):
                raise _Answer(6, message_id=message_id)
        for code, rate in sorted(cfg.error_rates.items()):
            if rate and self._rng.random() < rate:
                raise _Answer(code, message_id=message_id)

        price = cfg.price_per_part
        outcomes: list[rules.Outcome] = []
        accepted: list[tuple[str, str, int]] = []  # (digits, text, parts)
        variants: list[tuple[str, rules.MessageOptions] | None] = []  # (delivered text, options) when given
        senders: list[str | None] = []
        plain = options.default
        request_sender = params.get("sender")
        any_sender = request_sender is not None or any(line.sender is not None for line in lines)
        for line in lines:
            line_sender = line.sender if line.sender is not None else request_sender
            variant: tuple[str, rules.MessageOptions] | None = None
            if plain:
                parts = self._ledger.parts_of(line.text, count_segments)
            else:
                delivered = delivered_text(line.text, translit=options.translit, tinyurl=options.tinyurl)
                parts = count_segments(delivered).parts
                if options.maxsms is not None and parts > options.maxsms:
                    parts = options.maxsms
                    delivered = delivered_text(delivered, maxsms=options.maxsms)
                variant = (delivered, options)
            for raw in line.phones:
                digits = rules.provider_phone(raw, autocorrect=cfg.autocorrect)
                if digits is None:
                    outcomes.append(rules.Outcome(raw, Decimal(0), 22, 7, mccmnc=""))
                elif any(digits.startswith(p.lstrip("+")) for p in cfg.undeliverable_prefixes):
                    outcomes.append(rules.Outcome(digits, Decimal(0), 20, 8))
                else:
                    outcomes.append(rules.Outcome(digits, price * parts, 0, 0))
                    accepted.append((digits, line.text, parts))
                    variants.append(variant)
                    senders.append(line_sender)
        if not accepted:
            code = 7 if all(o.error == 7 for o in outcomes) else 8
            raise _Answer(code, message_id=message_id)
        cnt = sum(parts for _, _, parts in accepted)
        total = price * cnt

        fingerprint = _fingerprint(params)
        if cost_mode == 1:
            if not self._windows.admit_cost(fingerprint, now_ms):
                raise _Answer(9, breach="identical_cost")
            answer = rules.SendAnswer(None, cnt, total, self._balance, tuple(outcomes))
            return self._send_response(answer, fmt, cost_mode, params), False
        assert message_id is not None  # a send always has one, given or assigned
        if not self._windows.admit_send(fingerprint, now_ms):
            raise _Answer(9, breach="identical_send")
        if total > self._balance:
            raise _Answer(3, message_id=message_id)
        self._balance -= total
        self._windows.remember_send(fingerprint, now_ms)
        floods = self._ledger.add_request(now_ms, login, message_id, accepted, None if plain else variants,
                                          senders if any_sender else None)
        self._breaches["flood"] += floods
        delivery = cfg.delivery
        if delivery.enabled and delivery.push_url:
            flags = self._ledger.last_flood_flags(len(accepted))
            for (digits, _, parts), flood in zip(accepted, flags, strict=True):
                if flood:
                    status, err, final_ms = 20, 0, now_ms
                else:
                    status, err, final_ms = delivery.truth(cfg.seed, message_id, digits, now_ms)
                self._pusher.schedule(message_id=message_id, phone=digits, accepted_ms=now_ms, parts=parts,
                                      status=status, err=err, final_ms=final_ms,
                                      intermediate=delivery.push_intermediate)
        answer = rules.SendAnswer(message_id, cnt, total, self._balance, tuple(outcomes))
        response = self._send_response(answer, fmt, cost_mode, params)
        if cfg.delayed_answer_rate and self._rng.random() < cfg.delayed_answer_rate:
            self._delayed += 1
            return dataclasses.replace(response, delay_s=cfg.delayed_answer_s), True
        return response, True

    @staticmethod
    def _sender_ok(sender: str, cfg: SimConfig) -> bool:
        if not rules.valid_sender(sender):
            return False
        return cfg.allowed_senders is None or sender in cfg.allowed_senders

    @staticmethod
    def _send_response(answer: rules.SendAnswer, fmt: int, cost_mode: int,
                       params: Mapping[str, str]) -> SimResponse:
        body = rules.send_body(answer, fmt=fmt, cost_mode=cost_mode, op=params.get("op") == "1")
        return SimResponse(200, body, content_type=_CONTENT_TYPES[fmt])

    # -- status.php and balance.php --------------------------------------------------------------

    def _status(self, params: Mapping[str, str], login: str, fmt: int, now_ms: int) -> SimResponse:
        cfg = self._config
        raw_phones = params.get("phone", "").split(",")
        raw_ids = params.get("id", "").split(",")
        listed = len(raw_phones) > 1 or len(raw_ids) > 1  # the list form: any comma, even a trailing one
        if listed and not raw_phones[-1].strip() and not raw_ids[-1].strip():
            raw_phones, raw_ids = raw_phones[:-1], raw_ids[:-1]
        phones = [p.strip() for p in raw_phones]
        ids = [i.strip() for i in raw_ids]
        if not phones or not all(phones) or not all(ids) or len(phones) != len(ids):
            raise _Answer(1)
        pairs = list(zip(phones, ids, strict=True))
        breach = self._windows.admit_status(login, pairs, now_ms, mass=listed,
                                            strict_mass=cfg.strict_mass_status)
        if breach is not None:
            raise _Answer(9, breach=breach)
        lag_ms = round(cfg.status_lag_s * 1000)
        # all=1 (and 2): the full form, which also says what the message cost and how many SMS it was.
        full = (_small_int(params.get("all"), 0, 2) or 0) >= 1
        answers = []
        for (phone, mid), hit in zip(pairs, self._ledger.find(pairs), strict=True):
            echo = rules.normalize_phone(phone) or phone
            if hit is not None and now_ms < hit[0] + lag_ms:
                hit = None  # accepted, but not yet known to status.php
            if hit is None:
                if cfg.status_not_found_error and not listed:
                    raise _Answer(3, text=NOT_FOUND_TEXT)
                answers.append(rules.StatusAnswer(echo, mid, -3, 0, 0, ""))
                continue
            ts_ms, flood, parts = hit
            # A message the flood rule held back is never delivered: 20 "cannot be delivered".
            status, err = (20, 0) if flood else (1, 0)
            if cfg.delivery.enabled and not flood:
                status, err, ts_ms = cfg.delivery.status_at(cfg.seed, mid, rules.normalize_phone(phone) or phone,
                                                            ts_ms, now_ms)
            ts = ts_ms // 1000
            when = time.strftime("%d.%m.%Y %H:%M:%S", time.gmtime(ts + MSK_OFFSET_S))
            answers.append(rules.StatusAnswer(echo, mid, status, err, ts, when,
                                              cost=cfg.price_per_part * parts, parts=parts))
        body = rules.status_body(answers, fmt=fmt, listed=listed, full=full)
        return SimResponse(200, body, content_type=_CONTENT_TYPES[fmt])

    def _balance_answer(self, params: Mapping[str, str], login: str, fmt: int, now_ms: int) -> SimResponse:
        if not self._windows.admit_balance(login, now_ms):
            raise _Answer(9, breach="balance_rate")
        currency = params.get("cur") == "1"
        return SimResponse(200, rules.balance_body(self._balance, fmt=fmt, currency=currency),
                           content_type=_CONTENT_TYPES[fmt])

    # -- the record ------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counters: messages, unique_messages, duplicates, requests, breaches, peak_inflight (of the busiest
        login), peak_inflight_by_login, peak_inflight_total (all logins at once), errors..."""
        with self._lock:
            ledger = self._ledger
            return {
                "messages": ledger.messages,
                "unique_messages": ledger.unique,
                "duplicates": ledger.messages - ledger.unique,
                "requests": self._requests,
                "breaches": dict(self._breaches),
                "peak_inflight": max(self._peak.values(), default=0),
                "peak_inflight_by_login": dict(self._peak),
                "peak_inflight_total": self._peak_total,
                "peak_status_inflight": self._status_peak,
                "inflight": sum(self._inflight.values()),
                "errors_answered": dict(sorted(self._errors.items())),
                "errors_in_a_row": dict(self._errors_in_a_row),
                "http500": self._http500,
                "resets": self._resets,
                "delayed": self._delayed,
                "slow_requests": self._slow,
                "accepted_after_client_gone": self._accepted_after_gone,
                "flood_flagged": ledger.flagged,
                "balance": str(self._balance),
                "delivery": self._pusher.stats(),
            }

    def record(self, offset: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """A page of accepted messages, oldest first: ts_ms, login, id, phone, text (as received, byte for
        byte), parts (billed), flood, delivered (the text after tinyurl, translit and maxsms), options
        (``translit``, ``tinyurl``, ``flash``, ``valid``, ``maxsms`` as the request gave them) and sender
        (the ``list`` line's, else the request's; ``None`` when none was given)."""
        with self._lock:
            return self._ledger.page(offset, limit)

    def phones(self) -> dict[str, int]:
        """Phone (digits only) -> number of accepted messages: the exactly-once check."""
        with self._lock:
            return self._ledger.phone_counts()


def _small_int(value: str | None, low: int, high: int) -> int | None:
    """``fmt``/``cost``: absent = ``low``; anything else than an integer ``low..high`` = ``None``."""
    if value is None or value == "":
        return low
    try:
        number = int(value)
    except ValueError:
        return None
    return number if low <= number <= high else None


def _fingerprint(params: Mapping[str, str]) -> bytes:
    """What "identical request" means: every parameter, login and password included, order ignored."""
    digest = hashlib.sha1(usedforsecurity=False)
    for key in sorted(params):
        digest.update(key.encode() + b"\0" + params[key].encode("utf-8", "surrogatepass") + b"\0")
    return digest.digest()
