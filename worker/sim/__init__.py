"""The provider simulator: one core that maps a request to SMSC's answer (:mod:`worker.sim.core`), its rules
(:mod:`~worker.sim.rules`) and state (:mod:`~worker.sim.state`), served in-process as an ``httpx`` transport
(:mod:`~worker.sim.transport`, like ``httpx.MockTransport``) or over a socket (:mod:`~worker.sim.server`).

Used by the tests, the demo and the benchmark; the runtime never imports it.
"""

from worker.sim.core import BREACHES, SimConfig, SimResponse, Simulator
from worker.sim.server import SimServer, serve
from worker.sim.transport import SimTransport

__all__ = ["BREACHES", "SimConfig", "SimResponse", "SimServer", "SimTransport", "Simulator", "serve"]
