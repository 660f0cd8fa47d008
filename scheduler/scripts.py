"""The Lua scripts, shipped as package data (``scheduler/lua/*.lua``) and registered once per client.

Each script is prefixed with ``_lib.lua`` (shared helpers) and registered with ``register_script``:
redis-py calls it by EVALSHA and reloads it on NOSCRIPT, e.g. after a Redis restart.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import redis

__all__ = ["SCRIPT_NAMES", "Scripts", "source"]

SCRIPT_NAMES = (
    "account",
    "acquire",
    "begin",
    "cancel",
    "claim",
    "flood",
    "intake",
    "mark_sending",
    "pause",
    "record",
    "recover",
    "resume",
    "sweep",
)


@functools.cache
def source(name: str) -> str:
    """The full text of script ``name`` as sent to Redis (helpers first)."""
    folder = resources.files("scheduler") / "lua"
    lib = (folder / "_lib.lua").read_text(encoding="utf-8")
    body = (folder / f"{name}.lua").read_text(encoding="utf-8")
    return lib + "\n" + body


class Scripts:
    """The registered scripts of one Redis client: ``scripts.begin(keys=[...], args=[...])``."""

    def __init__(self, client: redis.Redis) -> None:
        self._scripts: dict[str, Any] = {n: client.register_script(source(n)) for n in SCRIPT_NAMES}

    def __getattr__(self, name: str) -> Any:
        try:
            return self._scripts[name]
        except KeyError:
            raise AttributeError(name) from None
