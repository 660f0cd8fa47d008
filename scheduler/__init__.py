"""Campaigns in Redis: intake, plan, store, guards (no Celery, no httpx, no environment reading)."""
