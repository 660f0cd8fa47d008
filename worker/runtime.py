"""One process's connections and helpers, built from the settings once per process (after fork)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import httpx
import redis
import redis.connection

from scheduler.budget import Budget
from scheduler.campaigns import Campaigns
from scheduler.guards import AccountPolicy, AdaptivePolicy, Guards, StatusPolicy
from scheduler.keys import Keys, text
from scheduler.ledger import Ledger
from scheduler.recovery import ensure_recovered
from scheduler.scripts import Scripts
from scheduler.stoplist import StopList
from worker.settings import DEFAULT_ACCOUNT, Settings, get_settings
from worker.smsc.client import SmscClient

__all__ = ["CampaignInfo", "Runtime", "get_runtime", "redis_client"]


#: Connections made to Redis by the clients of :func:`redis_client` in this process. A Redis server that
#: restarted (or failed over) is only reached through a new connection: a check made while this count
#: stood still still holds (:meth:`Runtime.recovered`).
_connects = 0


def _counted_connect(connection: redis.connection.AbstractConnection) -> None:
    global _connects
    _connects += 1
    connection.on_connect()  # type: ignore[no-untyped-call]  # redis-py's own, when no function is given


def connects() -> int:
    return _connects


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30,
                                redis_connect_func=_counted_connect)


@dataclass(frozen=True)
class CampaignInfo:
    account: str
    message: str
    sender: str | None
    parts: int
    #: Every recipient has a text of its own (in its batch's ``texts``); ``message`` is the template.
    personal: bool = False
    #: The provider's options of the campaign (``SendOptions`` as JSON; '' = none).
    options: str = ""
    #: Numbers the provider calls invalid (errors 7, 8) go on the stop list.
    auto_stop: bool = False
    #: The campaign has a budget (``max_cost_milli``): every batch is quoted and reserved before it leaves.
    budgeted: bool = False
    #: The account (SMSC_ACCOUNTS' name; ``default``: the single-account settings) that sends it.
    account_name: str = "default"
    #: Its lane: ``urgent``, ``normal`` or ``bulk`` (see docs/priorities.md).
    priority: str = "normal"


class Runtime:
    """Everything one process needs to send: Redis, the ledger and guards, the provider client.

    Built from the settings; ``redis`` and ``client`` may be handed in (tests give a client on the
    simulator's in-process transport, or a Redis client of a private server)."""

    def __init__(self, settings: Settings, *, redis: redis.Redis | None = None,
                 client: SmscClient | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.redis = redis if redis is not None else redis_client(settings.redis_url)
        #: ``connects()`` when this server's batches were last known to be settled (:meth:`recovered`);
        #: ``None``: check every time (a client handed in: its connections are not counted).
        self._recovered_at: int | None = None
        self._counted = redis is None
        #: The runtimes of the other accounts (SMSC_ACCOUNTS), shared by all of them.
        self._by_account: dict[str, Runtime] = {}
        #: The HTTP transport of every client built here (tests: the simulator in-process).
        self._transport = transport
        self.keys = Keys(settings.smsc_namespace)
        scripts = Scripts(self.redis)
        self.stoplist = StopList(self.redis, self.keys, region=settings.smsc_default_region)
        self.budget = Budget(self.redis, self.keys, scripts=scripts)
        self.ledger = Ledger(self.redis, self.keys, scripts=scripts, quarantine_after=settings.smsc_max_attempts)
        self.guards = Guards(self.redis, self.keys, scripts=scripts,
                             account_policy=AccountPolicy(base_backoff_ms=int(settings.smsc_backoff * 1000)),
                             # A good answer slower than half the deadline (and than 5 s: a busy host's
                             # own queueing is no slow provider) is a slow one; answers within one
                             # deadline of a decrease answer requests sent before it.
                             adaptive=AdaptivePolicy(max_cap=settings.smsc_concurrency,
                                                     slow_answer_ms=max(int(settings.smsc_timeout * 500), 5_000),
                                                     hold_ms=int(settings.smsc_timeout * 1000)),
                             status=StatusPolicy(strict_mass=settings.smsc_status_strict))
        self.campaigns = Campaigns(self.redis, self.keys, scripts=scripts)
        #: The name of the login in the guard keys, shared by every namespace and process using it.
        self.login = settings.account
        self._client: SmscClient | None = client
        self._proven = False

    @property
    def proven(self) -> bool:
        """These credentials had a good answer from the provider (in any process with the same settings:
        their fingerprint is kept in Redis, never the secret). Until then this process's requests go out
        one at a time for the whole login (the semaphore's probe), so that a wrong password (a worker
        restarted with a typo) is refused once, not once per slot — and fresh workers with proven
        credentials use the full cap at once."""
        if not self._proven:
            self._proven = self.guards.credentials_proven(self.login, self.client.credentials_fingerprint)
        return self._proven

    def recovered(self) -> bool:
        """True when the batches of this Redis server's life are known to be settled
        (:func:`scheduler.recovery.ensure_recovered`); False while another process settles them.

        Asked before every batch; answered without a round trip while no new connection to Redis was made
        since it was last true: a restarted server is reached only through a new connection, and that
        connection makes the next batch ask again. (A command that reconnects on its own, in the middle of
        a batch, is as exposed as it was when every batch asked: the question came before it either way.)"""
        if self._counted and self._recovered_at == _connects:
            return True
        at, s = _connects, self.settings
        ok = ensure_recovered(self.redis, self.keys, deadline_s=s.smsc_timeout, horizon_s=s.smsc_settle_horizon,
                              ledger=self.ledger, guards=self.guards)
        if ok and self._counted:
            self._recovered_at = at
        return ok

    def mark_proven(self) -> None:
        """The provider accepted these credentials (it answered past the login check)."""
        if not self._proven:
            self._proven = self.guards.prove_credentials(self.login, self.client.credentials_fingerprint)

    @property
    def client(self) -> SmscClient:
        if self._client is None:
            s = self.settings
            s.require_credentials()
            self._client = SmscClient(base_url=s.smsc_base_url, login=s.smsc_login, password=s.smsc_password,
                                      apikey=s.smsc_apikey, timeout_s=s.smsc_timeout,
                                      # a threads pool shares this client: one connection per slot, or
                                      # the threads queue for the pool's connections, not for the login
                                      max_connections=s.smsc_concurrency, transport=self._transport)
        return self._client

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one Runtime per process; campaign texts never change
    def campaign_info(self, cid: str) -> CampaignInfo:
        f = self.redis.hmget(self.keys.campaign(cid), "account", "message", "sender", "parts", "personal",
                             "options", "auto_stop", "max_cost_milli", "account_name", "priority")
        if f[0] is None:
            raise LookupError(cid)
        account, message, sender, parts, personal, options, auto_stop, max_cost, name, priority = (
            text(x) if x is not None else "" for x in f)
        return CampaignInfo(account, message, sender or None, int(parts or 1) if personal != "1" else 0,
                            personal=personal == "1", options=options, auto_stop=auto_stop == "1",
                            budgeted=bool(max_cost) and int(max_cost) > 0, account_name=name or DEFAULT_ACCOUNT,
                            priority=priority or "normal")

    def for_account(self, name: str) -> Runtime:
        """The runtime of account ``name`` (its login, client and cap), sharing this one's Redis; this one
        when it is that account. Built once per process and account."""
        if name == self.settings.account_name:
            return self
        rt = self._by_account.get(name)
        if rt is None:
            rt = self._by_account[name] = Runtime(self.settings.for_account(name), redis=self.redis,
                                                  transport=self._transport)
            rt._by_account = self._by_account
            rt._counted = self._counted  # the same client: its connections are counted or not
        return rt

    def for_campaign(self, cid: str) -> Runtime:
        """The runtime of the account campaign ``cid`` is bound to (LookupError: no such campaign)."""
        return self.for_account(self.campaign_info(cid).account_name)


_runtime: tuple[int, Runtime] | None = None


def get_runtime() -> Runtime:
    """The process's runtime; a forked child builds its own (sockets are not shared across fork)."""
    global _runtime
    pid = os.getpid()
    if _runtime is None or _runtime[0] != pid:
        _runtime = (pid, Runtime(get_settings()))
    return _runtime[1]
