"""What the provider answers (worker.smsc.responses): every answer shape of send, status and balance."""

from __future__ import annotations

import json
import traceback
from decimal import Decimal

import pytest

from worker.smsc import errors, reports, responses
from worker.smsc.errors import (
    SmscAccountBlocked,
    SmscAuthError,
    SmscBatchRejected,
    SmscError,
    SmscInsufficientFunds,
    SmscNumbersRejected,
    SmscTooManyRequests,
    SmscUnknownOutcome,
)
from worker.smsc.reports import CostReport, PhoneReport, SendReport, StatusReport
from worker.smsc.responses import parse_balance, parse_send, parse_status


def test_responses_and_reports_public_surfaces_are_pinned() -> None:
    assert sorted(responses.__all__) == ["parse_balance", "parse_send", "parse_status"]
    assert sorted(reports.__all__) == ["CostReport", "PhoneReport", "SendReport", "StatusReport"]
    assert all(hasattr(responses, name) for name in responses.__all__)
    assert all(hasattr(reports, name) for name in reports.__all__)


# -- send answers -------------------------------------------------------------------------------------

ID, CNT, COST, BAL = "b-7", 4, Decimal("5.00"), Decimal("995.50")
PHONES = (
    PhoneReport("79990000001", "25001", Decimal("2.50"), 0, 0),
    PhoneReport("79990000002", "25002", Decimal("2.50"), 0, 0),
    PhoneReport("7999", "", Decimal("0"), 22, 7),
)

SUCCESS: dict[tuple[int, int], str] = {
    (0, 0): "OK - 4 SMS, ID - b-7",
    (0, 1): "5.00 (4 SMS)",
    (0, 2): "OK - 4 SMS, ID - b-7, COST - 5.00",
    (0, 3): "OK - 4 SMS, ID - b-7, COST - 5.00, BALANCE - 995.50",
    (1, 0): "b-7,4",
    (1, 1): "5.00,4",
    (1, 2): "b-7,4,5.00",
    (1, 3): "b-7,4,5.00,995.50",
    (2, 0): "<result><id>b-7</id><cnt>4</cnt></result>",
    (2, 1): "<result><cost>5.00</cost><cnt>4</cnt></result>",
    (2, 2): "<result>\n <id>b-7</id>\n <cnt>4</cnt>\n <cost>5.00</cost>\n</result>",
    (2, 3): "<result><id>b-7</id><cnt>4</cnt><cost>5.00</cost><balance>995.50</balance></result>",
    (3, 0): '{"id": "b-7", "cnt": 4}',
    (3, 1): '{"cost": "5.00", "cnt": 4}',
    (3, 2): '{"id": "b-7", "cnt": 4, "cost": "5.00"}',
    (3, 3): '{"id": "b-7", "cnt": 4, "cost": "5.00", "balance": "995.50"}',
}

OP_TEXT = "\n79990000001,25001,2.50,0,0\n79990000002,25002,2.50,0,0\n7999,,,22,7"
OP_XML = (
    '<phones><phone mccmnc="25001" cost="2.50" status="0" error="0">79990000001</phone>'
    '<phone mccmnc="25002" cost="2.50" status="0" error="0">79990000002</phone>'
    '<phone mccmnc="" cost="" status="22" error="7">7999</phone></phones>'
)
OP_JSON = [
    {"phone": "79990000001", "mccmnc": "25001", "cost": "2.50", "status": "0", "error": "0"},
    {"phone": "79990000002", "mccmnc": "25002", "cost": "2.50", "status": "0", "error": "0"},
    {"phone": "7999", "mccmnc": "", "cost": "", "status": "22", "error": "7"},
]


def _with_op(fmt: int, body: str) -> str:
    if fmt in (0, 1):
        return body + OP_TEXT
    if fmt == 2:
        return body.replace("</result>", OP_XML + "</result>")
    obj = json.loads(body)
    obj["phones"] = OP_JSON
    return json.dumps(obj)


def _expected(cost: int, phones: tuple[PhoneReport, ...]) -> SendReport | CostReport:
    if cost == 1:
        return CostReport(cost=COST, cnt=CNT)
    return SendReport(
        id=ID,
        cnt=CNT,
        cost=COST if cost >= 2 else None,
        balance=BAL if cost == 3 else None,
        phones=phones,
    )


@pytest.mark.parametrize(("fmt", "cost"), sorted(SUCCESS))
def test_every_fmt_and_cost_mode_reads_the_same_report(fmt: int, cost: int) -> None:
    assert parse_send(SUCCESS[fmt, cost], fmt=fmt, cost=cost) == _expected(cost, ())


