"""The push receiver over real sockets (uvicorn) on the real redis-server: checks, matching, order, errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from scheduler.campaigns import Campaigns
from scheduler.delivery import DeliveryStore, code_of
from scheduler.keys import Keys
from scheduler.ledger import Ledger
from tests.unit.delivery_helpers import phone, send_campaign
from worker.delivery.config import DeliveryConfig
from worker.delivery.receiver import ReceiverThread, create_app
from worker.delivery.webhooks import client_for
from worker.dev.stack import RedisServer
from worker.sending import request_id
from worker.sim.delivery import push_signature


def rid(ref: str) -> str:
    """The provider id of a batch of namespace ``t`` (the tests' keys)."""
    return request_id(ref, namespace="t")


def _md5(mid: str, ph: str, status: int) -> str:
    return push_signature(mid, ph, status, "pw")  # as the simulated provider signs


def post(client: httpx.Client, url: str, mid: str, ph: str, status: int, *, err: int = 0, ts: int = 1_700_000_000,
         **extra: str) -> httpx.Response:
    data = {"id": mid, "phone": ph, "status": str(status), "err": str(err), "time": str(ts),
            "md5": _md5(mid, ph, status), **extra}
    return client.post(url, data=data)


@pytest.fixture
def serve(redis_server: RedisServer) -> Iterator[Callable[..., ReceiverThread]]:
    started: list[ReceiverThread] = []

    def make(cfg: DeliveryConfig | None = None, *, redis_url: str | None = None) -> ReceiverThread:
        app = create_app(cfg or DeliveryConfig(), redis_url=redis_url or redis_server.url, namespace="t")
        r = ReceiverThread(app)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def test_a_pushed_status_is_stored_once_whatever_the_provider_repeats(
        serve: Callable[..., ReceiverThread], redis_client: redis.Redis, keys: Keys, campaigns: Campaigns,
        ledger: Ledger) -> None:
    refs = send_campaign(campaigns, ledger, 10, 10)
    store = DeliveryStore(redis_client, keys)
    rx = serve()
    with client_for() as c:
        p = phone(3).lstrip("+")  # the provider's spelling: no +
        assert post(c, rx.url, rid("c1:0"), p, 0, ts=100).status_code == 200
        assert post(c, rx.url, rid("c1:0"), p, 20, err=13, ts=160).text == "OK"
        assert post(c, rx.url, rid("c1:0"), p, 20, err=13, ts=160).status_code == 200  # the same again
        assert post(c, rx.url, rid("c1:0"), p, 0, ts=100).status_code == 200  # a late retry of the 0
        health = c.get(rx.url.rsplit("/", 1)[0] + "/health").json()
    rec = store.record(refs[0], 10)
    assert (rec[3].code, rec[3].err, rec[3].ts) == (code_of(20), 13, 160)
    assert store.counts("c1") == {1: 9, code_of(20): 1}
    assert health["counters"]["final"] == 1 and health["counters"]["received"] == 4


def test_what_cannot_be_ours_is_answered_200_and_counted(serve: Callable[..., ReceiverThread], keys: Keys,
                                                         redis_client: redis.Redis, campaigns: Campaigns,
                                                         ledger: Ledger) -> None:
    send_campaign(campaigns, ledger, 3, 3)
    rx = serve()
    with client_for() as c:
        assert post(c, rx.url, rid("c1:0"), "79990000000", 1).status_code == 200  # not a recipient of that batch
        assert post(c, rx.url, rid("zz:0"), phone(0).lstrip("+"), 1).status_code == 200  # no such batch
        assert post(c, rx.url, "12345", phone(0).lstrip("+"), 1).status_code == 200  # not our id form
        assert c.post(rx.url, data={"id": rid("c1:0"), "phone": "x", "status": "one"}).status_code == 200  # malformed
        assert c.post(rx.url, data={"phone": "79001112233", "mes": "hi", "to": "7900"}).status_code == 200  # an SMS
        counters = c.get(rx.url.rsplit("/", 1)[0] + "/health").json()["counters"]
    assert counters == {"received": 5, "unmatched": 3, "malformed": 1, "not_a_status": 1}
    assert DeliveryStore(redis_client, keys).counts("c1") == {}


def test_the_token_the_address_and_the_providers_signature_are_checked(
        serve: Callable[..., ReceiverThread], redis_client: redis.Redis, keys: Keys, campaigns: Campaigns,
        ledger: Ledger) -> None:
    send_campaign(campaigns, ledger, 2, 2)
    rx = serve(DeliveryConfig(push_token="s3cr3t", push_verify=True, password="pw"))
    assert rx.url.endswith("/smsc/status/s3cr3t")
    p = phone(0).lstrip("+")
    with client_for() as c:
        assert post(c, rx.url.replace("s3cr3t", "guess"), rid("c1:0"), p, 1).status_code == 404
        assert post(c, rx.url.rsplit("/", 1)[0], rid("c1:0"), p, 1).status_code == 404
        assert post(c, rx.url, rid("c1:0"), p, 1, md5="0" * 32).status_code == 403
        assert c.post(rx.url, data={"id": rid("c1:0"), "phone": p, "status": "1"}).status_code == 403  # unsigned
        assert post(c, rx.url, rid("c1:0"), p, 1).status_code == 200
    assert DeliveryStore(redis_client, keys).counts("c1") == {1: 1, code_of(1): 1}
    only = serve(DeliveryConfig(push_allow_ips=("10.1.2.3",)))
    with client_for() as c:
        assert post(c, only.url, rid("c1:0"), p, 1).status_code == 403


def test_the_providers_corrected_spelling_finds_a_number_we_sent_without_plus(
        serve: Callable[..., ReceiverThread], redis_client: redis.Redis, keys: Keys, ledger: Ledger,
        campaigns: Campaigns) -> None:
    import uuid

    from scheduler.campaigns import CampaignSpec
    from scheduler.ledger import Outcome

    campaigns.create(CampaignSpec(message="m", parts=1, account="acct", campaign_id="ac"), [(1, "89001234567")])
    token = uuid.uuid4().hex
    ledger.begin("ac:0", token=token, exec_lease_ms=30_000, account="acct")
    ledger.mark_sending("ac:0", token=token, lease_ms=30_000, settle_margin_ms=1000)
    out = Outcome(sent=1)
    out.add_row("89001234567", "sent", msg_id="ac-0", parts=1)
    ledger.record("ac:0", token=token, outcome=out)
    rx = serve()
    with client_for() as c:
        assert post(c, rx.url, rid("ac:0"), "79001234567", 1).status_code == 200
    assert DeliveryStore(redis_client, keys).counts("ac") == {code_of(1): 1}


def test_redis_down_is_a_503_so_the_provider_retries(serve: Callable[..., ReceiverThread],
                                                     make_redis: Callable[..., RedisServer]) -> None:
    server = make_redis()
    client = server.client(decode_responses=False)
    k = Keys("t")
    send_campaign(Campaigns(client, k), Ledger(client, k), 2, 2)
    rx = serve(redis_url=server.url)
    with client_for() as c:
        assert post(c, rx.url, rid("c1:0"), phone(0).lstrip("+"), 1).status_code == 200
        server.stop()
        r = post(c, rx.url, rid("c1:0"), phone(1).lstrip("+"), 1)
    assert r.status_code == 503


def test_statuses_of_many_posts_at_once_are_all_stored(serve: Callable[..., ReceiverThread],
                                                       redis_client: redis.Redis, keys: Keys, campaigns: Campaigns,
                                                       ledger: Ledger) -> None:
    import concurrent.futures

    send_campaign(campaigns, ledger, 2000, 500)
    rx = serve()
    with client_for(32) as c, concurrent.futures.ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda i: post(c, rx.url, rid(f"c1:{i // 500}"), phone(i).lstrip("+"), 1,
                                             ts=5).status_code, range(2000)))
    assert codes == [200] * 2000
    assert DeliveryStore(redis_client, keys).counts("c1") == {code_of(1): 2000}


