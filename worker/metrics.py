"""Prometheus ``/metrics``, read from the ledger in Redis at each scrape.

The ledger is the truth (design invariant 1), so the metrics are computed from it when Prometheus asks,
never counted in a process: every worker's work is counted, whatever pool or host ran it, and a restart
of this server loses nothing. :class:`LedgerCollector` is a prometheus-client collector whose
``collect()`` reads one namespace's keys (:mod:`scheduler.keys`) and the logins' keys; it is registered
in a registry of its own (:func:`metrics_app`), served alone by :func:`serve_metrics` (``smsc-mailer
metrics --port P``, ``python -m worker.metrics``) or mounted in a larger ASGI app. Every metric, its
labels and its meaning: docs/metrics.md (the list below, :data:`METRICS`, is the source of it).

**Cheap at any size.** A scrape is three pipelined round trips whatever the campaigns hold: the server's
clock and the campaign list; the states of the most recent campaigns (a final campaign's only once: it
never changes again) and the queues' sizes and oldest entries (``ZCARD``/``ZCOUNT``/``ZRANGE 0 0``:
O(log n)); then the exported campaigns' counters (``HMGET``), their delivery counters by code, and
each login's account state and slots. No key per recipient or per batch is read, except the batches in
the workers' hands (bounded by ``SMSC_WINDOW``) and the due-now head of the due-queue (at most
:attr:`MetricsConfig.due_scan` members).

**Bounded cardinality.** Of the :attr:`MetricsConfig.scan` most recent campaigns, the
:attr:`MetricsConfig.campaigns` most recent that are not final (an interrupted intake excepted) and the
:attr:`MetricsConfig.final_campaigns` most recent that ended within :attr:`MetricsConfig.final_window_s`
get series labelled ``campaign``: about 40 series each, so at most ~4,000 with the defaults. Non-final
campaigns left out by the cap are counted (``smsc_campaigns_unexported_active``). The queues, logins and
webhooks are exported whole (a handful of series per login).

**One clock.** Ages and remaining back-offs are measured on the Redis server's clock (``TIME``), as every
rule and lease is; ``smsc_server_time_seconds`` shows it.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from scheduler.campaigns import FINAL_STATES
from scheduler.health import KINDS, CampaignView, Finding, Progress, Thresholds, campaign_queues, check
from scheduler.keys import Keys
from scheduler.keys import text as _s
from worker.delivery.states import funnel

__all__ = [
    "DEFAULT_PORT",
    "METRICS",
    "LedgerCollector",
    "MetricSpec",
    "MetricsApp",
    "MetricsConfig",
    "main",
    "metrics_app",
    "serve_metrics",
]

log = logging.getLogger(__name__)

#: ``smsc-mailer metrics``' port when none is given (the Prometheus exporter range, not a common one).
DEFAULT_PORT = 9180

CAMPAIGN_STATES = ("planning", "queued", "running", "paused", "completed", "failed", "cancelled")
ACCOUNT_STATES = ("ok", "cooldown", "stopped")
#: Delivery counters read per campaign: no status yet (1), unknown (2), statuses -2..25 (8..35); what
#: the record holds beyond them (an undocumented status) is exported as the state ``other``.
_DELIVERY_CODES = (1, 2, *range(8, 36))
_CAMPAIGN_FIELDS = ("total", "sent", "failed", "cancelled", "quarantined", "invalid", "duplicates", "sms",
                    "cost_milli", "batches", "created_ms", "started_ms", "finished_ms", "account", "queued_ms",
                    "progress_ms", "account_name", "priority",
                    # counters the sending keeps beside the ledger (docs/metrics.md); an absent field
                    # (a campaign without any) exports no sample rather than a false zero
                    "settled_sent", "settled_failed", "unknown_outcomes")
_ACCOUNT_FIELDS = ("state", "backoff_until", "quiet_until", "backoffs", "auth_errors", "slow_answers",
                   "errors_in_a_row", "verified", "adaptive_cap")


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: its family name (a counter's samples end in ``_total``), type, labels, meaning."""

    name: str
    kind: str  # "gauge" | "counter"
    labels: tuple[str, ...]
    doc: str

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name


def _g(name: str, labels: str, doc: str) -> MetricSpec:
    return MetricSpec(name, "gauge", tuple(labels.split()), doc)


def _c(name: str, labels: str, doc: str) -> MetricSpec:
    return MetricSpec(name, "counter", tuple(labels.split()), doc)


