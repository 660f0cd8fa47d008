"""The Lua scripts, shipped as package data (``scheduler/lua/*.lua``) and registered once per client.

Each script is prefixed with ``_lib.lua`` (shared helpers) and registered with ``register_script``:
redis-py calls it by EVALSHA and reloads it on NOSCRIPT, e.g. after a Redis restart.

:class:`Scripts` has one typed attribute per script, so that a misspelt name or a wrong reading of a
reply is a type error, not a run-time surprise. A script's reply type is what its ``-- Returns`` line
says, as redis-py hands it over (bulk strings as ``bytes``, or ``str`` on a ``decode_responses``
client; Lua numbers as ``int``). To add a script: its ``.lua`` file, its name in :data:`SCRIPT_NAMES`,
and one line in :meth:`Scripts.__init__`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from typing import Any, Generic, TypeVar, cast

import redis

__all__ = ["SCRIPT_NAMES", "Arg", "Script", "Scripts", "Text", "clock_arg", "source"]

SCRIPT_NAMES = (
    "account",
    "acquire",
    "begin",
    "budget",
    "cancel",
    "claim",
    "create",
    "flood",
    "hold",
    "intake",
    "launch",
    "mark_sending",
    "pause",
    "prove",
    "quiet",
    "rate",
    "record",
    "recover",
    "resume",
    "status_slot",
    "sweep",
    "take",
)

#: A bulk-string reply element (``bytes``; ``str`` on a ``decode_responses`` client).
Text = bytes | str
#: One KEYS or ARGV element as redis-py encodes it.
Arg = str | bytes | int | float


def clock_arg(now_ms: int | None) -> Arg:
    """A script's ``now_ms`` argument: '' = the Redis server's clock (``TIME`` inside the script); a
    value only for tests that step time."""
    return "" if now_ms is None else int(now_ms)

R = TypeVar("R")


@functools.cache
def source(name: str) -> str:
    """The full text of script ``name`` as sent to Redis (helpers first)."""
    folder = resources.files("scheduler") / "lua"
    lib = (folder / "_lib.lua").read_text(encoding="utf-8")
    body = (folder / f"{name}.lua").read_text(encoding="utf-8")
    return lib + "\n" + body


class Script(Generic[R]):
    """One registered script; calling it runs it (EVALSHA) and returns its reply, typed ``R``."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        if name not in SCRIPT_NAMES:
            raise ValueError(f"no script named {name!r} in scheduler/lua")
        self.name = name
        self._script = client.register_script(source(name))

    def __call__(self, *, keys: Sequence[str] = (), args: Sequence[Arg] = (), client: redis.Redis | None = None) -> R:
        """Run it; on a pipeline (``client``), queue it: its reply comes with the pipeline's."""
        return cast(R, self._script(keys=list(keys), args=list(args), client=client))

    def queue(self, pipe: redis.client.Pipeline, *, keys: Sequence[str] = (), args: Sequence[Arg] = ()) -> None:
        """Queue it on ``pipe`` as a bare EVALSHA, run with :func:`execute`. A script queued through
        redis-py's own ``Script`` makes the pipeline ask ``SCRIPT EXISTS`` first, a second round trip on
        every execution; this one is loaded only when Redis answers that it does not know it."""
        pipe.evalsha(self._script.sha, len(keys), *keys, *args)

    def load(self) -> None:
        self._script.registered_client.script_load(self._script.script)

    def __repr__(self) -> str:
        return f"<Script {self.name}>"


class Scripts:
    """The registered scripts of one Redis client: ``scripts.begin(keys=[...], args=[...])``."""

    def __init__(self, client: redis.Redis) -> None:
        # guards (scheduler.guards)
        self.account: Script[list[Text]] = Script(client, "account")
        self.acquire: Script[int] = Script(client, "acquire")
        self.flood: Script[list[int]] = Script(client, "flood")
        self.hold: Script[int] = Script(client, "hold")
        self.prove: Script[int] = Script(client, "prove")
        self.quiet: Script[int] = Script(client, "quiet")
        self.rate: Script[int] = Script(client, "rate")
        self.status_slot: Script[int] = Script(client, "status_slot")
        self.take: Script[list[int]] = Script(client, "take")
        # budget (scheduler.budget)
        self.budget: Script[list[Text | int]] = Script(client, "budget")
        # intake (scheduler.campaigns)
        self.intake: Script[Text | int] = Script(client, "intake")
        self.create: Script[list[Text | int] | int] = Script(client, "create")
        # the ledger (scheduler.ledger, scheduler.recovery)
        self.begin: Script[list[Text | int]] = Script(client, "begin")
        self.claim: Script[list[Text]] = Script(client, "claim")
        self.mark_sending: Script[list[int]] = Script(client, "mark_sending")
        self.launch: Script[list[int]] = Script(client, "launch")
        self.record: Script[list[Text | int]] = Script(client, "record")
        self.recover: Script[list[int]] = Script(client, "recover")
        self.sweep: Script[list[int]] = Script(client, "sweep")
        # controls (scheduler.campaigns)
        self.cancel: Script[list[Text | int]] = Script(client, "cancel")
        self.pause: Script[Text] = Script(client, "pause")
        self.resume: Script[list[Text | int]] = Script(client, "resume")

    def all(self) -> dict[str, Script[object]]:
        """Every script by name (for tests and tools)."""
        return {name: getattr(self, name) for name in SCRIPT_NAMES}

    def execute(self, pipe: redis.client.Pipeline) -> list[Any]:
        """Execute a pipeline carrying scripts queued with :meth:`Script.queue`: one round trip. Replies in
        order, an error in the place of a command that failed (nothing raised: every command of a
        non-transactional pipeline runs, so the caller decides what a failed one means). When Redis did
        not know a script (a restarted or flushed server) every script is loaded for the next call, and
        that command's reply is the :class:`redis.exceptions.NoScriptError`: it did not run."""
        replies = pipe.execute(raise_on_error=False)
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            for script in self.all().values():
                script.load()
        return list(replies)
