"""Real processes for tests, ``make demo``, the benchmark and the chaos suite.

Everything here starts a real OS process on a free port of 127.0.0.1 and stops what it started:

- :class:`RedisServer` (:mod:`.redis_server`) — a private ``redis-server`` started with explicit
  arguments only (never a config file, never the system's default server on 6379): ``--save ""``,
  optional AOF, ``noeviction``.
- :class:`SimulatorProcess` (:mod:`.simulator`) — ``python -m worker.sim.server``, the provider
  simulator over HTTP.
- :class:`CeleryWorker`, :class:`CeleryBeat` (:mod:`.celery_processes`) — ``celery -A worker worker|beat``.
- :class:`Stack` (:mod:`.stack`) — all of the above wired together through the environment of the
  children.
- :mod:`.process` — what they share: each child is started and checked through a ``mirakuru``
  executor, in its own session (a stop or a kill reaches the whole group and leaves no orphans), its
  output in a log file, its environment free of the parent's app settings.

The children's environment is ``os.environ`` *without* the variables that configure this application
(``SMSC_*``, ``CELERY_*``, ``REDIS_URL``), plus the values given: a developer's shell or ``.env`` never
leaks a real account into a test. The children run in a work directory (no ``.env`` there) with this
checkout on ``PYTHONPATH``.

No Celery import here: this package only launches processes (stdlib, mirakuru, redis-py, psutil, httpx).
"""

from worker.dev.stack.celery_processes import CeleryBeat, CeleryWorker, faketime_env
from worker.dev.stack.process import StackError, child_env, free_port
from worker.dev.stack.redis_server import RedisServer, RedisServerNotFound, find_redis_server
from worker.dev.stack.simulator import SimulatorProcess
from worker.dev.stack.stack import Stack

__all__ = [
    "CeleryBeat",
    "CeleryWorker",
    "RedisServer",
    "RedisServerNotFound",
    "SimulatorProcess",
    "Stack",
    "StackError",
    "child_env",
    "faketime_env",
    "find_redis_server",
    "free_port",
]