#: Every metric the collector exports (docs/metrics.md lists them; a test holds the two together).
METRICS: tuple[MetricSpec, ...] = (
    # the scrape
    _g("smsc_up", "", "1 when the ledger was read; 0 when Redis could not be (then nothing else is exported)"),
    _g("smsc_scrape_duration_seconds", "", "How long this scrape took to read Redis"),
    _g("smsc_scrape_redis_round_trips", "", "Pipelined Redis round trips this scrape made (3 whatever the size)"),
    _g("smsc_server_time_seconds", "", "The Redis server's clock at the scrape: the clock of every age here"),
    # the campaign list
    _g("smsc_campaigns_known", "", "Campaigns in the namespace's list"),
    _g("smsc_campaigns_scanned", "state", "The most recent campaigns looked at this scrape, by state"),
    _g("smsc_campaigns_unexported_active", "", "Non-final campaigns among those scanned left out by the cap"),
    # one campaign
    _g("smsc_campaign_info", "campaign login account priority",
       "1 per exported campaign; its login, account name (SMSC_ACCOUNTS) and priority lane as labels"),
    _g("smsc_campaign_state", "campaign state", "1 for the campaign's state, 0 for the others"),
    _g("smsc_campaign_enqueued_recipients", "campaign", "Recipients queued at the commit (status: total)"),
    _c("smsc_campaign_recipients", "campaign state",
       "Recipients with a final state: sent, failed (quarantined included), cancelled (status: the same)"),
    _g("smsc_campaign_pending_recipients", "campaign", "Recipients without a final state yet (status: pending)"),
    _c("smsc_campaign_quarantined_recipients", "campaign", "Failed recipients of quarantined batches"),
    _g("smsc_campaign_rejected_lines", "campaign reason", "Input lines not queued: invalid, duplicate"),
    _c("smsc_campaign_sms", "campaign", "SMS parts the provider counted"),
    _c("smsc_campaign_cost", "campaign", "Cost the provider reported, in the account's currency"),
    _g("smsc_campaign_batches", "campaign", "Batches the campaign was split into"),
    _g("smsc_campaign_due_batches", "campaign", "Its batches due now, waiting for a worker (in the due-queue's "
       "oldest due members read, see smsc_due_scan_truncated)"),
    _g("smsc_campaign_leased_batches", "campaign", "Its batches in the workers' hands"),
    _g("smsc_campaign_parked_batches", "campaign", "Its batches kept aside while it is paused or its login stopped"),
    _g("smsc_campaign_created_timestamp_seconds", "campaign", "When it was created (server clock)"),
    _g("smsc_campaign_started_timestamp_seconds", "campaign", "Its first execution (absent before)"),
    _g("smsc_campaign_finished_timestamp_seconds", "campaign", "When every recipient became final (absent before)"),
    _c("smsc_campaign_failed_by_code", "campaign code",
       "Failed recipients by provider error code ('' = none)"),
    _c("smsc_campaign_settled_recipients", "campaign result",
       "Recipients of unknown outcomes settled through status.php: sent, failed"),
    _c("smsc_campaign_unknown_outcomes", "campaign", "Requests whose answer never came"),
    _g("smsc_campaign_delivery_recipients", "campaign state",
       "Sent recipients by delivery state (status: delivery.by_state)"),
    _g("smsc_campaign_delivery_funnel_recipients", "campaign stage",
       "Sent recipients: delivered, failed, pending, unknown; they add up to sent (status: delivery)"),
    _g("smsc_campaign_delivery_final", "campaign", "1 once every sent recipient has a final delivery state"),
    # health (scheduler.health: the checks status shows)
    _g("smsc_campaign_health", "campaign kind",
       "1 when the campaign has a health finding of that kind (stalled, due_overdue, failure_rate), 0 else"),
    _g("smsc_campaign_progress_age_seconds", "campaign",
       "Seconds since a recipient of the campaign last became final (as this metrics process saw it)"),
    _g("smsc_health_findings", "kind", "Health findings of the exported campaigns that are not final, by kind"),
    # the queues of the namespace
    _g("smsc_due_batches", "", "Batches in the due-queue (due now or later)"),
    _g("smsc_due_now_batches", "", "Batches due now, waiting for the dispatcher and a worker"),
    _g("smsc_due_lag_seconds", "", "Age of the oldest due batch past its due time (0 when none is due)"),
    _g("smsc_due_scan_truncated", "", "1 when more batches are due than the per-campaign count reads"),
    _g("smsc_leased_batches", "", "Batches in the workers' hands (claimed, begun or sending)"),
    _g("smsc_leased_expired_batches", "", "Leased batches whose lease ran out, not swept back yet"),
    _g("smsc_sending_batches", "", "Leased batches whose request is out (state sending)"),
    _g("smsc_unknown_outcome_batches", "where",
       "Batches to settle through status.php first: queued (the settle index), in_hand (leased, settle set)"),
    _g("smsc_delivery_poll_batches", "", "Sent batches tracked for a status.php poll"),
    _g("smsc_delivery_poll_due_batches", "", "Of them, due for a poll now"),
    _g("smsc_delivery_poll_lag_seconds", "", "Age of the oldest due poll past its time (0 when none is due)"),
    _g("smsc_webhook_events", "state", "Webhook events: waiting (not acknowledged), due (now), dead (given up)"),
    _g("smsc_webhook_uncut_batches", "", "Batches with final delivery states not cut into webhook events yet"),
    _g("smsc_webhook_lag_seconds", "", "Age of the oldest due webhook event past its time (0 when none)"),
    _c("smsc_deferrals", "guard", "Recipients deferred, by the guard that held them"),
    # the logins (shared by every namespace on the login)
    _g("smsc_account_state", "login state", "1 for the login's account state (ok, cooldown, stopped), 0 else"),
    _g("smsc_account_backoff_seconds", "login", "Seconds left of the login's account-wide back-off"),
    _g("smsc_account_quiet_seconds", "login", "Seconds left of the login's quiet (after a Redis restart)"),
    _c("smsc_account_backoffs", "login", "Account-wide back-offs begun"),
    _c("smsc_account_auth_errors", "login", "Error 2 answers (each stops the account)"),
    _c("smsc_account_slow_answers", "login", "Slow answers and unknown outcomes (they lower the adaptive cap)"),
    _g("smsc_account_errors_in_a_row", "login", "The provider's error answers in a row now"),
    _g("smsc_account_verified", "login", "1 when the credentials had a good answer since the last error 2"),
    _g("smsc_login_slots_cap", "login", "Requests the login may have in flight now (configured, adaptive, "
       "1 until verified)"),
    _g("smsc_login_slots_in_use", "login kind",
       "Live slots: inflight (every request), status (status.php), probe (unproven credentials), revoked"),
)
_SPECS = {m.name: m for m in METRICS}


