"""The health checks (``scheduler.health``): a stalled campaign, batches due and not taken, a failure rate —
on the real redis-server, campaigns made and sent through the ledger's scripts on a stepped clock (``T``)."""

from __future__ import annotations

import pytest
import redis

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.health import CampaignView, Finding, Thresholds, check, health
from scheduler.keys import Keys
from scheduler.ledger import Ledger, Outcome
from scheduler.spreading import PlanOptions

T = 1_700_000_000_000
ACCT = "acct"
MIN = 60_000


def phone(i: int) -> str:
    return f"+7900{i:07d}"


def create(campaigns: Campaigns, cid: str, n: int, *, batch_size: int = 10, now_ms: int = T,
           plan: PlanOptions | None = None) -> None:
    spec = CampaignSpec(message="hello", parts=1, account=ACCT, batch_size=batch_size, campaign_id=cid, plan=plan)
    campaigns.create(spec, ((i + 1, phone(i)) for i in range(n)), now_ms=now_ms)


def send(ledger: Ledger, ref: str, *, now_ms: int, failed: int = 0, keep_lease: bool = False) -> None:
    """One execution of a batch, as a worker's: claim, begin, record (``failed`` of its recipients fail).
    The claim serves campaigns in turn: a test sends before it creates the next campaign."""
    assert ledger.claim(window=10_000, claim_lease_ms=60_000, max_claim=1, now_ms=now_ms) == [ref]
    b = ledger.begin(ref, token="tok-" + ref, exec_lease_ms=60_000, account=ACCT, now_ms=now_ms)
    if keep_lease:
        return
    out = Outcome(sent=len(b.phones) - failed, failed=failed)
    for i, p in enumerate(b.phones):
        out.add_row(p, "failed" if i < failed else "sent", code=8 if i < failed else "")
    assert ledger.record(ref, token="tok-" + ref, outcome=out, now_ms=now_ms)[0]


def kinds(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.campaign_id, f.kind) for f in findings]


def look(client: redis.Redis, keys: Keys, now_ms: int, **kw: object) -> list[Finding]:
    return health(client, keys, now_ms=now_ms, **kw)  # type: ignore[arg-type]


def test_a_campaign_whose_due_batches_nobody_takes_is_stalled_and_its_batches_overdue(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns) -> None:
    create(campaigns, "c1", 30)
    assert look(redis_client, keys, T + 4 * MIN) == []
    found = look(redis_client, keys, T + 11 * MIN)
    assert kinds(found) == [("c1", "stalled"), ("c1", "due_overdue")]
    assert found[0].detail == ("no recipient became final for 11m00s while 30 are pending "
                               "(3 batches due now, 0 batches in the workers' hands)")
    assert found[1].detail == ("3 batches due for more than 5m00s and not taken (the oldest for 11m00s): "
                               "are the workers running?")


