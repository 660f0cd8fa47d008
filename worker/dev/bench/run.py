"""``make bench``: a million recipients through intake and sending, against the provider's limit.

Everything runs here, on 127.0.0.1: a private redis-server (AOF ``everysec``, as in production), the
provider simulator (200 ms per request, fewer than 15 requests in flight per login), two Celery
workers (``--without-clock``) and, for each measured campaign, a worker that runs only the clock, and the
baselines. Guards and ledger stay on in every smsc-mailer figure. The result is one table (printed) and
one JSON file with every figure (``bench/results.json``).

Workloads:

1. **Intake** — ``smsc-mailer enqueue`` (a child process) reads a phones file of N lines (~2 % invalid,
   ~5 % duplicates) into a queued campaign; once with N/10 lines and once with N. Figures: lines/s
   (wall time of the child, its start-up included), the child's peak RSS in both runs (the difference
   shows whether memory is flat), and Redis memory per pending recipient (``used_memory`` after the
   commit minus before, over the recipients queued).
2. **Personal texts** (:mod:`worker.dev.bench.personal`) — a CSV of N rows (``phone;name;order;city``,
   Russian names, ~2 % invalid phones, ~1 % duplicates) and a template of one placeholder per column:
   every text its own, 72-90 characters of Cyrillic (UCS-2, 2 parts). Intake (``smsc-mailer enqueue
   --csv FILE --template ...``, a child) of N/10 and N rows, measured as above, with the mean UTF-8 bytes
   of the texts queued beside Redis' bytes per recipient; the small file again with ``--allow-partial``
   tells the balance check's time. Then the N rows as a campaign sent by the running workers (no clock
   running while enqueuing, as below: :func:`~worker.dev.bench.send.send_campaign` with that enqueue), and
   the bare load generator sending that campaign's own requests (each batch's texts as ``list`` lines, 14
   in flight): the ratio of the two rates.
3. **Send at the limit** — the phones file of 1. as a campaign, sent by 2 workers (``--pool``/``--concurrency``,
   default prefork × 10: 20 processes for 14 slots, so that a slot that comes free finds a batch
   that has passed ``begin`` waiting for it; with × 8 slot use measured ~3 % lower) for each batch
   size, after a small warm-up campaign (:func:`warm_up`). The dispatcher's clock runs inside the
   workers (a bootstep); the measured ones run ``--without-clock``, so the campaign is enqueued with no
   clock running, the CPU counters are read, and a worker that runs only the clock is started: once it is
   ready its first dispatch starts the campaign (its CPU from then on counts in the workers', also
   reported apart as ``clock_cpu_s``; its start-up does not). Figures: messages/s between the first and
   the last message of the campaign the simulator recorded; slot use = average requests in flight (the
   simulator's ``inflight``, sampled every 50 ms) ÷ 14 over that span less its first and last 0.5 s; CPU
   of the workers (pool children included) and of Redis (``INFO cpu``, the broker's work included) per
   1,000,000 recipients sent; and the lag.
   **Lanes** (:mod:`worker.dev.bench.lanes`, issue 13): 100 urgent one-recipient campaigns, one a second,
   beside a bulk campaign of 1,000,000 recipients (batches of 100) that keeps every slot busy: p50/p99 of
   commit → accepted by the simulator, and the bulk rate over the same campaign sent alone; and two normal
   campaigns of 200,000 due in the same second: their largest progress gap and their finish-time gap
   (``--quick``: 10 urgent beside 100,000, two of 50,000).
4. **Cold start** (:func:`~worker.dev.bench.send.cold_start`) — the first campaign of fresh workers
   (2 x 8) on an account nobody proved yet, 100,000 recipients, as a ratio to the bare load generator.
5. **One late answer in five** (:func:`~worker.dev.bench.send.late_answers`) — a clean campaign and one
   with one send answer in five after the timeout, by the same workers: the late rate over the clean one.
6. **Baselines**, same simulator: (a) the provider's sample client, one synchronous request per
   recipient; (b) one Celery task per recipient (:mod:`worker.dev.bench.baseline_app`, 2 workers, same pool and
   concurrency); (c) a bare load generator keeping 14 requests of the same batch size in flight.
7. **Delivery** (:func:`~worker.dev.bench.delivery.delivery`) — statuses a second through the push endpoint
   (the receiver a process of its own, on this Redis), and statuses settled a minute by polling status.php
   against a simulator of its own with delivery on, with zero breaches of its limits.

**Lag.** Without spreading, every batch of the campaign is due at the enqueue time, so due-to-sent
would only measure a batch's place in the queue. A batch can leave only once the dispatcher may hand
it out: when it is due *and* the window of batches in the workers' hands (``SMSC_WINDOW``) has room;
the dispatcher claims it at that moment (the claim runs as soon as a batch finishes), so the batch
becomes claimable when it enters the ``leased`` ZSET. The sampler reads that ZSET every 25 ms and
keeps the first time it sees each batch; the lag of a batch is the simulator's timestamp of its
messages (their request id is ``cid-n``) minus that time: it covers the broker queue, the wait for a
login slot, the guards, and the request itself (200 ms of it is the provider's latency).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from scheduler.keys import Keys
from worker.dev.bench import lanes, load, personal
from worker.dev.bench.delivery import delivery
from worker.dev.bench.profile import py_spy
from worker.dev.bench.report import evaluate, render_table
from worker.dev.bench.send import (
    LATENCY_MS,
    MESSAGE,
    SLOTS,
    batch_times,
    cli,
    cold_start,
    late_answers,
    log,
    measured_workers,
    round_or_none,
    send_campaign,
    warm_up,
)
from worker.dev.phones import write_phones_file
from worker.dev.stack import CeleryWorker, RedisServer, SimulatorProcess, Stack, child_env

__all__ = ["Sizes", "run_bench"]

_BALANCE = "1000000000000"  # the simulator's default balance runs out after ~666,000 messages


class Sizes:
    def __init__(self, *, quick: bool, recipients: int | None, batch_sizes: tuple[int, ...] = (500, 100)) -> None:
        self.quick = quick
        self.lines = recipients or (200_000 if quick else 1_000_000)
        self.small_lines = max(self.lines // 10, 1_000)
        # each of the late row's two campaigns: long enough that the settle tail does not decide the rate
        self.late_lines = 100_000 if quick else 200_000
        self.batch_sizes = batch_sizes
        self.sample_client_s = 3.0 if quick else 6.0
        self.one_task_count = 600 if quick else 1_500
        self.bare_s = 4.0 if quick else 8.0
        self.push_statuses = 50_000 if quick else 100_000
        self.poll_recipients = 50_000 if quick else 100_000
        self.personal_rows = recipients or (100_000 if quick else 1_000_000)
        self.personal_small_rows = max(self.personal_rows // 10, 1_000)
        # lanes: the bulk campaign must outlast the urgent ones (batches of 100: ~5,800/s here)
        self.lanes_bulk = 100_000 if quick else 1_000_000
        self.lanes_urgent = 10 if quick else 100
        self.lanes_fair_each = 50_000 if quick else 200_000


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    import psutil

    return {"nproc": os.cpu_count(), "cpu_model": model,
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def _env(redis_url: str, sim: SimulatorProcess, namespace: str) -> dict[str, str]:
    return child_env({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "SMSC_NAMESPACE": namespace,
                      "SMSC_BASE_URL": sim.url, "SMSC_LOGIN": sim.login, "SMSC_PASSWORD": sim.password})


def _used_memory(r: redis.Redis) -> int:
    deadline = time.monotonic() + 30
    while int(r.info("memory").get("lazyfree_pending_objects", 0)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the intake's dedup SET is UNLINKed at commit: wait until it is really gone
    return int(r.info("memory")["used_memory"])


# ------------------------------------------------------------------------------------------- intake
def _measure_intake(r: redis.Redis, sim: SimulatorProcess, argv: list[str], ns: str, workdir: Path) -> dict[str, Any]:
    """One ``smsc-mailer enqueue`` child: its receipt, wall and CPU time, peak RSS, the Redis bytes it
    added (``used_memory`` after the commit minus before) and the provider requests it made."""
    before = _used_memory(r)
    requests = sim.summary()["requests"]
    m = load.run_measured(argv, env=_env(_url(r), sim, ns), workdir=workdir, timeout_s=600)
    if m.returncode != 0:
        raise RuntimeError(f"enqueue into {ns} failed ({m.returncode}): {m.stderr_tail}")
    receipt = json.loads(m.stdout.strip().splitlines()[-1])
    return {"receipt": receipt, "wall_s": m.wall_s, "cpu_s": m.cpu_s, "peak_rss_mb": m.peak_rss_mb,
            "redis_bytes": _used_memory(r) - before, "provider_requests": sim.summary()["requests"] - requests}


def intake(r: redis.Redis, sim: SimulatorProcess, files: dict[int, Path], workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lines, path in sorted(files.items()):
        x = _measure_intake(r, sim, cli("enqueue", "--phones-file", str(path), "--message", MESSAGE, "--json"),
                            f"intake{lines}", workdir)
        receipt = x["receipt"]
        out[str(lines)] = {
            "lines": lines, "recipients": receipt["total"], "invalid": receipt["invalid"],
            "duplicates": receipt["duplicates"], "batches": receipt["batches"], "wall_s": round(x["wall_s"], 2),
            "lines_per_s": round(lines / x["wall_s"]), "producer_cpu_s": round(x["cpu_s"], 2),
            "producer_peak_rss_mb": round(x["peak_rss_mb"], 1),
            "redis_bytes_per_pending_recipient": round(x["redis_bytes"] / receipt["total"], 1),
        }
        log(f"intake {lines} lines: {out[str(lines)]}")
    r.flushdb()  # our private server: the intake campaigns are not sent
    return out


def personal_intake(r: redis.Redis, sim: SimulatorProcess, files: dict[int, Path], counts: dict[str, Any],
                    workdir: Path, profile: Path | None = None) -> dict[str, Any]:
    """``smsc-mailer enqueue --csv FILE --template ...`` of each file (``counts``: what each holds), then the
    small one again with ``--allow-partial``: the difference in wall time is the balance check's (the
    provider's quote of the first 1,000 recipients and balance.php, 200 ms a request here). ``profile``:
    then the large one once more under py-spy (not measured), its stacks in that folder."""
    out: dict[str, Any] = {}
    for rows, path in sorted(files.items()):
        x = _measure_intake(r, sim, personal.enqueue_argv(path), f"pintake{rows}", workdir)
        receipt, c = x["receipt"], counts[str(rows)]
        out[str(rows)] = {
            "rows": rows, "recipients": receipt["total"], "invalid": receipt["invalid"],
            "duplicates": receipt["duplicates"], "batches": receipt["batches"], "sms": receipt.get("sms"),
            "as_written": (receipt["total"], receipt["invalid"], receipt["duplicates"]) == (
                c["unique"], c["invalid"], c["duplicates"]),
            "wall_s": round(x["wall_s"], 2), "rows_per_s": round(rows / x["wall_s"]),
            "producer_cpu_s": round(x["cpu_s"], 2), "producer_peak_rss_mb": round(x["peak_rss_mb"], 1),
            "redis_bytes_per_pending_recipient": round(x["redis_bytes"] / max(receipt["total"], 1), 1),
            "text_bytes_mean": c["text_bytes_mean"], "provider_requests": x["provider_requests"],
        }
        log(f"intake of personal texts, {rows} rows: {out[str(rows)]}")
    small = min(files)
    x = _measure_intake(r, sim, personal.enqueue_argv(files[small], "--allow-partial"), f"pintake{small}-unchecked",
                        workdir)
    out["balance_check"] = {"rows": small, "wall_s_without": round(x["wall_s"], 2),
                            "seconds": round(out[str(small)]["wall_s"] - x["wall_s"], 2),
                            "provider_requests": out[str(small)]["provider_requests"] - x["provider_requests"]}
    log(f"balance check: {out['balance_check']}")
    if profile is not None:
        large = max(files)
        out["profile"] = personal.profiled_intake(personal.enqueue_argv(files[large]),
                                                  _env(_url(r), sim, f"pintake{large}-profiled"), workdir,
                                                  profile / f"intake-personal-{large}.txt")
    r.flushdb()  # our private server: the intake campaigns are not sent
    return out


def _url(r: redis.Redis) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


# ---------------------------------------------------------------------------------------- baselines
def one_task_per_recipient(stack: Stack, sim: SimulatorProcess, count: int, pool: str,
                           concurrency: int) -> dict[str, Any]:
    from celery import Celery

    from worker.dev.bench.baseline_app import QUEUE, TASK

    sim.reset()
    workers = [CeleryWorker(env=stack.env, name=f"one{i}", app="worker.dev.bench.baseline_app", pool=pool,
                            concurrency=concurrency, workdir=stack.workdir) for i in (1, 2)]
    try:
        for w in workers:
            w.start()
        procs = load.process_tree(w.pid for w in workers)
        cpu0 = load.cpu_seconds(procs)
        producer = Celery(broker=stack.redis_url)
        for i in range(count):
            producer.send_task(TASK, args=(f"7953{i:07d}", MESSAGE), queue=QUEUE)
        deadline = time.monotonic() + count / 20 + 60
        while time.monotonic() < deadline:
            s = sim.summary()
            if s["messages"] >= count:
                break
            time.sleep(0.2)
        cpu1 = load.cpu_seconds(procs)
    finally:
        for w in workers:
            w.stop(timeout_s=20)
    times = batch_times(sim)
    ts = [t for t, _ in times.values()]
    span = (max(ts) - min(ts)) / 1000 if len(ts) > 1 else 1.0
    s = sim.summary()
    res = {"tasks": count, "sent": s["messages"], "errors_answered": s["errors_answered"],
           "breaches": s["breaches"], "msgs_per_s": round(s["messages"] / span, 1),
           "worker_cpu_s_per_1m": round((cpu1 - cpu0) * 1_000_000 / max(s["messages"], 1), 1)}
    log(f"one task per recipient: {res}")
    return res


def baselines(stack: Stack, sim: SimulatorProcess, sizes: Sizes, pool: str, concurrency: int) -> dict[str, Any]:
    out: dict[str, Any] = {"one_task_per_recipient": one_task_per_recipient(
        stack, sim, sizes.one_task_count, pool, concurrency)}
    sim.reset()
    out["sample_client"] = load.sample_client(sim.url, login=sim.login, password=sim.password, text=MESSAGE,
                                              seconds=sizes.sample_client_s, first_number=0)
    log(f"sample client: {out['sample_client']}")
    for bs in sizes.batch_sizes:
        sim.reset()
        sampler = load.Sampler(sim.url).start()
        simproc, me = load.process_tree([sim.pid]), load.process_tree([os.getpid()])
        scpu0, mcpu0 = load.cpu_seconds(simproc), load.cpu_seconds(me)
        started = time.time()
        res = load.bare_load(sim.url, login=sim.login, password=sim.password, text=MESSAGE, batch_size=bs,
                             slots=SLOTS, seconds=sizes.bare_s, first_number=0)
        sampler.stop()
        res["simulator_cpu_s"] = round(load.cpu_seconds(simproc) - scpu0, 2)
        res["generator_cpu_s"] = round(load.cpu_seconds(me) - mcpu0, 2)
        res["slot_use"] = round_or_none(sampler.slot_use(started + 0.5, started + res["seconds"] - 0.5, SLOTS), 3)
        res["breaches"] = sum(sim.summary()["breaches"].values())
        out[f"bare_load_{bs}"] = res
        log(f"bare load generator, batch {bs}: {res}")
    return out


# ---------------------------------------------------------------------------------------------- run
def run_bench(*, quick: bool = False, recipients: int | None = None, out: Path = Path("bench/results.json"),
              pool: str = "prefork", concurrency: int = 10,
              workloads: str = "intake,personal,cold,send,lanes,late,baselines,delivery",
              batch_sizes: tuple[int, ...] = (500, 100), profile: Path | None = None,
              echo: Callable[[str], None] = print) -> int:
    if profile is not None and py_spy() is None:
        echo("bench: --profile needs py-spy (pip install '.[dev]'); running without it")
        profile = None
    sizes = Sizes(quick=quick, recipients=recipients, batch_sizes=batch_sizes)
    chosen = set(workloads.split(","))
    results: dict[str, Any] = {
        "size": "quick" if quick else "full", "lines": sizes.lines, "machine": machine(),
        "setup": {"simulator_latency_ms": LATENCY_MS, "slots": SLOTS, "workers": 2, "pool": pool,
                  "concurrency": concurrency, "redis_appendonly": True, "message": MESSAGE},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="smsc-bench-") as tmp:
        work = Path(tmp)
        files = {n: work / f"phones-{n}.txt" for n in (sizes.small_lines, sizes.lines)}
        for n, path in files.items():
            results.setdefault("files", {})[str(n)] = write_phones_file(path, n)
        log(f"phones files written: {results['files']}")
        ptables: dict[int, Path] = {}
        tables: dict[str, Any] = {}
        if "personal" in chosen:
            for n in (sizes.personal_small_rows, sizes.personal_rows):
                ptables[n] = work / f"personal-{n}.csv"
                tables[str(n)] = personal.write_personal_csv(ptables[n], n)
            log(f"personal CSV files written: {tables}")
        server = RedisServer(dir=work / "redis", appendonly=True).start()
        sim = SimulatorProcess(latency_ms=LATENCY_MS, extra_args=["--balance", _BALANCE],
                               log_path=work / "simulator.log").start()
        try:
            r = server.client()
            results["machine"]["redis"] = r.info("server")["redis_version"]
            if "intake" in chosen:
                results["intake"] = intake(r, sim, files, work)
            if "personal" in chosen:
                done = personal_intake(r, sim, ptables, tables, work, profile)
                results["personal"] = {"files": tables, "intake": done}
            if "cold" in chosen:  # before any other worker proved the credentials
                results["cold_start"] = cold_start(server, sim, work, pool=pool)
            stack = Stack(redis=server, simulator=sim, workers=0, concurrency=concurrency, pool=pool, beats=0,
                          namespace="bench", timeout_s=30.0, workdir=work / "stack", keep=True)
            with stack:  # started even without "send": the baselines run in its environment
                measured_workers(stack, 2)
                if chosen & {"send", "personal", "lanes"}:
                    results["warm_up"] = warm_up(stack, r, sim, work, concurrency)
                if "send" in chosen:
                    results["send"] = {str(bs): send_campaign(stack, r, sim, files[sizes.lines], bs,
                                                              timeout_s=900 if not quick else 300,
                                                              profile=profile)
                                       for bs in sizes.batch_sizes}
                    results["worker_rss_mb"] = round(sum(p.memory_info().rss for p in load.process_tree(
                        w.pid for w in stack.workers)) / 2**20, 1)
                if "personal" in chosen:
                    results["personal"]["send"] = personal.send_personal(
                        stack, r, sim, ptables[sizes.personal_rows], timeout_s=900 if not quick else 300,
                        profile=profile)
                if "lanes" in chosen:
                    results["lanes"] = lanes.lanes(stack, r, sim, work, bulk=sizes.lanes_bulk,
                                                   urgent=sizes.lanes_urgent, urgent_every_s=1.0,
                                                   fair_each=sizes.lanes_fair_each,
                                                   timeout_s=900 if not quick else 300)
            if "personal" in chosen:  # the workers are stopped: their status polls would share the login's slots
                sent = results["personal"]["send"]
                bodies = personal.list_bodies(r, Keys(stack.namespace), sent["campaign"], sent["batches"],
                                              most=personal.bodies_for(sizes.bare_s))
                results["personal"]["bare"] = personal.bare_personal(sim, bodies, sizes.bare_s)
            if "late" in chosen:
                results["late_answers"] = late_answers(server, sim, work, recipients=sizes.late_lines, pool=pool,
                                                       concurrency=concurrency)
            if "baselines" in chosen:  # the stack's environment only: its workers are stopped
                results["baselines"] = baselines(stack, sim, sizes, pool, concurrency)
            if "delivery" in chosen:  # last: no worker of the other workloads is running
                results["delivery"] = delivery(server, work, push_statuses=sizes.push_statuses,
                                               poll_recipients=sizes.poll_recipients)
        finally:
            sim.stop()
            server.stop()
    results["wall_s"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = evaluate(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    echo(render_table(results))
    echo(f"\nevery figure: {out}")
    return 0
