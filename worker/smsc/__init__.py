"""The SMSC HTTP API: client, wire format, errors and the provider simulator (no Celery, no Redis)."""
