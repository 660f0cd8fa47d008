"""Who may call the HTTP API: bearer tokens, kept as their SHA-256 in ``SMSC_API_TOKENS``.

A token is 32 random bytes (``secrets.token_urlsafe(32)``, :func:`mint_token`, ``smsc-mailer api-token``);
the server keeps only ``sha256hex:scope`` entries (comma-separated), so its settings, its Redis and its
logs never hold a token. Scopes: ``read`` (every GET, and ``POST /v1/quote``: nothing changes) and
``full`` (everything). A request shows its token as ``Authorization: Bearer <token>``; the digest is
compared with every configured entry by :func:`hmac.compare_digest` (all of them, whatever matches, so
the time taken says nothing about which entry is close). No token, or one not configured: 401 with
``WWW-Authenticate: Bearer``; a read token on a write: 403. No ``SMSC_API_TOKENS``: every request is 401.

The dependencies :func:`require_read` and :func:`require_full` are what a route adds
(``Depends(require_full)``; ``async``: a digest is no work for a thread); they answer the
:class:`Principal` — its scope and ``token_id``, the first 8 hex digits of the token's digest, safe to
log — and leave it in ``request.state.principal``.

**The dashboard** (pages under ``/ui``, ``worker/http/dashboard.py``) is a browser's, and a browser cannot
be made to send a bearer header: it keeps the token in a cookie set by a login form (the token typed
once). :func:`set_token_cookie` writes it ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no
other site's page or link sends it: cross-site request forgery is left with nothing) and ``Secure``
over HTTPS; :func:`ui_principal` reads it, and refuses a write whose ``Origin`` is another site's. The
token is never in a URL or a page: the login form posts it, the answer sets the cookie and redirects.
HTTP Basic was the other choice, rejected: a browser sends Basic credentials with cross-site requests
too, and has no way to log out.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from worker.http.problems import ApiProblem
from worker.settings import ConfigError, Settings

__all__ = [
    "COOKIE_NAME",
    "SCOPES",
    "Principal",
    "Tokens",
    "clear_token_cookie",
    "mint_token",
    "require_full",
    "require_read",
    "set_token_cookie",
    "token_entry",
    "ui_principal",
]

SCOPES: Final = ("read", "full")
#: The dashboard's cookie: the token itself, HttpOnly, SameSite=Strict (see the module's docstring).
COOKIE_NAME: Final = "smsc_token"
_ENTRY = re.compile(r"^([0-9a-f]{64}):(read|full)$")
_REALM = 'Bearer realm="smsc-mailer"'


@dataclass(frozen=True)
class Principal:
    """The caller: its token's scope, and ``token_id`` (the first 8 hex digits of its digest) for logs."""

    scope: str
    token_id: str

    def allows(self, needed: str) -> bool:
        return self.scope == "full" or needed == "read"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_entry(token: str, scope: str) -> str:
    """The ``SMSC_API_TOKENS`` entry of ``token``: ``sha256hex:scope``."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: give read or full")
    return f"{_digest(token)}:{scope}"


def mint_token(scope: str) -> tuple[str, str]:
    """A new token (32 random bytes, URL-safe base64) and its settings entry."""
    token = secrets.token_urlsafe(32)
    return token, token_entry(token, scope)


class Tokens:
    """The configured tokens: ``(digest, scope)`` entries, parsed from ``SMSC_API_TOKENS``."""

    def __init__(self, entries: list[tuple[str, str]]) -> None:
        self.entries = entries

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        """The settings' entries; :class:`ConfigError` (one line, naming the entry's place, never its text:
        someone may have pasted a token there) for one that is not ``sha256hex:scope``."""
        raw = settings.smsc_api_tokens.get_secret_value() if settings.smsc_api_tokens is not None else ""
        entries = []
        for i, part in enumerate((p.strip() for p in raw.split(",")), 1):
            if not part:
                continue
            m = _ENTRY.match(part.lower())
            if m is None:
                raise ConfigError(f"invalid settings: SMSC_API_TOKENS: entry {i} is not sha256hex:scope (64 hex "
                                  "digits, a colon, read or full); smsc-mailer api-token prints one")
            entries.append((m.group(1), m.group(2)))
        return cls(entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of ``token``, or None when no entry has its digest."""
        digest = _digest(token)
        found: str | None = None
        for entry, scope in self.entries:  # every entry compared: no early exit
            if hmac.compare_digest(digest, entry) and found is None:
                found = scope
        return Principal(found, digest[:8]) if found is not None else None


# auto_error=False: a missing or non-Bearer Authorization is our 401 problem, not FastAPI's plain 403.
_bearer = HTTPBearer(auto_error=False, description="A token minted by `smsc-mailer api-token`; its SHA-256 "
                                                   "is in SMSC_API_TOKENS.")


def _tokens(request: Request) -> Tokens:
    tokens = getattr(request.app.state, "tokens", None)
    return tokens if isinstance(tokens, Tokens) else Tokens([])


def _check(request: Request, token: str | None, needed: str) -> Principal:
    if not token:
        raise ApiProblem(401, "give a token: Authorization: Bearer <token>", slug="unauthorized",
                         headers={"WWW-Authenticate": _REALM})
    principal = _tokens(request).authenticate(token)
    if principal is None:
        raise ApiProblem(401, "this token is not one of SMSC_API_TOKENS", slug="unauthorized",
                         headers={"WWW-Authenticate": _REALM + ', error="invalid_token"'})
    if not principal.allows(needed):
        raise ApiProblem(403, "this token may read, not write (its scope is read)", slug="forbidden",
                         headers={"WWW-Authenticate": _REALM + ', error="insufficient_scope", scope="full"'})
    request.state.principal = principal
    return principal


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def require_read(request: Request, credentials: Credentials) -> Principal:
    """A route's dependency: any configured token (read or full)."""
    return _check(request, credentials.credentials if credentials is not None else None, "read")


async def require_full(request: Request, credentials: Credentials) -> Principal:
    """A route's dependency: a token of scope ``full``."""
    return _check(request, credentials.credentials if credentials is not None else None, "full")


# -- the dashboard's cookie ---------------------------------------------------------------------------
def set_token_cookie(response: Response, token: str, *, secure: bool) -> None:
    """After a login form posted a good token: keep it in the browser (HttpOnly, SameSite=Strict, Secure
    over HTTPS; a session cookie, gone when the browser closes)."""
    response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="strict", secure=secure, path="/")


def clear_token_cookie(response: Response) -> None:
    """Log out: the cookie is removed."""
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")


def ui_principal(request: Request, needed: str = "read") -> Principal | None:
    """The dashboard's caller from its cookie, or None (no cookie, or a token not configured: show the login
    form). ``needed``: ``full`` for a page's action. :class:`ApiProblem` 403 for a read token on an action,
    or for a write whose ``Origin`` is another site's (browsers send it with every POST)."""
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    principal = _tokens(request).authenticate(token)
    if principal is None:
        return None
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
            raise ApiProblem(403, "a form of another site: refused", slug="forbidden")
    if not principal.allows(needed):
        raise ApiProblem(403, "this token may read, not act (its scope is read)", slug="forbidden")
    request.state.principal = principal
    return principal
