"""A table's rows read in a child process while this one queues them: an intake on both cores.

An intake of a CSV or ``.xlsx`` with a template is CPU-bound in one process, in two halves of about the
same size: reading the cells, normalizing each phone, rendering the template and checking the text
(:func:`worker.rows.iter_rows`), then deduplicating, batching and staging the rows in Redis
(:mod:`scheduler.enqueue`). :class:`ChildRows` runs the first half in a forked child that writes the rows
to a pipe, chunk by chunk, while this process does the second. Measured on a million personal rows on a
machine of two busy cores (the child, this process and Redis then use both): 11.7 s instead of 12.9 s, the
median of six alternating pairs, the child faster in each; the gain is larger where the cores are free.

The child reads a row by its cells (:func:`worker.rows.row_tuples`: no dict, no Row for a row that is
fine), which took its share from ~6 s to ~4 s of CPU a million rows; so it also counts each text's parts
(``parts_of``), ~0.5 µs a row the batcher here no longer spends, which leaves the two processes about even
(~5.3 s each, 2026-12-02).

- The child continues the table this process opened (its header read, its delimiter and encoding
  sniffed): :func:`os.fork`, so nothing of the table has to travel. Only a process of one thread forks
  (a lock another thread held at the fork would be held forever in the child); otherwise, and for
  standard input, a small file (:data:`CHILD_MIN_BYTES`, a few hundred milliseconds of reading) or
  ``SMSC_INTAKE_READER=inline``, the rows are read here as before. Either way every row, rejection,
  line number and error is the same: :func:`~worker.rows.row_tuples` is :func:`~worker.rows.iter_rows`
  (a row it does not take whole goes to iter_rows's own check), which a property test holds it to.
- Why not :mod:`multiprocessing` or :mod:`concurrent.futures`: a spawned process cannot be handed an open
  file's state, a pool's results would be gathered rather than streamed, and ``multiprocessing.Process``
  refuses to start in a daemonic process (a Celery pool child, which may call the Python API). The
  protocol here is a pipe, pickled lists of plain tuples (cheaper to pickle than the rows themselves) and
  one last message: the file's digest and encoding, or the error to raise here.
- Flat memory: the pipe holds at most a few chunks; the child waits while this process is behind.
- Nothing outlives the intake: :meth:`ChildRows.close` (the end of the ``with`` block, an error, Ctrl-C)
  kills and reaps the child. A child whose parent died gets ``EPIPE`` at its next write and exits.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import signal
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal, NoReturn

from scheduler._gc import fewer_collections
from scheduler.intake import IntakeError, Rejected
from worker.rows import Row, Table, row_tuples
from worker.smsc.encoding import check_message, text_parts

__all__ = ["CHILD_MIN_BYTES", "ChildRows", "child_wanted"]

#: A file smaller than this is read in this process (``SMSC_INTAKE_READER=auto``): a fork and its pipe
#: cost a few milliseconds, 4 MiB of rows (~50,000 personal rows) half a second of reading.
CHILD_MIN_BYTES: Final = 4 << 20
_CHUNK: Final = 1_000  # rows a message: ~150 KB of pickle for personal texts
_BUFFER: Final = 1 << 20
_PIPE_BYTES: Final = 1 << 20  # Linux's default ceiling for an unprivileged F_SETPIPE_SZ

Reader = Literal["auto", "child", "inline"]


def child_wanted(path: str, reader: Reader) -> bool:
    """Whether ``path``'s rows are read by a :class:`ChildRows` (``reader``: ``SMSC_INTAKE_READER``)."""
    if reader == "inline" or path == "-" or not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (reader == "child" or st.st_size >= CHILD_MIN_BYTES)


