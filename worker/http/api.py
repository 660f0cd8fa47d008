"""The HTTP API's routes (``/v1``): the CLI's commands over HTTP, answering the objects the CLI prints.

========================================  =====  =====================================================
route                                     scope  answer (the CLI's object)
========================================  =====  =====================================================
``POST /v1/campaigns``                    full   ``enqueue --json`` (201; 200 for an existing one);
                                                 ``dry_run``: ``enqueue --dry-run --json`` (200)
``GET /v1/campaigns``                     read   ``list --json``
``GET /v1/campaigns/{id}``                read   ``status --json`` (delivery included)
``POST /v1/campaigns/{id}/pause``         full   ``{"campaign_id", "state", "durable"}``
``POST /v1/campaigns/{id}/resume``        full   the same (``{"max_cost": ...}``: ``resume --max-cost``)
``POST /v1/campaigns/{id}/cancel``        full   the same and ``cancelled_now``
``GET /v1/campaigns/{id}/report``         read   ``report --csv``: the CSV, streamed
``POST /v1/campaigns/{id}/retry``         full   ``retry --json``
``POST /v1/quote``                        read   ``quote --json`` (the provider's price; nothing sent)
``GET|PUT|DELETE /v1/stoplist/{phone}``   r/f/f  ``stoplist check --json`` (and ``added``/``removed``)
``POST /v1/stoplist``                     full   ``stoplist add|remove --json`` of many numbers
========================================  =====  =====================================================

A campaign's body uses the CLI's option names (``phones`` + ``message``, ``rows`` + ``template``, or
``pairs``; ``sender``, ``period``, ``freq``, ``at``, ``tz``, ``window``, ... ``dry_run``), as JSON or as a
``multipart/form-data`` upload of a CSV/XLSX (with ``template``) or phones file (with ``message``) in the
field ``file`` beside the same options as form fields. The rows the intake refuses come back in
``rejected`` (the first 1,000: line, column or field, reason), and in the problem's ``errors`` when the
campaign is refused for them (none valid, or ``strict``).

Everything that reads or writes Redis, parses a large body or runs an intake runs in the thread pool
(``def`` routes, :func:`run_in_threadpool`), never on the event loop. The functions called are the CLI's
(``worker.api``, ``worker.retry``, ``scheduler.campaigns``, ``scheduler.stoplist``,
``worker.delivery.report``); where the CLI builds its object inline, it is built here the same way.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

import redis
from fastapi import APIRouter, Depends, Header, Path, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, StreamingResponse

from scheduler import spreading
from scheduler.budget import Budget
from scheduler.campaigns import Campaigns
from scheduler.guards import Guards
from scheduler.intake import InvalidPhone, normalize_phone
from scheduler.keys import CAMPAIGN_ID_RE, Keys
from scheduler.stoplist import StopList, check_reason, stop_key
from worker.costs import CostError
from worker.delivery.report import REPORT_COLUMNS, report_rows, store_for
from worker.delivery.report import campaign_status as _campaign_status
from worker.http.auth import Principal, require_full, require_read
from worker.http.problems import MAX_NAMED_ERRORS, PROBLEM_JSON, ApiProblem, ProblemItem, RejectedRows, problem_of
from worker.settings import ConfigError, Settings

__all__ = ["REPORT_HEADER", "router"]

#: The report's columns, as ``report --csv`` writes them.
REPORT_HEADER = ("phone", "state", "provider_id", "parts", "cost", "error_code", "reason", *REPORT_COLUMNS)
#: How long an ``Idempotency-Key`` is remembered with its request's digest (a retry after that still gets
#: the same campaign: its id is derived from the key, and the campaign's own content check refuses another
#: body under it).
IDEMPOTENCY_TTL_S = 86_400
#: The largest body of the routes with a small one (controls, a stop-list entry, retry): parsed on the loop.
SMALL_BODY = 64 * 1024
#: A form field's largest value (a template, a message): 1 MiB, as Starlette's default.
_MAX_FORM_FIELD = 1024 * 1024
_CHUNK_ROWS = 500

CampaignId = Annotated[str, Path(pattern=CAMPAIGN_ID_RE.pattern, description="The campaign's id.")]
PhonePath = Annotated[str, Path(min_length=1, max_length=64, description="A number in any spelling.")]


# -- the bodies ------------------------------------------------------------------------------------
class CampaignFields(BaseModel):
    """The options of a campaign: the CLI's flags, by their names."""

    model_config = ConfigDict(extra="forbid")

    message: str | None = Field(default=None, description="The one text (with `phones`, or a phones file).")
    template: str | None = Field(default=None, description="Each row's text (with `rows`, or a CSV/XLSX file): "
                                                           "`{{ column }}` placeholders, Jinja2's sandbox.")
    phone_column: str = Field(default="phone", min_length=1, max_length=200)
    sender_column: str | None = Field(default=None, min_length=1, max_length=200)
    tz_column: str | None = Field(default=None, min_length=1, max_length=200)
    sender: str | None = None
    period: float | None = Field(default=None, allow_inf_nan=False, description="Spread over this many hours.")
    freq: int | None = Field(default=None, description="Every this many minutes the next group.")
    at: str | None = Field(default=None, description="Start: DDMMYYhhmm, 'DD.MM.YY hh:mm', +m, 0ts or ISO 8601.")
    tz: float | None = Field(default=None, allow_inf_nan=False, description="Hours from Moscow of `at`/`window`.")
    window: str | None = Field(default=None, description="Send only from H1:00 to H2:00, e.g. 9-22.")
    recipient_time: bool = False
    campaign_id: str | None = Field(default=None, pattern=CAMPAIGN_ID_RE.pattern)
    batch_size: int | None = Field(default=None, ge=1, le=5000)
    translit: int = Field(default=0, ge=0, le=2)
    tinyurl: bool = False
    flash: bool = False
    valid: str | None = Field(default=None, description="1..24 hours, or hh:mm.")
    maxsms: int | None = Field(default=None, ge=1, le=100)
    max_cost: Decimal | None = Field(default=None, ge=Decimal("0.001"), le=Decimal(10**12), allow_inf_nan=False)
    allow_partial: bool = False
    auto_stop: bool = False
    webhook: str | None = None
    strict: bool = False
    dry_run: bool = False


