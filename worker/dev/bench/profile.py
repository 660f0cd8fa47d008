"""``smsc-mailer-dev bench --profile DIR``: py-spy on the workers while a campaign is sent.

py-spy is a development tool (the ``dev`` extra), never a runtime dependency: without it the option
says so and the benchmark runs unprofiled. It samples the workers (pool children included) at 100 Hz,
only while a thread holds the GIL (``--gil``: CPU, not waiting), and writes py-spy's collapsed stacks
(``DIR/worker-<name>-<batch>.txt``, for flamegraph tools); :func:`summary` reads them back into the
functions that took the most CPU, inclusive of what they call, for the results file.
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["Profiler", "py_spy", "summary"]

_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>[^()]*):\d+\)$")
# Library frames worth naming in a summary (besides every frame of this project): where a batch's
# CPU goes outside our code.
_LIBRARY = frozenset({"Producer.publish", "EventDispatcher.publish", "Consumer._flush_events", "Logger._log",
                      "Client.post", "Script.__call__", "Message.ack", "Redis.execute_command",
                      "Pipeline.execute", "Task.apply_async", "JSONDecoder.decode", "fast_trace_task",
                      "Channel._brpop_read"})


def py_spy() -> str | None:
    """The py-spy executable (next to this interpreter, else on PATH), or None."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.is_file() else shutil.which("py-spy")


class Profiler:
    """py-spy recording processes, one per pid, stopped (and written) by :meth:`stop`."""

    def __init__(self, out_dir: Path, pids: dict[str, int], tag: str) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed: pip install '.[dev]'")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        for name, pid in pids.items():
            path = out_dir / f"worker-{name}-{tag}.txt"
            self.files.append(path)
            self._procs.append(subprocess.Popen(
                [exe, "record", "--subprocesses", "--gil", "--nonblocking", "-r", "100", "-f", "raw",
                 "-p", str(pid), "-o", str(path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        for p in self._procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for p in self._procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def summary(files: list[Path], top: int = 25) -> list[dict[str, object]]:
    """The functions with the largest inclusive share of the sampled CPU, over all ``files``."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            names = set()
            for frame in stack.split(";"):
                m = _FRAME.match(frame)
                # py-spy names files relative to sys.path: ours are worker/... and scheduler/...
                if m and (m["fn"] in _LIBRARY or m["file"].startswith(("worker/", "scheduler/"))):
                    names.add(f"{m['fn']} ({'/'.join(m['file'].split('/')[-2:])})")
            for name in names:
                inclusive[name] += n
    return [{"function": name, "cpu_share": round(n / total, 3)} for name, n in inclusive.most_common(top)
            if total] if total else []
