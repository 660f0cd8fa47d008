"""``/metrics`` read from the ledger: what an operator's Prometheus sees equals what ``status`` says.

On the private real redis-server; campaigns enqueued through the producer's API
(:func:`worker.api.enqueue_campaign`) and sent through the real ``process_batch`` with the simulator as the
client's in-process transport. A scrape is parsed as Prometheus parses it
(``prometheus_client.parser``). The alert rules and the Grafana dashboard in deploy/ are checked against
what the collector exports.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.delivery import DeliveryStore, Status
from scheduler.guards import Answer, Guards
from scheduler.keys import Keys, batch_ref
from scheduler.ledger import server_time_ms
from worker.api import enqueue_campaign
from worker.delivery.report import delivery_status, store_for
from worker.metrics import METRICS, MetricsApp, metrics_app, registry_for
from worker.runtime import Runtime
from worker.sending import process_batch
from worker.settings import Settings
from worker.sim import SimConfig, SimTransport, Simulator
from worker.smsc.client import SmscClient

ROOT = Path(__file__).resolve().parents[2]
LOGIN, PASSWORD, NS = "acme", "acme-password", "m"
PHONES = [f"+7900{i:07d}" for i in range(1, 21)]
BAD = [f"+7955{i:07d}" for i in range(1, 4)]  # the simulator refuses these numbers (error 8)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def settings_for(redis_server: Any, **kw: Any) -> Settings:
    return Settings(redis_url=redis_server.url, smsc_login=LOGIN, smsc_password=SecretStr(PASSWORD),
                    smsc_base_url="http://smsc.test", smsc_namespace=NS, smsc_timeout=1.0, **kw)


def scrape(registry: CollectorRegistry) -> Samples:
    """One scrape as Prometheus reads it: ``{(sample name, labels): value}``."""
    out: Samples = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def campaigns_in(samples: Samples) -> set[str]:
    return {dict(lbl)["campaign"] for name, lbl in samples if name == "smsc_campaign_info"}


def assert_equals_status(samples: Samples, st: dict[str, Any]) -> None:
    """The campaign's series say what ``status --json`` says: the ledger's counters and the delivery funnel."""
    cid = st["campaign_id"]
    got = {"total": value(samples, "smsc_campaign_enqueued_recipients", campaign=cid),
           "pending": value(samples, "smsc_campaign_pending_recipients", campaign=cid),
           "sms": value(samples, "smsc_campaign_sms_total", campaign=cid),
           "cost": value(samples, "smsc_campaign_cost_total", campaign=cid),
           "invalid": value(samples, "smsc_campaign_rejected_lines", campaign=cid, reason="invalid"),
           "duplicates": value(samples, "smsc_campaign_rejected_lines", campaign=cid, reason="duplicate"),
           "batches": value(samples, "smsc_campaign_batches", campaign=cid)}
    for state in ("sent", "failed", "cancelled"):
        got[state] = value(samples, "smsc_campaign_recipients_total", campaign=cid, state=state)
    want = {k: float(st[k]) for k in got}
    assert got == want
    assert value(samples, "smsc_campaign_state", campaign=cid, state=st["state"]) == 1
    d = st["delivery"]
    for stage in ("delivered", "failed", "pending", "unknown"):
        assert value(samples, "smsc_campaign_delivery_funnel_recipients", campaign=cid, stage=stage) == d[stage]
    by_state = {dict(lbl)["state"]: v for (name, lbl), v in samples.items()
                if name == "smsc_campaign_delivery_recipients" and dict(lbl)["campaign"] == cid}
    assert by_state == {k: float(v) for k, v in d["by_state"].items()}


def status_of(s: Settings, camp: Campaigns, cid: str) -> dict[str, Any]:
    """What ``smsc-mailer status --json`` prints (the same two calls)."""
    st = camp.status(cid, configured_cap=s.smsc_concurrency)
    st["delivery"] = delivery_status(store_for(s, camp), cid, sent=st["sent"])
    return st


@pytest.fixture
def s(redis_server: Any, redis_client: redis.Redis) -> Settings:
    return settings_for(redis_server)


@pytest.fixture
def camp(redis_client: redis.Redis) -> Campaigns:
    return Campaigns(redis_client, Keys(NS))


@pytest.fixture
def registry(s: Settings, redis_client: redis.Redis) -> CollectorRegistry:
    return registry_for(s, client=redis_client)


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(login=LOGIN, password=PASSWORD, seed=7, undeliverable_prefixes=("7955",)))


@pytest.fixture
def runtime(s: Settings, redis_client: redis.Redis, sim: Simulator) -> Iterator[Runtime]:
    client = SmscClient(base_url=s.smsc_base_url, login=LOGIN, password=SecretStr(PASSWORD),
                        timeout_s=s.smsc_timeout, transport=SimTransport(sim))
    rt = Runtime(s, redis=redis_client, client=client)
    yield rt
    client.close()


def send_all(rt: Runtime, cid: str) -> None:
    """Claim what is due and process it, as the dispatcher and a worker would, until nothing is pending."""
    for _ in range(50):
        if rt.campaigns.status(cid)["pending"] == 0:
            return
        for ref in rt.ledger.claim(window=100, claim_lease_ms=60_000, max_claim=100):
            process_batch(rt, ref)
    raise AssertionError(f"campaign {cid} did not end: {rt.campaigns.status(cid)}")


# -- the campaign's counters -----------------------------------------------------------------------------

def test_after_an_enqueue_the_scrape_shows_the_receipt_all_pending_and_due(
        s: Settings, redis_client: redis.Redis, camp: Campaigns, registry: CollectorRegistry) -> None:
    receipt = enqueue_campaign([*PHONES, PHONES[0], "hello"], "Your code: 4711", settings=s,
                               redis_conn=redis_client, batch_size=7)
    samples = scrape(registry)
    cid = receipt.campaign_id
    assert value(samples, "smsc_campaign_enqueued_recipients", campaign=cid) == receipt.total == 20
    assert value(samples, "smsc_campaign_pending_recipients", campaign=cid) == receipt.total
    assert value(samples, "smsc_campaign_rejected_lines", campaign=cid, reason="invalid") == receipt.invalid == 1
    assert value(samples, "smsc_campaign_rejected_lines", campaign=cid, reason="duplicate") == receipt.duplicates
    assert value(samples, "smsc_campaign_state", campaign=cid, state="queued") == 1
    assert value(samples, "smsc_campaign_info", campaign=cid, login=LOGIN, account="default", priority="normal") == 1
    # its three batches are due now, waiting for a worker
    assert value(samples, "smsc_due_batches") == value(samples, "smsc_due_now_batches") == 3
    assert value(samples, "smsc_campaign_due_batches", campaign=cid) == 3
    assert_equals_status(samples, status_of(s, camp, cid))


def test_after_sending_every_counter_equals_status_and_failures_are_counted(
        s: Settings, redis_client: redis.Redis, camp: Campaigns, registry: CollectorRegistry,
        runtime: Runtime) -> None:
    cid = enqueue_campaign(PHONES[:10] + BAD + PHONES[10:], "Your code: 4711", settings=s,
                           redis_conn=redis_client, batch_size=5).campaign_id
    send_all(runtime, cid)
    st = status_of(s, camp, cid)
    assert (st["state"], st["sent"], st["failed"], st["pending"]) == ("completed", 20, 3, 0)
    samples = scrape(registry)
    assert_equals_status(samples, st)
    assert value(samples, "smsc_campaign_delivery_funnel_recipients", campaign=cid, stage="pending") == 20
    assert value(samples, "smsc_due_batches") == value(samples, "smsc_leased_batches") == 0
    assert value(samples, "smsc_campaign_finished_timestamp_seconds", campaign=cid) > 0

    # delivery statuses arrive: delivered, read, undeliverable — the funnel moves as status's does
    store = DeliveryStore(redis_client, Keys(NS))
    rows = store.rows(batch_ref(cid, 0))
    sent = [r for r in rows if r.state == "sent"]
    now_s = int(time.time())
    store.apply([Status(batch_ref(cid, 0), sent[0].row, 1, 0, now_s, sent[0].phone),
                 Status(batch_ref(cid, 0), sent[1].row, 2, 0, now_s, sent[1].phone),
                 Status(batch_ref(cid, 0), sent[2].row, 20, 1, now_s, sent[2].phone)])
    st = status_of(s, camp, cid)
    assert (st["delivery"]["delivered"], st["delivery"]["failed"]) == (2, 1)
    assert_equals_status(scrape(registry), st)


def test_a_cancelled_campaign_counts_its_cancelled_recipients_as_status_does(
        s: Settings, redis_client: redis.Redis, camp: Campaigns, registry: CollectorRegistry) -> None:
    cid = enqueue_campaign(PHONES, "Your code: 4711", settings=s, redis_conn=redis_client, batch_size=5).campaign_id
    camp.cancel(cid)
    st = status_of(s, camp, cid)
    assert (st["state"], st["cancelled"]) == ("cancelled", 20)
    samples = scrape(registry)
    assert_equals_status(samples, st)
    assert value(samples, "smsc_due_batches") == 0


# -- queues, lag, the account ---------------------------------------------------------------------------

def test_due_lag_is_the_oldest_due_batch_age_on_the_server_clock(
        redis_client: redis.Redis, camp: Campaigns, registry: CollectorRegistry) -> None:
    assert value(scrape(registry), "smsc_due_lag_seconds") == 0  # nothing due, no lag
    past = server_time_ms(redis_client) - 90_000
    spec = CampaignSpec(message="hi", parts=1, account=LOGIN, batch_size=5, campaign_id="late")
    camp.create(spec, ((i + 1, p) for i, p in enumerate(PHONES)), now_ms=past)
    samples = scrape(registry)
    assert 90 <= value(samples, "smsc_due_lag_seconds") < 3600
    assert value(samples, "smsc_server_time_seconds") * 1000 >= past + 90_000


def test_a_stopped_account_its_backoff_and_its_slots_are_exported(
        s: Settings, redis_client: redis.Redis, registry: CollectorRegistry) -> None:
    guards = Guards(redis_client, Keys(NS))
    samples = scrape(registry)
    assert value(samples, "smsc_account_state", login=LOGIN, state="ok") == 1
    assert value(samples, "smsc_login_slots_cap", login=LOGIN) == 1  # not verified yet: one at a time

    guards.account_outcome(LOGIN, Answer.OK)
    assert guards.try_slot(LOGIN, "t1", lease_ms=60_000).value == "taken"
    assert guards.try_slot(LOGIN, "t2", lease_ms=60_000).value == "taken"
    samples = scrape(registry)
    assert value(samples, "smsc_login_slots_in_use", login=LOGIN, kind="inflight") == 2
    assert value(samples, "smsc_login_slots_cap", login=LOGIN) == s.smsc_concurrency

    guards.account_outcome(LOGIN, Answer.BLOCK, reason="error 4")
    samples = scrape(registry)
    assert 0 < value(samples, "smsc_account_backoff_seconds", login=LOGIN) <= 30
    assert value(samples, "smsc_account_backoffs_total", login=LOGIN) == 1

    guards.account_outcome(LOGIN, Answer.AUTH, reason="error 2: bad password")
    samples = scrape(registry)
    assert value(samples, "smsc_account_state", login=LOGIN, state="stopped") == 1
    assert value(samples, "smsc_account_state", login=LOGIN, state="ok") == 0
    assert value(samples, "smsc_account_auth_errors_total", login=LOGIN) == 1
    assert value(samples, "smsc_account_verified", login=LOGIN) == 0


def test_a_request_out_shows_as_a_batch_sending_in_the_workers_hands(
        s: Settings, redis_client: redis.Redis, registry: CollectorRegistry, runtime: Runtime) -> None:
    cid = enqueue_campaign(PHONES[:5], "Your code: 4711", settings=s, redis_conn=redis_client).campaign_id
    ref = runtime.ledger.claim(window=10, claim_lease_ms=60_000, max_claim=10)[0]
    assert runtime.ledger.begin(ref, token="tok", exec_lease_ms=60_000, account=LOGIN).owned
    assert runtime.ledger.mark_sending(ref, token="tok", lease_ms=60_000, settle_margin_ms=1_000)
    samples = scrape(registry)
    assert value(samples, "smsc_sending_batches") == value(samples, "smsc_leased_batches") == 1
    assert value(samples, "smsc_campaign_leased_batches", campaign=cid) == 1
    assert value(samples, "smsc_due_batches") == 0


def test_an_answer_that_never_came_shows_as_a_batch_to_settle_and_nothing_counted_sent(
        s: Settings, redis_client: redis.Redis, camp: Campaigns, registry: CollectorRegistry, runtime: Runtime,
        sim: Simulator) -> None:
    sim.configure(delayed_answer_rate=1.0, delayed_answer_s=5.0)  # accepted, but the answer comes too late
    cid = enqueue_campaign(PHONES[:5], "Your code: 4711", settings=s, redis_conn=redis_client).campaign_id
    ref = runtime.ledger.claim(window=10, claim_lease_ms=60_000, max_claim=10)[0]
    process_batch(runtime, ref)
    samples = scrape(registry)
    assert value(samples, "smsc_unknown_outcome_batches", where="queued") == 1
    assert value(samples, "smsc_unknown_outcome_batches", where="in_hand") == 0
    assert value(samples, "smsc_due_batches") == 1 and value(samples, "smsc_due_now_batches") == 0  # settle later
    assert value(samples, "smsc_account_slow_answers_total", login=LOGIN) == 1
    assert_equals_status(samples, status_of(s, camp, cid))  # 5 pending: unknown until settled


# -- bounds ------------------------------------------------------------------------------------------------

def test_only_the_most_recent_active_and_recently_ended_campaigns_get_series(
        s: Settings, redis_client: redis.Redis, camp: Campaigns) -> None:
    cids = []
    for i in range(6):
        cids.append(enqueue_campaign(PHONES[:3], f"Campaign {i}", settings=s, redis_conn=redis_client).campaign_id)
        time.sleep(0.002)  # distinct creation times: "most recent" is well defined
    camp.cancel(cids[0])
    camp.cancel(cids[5])
    reg = registry_for(s, client=redis_client, campaigns=2, final_campaigns=1)
    samples = scrape(reg)
    # the two most recent active ones, the most recent that ended; two active ones are left out and counted
    assert campaigns_in(samples) == {cids[4], cids[3], cids[5]}
    assert value(samples, "smsc_campaigns_unexported_active") == 2
    assert value(samples, "smsc_campaigns_known") == 6
    assert value(samples, "smsc_campaigns_scanned", state="queued") == 4
    # a campaign that ended before the window is not exported any more
    reg = registry_for(s, client=redis_client, final_window_s=0.0, campaigns=10)
    assert campaigns_in(scrape(reg)) == set(cids[1:5])


def test_a_scrape_makes_three_redis_round_trips_whatever_the_number_of_campaigns(
        s: Settings, redis_client: redis.Redis, registry: CollectorRegistry) -> None:
    enqueue_campaign(PHONES, "first", settings=s, redis_conn=redis_client)
    one = value(scrape(registry), "smsc_scrape_redis_round_trips")
    for i in range(20):
        enqueue_campaign(PHONES, f"more {i}", settings=s, redis_conn=redis_client, batch_size=2)
    samples = scrape(registry)
    assert len(campaigns_in(samples)) == 21
    assert value(samples, "smsc_scrape_redis_round_trips") == one == 3


def test_redis_unreachable_is_smsc_up_zero_not_an_error(s: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = redis.Redis(port=port, socket_connect_timeout=0.5)
    reg = registry_for(s, client=dead)
    assert scrape(reg) == {("smsc_up", frozenset()): 0.0}
    status, _, body = call_app(MetricsApp(reg))
    assert status == 200 and b"smsc_up 0.0" in body


# -- the ASGI app --------------------------------------------------------------------------------------------

def call_app(app: Callable[..., Any], path: str = "/metrics",
             headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": headers or []}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_the_app_answers_text_openmetrics_or_gzip_as_asked_and_404_elsewhere(
        s: Settings, redis_client: redis.Redis) -> None:
    enqueue_campaign(PHONES, "hi", settings=s, redis_conn=redis_client)
    app = metrics_app(s, path="/metrics", client=redis_client)
    status, headers, body = call_app(app)
    assert status == 200 and headers[b"content-type"].startswith(b"text/plain")
    assert b"smsc_campaign_enqueued_recipients{" in body
    status, headers, body = call_app(app, headers=[(b"accept", b"application/openmetrics-text; version=1.0.0")])
    assert headers[b"content-type"].startswith(b"application/openmetrics-text") and body.endswith(b"# EOF\n")
    status, headers, body = call_app(app, headers=[(b"accept-encoding", b"gzip")])
    assert headers[b"content-encoding"] == b"gzip" and b"smsc_up 1.0" in gzip.decompress(body)
    assert call_app(app, path="/other")[0] == 404
    assert call_app(metrics_app(s, client=redis_client), path="/anything")[0] == 200  # mounted: every path


# -- the counters the sending keeps beside the ledger ---------------------------------------------------------

def test_failures_by_code_and_flood_deferrals_are_counted_by_the_sending(
        s: Settings, redis_client: redis.Redis, runtime: Runtime, registry: CollectorRegistry) -> None:
    phones = [*PHONES[:4], "+79550000001", "+79550000002"]  # the simulator refuses 7955… with error 8
    cid = enqueue_campaign(phones, "hi", settings=s, redis_conn=redis_client, batch_size=3).campaign_id
    send_all(runtime, cid)
    st = runtime.campaigns.status(cid)
    assert st["failed"] == 2
    assert value(scrape(registry), "smsc_campaign_failed_by_code_total", campaign=cid, code="8") == 2
    # 50 messages to one subscriber in a chain, then the 51st is held by the flood guard: one deferral
    for i in range(51):
        c = enqueue_campaign(["+79000000099"], f"message {i}", settings=s, redis_conn=redis_client).campaign_id
        for ref in runtime.ledger.claim(window=100, claim_lease_ms=60_000, max_claim=100):
            process_batch(runtime, ref)
    assert runtime.campaigns.status(c)["pending"] == 1
    assert value(scrape(registry), "smsc_deferrals_total", guard="flood") == 1


def test_settle_results_are_read_from_the_campaigns_counters(
        s: Settings, redis_client: redis.Redis, registry: CollectorRegistry) -> None:
    # (the sending writes these when status.php settles an unknown outcome: tests/unit/test_sending.py drives
    # that path; here, that the collector exports exactly what the campaign HASH holds)
    cid = enqueue_campaign(PHONES, "hi", settings=s, redis_conn=redis_client).campaign_id
    assert not any(name == "smsc_campaign_settled_recipients_total" for name, _ in scrape(registry))
    redis_client.hset(Keys(NS).campaign(cid), mapping={"settled_sent": 4, "settled_failed": 1, "unknown_outcomes": 2})
    samples = scrape(registry)
    assert value(samples, "smsc_campaign_settled_recipients_total", campaign=cid, result="sent") == 4
    assert value(samples, "smsc_campaign_unknown_outcomes_total", campaign=cid) == 2


# -- the catalogue, the docs, the alert rules and the dashboard ----------------------------------------------

def full_scrape(s: Settings, redis_client: redis.Redis, runtime: Runtime) -> Samples:
    cid = enqueue_campaign(PHONES + BAD, "hi", settings=s, redis_conn=redis_client).campaign_id
    send_all(runtime, cid)
    enqueue_campaign(PHONES, "again", settings=s, redis_conn=redis_client)
    return scrape(registry_for(s, client=redis_client))


def test_every_exported_series_is_in_the_catalogue_with_its_labels_and_the_docs_list_them(
        s: Settings, redis_client: redis.Redis, runtime: Runtime) -> None:
    specs = {m.sample_name: m for m in METRICS}
    for name, labels in full_scrape(s, redis_client, runtime):
        assert name in specs, f"{name} is exported but not in worker.metrics.METRICS"
        assert {k for k, _ in labels} == set(specs[name].labels), name
    docs = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    missing = [m.sample_name for m in METRICS if f"`{m.sample_name}`" not in docs]
    assert not missing, f"docs/metrics.md does not list {missing}"


_METRIC_NAME = re.compile(r"\bsmsc_[a-z_]+\b")


def load_rules() -> list[dict[str, Any]]:
    """deploy/prometheus/alerts.yml: JSON (which is YAML) after its full-line ``#`` comments."""
    text = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    doc = json.loads("\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_the_alert_rules_name_only_exported_metrics_and_cover_the_four_alerts() -> None:
    exported = {m.sample_name for m in METRICS}
    rules = load_rules()
    assert {r["alert"] for r in rules} >= {"SmscCampaignStuck", "SmscFailureRateHigh", "SmscDueLagHigh",
                                           "SmscAccountStopped"}
    for r in rules:
        names = set(_METRIC_NAME.findall(r["expr"]))
        assert names and names <= exported, f"{r['alert']}: {names - exported} not exported"
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", r.get("for", "0m")), r["alert"]


def test_the_dashboard_is_valid_json_on_a_datasource_variable_and_queries_only_exported_metrics() -> None:
    exported = {m.sample_name for m in METRICS}
    dash = json.loads((ROOT / "deploy" / "grafana" / "smsc-mailer.json").read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    titles = {p["title"] for p in dash["panels"]}
    for want in ("Send rate", "Failures by code", "Due lag", "Login slots", "Account state", "Delivery funnel"):
        assert any(t.startswith(want) for t in titles), want
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            names = set(_METRIC_NAME.findall(t["expr"]))
            assert names and names <= exported, f"{p['title']}: {names - exported} not exported"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
