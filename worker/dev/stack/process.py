"""What every process of the stack shares: the errors, free ports, the children's environment, and
:class:`Process` — one child started through a ``mirakuru`` executor, its output in a log file.

``mirakuru`` (the library ``pytest-redis`` uses) starts the child in its own session, waits until its
check answers (``after_start_check``), stops it (the stop signal to the process group, SIGKILL after the
timeout) and kills it (SIGKILL to the group, then every process that carries the executor's mark in its
environment, so pool children that left the group go too). What is written here is what it does not do:

- the child's output goes to a log file (mirakuru's pipes would fill up and block a chatty child, and a
  failed start should say what the child wrote: the log tail);
- the child's environment is ``os.environ`` *without* the variables that configure this application
  (``SMSC_*``, ``CELERY_*``, ``REDIS_URL``), plus the values given (mirakuru passes the parent's whole
  environment: a developer's real account must never reach a test's worker);
- on Linux the child also dies with the thread that started it (``PR_SET_PDEATHSIG``), so a test
  process killed with SIGKILL leaves no orphans;
- :meth:`Process.freeze` / :meth:`Process.thaw`: SIGSTOP / SIGCONT to the group (the chaos suite's
  frozen Redis);
- a registry of what is running, killed at interpreter exit. mirakuru's own exit hook is removed: it
  kills every process whose mark *contains* this process's pid as a substring, which on a shared
  machine (pids up to 32768 here) can be another session's redis-server.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, Self

import mirakuru
import mirakuru.base
from mirakuru.exceptions import ProcessFinishedWithError

__all__ = [
    "HOST",
    "ChildExecutor",
    "Process",
    "ServerProcess",
    "StackError",
    "child_env",
    "free_port",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# The checkout that holds the ``worker`` package (worker/dev/stack/process.py -> the checkout): children
# import the same code as the parent.
PROJECT_ROOT = Path(__file__).resolve().parents[3]
# Variables that configure the application: never inherited by a child, only set explicitly.
_APP_ENV_PREFIXES = ("SMSC_", "CELERY_")
_APP_ENV_NAMES = frozenset({"REDIS_URL"})

atexit.unregister(mirakuru.base.cleanup_subprocesses)  # see the module docstring; _kill_leftovers below


class StackError(RuntimeError):
    """Raised when a process of the stack cannot be found or started; says which, with its log tail."""


# --------------------------------------------------------------------------------------------- helpers

_handed_out: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now and was not handed out before by this process.

    The port is only reserved until the socket closes: a caller that fails to bind it should ask again
    (:class:`~worker.dev.stack.RedisServer` does).
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


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ``os.environ`` minus the app's variables, plus ``env``."""
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_APP_ENV_PREFIXES) and k not in _APP_ENV_NAMES
    }
    out["PYTHONUNBUFFERED"] = "1"
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), out.get("PYTHONPATH")) if p)
    out.update(env or {})
    return out


def tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").rstrip("\n").splitlines()[-lines:]
    return "\n".join("    " + line for line in text) or "(log is empty)"


_PR_SET_PDEATHSIG = 1