@dataclass(frozen=True)
class MetricsConfig:
    """What a scrape reads and how much (see the module's docstring for the bounds)."""

    namespace: str = "smsc"
    #: The deployment's own login (``SMSC_ACCOUNT``): exported even with no campaign.
    account: str | None = None
    #: ``SMSC_CONCURRENCY``: the configured cap, for ``smsc_login_slots_cap``.
    concurrency: int = 14
    #: Non-final campaigns exported, most recent first (``SMSC_METRICS_CAMPAIGNS``).
    campaigns: int = 50
    #: Final campaigns exported, most recent first, while they ended within the window.
    final_campaigns: int = 50
    #: How long a final campaign stays exported after it ended (``SMSC_METRICS_FINAL_WINDOW``, s): long
    #: enough for a rate over the last minutes of a campaign and an alert's ``for``.
    final_window_s: float = 3600.0
    #: The most recent campaigns whose state a scrape reads (one ``HMGET`` each): a non-final campaign
    #: older than this many newer ones is not seen (docs/metrics.md).
    scan: int = 1000
    #: Due-now batches read to count them per campaign; more are counted in total only.
    due_scan: int = 2000
    #: Leased batches read (state, settle flag); ``SMSC_WINDOW`` bounds them in a healthy system.
    leased_scan: int = 2000
    #: When a campaign has a health finding (``SMSC_HEALTH_*``, :class:`scheduler.health.Thresholds`).
    health: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def from_settings(cls, s: Any, **overrides: Any) -> MetricsConfig:
        """From :class:`worker.settings.Settings`; a setting the settings do not have yet keeps its default."""
        d = cls()

        def get(name: str, default: Any) -> Any:
            value = getattr(s, name, None)
            return default if value is None else value

        values: dict[str, Any] = dict(
            namespace=str(get("smsc_namespace", d.namespace)), account=get("smsc_account", None),
            concurrency=int(get("smsc_concurrency", d.concurrency)),
            campaigns=int(get("smsc_metrics_campaigns", d.campaigns)),
            final_window_s=float(get("smsc_metrics_final_window", d.final_window_s)),
            health=Thresholds.from_settings(s))
        values.update(overrides)
        return cls(**values)


#: A campaign's state, finished_ms, cancelled_ms, lease_until and account (None: absent).
_Head = tuple[str | None, ...]


