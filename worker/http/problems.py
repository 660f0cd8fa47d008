"""Errors of the HTTP API as ``application/problem+json`` (RFC 9457): ``type``, ``title``, ``status``,
``detail``, and for refused rows an ``errors`` list (``line``, ``column`` or ``field``, ``reason``).

Every error an endpoint can meet is translated here, at one boundary (:func:`problem_of`), into an
:class:`ApiProblem`; the handlers of :func:`install` render it, and render FastAPI's own errors
(validation, 404, 405, 413) the same way, so a client reads one shape whatever went wrong. Bad input is
a 4xx, never a 500; a 500 is a bug, logged with its traceback and answered without a word of it.

The domain errors and their statuses:

=======================================  ======  ==================================================
what                                     status  type (``urn:smsc-mailer:problem:<slug>``)
=======================================  ======  ==================================================
no token, or a token not configured      401     ``unauthorized`` (and ``WWW-Authenticate``)
a read token on a write                  403     ``forbidden``
unknown campaign                         404     ``not-found``
campaign id taken by another content,    409     ``conflict``
an ``Idempotency-Key`` reused with
another body, a campaign being enqueued
the balance cannot pay the campaign      402     ``insufficient-balance``
bad rows (none valid, or ``strict``)     422     ``invalid-rows`` (``errors``: the first 1,000)
bad input (text, template, plan, ...)    422     ``invalid-request`` (validation: ``errors``)
body over ``SMSC_API_MAX_UPLOAD``        413     ``too-large``
the provider's quote limits              429     ``rate-limited`` (and ``Retry-After``)
the provider cannot answer now           502/503 ``provider-unavailable``
Redis cannot be reached, not configured  503     ``unavailable``
=======================================  ======  ==================================================

Neither a token nor a password ever reaches a problem: the details are the one-line texts of the
domain errors, which carry no secret (``worker.settings``, ``worker.costs``), and a validation error
names the field, never the value it was given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from scheduler.campaigns import CampaignError
from scheduler.intake import Rejected
from worker.settings import ConfigError
from worker.smsc.phones import mask_phone

__all__ = [
    "MAX_NAMED_ERRORS",
    "PROBLEM_JSON",
    "ApiProblem",
    "Problem",
    "ProblemItem",
    "RejectedRows",
    "install",
    "masked_path",
    "problem_of",
    "problem_response",
    "validation_items",
]

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: Refused rows named one by one in an answer (as the CLI names the first 1,000 on standard error).
MAX_NAMED_ERRORS = 1000
_URN = "urn:smsc-mailer:problem:"


class ProblemItem(BaseModel):
    """One refused row or field: where (``line`` of the file or position in the list, ``column`` of the
    table, ``field`` of the request) and why."""

    model_config = ConfigDict(extra="forbid")

    line: int | None = Field(default=None, description="The row's line in the file (1 = the first line), or its "
                                                       "position in the request's list (1 = the first item).")
    column: str | None = Field(default=None, description="The table's column (or the row's key) at fault.")
    field: str | None = Field(default=None, description="The request's field at fault (``phones``, ``rows``, "
                                                        "``file``, ``body.batch_size``...).")
    reason: str


class Problem(BaseModel):
    """An error (RFC 9457)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="``about:blank`` or ``urn:smsc-mailer:problem:<slug>`` (docs/http-api.md).")
    title: str
    status: int
    detail: str | None = None
    errors: list[ProblemItem] | None = Field(default=None, description="Refused rows or fields, the first 1,000.")


class ApiProblem(Exception):
    """Raised (and answered as problem+json) for any request the API refuses."""

    def __init__(self, status: int, detail: str | None, *, slug: str | None = None, title: str | None = None,
                 errors: Sequence[ProblemItem] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or "")
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title or _TITLES.get(status) or "Error"
        self.errors = list(errors) if errors is not None else None
        self.headers = headers or {}


