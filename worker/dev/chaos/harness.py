"""One chaos scenario's stack and campaigns, and what the simulator saw of them.

:class:`Run` brings up its own :class:`worker.dev.stack.Stack` (a private redis-server with AOF,
``appendfsync everysec``; the provider simulator; Celery workers and beat as real processes), enqueues
campaigns, lets the scenario inject its fault, waits until every campaign has ended and compares what the
simulator recorded with what was expected: each expected phone exactly as many times as it was enqueued.

Figures of a :class:`ScenarioResult`: ``lost`` (messages the simulator never got), ``duplicated``
(messages beyond what was expected, unexpected numbers included), ``breaches`` (the simulator's count of
broken provider rules: identical requests, concurrency, flood, status.php's and balance.php's limits,
blocks), ``leaks`` (places where the account's password was found), and ``completed_s``: the time from
the first enqueue to the end of the last campaign, by the Redis server's clock (the campaigns' own
``created_ms`` and ``finished_ms``), which must stay within ``bound_s``. A scenario's ``checks`` say that
its fault really happened (a kill mid-request, a restart, a freeze) and what else it promises.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

from scheduler.keys import Keys
from worker.dev.chaos.leaks import find_secret_in_files, find_secret_in_redis
from worker.dev.stack import Stack, child_env

__all__ = ["KNOBS", "LATENCY_MS", "LOGIN", "MESSAGE", "PASSWORD", "TIMEOUT_S", "Command", "Run", "ScenarioResult",
           "bound_s", "chaos_phones", "faults", "run_scenario"]

log = logging.getLogger(__name__)

#: The simulated account. The password is distinctive so that a grep finds it wherever it leaked.
LOGIN = "chaos"
PASSWORD = "S3cret-Pa55-chaos"  # noqa: S105 - the local simulator's account, not a real secret
MESSAGE = "Chaos drill: your order has shipped. Track it at example.com/t/4711"

#: The knobs that make faults settle fast: a short client timeout (the hard deadline of a request), a short
#: lease (a killed worker's batches come back within 10 s), a 1 s first account back-off, batches small
#: enough that kills land mid-batch, and a settle horizon that covers the simulator's processing in every
#: scenario that does not set its own (an unknown outcome is settled timeout + horizon after its request).
TIMEOUT_S = 2.0
KNOBS = {"SMSC_LEASE": "10", "SMSC_BACKOFF": "1", "SMSC_BATCH_SIZE": "100", "SMSC_SETTLE_HORIZON": "3"}
#: Provider processing time: long enough that a SIGKILL lands while a request is in flight.
LATENCY_MS = 150
FINAL = ("completed", "failed", "cancelled")

#: The time bound of every scenario: ``SETUP_S + recipients / FLOOR_RATE + the scenario's fault allowance``.
#: 150 recipients a second is what 2 workers x 2 processes at 150 ms a batch of 100 reach with most of the
#: machine taken by other work (clean: ~1,000/s); the allowance covers what the fault itself must cost (a
#: lease running out, the provider's one-minute rules, a 15 s freeze). A stalled account exceeds it.
SETUP_S = 30.0
FLOOR_RATE = 150.0


def bound_s(recipients: int, fault_s: float) -> float:
    """The most a scenario of ``recipients`` messages may take to ``completed`` (see :data:`FLOOR_RATE`)."""
    return round(SETUP_S + recipients / FLOOR_RATE + fault_s)


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
    seconds: float = 0.0  # wall time of the whole scenario, the stack's start and stop included
    completed_s: float | None = None  # first enqueue -> last campaign completed (the Redis server's clock)
    bound_s: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)  # the fault happened; the scenario's own promises
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def in_time(self) -> bool:
        return self.completed_s is not None and self.completed_s <= self.bound_s

    @property
    def ok(self) -> bool:
        return (self.lost == self.duplicated == self.breaches == self.leaks == 0
                and self.state == "completed" and self.sent == self.recipients and self.in_time
                and all(self.checks.values()))


def chaos_phones(count: int, *, start: int = 0) -> list[str]:
    """``count`` distinct numbers ``79…`` (digits only), the ``start``-th on."""
    return [f"79{i:09d}" for i in range(10_000_000 + start, 10_000_000 + start + count)]


@dataclass
class Command:
    """A ``smsc-mailer`` child process: its output file, when it started and ended (monotonic seconds)."""

    proc: subprocess.Popen[str]
    out: Path
    started: float
    ended: float | None = None

    def wait(self, timeout_s: float = 300) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        if self.ended is None:
            self.ended = time.monotonic()
        return rc

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def campaign_id(self) -> str:
        """The campaign id of an ``enqueue --json`` (its last line)."""
        return str(json.loads(self.output().strip().splitlines()[-1])["campaign_id"])


class Run:
    """One scenario: its stack, its campaigns, the fault's events; a context manager that stops everything."""

    def __init__(self, workdir: Path, name: str, recipients: int, *, fault_s: float, messages: int | None = None,
                 workers: int = 2, concurrency: int = 2, beats: int = 1, sim: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None, timeout_s: float | None = None) -> None:
        """``recipients``: this run's numbers (:attr:`phones`); ``messages``: all the scenario sends (the
        bound's size; default ``recipients``); ``fault_s``: what the fault may add to the bound."""
        self.name, self.recipients = name, recipients
        self.bound_s = bound_s(messages or recipients, fault_s)
        # Past the bound the result is a failure anyway; waiting longer only tells how long a stall lasts.
        self.timeout_s = timeout_s if timeout_s is not None else self.bound_s + 120
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
        self.campaigns: list[str] = []
        self.expected: collections.Counter[str] = collections.Counter()  # digits at the provider -> messages
        self.notes: list[str] = []
        self.events: list[dict[str, Any]] = []  # what the fault did, for the tests
        self.checks: dict[str, bool] = {}
        self.leaks: set[str] = set()
        self.phones = chaos_phones(recipients)
        self.client: redis.Redis

    # -- lifecycle
    def __enter__(self) -> Run:
        self.stack.start()
        self.client = self.stack.redis_client(socket_timeout=5, socket_connect_timeout=2)
        self.keys = Keys(self.stack.namespace)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        self.stack.stop()

    @property
    def sim(self) -> Any:
        assert self.stack.simulator is not None
        return self.stack.simulator

    # -- enqueueing
    def settings(self) -> Any:
        """The settings of the workers, for an in-process enqueue (the API, as an application calls it)."""
        from worker.settings import Settings

        return Settings(_env_file=None, redis_url=self.stack.redis_url, smsc_login=LOGIN,  # type: ignore[call-arg]
                        smsc_password=SecretStr(PASSWORD), smsc_account=LOGIN,
                        smsc_namespace=self.stack.namespace,
                        smsc_base_url=self.stack.smsc_base_url or "http://127.0.0.1:9",
                        smsc_batch_size=int(self.stack.env["SMSC_BATCH_SIZE"]))

    def enqueue(self, phones: Iterable[str] | None = None, *, message: str = MESSAGE, note: bool = True) -> str:
        """One campaign of ``phones`` (digits; default: this run's) through ``enqueue_campaign``."""
        from worker.api import enqueue_campaign

        phones = list(self.phones if phones is None else phones)
        conn = self.stack.redis_client()
        try:
            receipt = enqueue_campaign(("+" + p for p in phones), message, settings=self.settings(), redis_conn=conn)
        finally:
            conn.close()
        self.campaigns.append(receipt.campaign_id)
        self.expected.update(phones)
        if note:
            self.notes.append(f"{receipt.batches} batches")
        return str(receipt.campaign_id)

    def cli(self, *args: str, env: Mapping[str, str] | None = None) -> Command:
        """``smsc-mailer ARGS`` as a child process with the workers' environment (started, not waited for)."""
        out = self.dir / f"cli-{time.monotonic_ns()}.out"
        with out.open("w") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "worker.cli", *args], stdin=subprocess.DEVNULL,
                                    stdout=sink, stderr=subprocess.STDOUT, text=True, cwd=self.dir,
                                    env=child_env({**self.stack.env, **(env or {})}))
        return Command(proc, out, time.monotonic())

    def enqueue_file(self, path: Path, expected: Iterable[str], *args: str,
                     env: Mapping[str, str] | None = None) -> str:
        """``smsc-mailer enqueue --phones-file PATH --json ARGS``; ``expected``: the digits the provider must
        get (once each). Fails with the command's output if it fails."""
        cmd = self.cli("enqueue", "--phones-file", str(path), "--message", MESSAGE, "--json", *args, env=env)
        rc = cmd.wait()
        if rc != 0:
            raise RuntimeError(f"smsc-mailer enqueue exited {rc}: {cmd.output()[-500:]}")
        cid = cmd.campaign_id()
        self.campaigns.append(cid)
        self.expected.update(expected)
        return cid

    # -- looking
    def status(self, cid: str | None = None) -> dict[str, Any]:
        """A campaign's status (the last one by default); waits out a Redis that is restarting or frozen."""
        from scheduler.campaigns import Campaigns

        cid = cid or self.campaigns[-1]
        for _ in range(100):
            try:
                return Campaigns(self.client, self.keys).status(cid)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                time.sleep(0.2)
        raise RuntimeError("redis did not come back within 20 tries")

    def done(self, cid: str | None = None) -> int:
        st = self.status(cid)
        return int(st["sent"] + st["failed"] + st["cancelled"])

    def wait_progress(self, fraction: float, cid: str | None = None) -> None:
        """Until this share of a campaign's recipients has a final state (or the campaign ended)."""
        deadline = time.monotonic() + self.timeout_s
        total = self.status(cid)["total"] or self.recipients
        while self.done(cid) < fraction * total and time.monotonic() < deadline:
            if self.status(cid)["state"] in FINAL:
                return
            time.sleep(0.05)

    def inflight(self) -> int:
        return int(self.sim.summary()["inflight"])

    def wait_inflight(self, more_than: int = 0, timeout_s: float = 30.0) -> int:
        """Until the simulator is processing more than ``more_than`` requests (0 when it never was)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = self.inflight()
            if n > more_than:
                return n
            time.sleep(0.01)
        return 0

    def scan(self) -> None:
        """Look for the password in every Redis key and value, now (mid-run: the queues are full)."""
        try:
            self.leaks.update(find_secret_in_redis(self.client, PASSWORD))
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            pass

    def wait_final(self, cids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Until every campaign (default: all of this run's) has ended; their statuses."""
        cids = list(self.campaigns if cids is None else cids)
        deadline = self.started + self.timeout_s
        scanned = False
        while True:
            sts = [self.status(cid) for cid in cids]
            if all(st["state"] in FINAL and st["pending"] == 0 for st in sts):
                return sts
            if not scanned and sum(st["sent"] for st in sts) >= sum(st["total"] for st in sts) // 2:
                self.scan()
                scanned = True
            if time.monotonic() > deadline:
                self.notes.append(f"not finished after {self.timeout_s:.0f} s: "
                                  + ", ".join(f"{st['state']} {st['pending']} pending" for st in sts))
                return sts
            time.sleep(0.2)

    def completed_s(self, sts: list[dict[str, Any]]) -> float | None:
        """First enqueue to the end of the last campaign, by the server's clock; None while one runs."""
        if not sts or any(st["state"] != "completed" or not st["finished_ms"] for st in sts):
            return None
        return round(float(max(st["finished_ms"] for st in sts) - min(st["created_ms"] for st in sts)) / 1000, 1)

    def result(self, sts: list[dict[str, Any]]) -> ScenarioResult:
        time.sleep(0.5)  # a straggling request (there should be none) would still be counted
        self.scan()
        seen = self.sim.phones()
        summary = self.sim.summary()
        lost = sum(max(0, n - seen.get(p, 0)) for p, n in self.expected.items())
        duplicated = sum(max(0, n - self.expected.get(p, 0)) for p, n in seen.items())
        breaches = sum(int(v) for v in summary["breaches"].values())
        if breaches:
            self.notes.append("breaches " + ",".join(f"{k}={v}" for k, v in summary["breaches"].items() if v))
        injected = faults(summary)
        if any(injected.values()):
            self.notes.append("faults " + " ".join(f"{k}={v}" for k, v in injected.items() if v))
        states = {st["state"] for st in sts}
        state = states.pop() if len(states) == 1 else "/".join(sorted(states))
        status = sts[-1] if len(sts) == 1 else {
            k: sum(st[k] for st in sts) for k in ("total", "sent", "failed", "cancelled", "pending", "sms")}
        return ScenarioResult(self.name, sum(self.expected.values()), lost, duplicated, breaches, state,
                              sent=sum(int(st["sent"]) for st in sts), completed_s=self.completed_s(sts),
                              bound_s=self.bound_s, checks=dict(self.checks),
                              details={"status": status, "statuses": sts, "simulator": summary, "faults": injected,
                                       "events": self.events})

    def finish(self, sts: list[dict[str, Any]]) -> ScenarioResult:
        """Count, stop everything (logs flushed), grep the logs, and build the result."""
        res = self.result(sts)
        self.stack.stop()
        self.leaks.update(find_secret_in_files(self.dir, PASSWORD))
        res.leaks = len(self.leaks)
        if self.leaks:
            self.notes.append("password found in: " + "; ".join(sorted(self.leaks)[:5]))
        failed_checks = [name for name, ok in res.checks.items() if not ok]
        if failed_checks:
            self.notes.append("NOT " + ", ".join(failed_checks))
        if not res.in_time:
            self.notes.append(f"time to completed {res.completed_s} s, bound {res.bound_s:.0f} s")
        res.seconds = round(time.monotonic() - self.started, 1)
        res.notes = "; ".join(self.notes)
        log.info("chaos %s: %s", self.name, res)
        return res


