"""The simulator's answers: every fmt and cost, the error answers, the request forms and the record."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.unit.sim_helpers import AUTH, PHONE, Clock, send
from worker.sim import BREACHES, SimConfig, Simulator

# -- answers ------------------------------------------------------------------------------------------

SHAPES = {
    (0, 0): "OK - 2 SMS, ID - 42",
    (0, 1): "3.00 (2 SMS)",
    (0, 2): "OK - 2 SMS, ID - 42, COST - 3.00",
    (0, 3): "OK - 2 SMS, ID - 42, COST - 3.00, BALANCE - 997.00",
    (1, 0): "42,2",
    (1, 1): "3.00,2",
    (1, 2): "42,2,3.00",
    (1, 3): "42,2,3.00,997.00",
    (2, 0): "<result><id>42</id><cnt>2</cnt></result>",
    (2, 1): "<result><cost>3.00</cost><cnt>2</cnt></result>",
    (2, 2): "<result><id>42</id><cnt>2</cnt><cost>3.00</cost></result>",
    (2, 3): "<result><id>42</id><cnt>2</cnt><cost>3.00</cost><balance>997.00</balance></result>",
}
JSON_SHAPES: dict[int, dict[str, Any]] = {
    0: {"id": 42, "cnt": 2},
    1: {"cost": "3.00", "cnt": 2},
    2: {"id": 42, "cnt": 2, "cost": "3.00"},
    3: {"id": 42, "cnt": 2, "cost": "3.00", "balance": "997.00"},
}


@pytest.mark.parametrize("fmt", [0, 1, 2, 3])
@pytest.mark.parametrize("cost", [0, 1, 2, 3])
def test_send_answers_every_fmt_and_cost_as_documented(sim: Simulator, client: httpx.Client,
                                                        fmt: int, cost: int) -> None:
    sim.configure(balance="1000")
    body = send(client, phones=f"{PHONE},79991234568", mes="hello", id=42, fmt=fmt, cost=cost)
    if fmt == 3:
        assert json.loads(body) == JSON_SHAPES[cost]
        assert list(json.loads(body)) == list(JSON_SHAPES[cost])  # the documented order
    else:
        assert body == SHAPES[(fmt, cost)]
    # cost=1 only asks: nothing is recorded and nothing is charged
    assert sim.summary()["messages"] == (0 if cost == 1 else 2)
    assert sim.balance == Decimal("1000" if cost == 1 else "997.00")


def test_op1_adds_one_detail_per_number_including_the_invalid_ones(client: httpx.Client) -> None:
    body = send(client, phones=f"+{PHONE},12-34", mes="hi", id=7, fmt=1, op=1)
    assert body.splitlines() == ["7,1", f"{PHONE},25001,1.50,0,0", "12-34,,0.00,22,7"]
    obj = json.loads(send(client, phones=f"{PHONE},bad", mes="hi2", id=8, fmt=3, op=1))
    assert obj["phones"] == [
        {"phone": PHONE, "mccmnc": "25001", "cost": "1.50", "status": "0", "error": "0"},
        {"phone": "bad", "mccmnc": "", "cost": "0.00", "status": "22", "error": "7"},
    ]
    xml = send(client, phones=PHONE, mes="hi3", id=9, fmt=2, op=1)
    assert xml == ('<result><id>9</id><cnt>1</cnt><phones><phone mccmnc="25001" cost="1.50" status="0" '
                   f'error="0">{PHONE}</phone></phones></result>')


def test_cnt_counts_parts_times_recipients(client: httpx.Client) -> None:
    long_latin = "x" * 161  # 2 parts of 153
    cyrillic = "Привет"  # UCS-2, 1 part
    body = send(client, list=f"{PHONE},79991234568:{long_latin}\n79991234569:{cyrillic}", id=1, fmt=1,
                charset="utf-8")
    assert body == "1,5"


# -- errors -------------------------------------------------------------------------------------------

ERROR_SHAPES = {
    0: ("ERROR = 1 (parameters error)", "ERROR = 7 (invalid number), ID - 5"),
    1: ("0,-1", "5,-7"),
    2: ("<result><error>parameters error</error><error_code>1</error_code></result>",
        "<result><error>invalid number</error><error_code>7</error_code><id>5</id></result>"),
    # JSON as the provider writes it: one member a line, no indentation
    3: ('{\n"error": "parameters error",\n"error_code": 1\n}',
        '{\n"error": "invalid number",\n"error_code": 7,\n"id": 5\n}'),
}


@pytest.mark.parametrize("fmt", [0, 1, 2, 3])
def test_errors_carry_the_id_only_for_codes_3_6_7_8(client: httpx.Client, fmt: int) -> None:
    without_id, with_id = ERROR_SHAPES[fmt]
    assert send(client, mes="no phones", id=5, fmt=fmt) == without_id
    assert send(client, phones="12345", mes="too short a number", id=5, fmt=fmt) == with_id


@pytest.mark.parametrize("params", [
    {"mes": "no phones"},
    {"phones": PHONE},
    {"phones": PHONE, "mes": "x" * 1001},
    {"phones": PHONE, "mes": "   "},
    {"phones": PHONE, "mes": "bad id", "id": "2147483648"},
    {"phones": PHONE, "mes": "bad id", "id": "a" * 41},
    {"phones": PHONE, "mes": "bad id", "id": "semi;colon"},
    {"phones": PHONE, "mes": "bad fmt", "fmt": "7"},
    {"list": "no colon here"},
])
def test_bad_parameters_answer_error_1(client: httpx.Client, params: dict[str, str]) -> None:
    body = client.post("/sys/send.php", data={**AUTH, **params}).text
    assert body.startswith("ERROR = 1 ") or body == "0,-1"


def test_ids_of_the_documented_forms_are_accepted(client: httpx.Client) -> None:
    for mid in ("1", "2147483647", "a" * 40, "batch-1.2_x"):
        assert send(client, phones=PHONE, mes=f"id {mid}", id=mid, fmt=1) == f"{mid},1"


@pytest.mark.parametrize("given", [{}, {"id": "0"}, {"id": ""}])
def test_a_send_without_an_id_or_with_id_0_gets_an_id_from_the_provider(sim: Simulator, client: httpx.Client,
                                                                       given: dict[str, str]) -> None:
    # id=0 is what the official client libraries send when their caller gives no id.
    body = send(client, phones=PHONE, mes=f"no id {given}", fmt=1, cost=3, **given)
    assigned = body.split(",")[0]
    assert body == f"{assigned},1,1.50,999998.50" and assigned not in ("", "0")
    assert [m["id"] for m in sim.record()] == [assigned]
    assert status_of(client, assigned) == 1


def status_of(client: httpx.Client, mid: str) -> int:
    answer = client.post("/sys/status.php", data={**AUTH, "phone": PHONE, "id": mid, "fmt": "3"}).json()
    return int(answer["status"])


def test_wrong_credentials_answer_error_2(sim: Simulator, client: httpx.Client) -> None:
    bad = client.post("/sys/send.php", data={"login": "demo", "psw": "nope", "phones": PHONE, "mes": "x"})
    assert bad.text == "ERROR = 2 (authorise error)"
    assert client.post("/sys/balance.php", data={"apikey": "k", "fmt": "1"}).text == "0,-2"
    sim.configure(apikey="secret-key")
    assert client.post("/sys/balance.php", data={"apikey": "secret-key", "fmt": "3"}).json() == {
        "balance": "1000000.00"}
    assert sim.summary()["errors_answered"] == {2: 2}


def test_insufficient_funds_answers_error_3_with_the_id_and_records_nothing(
        sim: Simulator, client: httpx.Client) -> None:
    sim.configure(balance="2.99")
    assert json.loads(send(client, phones=f"{PHONE},79991234568", mes="x", id="b-1", fmt=3)) == {
        "error": "no money", "error_code": 3, "id": "b-1"}
    assert send(client, phones=PHONE, mes="x", id="b-2", fmt=1, cost=3) == "b-2,1,1.50,1.49"
    assert sim.summary()["messages"] == 1


def test_bad_or_unregistered_sender_or_forbidden_text_answers_error_6(sim: Simulator,
                                                                      client: httpx.Client) -> None:
    assert send(client, phones=PHONE, mes="x", id=3, fmt=1, sender="Way too long name") == "3,-6"
    assert send(client, phones=PHONE, mes="x", id=3, fmt=1, sender="1234567890123456") == "3,-6"
    assert send(client, phones=PHONE, mes="x", id=3, fmt=1, sender="Shop") == "3,1"
    sim.configure(allowed_senders=["Shop"], forbidden_words=["casino"])
    assert send(client, phones=PHONE, mes="y", id=4, fmt=1, sender="Other") == "4,-6"
    assert send(client, list=f"Other,3|{PHONE}:y", id=4, fmt=1, sender="Shop") == "4,-6"
    assert send(client, phones=PHONE, mes="Win at the CASINO", id=5, fmt=1) == "5,-6"
    assert sim.summary()["messages"] == 1


def test_invalid_numbers_fail_alone_and_a_request_of_only_invalid_numbers_answers_error_7(
        sim: Simulator, client: httpx.Client) -> None:
    assert send(client, phones=f"{PHONE};+1 (234) 567-8901;123;abc", mes="x", id=11, fmt=1) == "11,2"
    assert sim.phones() == {PHONE: 1, "12345678901": 1}
    assert send(client, phones="123,+1234567890123456", mes="x", id=12, fmt=1) == "12,-7"
    sim.configure(undeliverable_prefixes=["7000"])
    assert send(client, phones="70001234567", mes="x", id=13, fmt=1) == "13,-8"


def test_invalid_time_answers_error_5(client: httpx.Client) -> None:
    assert send(client, phones=PHONE, mes="x", id=1, fmt=1, time="tomorrow") == "0,-5"
    assert send(client, phones=PHONE, mes="x", id=2, fmt=1, time="0101301200") == "2,1"


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="probability"):
        SimConfig(reset_rate=2)
    with pytest.raises(ValueError, match=r"1\.\.9"):
        SimConfig(error_rates={10: 0.1})
    with pytest.raises(ValueError, match="unknown"):
        Simulator().configure(nonsense=1)


# -- request forms and the record --------------------------------------------------------------------


def test_list_lines_unescape_newlines_and_share_one_id(sim: Simulator, client: httpx.Client) -> None:
    send(client, list=f"{PHONE}:Hello\\nworld!\nShop,3|79991234568,79991234569:Hi", id=5)
    assert [(m["phone"], m["text"], m["id"]) for m in sim.record()] == [
        (PHONE, "Hello\nworld!", "5"), ("79991234568", "Hi", "5"), ("79991234569", "Hi", "5")]


def test_rest_json_get_query_and_charsets(sim: Simulator, client: httpx.Client) -> None:
    r = client.post("/rest/send/", json={**AUTH, "phones": [PHONE], "mes": "Привет", "id": 1, "fmt": 3})
    assert r.json() == {"id": 1, "cnt": 1}
    r = client.get("/sys/send.php", params={**AUTH, "phones": PHONE, "mes": "via get", "id": 2, "fmt": 1})
    assert r.text == "2,1"
    # no charset parameter: the provider reads windows-1251
    cp1251 = urlencode({**AUTH, "phones": "79991234568", "id": 3, "mes": "Привет"}, encoding="cp1251")
    client.post("/sys/send.php", content=cp1251.encode(),
                headers={"content-type": "application/x-www-form-urlencoded"})
    send(client, phones="79991234569", mes="Привет", id=4, charset="utf-8")
    assert [m["text"] for m in sim.record()] == ["Привет", "via get", "Привет", "Привет"]


def test_summary_counts_messages_duplicates_requests_and_errors(sim: Simulator, clock: Clock,
                                                                client: httpx.Client) -> None:
    send(client, phones=f"{PHONE},79991234568", mes="a", id=1)
    send(client, phones=PHONE, mes="a", id=2)  # a duplicate (same phone, same text)
    send(client, phones=PHONE, mes="b", id=3)
    send(client, phones="1", mes="b", id=4)  # error 7
    summary = sim.summary()
    assert {k: summary[k] for k in ("messages", "unique_messages", "duplicates", "requests")} == {
        "messages": 4, "unique_messages": 3, "duplicates": 1, "requests": 4}
    assert summary["breaches"] == dict.fromkeys(BREACHES, 0)
    assert summary["errors_answered"] == {7: 1}
    assert summary["balance"] == "999994.00"
    assert sim.phones() == {PHONE: 3, "79991234568": 1}
    assert sim.record(1, 1) == [{"ts_ms": int(clock.now * 1000), "login": "demo", "id": "1",
                                 "phone": "79991234568", "text": "a", "parts": 1, "flood": False,
                                 "delivered": "a", "options": {"translit": 0, "tinyurl": False, "flash": False,
                                                               "valid": None, "maxsms": None},
                                 "sender": None}]
    sim.reset()
    assert sim.summary()["messages"] == 0 and sim.summary()["requests"] == 0 and sim.record() == []