_TITLES = {400: "Bad Request", 401: "Unauthorized", 402: "Insufficient balance", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
           415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def problem_response(p: ApiProblem) -> JSONResponse:
    body: dict[str, Any] = {"type": _URN + p.slug if p.slug else "about:blank", "title": p.title,
                            "status": p.status}
    if p.detail:
        body["detail"] = p.detail
    if p.errors is not None:
        body["errors"] = [e.model_dump(exclude_none=True) for e in p.errors]
    return JSONResponse(body, status_code=p.status, headers=p.headers, media_type=PROBLEM_JSON)


class RejectedRows:
    """``on_rejected`` of an intake: counts every refused row, keeps the first :data:`MAX_NAMED_ERRORS`
    problems as :class:`ProblemItem` (a row with two bad columns is two items).

    ``field``: where the rows came from (``phones``, ``rows``, ``pairs``, ``file``); ``table``: the rows
    are a table's (their reasons name columns: ``column 'order': empty (the template uses it)``)."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.count = 0
        self.items: list[ProblemItem] = []

    def __call__(self, r: Rejected) -> None:
        self.count += 1
        for part in _split_reason(r.reason):
            if len(self.items) >= MAX_NAMED_ERRORS:
                return
            self.items.append(_item(r.line_no, part, self.field))


# The reasons of worker.rows and scheduler.intake are one line each, several problems of one row joined by
# '; ' and each starting with what is at fault: "column 'order': ...", "phone: ...", "text: ...".
# scheduler.intake.Rejected has no structured column (yet): this reads the documented text.
_PART = re.compile(r"; (?=column '|phone: |text: |\d+ cells but )")
_COLUMN = re.compile(r"^column '((?:[^'\\]|\\.)*)': (.*)$", re.S)
_FIELD = re.compile(r"^(phone|text): (.*)$", re.S)


def _split_reason(reason: str) -> list[str]:
    return [p for p in _PART.split(reason) if p] or [reason or "refused"]


def _item(line_no: int, part: str, field: str) -> ProblemItem:
    if m := _COLUMN.match(part):
        return ProblemItem(line=line_no, column=m.group(1), field=None if field == "file" else field,
                           reason=m.group(2))
    if m := _FIELD.match(part):
        return ProblemItem(line=line_no, column=m.group(1) if field in ("rows", "file") else None, field=field,
                           reason=m.group(2))
    return ProblemItem(line=line_no, field=field, reason=part)


def validation_items(errors: Iterable[Any]) -> list[ProblemItem]:
    """Pydantic's errors as items: the field's location and the message, never the input."""
    out = []
    for e in list(errors)[:MAX_NAMED_ERRORS]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "__root__") or "body"
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "json_invalid":
            msg = f"not JSON: {e.get('ctx', {}).get('error', 'decode error')}"
        out.append(ProblemItem(field=loc, reason=msg))
    return out


def problem_of(exc: BaseException, *, rejected: RejectedRows | None = None) -> ApiProblem:
    """The problem an endpoint answers for ``exc`` (the domain's errors; anything else is re-raised by the
    caller as a bug). ``rejected``: the rows the intake refused, named in a 422 about them."""
    from worker.costs import BalanceLimit, CostError, NoSlot, ProviderError, QuoteLimit

    if isinstance(exc, ApiProblem):
        return exc
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return ApiProblem(503, "cannot reach Redis; try again later", slug="unavailable",
                          headers={"Retry-After": "5"})
    if isinstance(exc, ConfigError):
        return ApiProblem(503, f"this server is not configured for it: {exc}", slug="unavailable")
    if isinstance(exc, CostError):
        retry = {"Retry-After": str(max(1, round(exc.retry_after_s)))} if exc.retry_after_s else {}
        if isinstance(exc, (QuoteLimit, BalanceLimit)):
            return ApiProblem(429, str(exc), slug="rate-limited", headers=retry or {"Retry-After": "60"})
        if isinstance(exc, ProviderError):
            return ApiProblem(502, str(exc), slug="provider-unavailable", headers=retry)
        if isinstance(exc, NoSlot):
            return ApiProblem(503, str(exc), slug="provider-unavailable", headers=retry or {"Retry-After": "5"})
        return ApiProblem(503, str(exc), slug="provider-unavailable", headers=retry)
    if isinstance(exc, CampaignError):
        return _campaign_problem(str(exc), rejected)
    if isinstance(exc, ValidationError):
        return ApiProblem(422, "the request does not match the schema", slug="invalid-request",
                          errors=validation_items(exc.errors(include_input=False)))
    if isinstance(exc, ValueError):  # IntakeError, PlanError, TemplateError, ColumnError, a bad text or option
        return ApiProblem(422, _first_line(exc), slug="invalid-request",
                          errors=rejected.items if rejected is not None and rejected.items else None)
    raise TypeError(f"not a domain error: {type(exc).__name__}") from exc


# CampaignError is one class for several situations (scheduler.enqueue); its one-line texts say which.
# The lead may split it (CampaignNotFound, CampaignConflict); until then the status is read from the text.
_NOT_FOUND = re.compile(r"^no campaign with id ")
_CONFLICT = re.compile(r"is taken by a campaign with|being enqueued right now|enqueue was interrupted|"
                       r"still being enqueued|took it over|is not queued yet|no free follow-up id")
_BALANCE = re.compile(r"^balance .* short of the estimate")
_ROWS = re.compile(r"^no valid recipients|invalid lines? \(strict\)")


def _campaign_problem(text: str, rejected: RejectedRows | None) -> ApiProblem:
    if _NOT_FOUND.search(text):
        return ApiProblem(404, text, slug="not-found")
    if _CONFLICT.search(text):
        return ApiProblem(409, text, slug="conflict")
    if _BALANCE.search(text):
        return ApiProblem(402, text, slug="insufficient-balance")
    if _ROWS.search(text):
        return ApiProblem(422, text, slug="invalid-rows", errors=rejected.items if rejected is not None else [])
    return ApiProblem(422, text, slug="invalid-request",
                      errors=rejected.items if rejected is not None and rejected.items else None)


_PHONE = re.compile(r"\+?\d{10,15}")


def masked_path(path: str) -> str:
    """A request's path for a log line: every number in it masked to its last digits (``****4567``)."""
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), path)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# -- the handlers ----------------------------------------------------------------------------------
async def _api_problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    return problem_response(exc)