def test_a_campaign_that_makes_progress_is_not_stalled_until_it_stops_for_stall_s(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    create(campaigns, "c1", 30)
    send(ledger, "c1:0", now_ms=T + MIN)
    hour = {"due_age_s": 3600}  # the batches' age apart
    assert look(redis_client, keys, T + 2 * MIN, **hour) == []  # the first look sees 10 final: judged from now
    send(ledger, "c1:1", now_ms=T + 8 * MIN, keep_lease=True)  # in a worker's hands, nothing recorded
    assert kinds(look(redis_client, keys, T + 11 * MIN, **hour)) == []
    found = look(redis_client, keys, T + 12 * MIN + 1, **hour)
    assert kinds(found) == [("c1", "stalled")]
    assert "(1 batch due now, 1 batch in the workers' hands)" in found[0].detail


def test_the_ledgers_progress_time_is_used_when_the_campaign_keeps_one(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns) -> None:
    create(campaigns, "c1", 30)
    redis_client.hset(keys.campaign("c1"), "progress_ms", T + 10 * MIN)
    assert kinds(look(redis_client, keys, T + 19 * MIN, due_age_s=3600)) == []
    assert kinds(look(redis_client, keys, T + 20 * MIN, due_age_s=3600)) == [("c1", "stalled")]


def test_a_campaign_waiting_for_its_next_group_or_paused_is_not_stalled(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    # Spread over 2 hours, a group every 60 minutes: the second group is due an hour after the first.
    create(campaigns, "spread", 20, plan=PlanOptions(period_h=2, freq_min=60, start_ms=T, window=None, tz_h=0.0,
                                                     recipient_time=False))
    send(ledger, "spread:0", now_ms=T)
    create(campaigns, "paused", 20)
    campaigns.pause("paused", now_ms=T)
    # The paused campaign's batches are still due (no worker began them to park them): overdue, not stalled.
    assert kinds(look(redis_client, keys, T + 30 * MIN)) == [("paused", "due_overdue")]


def test_a_failure_rate_above_the_limit_is_reported_once_enough_recipients_have_an_outcome(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    create(campaigns, "c1", 100, batch_size=25)
    send(ledger, "c1:0", now_ms=T, failed=10)
    assert look(redis_client, keys, T) == []  # 25 attempts: below min_attempts
    send(ledger, "c1:1", now_ms=T, failed=4)
    found = look(redis_client, keys, T)
    assert kinds(found) == [("c1", "failure_rate")]
    assert found[0].detail == ("28% of the recipients with an outcome failed (14 of 50; the limit is 20%): "
                               "see its report's codes")
    assert look(redis_client, keys, T, failure_rate=0.3) == []


def test_a_final_campaign_has_no_findings_and_leaves_the_progress_snapshot(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    create(campaigns, "c1", 20, batch_size=10)
    send(ledger, "c1:0", now_ms=T, failed=10)
    look(redis_client, keys, T)
    assert redis_client.hexists(keys.prefix + "health", "c1")
    send(ledger, "c1:1", now_ms=T + MIN, failed=10)
    assert campaigns.status("c1")["state"] in ("completed", "failed")
    assert look(redis_client, keys, T + 60 * MIN) == []
    assert not redis_client.hexists(keys.prefix + "health", "c1")


def test_campaign_ids_restricts_the_look_and_remember_false_writes_nothing(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns) -> None:
    create(campaigns, "a", 10)
    create(campaigns, "b", 10)
    assert kinds(look(redis_client, keys, T + 11 * MIN, campaign_ids=["b"])) == [("b", "stalled"),
                                                                                   ("b", "due_overdue")]
    redis_client.delete(keys.prefix + "health")
    look(redis_client, keys, T + 12 * MIN, remember=False)
    assert not redis_client.exists(keys.prefix + "health")


def test_two_redis_round_trips_whatever_the_number_of_campaigns(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(30):
        create(campaigns, f"c{i}", 5)
    look(redis_client, keys, T)  # the snapshot written once
    calls = 0
    real = redis_client.pipeline

    def counting(*a: object, **kw: object) -> object:
        nonlocal calls
        calls += 1
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(redis_client, "pipeline", counting)
    assert len(look(redis_client, keys, T + MIN)) == 0
    assert calls == 2


def test_check_is_pure_and_the_thresholds_come_from_settings_with_defaults() -> None:
    v = CampaignView("c", "running", total=100, sent=10, failed=0, queued_ms=T, due_now=1)
    assert check(v, now_ms=T + 599_999, since_ms=T) == []
    assert kinds(check(v, now_ms=T + 600_000, since_ms=T)) == [("c", "stalled")]

    class S:
        smsc_health_stall_s = 60.0
        smsc_health_failure_rate = None

    t = Thresholds.from_settings(S())
    assert (t.stall_s, t.due_age_s, t.failure_rate, t.min_attempts) == (60.0, 300.0, 0.2, 50)
    with pytest.raises(ValueError, match="failure_rate"):
        Thresholds(failure_rate=0)


def test_the_metrics_show_the_same_findings_as_health_in_the_scrapes_three_round_trips(
        redis_client: redis.Redis, keys: Keys, campaigns: Campaigns, ledger: Ledger) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from worker.metrics import LedgerCollector, MetricsConfig

    create(campaigns, "bad", 100, batch_size=50)
    send(ledger, "bad:0", now_ms=T, failed=30)
    send(ledger, "bad:1", now_ms=T, failed=0)  # 30 % failed, final (completed): no longer checked
    create(campaigns, "bad2", 100, batch_size=50)
    send(ledger, "bad2:0", now_ms=T, failed=20)  # 40 % of 50, still running
    create(campaigns, "stuck", 10)  # queued long ago (T), due since: nobody takes it
    registry = CollectorRegistry()
    registry.register(LedgerCollector(redis_client, MetricsConfig(namespace=keys.namespace)))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(generate_latest(registry).decode()) for s in fam.samples}
    # bad2 has recipients final already: a first look judges its progress from now, not stalled yet.
    want = {"stalled": 1, "due_overdue": 2, "failure_rate": 1}
    assert {k: samples[("smsc_health_findings", (("kind", k),))] for k in want} == want
    assert samples[("smsc_campaign_health", (("campaign", "bad2"), ("kind", "failure_rate")))] == 1
    assert samples[("smsc_campaign_health", (("campaign", "stuck"), ("kind", "failure_rate")))] == 0
    assert ("smsc_campaign_health", (("campaign", "bad"), ("kind", "stalled"))) not in samples  # final
    assert samples[("smsc_scrape_redis_round_trips", ())] == 3
    assert sorted(kinds(health(redis_client, keys))) == [
        ("bad2", "due_overdue"), ("bad2", "failure_rate"), ("stuck", "due_overdue"), ("stuck", "stalled")]


def test_the_public_surface_is_pinned() -> None:
    import scheduler.health

    assert sorted(scheduler.health.__all__) == sorted([
        "ACTIVE_STATES", "KINDS", "CampaignView", "Finding", "Progress", "Thresholds", "campaign_queues", "check",
        "health"])
    assert all(hasattr(scheduler.health, name) for name in scheduler.health.__all__)
