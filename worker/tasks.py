"""The tasks — each one is work, named ``smsc.*`` (the public interface, shown in Flower), with only ids in
its arguments — and the clock that hands the work out.

Tasks:

- ``smsc.send_batch(batch_id)`` — send one batch, then, while no message waits in the namespace's queues
  (for up to :data:`RUN_S`), the next due ones in the same process (:class:`Run`; its result names them).
- ``smsc.poll_batch(batch_id)`` — poll one batch's delivery statuses through status.php (within its limits).
- ``smsc.enqueue(phones_file, message, sender=None, **plan)`` — enqueue a campaign from a file the
  worker can read (for apps that do not import this package, and for beat schedules); the campaign
  id is derived from the task id, so a redelivered message never makes a second campaign.

The clock is not a task. Every worker runs it in its main process while connected to the broker
(:class:`ClockBootstep`, a consumer bootstep; ``celery -A worker worker --without-clock`` leaves it
out), one thread per step (:data:`CLOCK`):

- **dispatch**, every second: after a Redis restart settle first (:func:`~scheduler.recovery.ensure_recovered`),
  take back expired leases, claim due batches and send ``smsc.send_batch`` for each;
- **delivery**, every 2 s: track sent batches, move campaigns to ``delivered_final``, send
  ``smsc.poll_batch`` for the batches due for a status poll;
- **webhooks**, every second: post the due webhook events (signed, retried with back-off).

Each step runs in one worker per interval (a gate in Redis: ``SET NX PX`` for 90 % of the interval, on
the server's clock), and takes its work by an atomic claim anyway, so a second worker stepping at the
same moment (a gate that ran out during a long step) is harmless. A step that fails (Redis restarting,
a broker away) is tried again at the next interval; the failure is logged once, and its end.

``smsc.dispatch``, ``smsc.delivery_tick`` and ``smsc.webhooks`` stay registered — the same steps as tasks,
without task events (never in Flower) — for a deployment that runs its workers ``--without-clock`` and
ticks from a beat schedule of its own, and for the messages an older release's beat still sends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import redis
from celery import bootsteps
from celery.signals import task_failure, task_postrun, task_prerun

from scheduler.keys import split_ref
from scheduler.recovery import ensure_recovered
from worker.app import app, queue_name, urgent_queue_name
from worker.delivery.config import DeliveryConfig
from worker.delivery.poller import make_store, poll_batch, poll_due, sends_first, tick
from worker.delivery.webhooks import client_for, send_due
from worker.logs import bind, bind_batch, clear_context
from worker.runtime import Runtime, get_runtime
from worker.sending import BatchResult, process_batch

__all__ = [
    "CLOCK",
    "Clock",
    "ClockBootstep",
    "ClockStep",
    "delivery_step",
    "delivery_tick",
    "dispatch",
    "dispatch_step",
    "enqueue",
    "poll_statuses",
    "send_batch",
    "webhooks",
    "webhooks_step",
]

log = logging.getLogger(__name__)

# Tasks whose first argument is a batch ref ``cid:n``: their log lines carry campaign and batch.
_BATCH_TASKS = frozenset({"smsc.send_batch", "smsc.poll_batch"})


# ------------------------------------------------------------------------------------------ the steps

def _feed(max_claim: int) -> int:
    rt = get_runtime()
    refs = rt.ledger.claim(window=rt.settings.smsc_window,
                           claim_lease_ms=int(rt.settings.lease_s * 1000) * 2, max_claim=max_claim)
    urgent = urgent_queue_name(rt.settings.smsc_namespace)
    for ref in refs:
        try:
            lane = rt.campaign_info(split_ref(ref)[0]).priority
        except LookupError:
            lane = "normal"  # a stale batch: its task finds nothing to do
        if lane == "urgent":
            send_batch.apply_async((ref,), queue=urgent)
        else:
            send_batch.apply_async((ref,))
    return len(refs)


def dispatch_step(rt: Runtime) -> dict[str, int]:
    """Settle after a restart, sweep expired leases, claim due batches and send them out."""
    s = rt.settings
    # A new Redis server (restart): settle what could have left before anything is claimed; on the
    # first tick of a fresh namespace this records the server, so that new campaigns need no settling.
    if not ensure_recovered(rt.redis, rt.keys, deadline_s=s.smsc_timeout, horizon_s=s.smsc_settle_horizon,
                            ledger=rt.ledger, guards=rt.guards):
        return {"claimed": 0, "swept": 0}  # another process is recovering: next tick
    swept = rt.ledger.sweep()
    # Messages still waiting, or a run that had to yield to one lately: every pool process is busy, and
    # the runs take the due batches themselves; more messages would only wait, or end runs. Otherwise
    # hand out up to the window (a new campaign, idle processes, a worker that joined).
    claimed = 0
    if not messages_waiting(rt) and not rt.redis.exists(busy_key(rt)):
        claimed = _feed(s.smsc_window)
    if swept or claimed:
        log.info("dispatch: %d batches out, %d taken back from expired leases", claimed, swept)
    return {"claimed": claimed, "swept": swept}


def delivery_step(rt: Runtime) -> dict[str, int]:
    """Track sent batches, end campaigns (``delivered_final``), hand due status polls out."""
    cfg = DeliveryConfig.from_settings(rt.settings)
    store = make_store(rt, cfg)
    out = tick(rt, store)
    if sends_first(rt, store, cfg.yield_s):
        return {**out, "polls": 0}
    refs = poll_due(rt, store, max_batches=8)  # leased: a lost message brings the batch back after the lease
    for ref in refs:
        poll_statuses.apply_async((ref,))
    return {**out, "polls": len(refs)}


def webhooks_step(rt: Runtime, client: httpx.Client) -> dict[str, int]:
    """Post the due webhook events."""
    cfg = DeliveryConfig.from_settings(rt.settings)
    r = send_due(make_store(rt, cfg), cfg, client)
    return {"cut": r.cut, "acknowledged": r.acknowledged, "retried": r.retried, "dead": r.dead}


# ------------------------------------------------------------------------------------------ the runs

#: A run's budget: after this, a task takes no next batch (its successor does: :func:`_feed`).
RUN_S = 10.0
#: The refs a run's result names (Flower's result column); the count covers every batch.
_RUN_REFS_SHOWN = 40


class Run:
    """The batches of one ``smsc.send_batch`` task: its own, then — while no message waits in this
    namespace's queues and its budget lasts — the next due batch, claimed and sent in the same process.

    Why one task sends a run of batches, not one: Celery's own work per task (the message, three task
    events, the pool's hand-over, the ack) costs a worker about as much CPU as sending a batch of 100
    does (docs/flower.md, "Why a run"); a run pays it once for many batches. A claim in the run takes exactly what
    a message would have carried — the same claim script, lanes and fair share, urgent first, within
    the window — so the order of sending and the guards are those of one task per batch. A message
    still waiting one batch after it was seen (a batch the clock handed out, a status poll, an enqueue:
    no idle process took it) ends the run after its current batch, so it waits behind one batch at most;
    and the dispatcher, told that every process is busy, hands out no more for a while (:func:`busy_key`)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.results: list[BatchResult] = []
        self.deadline = time.monotonic() + min(RUN_S, rt.settings.lease_s / 10)
        self.ended_by_budget = False
        self.last = False
        self.waiting = False

    def add(self, res: BatchResult) -> None:
        self.results.append(res)

    def next_batch(self) -> str | None:
        """The run's next batch, claimed; None when the run ends: its budget is spent, a message waits
        (then the batch claimed with that news is the last), nothing is due, or Redis failed."""
        if self.last or time.monotonic() >= self.deadline:
            self.ended_by_budget = not self.last
            return None
        rt, s = self.rt, self.rt.settings
        ask_apart = not _broker_is_redis(rt)  # a broker of its own: asked apart, before the claim
        if ask_apart and messages_waiting(rt) != 0:
            return None
        try:
            # One round trip: the queues' depth and the claim.
            pipe = rt.redis.pipeline(transaction=False)
            if not ask_apart:
                _queue_lengths(rt, pipe)
            # A run replaces the batch it just finished: it holds one batch in hand at a time, whatever
            # the dispatcher's messages hold beside it; twice the window keeps those from starving it.
            rt.ledger.claim_on(pipe, window=2 * s.smsc_window, claim_lease_ms=int(s.lease_s * 1000) * 2,
                               max_claim=1)
            replies = rt.ledger.scripts.execute(pipe)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        except redis.RedisError as exc:  # whatever the claim took comes back after its claim lease
            log.warning("run: next batch not claimed (%s); the run ends", exc)
            return None
        refs = rt.ledger.claimed(replies[-1])
        if not ask_apart:
            self._saw_waiting(int(replies[0]) + int(replies[1]))
        if not refs:  # nothing due for this process: idle ones may take what the dispatcher hands out
            with contextlib.suppress(redis.RedisError):
                rt.redis.delete(busy_key(rt))
            return None
        return refs[0]

    def _saw_waiting(self, waiting: int) -> None:
        """Messages still waiting a batch later (no idle process took them) end as many runs, each after
        its current batch — one run for each message, counted across the runs (a key that lives half a
        second) — and tell the dispatcher that every process is busy (:func:`busy_key`): for a while it
        hands out no more messages, which would only end runs too."""
        if waiting and self.waiting:
            rt = self.rt
            try:
                pipe = rt.redis.pipeline(transaction=False)
                pipe.incr(yields_key(rt))
                pipe.pexpire(yields_key(rt), _YIELDS_MS, nx=True)
                taken = int(pipe.execute()[0])
                if taken <= waiting:
                    self.last = True
                    rt.redis.set(busy_key(rt), b"1", px=_BUSY_MS)
            except redis.RedisError:
                self.last = True  # the safe reading: give the process to the message
        self.waiting = waiting > 0

    def summary(self) -> dict[str, Any]:
        """The task's result: what Flower shows of the run (verdict of its first batch, totals of all)."""
        rs = self.results
        refs = [r.ref for r in rs[:_RUN_REFS_SHOWN]]
        return {"verdict": rs[0].verdict.value, "batches": len(rs), "sent": sum(r.sent for r in rs),
                "failed": sum(r.failed for r in rs), "held": sum(r.held for r in rs),
                "refs": refs + ([f"... {len(rs) - len(refs)} more"] if len(rs) > len(refs) else [])}


