"""Scenarios that break the processes around the provider: workers killed, Redis killed and restarted from
its AOF, Redis frozen, two beats, one campaign id enqueued twice at once, a worker whose clock runs fast."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from scheduler.campaigns import Campaigns
from scheduler.keys import text
from worker.dev.chaos.harness import LATENCY_MS, MESSAGE, Run, ScenarioResult, run_scenario
from worker.dev.phones import spell

__all__ = [
    "CLOCK_OFFSET_S",
    "FREEZE_S",
    "scenario_fast_clock",
    "scenario_frozen_redis",
    "scenario_redis_restart",
    "scenario_two_beats",
    "scenario_two_enqueues",
    "scenario_worker_kills",
]

#: While a kill is prepared the provider holds every request this long, so that each worker process that
#: sends is inside one when the SIGKILL lands.
HOLD_MS = 1000
FREEZE_S = 15.0
CLOCK_OFFSET_S = 5.0
#: The flood rule: at most 50 messages to one subscriber in a chain with gaps under 60 s; the 51st campaign
#: to the same numbers must wait out a 60 s gap.
FLOOD_CHAIN = 51


def scenario_worker_kills(workdir: Path, *, recipients: int) -> ScenarioResult:
    """A worker killed with SIGKILL in the middle of its own request, three times during one campaign; a
    new one started each time.

    Mid-request is proven, not hoped for: the provider holds requests for a second while the kill is
    prepared, and the victim is killed only when more requests are in flight than the other workers have
    processes — so at least one of them is the victim's (it had 3 s to happen before; on a busy machine
    that was sometimes too short, and a request of the *other* worker passed for the victim's).
    """

    def fault(run: Run) -> None:
        caught = []
        for k, fraction in enumerate((0.2, 0.45, 0.7), start=1):
            run.wait_progress(fraction)
            victim = next(w for w in run.stack.workers if w.running)
            others = sum(w.concurrency for w in run.stack.workers if w.running and w is not victim)
            leased = run.client.zcard(run.keys.leased)
            run.sim.configure(latency_ms=HOLD_MS)
            try:
                inflight = run.wait_inflight(more_than=others, timeout_s=30)
                at = run.done()
                victim.kill()
            finally:
                run.sim.configure(latency_ms=LATENCY_MS)
            mid = inflight > others
            caught.append(mid)
            run.events.append({"kill": victim.name, "mid_request": mid, "inflight": inflight, "others": others,
                               "done": at, "leased": leased})
            run.notes.append(f"kill {k}: {victim.name} at {at}/{run.recipients}"
                             f"{' mid-request' if mid else ''} ({inflight} in flight), {leased} batches leased")
            run.stack.add_worker()
        run.checks["each kill caught its victim mid-request"] = all(caught)
        run.checks["each kill mid-campaign"] = all(0 < e["done"] < run.recipients for e in run.events)

    def after(run: Run) -> None:
        # the provider's side of it: requests whose client died were accepted all the same
        gone = int(run.sim.summary().get("accepted_after_client_gone", 0))
        run.checks["the provider took requests of killed workers"] = gone > 0

    return run_scenario(workdir, "worker-kills", recipients, fault, after=after, fault_s=90, workers=2,
                        concurrency=2)


def _restart_redis(run: Run, fraction: float) -> None:
    """SIGKILL the redis-server at ``fraction`` of the campaign, start it again from its AOF, and wait
    until the workers have settled what could have left (``marked`` batches) before anything new."""
    server = run.stack.redis
    assert server is not None
    run.wait_progress(fraction)
    before = run.client.info("server")["run_id"]
    run.wait_inflight()
    at = run.done()
    server.kill()
    time.sleep(1.0)
    server.start()
    # the broker's queue and unacked messages, as the AOF kept them mid-campaign (scanning before the kill
    # could take long enough on a busy machine for the campaign to end first)
    run.scan()
    after = run.client.info("server")["run_id"]
    run.events.append({"restart": True, "done": at, "run_id_before": before, "run_id_after": after})
    run.notes.append(f"redis SIGKILLed at {at}/{run.recipients} and restarted from its AOF "
                     f"(run id {before[:6]} -> {after[:6]})")
    run.checks["redis restarted mid-campaign"] = before != after and 0 < at < run.recipients
    for _ in range(300):  # the workers find the new server and settle what could have left
        try:
            marked, run_id = run.client.hmget(run.keys.meta, "marked", "run_id")
            current = run.client.info("server")["run_id"]
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            marked, run_id, current = None, None, ""
        if run_id is not None and text(run_id) == current:
            run.notes.append(f"{int(marked or 0)} batches settled through status.php first")
            run.events.append({"marked": int(marked or 0)})
            return
        time.sleep(0.1)
    run.events.append({"marked": 0})


def scenario_redis_restart(workdir: Path, *, recipients: int) -> ScenarioResult:
    """redis-server killed with SIGKILL mid-campaign and started again from its AOF (everysec)."""

    def fault(run: Run) -> None:
        _restart_redis(run, 0.3)
        run.checks["batches settled first"] = next(e["marked"] for e in run.events if "marked" in e) > 0

    return run_scenario(workdir, "redis-restart", recipients, fault, fault_s=90, workers=2, concurrency=2)


def scenario_frozen_redis(workdir: Path, *, recipients: int) -> ScenarioResult:
    """redis-server frozen (SIGSTOP) for 15 s mid-campaign, then continued (SIGCONT).

    Every client hangs meanwhile; the server's clock does not, so at SIGCONT every lease looks 15 s
    older: batches whose workers were mid-request are taken back while those workers come back to record.
    """

    def fault(run: Run) -> None:
        server = run.stack.redis
        assert server is not None
        run.wait_progress(0.3)
        run.wait_inflight()
        at = run.done()
        server.freeze()
        frozen_at = time.monotonic()
        time.sleep(FREEZE_S)
        server.thaw()
        frozen_s = round(time.monotonic() - frozen_at, 1)
        run.events.append({"freeze": frozen_s, "done": at})
        run.notes.append(f"redis frozen {frozen_s:.0f} s at {at}/{run.recipients}")
        run.checks["redis frozen 15 s mid-campaign"] = frozen_s >= FREEZE_S and 0 < at < run.recipients

    return run_scenario(workdir, "frozen-redis", recipients, fault, fault_s=FREEZE_S + 75, workers=2, concurrency=2)


def scenario_two_beats(workdir: Path, *, recipients: int) -> ScenarioResult:
    """Two beat processes dispatching at once: no batch goes out twice."""

    def fault(run: Run) -> None:
        beats = sum(b.running for b in run.stack.beats)
        run.notes.append(f"{beats} beats")
        run.checks["two beats ran"] = beats == 2
        run.wait_progress(0.5)
        run.scan()

    return run_scenario(workdir, "two-beats", recipients, fault, fault_s=0, workers=2, concurrency=2, beats=2)


def scenario_two_enqueues(workdir: Path, *, recipients: int) -> ScenarioResult:
    """One campaign id enqueued twice at the same moment: two ``smsc-mailer enqueue --campaign-id X``
    processes started together (an application retrying after a timeout). One campaign, each recipient once."""
    cid = "chaos_twice"

    def enqueue(run: Run) -> None:
        path = run.dir / "phones.txt"
        path.write_text("".join(spell(p, i) + "\n" for i, p in enumerate(run.phones)))
        args = ("enqueue", "--phones-file", str(path), "--message", MESSAGE, "--json", "--campaign-id", cid)
        cmds = [run.cli(*args), run.cli(*args)]
        deadline = time.monotonic() + 300
        while any(c.ended is None for c in cmds) and time.monotonic() < deadline:
            for c in cmds:
                if c.ended is None and c.proc.poll() is not None:
                    c.ended = time.monotonic()
            time.sleep(0.005)
        rcs = [c.wait() for c in cmds]
        if 0 not in rcs:
            raise RuntimeError(f"both enqueues failed: {rcs}: {cmds[0].output()[-300:]}")
        overlap = max(c.started for c in cmds) < min(c.ended or 0 for c in cmds)
        listed = Campaigns(run.client, run.keys).campaign_ids()
        run.campaigns.append(cid)
        run.expected.update(run.phones)
        run.events.append({"rcs": rcs, "overlap": overlap, "campaigns": listed})
        run.notes.append(f"two enqueues of {cid} at once: exit codes {rcs}, "
                         f"{'overlapping' if overlap else 'one after the other'}; campaigns {listed}")
        run.checks["the two enqueues ran at the same time"] = overlap
        run.checks["one campaign"] = listed == [cid]

    return run_scenario(workdir, "two-enqueues", recipients, lambda run: None, enqueue=enqueue, fault_s=10,
                        workers=2, concurrency=2)


def scenario_fast_clock(workdir: Path, *, recipients: int) -> ScenarioResult:
    """The worker's clock 5 s fast (libfaketime, as ``faketime -f +5s``) while the flood rule is tested:
    51 campaigns to the same ``recipients`` numbers, so the 51st message to each must wait out a 60 s gap
    after the 50th. The rule is the provider's, measured by arrival: zero flood breaches at the provider.

    The fast worker is the only one (its clock steps run in it too): beside a worker with the right clock,
    whose runs of batches (worker.tasks.Run) claim the next due batch as soon as one is done, the fast one
    could be left without a batch, and the scenario would test nothing (it happened at the quick size)."""

    def enqueue(run: Run) -> None:
        fast = run.stack.add_worker(clock_offset_s=CLOCK_OFFSET_S)
        run.events.append({"fast_worker": fast.name})
        for i in range(FLOOD_CHAIN):  # a new text each time: not identical requests
            run.enqueue(run.phones, message=f"{MESSAGE} (drill {i + 1})", note=i == 0)

    def fault(run: Run) -> None:
        run.notes.append(f"{FLOOD_CHAIN} campaigns to {recipients} numbers; worker "
                         f"{run.events[0]['fast_worker']} {CLOCK_OFFSET_S:+g} s")

    def after(run: Run) -> None:
        name = run.events[0]["fast_worker"]
        log = next(w for w in run.stack.workers if w.name == name).log_text()
        batches = sum(1 for line in log.splitlines() if "smsc.send_batch[" in line and " succeeded in " in line)
        run.notes.append(f"the fast worker ran {batches} batches")
        run.checks["the fast worker sent"] = batches > 0

    return run_scenario(workdir, "fast-clock", recipients, fault, enqueue=enqueue, after=after, fault_s=90,
                        messages=recipients * FLOOD_CHAIN, workers=0, concurrency=2)
