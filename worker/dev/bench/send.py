"""The send workloads of the benchmark: a campaign sent by running workers, measured (:func:`send_campaign`),
the warm-up, the cold start of fresh workers (:func:`cold_start`) and one late answer in five
(:func:`late_answers`).

The dispatcher's clock runs inside the workers (a bootstep, :mod:`worker.tasks`). The measured workers run
``--without-clock`` (:func:`measured_workers`), so a campaign enqueued (``smsc-mailer enqueue`` as a child
process) waits; the CPU counters are read, and a worker that runs only the clock (:func:`clock_worker`: one
solo process consuming a queue nothing is sent to) is started: once it is ready, its first dispatch
starts the campaign. Figures: messages/s between the first and the last message of the campaign's own
requests the simulator recorded, and from the clock's readiness to the campaign's end; slot use (the
simulator's requests in flight sampled every 50 ms, ÷ 14); the workers' CPU (the clock's included, from
its readiness: in production the clock runs in a worker; ``clock_cpu_s`` apart) and Redis' per
1,000,000 recipients; the lag from claimable to sent (see :mod:`worker.dev.bench.run`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import redis

from scheduler.keys import Keys
from worker.dev.bench import load
from worker.dev.bench.profile import Profiler
from worker.dev.bench.profile import summary as profile_summary
from worker.dev.phones import write_phones_file
from worker.dev.stack import CeleryWorker, RedisServer, SimulatorProcess, Stack, child_env
from worker.sending import request_id

__all__ = [
    "CLOCK_QUEUE",
    "COLD_RECIPIENTS",
    "LATENCY_MS",
    "LATE_SHARE",
    "MESSAGE",
    "SLOTS",
    "Meanwhile",
    "batch_times",
    "cli",
    "clock_worker",
    "cold_start",
    "late_answers",
    "log",
    "measured_workers",
    "redis_cpu",
    "round_or_none",
    "send_campaign",
    "warm_up",
]

LATENCY_MS = 200
SLOTS = 14
MESSAGE = "Your order #4711 has shipped. Track it at example.com/t/4711"
#: The cold start as issue 9 measures it: the first campaign of fresh workers, 2 x 8, 100,000 recipients.
COLD_RECIPIENTS = 100_000
COLD_WORKERS, COLD_CONCURRENCY = 2, 8
#: One answer in five after the timeout (the provider took the messages at once; its answer comes late).
LATE_SHARE = 0.2
#: The late row's own workers: a timeout five times the provider's 200 ms, so that a late answer costs a
#: request slot a second (with the production 30 s, one late answer in five would hold every slot and no
#: client could keep half its rate without a 15th request in flight), and a horizon that covers it.
LATE_TIMEOUT_S, LATE_HORIZON_S, LATE_ANSWER_S = 1.0, 0.5, 1.5
#: The clock-only worker's queue: nothing is ever sent to it, so that worker takes no batch.
CLOCK_QUEUE = "bench-clock-only"


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker.cli", *args]


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def batch_times(sim: SimulatorProcess) -> dict[str, tuple[int, int]]:
    """Request id -> (first ts_ms, messages) from the simulator's record."""
    out: dict[str, tuple[int, int]] = {}
    offset = 0
    while page := sim.record(offset=offset, limit=50_000):
        for row in page:
            ts, n = out.get(row["id"], (row["ts_ms"], 0))
            out[row["id"]] = (min(ts, row["ts_ms"]), n + 1)
        offset += len(page)
    return out


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Meanwhile(Protocol):
    """Work done while a measured campaign is sent (:func:`send_campaign`'s ``meanwhile``): :meth:`run` on a
    thread of its own from the clock's start until it returns (``done`` is set once the campaign ended),
    then :meth:`figures` with the simulator's messages of other requests than the campaign's."""

    def run(self, done: threading.Event) -> None: ...

    def figures(self, foreign: list[dict[str, Any]]) -> dict[str, Any]: ...


def measured_workers(stack: Stack, n: int, **kwargs: Any) -> list[CeleryWorker]:
    """Start ``n`` workers ``--without-clock``: they only send; the clock runs in :func:`clock_worker`'s
    process, started when a measured campaign should start."""
    return [stack.add_worker(extra_args=("--without-clock",), **kwargs) for _ in range(n)]