Scalar = str | int | float | None


class CampaignRequest(CampaignFields):
    """A campaign as JSON: ``phones`` + ``message``, ``rows`` + ``template``, or ``pairs``."""

    phones: list[str | int] | None = Field(default=None, description="Numbers, one text (`message`).")
    rows: list[dict[str, Scalar]] | None = Field(default=None, description="One object per recipient; the "
                                                                          "first row's keys are the columns.")
    pairs: list[tuple[str | int, str]] | None = Field(default=None, description="[phone, text] pairs.")


class CampaignUpload(CampaignFields):
    """A campaign as a multipart form: the file, and the options as form fields."""

    file: bytes = Field(json_schema_extra={"format": "binary"},
                        description="A CSV/XLSX table (with `template`) or a phones file (with `message`).")


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_cost: Decimal | Literal["none"] | None = Field(
        default=None, description="Set the budget first; `none` or null removes it; absent: keep it.")


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    codes: list[int] | None = Field(default=None, description="Only these send error codes / delivery statuses.")
    states: list[str] | None = Field(default=None, description="Which outcomes (default: failed, expired, "
                                                               "undeliverable, unreachable).")
    campaign_id: str | None = Field(default=None, pattern=CAMPAIGN_ID_RE.pattern)
    max_cost: Decimal | None = Field(default=None, ge=Decimal("0.001"), le=Decimal(10**12), allow_inf_nan=False)
    allow_partial: bool | None = None


class StopEntryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=200)


class StopBulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["add", "remove"] = "add"
    phones: list[str | int]
    reason: str = Field(default="", max_length=200)


# -- the answers (documentation of the CLI's objects; the routes answer those dicts as they are) -------
class Receipt(BaseModel):
    campaign_id: str
    total: int
    invalid: int
    duplicates: int
    parts: int
    batches: int
    groups: int
    first_due_ms: int
    last_due_ms: int
    existing: bool
    sms_estimate: int
    durable: str
    suppressed: int
    sms: int
    rejected: list[ProblemItem] = Field(description="The refused rows, the first 1,000.")
    warnings: list[str]


class PlanGroup(BaseModel):
    group: int
    recipients: int
    due_ms: int
    due: str


class Plan(BaseModel):
    total: int
    invalid: int
    duplicates: int
    parts: int
    sms_estimate: int
    suppressed: int
    batch_size: int
    batches: int
    groups: list[PlanGroup]
    recipient_offsets_min: dict[str, int] | None
    now_ms: int
    queued: bool
    utc_offset_min: int
    sms: int
    ucs2: dict[str, Any] | None
    zone: str
    rejected: list[ProblemItem]
    warnings: list[str]


class Quote(BaseModel):
    cost: str
    sms: int
    recipients: int
    sampled: int
    extrapolated: bool
    sms_estimate: int
    invalid: int
    duplicates: int
    suppressed: int
    rejected: list[ProblemItem]
    warnings: list[str]


