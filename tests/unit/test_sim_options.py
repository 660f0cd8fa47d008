"""The simulator bills a campaign's options as the provider does: translit, tinyurl, maxsms, flash, valid;
per-line senders of a ``list``; and the cost and balance request limits."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.sim_helpers import AUTH, PHONE, Clock, send
from worker.sim import Simulator
from worker.smsc.encoding import SHORT_LINK_PREFIX, count_parts, count_segments, transliterate
from worker.smsc.requests import SendOptions, cost_params, send_params

# 100 Cyrillic characters: two UCS-2 parts (over 70), one GSM-7 part once transliterated (103 Latin).
CYRILLIC_100 = ("Привет мир, это тест сообщения для проверки длины в сто символов. "
                "Ещё немного текста тут!!! ок, да!")[:99] + "!"
PRICE = Decimal("1.50")  # SimConfig's default price of one part


def post(client: httpx.Client, params: dict[str, str]) -> Any:
    """POST the client's form fields (as it encodes them) with the demo credentials; the JSON answer."""
    body = urlencode({**AUTH, **params})
    response = client.post("/sys/send.php", content=body,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    return response.json()


def test_the_hundred_character_cyrillic_text_is_two_parts_and_one_after_translit() -> None:
    assert len(CYRILLIC_100) == 100
    assert count_segments(CYRILLIC_100).parts == 2
    assert count_parts(CYRILLIC_100, translit=1) == 1


def test_translit_1_is_billed_one_part_and_the_record_shows_both_texts(sim: Simulator,
                                                                       client: httpx.Client) -> None:
    options = SendOptions(translit=1)
    answer = post(client, send_params(lines=[([PHONE], CYRILLIC_100)], request_id="t-1", options=options))
    assert (answer["cnt"], answer["cost"]) == (1, "1.50")
    (record,) = sim.record()
    assert record["text"] == CYRILLIC_100  # as received
    assert record["delivered"] == transliterate(CYRILLIC_100, 1)
    assert record["delivered"].startswith("Privet mir, e'to test")
    assert record["parts"] == 1
    assert record["options"] == {"translit": 1, "tinyurl": False, "flash": False, "valid": None, "maxsms": None}


def test_without_translit_the_same_text_costs_two_parts(sim: Simulator, client: httpx.Client) -> None:
    answer = post(client, send_params(lines=[([PHONE], CYRILLIC_100)], request_id="t-2"))
    assert answer["cnt"] == 2
    (record,) = sim.record()
    assert record["delivered"] == record["text"] == CYRILLIC_100


def test_translit_2_delivers_the_providers_look_alike_example(sim: Simulator, client: httpx.Client) -> None:
    post(client, send_params(lines=[([PHONE], "транслит")], request_id="t-3", options=SendOptions(translit=2)))
    assert sim.record()[0]["delivered"] == "mpaHc/Ium"


def test_maxsms_caps_the_parts_of_every_recipient_and_delivers_the_text_cut(sim: Simulator,
                                                                           client: httpx.Client) -> None:
    text = "я" * 300  # 5 UCS-2 parts
    phones = [PHONE, "79991234568", "79991234569"]
    options = SendOptions(maxsms=2)
    answer = post(client, send_params(lines=[(phones, text)], request_id="m-1", options=options))
    assert answer["cnt"] == 2 * 3  # at most maxsms parts for each of the three recipients
    assert answer["cost"] == f"{PRICE * 6:.2f}"
    assert [p["cost"] for p in answer["phones"]] == ["3.00"] * 3
    records = sim.record()
    assert [r["parts"] for r in records] == [2, 2, 2]
    assert all(r["text"] == text and r["delivered"] == "я" * 134 for r in records)  # 2 x 67 characters
    # The client counts what the provider bills.
    assert count_parts(text, maxsms=2) == 2


def test_maxsms_larger_than_the_text_changes_nothing(sim: Simulator, client: httpx.Client) -> None:
    answer = post(client, send_params(lines=[([PHONE], "short")], request_id="m-2",
                                      options=SendOptions(maxsms=3)))
    assert answer["cnt"] == 1
    assert sim.record()[0]["delivered"] == "short"


def test_tinyurl_shortens_each_link_before_counting(sim: Simulator, client: httpx.Client) -> None:
    link = "https://example.com/" + "long-path/" * 15 + "?utm_source=sms"
    text = f"Your order is ready: {link}. Track it at http://example.org/t/1"
    assert count_segments(text).parts == 2
    answer = post(client, send_params(lines=[([PHONE], text)], request_id="u-1", options=SendOptions(tinyurl=True)))
    assert answer["cnt"] == 1
    delivered = sim.record()[0]["delivered"]
    assert delivered.count(SHORT_LINK_PREFIX) == 2 and link not in delivered
    assert delivered.startswith("Your order is ready: " + SHORT_LINK_PREFIX)
    assert delivered.endswith(". Track it at " + delivered.rsplit(" ", 1)[1])  # the sentence's period kept
    assert count_parts(text, tinyurl=True) == 1


def test_flash_and_valid_are_recorded_and_change_no_count(sim: Simulator, client: httpx.Client) -> None:
    answer = post(client, send_params(lines=[([PHONE], "hi")], request_id="f-1",
                                      options=SendOptions(flash=True, valid="01:30")))
    assert answer["cnt"] == 1
    record = sim.record()[0]
    assert record["options"]["flash"] is True and record["options"]["valid"] == "01:30"
    assert record["delivered"] == "hi"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("translit", "3"), ("translit", ""), ("translit", "yes"), ("translit", " 1"), ("translit", "-1"),
        ("tinyurl", "2"), ("tinyurl", "true"), ("flash", "2"), ("flash", ""),
        ("valid", "0"), ("valid", "25"), ("valid", "00:00"), ("valid", "24:01"), ("valid", "1:30"),
        ("valid", "12:60"), ("valid", "12h"), ("valid", ""),
        ("maxsms", "0"), ("maxsms", "-1"), ("maxsms", "two"), ("maxsms", "1.5"), ("maxsms", ""),
    ],
)
def test_an_option_outside_its_documented_values_is_error_1(sim: Simulator, client: httpx.Client,
                                                           name: str, value: str) -> None:
    assert send(client, phones=PHONE, mes="hi", id=7, fmt=3, **{name: value}) == (
        '{\n"error": "parameters error",\n"error_code": 1\n}')
    assert sim.summary()["messages"] == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [("translit", "0"), ("translit", "2"), ("tinyurl", "0"), ("flash", "1"), ("valid", "1"), ("valid", "24"),
     ("valid", "00:01"), ("valid", "24:00"), ("valid", "07"), ("maxsms", "1"), ("maxsms", "15")],
)
def test_the_documented_boundaries_are_accepted(sim: Simulator, client: httpx.Client, name: str,
                                                value: str) -> None:
    assert send(client, phones=PHONE, mes="hi", id=8, fmt=1, **{name: value}) == "8,1"


