"""The benchmark's tools that are not smsc-mailer itself: the samplers and the baselines (the phones file is
:func:`worker.dev.phones.write_phones_file`).

- :func:`run_measured` — a child process with its own peak RSS (``os.wait4``: exactly that child's
  ``ru_maxrss``, not the maximum over every child this process ever had).
- :class:`Sampler` — every ``interval_s``: the simulator's requests in flight (``/_sim/summary``) and
  the members of the ``leased`` ZSET (the first time a batch is seen there is its claim time).
- :func:`cpu_seconds` — user + system CPU of processes (a Celery worker and its pool children).
- :func:`sample_client` — baseline (a): the provider's sample client the usual way, one synchronous
  request per recipient (``phones=one``, ``mes=text``), a new connection each time.
- :func:`bare_load` — baseline (c): the tightest loop that keeps ``slots`` requests of ``batch_size``
  numbers in flight (threads + httpx, bodies built before the clock starts, no ledger, no guards); or,
  given ``lists``, those ``list`` values (a personal campaign's own requests, one text a line).

Every request goes to 127.0.0.1 only, and every loop is bounded in time and count.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

__all__ = [
    "Measured",
    "Sampler",
    "bare_load",
    "cpu_seconds",
    "process_tree",
    "run_measured",
    "sample_client",
]

@dataclass
class Measured:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str
    stderr_tail: str


def run_measured(argv: Sequence[str], *, env: Mapping[str, str], workdir: Path, timeout_s: float) -> Measured:
    """Run ``argv`` to its end; its wall time, CPU and peak RSS (``ru_maxrss`` of this child only)."""
    out_path, err_path = workdir / "child.out", workdir / "child.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=dict(env))
        deadline = started + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    tail = err_path.read_text(errors="replace").splitlines()[-5:]
    return Measured(proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                    out_path.read_text(errors="replace"), "\n".join(tail))


def process_tree(pids: Iterable[int | None]) -> list[psutil.Process]:
    """The processes and all their descendants (a Celery worker's pool children)."""
    out: list[psutil.Process] = []
    for pid in pids:
        if pid is None:
            continue
        try:
            p = psutil.Process(pid)
            out += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return out


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    """User + system CPU seconds of ``procs`` and of their children already reaped."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


@dataclass
class Sampler:
    """Samples in-flight requests and the leased batches on a thread, every ``interval_s``."""

    sim_url: str
    redis_client: redis.Redis | None = None
    leased_key: str = ""
    interval_s: float = 0.025
    inflight: list[tuple[float, int]] = field(default_factory=list)  # (epoch s, requests in flight)
    first_leased_ms: dict[str, int] = field(default_factory=dict)  # ref -> first time seen leased
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        every = 2  # the summary is a request to the simulator: every other tick is enough
        with httpx.Client(base_url=self.sim_url, timeout=5.0) as http:
            for tick in itertools.count():
                if self._stop.is_set():
                    return
                now = time.time()
                if self.redis_client is not None:
                    now_ms = int(now * 1000)
                    for ref in self.redis_client.zrange(self.leased_key, 0, -1):
                        self.first_leased_ms.setdefault(ref.decode() if isinstance(ref, bytes) else str(ref), now_ms)
                if tick % every == 0:
                    try:
                        self.inflight.append((now, int(http.get("/_sim/summary").json()["inflight"])))
                    except (httpx.HTTPError, ValueError, KeyError):
                        pass
                self._stop.wait(self.interval_s)

    def slot_use(self, start_s: float, end_s: float, cap: int) -> float | None:
        """Average requests in flight ÷ ``cap`` over the samples taken in ``[start_s, end_s]``."""
        xs = [n for t, n in self.inflight if start_s <= t <= end_s]
        return sum(xs) / len(xs) / cap if xs else None


def sample_client(base_url: str, *, login: str, password: str, text: str, seconds: float,
                  first_number: int) -> dict[str, Any]:
    """Baseline (a): one synchronous POST per recipient with a fresh connection (urllib), like the
    provider's sample client; runs ``seconds`` and reports what was accepted."""
    url = base_url.rstrip("/") + "/sys/send.php"
    sent = errors = 0
    started = time.perf_counter()
    for i in itertools.count(first_number):
        if time.perf_counter() - started >= seconds or i - first_number >= 10_000:
            break
        body = urllib.parse.urlencode({"login": login, "psw": password, "phones": f"7951{i:07d}",
                                       "mes": text, "fmt": "3", "charset": "utf-8"}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as resp:  # noqa: S310
            answer = resp.read()
        if b'"error_code"' in answer:
            errors += 1
        else:
            sent += 1
    elapsed = time.perf_counter() - started
    return {"seconds": round(elapsed, 2), "sent": sent, "errors": errors, "msgs_per_s": sent / elapsed}


def bare_load(base_url: str, *, login: str, password: str, text: str, batch_size: int, slots: int,
              seconds: float, first_number: int, lists: Sequence[tuple[str, int]] | None = None) -> dict[str, Any]:
    """Baseline (c): ``slots`` threads, each POSTing ``list=`` requests of ``batch_size`` distinct numbers
    back to back for ``seconds`` (bodies prepared first; answers only checked for an error).

    ``lists``: send these ``list`` values instead, each with its number of recipients, dealt to the
    threads in turn (``text``, ``first_number`` unused; ``batch_size`` is only reported); a thread stops
    early when its share runs out."""
    per_thread = int(seconds / 0.2 * 1.5) + 5  # more bodies than a 200 ms provider can take
    counter = itertools.count(first_number)
    bodies: list[list[bytes]] = []
    sizes: list[list[int]] = []

    def body(value: str, t: int, r: int) -> bytes:
        return urllib.parse.urlencode({
            "login": login, "psw": password, "list": value, "id": f"bare-{t}-{r}",
            "fmt": "3", "charset": "utf-8", "cost": "3", "op": "1"}).encode()

    for t in range(slots):
        if lists is not None:
            share = lists[t::slots][:per_thread]
            bodies.append([body(value, t, r) for r, (value, _) in enumerate(share)])
            sizes.append([n for _, n in share])
            continue
        mine = []
        for r in range(per_thread):
            phones = ",".join(f"7952{next(counter):07d}" for _ in range(batch_size))
            mine.append(body(f"{phones}:{text}", t, r))
        bodies.append(mine)
        sizes.append([batch_size] * per_thread)
    sent = [0] * slots
    errors = [0] * slots
    start_at = threading.Event()
    limits = httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
    with httpx.Client(base_url=base_url, timeout=30.0, limits=limits) as http:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}

        def loop(t: int) -> None:
            start_at.wait()
            for content, n in zip(bodies[t], sizes[t], strict=True):
                if time.perf_counter() >= deadline:
                    return
                resp = http.post("/sys/send.php", content=content, headers=headers)
                if resp.status_code == 200 and b'"error_code"' not in resp.content[:200]:
                    sent[t] += n
                else:
                    errors[t] += 1

        threads = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(slots)]
        for th in threads:
            th.start()
        started = time.perf_counter()
        deadline = started + seconds
        start_at.set()
        for th in threads:
            th.join(timeout=seconds + 60)
        elapsed = time.perf_counter() - started
    return {"seconds": round(elapsed, 2), "sent": sum(sent), "errors": sum(errors),
            "msgs_per_s": sum(sent) / elapsed, "batch_size": batch_size, "slots": slots}
