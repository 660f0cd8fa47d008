"""``make chaos``: nothing lost, nothing twice, no rule broken, no stall — with real processes and real faults.

Each scenario brings up its own stack (:mod:`.harness`: a private redis-server with AOF, the provider
simulator, Celery workers and beat as real processes), enqueues, injects its fault while the campaign
runs, waits for the end and compares what the simulator recorded with what was enqueued.

Processes (:mod:`.processes`):

- ``worker-kills``: a worker killed with SIGKILL (main process and pool) in the middle of its own request,
  three times during the campaign, a new worker started each time;
- ``redis-restart``: the redis-server killed with SIGKILL mid-campaign and started again from its AOF;
- ``frozen-redis``: the redis-server stopped (SIGSTOP) for 15 s mid-campaign, then continued;
- ``two-beats``: two beat processes dispatching at once;
- ``two-enqueues``: one campaign id enqueued by two ``smsc-mailer enqueue`` processes at the same moment;
- ``fast-clock``: the only worker's clock 5 s fast (libfaketime) while 51 campaigns to the same numbers test the
  flood rule (the 51st message to a number waits out a 60 s gap).

The provider (:mod:`.provider`):

- ``provider-faults``: HTTP 500, connection resets, errors 9 and 4, answers after the timeout;
- ``slow-provider``: one request in five accepted three timeouts after it left, status.php lagging;
- ``autocorrect``: a file of national numbers (``8 9…``) to a provider that corrects them, with late
  acceptances that force settling under the provider's spelling;
- ``status-limits``: many batches settled at once (late acceptances and a Redis restart) under status.php's
  own limits (fewer than five at once, five a minute per message);
- ``late-answers``: one answer in four after the timeout: the campaign keeps half its clean rate.

Figures per scenario: ``lost``, ``duplicated``, ``breaches`` (every provider rule the simulator counts),
``leaks`` (the account's password in any Redis key or value, log file or logged request line) — all 0 —
and the time to ``completed`` (first enqueue to the end of the last campaign, by the Redis server's clock),
within the scenario's bound: 30 s + messages / 150 a second + what the fault itself must cost
(:data:`SCENARIOS`). A scenario also checks that its fault really happened.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from worker.dev.chaos.harness import LOGIN, PASSWORD, ScenarioResult
from worker.dev.chaos.leaks import find_secret_in_files, find_secret_in_redis
from worker.dev.chaos.processes import (
    scenario_fast_clock,
    scenario_frozen_redis,
    scenario_redis_restart,
    scenario_two_beats,
    scenario_two_enqueues,
    scenario_worker_kills,
)
from worker.dev.chaos.provider import (
    scenario_autocorrect,
    scenario_late_answers,
    scenario_provider_faults,
    scenario_slow_provider,
    scenario_status_limits,
)

__all__ = [
    "LOGIN",
    "PASSWORD",
    "SCENARIOS",
    "ScenarioResult",
    "find_secret_in_files",
    "find_secret_in_redis",
    "main",
]

log = logging.getLogger(__name__)

#: name -> (scenario, recipients in a full run, recipients with --quick). For ``late-answers`` the size of
#: each of its two campaigns; for ``fast-clock`` the numbers that each get 51 messages.
SCENARIOS: dict[str, tuple[Callable[..., ScenarioResult], int, int]] = {
    "worker-kills": (scenario_worker_kills, 30_000, 8_000),
    "redis-restart": (scenario_redis_restart, 20_000, 6_000),
    "provider-faults": (scenario_provider_faults, 10_000, 3_000),
    "two-beats": (scenario_two_beats, 10_000, 3_000),
    "slow-provider": (scenario_slow_provider, 10_000, 3_000),
    "autocorrect": (scenario_autocorrect, 10_000, 3_000),
    "status-limits": (scenario_status_limits, 10_000, 3_000),
    "frozen-redis": (scenario_frozen_redis, 20_000, 5_000),
    "two-enqueues": (scenario_two_enqueues, 20_000, 5_000),
    "late-answers": (scenario_late_answers, 100_000, 25_000),
    "fast-clock": (scenario_fast_clock, 100, 10),
}


# ------------------------------------------------------------------------------------ the command


def _table(results: list[ScenarioResult]) -> str:
    head = f"{'scenario':<16} {'recipients':>10} {'lost':>5} {'duplicated':>10} {'breaches':>8} {'leaks':>5} " \
           f"{'state':<10} {'completed':>9} {'bound':>6} {'ok':<6}"
    rows = [head, "-" * len(head)]
    for r in results:
        done = "-" if r.completed_s is None else f"{r.completed_s:.0f}s"
        rows.append(f"{r.name:<16} {r.recipients:>10} {r.lost:>5} {r.duplicated:>10} {r.breaches:>8} "
                    f"{r.leaks:>5} {r.state:<10} {done:>9} {r.bound_s:>5.0f}s {'ok' if r.ok else 'FAILED':<6}")
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
            print(f"smsc-mailer-dev: chaos --only: unknown scenario {only!r}; one of {', '.join(names)}")
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
        print(f"chaos: {name}: {'ok' if res.ok else 'FAILED'} in {res.seconds:.0f} s: {res.notes}", flush=True)
    print(_table(results))
    ok = all(r.ok for r in results)
    if as_json:
        print(json.dumps([{k: v for k, v in asdict(r).items() if k != "details"} | {"ok": r.ok, "in_time": r.in_time}
                          for r in results]))
    if ok and workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    elif not ok:
        print(f"chaos: logs kept in {root}")
    return 0 if ok else 1
