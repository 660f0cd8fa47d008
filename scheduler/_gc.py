"""Fewer cyclic garbage collections while an intake runs: :func:`fewer_collections`.

An intake allocates a few containers a row (the row's dict, its cells, its Row) and keeps a chunk or two
of them alive, so CPython's collector, left as it is (a collection of the youngest objects every 700 net
allocations), runs every ~150 rows, promotes the chunk in hand to the oldest generation and then
traverses every object of the process there (the modules, the classes: ~30 ms each time). Measured on a
million personal rows: 0.42 s of the producer's ~7 s. Nothing an intake makes is a reference cycle
(refcounting frees it all), so for its duration the objects that were there before are frozen
(``gc.freeze``: left out of collections, not freed) and the youngest generation collected every 20,000
net allocations; both are undone when the last intake of the process ends (``gc.unfreeze``, the
thresholds as they were). A process's other threads only see their cycles collected a little later.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

#: The youngest generation's threshold while an intake runs (CPython's default: 700).
INTAKE_THRESHOLD = 20_000

_lock = threading.Lock()
_running = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """While the ``with`` block runs (and any other intake's of this process), collect less often."""
    global _running, _saved
    with _lock:
        if _running == 0:
            _saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(_saved[0], INTAKE_THRESHOLD), *_saved[1:])
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                gc.unfreeze()
                _saved = None