def busy_key(rt: Runtime) -> str:
    """Set by a run that yielded to a message no idle process took: every pool process is busy."""
    return f"{rt.keys.meta}:workers-busy"


#: How long the dispatcher holds back after a run yielded (a new worker's processes join after this).
_BUSY_MS = 10_000
#: How long the count of runs yielding to the waiting messages lasts (about two batches).
_YIELDS_MS = 500


def yields_key(rt: Runtime) -> str:
    """How many runs have yielded to the messages waiting now (one each): :meth:`Run._saw_waiting`."""
    return f"{rt.keys.meta}:runs-yielding"


def _queues(rt: Runtime) -> tuple[str, str]:
    ns = rt.settings.smsc_namespace
    return queue_name(ns), urgent_queue_name(ns)


def _broker_is_redis(rt: Runtime) -> bool:
    """The broker is the ledger's Redis: kombu keeps each queue there as a list (its length: LLEN)."""
    return rt.settings.broker_url == rt.settings.redis_url


def _queue_lengths(rt: Runtime, pipe: redis.client.Pipeline) -> None:
    """Queue the LLEN of the namespace's two queues on ``pipe`` (their replies come first, in order)."""
    for q in _queues(rt):
        pipe.llen(q)


def messages_waiting(rt: Runtime) -> int | None:
    """Messages in this namespace's two queues that no worker has taken yet; None when the broker could
    not say (then no run goes on, and the dispatcher hands the batches out as messages)."""
    try:
        if _broker_is_redis(rt):
            pipe = rt.redis.pipeline(transaction=False)
            _queue_lengths(rt, pipe)
            return int(sum(pipe.execute()))
        with app.connection_for_read() as conn:
            ch = conn.default_channel
            return sum(int(ch.queue_declare(queue=q, passive=True).message_count) for q in _queues(rt))
    except Exception as exc:  # a broker hiccup: hand out by messages until it answers again
        log.debug("queue depth unknown (%s)", exc)
        return None


