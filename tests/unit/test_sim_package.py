"""The simulator package: its public surface, and the one direction of imports between its modules."""

from __future__ import annotations

import ast
import subprocess
import sys

import worker.sim as sim_package
import worker.sim.config as sim_config
import worker.sim.core as sim_core
import worker.sim.server as sim_server
import worker.sim.transport as sim_transport
from tests.unit.sim_helpers import ROOT

# Each module may import only the modules after it: server -> transport -> core -> push -> config -> delivery,
# state -> rules.
ALLOWED_IMPORTS = {
    "rules": set(),
    "delivery": set(),
    "config": {"delivery"},
    "push": {"delivery"},
    "state": {"rules"},
    "core": {"rules", "config", "state", "push"},
    "transport": {"core"},
    "server": {"core", "transport", "delivery"},
    "__init__": {"core", "transport", "server"},
}


def test_public_surface() -> None:
    assert sim_core.__all__ == ["BREACHES", "SimConfig", "SimRequest", "SimResponse", "Simulator"]
    assert sim_config.__all__ == ["SimConfig"]
    assert sim_transport.__all__ == ["MAX_RECORD_PAGE", "SimTransport", "begin", "parse_params", "route"]
    assert sim_server.__all__ == ["SimServer", "main", "run", "serve"]
    assert sim_package.__all__ == ["BREACHES", "SimConfig", "SimResponse", "SimServer", "SimTransport", "Simulator",
                                   "serve"]
    assert sim_package.serve is sim_server.serve and sim_package.SimServer is sim_server.SimServer
    assert sim_core.SimConfig is sim_config.SimConfig


def test_the_breaches_the_summary_always_reports() -> None:
    assert sim_core.BREACHES == ("identical_send", "identical_cost", "concurrency", "flood", "status_rate",
                                 "status_concurrency", "status_mass", "balance_rate", "ip_blocked", "auth_block")


def test_sim_modules_import_each_other_in_one_direction_only() -> None:
    for module, allowed in ALLOWED_IMPORTS.items():
        tree = ast.parse((ROOT / "worker" / "sim" / f"{module}.py").read_text())
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                if node.module == "worker.sim":
                    imported |= {alias.name for alias in node.names}
                elif node.module.startswith("worker.sim."):
                    imported.add(node.module.removeprefix("worker.sim."))
            elif isinstance(node, ast.Import):
                imported |= {a.name.removeprefix("worker.sim.") for a in node.names if a.name.startswith("worker.sim.")}
        assert imported <= allowed, f"worker/sim/{module}.py imports {sorted(imported - allowed)}"


def test_running_the_server_module_prints_no_warning_of_a_double_import() -> None:
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "worker.sim.server", "--port", "-1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "Warning" not in proc.stderr, proc.stderr
