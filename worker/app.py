"""The Celery app: ``celery -A worker worker`` runs a worker, ``celery -A worker beat`` the clock.

Only ids travel in task messages (a batch id such as ``3f9a0c21b7:12``); the truth is in Redis.
Tasks are acknowledged late and rejected when their worker is lost, so a killed worker's batch is
delivered again — the ledger's fencing makes that harmless (design invariant 1).
"""

from __future__ import annotations

import sys

from celery import Celery

from worker.settings import ConfigError, Settings, get_settings

__all__ = ["app", "queue_name"]


def queue_name(namespace: str) -> str:
    """The Celery queue of a namespace: ``smsc`` for the default one, ``smsc.<namespace>`` otherwise."""
    return "smsc" if namespace == "smsc" else f"smsc.{namespace}"


def _settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        print(f"smsc-mailer: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_s = _settings_or_exit()

app = Celery("smsc_mailer", include=["worker.tasks"])
app.conf.update(
    broker_url=_s.broker_url,
    broker_connection_retry_on_startup=True,
    # Every task is short (a batch takes < lease); the visibility timeout only matters for a message
    # whose worker vanished, and must stay far above any task's run time (design: no long ETAs).
    broker_transport_options={"visibility_timeout": 3600},
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
    # One queue per namespace: deployments sharing a Redis never take each other's batches.
    task_default_queue=queue_name(_s.smsc_namespace),
    task_time_limit=int(_s.lease_s),
    task_soft_time_limit=int(_s.lease_s) - 5,
    worker_hijack_root_logger=True,
    beat_schedule={
        # The dispatcher's clock: moves due batches to the workers and takes back expired leases.
        # Two beats by mistake are harmless: the claim is one atomic script. A tick expires after 60 s
        # (a worker judges that by its own clock: far above any skew between hosts), so ticks queued
        # while no worker ran do not pile up.
        "smsc-dispatch": {"task": "smsc.dispatch", "schedule": 1.0, "options": {"expires": 60}},
        # Delivery: track sent batches, hand due status polls out, end campaigns (delivered_final);
        # post the webhooks. Both take their work by atomic claims in Redis: a second beat is harmless.
        "smsc-delivery": {"task": "smsc.delivery_tick", "schedule": 2.0, "options": {"expires": 60}},
        "smsc-webhooks": {"task": "smsc.webhooks", "schedule": 1.0, "options": {"expires": 60}},
    },
    timezone="UTC",
)
