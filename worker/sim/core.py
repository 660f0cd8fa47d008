"""A production-quality simulator of the SMSC HTTP API: one core mapping a request to the provider's answer.

:class:`Simulator` has no sockets: :func:`worker.sim.server.serve` serves it over HTTP (integration
tests, the demo, the benchmark) and :class:`worker.sim.transport.SimTransport` plugs it into an ``httpx.Client``
(unit tests). It answers ``/sys/send.php``, ``/rest/send/``, ``/sys/status.php`` and ``/sys/balance.php``
as ``smsc-http-api.md`` describes, enforces and **counts** the provider's anti-abuse rules as breaches,
injects faults, and records every accepted message compactly (about 40 bytes a message plus one entry
per distinct phone, so a million messages fit in a couple of hundred megabytes).

Timing model: a request is *in flight* from its arrival until its answer is ready. The configured
latency is the provider's processing time, spent inside :meth:`Simulator.handle` while the request
counts as in flight; ``SimResponse.delay_s`` (the delayed-answer fault) is spent by the caller after the
answer is ready, when the request no longer counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from worker.sim import rules
from worker.sim.state import Ledger, Windows
from worker.smsc.encoding import count_segments

__all__ = ["BREACHES", "SimConfig", "SimResponse", "Simulator"]

# Every breach the summary reports, always present (0 when none happened).
BREACHES: Final = ("identical_send", "identical_cost", "concurrency", "flood", "status_rate",
                   "ip_blocked", "auth_block")
SEND_PATHS: Final = frozenset({"/sys/send.php", "/rest/send/"})
STATUS_PATH: Final = "/sys/status.php"
BALANCE_PATH: Final = "/sys/balance.php"

MAX_CONCURRENT: Final = 15  # the 15th concurrent request of a login is refused (error 9)
ERRORS_BEFORE_BLOCK: Final = 100  # erroneous send requests in a row before the IP is blocked ...
ERROR_BLOCK_MS: Final = 10 * 60_000  # ... for 10 minutes (provider FAQ)
AUTH_FAILS_BEFORE_BLOCK: Final = 5  # wrong-password answers within AUTH_WINDOW_MS before a block ...
AUTH_WINDOW_MS: Final = 30 * 60_000
AUTH_BLOCK_MS: Final = 30 * 60_000  # ... of 30 minutes (provider FAQ)
MSK_OFFSET_S: Final = 3 * 3600  # last_date is written in Moscow time, like the provider's


@dataclass(frozen=True)
class SimConfig:
    """The simulated account and the injected faults; every rate is a probability 0..1 per request.

    ``error_rates`` maps a provider error code (1..9) to the probability that a send request is answered
    with it instead of being accepted. ``reset_rate``: the connection is closed without an answer and
    nothing is accepted. ``delayed_answer_rate``: the messages are accepted and recorded, but the answer
    comes only after ``delayed_answer_s`` (past the client's timeout). ``allowed_senders`` ``None``
    accepts any well-formed sender; ``forbidden_words`` in a text answer error 6;
    ``undeliverable_prefixes`` make numbers answer error 8.
    """

    login: str = "demo"
    password: str = field(default="demo-password", repr=False)
    apikey: str | None = field(default=None, repr=False)
    balance: Decimal = Decimal("1000000")
    price_per_part: Decimal = Decimal("1.50")
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rates: Mapping[int, float] = field(default_factory=dict)
    http500_rate: float = 0.0
    reset_rate: float = 0.0
    delayed_answer_rate: float = 0.0
    delayed_answer_s: float = 35.0  # past the client's default 30 s timeout
    seed: int | None = None
    allowed_senders: frozenset[str] | None = None
    forbidden_words: tuple[str, ...] = ()
    undeliverable_prefixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "balance", Decimal(str(self.balance)))
        object.__setattr__(self, "price_per_part", Decimal(str(self.price_per_part)))
        rates = {int(code): float(rate) for code, rate in dict(self.error_rates).items()}
        object.__setattr__(self, "error_rates", rates)
        for code, rate in rates.items():
            if not 1 <= code <= 9:
                raise ValueError(f"error_rates: code {code} is not a provider error code (1..9)")
            _check_rate(f"error_rates[{code}]", rate)
        for name in ("http500_rate", "reset_rate", "delayed_answer_rate"):
            _check_rate(name, float(getattr(self, name)))
        if self.latency_ms < 0 or self.latency_jitter_ms < 0 or self.delayed_answer_s < 0:
            raise ValueError("latency_ms, latency_jitter_ms and delayed_answer_s must be >= 0")
        if self.allowed_senders is not None:
            object.__setattr__(self, "allowed_senders", frozenset(self.allowed_senders))
        object.__setattr__(self, "forbidden_words", tuple(self.forbidden_words))
        object.__setattr__(self, "undeliverable_prefixes", tuple(self.undeliverable_prefixes))

    def replace(self, changes: Mapping[str, Any]) -> SimConfig:
        """A copy with ``changes`` applied, JSON-friendly: ``{"error_rates": {"9": 0.2}, "balance": "5"}``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        values = dict(changes)
        if values.get("allowed_senders") is not None:
            values["allowed_senders"] = frozenset(values["allowed_senders"])
        for name in ("forbidden_words", "undeliverable_prefixes"):
            if name in values:
                values[name] = tuple(values[name])
        try:
            return dataclasses.replace(self, **values)
        except (TypeError, ArithmeticError) as exc:
            raise ValueError(str(exc)) from exc

    def public(self) -> dict[str, Any]:
        """The config as JSON-ready data, secrets masked."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("password", "apikey"):
                value = None if value is None else "***"
            elif isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, frozenset | tuple):
                value = sorted(value) if isinstance(value, frozenset) else list(value)
            elif f.name == "error_rates":
                value = {str(k): v for k, v in value.items()}
            out[f.name] = value
        return out


def _check_rate(name: str, rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be a probability 0..1, got {rate}")


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

    def __init__(self, code: int, *, breach: str | None = None, message_id: str | None = None) -> None:
        super().__init__(code)
        self.code, self.breach, self.message_id = code, breach, message_id


class Simulator:
    """The simulated provider: ``handle()`` a request, read ``summary()`` and ``record()``.

    Thread-safe: one lock guards the state; the latency is slept outside it. ``clock`` (seconds since
    the epoch) and ``sleep`` are injectable so that unit tests can step time.
    """

    def __init__(self, config: SimConfig | None = None, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._config = config if config is not None else SimConfig()
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._reset_state()

    def _reset_state(self) -> None:
        self._rng = random.Random(self._config.seed)
        self._balance = self._config.balance
        self._ledger = Ledger()
        self._windows = Windows()
        self._auto_ids = itertools.count(1_000_000)
        self._requests = 0
        self._breaches = dict.fromkeys(BREACHES, 0)
        self._errors: dict[int, int] = {}
        self._http500 = self._resets = self._delayed = 0
        self._inflight: dict[str, int] = {}
        self._peak: dict[str, int] = {}
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

    @property
    def balance(self) -> Decimal:
        with self._lock:
            return self._balance

    # -- the request -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: Mapping[str, str], *,
               client_ip: str = "127.0.0.1") -> SimResponse:
        """Answer one API request as the provider would (``method`` is accepted for symmetry: GET = POST)."""
        del method  # the provider reads GET query and POST body alike
        if path not in SEND_PATHS and path not in (STATUS_PATH, BALANCE_PATH):
            return SimResponse(404, "not found")
        cfg = self._config
        login = self._login_of(params, cfg)
        fmt = _small_int(params.get("fmt"), 0, 3)
        with self._lock:
            self._requests += 1
            inflight = self._inflight.get(login, 0) + 1
            self._inflight[login] = inflight
            self._peak[login] = max(self._peak.get(login, 0), inflight)
            latency_s = self._latency_s(cfg)
        try:
            if inflight >= MAX_CONCURRENT:
                with self._lock:  # refused at the door, without the processing time
                    now_ms = int(self.clock() * 1000)
                    return self._error(_Answer(9, breach="concurrency"), fmt if fmt is not None else 0,
                                       path, login, client_ip, now_ms)
            if latency_s > 0:
                self.sleep(latency_s)
            with self._lock:
                return self._process(path, params, login, client_ip, fmt)
        finally:
            with self._lock:
                self._inflight[login] -= 1

    def _process(self, path: str, params: Mapping[str, str], login: str, client_ip: str,
                 fmt: int | None) -> SimResponse:
        cfg = self._config
        if cfg.reset_rate and self._rng.random() < cfg.reset_rate:
            self._resets += 1
            return SimResponse(0, "", reset=True)
        if cfg.http500_rate and self._rng.random() < cfg.http500_rate:
            self._http500 += 1
            return SimResponse(500, "Internal Server Error")
        now_ms = int(self.clock() * 1000)
        try:
            if self._blocked_until.get(client_ip, 0) > now_ms:
                raise _Answer(4)
            self._authenticate(params, cfg, client_ip, now_ms)
            if fmt is None:
                raise _Answer(1)
            if path in SEND_PATHS:
                response = self._send(params, login, fmt, now_ms)
                self._errors_in_a_row[login] = 0
                return response
            if path == STATUS_PATH:
                return self._status(params, fmt, now_ms)
            currency = params.get("cur") == "1"
            return SimResponse(200, rules.balance_body(self._balance, fmt=fmt, currency=currency),
                               content_type=_CONTENT_TYPES[fmt])
        except _Answer as answer:
            return self._error(answer, fmt if fmt is not None else 0, path, login, client_ip, now_ms)

    def _error(self, answer: _Answer, fmt: int, path: str, login: str, client_ip: str,
               now_ms: int) -> SimResponse:
        """Count an error answer (and its breach, and the send-error streak) and format it."""
        self._errors[answer.code] = self._errors.get(answer.code, 0) + 1
        if answer.breach is not None:
            self._breaches[answer.breach] += 1
        if path in SEND_PATHS and answer.code != 4:
            streak = self._errors_in_a_row.get(login, 0) + 1
            self._errors_in_a_row[login] = streak
            if streak >= ERRORS_BEFORE_BLOCK:
                self._errors_in_a_row[login] = 0
                self._blocked_until[client_ip] = now_ms + ERROR_BLOCK_MS
                self._breaches["ip_blocked"] += 1
        body = rules.error_body(answer.code, fmt, answer.message_id)
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
            ok = params["login"] == cfg.login and params.get("psw") == cfg.password
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

    def _send(self, params: Mapping[str, str], login: str, fmt: int, now_ms: int) -> SimResponse:
        cfg = self._config
        cost_mode = _small_int(params.get("cost"), 0, 3)
        given_id = params.get("id")
        if cost_mode is None or (given_id is not None and not rules.valid_id(given_id)):
            raise _Answer(1)
        # Without an id the provider assigns one (echoed by errors 3, 6, 7, 8 and by the answer).
        message_id = given_id if given_id is not None else str(next(self._auto_ids))
        try:
            lines = rules.parse_lines(params)
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
        for line in lines:
            parts = self._ledger.parts_of(line.text, count_segments)
            for raw in line.phones:
                digits = rules.normalize_phone(raw)
                if digits is None:
                    outcomes.append(rules.Outcome(raw, Decimal(0), 22, 7, mccmnc=""))
                elif any(digits.startswith(p.lstrip("+")) for p in cfg.undeliverable_prefixes):
                    outcomes.append(rules.Outcome(digits, Decimal(0), 20, 8))
                else:
                    outcomes.append(rules.Outcome(digits, price * parts, 0, 0))
                    accepted.append((digits, line.text, parts))
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
            return self._send_response(answer, fmt, cost_mode, params)
        if not self._windows.admit_send(fingerprint, now_ms):
            raise _Answer(9, breach="identical_send")
        if total > self._balance:
            raise _Answer(3, message_id=message_id)
        self._balance -= total
        self._windows.remember_send(fingerprint, now_ms)
        floods = self._ledger.add_request(now_ms, login, message_id, accepted)
        self._breaches["flood"] += floods
        answer = rules.SendAnswer(message_id, cnt, total, self._balance, tuple(outcomes))
        response = self._send_response(answer, fmt, cost_mode, params)
        if cfg.delayed_answer_rate and self._rng.random() < cfg.delayed_answer_rate:
            self._delayed += 1
            return dataclasses.replace(response, delay_s=cfg.delayed_answer_s)
        return response

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

    # -- status.php ------------------------------------------------------------------------------

    def _status(self, params: Mapping[str, str], fmt: int, now_ms: int) -> SimResponse:
        phones = [p.strip() for p in params.get("phone", "").split(",")]
        ids = [i.strip() for i in params.get("id", "").split(",")]
        if not all(phones) or not all(ids) or len(phones) != len(ids):
            raise _Answer(1)
        pairs = list(zip(phones, ids, strict=True))
        if not self._windows.admit_status(pairs, now_ms):
            raise _Answer(9, breach="status_rate")
        found = self._ledger.find(pairs)
        answers = []
        for (phone, mid), hit in zip(pairs, found, strict=True):
            if hit is None:
                answers.append(rules.StatusAnswer(phone, mid, -3, 0, 0, ""))
                continue
            ts_ms, flood = hit
            ts = ts_ms // 1000
            when = time.strftime("%d.%m.%Y %H:%M:%S", time.gmtime(ts + MSK_OFFSET_S))
            # A message the flood rule held back is never delivered: 20 "cannot be delivered".
            status, err = (20, 0) if flood else (1, 0)
            answers.append(rules.StatusAnswer(phone, mid, status, err, ts, when))
        return SimResponse(200, rules.status_body(answers, fmt=fmt), content_type=_CONTENT_TYPES[fmt])

    # -- the record ------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counters: messages, unique_messages, duplicates, requests, breaches, peak_inflight, errors..."""
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
                "inflight": sum(self._inflight.values()),
                "errors_answered": dict(sorted(self._errors.items())),
                "errors_in_a_row": dict(self._errors_in_a_row),
                "http500": self._http500,
                "resets": self._resets,
                "delayed": self._delayed,
                "flood_flagged": ledger.flagged,
                "balance": str(self._balance),
            }

    def record(self, offset: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """A page of accepted messages, oldest first: ts_ms, login, id, phone, text, parts, flood."""
        with self._lock:
            return self._ledger.page(offset, limit)

    def phones(self) -> dict[str, int]:
        """Phone (digits only) -> number of accepted messages: the exactly-once check."""
        with self._lock:
            return self._ledger.phone_counts()

    def iter_record(self, batch: int = 10_000) -> Iterator[dict[str, Any]]:
        """Every accepted message, oldest first, read in pages (safe while requests keep coming)."""
        offset = 0
        while page := self.record(offset, batch):
            yield from page
            offset += len(page)


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
