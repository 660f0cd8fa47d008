"""The web dashboard (issue 12): server-rendered pages under ``/ui``, a few lines of JS for live progress.

``router`` (a FastAPI ``APIRouter``) is what :func:`worker.http.app.create_app` mounts; :func:`dashboard_app`
is the same pages alone (``uvicorn --factory worker.http.dashboard:dashboard_app``). Pages:

- ``/ui/login`` — paste a token of ``SMSC_API_TOKENS``; ``/ui/logout``;
- ``/ui`` — the campaigns, newest first (50 a page), with live progress;
- ``/ui/c/<id>`` — one campaign: counters, the delivery funnel, failures by code and reason, the
  guards' deferrals, and the controls (pause, resume, cancel, retry) and the report (CSV);
- ``/ui/new`` — a new campaign: a CSV/XLSX and a template, or numbers and a message, its options;
  *preview* shows the dry run's plan, *start* enqueues it.

**Auth.** :mod:`worker.http.auth`'s: the login form posts the token, which goes into its cookie
(``smsc_token``: HttpOnly, SameSite=Strict, Secure over HTTPS, gone when the browser closes); every
request checks it against ``SMSC_API_TOKENS`` again with the API's :class:`~worker.http.auth.Tokens` (no
session state on the server: any number of server processes serve one operator, and a token removed from
the settings ends its sessions at the restart). The token is never written into a page, a URL or a log
line. ``read`` tokens see the pages and the report; ``full`` tokens may act (new campaigns, the
controls): a ``read`` session gets 403 on every POST, and sees no button.

**CSRF.** Besides ``SameSite=Strict``, every form carries a per-session token: the session cookie has a
random nonce beside it (``smsc_csrf``, HttpOnly), and the form's ``csrf`` field is the HMAC-SHA256 of that
nonce under the session's token — so a forged form needs the token itself, not just a cookie set by a
sibling site. The login form (no token yet) carries the nonce itself (double submit). A POST whose
``Origin`` is another site is refused too.

**Cheap reads.** The list is one ``ZREVRANGE`` and one pipelined ``HMGET`` per page; a campaign's live
part (polled every 2 s) reads its hash, its delivery hash, its login's hash and slots, and the ``state``
and ``due`` of at most :data:`BATCH_SCAN` of its batches. Failures by code and reason come from the report
rows of at most the first :data:`ROW_SCAN` recipients (the page says how many it read), read only when the
page loads, never by the poll; failed deliveries come from the delivery counters (complete).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import jinja2
import redis
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile

from scheduler import spreading
from scheduler.campaigns import FINAL_STATES, CampaignError, Campaigns
from scheduler.enqueue import new_campaign_id
from scheduler.guards import Guards
from scheduler.health import Thresholds, health
from scheduler.intake import IntakeError, Rejected
from scheduler.keys import CAMPAIGN_ID_RE, Keys, batch_ref
from scheduler.keys import text as _s
from scheduler.ledger import server_time_ms
from worker.delivery.report import REPORT_COLUMNS, campaign_state, delivery_status, report_rows, store_for
from worker.http.auth import COOKIE_NAME, Tokens, clear_token_cookie, set_token_cookie
from worker.settings import ConfigError, Settings, get_settings

__all__ = ["BATCH_SCAN", "PAGE_SIZE", "ROW_SCAN", "ROW_SCAN_BATCHES", "dashboard_app", "router"]

#: Campaigns a page of the list shows.
PAGE_SIZE: Final = 50
#: Batches of one campaign whose ``state`` and ``due`` the live part reads (the guards' deferrals):
#: 500 small HMGETs in one pipeline, about a millisecond of Redis, every 2 s per open page.
BATCH_SCAN: Final = 500
#: Report rows read for the failures by code and reason: 20,000 rows are ~40 batches of 500, about a
#: megabyte from Redis, once per page load — a sample of a larger campaign, and the page says so.
ROW_SCAN: Final = 20_000
#: ... and at most this many batches for them (a fresh campaign's batches have no rows yet).
ROW_SCAN_BATCHES: Final = 400
#: Rows of an upload shown rendered in the preview, and rejected lines named there.
PREVIEW_ROWS: Final = 10
REJECTED_SHOWN: Final = 50
#: How long an uploaded file waits between its preview and its start.
UPLOAD_TTL_S: Final = 3600
CSRF_COOKIE: Final = "smsc_csrf"
_HERE = Path(__file__).resolve().parent
_STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_TABLE_SUFFIXES = (".csv", ".xlsx", ".tsv")
_CONTROLS = ("pause", "resume", "cancel", "retry")
_SECURITY_HEADERS = {
    # No inline script or style anywhere: the pages load /ui/static only.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


# -- formatting (template filters) -----------------------------------------------------------------
def _when(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(n: int | None) -> str:
    return "—" if n is None else f"{n:,}".replace(",", "\u202f")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}" if whole else "0"


_env.filters.update(when=_when, num=_num)
_env.globals.update(pct=_pct)


# -- settings, Redis ---------------------------------------------------------------------------------
def _settings(request: Request) -> Settings:
    """The app's settings (``create_app(settings)`` keeps them on ``app.state.settings``), else the process's."""
    s = getattr(request.app.state, "settings", None)
    if isinstance(s, Settings):
        return s
    try:
        return get_settings()
    except ConfigError as exc:
        raise HTTPException(500, str(exc)) from None


def _redis(request: Request, s: Settings) -> redis.Redis:
    """One client (its connection pool) per app: the API's ``app.state.redis`` when it has one."""
    r = getattr(request.app.state, "redis", None)
    if isinstance(r, redis.Redis):
        return r
    r = getattr(request.app.state, "dashboard_redis", None)
    if not isinstance(r, redis.Redis):
        from worker.runtime import redis_client

        r = redis_client(s.redis_url)
        request.app.state.dashboard_redis = r
    return r


