"""``celery -A worker worker`` and ``celery -A worker beat`` as real processes.

Started through mirakuru like the servers, ready when their banner is in the log file. Kept by hand: the
stop. mirakuru stops a child by signalling its whole process group; a Celery worker's warm shutdown is a
SIGTERM to the main process alone (pool children finish their tasks, as systemd's ``KillMode=mixed``
does it), then, after the timeout, SIGKILL to the group.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mirakuru
import psutil

from worker.dev.stack.process import ChildExecutor, Process, StackError, child_env

__all__ = ["CeleryBeat", "CeleryWorker", "faketime_env"]

log = logging.getLogger(__name__)

# Debian's ``faketime`` package (libfaketime); the multi-threaded build, as a worker runs threads.
_LIBFAKETIME = "/usr/lib/*/faketime/libfaketimeMT.so.1"


def faketime_env(offset_s: float) -> dict[str, str]:
    """The environment that runs a process with its wall clock ``offset_s`` seconds off (libfaketime,
    what ``faketime -f +5s`` sets). The library is preloaded directly rather than through the ``faketime``
    wrapper, which stays the parent of the command and passes no signal on: a warm stop must reach the
    worker itself. The monotonic clock stays true, as on a host whose wall clock is wrong."""
    found = sorted(glob.glob(_LIBFAKETIME))
    if not found:
        raise StackError("libfaketime not found: install Debian's faketime package (apt-get install faketime)")
    return {"LD_PRELOAD": found[0], "FAKETIME": f"{offset_s:+g}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1"}


class _BannerExecutor(ChildExecutor, mirakuru.Executor):
    """Ready when ``marker`` appears in what the child wrote to its log file since this start."""

    def __init__(self, *args: Any, marker: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._marker = marker
        self._offset = self._log_path.stat().st_size if self._log_path.exists() else 0

    def pre_start_check(self) -> bool:
        return False  # two workers (or beats) may run side by side

    def after_start_check(self) -> bool:
        try:
            with open(self._log_path, "rb") as f:
                f.seek(self._offset)
                return self._marker in f.read().decode(errors="replace")
        except FileNotFoundError:
            return False


class _CeleryProcess(Process):
    ready_marker = ""

    def __init__(self, *, name: str, env: Mapping[str, str] | None = None, app: str = "worker",
                 loglevel: str = "INFO", extra_args: Sequence[str] = (), workdir: Path | None = None,
                 log_path: Path | None = None, ready_timeout_s: float = 60.0) -> None:
        super().__init__()
        self.env = dict(env or {})
        if workdir is None:
            workdir = self._tmpdir = Path(tempfile.mkdtemp(prefix="smsc-celery-"))
        self.workdir = Path(workdir)
        self.name = name
        self.app = app
        self.loglevel = loglevel
        self.extra_args = tuple(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self._log_path_given = log_path

    def argv(self) -> list[str]:
        raise NotImplementedError

    def _child_env(self) -> dict[str, str]:
        return child_env(self.env)

    def _start(self, label: str) -> None:
        self.log_path = self._log_path_given or self.workdir / f"{label}.log"
        executor = _BannerExecutor(self.argv(), env=self._child_env(), log_path=self.log_path,
                                   marker=self.ready_marker, death_signal=self.parent_death_signal,
                                   cwd=str(self.workdir), timeout=self.ready_timeout_s, sleep=0.1)
        self._run(executor, label)

    def _describe(self) -> str:
        return f"name={self.name}"


class CeleryWorker(_CeleryProcess):
    """``celery -A worker worker`` as a real process; ``kill()`` is a crash, ``terminate()`` a warm stop.

    ``clock_offset_s``: the worker's wall clock runs that far off (libfaketime; see :func:`faketime_env`).
    """

    what = "celery worker"
    ready_marker = " ready."
    # Cold shutdown when the starting thread dies: Celery then takes its pool children down with it.
    parent_death_signal = signal.SIGQUIT

    def __init__(self, *, name: str = "w1", concurrency: int = 2, pool: str = "prefork",
                 queues: Sequence[str] | None = None, clock_offset_s: float = 0.0, **common: Any) -> None:
        super().__init__(name=name, **common)
        self.concurrency = concurrency
        self.pool = pool
        self.queues = tuple(queues or ())
        self.clock_offset_s = clock_offset_s

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

    def _child_env(self) -> dict[str, str]:
        env = super()._child_env()
        if self.clock_offset_s:
            env.update(faketime_env(self.clock_offset_s))
        return env

    def start(self) -> CeleryWorker:
        if not self.running:
            self._start(f"worker-{self.name}")
            log.info("celery worker started pid=%s name=%s pool=%s concurrency=%d clock_offset_s=%g log=%s",
                     self.pid, self.name, self.pool, self.concurrency, self.clock_offset_s, self.log_path)
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
        children = self.children()
        super().kill()
        with contextlib.suppress(psutil.Error):
            psutil.wait_procs(children, timeout=10)

    def terminate(self, *, timeout_s: float = 60.0) -> bool:
        """SIGTERM to the main process only (warm shutdown: running tasks finish), then wait.

        After ``timeout_s`` the whole group is killed; returns True when the worker exited in time.
        """
        return self._stop_main(timeout_s=timeout_s)

    def stop(self, *, timeout_s: float = 60.0) -> bool:
        clean = self.terminate(timeout_s=timeout_s)
        self.remove_temp_dir()
        return clean


class CeleryBeat(_CeleryProcess):
    """``celery -A worker beat`` with its own schedule file and no pidfile (so two beats can run)."""

    what = "celery beat"
    ready_marker = "beat: Starting"

    def __init__(self, *, name: str = "beat", **common: Any) -> None:
        super().__init__(name=name, **common)
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
            self._start(self.name)
            log.info("celery beat started pid=%s name=%s log=%s", self.pid, self.name, self.log_path)
        return self

    def stop(self, *, timeout_s: float = 10.0) -> None:
        self._stop_main(timeout_s=timeout_s)
        self.remove_temp_dir()