def test_the_json_endpoint_takes_the_same_options(sim: Simulator, client: httpx.Client) -> None:
    body = {**AUTH, **send_params(lines=[([PHONE], CYRILLIC_100)], request_id="j-1",
                                  options=SendOptions(translit=1, maxsms=1))}
    assert client.post("/rest/send/", json=body).json()["cnt"] == 1
    assert client.post("/rest/send/", json={**body, "id": "j-2", "maxsms": "0"}).json()["error_code"] == 1


# -- per-line senders in a list ------------------------------------------------------------------------


def test_a_list_with_per_line_senders_reaches_the_provider_exactly(sim: Simulator, client: httpx.Client) -> None:
    lines = [
        ([PHONE], "Hello: a, b; c | d", "Shop A"),
        (["79991234568", "79991234569"], "two\nlines: 12:30, ok;", "Bank 24"),
        (["79991234570"], "default sender | here", None),
        (["79991234571"], "Привет: мир | 😀", "ACME"),
    ]
    params = send_params(lines=lines, request_id="l-1", sender="ACME")
    assert params["sender"] == "ACME"
    assert params["list"].split("\n") == [
        "Shop A|79991234567:Hello: a, b; c | d",
        "Bank 24|79991234568,79991234569:two\\nlines: 12:30, ok;",
        "79991234570:default sender | here",
        "79991234571:Привет: мир | 😀",  # the request's sender: no prefix needed
    ]
    answer = post(client, params)
    assert answer["cnt"] == 5
    assert [(r["phone"], r["text"], r["sender"]) for r in sim.record()] == [
        (PHONE, "Hello: a, b; c | d", "Shop A"),
        ("79991234568", "two\nlines: 12:30, ok;", "Bank 24"),
        ("79991234569", "two\nlines: 12:30, ok;", "Bank 24"),
        ("79991234570", "default sender | here", "ACME"),
        ("79991234571", "Привет: мир | 😀", "ACME"),
    ]


def test_one_text_with_different_senders_goes_as_a_list(sim: Simulator, client: httpx.Client) -> None:
    params = send_params(lines=[([PHONE], "same", "Shop A"), (["79991234568"], "same", "Shop B")], request_id="l-2")
    assert "mes" not in params and "sender" not in params
    post(client, params)
    assert [(r["text"], r["sender"]) for r in sim.record()] == [("same", "Shop A"), ("same", "Shop B")]


