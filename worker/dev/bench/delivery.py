"""The delivery workload of the benchmark (:func:`delivery`): statuses through the push endpoint, and statuses
settled by polling status.php within the provider's limits.

- **Push** — :func:`worker.delivery.bench.bench_push_ingestion` on the bench's Redis (AOF ``everysec``): the
  receiver as its own process, every status answered 200 after its write to Redis; the figure counts only
  when every status was answered 200 and is stored final.
- **Polling** — :func:`worker.delivery.bench.bench_polling` against a simulator of its own with delivery on
  (``--delivery``, every message final about 50 ms after its acceptance, so the figure is the polling's, not
  the provider's delivery delay; 200 ms a request like the send workloads) and its own login (the guards'
  login keys of the other workloads are not shared). Its delivery rates leave no message never final: a
  never-final one would keep the poller waiting for its timeout and the rate would be the timeout's. The
  simulator's breach counters (status.php's limits: five requests for one message a minute, five status
  requests at once, the mass-request rule; and the send's, for the campaign sent first) must stay at 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.dev.bench.send import LATENCY_MS, log
from worker.dev.stack import RedisServer, SimulatorProcess

__all__ = ["DELIVERY_LOGIN", "DELIVERY_RATES", "DELIVERY_SIM_ARGS", "delivery"]

#: Every message final (the simulator's default mix with its 2 % never-final share delivered instead).
DELIVERY_RATES = "1=0.87,3=0.04,20=0.05,22=0.01,23=0.01,25=0.02"
DELIVERY_SIM_ARGS = ("--delivery", "--delivery-delay-s", "0.05", "--delivery-spread", "0.1",
                     "--delivery-rates", DELIVERY_RATES, "--balance", "1000000000000")
DELIVERY_LOGIN = "bench-delivery"
POLL_TIMEOUT_S = 600.0


def delivery(server: RedisServer, work: Path, *, push_statuses: int, poll_recipients: int) -> dict[str, Any]:
    """Both delivery figures: ``{"push": {...}, "polling": {...}}`` (see the module docstring)."""
    from worker.delivery.bench import bench_polling, bench_push_ingestion

    push = bench_push_ingestion(server.url, statuses=push_statuses)
    log(f"delivery, push ingestion: {push}")
    sim = SimulatorProcess(latency_ms=LATENCY_MS, login=DELIVERY_LOGIN, extra_args=DELIVERY_SIM_ARGS,
                           log_path=work / "simulator-delivery.log").start()
    try:
        polling = bench_polling(server.url, sim.url, login=sim.login, password=sim.password,
                                recipients=poll_recipients, timeout_s=POLL_TIMEOUT_S)
        summary = sim.summary()
    finally:
        sim.stop()
    polling |= {"breaches": sum(summary["breaches"].values()),
                "breaches_by_rule": {k: v for k, v in summary["breaches"].items() if v},
                "errors_answered": summary["errors_answered"], "sim_requests": summary["requests"],
                "peak_status_inflight": summary["peak_status_inflight"], "sim_duplicates": summary["duplicates"],
                "simulator": {"latency_ms": LATENCY_MS, "args": list(DELIVERY_SIM_ARGS)}}
    log(f"delivery, polling: {polling}")
    return {"push": push, "polling": polling}