def _campaigns(request: Request, s: Settings) -> Campaigns:
    return Campaigns(_redis(request, s), Keys(s.smsc_namespace))


# -- auth --------------------------------------------------------------------------------------------
def _tokens(request: Request, s: Settings) -> Tokens:
    """The API's tokens (``create_app`` keeps them on ``app.state.tokens``), else the settings' own."""
    tokens = getattr(request.app.state, "tokens", None)
    if not isinstance(tokens, Tokens):
        try:
            tokens = Tokens.from_settings(s)
        except ConfigError as exc:
            raise HTTPException(500, str(exc)) from None
        request.app.state.tokens = tokens
    return tokens


@dataclass(frozen=True)
class Session:
    """A logged-in browser: its token's scope, and the CSRF token its forms carry."""

    scope: str
    csrf: str

    @property
    def can_act(self) -> bool:
        return self.scope == "full"


def _csrf_of(token: str, nonce: str) -> str:
    return hmac.new(token.encode(), b"smsc-dashboard-csrf:" + nonce.encode(), hashlib.sha256).hexdigest()


def _session(request: Request, s: Settings) -> Session | None:
    """The session of the token cookie (``worker.http.auth``'s, checked by its :class:`Tokens`)."""
    token = request.cookies.get(COOKIE_NAME, "")
    nonce = request.cookies.get(CSRF_COOKIE, "")
    principal = _tokens(request, s).authenticate(token) if token and nonce else None
    if principal is None:
        return None
    request.state.principal = principal  # the API's logs name the caller by its token_id
    return Session(principal.scope, _csrf_of(token, nonce))


def _require(request: Request, s: Settings, *, act: bool = False, fragment: bool = False) -> Session:
    """The session, or: a redirect to the login page (a page), 401 (a live fragment), 403 (a read token
    asking to act)."""
    sess = _session(request, s)
    if sess is None:
        if fragment:
            raise HTTPException(401, "log in again")
        target = "/ui"
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(303, headers={"Location": "/ui/login?next=" + quote(target, safe="")})
    if act and not sess.can_act:
        raise HTTPException(403, "this token may read, not act (its scope is read)")
    return sess