def clock_worker(stack: Stack, name: str) -> CeleryWorker:
    """A worker that runs only the clock (dispatch, delivery, webhooks): one solo process consuming a queue
    nothing is sent to, so it takes no batch; started, it claims the due batches within its first second."""
    return CeleryWorker(env=stack.env, name=name, concurrency=1, pool="solo", queues=(CLOCK_QUEUE,),
                        workdir=stack.workdir)


def _request_ids(ns: str) -> Callable[[str], tuple[str, str] | None]:
    """A request id (``request_id(ref)``: ``<cid>-<n>``, tagged with the namespace outside the default one)
    -> (cid, n), or None for an id that is not a batch's."""
    tag = request_id("x:0", namespace=ns)[:-len("x-0")]

    def split(rid: str) -> tuple[str, str] | None:
        parts = rid.removeprefix(tag).rsplit("-", 1)
        return (parts[0], parts[1]) if len(parts) == 2 and rid.startswith(tag) else None

    return split


def _scan(sim: SimulatorProcess, own: Callable[[str], bool]) -> tuple[dict[str, tuple[int, int]], list[dict[str, Any]]]:
    """:func:`batch_times` of the requests ``own`` accepts, and the other messages as the simulator recorded them."""
    times: dict[str, tuple[int, int]] = {}
    foreign: list[dict[str, Any]] = []
    offset = 0
    while page := sim.record(offset=offset, limit=50_000):
        for row in page:
            if not own(row["id"]):
                foreign.append(row)
                continue
            ts, n = times.get(row["id"], (row["ts_ms"], 0))
            times[row["id"]] = (min(ts, row["ts_ms"]), n + 1)
        offset += len(page)
    return times, foreign


