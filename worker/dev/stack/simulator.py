"""The provider simulator as a process: ``python -m worker.sim.server`` on a free port of 127.0.0.1."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import mirakuru

from worker.dev.stack.process import HOST, ChildExecutor, ServerProcess, StackError, child_env

__all__ = ["DEMO_LOGIN", "DEMO_PASSWORD", "SimulatorProcess"]

log = logging.getLogger(__name__)

# The simulator's demo account (not a secret: it only opens the local simulator).
DEMO_LOGIN = "demo"
DEMO_PASSWORD = "demo-password"  # noqa: S105  (SimConfig's default)


class _SimulatorExecutor(ChildExecutor, mirakuru.HTTPExecutor):
    """mirakuru's HTTP executor: ready when ``GET /_sim/summary`` answers 200."""


class SimulatorProcess(ServerProcess):
    """The provider simulator over HTTP, with its control endpoints (``/_sim/...``) as methods.

    ``extra_args`` are flags of ``python -m worker.sim.server`` (``--slow-accept-rate 0.2`` ...);
    ``extra_logins`` (login -> password) are more logins of the provider, each with its own limits
    (``--extra-login``), for a stack whose ``SMSC_ACCOUNTS`` names them. Logs name the logins, never a password.
    """

    what = "simulator"

    def __init__(
        self,
        *,
        port: int | None = None,
        latency_ms: float = 0,
        login: str = DEMO_LOGIN,
        password: str = DEMO_PASSWORD,
        seed: int = 0,
        extra_logins: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = 15.0,
    ) -> None:
        super().__init__(port)
        self.latency_ms = latency_ms
        self.login = login
        self.password = password
        self.seed = seed
        self.extra_logins = dict(extra_logins or {})
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
            *(arg for login, password in self.extra_logins.items() for arg in ("--extra-login", f"{login}={password}")),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> SimulatorProcess:
        if self.running:
            return self
        self._start_on_a_free_port(self._start_once)
        self._http = httpx.Client(base_url=self.url, timeout=5.0)
        log.info("simulator started pid=%s port=%d login=%s latency_ms=%s seed=%s%s",
                 self.pid, self.port, self.login, self.latency_ms, self.seed,
                 f" extra_logins={','.join(self.extra_logins)}" if self.extra_logins else "")
        return self

    def _start_once(self) -> None:
        assert self.log_path is not None
        executor = _SimulatorExecutor(self.argv(), env=child_env(self.env), log_path=self.log_path,
                                      url=f"{self.url}/_sim/summary", method="GET", status=200,
                                      request_timeout=2.0, cwd=str(self.log_path.parent),
                                      timeout=self.ready_timeout_s, sleep=0.05)
        self._run(executor, f"simulator on port {self.port}")

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
        self._stop_group()
        self.remove_temp_dir()
