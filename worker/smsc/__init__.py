"""The SMSC HTTP API client: wire format, errors, encoding (no Celery, no Redis). The simulator is :mod:`worker.sim`."""
