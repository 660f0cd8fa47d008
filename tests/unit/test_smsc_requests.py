"""What the client asks (worker.smsc.requests): form fields, and every text reaching the provider as written."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from worker.sim import SimConfig, SimTransport, Simulator
from worker.sim.rules import parse_lines
from worker.smsc import requests
from worker.smsc.client import SmscClient
from worker.smsc.encoding import validate_message
from worker.smsc.requests import (
    SECRET_PARAMS,
    SendOptions,
    balance_params,
    cost_params,
    encode_list,
    fingerprint,
    send_params,
    status_params,
)

# Texts that a "list" escape or a sloppy encoder would change on the way.
TRICKY = [
    "C:\\new folder\\notes.txt",  # a backslash followed by n: the list escape would make a line break
    "literal \\n and a real\nnewline",
    "two lines\r\nwith CRLF",
    "a lone \r carriage return",
    "\\\\n two backslashes then n",
    "ends with a backslash \\",
    "colons: 12:30, commas, and; semicolons",
    "79990000002:looks like a list line",
    "percent %0A and plus + and & and = signs",
    "Привет,\nмир: {} [] ~ | € ^",
]


def wire(params: dict[str, str]) -> dict[str, str]:
    """What the provider reads: the form body as the client encodes it, decoded again."""
    return dict(parse_qsl(urlencode(params), keep_blank_values=True))


def test_requests_public_surface_is_pinned() -> None:
    assert sorted(requests.__all__) == sorted(
        [
            "SECRET_PARAMS",
            "AnyLine",
            "Line",
            "SendOptions",
            "SenderLine",
            "balance_params",
            "cost_params",
            "encode_list",
            "fingerprint",
            "form_body",
            "form_quote",
            "send_params",
            "status_params",
            "validate_request_id",
        ]
    )
    assert all(hasattr(requests, name) for name in requests.__all__)


# -- texts reach the provider exactly as written --------------------------------------------------------


@pytest.mark.parametrize("text", TRICKY)
def test_one_text_travels_as_phones_and_mes_byte_for_byte(text: str) -> None:
    params = send_params(lines=[(["79990000001", "+79990000002"], text)], request_id="b-1")
    assert "list" not in params
    got = wire(params)
    assert got["mes"] == text
    assert got["phones"] == "79990000001,+79990000002"
    # ... and the provider (the simulator's reading of the documented syntax) sees the same text.
    (line,) = parse_lines(got)
    assert line.text == text
    assert line.phones == ("79990000001", "+79990000002")


def test_lines_with_one_text_are_one_phones_list() -> None:
    params = send_params(lines=[(["79990000001"], "Hi"), (["79990000002", "79990000003"], "Hi")], request_id="1")
    assert (params["phones"], params["mes"]) == ("79990000001,79990000002,79990000003", "Hi")


@given(st.text(min_size=1, max_size=1000).filter(lambda t: t.strip()))
def test_any_text_reaches_the_provider_unchanged(text: str) -> None:
    got = wire(send_params(lines=[(["79990000001"], text)], request_id="b-1"))
    assert got["mes"] == text
    (line,) = parse_lines(got)
    assert line.text == text


@pytest.mark.parametrize("text", TRICKY)
def test_the_simulated_provider_delivers_and_bills_exactly_the_text_written(text: str) -> None:
    sim = Simulator(SimConfig(balance=Decimal(1000)))
    with SmscClient(base_url="http://sim", login="demo", password=SecretStr("demo-password"),
                    transport=SimTransport(sim)) as client:
        report = client.send(lines=[(["+79001234567"], text)], request_id="r-1")
    (record,) = sim.record()
    assert record["text"] == text
    # The local count (1000-character check, parts) is of the delivered text, as the provider's is.
    assert record["parts"] == validate_message(text).parts == report.cnt


def test_different_texts_go_as_a_list_with_the_documented_newline_escape() -> None:
    lines = [(["79990000001", "79990000002"], "Hello\nworld"), (["+79990000003"], "Bye: now, 12:30")]
    params = send_params(lines=lines, request_id="b-1")
    assert "mes" not in params and "phones" not in params
    assert params["list"] == "79990000001,79990000002:Hello\\nworld\n+79990000003:Bye: now, 12:30"
    read = parse_lines(wire(params))
    assert [(list(line.phones), line.text) for line in read] == [
        (["79990000001", "79990000002"], "Hello\nworld"),
        (["+79990000003"], "Bye: now, 12:30"),
    ]


@pytest.mark.parametrize("text", ["C:\\new", "a\\b", "one\r\ntwo", "cr\r"])
def test_a_list_refuses_a_text_its_escape_cannot_carry_exactly(text: str) -> None:
    with pytest.raises(ValueError, match="cannot travel in a list request exactly"):
        encode_list([(["79990000001"], text), (["79990000002"], "other")])
    with pytest.raises(ValueError, match="exactly"):
        send_params(lines=[(["79990000001"], text), (["79990000002"], "other")], request_id="1")
    # The same text alone goes as mes, unchanged.
    assert wire(send_params(lines=[(["79990000001"], text)], request_id="1"))["mes"] == text


@pytest.mark.parametrize("phone", ["", "7999,1", "7999;1", "7999:1", "7999|1", "7999 1", "7999\n1"])
def test_a_phone_that_would_break_the_request_is_refused(phone: str) -> None:
    with pytest.raises(ValueError, match="separator"):
        encode_list([([phone], "Hi")])
    with pytest.raises(ValueError, match="separator"):
        send_params(lines=[([phone], "Hi")], request_id="1")


def test_a_line_without_phones_and_a_bare_string_are_refused() -> None:
    with pytest.raises(ValueError, match="no phones"):
        send_params(lines=[([], "Hi")], request_id="1")
    with pytest.raises(TypeError):
        send_params(lines=[("79990000001", "Hi")], request_id="1")  # would be split into single digits
    with pytest.raises(ValueError, match="at least one line"):
        send_params(lines=[], request_id="1")


# -- the fields --------------------------------------------------------------------------------------


def test_send_params_are_the_documented_non_secret_fields() -> None:
    params = send_params(lines=[(["79990000001"], "Hi\nthere")], request_id="b-17", sender="ACME")
    assert params == {
        "phones": "79990000001",
        "mes": "Hi\nthere",
        "id": "b-17",
        "fmt": "3",
        "charset": "utf-8",
        "cost": "3",
        "op": "1",
        "sender": "ACME",
    }
    assert not SECRET_PARAMS & params.keys()


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
        send_params(lines=[(["79990000001"], text)], request_id=kwargs["request_id"], sender=kwargs.get("sender"))


def test_send_params_accept_the_largest_numeric_and_longest_string_ids() -> None:
    assert send_params(lines=[(["7999"], "x")], request_id="2147483647")["id"] == "2147483647"
    assert send_params(lines=[(["7999"], "x")], request_id="a" * 40)["id"] == "a" * 40


def test_status_params_ask_by_the_providers_spelling_with_the_full_record() -> None:
    params = status_params([("89001234567", "c-1"), ("+79001234568", "c-1"), ("9001234569", "c-2")])
    assert params == {
        "phone": "79001234567,+79001234568,79001234569",
        "id": "c-1,c-1,c-2",
        "all": "1",
        "fmt": "3",
        "charset": "utf-8",
    }


@pytest.mark.parametrize("pairs", [[], [("7999,1", "a")], [("79990000001", "")], [("79990000001", "a,b")]])
def test_status_params_refuse_what_would_shift_the_lists(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        status_params(pairs)


def test_balance_params_ask_json_in_utf8() -> None:
    assert balance_params() == {"fmt": "3", "charset": "utf-8"}


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
    escaped = send_params(lines=[(["79990000001"], "Hi\\n")], request_id="b-1")
    newline = send_params(lines=[(["79990000001"], "Hi\n")], request_id="b-1")
    fps = {fingerprint("acct", p) for p in (base, other_text, other_id, escaped, newline)}
    fps.add(fingerprint("other", base))
    assert len(fps) == 6


# -- a campaign's options (SendOptions) ------------------------------------------------------------------


def test_default_options_send_nothing_and_leave_every_request_as_it_was() -> None:
    assert SendOptions().params() == {}
    lines = [(["79990000001"], "Hi")]
    plain = send_params(lines=lines, request_id="1", sender="ACME")
    assert send_params(lines=lines, request_id="1", sender="ACME", options=SendOptions()) == plain
    assert send_params(lines=lines, request_id="1", sender="ACME", options=None) == plain
    assert cost_params(lines=lines, options=SendOptions()) == cost_params(lines=lines)


def test_options_add_their_fields_and_the_fingerprint_covers_them() -> None:
    lines = [(["79990000001"], "Hi")]
    options = SendOptions(translit=1, tinyurl=True, flash=True, valid="12", maxsms=3)
    params = send_params(lines=lines, request_id="1", options=options)
    assert {k: params[k] for k in ("translit", "tinyurl", "flash", "valid", "maxsms")} == {
        "translit": "1", "tinyurl": "1", "flash": "1", "valid": "12", "maxsms": "3"}
    assert cost_params(lines=lines, options=SendOptions(maxsms=2))["maxsms"] == "2"
    plain = send_params(lines=lines, request_id="1")
    assert fingerprint("acc", params) != fingerprint("acc", plain)
    assert fingerprint("acc", send_params(lines=lines, request_id="1", options=SendOptions(translit=2))) != (
        fingerprint("acc", send_params(lines=lines, request_id="1", options=SendOptions(translit=1))))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"translit": "1"}, SendOptions(translit=1)),
        ({"translit": 2}, SendOptions(translit=2)),
        ({"translit": None}, SendOptions()),
        ({"tinyurl": "yes", "flash": 1}, SendOptions(tinyurl=True, flash=True)),
        ({"tinyurl": "0", "flash": False}, SendOptions()),
        ({"valid": "24"}, SendOptions(valid="24")),
        ({"valid": 1}, SendOptions(valid="1")),
        ({"valid": "07"}, SendOptions(valid="7")),
        ({"valid": "1:30"}, SendOptions(valid="01:30")),
        ({"valid": "00:01"}, SendOptions(valid="00:01")),
        ({"valid": "24:00"}, SendOptions(valid="24:00")),
        ({"valid": ""}, SendOptions()),
        ({"maxsms": "3"}, SendOptions(maxsms=3)),
        ({"maxsms": 1}, SendOptions(maxsms=1)),
    ],
)
def test_send_options_parse_loose_input_to_the_providers_values(kwargs: dict[str, object],
                                                                  expected: SendOptions) -> None:
    assert SendOptions.parse(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"valid": "25"}, "--valid 25: give 1-24 hours or hh:mm from 00:01 to 24:00"),
        ({"valid": 0}, "--valid 0: give 1-24 hours or hh:mm from 00:01 to 24:00"),
        ({"valid": "00:00"}, "--valid 00:00: give 1-24 hours or hh:mm from 00:01 to 24:00"),
        ({"valid": "24:01"}, "--valid 24:01: give 1-24 hours or hh:mm from 00:01 to 24:00"),
        ({"valid": "12:60"}, "--valid 12:60: give 1-24 hours or hh:mm from 00:01 to 24:00"),
        ({"valid": "2h"}, "--valid 2h: give 1-24 hours or hh:mm from 00:01 to 24:00"),
        ({"translit": "3"}, "--translit 3: give 0 (none), 1 (translit) or 2 (look-alike characters)"),
        ({"translit": True}, "--translit True: give 0 (none), 1 (translit) or 2 (look-alike characters)"),
        ({"tinyurl": "maybe"}, "--tinyurl maybe: give 0 or 1"),
        ({"flash": 2}, "--flash 2: give 0 or 1"),
        ({"maxsms": "0"}, "--maxsms 0: give a whole number of SMS parts, 1 or more"),
        ({"maxsms": "-2"}, "--maxsms -2: give a whole number of SMS parts, 1 or more"),
        ({"maxsms": "1.5"}, "--maxsms 1.5: give a whole number of SMS parts, 1 or more"),
    ],
)
def test_send_options_refuse_bad_values_with_one_line_naming_the_option(kwargs: dict[str, object],
                                                                        message: str) -> None:
    with pytest.raises(ValueError) as info:
        SendOptions.parse(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_send_options_built_directly_are_checked_too() -> None:
    with pytest.raises(ValueError, match="--translit 5"):
        SendOptions(translit=5)
    with pytest.raises(ValueError, match="--valid 1:30"):
        SendOptions(valid="1:30")  # the stored form is 01:30
    with pytest.raises(ValueError, match="--maxsms 0"):
        SendOptions(maxsms=0)


def test_send_options_round_trip_through_json_for_the_campaign_hash() -> None:
    options = SendOptions(translit=2, tinyurl=True, flash=False, valid="00:30", maxsms=4)
    stored = options.to_json()
    assert stored == '{"flash":false,"maxsms":4,"tinyurl":true,"translit":2,"valid":"00:30"}'
    assert SendOptions.from_json(stored) == options
    assert SendOptions.from_json(SendOptions().to_json()) == SendOptions()
    assert SendOptions.from_json(None) == SendOptions.from_json("") == SendOptions()
    assert SendOptions.from_json('{"maxsms": 2}') == SendOptions(maxsms=2)
    with pytest.raises(ValueError, match="not valid JSON"):
        SendOptions.from_json("{nope")
    with pytest.raises(ValueError, match="unknown field"):
        SendOptions.from_json('{"colour": "red"}')
    with pytest.raises(ValueError, match="--valid 99"):
        SendOptions.from_json('{"valid": "99"}')


def test_counting_gives_the_options_that_change_the_bill() -> None:
    options = SendOptions(translit=1, tinyurl=True, flash=True, valid="3", maxsms=2)
    assert options.counting() == {"translit": 1, "tinyurl": True, "maxsms": 2}


# -- per-line senders ----------------------------------------------------------------------------------


def test_one_text_and_one_sender_keep_the_phones_and_mes_form() -> None:
    lines = [(["79990000001"], "Hi", "Shop A"), (["79990000002"], "Hi", "Shop A")]
    params = send_params(lines=lines, request_id="1")
    assert (params["phones"], params["mes"], params["sender"]) == ("79990000001,79990000002", "Hi", "Shop A")
    assert "list" not in params
    # A line's sender equal to the request's, or absent, is the request's.
    mixed = send_params(lines=[(["79990000001"], "Hi", "ACME"), (["79990000002"], "Hi", None)],
                        request_id="1", sender="ACME")
    assert (mixed["phones"], mixed["sender"]) == ("79990000001,79990000002", "ACME")


def test_different_senders_go_in_the_list_lines() -> None:
    lines = [(["79990000001"], "Hi", "Shop A"), (["79990000002", "79990000003"], "Hi", None),
             (["79990000004"], "Bye", "ACME")]
    params = send_params(lines=lines, request_id="1", sender="ACME")
    assert params["sender"] == "ACME"
    assert params["list"] == "Shop A|79990000001:Hi\n79990000002,79990000003:Hi\n79990000004:Bye"
    read = parse_lines(wire(params))
    assert [(list(r.phones), r.text, r.sender) for r in read] == [
        (["79990000001"], "Hi", "Shop A"), (["79990000002", "79990000003"], "Hi", None),
        (["79990000004"], "Bye", None)]  # None: the request's sender, ACME


@pytest.mark.parametrize("sender", ["Магазин", "a:b", "a|b", "ABCDEFGHIJKL", ""])
def test_a_per_line_sender_the_provider_refuses_is_refused(sender: str) -> None:
    with pytest.raises(ValueError, match="sender"):
        send_params(lines=[(["79990000001"], "Hi", sender), (["79990000002"], "Hi")], request_id="1")


def test_a_sender_with_a_space_at_an_end_cannot_travel_in_a_list() -> None:
    with pytest.raises(ValueError, match="space at an end"):
        send_params(lines=[(["79990000001"], "Hi", " ACME"), (["79990000002"], "Hi")], request_id="1")
    # Alone it goes as the sender field, unchanged.
    assert send_params(lines=[(["79990000001"], "Hi", " ACME")], request_id="1")["sender"] == " ACME"


@pytest.mark.parametrize("text", ["C:\\new", "one\r\ntwo"])
def test_a_per_line_sender_does_not_make_a_list_carry_what_it_cannot(text: str) -> None:
    with pytest.raises(ValueError, match="cannot travel in a list request exactly"):
        send_params(lines=[(["79990000001"], text, "Shop A"), (["79990000002"], text, "Shop B")], request_id="1")


_LIST_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\\\r"),
                     min_size=1, max_size=80).filter(lambda t: t.strip())


@given(st.lists(st.tuples(_LIST_TEXT, st.sampled_from(["ACME", "Shop A", "Bank 24", "x.y-z_1", None])),
                min_size=2, max_size=5))
def test_any_list_with_senders_reads_back_exactly(items: list[tuple[str, str | None]]) -> None:
    lines = [([f"7999000{1000 + i}"], text, sender) for i, (text, sender) in enumerate(items)]
    params = send_params(lines=lines, request_id="1")
    if "list" not in params:  # one text and one sender
        assert {params["mes"]} == {text for text, _ in items}
        return
    read = parse_lines(wire(params))
    assert [(r.text, r.sender) for r in read] == items


def test_the_requests_sender_is_checked_even_when_every_line_has_its_own() -> None:
    with pytest.raises(ValueError, match="sender"):
        send_params(lines=[(["79990000001"], "a", "Shop A"), (["79990000002"], "b", "Shop B")],
                    request_id="1", sender="Магазин")


@settings(max_examples=1_000, deadline=None)
@given(st.text() | st.text(alphabet=st.sampled_from("\x00\x7f\x80%+&= ~-._aZ9\nЖ€😀"), max_size=300))
def test_the_form_encoding_is_urllibs_byte_for_byte(value: str) -> None:
    from urllib.parse import quote

    from worker.smsc.requests import form_quote

    try:
        expected = quote(value, safe="")
    except UnicodeEncodeError:  # a lone surrogate: no text of ours carries one
        return
    assert form_quote(value) == expected


def test_a_form_body_decodes_to_the_params_exactly() -> None:
    from urllib.parse import parse_qsl

    from worker.smsc.requests import form_body

    params = {"list": "79001234567:Привет, мир! 🎉\n79001234568:a+b&c=d %25 ~", "psw": "p&w=1 +", "id": "c-1"}
    assert dict(parse_qsl(form_body(params).decode("ascii"), keep_blank_values=True)) == params
