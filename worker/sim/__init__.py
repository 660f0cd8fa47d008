"""The provider simulator: one core that maps a request to SMSC's answer (:mod:`worker.sim.core`), its config
(:mod:`~worker.sim.config`), rules (:mod:`~worker.sim.rules`) and state (:mod:`~worker.sim.state`), served
in-process as an ``httpx`` transport (:mod:`~worker.sim.transport`, like ``httpx.MockTransport``) or over a
socket (:mod:`~worker.sim.server`).

Used by the tests, the demo and the benchmark; the runtime never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.sim.core import BREACHES, SimConfig, SimResponse, Simulator
from worker.sim.transport import SimTransport

if TYPE_CHECKING:
    from worker.sim.server import SimServer, serve

__all__ = ["BREACHES", "SimConfig", "SimResponse", "SimServer", "SimTransport", "Simulator", "serve"]


def __getattr__(name: str) -> Any:
    # The server is imported on first use, so that ``python -m worker.sim.server`` runs a module that the
    # package has not imported already (runpy warns about that, on every start).
    if name in ("SimServer", "serve"):
        from worker.sim import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
