"""smsc-mailer's runtime: the Celery app (``celery -A worker worker|beat``), tasks, CLI."""
