"""The benchmark's priority lanes (issue 13, docs/priorities.md): urgent codes beside a bulk campaign that
keeps every slot busy, and two normal campaigns due together.

- **Urgent under bulk** — a bulk campaign (``smsc-mailer enqueue --priority bulk``, batches of
  :data:`BATCH`) sent by the stack's workers, measured as :func:`~worker.dev.bench.send.send_campaign`
  measures a campaign; meanwhile (:class:`UrgentStream`) the bench process enqueues one-recipient urgent
  campaigns one every ``urgent_every_s`` through the Python API (``worker.api.enqueue_campaign(...,
  options=CampaignOptions(priority="urgent"))``: one call in a running process, as an application
  enqueues a code, not a CLI start-up each), as long as the bulk campaign runs. Figures: p50/p99 of the
  urgent messages' commit (the campaign HASH's ``queued_ms``, the Redis server's clock) to their acceptance
  by the simulator (its record's ``ts_ms``; both clocks are this machine's), and the bulk campaign's rate
  (first to last of its own messages) over the same campaign sent alone just before (another set of
  numbers, the same size and batch size, the same workers).
  Batches of 100: at 500 a 1,000,000-recipient campaign is sent in ~50 s, fewer than the 100 urgent
  campaigns a second apart need; at 100 it takes ~170 s.
- **Two normal campaigns due together** — two campaigns of ``fair_each`` recipients (batches of 500) enqueued
  one after the other with the same ``--at 0<unix seconds>`` a few seconds ahead, so that both are due in
  the same second; their progress (sent + failed over total, both HASHes read every 100 ms) is compared
  while both are under way: the largest gap, and the gap between their ``finished_ms`` as a share of the
  pair's time from the due second to the last finish.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import redis

from scheduler.keys import Keys
from worker.api import CampaignOptions, enqueue_campaign
from worker.dev.bench import load
from worker.dev.bench.send import MESSAGE, cli, clock_worker, log, round_or_none, send_campaign
from worker.dev.phones import number, write_phones_file
from worker.dev.stack import SimulatorProcess, Stack, child_env
from worker.settings import Settings

__all__ = ["BATCH", "FAIR_BATCH", "UrgentStream", "fair_pair", "lanes", "quantile"]

#: The bulk campaign's batch size (see the module docstring).
BATCH = 100
FAIR_BATCH = 500
# The numbers of this workload start here: none of the other workloads' (0.., 300M.., 500M.., 550M.., 600M..,
# 700M.., 800M..), so no guard of ours holds them back.
_SOLO_FIRST, _BULK_FIRST, _FAIR_FIRST, _URGENT_FIRST = 100_000_000, 150_000_000, 200_000_000, 900_000_000
_DONE = (b"completed", b"failed", b"cancelled", b"paused")


def quantile(xs: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``xs`` (nearest rank: the smallest value with at least ``q`` of them at or
    below it), or None."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


class UrgentStream:
    """One-recipient urgent campaigns, one every ``every_s``, until ``count`` or the measured campaign ended
    (a :class:`~worker.dev.bench.send.Meanwhile`): their commit times, then their latencies. After the last
    one it waits up to ``settle_s`` for them all to be sent."""

    def __init__(self, settings: Settings, *, count: int, every_s: float, first: int = _URGENT_FIRST,
                 settle_s: float = 30.0) -> None:
        self.settings = settings
        self.settle_s = settle_s
        self.count = count
        self.every_s = every_s
        self.first = first
        self.enqueued: list[tuple[str, str, int]] = []  # (phone, campaign id, queued_ms)
        self.call_ms: list[float] = []
        self.unfinished = 0

    def run(self, done: threading.Event) -> None:
        r = redis.Redis.from_url(self.settings.redis_url)
        keys = Keys(self.settings.smsc_namespace)
        try:
            start = time.monotonic()
            for i in range(self.count):
                if done.wait(max(0.0, start + i * self.every_s - time.monotonic())):
                    break  # the bulk campaign ended: a code enqueued now would not be "under load"
                phone = number(self.first + i)
                t = time.perf_counter()
                receipt = enqueue_campaign([phone], f"Your login code: {(i * 7919) % 1_000_000:06d}",
                                           settings=self.settings, redis_conn=r,
                                           options=CampaignOptions(priority="urgent"))
                self.call_ms.append((time.perf_counter() - t) * 1000)
                queued = r.hget(keys.campaign(receipt.campaign_id), "queued_ms")
                self.enqueued.append((phone, receipt.campaign_id, int(queued or 0)))
            deadline = time.monotonic() + self.settle_s  # the last ones are sent, also after the bulk ended
            pending = [cid for _, cid, _ in self.enqueued]
            while pending and time.monotonic() < deadline:
                pending = [cid for cid in pending if r.hget(keys.campaign(cid), "state") not in _DONE]
                time.sleep(0.1)
            self.unfinished = len(pending)
        finally:
            r.close()

    def figures(self, foreign: list[dict[str, Any]]) -> dict[str, Any]:
        accepted: dict[str, int] = {}
        for row in foreign:
            accepted[row["phone"]] = min(accepted.get(row["phone"], row["ts_ms"]), row["ts_ms"])
        lat = [(accepted[phone] - queued) / 1000 for phone, _, queued in self.enqueued if phone in accepted and queued]
        return {"asked": self.count, "every_s": self.every_s, "enqueued": len(self.enqueued),
                "accepted": len(lat), "unfinished": self.unfinished,
                "latency_p50_s": round_or_none(quantile(lat, 0.5), 3),
                "latency_p99_s": round_or_none(quantile(lat, 0.99), 3),
                "latency_max_s": round_or_none(max(lat, default=None), 3),
                "enqueue_call_ms_p50": round_or_none(statistics.median(self.call_ms) if self.call_ms else None, 1)}


def _settings(stack: Stack) -> Settings:
    env = stack.env
    return Settings(redis_url=stack.redis_url, smsc_namespace=stack.namespace, smsc_base_url=env["SMSC_BASE_URL"],
                    smsc_login=env["SMSC_LOGIN"], smsc_password=env["SMSC_PASSWORD"])  # type: ignore[arg-type]


def _bulk_argv(path: Path) -> list[str]:
    return cli("enqueue", "--phones-file", str(path), "--message", MESSAGE, "--json", "--batch-size", str(BATCH),
               "--priority", "bulk")


_KEEP = ("total", "sent", "failed", "state", "requests", "msgs_per_s", "send_s", "slot_use", "worker_cpu_s_per_1m",
         "lag_p99_s", "sim_duplicates", "breaches", "peak_inflight")


def lanes(stack: Stack, r: redis.Redis, sim: SimulatorProcess, work: Path, *, bulk: int, urgent: int,
          urgent_every_s: float, fair_each: int, timeout_s: float) -> dict[str, Any]:
    """Both parts (see the module docstring): ``{"solo", "bulk", "urgent", "ratio", "fair"}``."""
    paths = {}
    for name, first in (("solo", _SOLO_FIRST), ("bulk", _BULK_FIRST)):
        paths[name] = work / f"phones-lanes-{name}.txt"
        write_phones_file(paths[name], bulk, first=first, invalid_every=0, duplicate_every=0)
    solo = send_campaign(stack, r, sim, None, BATCH, timeout_s, enqueue_argv=_bulk_argv(paths["solo"]),
                         label="lanes-solo")
    stream = UrgentStream(_settings(stack), count=urgent, every_s=urgent_every_s)
    loaded = send_campaign(stack, r, sim, None, BATCH, timeout_s, enqueue_argv=_bulk_argv(paths["bulk"]),
                           label="lanes-bulk", meanwhile=stream)
    out: dict[str, Any] = {
        "recipients": bulk, "batch_size": BATCH, "solo": {k: solo[k] for k in _KEEP},
        "bulk": {k: loaded[k] for k in _KEEP}, "urgent": loaded["meanwhile"],
        "ratio": round(loaded["msgs_per_s"] / max(solo["msgs_per_s"], 1), 3)}
    log(f"lanes, urgent beside bulk: {out}")
    out["fair"] = fair_pair(stack, r, sim, work, each=fair_each, timeout_s=timeout_s)
    return out


def fair_pair(stack: Stack, r: redis.Redis, sim: SimulatorProcess, work: Path, *, each: int,
              timeout_s: float) -> dict[str, Any]:
    """Two normal campaigns of ``each`` recipients due in the same second (see the module docstring)."""
    sim.reset()
    paths = []
    for i in range(2):
        path = work / f"phones-lanes-fair-{i}.txt"
        write_phones_file(path, each, first=_FAIR_FIRST + i * 50_000_000, invalid_every=0, duplicate_every=0)
        paths.append(path)
    ns = Keys(stack.namespace)
    clock = clock_worker(stack, "clock-fair")
    clock.start()  # running before the enqueues: the due second starts both
    try:
        # both enqueues (~100,000 lines/s each, plus a child's start-up) well before the due second
        due_s = math.ceil(time.time()) + 6 + math.ceil(2 * each / 50_000)
        cids = []
        for path in paths:
            m = load.run_measured(cli("enqueue", "--phones-file", str(path), "--message", MESSAGE, "--json",
                                      "--batch-size", str(FAIR_BATCH), "--at", f"0{due_s}"),
                                  env=child_env(stack.env), workdir=stack.workdir, timeout_s=600)
            if m.returncode != 0:
                raise RuntimeError(f"enqueue --at failed ({m.returncode}): {m.stderr_tail}")
            cids.append(json.loads(m.stdout.strip().splitlines()[-1])["campaign_id"])
        late = time.time() > due_s
        gap = 0.0
        deadline = time.monotonic() + timeout_s + max(0.0, due_s - time.time())
        while time.monotonic() < deadline:
            rows = [r.hmget(ns.campaign(cid), "state", "sent", "failed", "total") for cid in cids]
            if all(row[0] in _DONE for row in rows):
                break
            if not any(row[0] in _DONE for row in rows):
                shares = [(int(row[1] or 0) + int(row[2] or 0)) / max(int(row[3] or 0), 1) for row in rows]
                gap = max(gap, abs(shares[0] - shares[1]))
            time.sleep(0.1)
    finally:
        clock.stop(timeout_s=20)
    ends = []
    states = []
    for cid in cids:
        state, finished = r.hmget(ns.campaign(cid), "state", "finished_ms")
        states.append(state.decode() if isinstance(state, bytes) else str(state or ""))
        ends.append(int(finished or 0))
    span_s = (max(ends) - due_s * 1000) / 1000 if all(ends) else None
    finish_gap_s = abs(ends[0] - ends[1]) / 1000 if all(ends) else None
    summary = sim.summary()
    out = {"each": each, "batch_size": FAIR_BATCH, "campaigns": cids, "states": states, "due_s": due_s,
           "enqueued_after_due": late, "max_progress_gap": round(gap, 4),
           "finish_gap_s": round_or_none(finish_gap_s, 2), "span_s": round_or_none(span_s, 2),
           "finish_gap_share": round(finish_gap_s / span_s, 4) if finish_gap_s is not None and span_s else None,
           "sim_duplicates": summary["duplicates"], "breaches": sum(summary["breaches"].values())}
    log(f"lanes, two normal campaigns due together: {out}")
    return out