def send_campaign(stack: Stack, r: redis.Redis, sim: SimulatorProcess, phones: Path | None, batch_size: int | None,
                  timeout_s: float, profile: Path | None = None, *, enqueue_argv: list[str] | None = None,
                  label: str | None = None, meanwhile: Meanwhile | None = None) -> dict[str, Any]:
    """Enqueue ``phones`` in batches of ``batch_size`` (or run ``enqueue_argv``, an ``smsc-mailer enqueue ...
    --json``), start the clock, wait for the end; the figures. The simulator's record and counters are
    forgotten first (its config, faults included, stays).

    The stack's workers run ``--without-clock`` (:func:`measured_workers`), so nothing is claimed while the
    campaign is enqueued; the CPU counters are read, then a clock-only worker (:func:`clock_worker`) is
    started: once it is ready (its banner) the campaign starts. Its CPU from then on is counted in the
    workers' (in production the clock runs in a worker) and reported apart (``clock_cpu_s``); its start-up
    is not. Only the campaign's own requests count in the rates; ``meanwhile`` runs beside it."""
    sim.reset()
    ns = stack.namespace
    label = label or str(batch_size)
    if enqueue_argv is None:
        if phones is None or batch_size is None:
            raise ValueError("send_campaign: give phones and batch_size, or enqueue_argv")
        enqueue_argv = cli("enqueue", "--phones-file", str(phones), "--message", MESSAGE, "--json",
                           "--batch-size", str(batch_size))
    m = load.run_measured(enqueue_argv, env=child_env(stack.env), workdir=stack.workdir, timeout_s=600)
    if m.returncode != 0:
        raise RuntimeError(f"enqueue ({label}) failed ({m.returncode}): {m.stderr_tail}")
    receipt = json.loads(m.stdout.strip().splitlines()[-1])
    cid = receipt["campaign_id"]
    ckey = Keys(ns).campaign(cid)
    workers = load.process_tree(w.pid for w in stack.workers)
    sampler = load.Sampler(sim.url, redis.Redis.from_url(stack.redis_url), Keys(ns).leased).start()
    simproc = load.process_tree([sim.pid])
    cpu0, rcpu0, scpu0 = load.cpu_seconds(workers), redis_cpu(r), load.cpu_seconds(simproc)
    clock = clock_worker(stack, f"clock-{label}")
    profiler = None
    if profile is not None:
        profiler = Profiler(profile, {w.name: w.pid for w in stack.workers if w.pid}, label)
    done = threading.Event()
    side: threading.Thread | None = None
    t_launch = time.time()
    try:
        clock.start()
        t0 = time.time()
        clock_procs = load.process_tree([clock.pid])
        ccpu0 = load.cpu_seconds(clock_procs)
        if meanwhile is not None:
            side = threading.Thread(target=meanwhile.run, args=(done,), name="bench-meanwhile", daemon=True)
            side.start()
        deadline = time.monotonic() + timeout_s
        while True:
            state, sent, failed, total = r.hmget(ckey, "state", "sent", "failed", "total")
            if state in (b"completed", b"failed", b"cancelled", b"paused") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        t1 = time.time()
        cpu1, rcpu1, scpu1 = load.cpu_seconds(workers), redis_cpu(r), load.cpu_seconds(simproc)
        ccpu1 = load.cpu_seconds(clock_procs)
        done.set()
        if side is not None:
            side.join(timeout=300)
    finally:
        done.set()
        sampler.stop()
        clock.stop(timeout_s=20)
        if profiler is not None:
            profiler.stop()
    sent_n = int(sent or 0)
    started_ms, finished_ms = (int(x or 0) for x in r.hmget(ckey, "started_ms", "finished_ms"))
    run_s = (finished_ms - started_ms) / 1000 if started_ms and finished_ms else None
    summary = sim.summary()
    split = _request_ids(ns)
    times, foreign = _scan(sim, lambda rid: (x := split(rid)) is not None and x[0] == cid)
    first = min(ts for ts, _ in times.values()) / 1000 if times else t0
    last = max(ts for ts, _ in times.values()) / 1000 if times else t1
    lags = []
    for rid, (ts, _) in times.items():
        cid_n = split(rid)
        claimed = sampler.first_leased_ms.get(":".join(cid_n)) if cid_n is not None else None
        if claimed is not None:
            lags.append((ts - claimed) / 1000)
    per_m = 1_000_000 / max(sent_n, 1)
    wcpu, ccpu = cpu1 - cpu0, ccpu1 - ccpu0
    res = {
        "batch_size": batch_size, "campaign": cid, "total": int(total or 0), "batches": receipt.get("batches"),
        "enqueue_wall_s": round(m.wall_s, 2),
        "state": state.decode() if isinstance(state, bytes) else str(state),
        "sent": sent_n, "failed": int(failed or 0), "requests": len(times),
        "msgs_per_s": round(sent_n / max(last - first, 1e-3)),
        "msgs_per_s_from_clock_ready": round(sent_n / max(t1 - t0, 1e-3)),
        "msgs_per_s_to_completed": round(sent_n / run_s) if run_s else None,
        "send_s": round(last - first, 2), "clock_start_up_s": round(t0 - t_launch, 2),
        # a worker with a clock of its own would have started the campaign before ours was launched
        "started_before_clock": bool(started_ms) and started_ms < t_launch * 1000,
        "clock_ready_to_done_s": round(t1 - t0, 2),
        "started_to_completed_s": round_or_none(run_s, 2),
        "slot_use": round_or_none(sampler.slot_use(first + 0.5, last - 0.5, SLOTS), 3),
        "worker_cpu_s_per_1m": round((wcpu + ccpu) * per_m, 1),
        "redis_cpu_s_per_1m": round((rcpu1 - rcpu0) * per_m, 1),
        "worker_cpu_s": round(wcpu, 2), "clock_cpu_s": round(ccpu, 2), "redis_cpu_s": round(rcpu1 - rcpu0, 2),
        "simulator_cpu_s": round(scpu1 - scpu0, 2),
        "lag_p50_s": round_or_none(_pct(lags, 0.5), 3), "lag_p99_s": round_or_none(_pct(lags, 0.99), 3),
        "lag_max_s": round_or_none(max(lags, default=None), 3), "lag_batches": len(lags),
        "sim_messages": summary["messages"], "sim_duplicates": summary["duplicates"],
        "breaches": sum(summary["breaches"].values()), "peak_inflight": summary["peak_inflight"],
        "errors_answered": summary["errors_answered"],
    }
    if meanwhile is not None:
        res["meanwhile"] = meanwhile.figures(foreign)
    if profiler is not None:
        res["profile"] = {"files": [str(f) for f in profiler.files], "top": profile_summary(profiler.files)}
    log(f"send {label}: {res}")
    return res


def round_or_none(x: float | None, n: int) -> float | None:
    return None if x is None else round(x, n)