class ChildRows:
    """:func:`~worker.rows.iter_rows` of ``table`` (``rows``: its keyword arguments; the text check is
    :func:`~worker.smsc.encoding.check_message`, which refuses what ``validate_message`` refuses without
    counting the parts), run by a forked child; iterate once. Each :class:`~worker.rows.Row` carries its
    text's ``parts_of(text)`` (the campaign's count: translit and the rest) as ``parts``. After the last
    row, :attr:`digest` is the file's SHA-256 (as :meth:`Table.digest`) and :attr:`encoding` the CSV's."""

    def __init__(self, table: Table, *, parts_of: Callable[[str], int] = text_parts, **rows: Any) -> None:
        self.name = table.name
        self.digest: str | None = None
        self.encoding: str | None = None
        r, w = os.pipe()
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        except (AttributeError, OSError):  # not Linux, or above the system's ceiling: the default pipe
            pass
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(r)
            _child(w, table, parts_of, rows)
        os.close(w)
        self._pid: int | None = pid
        self._in = os.fdopen(r, "rb", buffering=_BUFFER)

    def __iter__(self) -> Iterator[Row | Rejected]:
        try:
            while True:
                try:
                    message = pickle.load(self._in)  # noqa: S301 - our own child, through our own pipe
                except EOFError:
                    raise IntakeError(f"{self.name}: the process reading the rows ended without its last "
                                      f"word ({self._exit()})") from None
                if type(message) is list:
                    for t in message:
                        if len(t) == 6:
                            yield Row(*t)  # ~0.15 µs; Row(t[0], ..., t[5]) ~0.35
                        else:
                            yield Rejected(*t)
                    continue
                kind, *rest = message
                if kind == "end":
                    self.digest, self.encoding = rest
                    return
                raise rest[0]
        finally:
            self.close()

    def _exit(self) -> str:
        pid, self._pid = self._pid, None
        if pid is None:
            return "already reaped"
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def close(self) -> None:
        """Stop the child (if it still runs) and reap it; idempotent."""
        pid, self._pid = self._pid, None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        self._in.close()

    def __del__(self) -> None:  # an iterator dropped unstarted: still no child left behind
        if getattr(self, "_pid", None) is not None:
            self.close()


def _child(w: int, table: Table, parts_of: Callable[[str], int], rows: Mapping[str, Any]) -> NoReturn:
    """Write ``table``'s rows to ``w`` and exit, never returning into the parent's code (``os._exit``: no
    ``atexit``, no flush of the parent's buffers, no goodbye to its Redis connections)."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it kills us
        # The intake's own collector settings (nothing the reading makes is a reference cycle).
        with fewer_collections(), os.fdopen(w, "wb", buffering=_BUFFER) as out:
            try:
                _write_rows(out, table, parts_of, rows)
            except BrokenPipeError:
                raise
            except BaseException as exc:  # every failure is the parent's to raise
                pickle.dump(("error", _portable(exc)), out, protocol=pickle.HIGHEST_PROTOCOL)
    except BrokenPipeError:
        code = 0  # the parent stopped reading (an error of its own, a refusal): nothing to say
    except BaseException:  # could not even report it: the parent sees the exit status
        code = 1
    finally:
        os._exit(code)


def _write_rows(out: Any, table: Table, parts_of: Callable[[str], int], rows: Mapping[str, Any]) -> None:
    protocol = pickle.HIGHEST_PROTOCOL
    # No memo: a chunk is flat tuples of numbers and text, nothing in it is referred to twice (~0.07 µs a
    # row less here, ~0.02 in the reading; each dump is a whole pickle still).
    pickler = pickle.Pickler(out, protocol)
    pickler.fast = True
    chunk: list[tuple[Any, ...]] = []
    append = chunk.append
    try:
        for item in row_tuples(table, check_text=check_message, **rows):
            if len(item) == 5:  # a row: its text's parts, counted here for the batcher
                append((*item, parts_of(item[2])))
            else:
                append(item)
            if len(chunk) >= _CHUNK:
                pickler.dump(chunk)
                chunk.clear()
    finally:  # the rows before an error too, as this process would have had them before raising it
        if chunk:
            pickler.dump(chunk)
    pickle.dump(("end", table.digest(), table.encoding), out, protocol)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling as itself, else a RuntimeError with its type and first line."""
    try:
        back = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, just made
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:  # noqa: S110 - not picklable: described instead
        pass
    first = str(exc).strip().splitlines()
    return RuntimeError(f"{type(exc).__name__}: {first[0] if first else ''}".rstrip(": "))