@pytest.mark.parametrize(("fmt", "cost"), [k for k in sorted(SUCCESS) if k[1] != 1])
def test_op1_details_give_each_numbers_outcome(fmt: int, cost: int) -> None:
    report = parse_send(_with_op(fmt, SUCCESS[fmt, cost]), fmt=fmt, cost=cost)
    assert report == _expected(cost, PHONES)
    assert isinstance(report, SendReport)
    assert [p.accepted for p in report.phones] == [True, True, False]


def test_json_numbers_are_read_exactly_as_decimals() -> None:
    report = parse_send('{"id": 12, "cnt": 1, "cost": 0.1, "balance": 1e2}', fmt=3, cost=3)
    assert (report.id, report.cost, report.balance) == ("12", Decimal("0.1"), Decimal("100"))


def test_a_missing_op1_error_means_accepted() -> None:
    # The provider adds status and error "in case of errors" only.
    body = '{"id": "1", "cnt": 1, "phones": [{"phone": "79990000001", "mccmnc": "25001", "cost": "1.5"}]}'
    (phone,) = parse_send(body, fmt=3).phones
    assert phone == PhoneReport("79990000001", "25001", Decimal("1.5"), 0, 0)
    assert phone.accepted


ERRORS: dict[tuple[int, bool], str] = {
    (0, False): "ERROR = {code} (some (nested) text)",
    (0, True): "ERROR = {code} (some (nested) text), ID - b-7",
    (1, False): "0,-{code}",
    (1, True): "b-7,-{code}",
    (2, False): "<result><error>some (nested) text</error><error_code>{code}</error_code></result>",
    (
        2,
        True,
    ): "<result><error>some (nested) text</error><error_code>{code}</error_code><id>b-7</id></result>",
    (3, False): '{{"error": "some (nested) text", "error_code": {code}}}',
    (3, True): '{{"error": "some (nested) text", "error_code": {code}, "id": "b-7"}}',
}
CLASSES = {
    1: SmscBatchRejected,
    2: SmscAuthError,
    3: SmscInsufficientFunds,
    4: SmscAccountBlocked,
    5: SmscBatchRejected,
    6: SmscBatchRejected,
    7: SmscNumbersRejected,
    8: SmscNumbersRejected,
    9: SmscTooManyRequests,
}


@pytest.mark.parametrize("code", sorted(CLASSES))
@pytest.mark.parametrize(("fmt", "with_id"), sorted(ERRORS))
@pytest.mark.parametrize("cost", [0, 1, 3])
def test_error_answers_raise_the_classified_error_in_every_fmt(
    fmt: int, with_id: bool, code: int, cost: int
) -> None:
    body = ERRORS[fmt, with_id].format(code=code)
    with pytest.raises(SmscError) as info:
        parse_send(body, fmt=fmt, cost=cost)
    err = info.value
    assert type(err) is CLASSES[code]
    assert err.code == code
    assert err.message_id == ("b-7" if with_id else None)
    # fmt=1 carries no description: ours is used.
    assert err.reason == (errors.describe(code) if fmt == 1 else "some (nested) text")


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        (0, ""),
        (0, "<html>Bad gateway</html>"),
        (0, "OK - 4 SMS"),  # no id
        (0, "OK - 4 SMS, ID - b-7\ngarbage"),  # op line that is not 5 fields
        (1, "b-7"),
        (1, "b-7,4,5.00"),  # cost=3 asked, balance missing
        (1, "b-7,x"),
        (2, "<result><id>b-7</id>"),
        (2, '<!DOCTYPE r [<!ENTITY e "x">]><result><id>&e;</id><cnt>1</cnt></result>'),
        (2, "<result><error>text only</error></result>"),
        (3, "not json"),
        (3, "[]"),
        (3, '{"id": "b-7"}'),
        (3, '{"id": "b-7", "cnt": 4, "cost": "NaN", "balance": "1"}'),
        (3, '{"id": "b-7", "cnt": 4, "cost": "1", "balance": "1", "phones": "79990000001"}'),
        (3, '{"error": "text without a code"}'),
    ],
)
def test_an_unreadable_answer_is_an_unknown_outcome(fmt: int, body: str) -> None:
    with pytest.raises(SmscUnknownOutcome) as info:
        parse_send(body, fmt=fmt, cost=3)
    assert "send.php" in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_unreadable_answer_text_never_quotes_the_body() -> None:
    body = '{"secret-ish": "psw=hunter2"'
    with pytest.raises(SmscUnknownOutcome) as info:
        parse_send(body, fmt=3)
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value)


def test_invalid_fmt_or_cost_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="fmt"):
        parse_send("{}", fmt=4)
    with pytest.raises(ValueError, match="cost"):
        parse_send("{}", fmt=3, cost=5)




