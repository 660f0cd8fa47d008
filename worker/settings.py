"""Settings: the one place that reads the environment (and a ``.env`` file).

Everything else receives a typed :class:`Settings` object. Secrets are ``SecretStr`` so that a
``repr()``, a log line or a traceback never shows them.

Environment variables (the public contract):

=====================  ==========================================================================
``SMSC_BASE_URL``      provider base URL (default ``https://smsc.ru``)
``SMSC_LOGIN``         account login            } either login + password,
``SMSC_PASSWORD``      account password         }
``SMSC_APIKEY``        API key                  } or an API key
``SMSC_ACCOUNT``       the account's name in Redis: its guards (slots, flood chains, dedup, back-off) and
                       its campaigns; every deployment using one login must share it (default: the login,
                       or for an API key a digest of it — never the key — else ``default``)
``SMSC_TIMEOUT``       seconds to wait for the provider's answer (default 30)
``SMSC_CONCURRENCY``   cap on requests in flight per login, all workers together (default 14; < 15)
``SMSC_BATCH_SIZE``    recipients per ``send.php`` request (default: derived from the message)
``SMSC_NAMESPACE``     prefix of every Redis key (default ``smsc``)
``SMSC_LEASE``         seconds a worker may hold a batch before the sweeper takes it back
                       (default: 2 × SMSC_TIMEOUT + 15)
``SMSC_WINDOW``        batches handed to workers at once, all workers together (default 32)
``SMSC_BACKOFF``       seconds of the first account-wide back-off after error 4 (default 30)
``SMSC_SETTLE_HORIZON`` seconds after a request's deadline before an unknown outcome is read from
                       status.php (default 120): the provider may still be processing a request we gave
                       up on, and status.php may lag behind acceptance
``SMSC_MAX_ATTEMPTS``  executions of one batch that end without an outcome (a crash, an unexpected
                       error) before the batch is quarantined: its recipients fail with the reason (default 5)
``SMSC_STATUS_STRICT`` ``1``: read status.php's "more than one mass request a minute" strictly (one mass
                       request a minute per login, whatever it asks); default ``0``: the same mass request
                       at most once a minute
``SMSC_DEFAULT_REGION`` the country (ISO 3166, e.g. ``RU``) of numbers written without ``+``: with it every
                       spelling of one subscriber (``8 900…``, ``7 900…``, ``900…``, ``+7 900…``) is one
                       recipient, sent in E.164 with ``+`` so the provider never auto-corrects it; without it
                       (the default) such numbers go out as written, and the provider may auto-correct them
``SMSC_DELIVERY_POLL`` ``1`` (default): poll status.php for delivery statuses; ``0``: statuses come by push
                       (``status-receiver``), with one poll at the horizon for what the push lost
``SMSC_DELIVERY_HORIZON`` seconds after which a sent recipient without a final status is ``unknown``
                       (default 86400: the provider's longest message lifetime)
``SMSC_DELIVERY_CHUNK`` (phone, id) pairs per status.php poll (default 500)
``SMSC_PUSH_TOKEN``    a secret the handler URL set in the account ends with (``/smsc/status/<token>``)
``SMSC_PUSH_VERIFY``   ``1``: require the provider's ``md5`` field on every status post (checked with the password)
``SMSC_PUSH_ALLOW_IPS`` comma-separated addresses status posts may come from (default: any)
``SMSC_WEBHOOK_URL``   the default webhook of every campaign (``enqueue --webhook`` sets one per campaign)
``SMSC_WEBHOOK_SECRET`` the HMAC-SHA256 key of the webhooks' signature
``SMSC_ACCOUNTS``      more accounts: a JSON object (or a file holding one) of name -> {login, password |
                       apikey, base_url, concurrency, sender}; ``enqueue --account NAME`` binds a campaign to
                       one. The single-account settings above are the account ``default``
``REDIS_URL``          the Redis that holds the truth (default ``redis://127.0.0.1:6379/0``)
``CELERY_BROKER_URL``  Celery's broker (default: ``REDIS_URL``)
=====================  ==========================================================================
"""

from __future__ import annotations

