"""The whole stack: Redis, the simulator, N workers and beats, wired through the children's environment."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis

from worker.dev.stack.celery_processes import CeleryBeat, CeleryWorker
from worker.dev.stack.process import Process, StackError, register, unregister
from worker.dev.stack.redis_server import RedisServer
from worker.dev.stack.simulator import DEMO_LOGIN, DEMO_PASSWORD, SimulatorProcess

__all__ = ["Stack"]

log = logging.getLogger(__name__)


class Stack:
    """Redis, the simulator, N workers and beats, wired through the children's environment.

    ``redis``: a :class:`RedisServer` or URL to use as given (not stopped here); ``None`` starts a
    private server — or, with ``use_existing=True`` and ``$REDIS_URL`` set, uses that.
    ``simulator``: a :class:`SimulatorProcess` or base URL to use as given; ``True`` starts one
    (``sim_options`` are its keyword arguments); ``False`` sets no ``SMSC_BASE_URL`` (give it in ``env``).
    ``login``/``password`` default to the given simulator's, else the simulator's demo account.
    ``env`` overrides every computed variable. Stops everything it started on exit, even after errors.
    """

    def __init__(
        self,
        *,
        redis: RedisServer | str | None = None,
        use_existing: bool = False,
        appendonly: bool = True,
        simulator: SimulatorProcess | str | bool = True,
        sim_options: Mapping[str, Any] | None = None,
        workers: int = 1,
        concurrency: int = 2,
        pool: str = "prefork",
        beats: int = 1,
        login: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        namespace: str = "smsc",
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        keep: bool = False,
    ) -> None:
        self._redis_arg = redis
        self.use_existing = use_existing
        self.appendonly = appendonly
        self._sim_arg = simulator
        self.sim_options = dict(sim_options or {})
        self.n_workers = workers
        self.concurrency = concurrency
        self.pool = pool
        self.n_beats = beats
        self.login = login
        self.password = password
        self.timeout_s = timeout_s
        self.namespace = namespace
        self.overrides = dict(env or {})
        self.keep = keep
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="smsc-stack-"))
        self.redis: RedisServer | None = None  # set when the stack started (and owns) the server
        self.simulator: SimulatorProcess | None = None
        self.redis_url = ""
        self.smsc_base_url: str | None = None
        self.workers: list[CeleryWorker] = []
        self.beats: list[CeleryBeat] = []
        self._started: list[Process] = []  # in start order; stopped in reverse
        self.env: dict[str, str] = {}

    # -- start
    def start(self) -> Stack:
        register(self)  # kill() at exit
        try:
            self._start_redis()
            self._start_simulator()
            self.env = self._build_env()
            for _ in range(self.n_workers):
                self.add_worker()
            for _ in range(self.n_beats):
                self.add_beat()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        arg = self._redis_arg
        if isinstance(arg, RedisServer):
            if not arg.running:
                raise StackError(f"the given redis-server (port {arg.port}) is not running: start() it first")
            self.redis_url = arg.url
        elif isinstance(arg, str):
            self.redis_url = arg
        elif self.use_existing and os.environ.get("REDIS_URL"):
            self.redis_url = os.environ["REDIS_URL"]
            log.info("stack uses the existing Redis given by REDIS_URL")
        else:
            self.redis = RedisServer(dir=self.workdir / "redis", appendonly=self.appendonly)
            self._started.append(self.redis)
            self.redis.start()
            self.redis_url = self.redis.url

    def _start_simulator(self) -> None:
        arg = self._sim_arg
        if isinstance(arg, SimulatorProcess):
            if not arg.running:
                raise StackError(f"the given simulator (port {arg.port}) is not running: start() it first")
            self.simulator = arg
            self.smsc_base_url = arg.url
            self.login = self.login or arg.login
            self.password = self.password or arg.password
        elif isinstance(arg, str):
            self.smsc_base_url = arg
        elif arg:
            options = {**self.sim_options}
            options.setdefault("login", self.login or DEMO_LOGIN)
            options.setdefault("password", self.password or DEMO_PASSWORD)
            options.setdefault("log_path", self.workdir / "simulator.log")
            self.simulator = SimulatorProcess(**options)
            self._started.append(self.simulator)
            self.simulator.start()
            self.smsc_base_url = self.simulator.url
            self.login, self.password = self.simulator.login, self.simulator.password

    def _build_env(self) -> dict[str, str]:
        env = {
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.redis_url,
            "SMSC_LOGIN": self.login or DEMO_LOGIN,
            "SMSC_PASSWORD": self.password or DEMO_PASSWORD,
            "SMSC_TIMEOUT": str(self.timeout_s),
            "SMSC_NAMESPACE": self.namespace,
        }
        if self.smsc_base_url:
            env["SMSC_BASE_URL"] = self.smsc_base_url
        env.update(self.overrides)
        return env

    def add_worker(self, *, name: str | None = None, **kwargs: Any) -> CeleryWorker:
        """Start one more worker (e.g. after a kill); ``kwargs`` go to :class:`CeleryWorker`."""
        kwargs.setdefault("concurrency", self.concurrency)
        kwargs.setdefault("pool", self.pool)
        name = name or f"w{len(self.workers) + 1}"
        w = CeleryWorker(env={**self.env, **kwargs.pop("env", {})}, name=name, workdir=self.workdir, **kwargs)
        self.workers.append(w)
        self._started.append(w)
        return w.start()

    def add_beat(self, *, name: str | None = None, **kwargs: Any) -> CeleryBeat:
        """Start one more beat (two beats must not duplicate dispatch: the chaos suite checks it)."""
        name = name or f"beat{len(self.beats) + 1}"
        b = CeleryBeat(env={**self.env, **kwargs.pop("env", {})}, name=name, workdir=self.workdir, **kwargs)
        self.beats.append(b)
        self._started.append(b)
        return b.start()

    def redis_client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, **kwargs)

    # -- stop
    def stop(self, *, worker_timeout_s: float = 30.0) -> None:
        """Stop everything this stack started, in reverse order; every step runs even if one fails.

        The workers get their SIGTERM together (their warm shutdowns overlap), after the beats stopped.
        """
        for proc in reversed(self._started):
            if isinstance(proc, CeleryWorker) and not any(
                isinstance(p, CeleryBeat) and p.running for p in self._started
            ):
                for worker in self.workers:
                    worker.signal_once()
            try:
                if isinstance(proc, CeleryWorker):
                    proc.stop(timeout_s=worker_timeout_s)
                elif isinstance(proc, RedisServer):
                    proc.stop(cleanup=False)  # its dir is under the workdir
                else:
                    proc.stop()
            except Exception:
                log.exception("stack: stopping %s pid=%s failed; killing it", proc.what, proc.pid)
                with contextlib.suppress(Exception):
                    proc.kill()
        self._started.clear()
        unregister(self)
        self.remove_temp_dir()

    def remove_temp_dir(self) -> None:
        if self._owns_workdir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """The atexit safety net: SIGKILL everything started."""
        for proc in reversed(self._started):
            with contextlib.suppress(Exception):
                proc.kill()
        self._started.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
