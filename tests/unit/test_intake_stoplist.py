"""The stop list checked inside the intake's dedup script (``stoplist=``), against the check made apart.

An enqueue through :func:`worker.api.enqueue_campaign` hands the intake the stop list itself: the dedup
script (``lua/intake.lua``) looks each number up beside its dedup, one round trip a chunk. What it
decides must be what the separate check (``stopped=StopList.contains``, then the dedup) decides, line
for line: the same recipients queued, the same lines suppressed and named as duplicates, the same counts.
"""

from __future__ import annotations

from collections import Counter

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.campaigns import Campaigns, CampaignSpec
from scheduler.intake import InvalidPhone, normalize_phone, phone_key
from scheduler.keys import Keys
from scheduler.scripts import Scripts
from scheduler.stoplist import StopList, stop_key

ACCT = "acct"


def _items(n: int) -> list[tuple[int, str]]:
    """``n`` lines over n/4 subscribers, each written four ways (with '+', bare, with 8 for 7, with '+'
    again), the four far apart (other chunks)."""
    out = []
    for i in range(n):
        sub, style = i % (n // 4), i // (n // 4) % 4
        digits = f"900{sub:07d}"
        phone = {0: "+7" + digits, 1: "7" + digits, 2: "8" + digits, 3: "+7" + digits}[style]
        out.append((i + 1, phone))
    return out


def _run(r: redis.Redis, keys: Keys, cid: str, items: list[tuple[int, str]], **how: object) -> dict[str, object]:
    suppressed: list[tuple[int, str]] = []
    duplicates: list[tuple[int, str]] = []
    c = Campaigns(r, keys)
    receipt = c.create(CampaignSpec(message="hi", parts=1, account=ACCT, batch_size=100, campaign_id=cid),
                       iter(items), on_suppressed=lambda n, p: suppressed.append((n, p)),
                       on_duplicate=lambda n, p: duplicates.append((n, p)), **how)
    queued: Counter[str] = Counter()
    for ref in r.zrange(keys.due, 0, -1):
        if ref.decode().startswith(cid + ":"):
            queued.update((r.hget(keys.batch(ref.decode()), "phones") or b"").decode().split(","))
    return {"counts": (receipt.total, receipt.duplicates, receipt.suppressed, receipt.invalid),
            "suppressed": suppressed, "duplicates": duplicates, "queued": queued}


@pytest.mark.parametrize("stopped_as", ["+79000000001", "89000000001", "79000000002"])
def test_the_stop_list_in_the_dedup_script_decides_every_line_as_the_separate_check(
        redis_client: redis.Redis, keys: Keys, stopped_as: str) -> None:
    stop = StopList(redis_client, keys)
    stop.add([stopped_as, "+79000000005", "89000000123"])
    items = _items(7_000)  # several chunks of 2,000, every subscriber in several spellings
    inside = _run(redis_client, keys, "inside", items, stoplist=stop)
    apart = _run(redis_client, keys, "apart", items, stopped=stop.contains)
    assert inside == apart
    total, duplicates, suppressed, invalid = inside["counts"]
    assert invalid == 0 and suppressed > 0 and duplicates > 0 and total + duplicates + suppressed == len(items)
    # Every line of a stopped subscriber is suppressed, whichever spelling it has, duplicates included.
    assert {stop_key(p) for _, p in inside["suppressed"]} == {stop_key(stopped_as), "79000000005",
                                                             "79000000123"}


def test_with_no_stop_list_the_dedup_script_stops_nobody(redis_client: redis.Redis, keys: Keys) -> None:
    items = _items(2_500)
    inside = _run(redis_client, keys, "inside", items, stoplist=StopList(redis_client, keys))
    assert inside["suppressed"] == [] and inside["counts"][2] == 0
    assert inside == _run(redis_client, keys, "plain", items)


def test_a_chunk_whose_numbers_are_all_stopped_queues_none_of_them(redis_client: redis.Redis, keys: Keys) -> None:
    stop = StopList(redis_client, keys)
    items = [(i + 1, f"+7900{i % 5:07d}") for i in range(2_000)] + [(2_001, "+79009999999")]
    stop.add([p for _, p in items[:5]])
    got = _run(redis_client, keys, "c1", items, stoplist=stop)
    assert got["counts"] == (1, 0, 2_000, 0)
    assert got["queued"] == Counter({"+79009999999": 1})


_DIGITS = st.text("0123456789", min_size=1, max_size=16)
_RAW = st.one_of(_DIGITS, _DIGITS.map(lambda d: "+" + d), _DIGITS.map(lambda d: "8 " + d),
                 _DIGITS.map(lambda d: f"+7 ({d[:3]}) {d[3:]}"), _DIGITS.map(lambda d: "tel:+" + d))


@settings(max_examples=400, deadline=None)
@given(raws=st.lists(_RAW, min_size=1, max_size=20), region=st.sampled_from([None, "RU", "DE", "KZ", "US"]))
def test_the_intake_keys_are_the_stop_keys_where_they_differ_from_the_dedup_keys(raws: list[str],
                                                                                  region: str | None) -> None:
    phones = []
    for raw in raws:
        try:
            phones.append(normalize_phone(raw, region))  # what the intake hands on
        except InvalidPhone:
            continue
    dedup = [phone_key(p) for p in phones]
    stop = StopList(None, Keys("t"), region=region)  # no Redis: keys only
    joined = stop.intake_keys(phones, dedup)
    entries = joined.split(",") if phones else []
    assert len(entries) == len(phones)
    assert [e or k for e, k in zip(entries, dedup, strict=True)] == [stop.key_of(p) for p in phones]


@settings(max_examples=100, deadline=None)
@given(calls=st.lists(st.lists(st.integers(0, 30).map(lambda i: f"7900{i:07d}"), max_size=1_200), min_size=1,
                      max_size=4))
def test_the_dedup_script_answers_as_one_sadd_a_key_would(redis_server, calls: list[list[str]]) -> None:
    # intake.lua asks 500 keys at a time (SMISMEMBER, then one SADD): a key is new the first time it is
    # seen, in this call (earlier in the chunk) or an earlier one, exactly as a SADD per key would say.
    r = redis_server.client()
    r.delete("t:seen")
    script = Scripts(r).intake
    model: set[str] = set()
    for keys in calls:
        expected = ""
        for k in keys:
            expected += "0" if k in model else "1"
            model.add(k)
        assert script(keys=["t:seen"], args=[",".join(keys), 60_000]).decode() == expected
    assert {m.decode() for m in r.smembers("t:seen")} == model
    r.delete("t:seen")