import functools
import json
import os
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.intake import region_error
from scheduler.keys import login_id

__all__ = ["DEFAULT_ACCOUNT", "AccountConfig", "ConfigError", "Settings", "get_settings"]

_ACCOUNT_RE = re.compile(r"^#?[A-Za-z0-9._@-]{1,64}$")
_ACCOUNT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
#: The account of the single-account settings (SMSC_LOGIN, SMSC_PASSWORD or SMSC_APIKEY, SMSC_BASE_URL).
DEFAULT_ACCOUNT = "default"


class AccountConfig(BaseModel):
    """One SMSC account of ``SMSC_ACCOUNTS``: its credentials (secrets stay ``SecretStr``), and optionally
    its own base URL, cap on requests in flight and default sender."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    login: str | None = None
    password: SecretStr | None = None
    apikey: SecretStr | None = None
    base_url: str | None = None
    concurrency: int | None = Field(default=None, ge=1, le=14)
    sender: str | None = None

    @model_validator(mode="after")
    def _credentials(self) -> AccountConfig:
        has_key = self.apikey is not None and bool(self.apikey.get_secret_value())
        has_login = bool(self.login) and self.password is not None and bool(self.password.get_secret_value())
        if not (has_key or has_login):
            raise ValueError("needs login and password, or apikey")
        if self.base_url is not None and not re.match(r"^https?://[^\s/]+", self.base_url):
            raise ValueError("base_url must be an http(s) URL")
        return self


class ConfigError(Exception):
    """Raised when a setting is missing or malformed; its text is one line, without secret values."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    smsc_base_url: str = "https://smsc.ru"
    smsc_login: str | None = None
    smsc_password: SecretStr | None = None
    smsc_apikey: SecretStr | None = None
    smsc_account: str | None = None
    # 30 s: the provider answers a 500-number list in well under a second; anything slower is a fault
    # whose outcome we settle through status.php rather than wait for.
    smsc_timeout: float = Field(default=30.0, gt=0, le=300)
    # 14, not 15: the provider answers error 9 at the 15th concurrent request of one login.
    smsc_concurrency: int = Field(default=14, ge=1, le=14)
    smsc_batch_size: int | None = Field(default=None, ge=1, le=5000)
    smsc_namespace: str = Field(default="smsc", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    smsc_lease: float | None = Field(default=None, gt=0, le=3600)
    # 32 batches in the workers' hands: enough to keep 2 workers x 8 processes busy while the
    # next batch is already in the broker, few enough that a lost message costs little.
    smsc_window: int = Field(default=32, ge=1, le=10_000)
    smsc_backoff: float = Field(default=30.0, gt=0, le=3600)
    # 120 s: a list of 500 numbers is processed in well under a second on a healthy provider; a request we
    # gave up on (timeout) may still be accepted much later on a loaded one, and status.php lags behind
    # acceptance. Settling earlier risks a -3 for a message that is about to be taken: a duplicate.
    smsc_settle_horizon: float = Field(default=120.0, ge=0, le=3600)
    # 5: a batch that keeps crashing its execution (bad stored input, a bug) must not loop for ever, and
    # each attempt may count toward the subscribers' flood chains; five covers a few worker kills.
    smsc_max_attempts: int = Field(default=5, ge=1, le=100)
    smsc_status_strict: bool = False
    # None: a number without '+' is sent as written (the provider may auto-correct it, and 8 900... and
    # +7 900... are two recipients); a region reads such numbers as that country's and sends E.164 with '+'.
    smsc_default_region: str | None = None
    # Delivery (worker.delivery): polling, the horizon, the push receiver's checks, the webhooks.
    smsc_delivery_poll: bool = True
    # 24 h: the provider keeps trying a message for its lifetime, at most 24 h (``valid``).
    smsc_delivery_horizon: float = Field(default=86_400.0, gt=0, le=7 * 86_400)
    smsc_delivery_chunk: int = Field(default=500, ge=1, le=5000)
    # Status polls wait while batches are due to be sent (the sends keep the login's slots), up to this
    # long past a poll's due time (s); 0: polls never wait for the sends.
    smsc_delivery_yield: float = Field(default=300.0, ge=0, le=86_400)
    # Who reads a CSV/.xlsx of personal texts at intake: "auto" (a child process for a file of 4 MiB or more,
    # so that reading and queueing use two cores; worker/reader.py), "child" (any file), "inline" (this process).
    smsc_intake_reader: Literal["auto", "child", "inline"] = "auto"
    smsc_push_token: SecretStr | None = None
    smsc_push_verify: bool = False
    smsc_push_allow_ips: str = ""
    smsc_webhook_url: str | None = None
    smsc_webhook_secret: SecretStr | None = None
    # Log lines: "text" (human) or "json" (one JSON object a line; phone numbers masked either way).
    smsc_log_format: str = Field(default="text", pattern=r"^(text|json)$")
    # Prometheus /metrics (worker.metrics): non-final campaigns exported with a label, and how long a final
    # one stays exported after it ended (bounded series).
    smsc_metrics_campaigns: int = Field(default=50, ge=0, le=1000)
    smsc_metrics_final_window: float = Field(default=3600.0, ge=0, le=7 * 86_400)
    # The HTTP API (`smsc-mailer serve`): bearer tokens as "sha256hex:scope" (scope read or full), comma-
    # separated (`smsc-mailer api-token` mints one); the largest upload accepted, in bytes.
    smsc_api_tokens: SecretStr | None = None
    smsc_api_max_upload: int = Field(default=64 * 1024 * 1024, ge=1024, le=4 * 1024 * 1024 * 1024)
    # The balance check before a campaign is committed runs for campaigns of at least this many recipients.
    smsc_balance_check_min: int = Field(default=100, ge=0, le=10_000_000)
    # Health findings (status, /metrics): a campaign stalled this long with batches due or in hand, batches due
    # and not taken this long, a failure rate above this once this many recipients have an outcome.
    smsc_health_stall_s: float = Field(default=600.0, gt=0, le=7 * 86_400)
    smsc_health_due_age_s: float = Field(default=300.0, gt=0, le=7 * 86_400)
    smsc_health_failure_rate: float = Field(default=0.2, gt=0, le=1)
    smsc_health_min_attempts: int = Field(default=50, ge=1, le=10_000_000)
    # More accounts than the one above (SMSC_ACCOUNTS): a JSON object, or the path of a file holding it.
    smsc_accounts: SecretStr | None = None
    _extra_accounts: dict[str, AccountConfig] = PrivateAttr(default_factory=dict)
    _account_name: str = PrivateAttr(default=DEFAULT_ACCOUNT)
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str | None = None

    @field_validator("smsc_base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http(s) URL such as https://smsc.ru")
        return v.rstrip("/")

    @field_validator("smsc_default_region")
    @classmethod
    def _default_region(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        code = v.strip().upper()
        if error := region_error(code):
            raise ValueError(error)
        return code

    @field_validator("smsc_webhook_url")
    @classmethod
    def _webhook_url(cls, v: str | None) -> str | None:
        if v is not None and v.strip() and not re.match(r"^https?://[^\s/]+", v.strip()):
            raise ValueError("must be an http(s) URL")
        return v.strip() if v and v.strip() else None

    @field_validator("redis_url", "celery_broker_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(redis|rediss|unix)://", v):
            raise ValueError("must be a redis:// (or rediss://, unix://) URL")
        return v

    @model_validator(mode="after")
    def _account(self) -> Settings:
        if self.smsc_account is None:
            apikey = self.smsc_apikey.get_secret_value() if self.smsc_apikey is not None else ""
            self.smsc_account = login_id(self.smsc_login, apikey=apikey) if self.smsc_login or apikey else "default"
        if not _ACCOUNT_RE.match(self.smsc_account):
            raise ValueError("SMSC_ACCOUNT must be 1-64 characters of A-Za-z0-9._@-")
        return self

    @model_validator(mode="after")
    def _accounts(self) -> Settings:
        self._extra_accounts = _parse_accounts(self.smsc_accounts)
        return self

    @property
    def account_names(self) -> list[str]:
        """Every account a campaign may be bound to: ``default`` (when configured) and SMSC_ACCOUNTS'."""
        names = list(self._extra_accounts)
        if DEFAULT_ACCOUNT not in names and self._has_default_credentials():
            names.insert(0, DEFAULT_ACCOUNT)
        return names

    def for_account(self, name: str | None) -> Settings:
        """These settings as the account ``name`` sees them: its credentials, base URL, cap and login key
        (``default`` or None: these settings). ``ValueError`` (one line, no secret) for an unknown name."""
        if name is None or (name == DEFAULT_ACCOUNT and DEFAULT_ACCOUNT not in self._extra_accounts):
            return self
        acct = self._extra_accounts.get(name)
        if acct is None:
            known = ", ".join(self.account_names) or "none configured"
            raise ValueError(f"--account {name!r}: no such account (accounts: {known}; see SMSC_ACCOUNTS)")
        apikey = acct.apikey.get_secret_value() if acct.apikey is not None else ""
        update: dict[str, Any] = {
            "smsc_login": acct.login, "smsc_password": acct.password, "smsc_apikey": acct.apikey,
            "smsc_account": login_id(acct.login, apikey=apikey),
        }
        if acct.base_url is not None:
            update["smsc_base_url"] = acct.base_url.rstrip("/")
        if acct.concurrency is not None:
            update["smsc_concurrency"] = acct.concurrency
        other = self.model_copy(update=update)
        other._extra_accounts = self._extra_accounts
        other._account_name = name
        return other

    @property
    def account_name(self) -> str:
        """The name of the account these settings are (``default`` unless made by :meth:`for_account`)."""
        return self._account_name

    def default_sender(self, name: str | None) -> str | None:
        acct = self._extra_accounts.get(name or "")
        return acct.sender if acct is not None else None

    def _has_default_credentials(self) -> bool:
        try:
            self.require_credentials()
        except ConfigError:
            return False
        return True

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    @property
    def lease_s(self) -> float:
        return self.smsc_lease or (2 * self.smsc_timeout + 15)

    @property
    def account(self) -> str:
        assert self.smsc_account is not None
        return self.smsc_account

    def require_credentials(self) -> None:
        """Raise :class:`ConfigError` unless login + password or an API key is set."""
        if self.smsc_apikey is not None and self.smsc_apikey.get_secret_value():
            return
        if self.smsc_login and self.smsc_password is not None and self.smsc_password.get_secret_value():
            return
        raise ConfigError("set SMSC_LOGIN and SMSC_PASSWORD, or SMSC_APIKEY (environment or .env)")


def _parse_accounts(raw: SecretStr | None) -> dict[str, AccountConfig]:
    """SMSC_ACCOUNTS: a JSON object, or the path of a file holding one. Errors name the account and the
    field, never a value (it may be a password)."""
    if raw is None or not raw.get_secret_value().strip():
        return {}
    text = raw.get_secret_value().strip()
    if not text.startswith("{"):
        if not os.path.isfile(text):
            raise ValueError("SMSC_ACCOUNTS is neither a JSON object nor the path of a file")
        with open(text, encoding="utf-8") as f:
            text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"SMSC_ACCOUNTS is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ValueError("SMSC_ACCOUNTS must be a JSON object of name -> account")
    out: dict[str, AccountConfig] = {}
    for name, value in data.items():
        if not _ACCOUNT_NAME_RE.match(str(name)):
            raise ValueError(f"SMSC_ACCOUNTS: account name {str(name)[:40]!r}: use 1-32 characters of A-Za-z0-9_.-")
        if not isinstance(value, dict):
            raise ValueError(f"SMSC_ACCOUNTS: account {name!r} must be an object")
        try:
            out[name] = AccountConfig(**value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "account"
            raise ValueError(f"SMSC_ACCOUNTS: account {name!r}: {where}: {err.get('msg', 'invalid')}") from None
    return out


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        parts.append(f"{field.upper()}: {err.get('msg', 'invalid')}")
    return "invalid settings: " + "; ".join(parts)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; a bad value raises :class:`ConfigError` (one line)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