class CampaignSummary(BaseModel):
    campaign_id: str
    state: str
    total: int
    sent: int
    failed: int
    cancelled: int
    pending: int
    invalid: int
    duplicates: int
    parts: int
    sms: int
    cost: str
    batches: int
    account: str
    sender: str | None
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    reason: str | None
    last_error: str | None
    account_state: str
    account_reason: str | None
    account_backoff_until_ms: int | None
    account_backoffs: int
    account_errors_in_a_row: int
    quarantined: int
    account_adaptive_cap: float | None
    account_verified: bool
    suppressed: int
    sms_estimate: int
    spent: str
    max_cost: str | None
    personal: bool
    options: dict[str, Any]
    auto_stop: bool
    retry_of: str | None
    retries: list[str]
    intake_lease_until_ms: int | None = None
    intake_alive: bool | None = None


class Delivery(BaseModel):
    delivered: int
    failed: int
    pending: int
    unknown: int
    by_state: dict[str, int]
    state: str
    final_ms: int | None
    webhook: str | None
    outbox: dict[str, int]


class CampaignStatus(CampaignSummary):
    account_cap: int
    delivery: Delivery
    delivery_state: str


class Control(BaseModel):
    campaign_id: str
    state: str
    durable: str | None
    cancelled_now: int | None = None
    warnings: list[str] = []


class NothingToRetry(BaseModel):
    retried: Literal[0]
    retry_of: str
    matched: int
    already_retried: int
    suppressed: int
    selected: int


class StopEntry(BaseModel):
    phone: str
    stopped: bool
    reason: str | None
    source: str | None
    added_ms: int | None
    added: bool | None = None
    removed: bool | None = None


class StopBulk(BaseModel):
    added: int | None = None
    already: int | None = None
    removed: int | None = None
    absent: int | None = None
    invalid: int
    total: int
    rejected: list[ProblemItem]


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    ref = {"schema": {"$ref": "#/components/schemas/Problem"}}
    out: dict[int | str, dict[str, Any]] = {}
    # 400 (a Content-Length that is not a number, a body that is not UTF-8 JSON) and 413 (a body over the
    # limit) may answer any route: the body is checked before the route is chosen.
    for c in sorted({400, 401, 403, 413, 422, 503, *codes}):
        out[c] = {"description": _WHY.get(c, "An error (RFC 9457)."), "content": {PROBLEM_JSON: ref}}
    return out


_WHY = {400: "A body that cannot be parsed as what its Content-Type says, or a bad Content-Length.",
        401: "No token, or not one of SMSC_API_TOKENS.",
        402: "The balance cannot pay the campaign (allow_partial sends what it pays for).",
        403: "A read token on a write.", 404: "No such campaign.",
        409: "The id is taken by another content, the Idempotency-Key was used with another body, or the "
             "campaign is being enqueued.",
        413: "The body is larger than SMSC_API_MAX_UPLOAD.", 415: "Neither JSON nor multipart/form-data.",
        422: "Bad input: the problem names the field, or the rows (errors).",
        429: "The provider's limits (five identical quotes a minute); see Retry-After.",
        502: "The provider refused or did not answer.",
        503: "Redis or the provider cannot be reached now, or this server is not configured for it."}


def _campaign_body() -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/CampaignRequest"}},
        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/CampaignUpload"}}}}}


def _json_body(model: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}}


#: The models the OpenAPI document lists beside those FastAPI finds in the signatures (worker.http.app).
BODY_MODELS: tuple[type[BaseModel], ...] = (CampaignRequest, CampaignUpload, StopBulkRequest)

router = APIRouter()


# -- shared ----------------------------------------------------------------------------------------
@dataclass
class _Ctx:
    settings: Settings
    redis: redis.Redis

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.smsc_namespace)

    def campaigns(self) -> Campaigns:
        return Campaigns(self.redis, self.keys)

    def stoplist(self) -> StopList:
        return StopList(self.redis, self.keys, region=self.settings.smsc_default_region)


async def _ctx(request: Request) -> _Ctx:
    return _Ctx(request.app.state.settings, request.app.state.redis)


Ctx = Annotated[_Ctx, Depends(_ctx)]
Read = Annotated[Principal, Depends(require_read)]
Full = Annotated[Principal, Depends(require_full)]

_DOMAIN = (ValueError, CostError, ConfigError, redis.ConnectionError, redis.TimeoutError)


@contextmanager
def _domain(rejected: RejectedRows | None = None, *, rename: tuple[str, str] | None = None) -> Iterator[None]:
    """The domain's errors as problems (a bug stays a bug); ``rename``: a temporary path shown as the
    upload's name."""
    try:
        yield
    except ApiProblem:
        raise
    except _DOMAIN as exc:
        p = problem_of(exc, rejected=rejected)
        if rename is not None and p.detail:
            p.detail = p.detail.replace(rename[0], rename[1])
        raise p from None


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(obj, status_code=status, headers=headers)