@dataclass
class _Scrape:
    """What one scrape read (raw), filled round trip by round trip."""

    now_ms: int = 0
    known: int = 0
    scanned: Counter[str] = field(default_factory=Counter)
    unexported: int = 0
    states: dict[str, str] = field(default_factory=dict)
    accounts_of: dict[str, str] = field(default_factory=dict)
    campaigns: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    delivery: dict[str, dict[str, str]] = field(default_factory=dict)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    parked: dict[str, int] = field(default_factory=dict)
    due_by_campaign: Counter[str] = field(default_factory=Counter)
    leased_by_campaign: Counter[str] = field(default_factory=Counter)
    queues: dict[str, float] = field(default_factory=dict)
    deferrals: dict[str, str] | None = None
    accounts: dict[str, tuple[dict[str, str], list[int]]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    progress_age_s: dict[str, float] = field(default_factory=dict)
    round_trips: int = 0


class LedgerCollector(Collector):
    """Reads the metrics of one namespace (and its logins) from Redis at every ``collect()``."""

    def __init__(self, client: redis.Redis, config: MetricsConfig | None = None) -> None:
        self.r = client
        self.config = config or MetricsConfig()
        self.keys = Keys(self.config.namespace)
        #: Final campaigns seen: id -> (creation score, their state, ends and login as read once).
        self._final: dict[str, tuple[float, _Head]] = {}
        #: When each exported campaign's final count last changed, as the scrapes saw it (the health
        #: checks' "no recipient became final for ..."; in memory: a restart judges afresh).
        self._progress = Progress()

    def describe(self) -> Iterable[Metric]:
        # Registration must not read Redis (the registry calls describe(), else nothing).
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            sc = self._read()
        except redis.RedisError as exc:
            log.warning("metrics: the ledger could not be read (%s: %s)", type(exc).__name__, exc)
            yield _one("smsc_up", 0)
            return
        yield _one("smsc_up", 1)
        yield from self._families(sc)
        yield _one("smsc_scrape_duration_seconds", time.perf_counter() - started)
        yield _one("smsc_scrape_redis_round_trips", sc.round_trips)

    # -- reading: three round trips --------------------------------------------------------------
    def _read(self) -> _Scrape:
        c, k, sc = self.config, self.keys, _Scrape()
        pipe = self.r.pipeline(transaction=False)
        pipe.time()
        pipe.zrevrange(k.campaigns, 0, c.scan - 1, withscores=True)
        pipe.zcard(k.campaigns)
        (secs, micros), listed, sc.known = pipe.execute()
        sc.round_trips = 1
        now = sc.now_ms = int(secs) * 1000 + int(micros) // 1000
        scanned = [(_s(x), float(score)) for x, score in listed]
        # A final campaign's state, end and login never change: read once, not at every scrape (keyed by
        # its creation time too, so that a namespace emptied and refilled is read afresh).
        final = self._final
        unread = [cid for cid, score in scanned if final.get(cid, (None,))[0] != score]

        pipe = self.r.pipeline(transaction=False)
        for cid in unread:
            pipe.hmget(k.campaign(cid), "state", "finished_ms", "cancelled_ms", "lease_until", "account")
        queue_reads = self._queue_reads(pipe, now)
        res = pipe.execute()
        sc.round_trips = 2
        heads = {cid: tuple(_s(v) if v is not None else None for v in head)
                 for cid, head in zip(unread, res[:len(unread)], strict=True)}
        for cid, score in scanned:
            if cid in heads:
                state, finished = heads[cid][0], heads[cid][1]
                if state in FINAL_STATES and finished:  # a cancelled one ends when its batches in flight do
                    final[cid] = (score, heads[cid])
            else:
                heads[cid] = final[cid][1]
        self._final = {cid: final[cid] for cid, _ in scanned if cid in final}
        chosen = self._choose(sc, [cid for cid, _ in scanned], heads)
        q = dict(zip(queue_reads, res[len(unread):], strict=True))

        pipe = self.r.pipeline(transaction=False)
        codes_key = getattr(k, "outcome_codes", None)  # not in the keyspace yet: docs/metrics.md
        for cid in chosen:
            pipe.hmget(k.campaign(cid), *_CAMPAIGN_FIELDS)
            pipe.hmget(k.delivery(cid), "state", "tracked", *(f"c{code}" for code in _DELIVERY_CODES))
            pipe.scard(k.parked(cid))
            if callable(codes_key):
                pipe.hgetall(codes_key(cid))
        leased = [_s(m) for m in q.pop("leased_members")]
        for ref in leased:
            pipe.hmget(k.batch(ref), "state", "settle")
        logins = self._logins(chosen, sc)
        for login in logins:
            pipe.hmget(k.account(login), *_ACCOUNT_FIELDS)
            for key in (k.inflight(login), k.status_inflight(login), k.probe(login), k.revoked(login)):
                pipe.zcount(key, f"({now}", "+inf")
        out = iter(pipe.execute())
        sc.round_trips = 3
        for cid in chosen:
            f = {name: _s(v) for name, v in zip(_CAMPAIGN_FIELDS, next(out), strict=True) if v is not None}
            sc.campaigns.append((cid, f))
            d = next(out)
            names = ("state", "tracked", *(f"c{code}" for code in _DELIVERY_CODES))
            sc.delivery[cid] = {name: _s(v) for name, v in zip(names, d, strict=True) if v is not None}
            sc.parked[cid] = int(next(out))
            if callable(codes_key):
                sc.codes[cid] = {_s(a): _s(b) for a, b in next(out).items()}
        sending = unknown_in_hand = 0
        for ref in leased:
            state, settle = next(out)
            sending += _s(state or b"") == "sending"
            unknown_in_hand += _s(settle or b"") == "1"
            sc.leased_by_campaign[ref.rpartition(":")[0]] += 1
        for login in logins:
            a = {name: _s(v) for name, v in zip(_ACCOUNT_FIELDS, next(out), strict=True) if v is not None}
            sc.accounts[login] = (a, [int(next(out)) for _ in range(4)])
        q["sending"], q["unknown_in_hand"] = sending, unknown_in_hand
        due_members = q.pop("due_members")
        for ref, _ in due_members:
            sc.due_by_campaign[_s(ref).rpartition(":")[0]] += 1
        self._health(sc, due_members, leased)
        raw = q.pop("deferrals", None)
        sc.deferrals = None if raw is None else {_s(a): _s(b) for a, b in raw.items()}
        sc.queues = {name: _lag(now, v) if name.endswith("_head") else float(v) for name, v in q.items()}
        return sc

    def _health(self, sc: _Scrape, due: Sequence[tuple[Any, float]], leased: Sequence[str]) -> None:
        """The health checks of the exported campaigns that are not final, from what the scrape read."""
        h = self.config.health
        queues = campaign_queues(due, leased, now_ms=sc.now_ms, due_age_s=h.due_age_s)
        active = []
        for cid, f in sc.campaigns:
            v = CampaignView.from_fields(cid, {**f, "state": sc.states.get(cid, "")}, **queues.get(cid, {}))
            if v.state in FINAL_STATES or v.state not in CAMPAIGN_STATES or v.state == "planning":
                continue
            active.append(cid)
            since = self._progress.since(v, sc.now_ms)
            sc.progress_age_s[cid] = max(sc.now_ms - since, 0) / 1000
            sc.findings += check(v, now_ms=sc.now_ms, since_ms=since, thresholds=h)
        self._progress.forget(active)
        self._progress.changed.clear()  # kept in this process only

    def _queue_reads(self, pipe: Any, now: int) -> list[str]:
        """Queue the namespace-wide reads on ``pipe``; their names, in order."""
        k, c = self.keys, self.config
        names: list[str] = []
        for name, key in (("due", k.due), ("leased", k.leased), ("poll", k.delivery_due),
                          ("webhook_due", k.webhook_due)):
            pipe.zcard(key)
            pipe.zcount(key, "-inf", now)  # due now; for the leases: run out
            names += [name, f"{name}_now"]
            if name != "leased":
                pipe.zrange(key, 0, 0, withscores=True)  # the oldest: its lag
                names.append(f"{name}_head")
        pipe.zcard(k.settle_due)
        pipe.zrangebyscore(k.due, "-inf", now, start=0, num=c.due_scan, withscores=True)
        pipe.zrange(k.leased, 0, c.leased_scan - 1)
        pipe.zcard(k.webhook_dead)
        pipe.hlen(k.webhook_new)
        names += ["settle", "due_members", "leased_members", "webhook_dead", "webhook_uncut"]
        deferrals = getattr(k, "deferrals", None)  # not in the keyspace yet: docs/metrics.md
        if isinstance(deferrals, str):
            pipe.hgetall(deferrals)
            names.append("deferrals")
        return names

    def _choose(self, sc: _Scrape, cids: Sequence[str], heads: Mapping[str, _Head]) -> list[str]:
        """The campaigns to export: the most recent non-final ones (an intake that stopped excepted) and
        the most recent that ended within the window, each up to its cap."""
        c = self.config
        active: list[str] = []
        final: list[str] = []
        since = sc.now_ms - int(c.final_window_s * 1000)
        for cid in cids:
            state_or_none, finished, cancelled, lease, account = heads[cid]
            state = state_or_none if state_or_none is not None else "missing"
            sc.scanned[state] += 1
            sc.states[cid] = state
            sc.accounts_of[cid] = account or ""
            if state in FINAL_STATES:
                ended = max(int(finished or 0), int(cancelled or 0))
                if ended >= since and len(final) < c.final_campaigns:
                    final.append(cid)
            elif (state == "planning" and int(lease or 0) < sc.now_ms) or state == "missing":
                continue  # an interrupted intake: nothing of it is queued, nothing moves
            elif len(active) < c.campaigns:
                active.append(cid)
            else:
                sc.unexported += 1
        return active + final

    def _logins(self, chosen: Sequence[str], sc: _Scrape) -> list[str]:
        """The deployment's own login and those of the exported campaigns."""
        wanted = {sc.accounts_of.get(cid, "") for cid in chosen}
        if self.config.account:
            wanted.add(self.config.account)
        return sorted(login for login in wanted if login and _login_ok(self.keys, login))

    # -- families --------------------------------------------------------------------------------
    def _families(self, sc: _Scrape) -> Iterator[Metric]:
        fam = {m.name: _family(m) for m in METRICS if m.name not in (
            "smsc_up", "smsc_scrape_duration_seconds", "smsc_scrape_redis_round_trips")}

        def add(name: str, labels: Sequence[str], value: float) -> None:
            fam[name].add_metric(list(labels), value)

        q = sc.queues
        add("smsc_server_time_seconds", (), sc.now_ms / 1000)
        add("smsc_campaigns_known", (), sc.known)
        for state, n in sorted(sc.scanned.items()):
            add("smsc_campaigns_scanned", (state,), n)
        add("smsc_campaigns_unexported_active", (), sc.unexported)
        for cid, f in sc.campaigns:
            self._campaign(add, sc, cid, f)
        add("smsc_due_batches", (), q["due"])
        add("smsc_due_now_batches", (), q["due_now"])
        add("smsc_due_lag_seconds", (), q["due_head"])
        add("smsc_due_scan_truncated", (), float(q["due_now"] > self.config.due_scan))
        add("smsc_leased_batches", (), q["leased"])
        add("smsc_leased_expired_batches", (), q["leased_now"])
        add("smsc_sending_batches", (), q["sending"])
        add("smsc_unknown_outcome_batches", ("queued",), q["settle"])
        add("smsc_unknown_outcome_batches", ("in_hand",), q["unknown_in_hand"])
        add("smsc_delivery_poll_batches", (), q["poll"])
        add("smsc_delivery_poll_due_batches", (), q["poll_now"])
        add("smsc_delivery_poll_lag_seconds", (), q["poll_head"])
        add("smsc_webhook_events", ("waiting",), q["webhook_due"])
        add("smsc_webhook_events", ("due",), q["webhook_due_now"])
        add("smsc_webhook_events", ("dead",), q["webhook_dead"])
        add("smsc_webhook_uncut_batches", (), q["webhook_uncut"])
        add("smsc_webhook_lag_seconds", (), q["webhook_due_head"])
        for guard, count in sorted((sc.deferrals or {}).items()):
            add("smsc_deferrals", (guard,), _num(count))
        for login, (a, slots) in sorted(sc.accounts.items()):
            self._account(add, sc.now_ms, login, a, slots)
        found = {(f.campaign_id, f.kind) for f in sc.findings}
        for cid, age in sc.progress_age_s.items():
            add("smsc_campaign_progress_age_seconds", (cid,), age)
            for kind in KINDS:
                add("smsc_campaign_health", (cid, kind), float((cid, kind) in found))
        by_kind = Counter(f.kind for f in sc.findings)
        for kind in KINDS:
            add("smsc_health_findings", (kind,), by_kind.get(kind, 0))
        yield from fam.values()

    def _campaign(self, add: Callable[[str, Sequence[str], float], None], sc: _Scrape, cid: str,
                  f: dict[str, str]) -> None:
        def n(name: str) -> int:
            return int(_num(f.get(name, "0")))

        total, sent, failed, cancelled = n("total"), n("sent"), n("failed"), n("cancelled")
        state = sc.states.get(cid, "")
        add("smsc_campaign_info", (cid, f.get("account", ""), f.get("account_name", "") or "default",
                                   f.get("priority", "") or "normal"), 1)
        for s in CAMPAIGN_STATES:
            add("smsc_campaign_state", (cid, s), float(s == state))
        add("smsc_campaign_enqueued_recipients", (cid,), total)
        for s, v in (("sent", sent), ("failed", failed), ("cancelled", cancelled)):
            add("smsc_campaign_recipients", (cid, s), v)
        add("smsc_campaign_pending_recipients", (cid,), total - sent - failed - cancelled)
        add("smsc_campaign_quarantined_recipients", (cid,), n("quarantined"))
        add("smsc_campaign_rejected_lines", (cid, "invalid"), n("invalid"))
        add("smsc_campaign_rejected_lines", (cid, "duplicate"), n("duplicates"))
        add("smsc_campaign_sms", (cid,), n("sms"))
        add("smsc_campaign_cost", (cid,), n("cost_milli") / 1000)
        add("smsc_campaign_batches", (cid,), n("batches"))
        add("smsc_campaign_due_batches", (cid,), sc.due_by_campaign.get(cid, 0))
        add("smsc_campaign_leased_batches", (cid,), sc.leased_by_campaign.get(cid, 0))
        add("smsc_campaign_parked_batches", (cid,), sc.parked.get(cid, 0))
        for name, fld in (("created", "created_ms"), ("started", "started_ms"), ("finished", "finished_ms")):
            if n(fld):
                add(f"smsc_campaign_{name}_timestamp_seconds", (cid,), n(fld) / 1000)
        for code, count in sorted(sc.codes.get(cid, {}).items()):
            add("smsc_campaign_failed_by_code", (cid, code), _num(count))
        for result in ("sent", "failed"):
            if f"settled_{result}" in f:
                add("smsc_campaign_settled_recipients", (cid, result), n(f"settled_{result}"))
        if "unknown_outcomes" in f:
            add("smsc_campaign_unknown_outcomes", (cid,), n("unknown_outcomes"))
        d = sc.delivery.get(cid, {})
        counts = {code: int(_num(d.get(f"c{code}", "0"))) for code in _DELIVERY_CODES}
        fun = funnel({code: v for code, v in counts.items() if v}, sent)
        other = int(_num(d.get("tracked", "0"))) - sum(counts.values())
        by_state = dict(fun["by_state"])
        if other > 0:  # statuses beyond the documented ones: final, not delivered
            by_state["other"] = other
            fun["failed"] += other
            fun["pending"] = max(fun["pending"] - other, 0)
        for s, v in sorted(by_state.items()):
            add("smsc_campaign_delivery_recipients", (cid, s), v)
        for stage in ("delivered", "failed", "pending", "unknown"):
            add("smsc_campaign_delivery_funnel_recipients", (cid, stage), fun[stage])
        add("smsc_campaign_delivery_final", (cid,), float(d.get("state") == "delivered_final"))

    def _account(self, add: Callable[[str, Sequence[str], float], None], now_ms: int, login: str,
                 a: dict[str, str], slots: list[int]) -> None:
        state = a.get("state") or "ok"
        for s in ACCOUNT_STATES:
            add("smsc_account_state", (login, s), float(s == state))
        add("smsc_account_backoff_seconds", (login,), max(_num(a.get("backoff_until", "0")) - now_ms, 0) / 1000)
        add("smsc_account_quiet_seconds", (login,), max(_num(a.get("quiet_until", "0")) - now_ms, 0) / 1000)
        add("smsc_account_backoffs", (login,), _num(a.get("backoffs", "0")))
        add("smsc_account_auth_errors", (login,), _num(a.get("auth_errors", "0")))
        add("smsc_account_slow_answers", (login,), _num(a.get("slow_answers", "0")))
        add("smsc_account_errors_in_a_row", (login,), _num(a.get("errors_in_a_row", "0")))
        verified = a.get("verified") == "1"
        add("smsc_account_verified", (login,), float(verified))
        cap = self.config.concurrency
        if a.get("adaptive_cap"):
            cap = min(cap, max(1, int(_num(a["adaptive_cap"]))))
        add("smsc_login_slots_cap", (login,), cap if verified else 1)
        for kind, v in zip(("inflight", "status", "probe", "revoked"), slots, strict=True):
            add("smsc_login_slots_in_use", (login, kind), v)


def _family(m: MetricSpec) -> GaugeMetricFamily | CounterMetricFamily:
    cls = CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily
    return cls(m.name, m.doc, labels=list(m.labels))


def _one(name: str, value: float) -> Metric:
    f = _family(_SPECS[name])
    f.add_metric([], value)
    return f


def _num(v: str | None) -> float:
    try:
        return float(v or 0)
    except ValueError:
        return 0.0


def _lag(now_ms: int, head: Sequence[tuple[Any, float]]) -> float:
    """Seconds the oldest member of a ZSET scored by due time is past due (0 when none is)."""
    return max(now_ms - head[0][1], 0) / 1000 if head else 0.0


def _login_ok(keys: Keys, login: str) -> bool:
    try:
        keys.account(login)
    except ValueError:  # not a login id (a campaign of a malformed account): nothing to read
        return False
    return True


# -- serving -------------------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: A scrape's Redis reads give up after this long (a scrape that hangs tells Prometheus nothing; its own
#: timeout is 10 s by default).
_REDIS_TIMEOUT_S = 5.0
#: Bodies smaller than this go uncompressed (gzip costs more than it saves on a few hundred bytes).
_GZIP_MIN_BYTES = 1024


class MetricsApp:
    """An ASGI app that answers every HTTP request (or only ``path``) with the registry's metrics, in the
    format the ``Accept`` header asks for (Prometheus text or OpenMetrics), gzipped when accepted.

    Not ``prometheus_client.make_asgi_app``: that one collects on the event loop's thread, so a scrape's
    Redis reads would stall every other request of a server it is mounted in (the push receiver's), and
    it refuses the ``lifespan`` scope that uvicorn sends; here the collection runs in a worker thread,
    with the library's own encoders."""

    def __init__(self, registry: CollectorRegistry, *, path: str | None = None) -> None:
        self.registry = registry
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if self.path is not None and scope.get("path", "").rstrip("/") != self.path.rstrip("/"):
            await _answer(send, 404, b"not found: the metrics are at " + self.path.encode() + b"\n",
                          "text/plain; charset=utf-8")
            return
        headers = {_s(k).lower(): _s(v) for k, v in scope.get("headers", [])}
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body: bytes = await asyncio.to_thread(encoder, self.registry)
        extra: list[tuple[bytes, bytes]] = []
        if "gzip" in headers.get("accept-encoding", "") and len(body) >= _GZIP_MIN_BYTES:
            body = gzip.compress(body, compresslevel=5)
            extra.append((b"content-encoding", b"gzip"))
        await _answer(send, 200, body, content_type, extra)


async def _answer(send: Send, status: int, body: bytes, content_type: str,
                  extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


def registry_for(settings: Any, *, client: redis.Redis | None = None, **overrides: Any) -> CollectorRegistry:
    """A registry of its own holding the :class:`LedgerCollector` of these settings (``redis_url``,
    ``smsc_namespace``, ``smsc_account``, ``smsc_concurrency``, the metrics settings)."""
    conn = client or redis.Redis.from_url(settings.redis_url, socket_timeout=_REDIS_TIMEOUT_S,
                                          socket_connect_timeout=_REDIS_TIMEOUT_S)
    registry = CollectorRegistry()
    registry.register(LedgerCollector(conn, MetricsConfig.from_settings(settings, **overrides)))
    return registry


def metrics_app(settings: Any, *, path: str | None = None, client: redis.Redis | None = None) -> MetricsApp:
    """The ASGI app of these settings' metrics: mount it (every path it is given answers the metrics), or
    give ``path`` to answer only there (what :func:`serve_metrics` does with ``/metrics``)."""
    return MetricsApp(registry_for(settings, client=client), path=path)


def serve_metrics(settings: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                  announce: Callable[[str], None] | None = None) -> None:
    """Serve ``GET /metrics`` with uvicorn until SIGTERM/SIGINT (``smsc-mailer metrics``). ``port`` 0 takes
    a free one; ``announce`` hears ``http://host:port/metrics`` once the socket listens. ``OSError`` when
    the address cannot be bound."""
    import uvicorn

    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (design notes: ~40 ms otherwise)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # a scrape that comes before the server's loop runs waits in the backlog
    except OSError:
        sock.close()
        raise
    url = f"http://{host}:{sock.getsockname()[1]}/metrics"
    if announce is not None:
        announce(url)
    config = uvicorn.Config(metrics_app(settings, path="/metrics"), log_level="warning", access_log=False,
                            lifespan="on", loop="auto", http="httptools" if _has("httptools") else "h11")
    uvicorn.Server(config).run(sockets=[sock])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.metrics [--host H] [--port P]``: serve the settings' metrics (environment /
    ``.env``), printing ``metrics listening on URL``; bad settings or address: one line, exit 2."""
    import argparse

    from worker.settings import ConfigError, get_settings

    p = argparse.ArgumentParser(prog="python -m worker.metrics")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 = a free port (the printed line names it)")
    args = p.parse_args(argv)
    try:
        s = get_settings()
    except ConfigError as exc:
        print(f"metrics: {exc}", flush=True)
        return 2
    try:
        serve_metrics(s, args.host, args.port, announce=lambda url: print(f"metrics listening on {url}", flush=True))
    except OSError as exc:
        print(f"metrics: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