def test_unreadable_answers_carry_no_chain_that_could_hold_the_body() -> None:
    body = '{"psw": "hunter2-in-an-echo"'  # a cut JSON echo: json's own error would hold the whole body
    for parse in (lambda: parse_send(body, fmt=3), lambda: parse_status(body), lambda: parse_balance(body)):
        with pytest.raises(SmscUnknownOutcome) as info:
            parse()
        assert info.value.__cause__ is None and info.value.__context__ is None
        assert "hunter2" not in "".join(traceback.format_exception(info.value))


def test_send_report_matches_echoed_phones_to_ours_whatever_the_spelling() -> None:
    body = json.dumps({"id": "b-1", "cnt": 3, "phones": [
        {"phone": "79001234567", "mccmnc": "25001", "cost": "1.5"},  # we sent 89001234567
        {"phone": "79001234568", "mccmnc": "25001", "cost": "1.5"},  # we sent +79001234568
        {"phone": "79001234569", "mccmnc": "", "cost": "", "status": "22", "error": "7"},  # 9001234569
    ]})
    report = parse_send(body, fmt=3)
    matched = report.match(["89001234567", "+79001234568", "9001234569", "79001234560"])
    assert sorted(matched) == ["+79001234568", "89001234567", "9001234569"]
    assert matched["89001234567"].accepted and matched["+79001234568"].accepted
    assert not matched["9001234569"].accepted and matched["9001234569"].error == 7


# -- status --------------------------------------------------------------------------------------------


def test_status_of_one_message_takes_phone_and_id_from_the_request() -> None:
    body = (
        '{"status": 1, "last_date": "10.12.2024 10:20:30", "last_timestamp": 1733815230, "flag": 0, "err": 0}'
    )
    assert parse_status(body, pairs=[("79990000001", "b-7")]) == [
        StatusReport("79990000001", "b-7", 1, 0, 1733815230)
    ]


def test_status_of_several_messages_is_a_list() -> None:
    body = json.dumps(
        [
            {"phone": "79990000001", "id": 7, "status": 1, "last_timestamp": 5, "err": 0},
            {"phone": "79990000002", "id": 7, "status": -3, "last_timestamp": 0, "err": 0},
        ]
    )
    got = parse_status(body)
    assert got == [
        StatusReport("79990000001", "7", 1, 0, 5),
        StatusReport("79990000002", "7", -3, 0, 0),
    ]
    assert [r.taken for r in got] == [True, False]


ALL1 = {
    "status": 1, "last_date": "10.12.2024 10:20:30", "last_timestamp": 1733815230,
    "send_date": "10.12.2024 10:20:01", "send_timestamp": 1733815201, "phone": "79001234567",
    "cost": "3.00", "sender_id": "ACME", "status_name": "Доставлено", "message": "Hi, there: 1,2,3",
    "type": 0, "sms_cnt": 2, "err": 0,
}


@pytest.mark.parametrize(("cost", "cnt"), [("3.00", 2), (3.0, "2"), ("3", 2.0), (3, "2")])
def test_a_full_status_carries_the_cost_and_parts_as_strings_or_numbers(cost: object, cnt: object) -> None:
    body = json.dumps({**ALL1, "cost": cost, "sms_cnt": cnt})
    (report,) = parse_status(body, pairs=[("89001234567", "c-1")])
    assert (report.phone, report.id, report.cost, report.parts) == ("89001234567", "c-1", Decimal(3), 2)
    assert report.sent and not report.failed and report.reason == "delivered"


@pytest.mark.parametrize(
    "extra", [{}, {"cost": "", "sms_cnt": ""}, {"cost": "n/a", "sms_cnt": 1.5}, {"cost": None, "sms_cnt": -1}]
)
def test_a_status_without_a_readable_cost_or_parts_says_none_and_still_settles(extra: dict[str, object]) -> None:
    body = json.dumps({"status": 1, "last_timestamp": 5, "err": 0, **extra})
    (report,) = parse_status(body, pairs=[("79990000001", "a")])
    assert (report.cost, report.parts, report.sent) == (None, None, True)


def test_a_list_answer_is_matched_to_the_asked_pairs_by_the_echoed_spelling_in_any_order() -> None:
    pairs = [("89001234567", "c-1"), ("+79001234568", "c-1"), ("9001234569", "c-2")]
    body = json.dumps([
        {**ALL1, "phone": "79001234569", "id": "c-2", "status": 22, "err": 249, "cost": "0"},
        {**ALL1, "phone": "79001234567", "id": "c-1", "status": 1, "cost": "1.50", "sms_cnt": 1},
        {**ALL1, "phone": "79001234568", "id": "c-1", "status": -3, "cost": ""},
    ])
    got = parse_status(body, pairs=pairs)
    assert [(r.phone, r.id, r.outcome) for r in got] == [
        ("89001234567", "c-1", "sent"),
        ("+79001234568", "c-1", "not-found"),
        ("9001234569", "c-2", "failed"),
    ]
    assert got[0].cost == Decimal("1.50") and got[1].cost is None
    assert got[2].reason == "invalid number (wrong number format)"