def test_a_status_that_comes_before_its_send_is_recorded_is_answered_503_and_found_on_the_retry(
        serve: Callable[..., ReceiverThread], redis_client: redis.Redis, keys: Keys, ledger: Ledger,
        campaigns: Campaigns) -> None:
    import uuid

    from scheduler.campaigns import CampaignSpec
    from scheduler.ledger import Outcome

    campaigns.create(CampaignSpec(message="m", parts=1, account="acct", campaign_id="e"), [(1, phone(0))])
    token = uuid.uuid4().hex
    ledger.begin("e:0", token=token, exec_lease_ms=30_000, account="acct")
    ledger.mark_sending("e:0", token=token, lease_ms=30_000, settle_margin_ms=1000)  # the request is out
    rx = serve()
    with client_for() as c:
        assert post(c, rx.url, rid("e:0"), phone(0).lstrip("+"), 1).status_code == 503  # the provider retries
        out = Outcome(sent=1)
        out.add_row(phone(0), "sent", msg_id=rid("e:0"), parts=1)
        ledger.record("e:0", token=token, outcome=out)
        assert post(c, rx.url, rid("e:0"), phone(0).lstrip("+"), 1).status_code == 200
    assert DeliveryStore(redis_client, keys).counts("e") == {code_of(1): 1}
