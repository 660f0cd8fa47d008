"""The stop list on the real redis-server: one entry per subscriber the provider delivers to."""

from __future__ import annotations

import pytest
import redis

import scheduler.stoplist as stoplist_module
from scheduler.intake import InvalidPhone, normalize_phone
from scheduler.keys import Keys
from scheduler.ledger import server_time_ms
from scheduler.stoplist import MAX_REASON, StopList, stop_key

SPELLINGS = ["+79001234567", "79001234567", "89001234567", "9001234567", "+7 (900) 123-45-67", "tel:+7-900-123-45-67"]


@pytest.fixture
def stop(redis_client: redis.Redis, keys: Keys) -> StopList:
    return StopList(redis_client, keys)


def test_the_public_surface_is_pinned() -> None:
    assert sorted(stoplist_module.__all__) == sorted(
        ["CHUNK", "MAX_REASON", "SOURCES", "Entry", "StopList", "check_reason", "stop_key"])


@pytest.mark.parametrize("stopped_as", SPELLINGS)
def test_a_number_stopped_in_any_spelling_stops_every_spelling_the_provider_delivers_to_the_same_phone(
        stop: StopList, stopped_as: str) -> None:
    assert stop.add([stopped_as]) == 1
    assert stop.contains(SPELLINGS) == [True] * len(SPELLINGS)
    assert stop.count() == 1


def test_with_a_region_a_national_number_is_the_same_entry_as_its_e164_form(redis_client, keys) -> None:
    ru = StopList(redis_client, keys, region="RU")
    assert ru.add(["8 900 123-45-67"]) == 1
    assert ru.add(["+7 900 123 45 67", "900 123 45 67"]) == 0
    # ... and a list without a region (another deployment's intake) sees the same entry.
    assert StopList(redis_client, keys).contains(["+79001234567", "89001234567"]) == [True, True]


def test_a_stop_key_agrees_with_the_intake_in_every_region_reading() -> None:
    for raw in ("8 900 123-45-67", "+7 900 123-45-67", "9001234567"):
        assert stop_key(normalize_phone(raw, "RU")) == stop_key(normalize_phone(raw)) == "79001234567"


def test_a_number_written_with_plus_is_taken_as_written(stop: StopList) -> None:
    # '+8...' is never corrected by the provider, and Japan's +81 3 1234 5678 is not a Russian +7 131...
    stop.add(["+89001234567", "+81312345678"])
    assert stop.contains(["+79001234567", "71312345678", "+89001234567", "+81312345678"]) == [False, False, True,
                                                                                            True]


def test_add_counts_only_new_numbers_and_keeps_the_first_entry(stop: StopList, redis_client) -> None:
    before = server_time_ms(redis_client)
    assert stop.add(["79001234567", "79001234568"], reason="replied STOP") == 2
    after = server_time_ms(redis_client)
    assert stop.add(["89001234567", "79001234569", "79001234569"], reason="later", source="import") == 1
    first = stop.entry("+7 900 123 45 67")
    assert first is not None
    assert (first.phone, first.reason, first.source) == ("+79001234567", "replied STOP", "manual")
    assert before <= first.added_ms <= after  # the Redis server's clock
    third = stop.entry("79001234569")
    assert third is not None and (third.reason, third.source) == ("later", "import")
    assert stop.count() == 3


def test_add_noted_keeps_each_numbers_own_reason(stop: StopList) -> None:
    assert stop.add_noted([("79001234567", "asked by phone"), ("79001234568", "")]) == 2
    a, b = stop.entry("79001234567"), stop.entry("79001234568")
    assert a is not None and b is not None
    assert (a.reason, a.source, b.reason) == ("asked by phone", "import", "")


def test_a_reason_with_a_bar_is_kept_whole(stop: StopList) -> None:
    stop.add(["79001234567"], reason="STOP | unsubscribe")
    e = stop.entry("79001234567")
    assert e is not None and e.reason == "STOP | unsubscribe"


def test_remove_by_another_spelling_unstops_the_number(stop: StopList) -> None:
    stop.add(["89001234567", "79001234568"])
    assert stop.remove(["+79001234567", "79001234567", "79009999999"]) == 1
    assert stop.contains(["89001234567", "79001234568"]) == [False, True]
    assert stop.entry("89001234567") is None


def test_contains_answers_in_order_for_more_than_a_chunk(stop: StopList) -> None:
    phones = [f"+7900{i:07d}" for i in range(1234)]
    stopped = set(phones[::97]) | {phones[-1]}
    stop.add(sorted(stopped))
    assert stop.contains(phones) == [p in stopped for p in phones]
    assert stop.contains([]) == []


def _hmget_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))


def test_checking_a_batch_of_500_is_one_redis_command(stop: StopList, redis_client) -> None:
    # The check runs at intake for every recipient and at send time for every batch.
    stop.add(["79001234567"])
    phones = [f"+7901{i:07d}" for i in range(500)]
    before = _hmget_calls(redis_client)
    assert not any(stop.contains(phones))
    assert _hmget_calls(redis_client) - before == 1


def test_scan_yields_every_entry_once_with_its_details(stop: StopList) -> None:
    phones = [f"7900{i:07d}" for i in range(3000)]  # past the listpack encoding: a real hashtable
    stop.add(phones[:1000], reason="a")
    stop.add(phones[1000:], reason="b", source="auto")
    entries = list(stop.scan())
    assert sorted(e.phone for e in entries) == sorted("+" + p for p in phones)
    assert {(e.reason, e.source) for e in entries} == {("a", "manual"), ("b", "auto")}
    assert stop.count() == 3000


def test_namespaces_have_their_own_stop_list(redis_client) -> None:
    a, b = StopList(redis_client, Keys("a")), StopList(redis_client, Keys("b"))
    a.add(["79001234567"])
    assert b.contains(["79001234567"]) == [False]
    assert b.count() == 0


def test_an_invalid_number_is_refused_without_naming_it_and_its_chunk_is_not_written(stop: StopList) -> None:
    with pytest.raises(InvalidPhone) as exc:
        stop.add(["79001234567", "12ab5678901"])
    assert "12ab" not in str(exc.value)
    assert stop.count() == 0


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"source": "robot"}, "unknown source"),
    ({"reason": "x" * (MAX_REASON + 1)}, "at most"),
    ({"reason": "two\nlines"}, "one line"),
])
def test_a_bad_source_or_reason_is_one_line_and_nothing_is_written(stop: StopList, kwargs, why) -> None:
    with pytest.raises(ValueError, match=why) as exc:
        stop.add(["79001234567"], **kwargs)
    assert "\n" not in str(exc.value)
    assert stop.count() == 0