def test_an_answer_that_leaves_an_asked_message_out_is_unreadable_not_not_found() -> None:
    pairs = [("79990000001", "a"), ("79990000002", "a")]
    body = json.dumps([{"phone": "79990000001", "id": "a", "status": 1, "last_timestamp": 5, "err": 0}])
    with pytest.raises(SmscUnknownOutcome, match="no status for one of the asked messages"):
        parse_status(body, pairs=pairs)
    other = json.dumps([
        {"phone": "79990000001", "id": "a", "status": 1, "last_timestamp": 5, "err": 0},
        {"phone": "79990000003", "id": "a", "status": -3, "last_timestamp": 0, "err": 0},
    ])
    with pytest.raises(SmscUnknownOutcome):
        parse_status(other, pairs=pairs)


@pytest.mark.parametrize(
    ("status", "err", "outcome", "reason"),
    [
        (-3, 0, "not-found", "message not found"),
        (-1, 0, "sent", "waiting to be sent"),
        (0, 0, "sent", "handed to the operator"),
        (3, 0, "sent", "expired"),
        (-2, 0, "failed", "stopped"),
        (20, 1, "failed", "cannot be delivered (subscriber does not exist)"),
        (23, 0, "failed", "prohibited"),
        (24, 0, "failed", "insufficient funds"),
        (25, 6, "failed", "unreachable number (subscriber not in the network)"),
    ],
)
def test_a_status_says_taken_sent_or_failed_with_a_reason(status: int, err: int, outcome: str, reason: str) -> None:
    body = json.dumps({"status": status, "last_timestamp": 5, "err": err})
    (report,) = parse_status(body, pairs=[("79990000001", "a")])
    assert report.outcome == outcome
    assert report.taken is (outcome != "not-found")
    assert report.sent is (outcome == "sent") and report.failed is (outcome == "failed")
    assert report.reason == reason


def test_status_fmt1_lines() -> None:
    got = parse_status("1,1733815230,0\n-3,0,0", fmt=1, pairs=[("79990000001", "a"), ("79990000002", "a")])
    assert got == [
        StatusReport("79990000001", "a", 1, 0, 1733815230),
        StatusReport("79990000002", "a", -3, 0, 0),
    ]


def test_status_fmt1_full_record_carries_the_cost() -> None:
    line = "1,1733815230,0,1733815201,79001234567,2.50,ACME,Delivered,Hi, there,,0"
    (report,) = parse_status(line, fmt=1, pairs=[("89001234567", "a")])
    assert (report.phone, report.cost, report.status) == ("89001234567", Decimal("2.50"), 1)


@pytest.mark.parametrize(
    ("fmt", "body"), [(3, '{"error": "duplicate request, wait a minute", "error_code": 9}'), (1, "0,-9")]
)
def test_status_errors_are_classified_like_send_errors(fmt: int, body: str) -> None:
    with pytest.raises(SmscTooManyRequests) as info:
        parse_status(body, fmt=fmt)
    assert (info.value.code, info.value.retry_after_s) == (9, 60.0)


@pytest.mark.parametrize(
    ("fmt", "body"), [(3, '{"last_timestamp": 1}'), (3, "nope"), (3, "[]"), (3, '{"status": "x"}'),
                      (1, "1,2"), (1, "")]
)
def test_an_unreadable_status_is_an_unknown_outcome(fmt: int, body: str) -> None:
    with pytest.raises(SmscUnknownOutcome, match=r"status\.php"):
        parse_status(body, fmt=fmt)


# -- balance --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        (3, '{"balance": "123.45"}'),
        (3, '{"balance": 123.45}'),
        (3, '{"balance": "123.45", "currency": "RUR"}'),
        (2, "<result><balance>123.45</balance></result>"),
        (1, "123.45,RUR"),
        (0, "123.45"),
    ],
)
def test_balance_in_every_fmt(fmt: int, body: str) -> None:
    assert parse_balance(body, fmt=fmt) == Decimal("123.45")


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        (3, '{"error": "authorise error", "error_code": 2}'),
        (2, "<result><error>authorise error</error><error_code>2</error_code></result>"),
        (1, "0,-2"),
        (0, "ERROR = 2 (authorise error)"),
    ],
)
def test_balance_errors_are_classified(fmt: int, body: str) -> None:
    with pytest.raises(SmscAuthError):
        parse_balance(body, fmt=fmt)