_SENDERS = st.sampled_from(["ACME", "Shop A", "Bank 24", "my.shop-1_x", "Shop & Co", "123456789012345", None])
_LIST_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\\\r"), min_size=1, max_size=200,
).filter(lambda t: t.strip())


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_LIST_TEXT, _SENDERS), min_size=2, max_size=6))
def test_any_list_text_and_sender_round_trip_byte_exact(clock: Clock, items: list[tuple[str, str | None]]) -> None:
    sim = Simulator(clock=clock, sleep=clock.sleep)
    phones = [f"7999{1000000 + i}" for i in range(len(items))]
    lines = [([phone], text, sender) for phone, (text, sender) in zip(phones, items, strict=True)]
    params = send_params(lines=lines, request_id="h-1")
    with httpx.Client(transport=_transport(sim), base_url="http://smsc.test") as c:
        answer = post(c, params)
    got = sim.record()
    assert [(r["phone"], r["text"], r["sender"]) for r in got] == [
        (phone, text, sender) for phone, (text, sender) in zip(phones, items, strict=True)]
    assert answer["cnt"] == sum(count_segments(text).parts for text, _ in items)


def _transport(sim: Simulator) -> httpx.BaseTransport:
    from worker.sim import SimTransport

    return SimTransport(sim)


# -- the client's count is the provider's --------------------------------------------------------------


_TEXTS = st.text(alphabet=st.sampled_from(list("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБЖЩЯ abcXYZ{}€,.:😀")),
                 min_size=1, max_size=400).filter(lambda t: t.strip())


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_TEXTS, st.sampled_from([0, 1, 2]), st.booleans(), st.sampled_from([None, 1, 2, 3]))
def test_the_clients_count_is_what_the_simulated_provider_bills(clock: Clock, text: str, translit: int,
                                                                tinyurl: bool, maxsms: int | None) -> None:
    sim = Simulator(clock=clock, sleep=clock.sleep)
    options = SendOptions(translit=translit, tinyurl=tinyurl, maxsms=maxsms)
    with httpx.Client(transport=_transport(sim), base_url="http://smsc.test") as c:
        answer = post(c, cost_params(lines=[([PHONE], text)], options=options))
    assert answer["cnt"] == count_parts(text, **options.counting())
    if maxsms is not None:
        assert answer["cnt"] <= maxsms


# -- cost and balance request limits -------------------------------------------------------------------


def test_cost_1_answers_the_cost_and_count_with_the_options(sim: Simulator, client: httpx.Client) -> None:
    params = cost_params(lines=[([PHONE, "79991234568"], CYRILLIC_100)], options=SendOptions(translit=1))
    assert post(client, params) == {"cost": "3.00", "cnt": 2}
    assert post(client, cost_params(lines=[([PHONE, "79991234568"], CYRILLIC_100)])) == {"cost": "6.00", "cnt": 4}
    assert sim.summary()["messages"] == 0  # nothing was sent


def test_five_identical_cost_requests_a_minute_then_the_sixth_is_error_9(sim: Simulator, clock: Clock,
                                                                        client: httpx.Client) -> None:
    params = cost_params(lines=[([PHONE], "price?")], options=SendOptions(maxsms=1))
    for _ in range(5):
        assert post(client, params) == {"cost": "1.50", "cnt": 1}
        clock.advance(10)
    assert post(client, params) == {"error": "duplicate request, wait a minute", "error_code": 9}
    # Other options make another request; a minute after the first, the same one is answered again.
    assert post(client, cost_params(lines=[([PHONE], "price?")], options=SendOptions(maxsms=2)))["cnt"] == 1
    clock.advance(10)
    assert post(client, params)["cnt"] == 1
    assert sim.summary()["breaches"]["identical_cost"] == 1


def test_the_eleventh_balance_request_within_a_minute_is_error_9(sim: Simulator, clock: Clock,
                                                                 client: httpx.Client) -> None:
    for _ in range(10):
        assert client.post("/sys/balance.php", data={**AUTH, "fmt": "3"}).json() == {"balance": "1000000.00"}
    assert client.post("/sys/balance.php", data={**AUTH, "fmt": "3"}).json()["error_code"] == 9
    clock.advance(60)
    assert client.post("/sys/balance.php", data={**AUTH, "fmt": "3"}).json() == {"balance": "1000000.00"}
    assert sim.summary()["breaches"]["balance_rate"] == 1


def test_the_wire_form_of_options_is_what_the_simulator_reads() -> None:
    params = send_params(lines=[([PHONE], "x")], request_id="w-1",
                         options=SendOptions(translit=2, tinyurl=True, flash=True, valid="12", maxsms=4))
    got = dict(parse_qsl(urlencode(params)))
    assert {k: got[k] for k in ("translit", "tinyurl", "flash", "valid", "maxsms")} == {
        "translit": "2", "tinyurl": "1", "flash": "1", "valid": "12", "maxsms": "4"}
