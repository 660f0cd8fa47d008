"""The password search behind the ``leaks`` figure: every Redis key and value (Celery's queues and kombu's
``unacked`` entries included, their JSON and base64 bodies decoded) and every file under a folder (logs, the
AOF, beat's schedule)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from scheduler.keys import text

__all__ = ["find_secret_in_files", "find_secret_in_redis"]


def _decodings(value: bytes, depth: int = 4) -> Iterator[bytes]:
    """``value`` and whatever is wrapped inside it: JSON (strings inside JSON inside JSON, as in kombu's
    ``unacked`` entries) and base64 (kombu's message bodies)."""
    yield value
    if depth == 0:
        return
    if len(value) >= 8 and len(value) % 4 == 0 and value[:1] not in (b"{", b"["):
        with contextlib.suppress(binascii.Error, ValueError):
            yield from _decodings(base64.b64decode(value, validate=True), depth - 1)
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return
    items: list[Any] = [obj]
    while items:
        item = items.pop()
        if isinstance(item, dict):
            items.extend(item.keys())
            items.extend(item.values())
        elif isinstance(item, list):
            items.extend(item)
        elif isinstance(item, str):
            yield from _decodings(item.encode(), depth - 1)


def _values(client: redis.Redis, key: bytes) -> list[Any]:
    """Every member and value of ``key``, whatever its type (hash fields and stream fields included)."""
    kind = text(client.type(key))
    if kind == "string":
        return [client.get(key)]
    if kind == "hash":
        return [x for kv in client.hgetall(key).items() for x in kv]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    if kind == "stream":
        return [x for _, fields in client.xrange(key) or () for kv in (fields or {}).items() for x in kv]
    return []


def find_secret_in_redis(client: redis.Redis, secret: str) -> list[str]:
    """Every key whose name or value holds ``secret`` (SCAN over the whole db, every type read; Celery's
    queues, ``unacked`` and kombu bindings included, their base64 message bodies decoded)."""
    needle = secret.encode()
    hits = []
    for key in client.scan_iter(count=1000):
        if needle in key:
            hits.append(f"redis key {key!r}")
            continue
        try:
            values = list(_values(client, key))
        except redis.ResponseError:  # the key changed type or vanished between SCAN and the read
            continue
        if any(needle in d for v in values if isinstance(v, bytes) for d in _decodings(v)):
            hits.append(f"redis value of {key!r}")
    return hits


def find_secret_in_files(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` (logs, the AOF, beat's schedule) that holds ``secret``."""
    needle = secret.encode()
    return [str(p) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]
