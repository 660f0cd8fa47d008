"""The ASGI app of the HTTP API (``create_app``): the routes of :mod:`worker.http.api`, the dashboard when
``worker/http/dashboard.py`` exists, Prometheus ``/metrics``, and what wraps them all.

What wraps every request, outermost first:

1. **the access log** — one line per request: method, the path (never the query string; numbers in it
   masked to their last digits), status, milliseconds and the caller's ``token_id`` (8 hex digits of
   its token's digest, never the token). uvicorn's own access log is off (:mod:`worker.http.serve`).
2. **the body limit** — ``SMSC_API_MAX_UPLOAD`` bytes: a ``Content-Length`` over it is answered 413 at
   once, before a byte of the body is read; a body without one (chunked) is counted as it arrives by
   Starlette's ``RequestBodyLimitMiddleware`` and cut off with a 413 at the first byte over the limit.
   Starlette's limiter alone would answer a ``Content-Length`` over the limit in plain text when the
   route answers before reading (a 401): the first check makes every 413 a problem+json.
3. the routes, whose every error is problem+json (:mod:`worker.http.problems`).

``/metrics`` (:func:`worker.metrics.metrics_app`) asks for a token too (read is enough): Prometheus sends
it with ``authorization: {type: Bearer, credentials_file: ...}``. ``smsc-mailer metrics`` still serves
the metrics alone, without a token, for a private network.

The OpenAPI document (``/openapi.json``) lists the API's routes only (not the dashboard's pages), and
is committed as ``docs/openapi.json``: ``python -m worker.http.serve --write-openapi docs/openapi.json``
regenerates it, and a unit test fails when the two differ.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from typing import Any

import redis
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.http import api, problems
from worker.http.auth import Tokens
from worker.http.problems import ApiProblem, Problem, masked_path, problem_response
from worker.settings import Settings, get_settings

__all__ = ["OPENAPI_TITLE", "create_app", "openapi_document"]

log = logging.getLogger("worker.http.access")

OPENAPI_TITLE = "smsc-mailer"
_DESCRIPTION = ("Bulk SMS campaigns through the SMSC HTTP API: the smsc-mailer CLI over HTTP. Every answer is "
                "the object the CLI prints with --json; every error is application/problem+json (RFC 9457). "
                "Authorization: Bearer <token> (smsc-mailer api-token). See docs/http-api.md.")


def create_app(settings: Settings | None = None, *, redis_conn: redis.Redis | None = None) -> FastAPI:
    """The API of ``settings`` (the environment's by default) on ``redis_conn`` (one from
    ``settings.redis_url`` by default). ``ConfigError`` (one line) for a malformed ``SMSC_API_TOKENS``."""
    from worker.metrics import metrics_app
    from worker.runtime import redis_client

    s = settings or get_settings()
    tokens = Tokens.from_settings(s)
    conn = redis_conn if redis_conn is not None else redis_client(s.redis_url)
    # FastAPI's OpenTelemetry is off: this server's observability is /metrics and its log lines, and the
    # telemetry would record validation failures with their inputs (phone numbers, texts).
    app = FastAPI(title=OPENAPI_TITLE, version=_version(), description=_DESCRIPTION, docs_url=None,
                  redoc_url=None, telemetry={"tracing": False, "metrics": False, "logs": False,
                                             "operation_spans": False, "auto_configure": False})
    app.state.settings = s
    app.state.tokens = tokens
    app.state.redis = conn
    problems.install(app)
    app.include_router(api.router)
    if importlib.util.find_spec("worker.http.dashboard") is not None:
        app.include_router(importlib.import_module("worker.http.dashboard").router)
    app.mount("/metrics", _TokenGate(metrics_app(s, client=conn), tokens))
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=s.smsc_api_max_upload)
    app.add_middleware(_ContentLengthLimit, max_body_size=s.smsc_api_max_upload)
    app.add_middleware(_AccessLog)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("smsc-mailer")
    except PackageNotFoundError:
        return "0"


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The API's OpenAPI document: FastAPI's of :data:`worker.http.api.router`'s routes, with the bodies the
    routes read themselves (JSON or multipart) and the problem schema added to its components."""
    if app.openapi_schema is None:
        doc = get_openapi(title=OPENAPI_TITLE, version=app.version, description=_DESCRIPTION,
                          routes=api.router.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        models: list[type[BaseModel]] = [*api.BODY_MODELS, Problem]
        for model in models:
            _add_schema(schemas, model)
        doc["components"]["schemas"] = dict(sorted(schemas.items()))
        app.openapi_schema = doc
    return app.openapi_schema


def _add_schema(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas[model.__name__] = schema


# -- the wrappers ------------------------------------------------------------------------------------
class _ContentLengthLimit:
    """A ``Content-Length`` over the limit: 413 problem+json before the body is read (and the app called)."""

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for k, v in scope.get("headers", ()):
                if k == b"content-length":
                    if not v.isdigit():
                        await problem_response(ApiProblem(400, "Content-Length is not a number"))(scope, receive, send)
                        return
                    if int(v) > self.max_body_size:
                        p = ApiProblem(413, f"the body has {int(v):,} bytes; this server accepts at most "
                                            f"{self.max_body_size:,} (SMSC_API_MAX_UPLOAD)", slug="too-large",
                                       headers={"Connection": "close"})
                        await problem_response(p)(scope, receive, send)
                        return
        await self.app(scope, receive, send)


class _TokenGate:
    """A mounted ASGI app behind a read token (``Authorization: Bearer``)."""

    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            token = ""
            for k, v in scope.get("headers", ()):
                if k == b"authorization":
                    scheme, _, token = v.decode("latin-1").partition(" ")
                    token = token.strip() if scheme.lower() == "bearer" else ""
            principal = self.tokens.authenticate(token) if token else None
            if principal is None:
                p = ApiProblem(401, "give a token: Authorization: Bearer <token>", slug="unauthorized",
                               headers={"WWW-Authenticate": 'Bearer realm="smsc-mailer"'})
                await problem_response(p)(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class _AccessLog:
    """One line per request: ``GET /v1/campaigns/c1 200 3.1ms client=1a2b3c4d`` (no query string, no
    header, numbers masked)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            principal = scope.get("state", {}).get("principal")
            who = f" client={principal.token_id}" if principal is not None else ""
            log.info("%s %s %d %.1fms%s", scope.get("method", "?"), masked_path(scope.get("path", "")), status or 500,
                     (time.perf_counter() - started) * 1000, who)