def _new_session_dying_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn``: a session of its own (as mirakuru's ``os.setsid``) and, on Linux and from the
    main thread, ``sig`` when the starting thread dies.

    Only from the main thread: the "parent" of PDEATHSIG is the thread, and a helper thread that exits
    would take the child with it. libc is resolved here, in the parent, so the child only makes syscalls.
    """
    prctl: Callable[..., int] | None = None
    if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        os.setsid()
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), sig)

    return preexec


class ChildExecutor(mirakuru.base.SimpleExecutor):
    """The part every executor of the stack adds to mirakuru's: the log file, the environment given (never
    the parent's app settings), stdin closed, and the session that dies with its parent.

    Mixed in before a mirakuru executor class (``class X(ChildExecutor, mirakuru.TCPExecutor)``).
    """

    def __init__(self, command: Sequence[str], *args: Any, env: Mapping[str, str], log_path: Path,
                 death_signal: int = signal.SIGKILL, **kwargs: Any) -> None:
        super().__init__(list(command), *args, **kwargs)
        self._child_env = dict(env)
        self._log_path = log_path
        self._death_signal = death_signal
        self._log_file: IO[bytes] | None = None

    @property
    def envvars(self) -> dict[str, str]:
        # mirakuru's mark (its way to find the children that left the group) on top of the given env only.
        return {**self._child_env, mirakuru.base.ENV_UUID: self._uuid}

    @property
    def _popen_kwargs(self) -> dict[str, Any]:
        return {"stdin": subprocess.DEVNULL, "stdout": self._log_file, "stderr": subprocess.STDOUT,
                "env": self.envvars, "cwd": self._cwd, "shell": False,
                "preexec_fn": _new_session_dying_with_parent(self._death_signal)}

    def start(self) -> Self:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as self._log_file:
            try:
                return super().start()
            finally:
                self._log_file = None


class _Killable(Protocol):
    def kill(self) -> None: ...

    def remove_temp_dir(self) -> None: ...


# Everything started and not yet stopped; killed at interpreter exit as a safety net.
_live: dict[int, _Killable] = {}
_live_lock = threading.Lock()


def register(obj: _Killable) -> None:
    with _live_lock:
        _live[id(obj)] = obj


def unregister(obj: _Killable) -> None:
    with _live_lock:
        _live.pop(id(obj), None)


def _kill_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live.values())
    for proc in reversed(leftovers):
        with contextlib.suppress(Exception):
            proc.kill()
            proc.remove_temp_dir()


atexit.register(_kill_leftovers)


class Process:
    """One child, in its own process group, with its output in a log file (context manager).

    A subclass builds its executor in :meth:`_executor` (a :class:`ChildExecutor` mixed with the mirakuru
    executor whose check fits: TCP, HTTP, a line in the log) and may check more after the start.
    """

    what = "process"
    # Signal sent to the child when the thread that started it dies.
    parent_death_signal = signal.SIGKILL

    def __init__(self) -> None:
        self._exec: mirakuru.base.SimpleExecutor | None = None
        self.log_path: Path | None = None
        self._tmpdir: Path | None = None  # a directory this object created, removed at stop unless keep
        self.keep = False
        self._signalled: subprocess.Popen[Any] | None = None  # the run that got its stop signal already

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

    def remove_temp_dir(self) -> None:
        if self._tmpdir is not None and not self.keep:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # -- state
    @property
    def _popen(self) -> subprocess.Popen[Any] | None:
        return self._exec.process if self._exec is not None else None

    @property
    def pid(self) -> int | None:
        proc = self._popen
        return proc.pid if proc is not None else None

    @property
    def running(self) -> bool:
        proc = self._popen
        return proc is not None and proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    # -- lifecycle
    def _run(self, executor: mirakuru.base.SimpleExecutor, label: str) -> None:
        """Start ``executor`` and wait for its check; a failure is a :class:`StackError` with the log tail."""
        self._exec = executor
        register(self)
        try:
            executor.start()
        except mirakuru.AlreadyRunning as exc:
            raise self._fail(f"{label}: something already answers on its port: {exc}") from None
        except mirakuru.ProcessExitedWithError as exc:
            raise self._fail(f"{label} exited with code {exc.exit_code} before it was ready") from None
        except mirakuru.TimeoutExpired as exc:
            raise self._fail(f"{label} not ready within {exc.timeout:.0f} s") from None

    def _fail(self, message: str) -> StackError:
        """Kill what was started and build the error: what failed, and the log tail."""
        with contextlib.suppress(Exception):
            self.kill()
        return StackError(f"{message}; log {self.log_path}:\n{self.log_tail()}")

    def _ended(self, proc: subprocess.Popen[Any] | None, event: str) -> None:
        unregister(self)
        if proc is not None:
            log.info("%s %s pid=%d %s code=%s", self.what, event, proc.pid, self._describe(), proc.returncode)

    def kill(self) -> None:
        """SIGKILL to the whole process group and to every child that left it: a crash (the kill -9 of the
        chaos suite). A frozen process dies too."""
        proc = self._popen
        if self._exec is None or proc is None:  # never started, or killed already
            unregister(self)
            return
        was_running = proc.poll() is None
        self._exec.kill()
        self._ended(proc, "killed" if was_running else "stopped")

    def _signal_group(self, sig: int) -> None:
        if self.running and self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def freeze(self, wait_s: float = 10.0) -> None:
        """SIGSTOP to the group: the process stops answering but keeps its sockets open (a hung host).

        Returns once the kernel shows the leader stopped (``T`` in /proc/PID/stat): a signal is delivered
        asynchronously, and a caller that acts on "frozen" right after ``kill()`` would race it.
        """
        self._signal_group(signal.SIGSTOP)
        deadline = time.monotonic() + wait_s
        while self.pid is not None and _proc_state(self.pid) not in ("T", "t", None):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.what} pid={self.pid} did not stop within {wait_s} s of SIGSTOP")
            time.sleep(0.005)
        log.info("%s frozen pid=%s %s", self.what, self.pid, self._describe())

    def thaw(self) -> None:
        """SIGCONT to the group after :meth:`freeze`."""
        self._signal_group(signal.SIGCONT)
        log.info("%s thawed pid=%s %s", self.what, self.pid, self._describe())

    def _stop_group(self) -> None:
        """mirakuru's stop: the stop signal to the group, SIGKILL after the executor's timeout."""
        proc = self._popen
        if self._exec is None:
            return
        if proc is None or proc.poll() is not None:
            self.kill()  # already gone: never signal a group whose leader was reaped (its pid may be reused)
            return
        self.thaw()  # a frozen process cannot act on SIGTERM
        try:
            self._exec.stop()
        except ProcessFinishedWithError as exc:
            log.warning("%s pid=%d exited with code %s at stop", self.what, proc.pid, exc.exit_code)
        self._ended(proc, "stopped")

    def signal_once(self, sig: int = signal.SIGTERM) -> None:
        """``sig`` to the main process only, once per run (a second SIGTERM must not change a warm stop)."""
        proc = self._popen
        if proc is not None and proc.poll() is None and self._signalled is not proc:
            self._signalled = proc
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def _stop_main(self, *, timeout_s: float, sig: int = signal.SIGTERM) -> bool:
        """``sig`` to the main process only, wait, then SIGKILL the group; True when it exited in time.

        Not mirakuru's stop, which signals the whole group: a Celery worker's warm shutdown must reach the
        main process alone (pool children finish their task; systemd's ``KillMode=mixed``).
        """
        proc = self._popen
        if proc is None:
            return True
        clean = True
        if proc.poll() is None:
            self.thaw()
            self.signal_once(sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                clean = False
                log.warning("%s pid=%d did not exit %.0f s after %s: SIGKILL",
                            self.what, proc.pid, timeout_s, signal.Signals(sig).name)
        if self._exec is not None:
            self._exec.kill()  # the group and the marked children: pool processes that outlived their parent
        self._ended(proc, "stopped" if clean else "killed")
        return clean


class ServerProcess(Process):
    """A :class:`Process` that listens on a TCP port of 127.0.0.1: ``port`` given, or a free one."""

    def __init__(self, port: int | None) -> None:
        super().__init__()
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()

    def _start_on_a_free_port(self, start_once: Callable[[], None]) -> None:
        """Run ``start_once``; a port handed out by :func:`free_port` may be taken by someone else before
        the child binds it: then try another one, unless the caller fixed the port (or this is a restart,
        which must keep it)."""
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            try:
                start_once()
                self._fixed_port = True  # a restart comes back on this port
                return
            except StackError as exc:
                taken = "already answers on its port" in str(exc) or "Address already in use" in str(exc)
                if attempt + 1 == attempts or not taken:
                    raise
                log.info("%s port %d was taken, trying another", self.what, self.port)
                self.port = free_port()


def _proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (``R``, ``S``, ``T`` …), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]  # the command name in parentheses may hold spaces