# -- campaigns: reading a body ----------------------------------------------------------------------
@dataclass
class _Input:
    fields: CampaignRequest | CampaignFields
    kind: str  # phones | rows | pairs | phones_file | table
    path: str | None = None
    name: str = "upload"
    file_sha256: str = ""

    def digest(self) -> str:
        """What the request asks, for its Idempotency-Key: the options and the recipients (the file's bytes)."""
        doc = self.fields.model_dump(mode="json")
        return hashlib.sha256(json.dumps([doc, self.file_sha256], sort_keys=True).encode()).hexdigest()

    @property
    def field(self) -> str:
        return "file" if self.path is not None else self.kind


def _kind_of(m: CampaignRequest) -> str:
    given = [n for n in ("phones", "rows", "pairs") if getattr(m, n) is not None]
    if len(given) != 1:
        raise ApiProblem(422, "give the recipients as one of phones (with message), rows (with template) or "
                              "pairs ([phone, text]), or upload a file (multipart/form-data)", slug="invalid-request")
    kind = given[0]
    if kind == "phones" and (m.message is None or m.template is not None):
        raise ApiProblem(422, "phones take a message (one text for all), not a template", slug="invalid-request")
    if kind == "rows" and (m.template is None or m.message is not None):
        raise ApiProblem(422, "rows take a template (a text per row), not a message", slug="invalid-request")
    if kind == "pairs" and (m.template is not None or m.message is not None):
        raise ApiProblem(422, "pairs carry each recipient's text: give neither message nor template",
                         slug="invalid-request")
    _check_columns(m, table=kind == "rows")
    return kind


def _check_columns(m: CampaignFields, *, table: bool) -> None:
    for name in ("sender_column", "tz_column"):
        if getattr(m, name) is not None and not table:
            raise ApiProblem(422, f"{name} is for rows or a CSV/XLSX file with a template", slug="invalid-request")
    if m.tz_column is not None and not (m.window and m.recipient_time):
        raise ApiProblem(422, "tz_column: each row's time zone is for window with recipient_time",
                         slug="invalid-request")


def _parse_json(body: bytes) -> CampaignRequest:
    try:
        return CampaignRequest.model_validate_json(body)
    except ValidationError as exc:
        raise problem_of(exc) from None


async def _read_input(request: Request) -> _Input:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        body = await request.body()
        m = await run_in_threadpool(_parse_json, body)
        return _Input(m, _kind_of(m))
    if media == "multipart/form-data":
        return await _read_form(request)
    raise ApiProblem(415, "send the campaign as application/json or multipart/form-data (a file in the field "
                          "'file' and the options as fields)", slug="unsupported-media-type")


async def _read_form(request: Request) -> _Input:
    # Starlette's parser (python-multipart) spools the file to a temporary file as it arrives (the body
    # limit counts every byte); here it is copied, in a thread, to a named file the table reader can open.
    async with request.form(max_files=1, max_fields=64, max_part_size=_MAX_FORM_FIELD) as form:
        values: dict[str, str] = {}
        upload: UploadFile | None = None
        for key in set(form.keys()):
            items = form.getlist(key)
            if len(items) > 1:
                raise ApiProblem(422, f"the form field {key!r} is given {len(items)} times", slug="invalid-request")
            item = items[0]
            if key == "file":
                if not isinstance(item, UploadFile):
                    raise ApiProblem(422, "the field 'file' must be a file (a part with a filename)",
                                     slug="invalid-request", errors=[ProblemItem(field="file", reason="not a file")])
                upload = item
            elif isinstance(item, UploadFile):
                raise ApiProblem(422, f"the form field {key!r} must be text, not a file", slug="invalid-request")
            else:
                values[key] = item
        if upload is None:
            raise ApiProblem(422, "upload the recipients in the form field 'file'", slug="invalid-request",
                             errors=[ProblemItem(field="file", reason="missing")])
        try:
            m = CampaignFields.model_validate(values)
        except ValidationError as exc:
            raise problem_of(exc) from None
        if (m.message is None) == (m.template is None):
            raise ApiProblem(422, "with a file give a template (a CSV/XLSX table, a text per row) or a message "
                                  "(a phones file, one text for all)", slug="invalid-request")
        _check_columns(m, table=m.template is not None)
        name = _display_name(upload.filename)
        path, sha = await run_in_threadpool(_save, upload, name, m.template is not None)
    return _Input(m, "table" if m.template is not None else "phones_file", path=path, name=name, file_sha256=sha)


def _display_name(filename: str | None) -> str:
    base = os.path.basename(filename or "").strip()
    return base[:100] if base and base.isprintable() else "upload"


