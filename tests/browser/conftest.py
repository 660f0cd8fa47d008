"""Fixtures of the dashboard's browser tests: the HTTP server as a real process, and a real headless Chromium.

- ``chromium_path`` — Debian's ``/usr/bin/chromium`` (CI installs it; nothing is downloaded at run time):
  the tests are skipped, saying so, where it is missing.
- ``browser`` — Playwright's Chromium on that binary (one per test module).
- ``dashboard_server(env)`` — ``python -m worker.http.serve --port P`` (the API with the dashboard) when
  ``worker/http/serve.py`` exists, else the dashboard alone on uvicorn; ready once ``GET /ui/login``
  answers 200; its log under the test's ``tmp_path``; stopped after the test.
- ``tokens`` — a full and a read token, and the ``SMSC_API_TOKENS`` that holds their digests.
- ``artifacts`` — where a test keeps its screenshots: ``$SMSC_TEST_ARTIFACTS`` (CI uploads it) or the
  test's ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mirakuru
import pytest

from worker.dev.stack.process import HOST, PROJECT_ROOT, ChildExecutor, ServerProcess, StackError, child_env

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); "
                    "the browser tests never download a browser")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(chromium_path), headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass(frozen=True)
class Tokens:
    full: str
    read: str

    @property
    def setting(self) -> str:
        return ",".join(f"{hashlib.sha256(t.encode()).hexdigest()}:{scope}"
                        for t, scope in ((self.full, "full"), (self.read, "read")))


@pytest.fixture
def tokens() -> Tokens:
    return Tokens(full=secrets.token_urlsafe(32), read=secrets.token_urlsafe(32))


class _HttpExecutor(ChildExecutor, mirakuru.HTTPExecutor):
    """Ready when ``GET /ui/login`` answers 200."""


class DashboardServer(ServerProcess):
    """The HTTP server (the API and the dashboard, or the dashboard alone) as a child process."""

    what = "dashboard"

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        super().__init__(None)
        self.env = dict(env)
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def argv(self) -> list[str]:
        if (PROJECT_ROOT / "worker" / "http" / "serve.py").exists():
            return [sys.executable, "-m", "worker.cli", "serve", "--host", HOST, "--port", str(self.port)]
        return [sys.executable, "-m", "uvicorn", "--factory", "worker.http.dashboard:dashboard_app",
                "--host", HOST, "--port", str(self.port), "--log-level", "warning"]

    def start(self) -> DashboardServer:
        self._start_on_a_free_port(self._start_once)
        return self

    def _start_once(self) -> None:
        assert self.log_path is not None
        executor = _HttpExecutor(self.argv(), env=child_env(self.env), log_path=self.log_path,
                                 url=f"{self.url}/ui/login", method="GET", status=200, request_timeout=2.0,
                                 cwd=str(self.log_path.parent), timeout=30, sleep=0.1)
        self._run(executor, f"the HTTP server on port {self.port}")

    def stop(self) -> None:
        self._stop_group()


@pytest.fixture
def dashboard_server(tmp_path: Path) -> Iterator[Callable[[Mapping[str, str]], DashboardServer]]:
    started: list[DashboardServer] = []

    def make(env: Mapping[str, str]) -> DashboardServer:
        server = DashboardServer(env, tmp_path / f"dashboard-{len(started) + 1}.log")
        started.append(server)
        try:
            return server.start()
        except StackError as exc:
            pytest.fail(f"fixture could not start the HTTP server: {exc}", pytrace=False)

    yield make
    for server in reversed(started):
        with contextlib.suppress(Exception):
            server.stop()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    where = os.environ.get("SMSC_TEST_ARTIFACTS")
    path = Path(where) if where else tmp_path / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path
