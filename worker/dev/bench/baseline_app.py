"""Baseline (b) of the benchmark: the common Celery way, one task per recipient.

``celery -A worker.dev.bench.baseline_app worker`` runs it. Each ``bench.send_one(phone, text)`` task POSTs one
recipient to ``send.php`` (``phones=one``, ``mes=text``) with a keep-alive client per process — the
code a team writes first. No ledger, no guards, no global cap on requests in flight: what the
benchmark compares smsc-mailer with. Not part of the product; only the benchmark starts it.
"""

from __future__ import annotations

from typing import Any

import httpx
from celery import Celery

from worker.settings import get_settings

__all__ = ["QUEUE", "TASK", "app"]

QUEUE = "bench-one"
TASK = "bench.send_one"

_s = get_settings()
app = Celery("smsc_bench_one", broker=_s.broker_url)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    result_backend=None,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_http: httpx.Client | None = None


def _client() -> httpx.Client:
    global _http
    if _http is None:
        _http = httpx.Client(base_url=_s.smsc_base_url, timeout=_s.smsc_timeout)
    return _http


@app.task(name=TASK, bind=True, ignore_result=True, max_retries=30)
def send_one(self: Any, phone: str, text: str) -> bool:
    """One recipient, one request; True when the provider took it. Error 9 (too many requests at
    once: nothing caps them here) is retried a second later, as such code usually does."""
    password = _s.smsc_password.get_secret_value() if _s.smsc_password is not None else ""
    resp = _client().post("/sys/send.php", data={
        "login": _s.smsc_login or "", "psw": password, "phones": phone, "mes": text,
        "fmt": "3", "charset": "utf-8"})
    if '"error_code":9' in resp.text.replace(" ", ""):
        raise self.retry(countdown=1)
    return resp.status_code == 200 and '"error_code"' not in resp.text