# ------------------------------------------------------------------------------------------ the clock

@dataclass(frozen=True)
class ClockStep:
    """One step of the clock: its name (in the gate's key and the log), its interval, what it runs.
    ``with_client``: the step gets an HTTP client of its thread (kept open between intervals)."""

    name: str
    every_s: float
    run: Callable[..., object]
    with_client: bool = False


CLOCK = (
    ClockStep("dispatch", 1.0, dispatch_step),
    ClockStep("delivery", 2.0, delivery_step),
    ClockStep("webhooks", 1.0, webhooks_step, with_client=True),
)


def _gate_key(rt: Runtime, step: str) -> str:
    # beside the recovery lock under the namespace's meta key (scheduler.keys: ``{ns}:meta:clock:<step>``)
    return f"{rt.keys.meta}:clock:{step}"


class Clock:
    """The steps of :data:`CLOCK`, each in a daemon thread of this process, from :meth:`start` to :meth:`stop`."""

    def __init__(self, node: str, steps: tuple[ClockStep, ...] = CLOCK) -> None:
        self.node = node
        self.steps = steps
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads:
            return
        self._stop = stop = threading.Event()  # a thread still stuck in a step of a past run ends with its own
        self._threads = [threading.Thread(target=self._loop, args=(step, stop), name=f"smsc-clock-{step.name}",
                                          daemon=True) for step in self.steps]
        for t in self._threads:
            t.start()
        log.info("clock started: %s", ", ".join(f"{s.name} every {s.every_s:g} s" for s in self.steps))

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask every step to end after its current run, and wait up to ``timeout_s`` for all of them."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def _loop(self, step: ClockStep, stop: threading.Event) -> None:
        failing = ""
        with contextlib.ExitStack() as resources:
            client = resources.enter_context(client_for()) if step.with_client else None
            while not stop.is_set():
                started = time.monotonic()
                try:
                    rt = get_runtime()
                    if rt.redis.set(_gate_key(rt, step.name), self.node, nx=True, px=int(step.every_s * 900)):
                        if client is not None:
                            step.run(rt, client)
                        else:
                            step.run(rt)
                    if failing:
                        log.info("clock %s: works again", step.name)
                        failing = ""
                except Exception as exc:  # the next interval tries again; say so once, not every second
                    what = f"{type(exc).__name__}: {exc}"[:300]
                    if what != failing:
                        log.warning("clock %s: %s (trying again every %g s)", step.name, what, step.every_s)
                        failing = what
                stop.wait(max(0.0, step.every_s - (time.monotonic() - started)))