def _save(upload: UploadFile, name: str, table: bool) -> tuple[str, str]:
    """The upload copied to a named temporary file (suffix: ``.xlsx`` for a zip, as the table reader
    decides by it), and the SHA-256 of its bytes."""
    src = upload.file
    src.seek(0)
    head = src.read(4)
    src.seek(0)
    suffix = ".txt"
    if table:
        low = name.lower()
        suffix = os.path.splitext(low)[1] if low.endswith((".xlsx", ".xlsm", ".xltx", ".xltm")) else ".csv"
        if head == b"PK\x03\x04" and suffix == ".csv":
            suffix = ".xlsx"
    sha = hashlib.sha256()
    fd, path = tempfile.mkstemp(prefix="smsc-upload-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(1024 * 1024):
                sha.update(chunk)
                out.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    return path, sha.hexdigest()


# -- campaigns: the intake --------------------------------------------------------------------------
def _intake(ctx: _Ctx, inp: _Input, what: str, campaign_id: str | None = None) -> tuple[int, dict[str, Any]]:
    """``what``: ``enqueue``, ``preview`` (the dry run) or ``quote``; the status and the CLI's object."""
    from worker.api import CampaignOptions
    from worker.smsc.requests import SendOptions

    m = inp.fields
    rejected = RejectedRows(inp.field)
    warnings: list[str] = []
    rename = (inp.path, inp.name) if inp.path is not None else None
    with _domain(rejected, rename=rename):
        send = SendOptions.parse(translit=m.translit, tinyurl=m.tinyurl, flash=m.flash, valid=m.valid,
                                 maxsms=m.maxsms)
        if what == "quote":
            ctx.settings.require_credentials()
            options = CampaignOptions(send=send)
        else:
            options = CampaignOptions(send=send, max_cost=m.max_cost, allow_partial=m.allow_partial,
                                      auto_stop=m.auto_stop)
        kw: dict[str, Any] = {
            "sender": m.sender, "period_h": m.period, "freq_min": m.freq, "at": m.at, "tz_h": m.tz,
            "window": m.window, "recipient_time": m.recipient_time, "batch_size": m.batch_size,
            "on_rejected": rejected, "settings": ctx.settings, "redis_conn": ctx.redis,
            "on_warning": warnings.append, "options": options}
        if what == "enqueue":
            receipt = _call(inp, kw, enqueue=True, campaign_id=campaign_id, strict=m.strict, webhook=m.webhook)
            out = receipt.as_dict()
            out["sms"] = receipt.sms_estimate
            status = 200 if receipt.existing else 201
        else:
            summary = _call(inp, kw, enqueue=False, quote=what == "quote")
            out = _quote_answer(summary) if what == "quote" else _plan_answer(summary, m.tz)
            status = 200
    out["rejected"] = [e.model_dump(exclude_none=True) for e in rejected.items]
    out["warnings"] = warnings
    return status, out


def _call(inp: _Input, kw: dict[str, Any], *, enqueue: bool, **more: Any) -> Any:
    from worker.api import (
        enqueue_campaign,
        enqueue_file,
        enqueue_table,
        preview_campaign,
        preview_file,
        preview_table,
    )

    m = inp.fields
    kw = {**kw, **more}
    cols: dict[str, Any] = {"phone_column": m.phone_column, "sender_column": m.sender_column,
                            "tz_column": m.tz_column}
    if inp.kind == "table":
        assert inp.path is not None and m.template is not None
        return (enqueue_table if enqueue else preview_table)(inp.path, m.template, **cols, **kw)
    if inp.kind == "phones_file":
        assert inp.path is not None and m.message is not None
        return (enqueue_file if enqueue else preview_file)(inp.path, m.message, **kw)
    call = enqueue_campaign if enqueue else preview_campaign
    assert isinstance(m, CampaignRequest)
    if inp.kind == "phones":
        return call(m.phones or [], m.message, **kw)
    if inp.kind == "rows":
        return call(m.rows or [], template=m.template, **cols, **kw)
    return call([tuple(p) for p in m.pairs or []], **kw)


def _plan_answer(summary: dict[str, Any], tz_h: float | None) -> dict[str, Any]:
    """``enqueue --dry-run --json``: the plan, each group's due time in the zone of ``tz`` (Moscow by default)."""
    offset = spreading.tz_utc_offset_min(tz_h or 0.0)
    zone = spreading.zone_label(offset)
    for g in summary["groups"]:
        g["due"] = f"{spreading.format_local(g['due_ms'], offset, seconds=True)} {zone}"
    summary["zone"] = zone
    return summary


def _quote_answer(summary: dict[str, Any]) -> dict[str, Any]:
    """``quote --json``."""
    q = summary["quote"]
    return {"cost": q["cost"], "sms": q["sms"], "recipients": summary["total"], "sampled": q["sampled"],
            "extrapolated": q["extrapolated"], "sms_estimate": summary["sms_estimate"],
            "invalid": summary["invalid"], "duplicates": summary["duplicates"], "suppressed": summary["suppressed"]}


# -- campaigns: Idempotency-Key ----------------------------------------------------------------------
def _idempotent_id(key: str) -> str:
    """The campaign id of an Idempotency-Key: ``k`` and 23 hex digits of its SHA-256 (a valid campaign id)."""
    return "k" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:23]