async def _http_exception(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    slug = {401: "unauthorized", 403: "forbidden", 404: "not-found", 413: "too-large"}.get(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _TITLES.get(exc.status_code) else None
    if exc.status_code == 413:
        detail = "the request body is larger than this server accepts (SMSC_API_MAX_UPLOAD)"
    if exc.status_code < 400:  # a redirect raised as an exception (the dashboard's login)
        return Response(status_code=exc.status_code, headers=exc.headers)
    return problem_response(ApiProblem(exc.status_code, detail, slug=slug, headers=dict(exc.headers or {})))


async def _validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
    return problem_response(ApiProblem(422, "the request does not match the schema", slug="invalid-request",
                                       errors=validation_items(errors)))


async def _domain(_: Request, exc: Exception) -> Response:
    return problem_response(problem_of(exc))


async def _bug(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log (no request headers in it); the client learns nothing of it.
    log.error("%s %s: unexpected %s", request.method, masked_path(request.url.path), type(exc).__name__,
              exc_info=exc)
    return problem_response(ApiProblem(500, "an unexpected error; it is logged", slug="internal"))


def install(app: FastAPI) -> None:
    """Register the handlers: every error the app answers is problem+json."""
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation)
    for cls in (redis.ConnectionError, redis.TimeoutError, ConfigError, CampaignError):
        app.add_exception_handler(cls, _domain)
    app.add_exception_handler(Exception, _bug)
