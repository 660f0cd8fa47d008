"""smsc-mailer's runtime: the Celery app (``celery -A worker worker|beat``), tasks, CLI.

``worker.app`` is created on first use, so importing the CLI or the simulator does not read the
Celery settings. Apps enqueue a campaign with :func:`worker.enqueue_campaign`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "enqueue_campaign"]


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.app import app

        return app
    if name == "enqueue_campaign":
        from worker.api import enqueue_campaign

        return enqueue_campaign
    raise AttributeError(name)
