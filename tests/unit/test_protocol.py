"""The wire format: request parameters and every answer shape of send, status and balance."""

from __future__ import annotations

import hashlib
import json
import pickle
from decimal import Decimal

import pytest

from worker.smsc import errors, protocol
from worker.smsc.errors import (
    SmscAccountBackoff,
    SmscAuthError,
    SmscBatchRejected,
    SmscError,
    SmscInsufficientFunds,
    SmscNumbersRejected,
    SmscRetryable,
    SmscUnknownOutcome,
    classify,
)
from worker.smsc.protocol import (
    CostReport,
    PhoneReport,
    SendReport,
    StatusReport,
    cost_params,
    encode_list,
    fingerprint,
    parse_balance,
    parse_send,
    parse_status,
    send_params,
)

# -- public surface ----------------------------------------------------------------------------------


def test_protocol_public_surface_is_pinned() -> None:
    assert sorted(protocol.__all__) == sorted(
        [
            "SECRET_PARAMS",
            "STATUS_NOT_FOUND",
            "CostReport",
            "Line",
            "PhoneReport",
            "SendReport",
            "StatusReport",
            "cost_params",
            "encode_list",
            "fingerprint",
            "mask_phone",
            "parse_balance",
            "parse_send",
            "parse_status",
            "send_params",
            "validate_request_id",
        ]
    )
    assert all(hasattr(protocol, name) for name in protocol.__all__)


def test_errors_public_surface_is_pinned() -> None:
    assert sorted(errors.__all__) == sorted(
        [
            "BLOCKED_RETRY_AFTER_S",
            "DUPLICATE_RETRY_AFTER_S",
            "ERROR_DESCRIPTIONS",
            "HTTP_5XX_RETRY_AFTER_S",
            "SmscAccountBackoff",
            "SmscAuthError",
            "SmscBatchRejected",
            "SmscConnectError",
            "SmscError",
            "SmscInsufficientFunds",
            "SmscNumbersRejected",
            "SmscRetryable",
            "SmscTransportError",
            "SmscUnknownOutcome",
            "classify",
            "describe",
        ]
    )
    assert all(hasattr(errors, name) for name in errors.__all__)


# -- errors: classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls", "retry_after_s"),
    [
        (1, SmscBatchRejected, None),
        (2, SmscAuthError, None),
        (3, SmscInsufficientFunds, None),
        (4, SmscAccountBackoff, 60.0),
        (5, SmscBatchRejected, None),
        (6, SmscBatchRejected, None),
        (7, SmscNumbersRejected, None),
        (8, SmscNumbersRejected, None),
        (9, SmscRetryable, 60.0),
        (42, SmscBatchRejected, None),  # unknown code: the provider answered, so nothing was taken
    ],
)
def test_classify_maps_each_provider_code_to_what_the_batch_must_do(
    code: int, cls: type[SmscError], retry_after_s: float | None
) -> None:
    err = classify(code, "text")
    assert type(err) is cls
    assert (err.code, err.reason, err.retry_after_s) == (code, "text", retry_after_s)


def test_account_backoff_is_a_retryable() -> None:
    # A task that only knows "retry later" still does the right thing for error 4.
    assert isinstance(classify(4, "IP blocked"), SmscRetryable)


@pytest.mark.parametrize(
    ("status", "cls", "retry_after_s"),
    [
        (500, SmscRetryable, 5.0),
        (503, SmscRetryable, 5.0),
        (429, SmscRetryable, 60.0),
        (404, SmscBatchRejected, None),
    ],
)
def test_classify_http_statuses(status: int, cls: type[SmscError], retry_after_s: float | None) -> None:
    err = classify(None, f"HTTP {status}", http_status=status)
    assert type(err) is cls
    assert (err.code, err.reason, err.retry_after_s) == (None, f"HTTP {status}", retry_after_s)


def test_error_text_is_one_readable_line() -> None:
    err = classify(9, "duplicate request, wait a minute")
    assert str(err) == "error 9: duplicate request, wait a minute; retry after 60 s"
    assert repr(err) == "SmscRetryable(reason='duplicate request, wait a minute', code=9, retry_after_s=60.0)"


def test_errors_survive_pickling_with_their_attributes() -> None:
    err = classify(3, "no money", message_id="b-1")
    clone = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object
    assert type(clone) is SmscInsufficientFunds
    assert (clone.code, clone.reason, clone.retry_after_s, clone.message_id) == (3, "no money", None, "b-1")


# -- requests -----------------------------------------------------------------------------------------


def test_encode_list_writes_one_line_per_message() -> None:
    lines = [(["79990000001", "79990000002"], "Hello"), (["+79990000003"], "Bye: now")]
    assert encode_list(lines) == "79990000001,79990000002:Hello\n+79990000003:Bye: now"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_encode_list_escapes_newlines_inside_a_text(newline: str) -> None:
    encoded = encode_list([(["79990000001"], f"line one{newline}line two")])
    assert encoded == "79990000001:line one\\nline two"
    assert "\n" not in encoded and "\r" not in encoded  # one request line per message


@pytest.mark.parametrize("phone", ["", "7999,1", "7999;1", "7999:1", "7999|1", "7999 1", "7999\n1"])
def test_encode_list_refuses_a_phone_that_would_break_the_line(phone: str) -> None:
    with pytest.raises(ValueError, match="separator"):
        encode_list([([phone], "Hi")])


