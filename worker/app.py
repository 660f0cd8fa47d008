"""The Celery app: ``celery -A worker worker`` runs a worker, ``celery -A worker beat`` your own schedules.

Only ids travel in task messages (a batch id such as ``3f9a0c21b7:12``); the truth is in Redis.
Tasks are acknowledged late and rejected when their worker is lost, so a killed worker's batch is
delivered again — the ledger's fencing makes that harmless (design invariant 1).

**The clock runs inside the workers, not in beat** (:mod:`worker.tasks`: a consumer bootstep, one thread
per step — dispatch every second, delivery every 2 s, webhooks every second — gated in Redis so that one
worker steps per interval). Why, rather than beat ticks with their task events silenced:

- sending needs nothing but workers: no single beat process to keep alive (and none to forget), no
  second beat to worry about; any worker that lives keeps the clock;
- a tick is not work, so it is not a task: no 86,400 ``smsc.dispatch`` messages a day through the broker,
  none in Flower's task list (which keeps only the last 10,000 tasks: the ticks pushed the batches
  out), none waiting in the queue behind the batches it should hand out, none piling up while no worker
  runs (the ``expires`` a tick needed, judged by each worker's own clock);
- what Flower shows is what the users' three ways in do: ``smsc.enqueue`` (an app's ``send_task``, or
  a beat schedule), ``smsc.send_batch`` and ``smsc.poll_batch`` — task events on, only ids in arguments.

Beat is for your own schedules (recurring campaigns): add entries to ``app.conf.beat_schedule`` in a
module of yours and run ``celery -A <that module> beat``; the default schedule is empty. A worker started
``--without-clock`` leaves the clock out (the steps stay tasks, ``smsc.dispatch`` and the others, without
events, for a deployment that ticks them from elsewhere).

Log lines (:mod:`worker.logs`): Celery sets its handlers up (``--loglevel``, ``--logfile``), and its
``after_setup_logger`` / ``after_setup_task_logger`` signals give them the format of ``SMSC_LOG_FORMAT``
and the masking filter — in the worker, its pool processes (forked with them) and beat. With ``json``,
the startup banners (printed, not logged) are left out, as with ``celery -q``: every line is JSON.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import celery.apps.worker as _celery_worker
import click
from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init
from celery.utils.log import get_multiprocessing_logger
from kombu import Queue  # type: ignore[attr-defined]  # kombu ships no type hints

from worker.logs import configure_logging, json_line
from worker.settings import ConfigError, Settings, get_settings

__all__ = ["app", "queue_name"]


def queue_name(namespace: str) -> str:
    """The Celery queue of a namespace: ``smsc`` for the default one, ``smsc.<namespace>`` otherwise."""
    return "smsc" if namespace == "smsc" else f"smsc.{namespace}"


def urgent_queue_name(namespace: str) -> str:
    """The queue of an urgent campaign's batches: workers take from it before the namespace's queue, so
    that an urgent batch never waits behind the batches already handed out (``queue_order_strategy``)."""
    return queue_name(namespace) + ".urgent"


def _settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        print(f"smsc-mailer: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_s = _settings_or_exit()

app = Celery("smsc_mailer", include=["worker.tasks", "worker.recurring"])
app.conf.update(
    broker_url=_s.broker_url,
    broker_connection_retry_on_startup=True,
    # Every task is short (a batch takes < lease); the visibility timeout only matters for a message
    # whose worker vanished, and must stay far above any task's run time (design: no long ETAs).
    # "priority": a worker's BRPOP lists its queues in order, the urgent lane first, every time (kombu's
    # default rotates them for fairness, which would let an urgent batch wait behind a bulk one).
    broker_transport_options={"visibility_timeout": 3600, "queue_order_strategy": "priority"},
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    # Flower: task events on.
    worker_send_task_events=True,
    task_send_sent_event=True,
    # One queue per namespace: deployments sharing a Redis never take each other's batches; its urgent
    # lane first (see urgent_queue_name).
    task_default_queue=queue_name(_s.smsc_namespace),
    task_queues=[Queue(urgent_queue_name(_s.smsc_namespace)),  # type: ignore[no-untyped-call]
                 Queue(queue_name(_s.smsc_namespace))],  # type: ignore[no-untyped-call]
    # A hard limit only: the pool child is killed (its Redis and HTTP connections die with it; the batch's
    # lease brings it back, settled first if its request may be out). No soft limit: Celery raises its
    # SoftTimeLimitExceeded wherever the task happens to be, and between a Redis request and its reply
    # that left the connection owing the reply to the next command (make chaos, frozen-redis: every later
    # reply of that connection was the one before). The task's own waits end well inside the lease.
    task_time_limit=int(_s.lease_s),
    worker_hijack_root_logger=True,
    # Empty: the dispatcher's clock runs in the workers (see the module docstring); beat runs only the
    # schedules users add (``smsc.enqueue`` for recurring campaigns).
    beat_schedule={},
    timezone="UTC",
)

app.user_options["worker"].add(click.Option(
    ("--without-clock",), is_flag=True, default=False,
    help="Do not run the dispatcher's clock in this worker (smsc-mailer: dispatch, delivery, webhooks)."))


def _format_lines(logger: logging.Logger, **_: Any) -> None:
    configure_logging(_s, logger=logger)
    mp_logger = get_multiprocessing_logger()
    if mp_logger is not None and mp_logger.handlers:
        configure_logging(_s, logger=mp_logger)


def _format_task_lines(logger: logging.Logger, **_: Any) -> None:
    configure_logging(_s, logger=logger)


def _format_early_lines(**_: Any) -> None:
    # A worker warns before Celery sets its logging up (running as root: SecurityWarning): those lines
    # too. Celery's setup then replaces this handler with its own (worker_hijack_root_logger).
    logging.captureWarnings(True)
    configure_logging(_s)


celeryd_init.connect(_format_early_lines)
after_setup_logger.connect(_format_lines)
after_setup_task_logger.connect(_format_task_lines)


def _quiet(program: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> Any:
        return program(*args, **{**kwargs, "quiet": True})

    return make


def _say_json(msg: str, f: Any = sys.__stderr__) -> None:
    """Celery's ``safe_say`` (a notice written from a signal handler, such as ``worker: Warm shutdown``)
    as a JSON line — still one raw ``os.write``, never logging's locks inside a signal handler."""
    try:
        _celery_worker._original_os_write(f.fileno(), json_line(msg, level="warning", logger="celery.apps.worker")
                                          .encode())
    except (AttributeError, OSError, ValueError):
        pass  # best effort, as Celery's own: a lost notice must not abort a shutdown


if _s.smsc_log_format == "json":
    # The banners are print()s, not log records: out, as ``celery -q`` does, so that every line is JSON;
    # the notices of the signal handlers as JSON lines (celery is pinned: safe_say is its 5.7 name).
    app.Worker = _quiet(app.Worker)
    app.Beat = _quiet(app.Beat)
    _celery_worker.safe_say = _say_json
