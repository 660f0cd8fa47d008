"""The HTTP API against its own OpenAPI document, by schemathesis: no 5xx, and no answer the document does not
describe (status, content type, body, headers), whatever schema-valid or schema-invalid request comes.

The document is the one the app serves at ``/openapi.json`` (equal to the committed docs/openapi.json, a unit
test checks it), loaded from the ASGI app; the app runs on the session redis-server (flushed before each
operation) with the provider simulator as a real process behind it, so a quote and the enqueue's balance
check are real requests. Every request carries a full token; ``ignored_auth`` also sends each one without.
The number of examples is bounded (the coverage and stateful phases off), so the whole run takes seconds.
"""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from worker.dev.stack import SimulatorProcess, child_env
from worker.http.auth import mint_token

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN, ENTRY = mint_token("full")
#: Examples per operation and generation mode (positive, negative): 15 operations, a few hundred requests.
MAX_EXAMPLES = 100
CONFIG = schemathesis.Config.from_dict({
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    "headers": {"Authorization": f"Bearer {TOKEN}"},
    "seed": 20261201,
})


def negative_json_rejection(ctx: Any, response: Any, case: Any) -> bool | None:
    """``negative_data_rejection`` but for multipart bodies, where every field travels as text: a "schema-
    violating" ``campaign_id: false`` arrives as the valid id ``"false"``, and is rightly accepted."""
    if case.media_type == "multipart/form-data":
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_json_rejection, ignored_auth]
CALLS: list[int] = []


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    proc = SimulatorProcess(log_path=tmp_path_factory.mktemp("sim") / "simulator.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module", autouse=True)
def _count() -> Iterator[None]:
    yield
    print(f"\nschemathesis: {sum(CALLS)} requests")  # the figure, shown with -s


@pytest.fixture(scope="module")
def served(redis_server: Any, sim: SimulatorProcess) -> Iterator[str]:
    """``python -m worker.http.serve --port 0`` (what ``smsc-mailer serve`` runs) on the session Redis."""
    env = child_env({"REDIS_URL": redis_server.url, "SMSC_NAMESPACE": "schema", "SMSC_API_TOKENS": ENTRY,
                     "SMSC_BASE_URL": sim.url, "SMSC_LOGIN": sim.login, "SMSC_PASSWORD": sim.password,
                     "SMSC_TIMEOUT": "5", "SMSC_API_MAX_UPLOAD": str(1024 * 1024)})
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "serve", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("api listening on "), f"the API did not start: {line!r}"
        yield line.split()[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# The committed document: a unit test (tests/unit/test_http_api.py) holds it equal to the served one.
schema = schemathesis.openapi.from_path(str(ROOT / "docs" / "openapi.json"), config=CONFIG)


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
def test_no_server_error_and_every_answer_fits_the_document(case: Any, served: str, redis_client: redis.Redis) -> None:
    # redis_client: the db flushed before each operation (its examples share it)
    CALLS.append(1)
    case.call_and_validate(base_url=served, checks=CHECKS)