def _check_post(request: Request, sess_csrf: str, form: FormData | Mapping[str, Any]) -> None:
    """A POST from our own page: same origin (when the browser says), and the form's CSRF token."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise HTTPException(403, "a form from another site")
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), sess_csrf.encode()):
        raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")


def _safe_next(target: str | None) -> str:
    """Only a path of ours after the login (never another site: ``//evil``, ``/\\evil``)."""
    if target and target.startswith("/ui") and not target.startswith(("//", "/\\")) and "\\" not in target:
        return target
    return "/ui"


def _cookie(response: Response, request: Request, name: str, value: str) -> None:
    """A session cookie (gone when the browser closes, as the token's), HttpOnly, SameSite=Strict."""
    response.set_cookie(name, value, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")


# -- rendering ---------------------------------------------------------------------------------------
def _render(name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("session", None)
    ctx.setdefault("title", "")
    return HTMLResponse(_env.get_template(name).render(**ctx), status_code=status_code, headers=_SECURITY_HEADERS)


def _error(session: Session | None, status_code: int, message: str) -> HTMLResponse:
    return _render("error.html", status_code, session=session, title="error", message=message)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui/static/{name}")
def static(name: str) -> FileResponse:
    if name not in _STATIC:
        raise HTTPException(404, "no such file")
    return FileResponse(_HERE / "static" / name, media_type=_STATIC[name],
                        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})


def _login_form(request: Request, status_code: int, target: str, message: str | None) -> HTMLResponse:
    """The login form with a fresh nonce (its CSRF token: the same value in the form and in a cookie)."""
    nonce = secrets.token_urlsafe(24)
    resp = _render("login.html", status_code, title="log in", csrf=nonce, next=target, message=message)
    _cookie(resp, request, CSRF_COOKIE, nonce)
    return resp


@router.get("/ui/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return _login_form(request, 200, _safe_next(next), None)


@router.post("/ui/login", response_model=None)
async def login(request: Request) -> Response:
    s = _settings(request)
    form = await request.form(max_files=0, max_fields=10, max_part_size=16 * 1024)
    try:
        _check_post(request, request.cookies.get(CSRF_COOKIE, "") or "-", form)
    except HTTPException as exc:  # a login page from before (another tab replaced its nonce): a fresh one
        return _login_form(request, 403, "/ui", str(exc.detail))
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    nxt = form.get("next")
    target = _safe_next(nxt if isinstance(nxt, str) else None)
    if not token or _tokens(request, s).authenticate(token) is None:
        return _login_form(request, 401, target, "this token is not one of SMSC_API_TOKENS")
    resp = RedirectResponse(target, status_code=303, headers=_SECURITY_HEADERS)
    set_token_cookie(resp, token, secure=request.url.scheme == "https")
    _cookie(resp, request, CSRF_COOKIE, secrets.token_urlsafe(24))  # a new nonce per session
    return resp


@router.post("/ui/logout", response_model=None)
async def logout(request: Request) -> Response:
    s = _settings(request)
    sess = _session(request, s)
    if sess is not None:
        _check_post(request, sess.csrf, await request.form(max_files=0, max_fields=10))
    resp = RedirectResponse("/ui/login", status_code=303, headers=_SECURITY_HEADERS)
    clear_token_cookie(resp)
    resp.delete_cookie(CSRF_COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return resp


# -- the campaign list -------------------------------------------------------------------------------
_LIST_FIELDS = ("state", "total", "sent", "failed", "cancelled", "account", "created_ms", "pause_reason",
                "personal", "sender", "sms", "sms_estimate", "parts", "retry_of", "account_name", "priority")


def _int(v: object) -> int:
    try:
        return int(_s(v)) if v is not None and _s(v) != "" else 0
    except ValueError:
        return 0


def _list_page(r: redis.Redis, keys: Keys, page: int) -> dict[str, Any]:
    """One page of the list: one ZREVRANGE (and ZCARD), then one pipelined HMGET per campaign."""
    pipe = r.pipeline(transaction=False)
    pipe.zcard(keys.campaigns)
    pipe.zrevrange(keys.campaigns, page * PAGE_SIZE, page * PAGE_SIZE + PAGE_SIZE - 1)
    known, ids = pipe.execute()
    pipe = r.pipeline(transaction=False)
    cids = [_s(x) for x in ids]
    for cid in cids:
        pipe.hmget(keys.campaign(cid), _LIST_FIELDS)
    rows = []
    for cid, values in zip(cids, pipe.execute() if cids else [], strict=True):
        f = dict(zip(_LIST_FIELDS, values, strict=True))
        total, sent, failed, cancelled = (_int(f[x]) for x in ("total", "sent", "failed", "cancelled"))
        state = _s(f["state"] or b"")
        rows.append({"id": cid, "state": state, "total": total, "sent": sent, "failed": failed,
                     "cancelled": cancelled, "pending": total - sent - failed - cancelled,
                     "done": sent + failed + cancelled,
                     "account": _s(f["account_name"] or b"") or "default",
                     "priority": _s(f["priority"] or b"") or "normal",
                     "created_ms": _int(f["created_ms"]), "reason": _s(f["pause_reason"] or b""),
                     "personal": _s(f["personal"] or b"") == "1", "retry_of": _s(f["retry_of"] or b""),
                     "final": state in FINAL_STATES})
    return {"rows": rows, "known": int(known), "page": page, "pages": max(1, -(-int(known) // PAGE_SIZE)),
            "live": any(not row["final"] for row in rows)}


@router.get("/ui", response_class=HTMLResponse)
def campaigns_page(request: Request, page: int = 0) -> HTMLResponse:
    s = _settings(request)
    sess = _require(request, s)
    camp = _campaigns(request, s)
    data = _list_page(camp.r, camp.keys, max(page, 0))
    return _render("campaigns.html", session=sess, title="campaigns", **data)


@router.get("/ui/fragments/campaigns", response_class=HTMLResponse)
def campaigns_fragment(request: Request, page: int = 0) -> HTMLResponse:
    s = _settings(request)
    sess = _require(request, s, fragment=True)
    camp = _campaigns(request, s)
    return _render("_campaign_rows.html", session=sess, **_list_page(camp.r, camp.keys, max(page, 0)))


# -- one campaign ------------------------------------------------------------------------------------
def _batches(r: redis.Redis, keys: Keys, cid: str, batches: int, now_ms: int) -> dict[str, Any]:
    """The ``state`` and ``due`` of the campaign's first :data:`BATCH_SCAN` batches: what waits, and why.

    A queued batch due later than now is *deferred*: its plan (a spread, a window, a later start), a
    flood-guard hold, an identical request within the minute or an account's back-off set its due time
    (the ledger keeps the time, not which guard: the workers' log names it)."""
    n = min(batches, BATCH_SCAN)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.hmget(keys.batch(batch_ref(cid, i)), "state", "due", "settle", "quarantined")
    by_state: dict[str, int] = {}
    deferred, settle, quarantined, next_due = 0, 0, 0, 0
    for state, due, st, q in pipe.execute() if n else []:
        name = _s(state or b"") or "?"
        by_state[name] = by_state.get(name, 0) + 1
        due_ms = _int(due)
        if name == "queued" and due_ms > now_ms:
            deferred += 1
            next_due = due_ms if not next_due else min(next_due, due_ms)
        settle += _s(st or b"") == "1"
        quarantined += bool(q)
    return {"scanned": n, "of": batches, "by_state": dict(sorted(by_state.items())), "deferred": deferred,
            "next_due_ms": next_due or None, "settle": settle, "quarantined": quarantined}


def _guards(r: redis.Redis, keys: Keys, st: Mapping[str, Any], configured_cap: int, now_ms: int) -> dict[str, Any]:
    """The campaign's login as the guards see it: state, back-off, quiet time, slots in use of the cap."""
    account = st.get("account") or ""
    if not account:
        return {"account": "", "known": False}
    try:
        a = Guards(r, keys).account_state(account)
        pipe = r.pipeline(transaction=False)
        pipe.zcount(keys.inflight(account), now_ms + 1, "+inf")
        pipe.zcount(keys.status_inflight(account), now_ms + 1, "+inf")
        slots, status_slots = pipe.execute()
    except ValueError:  # not a login id: no guard state kept under it
        return {"account": account, "known": False}
    return {"account": account, "known": True, "state": a.state.value, "reason": a.reason,
            "backoff_until_ms": a.backoff_until_ms if a.backoff_until_ms > now_ms else None,
            "quiet_until_ms": a.quiet_until_ms if a.quiet_until_ms > now_ms else None,
            "errors_in_a_row": a.errors_in_a_row, "verified": a.verified, "slots": int(slots),
            "status_slots": int(status_slots), "cap": st.get("account_cap", configured_cap),
            "configured_cap": configured_cap, "adaptive_cap": a.adaptive_cap, "backoffs": st.get("account_backoffs", 0),
            "last_error": a.last_error}


def _live(request: Request, s: Settings, cid: str) -> dict[str, Any]:
    camp = _campaigns(request, s)
    try:
        st = camp.status(cid, configured_cap=s.smsc_concurrency)
    except CampaignError:
        raise HTTPException(404, f"no campaign with id {cid!r}") from None
    now = server_time_ms(camp.r)
    delivery = delivery_status(store_for(s, camp), cid, sent=st["sent"])
    st["delivery_state"] = campaign_state(st["state"], delivery)
    done = st["sent"] + st["failed"] + st["cancelled"]
    final = st["state"] in FINAL_STATES and st["pending"] == 0
    findings = [f.as_dict() for f in health(camp.r, camp.keys, campaign_ids=[cid], now_ms=now,
                                            thresholds=Thresholds.from_settings(s))]
    return {"c": st, "delivery": delivery, "done": done, "now_ms": now, "health": findings,
            "final": final and delivery.get("state") in ("delivered_final", ""),
            "batches": _batches(camp.r, camp.keys, cid, st["batches"], now),
            "guards": _guards(camp.r, camp.keys, st, s.smsc_concurrency, now),
            "controls": _controls(st)}


def _controls(st: Mapping[str, Any]) -> dict[str, bool]:
    state = st["state"]
    return {"pause": state in ("queued", "running"), "resume": state == "paused",
            "cancel": state not in FINAL_STATES and state != "planning",
            "retry": state in FINAL_STATES, "report": state != "planning"}


def _failures(r: redis.Redis, keys: Keys, cid: str, batches: int) -> dict[str, Any]:
    """Failed and cancelled recipients among the report rows of the first :data:`ROW_SCAN` recipients (of
    at most the first :data:`ROW_SCAN_BATCHES` batches), by outcome, code and reason: the batches' ``rows``
    fields, twenty batches a round trip."""
    groups: dict[tuple[str, str, str], int] = {}
    read = 0
    scanned = min(batches, ROW_SCAN_BATCHES)
    for lo in range(0, scanned, 20):
        if read >= ROW_SCAN:
            break
        pipe = r.pipeline(transaction=False)
        for i in range(lo, min(scanned, lo + 20)):
            pipe.hget(keys.batch(batch_ref(cid, i)), "rows")
        for rows in pipe.execute():
            for line in _s(rows or b"").splitlines():
                if read >= ROW_SCAN:
                    break
                read += 1
                row = [*line.split(";", 6), "", "", "", "", "", "", ""][:7]
                if row[1] in ("failed", "cancelled"):
                    key = (row[1], row[5], row[6])
                    groups[key] = groups.get(key, 0) + 1
    top = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))[:30]
    return {"groups": [{"state": k[0], "code": k[1], "reason": k[2], "n": n} for k, n in top],
            "more": max(len(groups) - len(top), 0), "read": read, "limit": ROW_SCAN,
            "sampled": read >= ROW_SCAN or scanned < batches}


@router.get("/ui/c/{cid}", response_class=HTMLResponse)
def campaign_page(request: Request, cid: str, msg: str | None = None) -> HTMLResponse:
    s = _settings(request)
    sess = _require(request, s)
    if not CAMPAIGN_ID_RE.match(cid):
        return _error(sess, 404, f"no campaign with id {cid!r}")
    try:
        live = _live(request, s, cid)
    except HTTPException as exc:
        return _error(sess, exc.status_code, str(exc.detail))
    camp = _campaigns(request, s)
    failures = None if live["c"]["state"] == "planning" else _failures(camp.r, camp.keys, cid, live["c"]["batches"])
    notice = _NOTICES.get(msg or "")
    return _render("campaign.html", session=sess, title=f"campaign {cid}", cid=cid, failures=failures,
                   notice=notice, **live)


@router.get("/ui/fragments/c/{cid}", response_class=HTMLResponse)
def campaign_fragment(request: Request, cid: str) -> HTMLResponse:
    s = _settings(request)
    sess = _require(request, s, fragment=True)
    return _render("_campaign_live.html", session=sess, cid=cid, **_live(request, s, cid))


_NOTICES = {"paused": "paused: what is in flight finishes, the rest waits",
            "resumed": "resumed (the account's stop or back-off cleared too)",
            "cancelled": "cancelled: pending recipients are cancelled, what is in flight settles",
            "started": "enqueued: the workers send it as beat dispatches it",
            "existing": "already enqueued: this is the campaign that upload started"}


@router.post("/ui/c/{cid}/{action}", response_model=None)
async def control(request: Request, cid: str, action: str) -> Response:
    s = _settings(request)
    sess = _require(request, s, act=True)
    form = await request.form(max_files=0, max_fields=20)
    _check_post(request, sess.csrf, form)
    if action not in _CONTROLS:
        return _error(sess, 404, f"no such control: {action!r}")
    try:
        target = await run_in_threadpool(_act, request, s, cid, action, form)
    except (CampaignError, ValueError) as exc:
        return _error(sess, 409 if isinstance(exc, CampaignError) else 422, f"{action} {cid}: {exc}")
    return RedirectResponse(target, status_code=303, headers=_SECURITY_HEADERS)


def _act(request: Request, s: Settings, cid: str, action: str, form: FormData) -> str:
    camp = _campaigns(request, s)
    here = f"/ui/c/{quote(cid)}"
    if action == "pause":
        camp.pause(cid)
        return here + "?msg=paused"
    if action == "cancel":
        camp.cancel(cid)
        return here + "?msg=cancelled"
    if action == "resume":
        from scheduler.budget import Budget

        fields = camp.fields(cid)
        raw = form.get("max_cost")
        if isinstance(raw, str) and raw.strip():
            amount = None if raw.strip().lower() == "none" else _money(raw, "max cost")
            Budget(camp.r, camp.keys).set_max(cid, None if amount is None else int(amount * 1000))
        Guards(camp.r, camp.keys).reset_account(fields.get("account") or s.account)
        camp.resume(cid)
        return here + "?msg=resumed"
    from worker.retry import retry_campaign

    receipt = retry_campaign(cid, settings=s, redis_conn=camp.r)
    if receipt is None:
        raise ValueError("no recipient is left to retry (none failed, or every one is retried already)")
    return f"/ui/c/{quote(receipt.campaign_id)}?msg=started"


@router.get("/ui/c/{cid}/report.csv", response_model=None)
def report(request: Request, cid: str) -> Response:
    """The report as ``smsc-mailer report --csv`` writes it, streamed (a million rows in flat memory)."""
    s = _settings(request)
    sess = _require(request, s)
    camp = _campaigns(request, s)
    try:
        if camp.fields(cid).get("state") == "planning":
            return _error(sess, 409, f"campaign {cid} is not queued yet: there is nothing to report")
    except CampaignError as exc:
        return _error(sess, 404, str(exc))

    def lines() -> Iterator[str]:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["phone", "state", "provider_id", "parts", "cost", "error_code", "reason", *REPORT_COLUMNS])
        for n, row in enumerate(report_rows(store_for(s, camp), cid), start=1):
            w.writerow(row)
            if n % 500 == 0:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    name = re.sub(r"[^A-Za-z0-9_.-]", "_", cid)
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={**_SECURITY_HEADERS,
                                      "Content-Disposition": f'attachment; filename="report-{name}.csv"'})


# -- a new campaign ------------------------------------------------------------------------------------
_FORM_FIELDS = ("text", "phones", "phone_column", "sender_column", "tz_column", "sender", "translit", "tinyurl",
                "flash", "valid", "maxsms", "window", "recipient_time", "at", "tz", "period", "freq", "max_cost",
                "allow_partial", "auto_stop", "quote", "strict", "campaign_id")


def _money(value: str, what: str) -> Decimal:
    try:
        amount = Decimal(value.strip().replace(",", "."))
    except InvalidOperation:
        raise ValueError(f"{what} {value!r}: give an amount such as 150 or 99.50") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"{what} {value!r}: give a positive amount")
    return amount


def _number(v: str, what: str, kind: Callable[[str], Any]) -> Any:
    if not v.strip():
        return None
    try:
        return kind(v.strip().replace(",", "."))
    except ValueError:
        raise ValueError(f"{what} {v!r}: give a number") from None


@dataclass
class NewCampaign:
    """The new-campaign form, checked: every value as typed (the preview page carries them on)."""

    values: dict[str, str]
    upload: str = ""
    filename: str = ""
    kind: str = ""  # "table" (CSV/XLSX + template) or "phones" (numbers + message)
    campaign_id: str = ""

    @classmethod
    def of(cls, form: FormData) -> NewCampaign:
        values = {}
        for name in _FORM_FIELDS:
            v = form.get(name)
            values[name] = v if isinstance(v, str) else ""
        up = form.get("upload")
        nc = cls(values=values, upload=up if isinstance(up, str) and _UPLOAD_ID.match(up) else "")
        for name in ("kind", "filename"):
            v = form.get(name)
            setattr(nc, name, v if isinstance(v, str) else "")
        return nc

    def flag(self, name: str) -> bool:
        return self.values.get(name, "") in ("1", "on", "yes", "true")

    def kwargs(self, s: Settings) -> dict[str, Any]:
        """The keyword arguments of :mod:`worker.api`'s enqueue and preview; ValueError (one line)."""
        from worker.api import CampaignOptions
        from worker.smsc.requests import SendOptions

        v = self.values
        send = SendOptions.parse(translit=v["translit"] or 0, tinyurl=self.flag("tinyurl"), flash=self.flag("flash"),
                                 valid=v["valid"].strip() or None, maxsms=v["maxsms"].strip() or None)
        max_cost = _money(v["max_cost"], "max cost") if v["max_cost"].strip() else None
        opts = CampaignOptions(send=send, max_cost=max_cost, allow_partial=self.flag("allow_partial"),
                               auto_stop=self.flag("auto_stop"))
        window = v["window"].strip() or None
        recipient_time = self.flag("recipient_time")
        if recipient_time and window is None:
            raise ValueError("recipient's time: give a window (e.g. 9-22) to apply in each recipient's zone")
        kw: dict[str, Any] = {
            "sender": v["sender"].strip() or None, "window": window, "recipient_time": recipient_time,
            "at": v["at"].strip() or None, "tz_h": _number(v["tz"], "time zone", float),
            "period_h": _number(v["period"], "period", float), "freq_min": _number(v["freq"], "every", int),
            "options": opts, "settings": s,
        }
        if self.kind == "table":
            tz_column = v["tz_column"].strip() or None
            if tz_column is not None and not (window and recipient_time):
                raise ValueError("time zone column: each row's zone is for a window with the recipient's time")
            kw.update(phone_column=v["phone_column"].strip() or "phone",
                      sender_column=v["sender_column"].strip() or None, tz_column=tz_column)
        return kw


def _uploads_dir() -> Path:
    """Where uploads wait between their preview and their start (this user's, mode 0700); older than
    :data:`UPLOAD_TTL_S` ones are removed at each new upload. One server's disk: behind several
    servers, route an operator to one (or preview and start on the same one)."""
    d = Path(tempfile.gettempdir()) / f"smsc-dashboard-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    st = d.lstat()
    if d.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ValueError(f"{d}: not a private folder of this user; remove it and try again")
    return d


def _staged(nc: NewCampaign) -> Path:
    """The staged upload of the form (its kind from its own name, not from the form); ValueError when gone."""
    if _UPLOAD_ID.match(nc.upload):
        for p in _uploads_dir().glob(nc.upload + ".*"):
            nc.kind = "phones" if p.suffix == ".txt" else "table"
            return p
    raise ValueError("the upload is gone (kept for an hour): upload the file again")


def _sweep_uploads(now: float) -> None:
    for p in _uploads_dir().iterdir():
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > UPLOAD_TTL_S:
                p.unlink()


def _stage(nc: NewCampaign, file: UploadFile | None, limit: int) -> None:
    """Keep the upload (or the typed numbers) on disk under a random id for the start."""
    _sweep_uploads(time.time())
    if (file is None or not file.filename) and not nc.values["phones"].strip() and nc.upload:
        _staged(nc)  # previewed again with other options: the same upload
        return
    upload = secrets.token_urlsafe(18)
    if file is not None and file.filename:
        suffix = Path(file.filename).suffix.lower()
        if suffix not in (*_TABLE_SUFFIXES, ".txt"):
            raise ValueError(f"{file.filename}: give a .csv or .xlsx file (a text per row), or a .txt of numbers")
        nc.kind = "phones" if suffix == ".txt" else "table"
        nc.filename = file.filename
        dest = _uploads_dir() / (upload + suffix)
        with dest.open("wb") as out:
            copied = 0
            while chunk := file.file.read(1 << 20):
                copied += len(chunk)
                if copied > limit:
                    out.close()
                    dest.unlink()
                    raise ValueError(f"{file.filename}: larger than SMSC_API_MAX_UPLOAD ({limit:,} bytes)")
                out.write(chunk)
        if copied == 0:
            dest.unlink()
            raise ValueError(f"{file.filename}: the file is empty")
    elif nc.values["phones"].strip():
        nc.kind, nc.filename = "phones", "numbers typed in the form"
        (_uploads_dir() / (upload + ".txt")).write_text(nc.values["phones"], encoding="utf-8")
    else:
        raise ValueError("give the recipients: a CSV/XLSX file, a .txt of numbers, or numbers in the box")
    nc.upload = upload
    nc.values["phones"] = ""  # on disk now: not carried in the page again


class _Collect:
    """The dry run's hooks: every rejected line counted, the first :data:`REJECTED_SHOWN` kept."""

    def __init__(self) -> None:
        self.rejected: list[Rejected] = []
        self.invalid = 0
        self.warnings: list[str] = []

    def on_rejected(self, r: Rejected) -> None:
        self.invalid += 1
        if len(self.rejected) < REJECTED_SHOWN:
            self.rejected.append(r)

    def hooks(self) -> dict[str, Any]:
        return {"on_rejected": self.on_rejected, "on_warning": self.warnings.append}


_ERRORS: tuple[type[Exception], ...] = (CampaignError, IntakeError, spreading.PlanError, ValueError, ConfigError)


def _one_line(exc: BaseException) -> str:
    """The error's first line, its CLI flag named as the form's field (``--window 25-3`` → ``window 25-3``)."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", " "), line)


def _preview(nc: NewCampaign, s: Settings, r: redis.Redis) -> dict[str, Any]:
    """The dry run of the staged upload (worker.api's preview) and the first rows rendered."""
    from worker.api import preview_file, preview_table
    from worker.costs import CostError

    path = _staged(nc)
    kw = nc.kwargs(s)
    text = nc.values["text"]
    if not text.strip():
        raise ValueError("give the text: a template ({{ name }} placeholders) or the message")
    quote_error = None
    for ask in ((True, False) if nc.flag("quote") else (False,)):
        col = _Collect()
        try:
            if nc.kind == "table":
                plan = preview_table(path, text, **kw, **col.hooks(), redis_conn=r, quote=ask)
            else:
                plan = preview_file(path, text, **kw, **col.hooks(), redis_conn=r, quote=ask)
            break
        except CostError as exc:
            quote_error = f"no quote: {_one_line(exc)}"
    plan.setdefault("quote", None)
    plan["zone"] = spreading.zone_label(plan["utc_offset_min"])
    for g in plan["groups"]:
        g["due"] = f"{spreading.format_local(g['due_ms'], plan['utc_offset_min'], seconds=True)} {plan['zone']}"
    groups = plan["groups"]
    plan["groups_shown"] = groups if len(groups) <= 12 else [*groups[:6], None, *groups[-5:]]
    plan["group_count"] = len({g["group"] for g in groups})
    q = plan.get("quote")
    price = Decimal(q["cost"]) / q["sms"] if q and q.get("sms") else None
    return {"plan": plan, "rejected": col.rejected, "invalid": col.invalid, "warnings": col.warnings,
            "quote_error": quote_error, "rows": _first_rows(nc, path, s, kw, price)}


def _first_rows(nc: NewCampaign, path: Path, s: Settings, kw: Mapping[str, Any],
                price: Decimal | None) -> list[dict[str, Any]]:
    """The first rows' texts as they go out: parts and encoding as the provider bills them (after the
    options), and the cost at the quote's mean price per SMS (the provider prices by operator, so a
    row's own price may differ)."""
    from worker import rows as rows_
    from worker.smsc.encoding import count_parts, explain_ucs2, shorten_links, transliterate, validate_message

    send = kw["options"].send
    region = s.smsc_default_region

    def shown(line_no: int, phone: str, text: str) -> dict[str, Any]:
        parts = count_parts(text, translit=send.translit, tinyurl=send.tinyurl, maxsms=send.maxsms)
        billed = shorten_links(text) if send.tinyurl else text  # what the provider encodes, after its options
        billed = transliterate(billed, send.translit) if send.translit else billed
        return {"line": line_no, "phone": phone, "text": text, "parts": parts,
                "delivered": billed if billed != text else None, "ucs2": explain_ucs2(billed) is not None,
                "cost": None if price is None else (price * parts).quantize(Decimal("0.01"))}

    out: list[dict[str, Any]] = []
    if nc.kind != "table":
        from scheduler.intake import iter_phones_file, iter_recipients

        for entry in iter_recipients(iter_phones_file(path), region=region):
            if not isinstance(entry, Rejected):
                out.append(shown(0, str(entry), nc.values["text"]))
                break
        return out
    with rows_.open_table(path) as table:
        tpl = rows_.compile_template(nc.values["text"], table.columns)
        for item in rows_.iter_rows(table, template=tpl, phone_column=kw["phone_column"],
                                    sender_column=kw["sender_column"], tz_column=kw["tz_column"], region=region,
                                    check_text=validate_message):
            if isinstance(item, rows_.Row):
                out.append(shown(item.line_no, item.phone, item.text))
                if len(out) >= PREVIEW_ROWS:
                    break
    return out


def _start(nc: NewCampaign, s: Settings, r: redis.Redis) -> Any:
    from worker.api import enqueue_file, enqueue_table

    path = _staged(nc)
    if not CAMPAIGN_ID_RE.match(nc.campaign_id):
        raise ValueError("the preview's campaign id is missing: preview again")
    kw = nc.kwargs(s)
    if nc.kind == "table":
        return enqueue_table(path, nc.values["text"], campaign_id=nc.campaign_id, redis_conn=r,
                             strict=nc.flag("strict"), **kw)
    return enqueue_file(path, nc.values["text"], campaign_id=nc.campaign_id, redis_conn=r,
                        strict=nc.flag("strict"), **kw)


@router.get("/ui/new", response_class=HTMLResponse)
def new_page(request: Request) -> HTMLResponse:
    s = _settings(request)
    sess = _require(request, s)
    if not sess.can_act:
        return _error(sess, 403, "this token may read, not act (its scope is read): log in with a full token")
    return _render("new.html", session=sess, title="new campaign", nc=NewCampaign(values=_defaults()), error=None,
                   max_upload=s.smsc_api_max_upload)


def _defaults() -> dict[str, str]:
    values = dict.fromkeys(_FORM_FIELDS, "")
    values.update(phone_column="phone", translit="0")
    return values


@router.post("/ui/new", response_model=None)
async def new_campaign(request: Request) -> Response:
    """``step=preview``: stage the upload, show the plan; ``step=start``: enqueue the staged upload."""
    s = _settings(request)
    sess = _require(request, s, act=True)
    limit = s.smsc_api_max_upload
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + 256 * 1024:  # refused before the body is read
        return _error(sess, 413, f"the upload is larger than SMSC_API_MAX_UPLOAD ({limit:,} bytes)")
    form = await request.form(max_files=1, max_fields=60, max_part_size=1024 * 1024)
    nc = NewCampaign(values=_defaults())
    try:
        _check_post(request, sess.csrf, form)
        nc = NewCampaign.of(form)
        step = form.get("step")
        r = _redis(request, s)
        if step == "start":
            cid = form.get("campaign_id_planned")
            nc.campaign_id = cid if isinstance(cid, str) else ""
            receipt = await run_in_threadpool(_start, nc, s, r)
            msg = "existing" if receipt.existing else "started"
            return RedirectResponse(f"/ui/c/{quote(receipt.campaign_id)}?msg={msg}", status_code=303,
                                    headers=_SECURITY_HEADERS)
        if step == "edit":  # back from the preview to the form, the upload kept
            return _render("new.html", session=sess, title="new campaign", nc=nc, error=None, max_upload=limit)
        file = form.get("file")
        await run_in_threadpool(_stage, nc, file if isinstance(file, UploadFile) else None, limit)
        wanted = nc.values["campaign_id"].strip()
        if wanted and not CAMPAIGN_ID_RE.match(wanted):
            raise ValueError(f"campaign id {wanted!r}: 1-24 characters of A-Za-z0-9_.")
        nc.campaign_id = wanted or new_campaign_id()
        result = await run_in_threadpool(_preview, nc, s, r)
    except HTTPException:
        raise
    except _ERRORS as exc:
        return _render("new.html", 422, session=sess, title="new campaign", nc=nc, error=_one_line(exc),
                       max_upload=limit)
    except redis.RedisError:
        return _error(sess, 503, "cannot reach Redis (REDIS_URL)")
    finally:
        await form.close()
    return _render("preview.html", session=sess, title="preview", nc=nc, **result)


def dashboard_app(settings: Settings | None = None) -> FastAPI:
    """The dashboard alone (the API's ``create_app`` mounts :data:`router` beside its own routes)."""
    app = FastAPI(title="smsc-mailer dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings or get_settings()
    app.state.tokens = Tokens.from_settings(app.state.settings)
    app.include_router(router)
    return app