def _idempotency_key(keys: Keys, key: str) -> str:
    # {ns}:idem:<sha256 of the key> STRING, TTL IDEMPOTENCY_TTL_S: {"campaign_id", "digest"} (written by
    # POST /v1/campaigns). To be listed in scheduler/keys.py by the lead (Keys.idempotency).
    return f"{keys.prefix}idem:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _claim_key(ctx: _Ctx, key: str, cid: str, inp: _Input) -> tuple[str, bool]:
    """Bind ``key`` to (``cid``, the request's digest); the campaign id it is bound to and whether this call
    bound it. 409 when it is bound to another request. (In a thread: a large body's digest is CPU work.)"""
    return _bind(ctx, _idempotency_key(ctx.keys, key), cid, inp.digest())


def _bind(ctx: _Ctx, rkey: str, cid: str, digest: str) -> tuple[str, bool]:
    with _domain():
        if ctx.redis.set(rkey, json.dumps({"campaign_id": cid, "digest": digest}), nx=True, ex=IDEMPOTENCY_TTL_S):
            return cid, True
        raw = ctx.redis.get(rkey)
    if raw is None:  # expired between the two commands: bind it again
        return _bind(ctx, rkey, cid, digest)
    bound = json.loads(raw)
    if bound.get("digest") != digest:
        raise ApiProblem(409, f"this Idempotency-Key was used with another request (campaign "
                              f"{bound.get('campaign_id')}); use a new key for a new campaign", slug="conflict")
    return str(bound["campaign_id"]), False


def _release_key(ctx: _Ctx, key: str) -> None:
    try:
        ctx.redis.delete(_idempotency_key(ctx.keys, key))
    except redis.RedisError:
        pass  # it expires by itself


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key",
    min_length=1, max_length=255, pattern=r"^[ -~]+$",
    description="Makes a retried POST answer the same campaign: without campaign_id, the id is derived from "
                "the key; the same key with another body is a 409.")]


@router.post("/v1/campaigns", status_code=201, response_model=Receipt | Plan, openapi_extra=_campaign_body(),
             summary="Enqueue a campaign (or its dry run)",
             responses={200: {"description": "An existing campaign (the same content), or the dry run's plan.",
                              "model": Receipt | Plan},
                        **_problems(400, 402, 404, 409, 413, 415)})