def test_encode_list_refuses_a_line_without_phones_and_a_bare_string() -> None:
    with pytest.raises(ValueError, match="no phones"):
        encode_list([([], "Hi")])
    with pytest.raises(TypeError):
        encode_list([("79990000001", "Hi")])  # would be split into single digits


def test_send_params_are_the_documented_non_secret_fields() -> None:
    params = send_params(lines=[(["79990000001"], "Hi\nthere")], request_id="b-17", sender="ACME")
    assert params == {
        "list": "79990000001:Hi\\nthere",
        "id": "b-17",
        "fmt": "3",
        "charset": "utf-8",
        "cost": "3",
        "op": "1",
        "sender": "ACME",
    }
    assert not protocol.SECRET_PARAMS & params.keys()


def test_send_params_without_sender_omit_it() -> None:
    assert "sender" not in send_params(lines=[(["79990000001"], "Hi")], request_id="1")


def test_cost_params_ask_only_for_the_cost() -> None:
    params = cost_params(lines=[(["79990000001"], "Hi")])
    assert params["cost"] == "1"
    assert "id" not in params and "op" not in params


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"request_id": "b 1"}, "request id"),
        ({"request_id": "x" * 41}, "request id"),
        ({"request_id": "0"}, "between 1 and"),
        ({"request_id": "2147483648"}, "between 1 and"),
        ({"request_id": "1", "sender": "Магазин"}, "sender"),
        ({"request_id": "1", "text": "x" * 1001}, "1001 characters"),
        ({"request_id": "1", "text": "  "}, "empty"),
    ],
)
def test_send_params_refuse_what_the_provider_would_refuse(kwargs: dict[str, str], match: str) -> None:
    text = kwargs.pop("text", "Hi")
    with pytest.raises(ValueError, match=match):
        send_params(lines=[(["79990000001"], text)], **kwargs)


def test_send_params_accept_the_largest_numeric_and_longest_string_ids() -> None:
    assert send_params(lines=[(["7999"], "x")], request_id="2147483647")["id"] == "2147483647"
    assert send_params(lines=[(["7999"], "x")], request_id="a" * 40)["id"] == "a" * 40


def test_fingerprint_is_stable_and_ignores_order_and_credentials() -> None:
    params = send_params(lines=[(["79990000001"], "Hi")], request_id="b-1")
    fp = fingerprint("acct", params)
    assert fp == fingerprint("acct", dict(reversed(list(params.items()))))
    with_secrets = {**params, "login": "acct", "psw": "hunter2-secret", "apikey": "key-secret"}
    assert fingerprint("acct", with_secrets) == fp
    assert len(fp) == 64 and int(fp, 16) >= 0
    # Pinned to its canonical form: the fingerprint is shared through Redis by every worker (and every
    # version of it during a rolling deploy), so it must not drift.
    assert fingerprint("a", {"k": "v"}) == hashlib.sha256(b'["a",[["k","v"]]]').hexdigest()
    assert fingerprint("a", {"k": "v"}) == "df8776d78c79c68ae28ffcf60134501e729d8c16cf2a56a54efd374db7470ac2"


def test_fingerprint_separates_requests_that_differ() -> None:
    base = send_params(lines=[(["79990000001"], "Hi")], request_id="b-1")
    other_text = send_params(lines=[(["79990000001"], "Hi!")], request_id="b-1")
    other_id = send_params(lines=[(["79990000001"], "Hi")], request_id="b-2")
    fps = {fingerprint("acct", base), fingerprint("acct", other_text), fingerprint("acct", other_id)}
    fps.add(fingerprint("other", base))
    assert len(fps) == 4


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
    4: SmscAccountBackoff,
    5: SmscBatchRejected,
    6: SmscBatchRejected,
    7: SmscNumbersRejected,
    8: SmscNumbersRejected,
    9: SmscRetryable,
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
    assert info.value.__cause__ is None and info.value.__suppress_context__


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


# -- status and balance --------------------------------------------------------------------------------


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
    reports = parse_status(body)
    assert reports == [
        StatusReport("79990000001", "7", 1, 0, 5),
        StatusReport("79990000002", "7", -3, 0, 0),
    ]
    assert [r.taken for r in reports] == [True, False]


def test_status_fmt1_lines() -> None:
    reports = parse_status(
        "1,1733815230,0\n-3,0,0", fmt=1, pairs=[("79990000001", "a"), ("79990000002", "a")]
    )
    assert reports == [
        StatusReport("79990000001", "a", 1, 0, 1733815230),
        StatusReport("79990000002", "a", -3, 0, 0),
    ]


@pytest.mark.parametrize(
    ("fmt", "body"), [(3, '{"error": "duplicate request, wait a minute", "error_code": 9}'), (1, "0,-9")]
)
def test_status_errors_are_classified_like_send_errors(fmt: int, body: str) -> None:
    with pytest.raises(SmscRetryable) as info:
        parse_status(body, fmt=fmt)
    assert (info.value.code, info.value.retry_after_s) == (9, 60.0)


@pytest.mark.parametrize(("fmt", "body"), [(3, '{"last_timestamp": 1}'), (3, "nope"), (1, "1,2"), (1, "")])
def test_an_unreadable_status_is_an_unknown_outcome(fmt: int, body: str) -> None:
    with pytest.raises(SmscUnknownOutcome, match=r"status\.php"):
        parse_status(body, fmt=fmt)


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        (3, '{"balance": "123.45"}'),
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