class ClockBootstep(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery has no type hints
    """Runs :class:`Clock` in the worker's main process while its consumer is connected to the broker:
    started once the task consumer is (a clock whose messages cannot leave would only claim batches
    that come back after their claim lease), stopped when the connection is lost and started again
    with the consumer, stopped at shutdown. A prefork pool's first children are forked before the
    clock's threads exist; a child forked later builds its own connections (:func:`get_runtime`)."""

    label = "smsc clock"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, without_clock: bool = False, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = not without_clock

    def create(self, parent: Any) -> Clock:
        return Clock(str(parent.hostname))

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


app.steps["consumer"].add(ClockBootstep)


# ------------------------------------------------------------------------------------------ the tasks

@app.task(name="smsc.send_batch", ignore_result=True)
def send_batch(batch_id: str) -> dict[str, Any]:
    rt = get_runtime()
    run = Run(rt)
    run.add(process_batch(rt, batch_id))
    while (ref := run.next_batch()) is not None:
        bind_batch(ref)
        run.add(process_batch(rt, ref))
    if run.ended_by_budget:
        _feed(1)  # the next run of this process (or another's): the slots stay busy between runs
    return run.summary()


@app.task(name="smsc.poll_batch", ignore_result=True)
def poll_statuses(batch_id: str) -> dict[str, Any]:
    rt = get_runtime()
    cfg = DeliveryConfig.from_settings(rt.settings)
    res = poll_batch(rt, make_store(rt, cfg), cfg, batch_id)
    return {"asked": res.asked, "final": res.final, "unknown": res.unknown, "wait_ms": res.wait_ms}


@app.task(name="smsc.enqueue", bind=True, ignore_result=True)
def enqueue(self: Any, phones_file: str, message: str, sender: str | None = None,
            **plan: Any) -> dict[str, Any]:
    from worker.api import enqueue_file

    receipt = enqueue_file(phones_file, message, sender=sender, campaign_id=_enqueued_id(self.request.id), **plan)
    return receipt.as_dict()


def _enqueued_id(task_id: str | None) -> str:
    """The campaign id of an ``smsc.enqueue`` task: its task id's (a redelivery makes no second campaign)."""
    return "t" + (task_id or "").replace("-", "")[:20]


# The clock's steps as tasks (see the module docstring): no task events, so never in Flower.

@app.task(name="smsc.dispatch", ignore_result=True, send_events=False)
def dispatch() -> dict[str, int]:
    return dispatch_step(get_runtime())


@app.task(name="smsc.delivery_tick", ignore_result=True, send_events=False)
def delivery_tick() -> dict[str, int]:
    return delivery_step(get_runtime())


@app.task(name="smsc.webhooks", ignore_result=True, send_events=False)
def webhooks() -> dict[str, int]:
    with client_for() as client:
        return webhooks_step(get_runtime(), client)


# ------------------------------------------------------------------------------------------ log fields

@task_prerun.connect
def _bind_task_fields(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    """Every line of a task carries its name and id, and a batch task's campaign and batch."""
    clear_context()  # a pool process runs one task after another: nothing of the last one stays
    name = getattr(task, "name", None)
    if name in _BATCH_TASKS and args and isinstance(args[0], str):
        bind_batch(args[0], task=name, task_id=task_id)
    elif name == "smsc.enqueue":
        bind(campaign=_enqueued_id(task_id), task=name, task_id=task_id)
    elif name:
        bind(task=name, task_id=task_id)


@task_postrun.connect
def _clear_task_fields(**_: Any) -> None:
    clear_context()


@task_failure.connect
def _fresh_connections(**_: Any) -> None:
    """A task that raised may have been stopped between a Redis request and its reply (an exception from
    outside the code, a bug in it): this process's Redis connections start afresh, so that no reply
    owed to that request is ever read as another's. Rare, so the reconnects cost nothing."""
    get_runtime().redis.connection_pool.disconnect(inuse_connections=False)