def warm_up(stack: Stack, r: redis.Redis, sim: SimulatorProcess, work: Path, concurrency: int, *,
            first: int = 500_000_000) -> dict[str, Any]:
    """A small campaign first, so that the measured ones see warm workers: a fresh worker process sends
    its first request alone (the credentials probe) and the account starts at one slot until a good
    answer, so the first seconds of a cold start go at a trickle. What that costs is reported here.
    ``first``: the numbers' offset (another warm-up within a minute must not repeat identical requests)."""
    batches = 4 * 2 * concurrency
    path = work / f"phones-warm-up-{first}.txt"
    write_phones_file(path, batches * 20, first=first)
    res = send_campaign(stack, r, sim, path, 20, timeout_s=120)
    return {k: res[k] for k in ("requests", "sent", "clock_ready_to_done_s", "lag_p50_s", "lag_max_s")}


def cold_start(server: RedisServer, sim: SimulatorProcess, work: Path, *, pool: str) -> dict[str, Any]:
    """The first campaign of fresh workers on an account nobody proved yet: 2 workers x 8, 100,000
    recipients in batches of 500 (issue 9: 0.58 of the bare load generator before the credentials were
    proven once per credential set, 0.85 once warm). The database is emptied first (the bench's own server:
    no proof of the credentials, no broker queue), and the workers are stopped after it."""
    r = server.client()
    r.flushdb()
    path = work / "phones-cold.txt"
    write_phones_file(path, COLD_RECIPIENTS, first=600_000_000, invalid_every=0, duplicate_every=0)
    stack = Stack(redis=server, simulator=sim, workers=0, concurrency=COLD_CONCURRENCY, pool=pool,
                  beats=0, namespace="bench-cold", timeout_s=30.0, workdir=work / "stack-cold", keep=True)
    with stack:
        measured_workers(stack, COLD_WORKERS)
        res = send_campaign(stack, r, sim, path, 500, timeout_s=300)
    out = {k: res[k] for k in ("sent", "requests", "msgs_per_s", "send_s", "slot_use", "lag_p99_s", "breaches",
                               "sim_duplicates")}
    out |= {"recipients": COLD_RECIPIENTS, "workers": COLD_WORKERS, "concurrency": COLD_CONCURRENCY}
    log(f"cold start: {out}")
    return out


def late_answers(server: RedisServer, sim: SimulatorProcess, work: Path, *, recipients: int, pool: str,
                 concurrency: int) -> dict[str, Any]:
    """One answer in five after the timeout, against the clean rate of the same workers in the same run:
    a clean campaign of ``recipients``, then one of as many other numbers while the simulator answers one
    send request in five only ``LATE_ANSWER_S`` after it took the messages (past ``LATE_TIMEOUT_S``). The
    rate is recipients over the campaign's own start (its first batch begun) to ``completed``, by the Redis
    server's clock: the late batches count only once they are settled."""
    r = server.client()
    files = []
    for i, first in enumerate((700_000_000, 800_000_000)):
        path = work / f"phones-late-{i}.txt"
        write_phones_file(path, recipients, first=first, invalid_every=0, duplicate_every=0)
        files.append(path)
    stack = Stack(redis=server, simulator=sim, workers=0, concurrency=concurrency, pool=pool, beats=0,
                  namespace="bench-late", timeout_s=LATE_TIMEOUT_S, workdir=work / "stack-late", keep=True,
                  env={"SMSC_SETTLE_HORIZON": str(LATE_HORIZON_S)})
    with stack:
        measured_workers(stack, 2)
        warm_up(stack, r, sim, work, concurrency, first=550_000_000)  # warm workers: the clean rate is not a cold one
        clean = send_campaign(stack, r, sim, files[0], 500, timeout_s=300)
        try:
            sim.configure(delayed_answer_rate=LATE_SHARE, delayed_answer_s=LATE_ANSWER_S)
            late = send_campaign(stack, r, sim, files[1], 500, timeout_s=300)
            late["late_answers"] = int(sim.summary()["delayed"])
        finally:
            sim.configure(delayed_answer_rate=0.0)
    keys = ("sent", "state", "requests", "msgs_per_s", "msgs_per_s_to_completed", "started_to_completed_s",
            "slot_use", "breaches", "sim_duplicates", "peak_inflight")
    out: dict[str, Any] = {"clean": {k: clean[k] for k in keys},
                           "late": {k: late.get(k) for k in (*keys, "late_answers")},
                           "recipients": recipients, "late_share": LATE_SHARE, "timeout_s": LATE_TIMEOUT_S,
                           "late_answer_s": LATE_ANSWER_S, "horizon_s": LATE_HORIZON_S}
    out["ratio"] = round((late["msgs_per_s_to_completed"] or 0) / max(clean["msgs_per_s_to_completed"] or 0, 1), 3)
    log(f"one late answer in five: {out}")
    return out