async def create_campaign(request: Request, ctx: Ctx, _: Full, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    inp = await _read_input(request)
    try:
        if inp.fields.dry_run:
            status, out = await run_in_threadpool(_intake, ctx, inp, "preview")
            return _json(out, status)
        cid, bound = inp.fields.campaign_id, False
        if idempotency_key is not None:
            cid, bound = await run_in_threadpool(_claim_key, ctx, idempotency_key,
                                                 cid or _idempotent_id(idempotency_key), inp)
        try:
            status, out = await run_in_threadpool(_intake, ctx, inp, "enqueue", cid)
        except BaseException:
            if bound and idempotency_key is not None:
                await run_in_threadpool(_release_key, ctx, idempotency_key)  # nothing was queued: free the key
            raise
        return _json(out, status, headers={"Location": f"/v1/campaigns/{out['campaign_id']}"})
    finally:
        if inp.path is not None:
            os.unlink(inp.path)


@router.post("/v1/quote", response_model=Quote, openapi_extra=_campaign_body(),
             summary="The provider's price of a campaign (cost=1: nothing sent, nothing queued)",
             responses=_problems(400, 409, 413, 415, 429, 502))
async def quote(request: Request, ctx: Ctx, _: Read) -> JSONResponse:
    inp = await _read_input(request)
    try:
        status, out = await run_in_threadpool(_intake, ctx, inp, "quote")
        return _json(out, status)
    finally:
        if inp.path is not None:
            os.unlink(inp.path)


# -- campaigns: reading ------------------------------------------------------------------------------
def campaign_status(settings: Settings, camp: Campaigns, cid: str) -> dict[str, Any]:
    """``status --json``: the same function the CLI calls (worker.delivery.report.campaign_status)."""
    return _campaign_status(settings, camp, cid)


@router.get("/v1/campaigns", response_model=list[CampaignSummary], summary="The campaigns, newest last",
            responses=_problems())
def list_campaigns(ctx: Ctx, _: Read) -> JSONResponse:
    with _domain():
        camp = ctx.campaigns()
        return _json([camp.status(cid) for cid in camp.campaign_ids()])


@router.get("/v1/campaigns/{campaign_id}", response_model=CampaignStatus, summary="Where a campaign stands",
            responses=_problems(404))
def get_campaign(campaign_id: CampaignId, ctx: Ctx, _: Read) -> JSONResponse:
    with _domain():
        return _json(campaign_status(ctx.settings, ctx.campaigns(), campaign_id))


def _csv_chunks(rows: Iterable[list[str]]) -> Iterator[bytes]:
    buf = io.StringIO()
    w = csv.writer(buf)  # the CLI's dialect: excel, \r\n
    w.writerow(REPORT_HEADER)
    n = 0
    for row in rows:
        w.writerow(row)
        n += 1
        if n % _CHUNK_ROWS == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


@router.get("/v1/campaigns/{campaign_id}/report", summary="One CSV row per recipient (report --csv), streamed",
            responses={200: {"description": "The report (text/csv).",
                             "content": {"text/csv": {"schema": {"type": "string"}}}}, **_problems(404, 409)})
def report(campaign_id: CampaignId, ctx: Ctx, _: Read) -> StreamingResponse:
    with _domain():
        camp = ctx.campaigns()
        if camp.fields(campaign_id).get("state") == "planning":
            raise ApiProblem(409, f"campaign {campaign_id} is not queued yet; there is nothing to report",
                             slug="conflict")
        rows = report_rows(store_for(ctx.settings, camp), campaign_id)
    # A sync iterator: Starlette pulls each chunk in the thread pool.
    return StreamingResponse(_csv_chunks(rows), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{campaign_id}.csv"'})


# -- campaigns: controls -----------------------------------------------------------------------------
def _control(camp: Campaigns, cid: str, state: str, **more: Any) -> JSONResponse:
    durable = camp.last_durable
    return _json({"campaign_id": cid, "state": state, "durable": str(durable) if durable is not None else None,
                  **more})


@router.post("/v1/campaigns/{campaign_id}/pause", response_model=Control, summary="Pause a campaign",
             responses=_problems(404, 409))
def pause(campaign_id: CampaignId, ctx: Ctx, _: Full) -> JSONResponse:
    with _domain():
        camp = ctx.campaigns()
        return _control(camp, campaign_id, camp.pause(campaign_id))


@router.post("/v1/campaigns/{campaign_id}/resume", response_model=Control, max_body_size=SMALL_BODY,
             summary="Resume a paused campaign (also clears its account's stop or back-off)",
             responses=_problems(404, 409, 413))
def resume(campaign_id: CampaignId, ctx: Ctx, _: Full, body: ResumeRequest | None = None) -> JSONResponse:
    with _domain():
        camp = ctx.campaigns()
        fields = camp.fields(campaign_id)
        warnings = []
        if body is not None and "max_cost" in body.model_fields_set:
            amount = None if body.max_cost in (None, "none") else body.max_cost
            assert amount is None or isinstance(amount, Decimal)
            Budget(camp.r, camp.keys).set_max(campaign_id, None if amount is None else int(amount * 1000))
        elif (fields.get("pause_reason") or "").startswith("budget") and fields.get("max_cost_milli"):
            warnings.append(f"campaign {campaign_id} was paused by its budget: it pauses again before its next batch "
                            "unless you raise it (max_cost)")
        Guards(camp.r, camp.keys).reset_account(fields.get("account") or ctx.settings.account)
        return _control(camp, campaign_id, camp.resume(campaign_id), warnings=warnings)


@router.post("/v1/campaigns/{campaign_id}/cancel", response_model=Control,
             summary="Cancel a campaign: pending recipients become cancelled", responses=_problems(404, 409))
def cancel(campaign_id: CampaignId, ctx: Ctx, _: Full) -> JSONResponse:
    with _domain():
        camp = ctx.campaigns()
        res = camp.cancel(campaign_id)
        return _control(camp, campaign_id, res["state"], cancelled_now=res["cancelled_now"])


@router.post("/v1/campaigns/{campaign_id}/retry", status_code=201, response_model=Receipt, max_body_size=SMALL_BODY,
             summary="A follow-up campaign of the recipients that failed (retry --json)",
             responses={200: {"description": "An existing follow-up, or nothing to retry.",
                              "model": Receipt | NothingToRetry}, **_problems(402, 404, 409, 413)})
def retry(campaign_id: CampaignId, ctx: Ctx, _: Full, body: RetryRequest | None = None) -> JSONResponse:
    from worker.retry import RetryStats, parse_codes, parse_states, retry_campaign

    b = body or RetryRequest()
    stats = RetryStats()
    with _domain():
        receipt = retry_campaign(campaign_id, codes=parse_codes(b.codes), states=parse_states(b.states),
                                 settings=ctx.settings, redis_conn=ctx.redis, campaign_id=b.campaign_id,
                                 max_cost=b.max_cost, allow_partial=b.allow_partial, stats=stats)
    if receipt is None:
        return _json({"retried": 0, "retry_of": campaign_id, **stats.as_dict()})
    out = receipt.as_dict()
    out["sms"] = receipt.sms_estimate
    out["rejected"], out["warnings"] = [], []
    return _json(out, 200 if receipt.existing else 201, headers={"Location": f"/v1/campaigns/{receipt.campaign_id}"})


# -- the stop list -----------------------------------------------------------------------------------
def _entry(store: StopList, phone: str) -> dict[str, Any]:
    """``stoplist check --json``."""
    e = store.entry(phone)
    return {"phone": phone, "stopped": e is not None, "reason": e.reason if e else None,
            "source": e.source if e else None, "added_ms": e.added_ms if e else None}


def _stop_phone(store: StopList, raw: str) -> str:
    try:
        return "+" + stop_key(raw, store.region)
    except InvalidPhone as exc:
        raise ApiProblem(422, f"{exc.reason}", slug="invalid-request",
                         errors=[ProblemItem(field="phone", reason=exc.reason)]) from None


@router.get("/v1/stoplist/{phone}", response_model=StopEntry, summary="Whether a number is stopped",
            responses=_problems())
def stoplist_check(phone: PhonePath, ctx: Ctx, _: Read) -> JSONResponse:
    with _domain():
        store = ctx.stoplist()
        return _json(_entry(store, _stop_phone(store, phone)))


@router.put("/v1/stoplist/{phone}", response_model=StopEntry, status_code=201, max_body_size=SMALL_BODY,
            summary="Stop a number (201; 200 when it was stopped already: the entry is kept as it was)",
            responses={200: {"description": "Stopped already.", "model": StopEntry}, **_problems(413)})
def stoplist_put(phone: PhonePath, ctx: Ctx, _: Full, body: StopEntryRequest | None = None) -> JSONResponse:
    with _domain():
        store = ctx.stoplist()
        number = _stop_phone(store, phone)
        reason = body.reason if body is not None else ""
        check_reason(reason)
        added = store.add([number], reason=reason, source="manual") == 1
        return _json({**_entry(store, number), "added": added}, 201 if added else 200)


@router.delete("/v1/stoplist/{phone}", response_model=StopEntry, summary="Unstop a number (any spelling)",
               responses=_problems())
def stoplist_delete(phone: PhonePath, ctx: Ctx, _: Full) -> JSONResponse:
    with _domain():
        store = ctx.stoplist()
        number = _stop_phone(store, phone)
        removed = store.remove([number]) == 1
        return _json({**_entry(store, number), "removed": removed})


def _bulk(ctx: _Ctx, body: bytes) -> dict[str, Any]:
    try:
        b = StopBulkRequest.model_validate_json(body)
    except ValidationError as exc:
        raise problem_of(exc) from None
    with _domain():
        check_reason(b.reason)
        store = ctx.stoplist()
        phones: list[str] = []
        rejected: list[dict[str, Any]] = []
        for i, raw in enumerate(b.phones, 1):
            try:
                phones.append(normalize_phone(str(raw), store.region))
            except InvalidPhone as exc:
                if len(rejected) < MAX_NAMED_ERRORS:
                    rejected.append(ProblemItem(line=i, field="phones", reason=exc.reason).model_dump(
                        exclude_none=True))
        invalid = len(b.phones) - len(phones)
        if b.action == "add":
            added = store.add(phones, reason=b.reason, source="import")
            out: dict[str, Any] = {"added": added, "already": len(phones) - added}
        else:
            removed = store.remove(phones)
            out = {"removed": removed, "absent": len(phones) - removed}
        return {**out, "invalid": invalid, "total": store.count(), "rejected": rejected}


@router.post("/v1/stoplist", response_model=StopBulk, openapi_extra=_json_body("StopBulkRequest"),
             summary="Stop or unstop many numbers (stoplist add|remove --json); invalid ones are named",
             responses=_problems(413, 415))
async def stoplist_bulk(request: Request, ctx: Ctx, _: Full) -> JSONResponse:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiProblem(415, "send application/json: {\"action\": \"add\", \"phones\": [...]}",
                         slug="unsupported-media-type")
    body = await request.body()
    return _json(await run_in_threadpool(_bulk, ctx, body))


# -- health --------------------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"]


@router.get("/healthz", response_model=Health, summary="The server and its Redis answer (no token needed)",
            responses={c: v for c, v in _problems().items() if c in (400, 413, 503)})
def health(ctx: Ctx) -> JSONResponse:
    with _domain():
        ctx.redis.ping()
    return _json({"status": "ok"})
