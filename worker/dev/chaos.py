"""``make chaos``: nothing lost, nothing twice — with real processes and real faults.

Each scenario brings up its own :class:`worker.dev.stack.Stack` (a private redis-server with AOF,
``appendfsync everysec``; the provider simulator; Celery workers and beat as real processes), enqueues
one campaign, injects its fault while the campaign runs, waits for the campaign to end, and compares
what the simulator recorded with the recipients:

- ``worker-kills``: a worker killed with SIGKILL (main process and pool) in the middle of a batch,
  three times during the campaign, a new worker started each time;
- ``redis-restart``: the redis-server killed with SIGKILL mid-campaign and started again from its AOF
  (the broker's messages in flight are gone, perhaps the last second of writes too);
- ``provider-faults``: HTTP 500, connection resets, errors 9 and 4, and answers that come only after the
  client's timeout although the messages were taken (unknown outcomes, settled through status.php);
- ``two-beats``: two beat processes dispatching at once.

Figures per scenario: ``lost`` (recipients the simulator never got), ``duplicated`` (numbers that got
more than one message), ``breaches`` (the simulator's count of broken provider rules) and ``leaks``
(places where the account's password was found: every Redis key and value, the broker's queues
included, every log file, every request line the simulator logged). All must be 0, and the campaign
must end ``completed`` with every recipient counted ``sent``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

from scheduler.keys import Keys, text
from worker.dev.stack import Stack

__all__ = [
    "LOGIN",
    "PASSWORD",
    "SCENARIOS",
    "ScenarioResult",
    "find_secret_in_files",
    "find_secret_in_redis",
    "main",
    "scenario_provider_faults",
    "scenario_redis_restart",
    "scenario_two_beats",
    "scenario_worker_kills",
]

log = logging.getLogger(__name__)

#: The simulated account. The password is distinctive so that a grep finds it wherever it leaked.
LOGIN = "chaos"
PASSWORD = "S3cret-Pa55-chaos"  # noqa: S105 - the local simulator's account, not a real secret
MESSAGE = "Chaos drill: your order has shipped. Track it at example.com/t/4711"

#: The knobs that make faults settle fast: a short client timeout (an unknown outcome is settled
#: timeout + 2 s after its request), a short lease (a killed worker's batches come back within
#: 10 s), a 1 s first account back-off, batches small enough that kills land mid-batch.
TIMEOUT_S = 2.0
KNOBS = {"SMSC_LEASE": "10", "SMSC_BACKOFF": "1", "SMSC_BATCH_SIZE": "100"}
#: Provider processing time: long enough that a SIGKILL lands while a request is in flight.
LATENCY_MS = 150


@dataclass
class ScenarioResult:
    name: str
    recipients: int
    lost: int
    duplicated: int
    breaches: int
    state: str
    notes: str = ""
    sent: int = 0
    leaks: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.lost == self.duplicated == self.breaches == self.leaks == 0
                and self.state == "completed" and self.sent == self.recipients)


# ------------------------------------------------------------------------------------ secret search


def _decodings(value: bytes, depth: int = 4) -> Iterator[bytes]:
    """``value`` and whatever is wrapped inside it: JSON (strings inside JSON inside JSON, as in kombu's
    ``unacked`` entries) and base64 (kombu's message bodies)."""
    yield value
    if depth == 0:
        return
    if len(value) >= 8 and len(value) % 4 == 0 and value[:1] not in (b"{", b"["):
        with contextlib.suppress(binascii.Error, ValueError):
            yield from _decodings(base64.b64decode(value, validate=True), depth - 1)
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return
    items: list[Any] = [obj]
    while items:
        item = items.pop()
        if isinstance(item, dict):
            items.extend(item.keys())
            items.extend(item.values())
        elif isinstance(item, list):
            items.extend(item)
        elif isinstance(item, str):
            yield from _decodings(item.encode(), depth - 1)


def _values(client: redis.Redis, key: bytes) -> list[Any]:
    """Every member and value of ``key``, whatever its type (hash fields and stream fields included)."""
    kind = text(client.type(key))
    if kind == "string":
        return [client.get(key)]
    if kind == "hash":
        return [x for kv in client.hgetall(key).items() for x in kv]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    if kind == "stream":
        return [x for _, fields in client.xrange(key) or () for kv in (fields or {}).items() for x in kv]
    return []


def find_secret_in_redis(client: redis.Redis, secret: str) -> list[str]:
    """Every key whose name or value holds ``secret`` (SCAN over the whole db, every type read; Celery's
    queues, ``unacked`` and kombu bindings included, their base64 message bodies decoded)."""
    needle = secret.encode()
    hits = []
    for key in client.scan_iter(count=1000):
        if needle in key:
            hits.append(f"redis key {key!r}")
            continue
        try:
            values = list(_values(client, key))
        except redis.ResponseError:  # the key changed type or vanished between SCAN and the read
            continue
        if any(needle in d for v in values if isinstance(v, bytes) for d in _decodings(v)):
            hits.append(f"redis value of {key!r}")
    return hits


def find_secret_in_files(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` (logs, the AOF, beat's schedule) that holds ``secret``."""
    needle = secret.encode()
    return [str(p) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


# ------------------------------------------------------------------------------------ the harness


class _Run:
    """One scenario's stack and campaign; the fault is injected by the scenario between start and end."""

    def __init__(self, workdir: Path, name: str, recipients: int, *, workers: int = 2, concurrency: int = 2,
                 beats: int = 1, sim: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                 timeout_s: float = 600) -> None:
        self.name, self.recipients, self.timeout_s = name, recipients, timeout_s
        self.dir = workdir / name
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        sim_options = {"latency_ms": LATENCY_MS, "seed": 7,
                       # DEBUG: the simulator logs every request line, so a password in a URL would show.
                       "extra_args": ["--log-level", "DEBUG"], **(sim or {})}
        self.stack = Stack(workdir=self.dir, appendonly=True, workers=workers, concurrency=concurrency,
                           beats=beats, login=LOGIN, password=PASSWORD, timeout_s=TIMEOUT_S,
                           sim_options=sim_options, env={**KNOBS, **(env or {})})
        self.started = time.monotonic()
        self.cid = ""
        self.notes: list[str] = []
        self.events: list[dict[str, Any]] = []  # what the fault did, for the tests
        self.leaks: set[str] = set()
        self.phones = [f"79{i:09d}" for i in range(10_000_000, 10_000_000 + recipients)]

    # -- lifecycle
    def __enter__(self) -> _Run:
        self.stack.start()
        self.client = self.stack.redis_client(socket_timeout=5, socket_connect_timeout=2)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        self.stack.stop()

    def enqueue(self) -> None:
        from worker.api import enqueue_campaign
        from worker.settings import Settings

        s = Settings(_env_file=None, redis_url=self.stack.redis_url, smsc_login=LOGIN,  # type: ignore[call-arg]
                     smsc_password=SecretStr(PASSWORD), smsc_account=LOGIN, smsc_namespace=self.stack.namespace,
                     smsc_base_url=self.stack.smsc_base_url or "http://127.0.0.1:9",
                     smsc_batch_size=int(self.stack.env["SMSC_BATCH_SIZE"]))
        conn = self.stack.redis_client()
        try:
            receipt = enqueue_campaign(("+" + p for p in self.phones), MESSAGE, settings=s, redis_conn=conn)
        finally:
            conn.close()
        self.cid = receipt.campaign_id
        self.notes.append(f"{receipt.batches} batches")

    # -- looking
    def status(self) -> dict[str, Any]:
        """The campaign's status (waits out a Redis that is restarting)."""
        from scheduler.campaigns import Campaigns
        from scheduler.keys import Keys

        for _ in range(100):
            try:
                return Campaigns(self.client, Keys(self.stack.namespace)).status(self.cid)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                time.sleep(0.2)
        raise RuntimeError("redis did not come back within 20 s")

    def done(self) -> int:
        st = self.status()
        return int(st["sent"] + st["failed"] + st["cancelled"])

    def wait_progress(self, fraction: float) -> None:
        """Until this share of the recipients has a final state (or the campaign ended)."""
        deadline = time.monotonic() + self.timeout_s
        while self.done() < fraction * self.recipients and time.monotonic() < deadline:
            if self.status()["state"] in ("completed", "failed", "cancelled"):
                return
            time.sleep(0.05)

    def wait_request_in_flight(self, timeout_s: float = 3.0) -> bool:
        """Until the simulator is processing a request (so that a kill lands mid-batch)."""
        assert self.stack.simulator is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.stack.simulator.summary()["inflight"] > 0:
                return True
            time.sleep(0.01)
        return False

    def scan(self) -> None:
        """Look for the password in every Redis key and value, now (mid-run: the queues are full)."""
        try:
            self.leaks.update(find_secret_in_redis(self.client, PASSWORD))
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            pass

    def wait_final(self) -> dict[str, Any]:
        deadline = self.started + self.timeout_s
        scanned = False
        while True:
            st = self.status()
            if st["state"] in ("completed", "failed", "cancelled") and st["pending"] == 0:
                return st
            if not scanned and st["sent"] >= self.recipients // 2:
                self.scan()
                scanned = True
            if time.monotonic() > deadline:
                self.notes.append(f"not finished after {self.timeout_s:.0f} s")
                return st
            time.sleep(0.2)

    def result(self, st: dict[str, Any]) -> ScenarioResult:
        assert self.stack.simulator is not None
        time.sleep(0.5)  # a straggling request (there should be none) would still be counted
        self.scan()
        seen = self.stack.simulator.phones()
        summary = self.stack.simulator.summary()
        expected = set(self.phones)
        lost = len(expected - seen.keys())
        extra = len(seen.keys() - expected)
        twice = sum(1 for c in seen.values() if c > 1)
        duplicated = max(twice, int(summary["duplicates"])) + extra
        breaches = sum(int(v) for v in summary["breaches"].values())
        if breaches:
            self.notes.append("breaches " + ",".join(f"{k}={v}" for k, v in summary["breaches"].items() if v))
        faults = _faults(summary)
        if any(faults.values()):
            self.notes.append("faults " + " ".join(f"{k}={v}" for k, v in faults.items() if v))
        return ScenarioResult(self.name, self.recipients, lost, duplicated, breaches, st["state"], "",
                              sent=int(st["sent"]), details={"status": st, "simulator": summary, "faults": faults,
                                                             "events": self.events})

    def finish(self, st: dict[str, Any]) -> ScenarioResult:
        """Count, stop everything (logs flushed), grep the logs, and build the result."""
        res = self.result(st)
        self.stack.stop()
        self.leaks.update(find_secret_in_files(self.dir, PASSWORD))
        res.leaks = len(self.leaks)
        if self.leaks:
            self.notes.append("password found in: " + "; ".join(sorted(self.leaks)[:5]))
        res.seconds = round(time.monotonic() - self.started, 1)
        res.notes = "; ".join(self.notes)
        log.info("chaos %s: %s", self.name, res)
        return res


def _run(workdir: Path, name: str, recipients: int, fault: Callable[[_Run], None], **kwargs: Any) -> ScenarioResult:
    with _Run(workdir, name, recipients, **kwargs) as run:
        run.enqueue()
        fault(run)
        st = run.wait_final()
        return run.finish(st)


# ------------------------------------------------------------------------------------ the scenarios


def scenario_worker_kills(workdir: Path, *, recipients: int) -> ScenarioResult:
    """A worker killed with SIGKILL mid-batch three times during one campaign; a new one started each time."""

    def fault(run: _Run) -> None:
        for k, fraction in enumerate((0.2, 0.45, 0.7), start=1):
            run.wait_progress(fraction)
            victim = next(w for w in run.stack.workers if w.running)
            mid = run.wait_request_in_flight()
            leased = run.client.zcard(Keys(run.stack.namespace).leased)
            at = run.done()
            victim.kill()
            run.events.append({"kill": victim.name, "mid_request": mid, "done": at, "leased": leased})
            run.notes.append(f"kill {k}: {victim.name} at {at}/{run.recipients}"
                             f"{' mid-request' if mid else ''}, {leased} batches leased")
            run.stack.add_worker()

    return _run(workdir, "worker-kills", recipients, fault, workers=2, concurrency=2)


def scenario_redis_restart(workdir: Path, *, recipients: int) -> ScenarioResult:
    """redis-server killed with SIGKILL mid-campaign and started again from its AOF (everysec)."""

    def fault(run: _Run) -> None:
        server = run.stack.redis
        assert server is not None
        run.wait_progress(0.3)
        before = run.client.info("server")["run_id"]
        run.wait_request_in_flight()
        at = run.done()
        server.kill()
        time.sleep(1.0)
        server.start()
        # the broker's queue and unacked messages, as the AOF kept them mid-campaign (scanning before the
        # kill could take long enough on a busy machine for the campaign to end first)
        run.scan()
        after = run.client.info("server")["run_id"]
        run.events.append({"restart": True, "done": at, "run_id_before": before, "run_id_after": after})
        run.notes.append(f"redis SIGKILLed at {at}/{run.recipients} and restarted from its AOF "
                         f"(run id {before[:6]} -> {after[:6]})")

    def fault_and_count(run: _Run) -> None:
        fault(run)
        meta = Keys(run.stack.namespace).meta
        for _ in range(200):  # the workers find the new server and settle what could have left
            try:
                marked, run_id = run.client.hmget(meta, "marked", "run_id")
                current = run.client.info("server")["run_id"]
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                marked, run_id, current = None, None, ""
            if run_id is not None and text(run_id) == current:
                run.notes.append(f"{int(marked or 0)} batches settled through status.php first")
                run.events.append({"marked": int(marked or 0)})
                return
            time.sleep(0.1)

    return _run(workdir, "redis-restart", recipients, fault_and_count, workers=2, concurrency=2)


def scenario_provider_faults(workdir: Path, *, recipients: int) -> ScenarioResult:
    """HTTP 500, resets, errors 9 and 4, and delayed answers (taken, but answered after the timeout)."""

    def fault(run: _Run) -> None:
        assert run.stack.simulator is not None
        sim = run.stack.simulator
        sim.configure(delayed_answer_s=TIMEOUT_S + 1.5)
        run.wait_progress(0.05)  # the account is proven (one answer came back): the full concurrency
        # Each fault at least once for sure (a rate of 1 until it happened), each followed by a good
        # answer so that they are not one streak of errors (that is another test: the account backs off).
        for change, counter in (({"delayed_answer_rate": 1.0}, "delayed"), ({"reset_rate": 1.0}, "resets"),
                                ({"http500_rate": 1.0}, "http500"), ({"error_rates": {"9": 1.0}}, "error9"),
                                ({"error_rates": {"4": 1.0}}, "error4")):
            sim.configure(**change)
            _wait_for_fault(run, counter)
            sim.configure(delayed_answer_rate=0, reset_rate=0, http500_rate=0, error_rates={})
            _wait_for_messages(run, sim.summary()["messages"] + 1)
        # Then a few seconds of a random mix: about one request in four goes wrong (status.php too, for
        # 500s and resets). Every faulted batch is retried or settled; an identical retry waits for the
        # provider's one-minute window, which bounds how long this scenario takes.
        sim.configure(http500_rate=0.06, reset_rate=0.06, delayed_answer_rate=0.08, error_rates={"9": 0.05, "4": 0.03})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and run.done() < 0.6 * run.recipients:
            time.sleep(0.1)
        run.scan()
        sim.configure(http500_rate=0, reset_rate=0, delayed_answer_rate=0, error_rates={})

    return _run(workdir, "provider-faults", recipients, fault, workers=2, concurrency=2,
                env={"SMSC_BATCH_SIZE": "50"})


def _faults(summary: Mapping[str, Any]) -> dict[str, int]:
    errors = {f"error{k}": int(v) for k, v in summary["errors_answered"].items()}
    return {"http500": int(summary["http500"]), "resets": int(summary["resets"]),
            "delayed": int(summary["delayed"]), **errors}


def _wait_for_fault(run: _Run, counter: str, timeout_s: float = 15.0) -> None:
    assert run.stack.simulator is not None
    deadline = time.monotonic() + timeout_s
    while _faults(run.stack.simulator.summary()).get(counter, 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)


def _wait_for_messages(run: _Run, count: int, timeout_s: float = 15.0) -> None:
    assert run.stack.simulator is not None
    deadline = time.monotonic() + timeout_s
    while run.stack.simulator.summary()["messages"] < count and time.monotonic() < deadline:
        time.sleep(0.02)


def scenario_two_beats(workdir: Path, *, recipients: int) -> ScenarioResult:
    """Two beat processes dispatching at once: no batch goes out twice."""

    def fault(run: _Run) -> None:
        run.notes.append(f"{sum(b.running for b in run.stack.beats)} beats")
        run.wait_progress(0.5)
        run.scan()

    return _run(workdir, "two-beats", recipients, fault, workers=2, concurrency=2, beats=2)


#: name -> (scenario, recipients in a full run, recipients with --quick)
SCENARIOS: dict[str, tuple[Callable[..., ScenarioResult], int, int]] = {
    "worker-kills": (scenario_worker_kills, 30_000, 8_000),
    "redis-restart": (scenario_redis_restart, 20_000, 6_000),
    "provider-faults": (scenario_provider_faults, 10_000, 3_000),
    "two-beats": (scenario_two_beats, 10_000, 3_000),
}


# ------------------------------------------------------------------------------------ the command


def _table(results: list[ScenarioResult]) -> str:
    head = f"{'scenario':<16} {'recipients':>10} {'lost':>5} {'duplicated':>10} {'breaches':>8} {'leaks':>5} " \
           f"{'state':<10} {'time':>6}"
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(f"{r.name:<16} {r.recipients:>10} {r.lost:>5} {r.duplicated:>10} {r.breaches:>8} "
                    f"{r.leaks:>5} {r.state:<10} {r.seconds:>5.0f}s")
    for r in results:
        if r.notes:
            rows.append(f"  {r.name}: {r.notes}")
    return "\n".join(rows)


def main(*, quick: bool = False, only: str | None = None, as_json: bool = False,
         workdir: Path | None = None) -> int:
    """Run the scenarios, print the table (``--json``: the last line is a JSON list); 0 when every
    figure is zero and every campaign completed, else 1. Logs are kept only when a scenario failed."""
    names = list(SCENARIOS)
    if only is not None:
        if only not in SCENARIOS:
            print(f"smsc-mailer: chaos --only: unknown scenario {only!r}; one of {', '.join(names)}")
            return 2
        names = [only]
    root = workdir or Path(tempfile.mkdtemp(prefix="smsc-chaos-"))
    results = []
    for name in names:
        scenario, full, small = SCENARIOS[name]
        n = small if quick else full
        print(f"chaos: {name}: {n} recipients ...", flush=True)
        try:
            res = scenario(root, recipients=n)
        except Exception as exc:  # a scenario that could not run is a failure, reported like the others
            log.exception("chaos %s", name)
            res = ScenarioResult(name, n, n, 0, 0, "error", notes=f"{type(exc).__name__}: {exc}")
        results.append(res)
        print(f"chaos: {name}: {'ok' if res.ok else 'FAILED'} in {res.seconds:.0f} s", flush=True)
    print(_table(results))
    ok = all(r.ok for r in results)
    if as_json:
        print(json.dumps([{k: v for k, v in asdict(r).items() if k != "details"} | {"ok": r.ok}
                          for r in results]))
    if ok and workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    elif not ok:
        print(f"chaos: logs kept in {root}")
    return 0 if ok else 1
