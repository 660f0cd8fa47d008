"""Scenarios where the provider is as faulty, slow, strict and strange as the real one can be: HTTP 500s,
resets, errors 9 and 4; requests accepted after the client gave up; numbers auto-corrected; status.php's
own limits; one answer in four after the timeout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from worker.dev.chaos.harness import TIMEOUT_S, Run, ScenarioResult, chaos_phones, faults, run_scenario
from worker.dev.chaos.processes import _restart_redis
from worker.dev.phones import spell

__all__ = [
    "MIN_LATE_RATIO",
    "scenario_autocorrect",
    "scenario_late_answers",
    "scenario_provider_faults",
    "scenario_slow_provider",
    "scenario_status_limits",
]

#: One answer in four after the timeout: the campaign keeps at least this share of its clean rate.
MIN_LATE_RATIO = 0.5
#: status.php answers error 9 to the fifth request in flight of one login.
STATUS_AT_ONCE = 5


def _faults(run: Run) -> dict[str, int]:
    return faults(run.sim.summary())


def _wait_for(run: Run, what: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what() and time.monotonic() < deadline:
        time.sleep(0.02)


def scenario_provider_faults(workdir: Path, *, recipients: int) -> ScenarioResult:
    """HTTP 500, resets, errors 9 and 4, and delayed answers (taken, but answered after the timeout)."""

    def fault(run: Run) -> None:
        sim = run.sim
        sim.configure(delayed_answer_s=TIMEOUT_S + 1.5)
        run.wait_progress(0.05)  # the account is proven (one answer came back): the full concurrency
        # Each fault at least once for sure (a rate of 1 until it happened), each followed by a good
        # answer so that they are not one streak of errors (that is another test: the account backs off).
        for change, counter in (({"delayed_answer_rate": 1.0}, "delayed"), ({"reset_rate": 1.0}, "resets"),
                                ({"http500_rate": 1.0}, "http500"), ({"error_rates": {"9": 1.0}}, "error9"),
                                ({"error_rates": {"4": 1.0}}, "error4")):
            sim.configure(**change)
            _wait_for(run, lambda c=counter: _faults(run).get(c, 0) > 0)
            sim.configure(delayed_answer_rate=0, reset_rate=0, http500_rate=0, error_rates={})
            messages = sim.summary()["messages"]
            _wait_for(run, lambda m=messages: sim.summary()["messages"] > m)
        # Then a few seconds of a random mix: about one request in four goes wrong (status.php too, for
        # 500s and resets). Every faulted batch is retried or settled; an identical retry waits for the
        # provider's one-minute window, which bounds how long this scenario takes.
        sim.configure(http500_rate=0.06, reset_rate=0.06, delayed_answer_rate=0.08, error_rates={"9": 0.05, "4": 0.03})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and run.done() < 0.6 * run.recipients:
            time.sleep(0.1)
        run.scan()
        sim.configure(http500_rate=0, reset_rate=0, delayed_answer_rate=0, error_rates={})
        faults = _faults(run)
        for kind in ("http500", "resets", "delayed", "error9", "error4"):
            run.checks[f"the provider answered {kind}"] = faults.get(kind, 0) > 0

    return run_scenario(workdir, "provider-faults", recipients, fault, fault_s=150, workers=2, concurrency=2,
                        env={"SMSC_BATCH_SIZE": "50"})


def scenario_slow_provider(workdir: Path, *, recipients: int) -> ScenarioResult:
    """One send request in five takes three times ``SMSC_TIMEOUT`` before the provider accepts it, long
    after the client gave up, and status.php knows the messages a second later still. A batch whose
    outcome is unknown is settled only after the horizon that covers that (``SMSC_SETTLE_HORIZON``), never
    sent again before; the slow requests keep their place under the 15-in-flight rule while they run."""
    slow_s, lag_s = 3 * TIMEOUT_S, 1.0
    horizon_s = slow_s + lag_s + 1.0 - TIMEOUT_S + 1.0  # accepted + indexed, past the deadline, + a margin

    def after(run: Run) -> None:
        summary = run.sim.summary()
        gone = int(summary.get("accepted_after_client_gone", 0))
        run.notes.append(f"{summary.get('slow_requests', 0)} slow requests, {gone} accepted after the client "
                         f"gave up; peak {summary['peak_inflight']} in flight")
        run.checks["requests accepted after the client gave up"] = gone > 0

    return run_scenario(workdir, "slow-provider", recipients, lambda run: None, after=after, fault_s=60,
                        sim_config={"slow_accept_rate": 0.2, "slow_accept_s": slow_s, "status_lag_s": lag_s},
                        env={"SMSC_SETTLE_HORIZON": f"{horizon_s:g}"}, workers=2, concurrency=2)


def national(digits: str, style: int) -> str:
    """``7XXXXXXXXXX`` written the Russian national way, without ``+``: ``8XXXXXXXXXX``,
    ``8 (XXX) XXX-XX-XX`` or the ten digits alone."""
    rest = digits[1:]
    style %= 3
    if style == 0:
        return "8" + rest
    if style == 1:
        return f"8 ({rest[:3]}) {rest[3:6]}-{rest[6:8]}-{rest[8:]}"
    return rest


def scenario_autocorrect(workdir: Path, *, recipients: int) -> ScenarioResult:
    """Files of national numbers (``8 9…``, ``9…`` without ``+``) to a provider that auto-corrects numbers
    written without ``+`` and echoes them corrected, with one request in five accepted only after the
    timeout, so that settling must find the messages under the provider's spelling. Half the recipients
    go in with ``SMSC_DEFAULT_REGION=RU`` (some subscribers written a second time as ``+7 9…``: one
    recipient), half without a region: sent as written, corrected by the provider (``8…`` -> ``7…``)."""
    half = recipients // 2

    def enqueue(run: Run) -> None:
        regional, as_written = run.phones[:half], run.phones[half:]
        path = run.dir / "national-ru.txt"
        lines = [national(p, i) for i, p in enumerate(regional)]
        lines += [spell(p, 0) for p in regional[::10]]  # the same subscribers again, as +7...
        path.write_text("\n".join(lines) + "\n")
        run.enqueue_file(path, regional, env={"SMSC_DEFAULT_REGION": "RU"})
        st = run.status()
        run.notes.append(f"with RU: {len(lines)} lines, {st['total']} recipients, {st['duplicates']} duplicates")
        run.checks["national and international spellings are one recipient"] = (
            st["total"] == len(regional) and st["duplicates"] == len(regional[::10]))
        path = run.dir / "national.txt"  # 8XXXXXXXXXX in two spellings: the provider corrects them to 7...
        path.write_text("".join(national(p, i % 2) + "\n" for i, p in enumerate(as_written)))
        run.enqueue_file(path, as_written)

    def after(run: Run) -> None:
        gone = int(run.sim.summary().get("accepted_after_client_gone", 0))
        run.checks["settling was needed"] = gone > 0

    return run_scenario(workdir, "autocorrect", recipients, lambda run: None, enqueue=enqueue, after=after,
                        fault_s=60, sim_config={"autocorrect": True, "slow_accept_rate": 0.2,
                                                "slow_accept_s": TIMEOUT_S + 1.5, "status_lag_s": 0.5},
                        env={"SMSC_SETTLE_HORIZON": "4"}, workers=2, concurrency=2)


def scenario_status_limits(workdir: Path, *, recipients: int) -> ScenarioResult:
    """Many batches to settle at once — a third of the requests accepted after the timeout, then Redis
    killed and restarted from its AOF, so every batch that may have left is settled through status.php
    before anything else — and status.php's own limits hold: fewer than five requests at once, at most
    five a minute for one message (the simulator's status breaches stay 0)."""

    def fault(run: Run) -> None:
        _restart_redis(run, 0.4)

    def after(run: Run) -> None:
        summary = run.sim.summary()
        marked = next((e["marked"] for e in run.events if "marked" in e), 0)
        peak = int(summary.get("peak_status_inflight", 0))
        run.notes.append(f"peak {peak} status requests at once")
        run.checks["more batches to settle than status.php takes at once"] = marked >= STATUS_AT_ONCE
        run.checks["status.php asked"] = peak > 0
        run.checks["fewer than five status requests at once"] = peak < STATUS_AT_ONCE

    return run_scenario(workdir, "status-limits", recipients, fault, after=after, fault_s=120,
                        sim_config={"slow_accept_rate": 0.3, "slow_accept_s": TIMEOUT_S + 1.0, "status_lag_s": 1.0},
                        env={"SMSC_BATCH_SIZE": "50", "SMSC_SETTLE_HORIZON": "4"}, workers=2, concurrency=2)


LATE_TIMEOUT_S = "0.6"


def scenario_late_answers(workdir: Path, *, recipients: int) -> ScenarioResult:
    """One answer in four after the timeout (the provider took the messages; the client gave up): the
    campaign completes at no less than half its clean rate, measured in the same run — first a clean
    campaign of ``recipients``, then one of as many other numbers with the late answers.

    Twenty worker processes for the 14 requests the account may have in flight, as in production: a
    process waiting out a late answer leaves the others sending (with as many processes as requests in
    flight, every late answer would simply stop one; that measures Celery, not smsc-mailer).

    The timeout is 0.6 s here (answers take 150 ms): a late answer holds its login slot until the
    timeout, and its batch then needs a status request, so no client that keeps the provider's
    14-in-flight rule can send more than ``14 / ((1 - p) * latency + p * (timeout + latency))`` requests
    a second — with p = 1/4: 47/s at 0.6 s, 35/s at 1 s, 21/s at 2 s, against ~60/s of the clean run
    (CPU-bound on two cores). So the ratio is a test of how much of that room smsc-mailer keeps (no
    stall, no back-off, settling alongside the sending), at a timeout where half is possible at all."""
    late = chaos_phones(recipients, start=recipients)

    def fault(run: Run) -> None:
        [clean] = run.wait_final()
        clean_s = (clean["finished_ms"] - clean["created_ms"]) / 1000 if clean["finished_ms"] else None
        run.sim.configure(delayed_answer_rate=0.25, delayed_answer_s=TIMEOUT_S + 1.0)
        cid = run.enqueue(late)
        [st] = run.wait_final([cid])
        late_s = (st["finished_ms"] - st["created_ms"]) / 1000 if st["finished_ms"] else None
        ratio = clean_s / late_s if clean_s and late_s else 0.0
        run.events.append({"clean_s": clean_s, "late_s": late_s, "ratio": ratio})
        run.notes.append(f"clean {recipients / clean_s if clean_s else 0:.0f}/s, one answer in four late "
                         f"{recipients / late_s if late_s else 0:.0f}/s: {ratio:.2f} of the clean rate; "
                         f"{run.sim.summary()['delayed']} late answers")
        run.checks[f"at least {MIN_LATE_RATIO} of the clean rate"] = ratio >= MIN_LATE_RATIO

    return run_scenario(workdir, "late-answers", recipients, fault, fault_s=60, messages=2 * recipients,
                        workers=2, concurrency=10,
                        env={"SMSC_SETTLE_HORIZON": "1", "SMSC_TIMEOUT": LATE_TIMEOUT_S})