def faults(summary: Mapping[str, Any]) -> dict[str, int]:
    """The faults the simulator injected or saw, by kind."""
    errors = {f"error{k}": int(v) for k, v in summary["errors_answered"].items()}
    extra = {k: int(summary.get(k, 0)) for k in ("slow_requests", "accepted_after_client_gone")}
    return {"http500": int(summary["http500"]), "resets": int(summary["resets"]),
            "delayed": int(summary["delayed"]), **extra, **errors}


def run_scenario(workdir: Path, name: str, recipients: int, fault: Callable[[Run], None], *,
                 enqueue: Callable[[Run], None] | None = None, after: Callable[[Run], None] | None = None,
                 sim_config: Mapping[str, Any] | None = None, **kwargs: Any) -> ScenarioResult:
    """Bring the stack up, configure the simulator (``sim_config``: ``POST /_sim/config``), enqueue (default:
    one campaign of ``recipients``), inject ``fault``, wait for every campaign to end, look (``after``), count."""
    with Run(workdir, name, recipients, **kwargs) as run:
        if sim_config:
            run.sim.configure(**sim_config)
        (enqueue or (lambda r: r.enqueue()))(run)
        fault(run)
        sts = run.wait_final()
        if after is not None:
            after(run)
        return run.finish(sts)
