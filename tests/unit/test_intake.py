"""Intake: phone normalization, the dedup key, streaming a recipients file."""

from __future__ import annotations

import hashlib
import io
import random
import sys
import tracemalloc
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import intake
from scheduler.intake import (
    IntakeError,
    InvalidPhone,
    Rejected,
    iter_phones_file,
    iter_recipients,
    normalize_phone,
    phone_key,
    phone_keys,
)


def test_public_surface_is_pinned() -> None:
    assert sorted(intake.__all__) == sorted(
        [
            "MAX_DIGITS",
            "MAX_LINE_BYTES",
            "MIN_DIGITS",
            "Digest",
            "IntakeError",
            "InvalidPhone",
            "Rejected",
            "iter_phones_file",
            "iter_recipients",
            "normalize_phone",
            "phone_key",
            "phone_keys",
            "region_error",
        ]
    )
    assert issubclass(InvalidPhone, ValueError)
    assert issubclass(IntakeError, ValueError)


# --- normalize_phone ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+79001234567", "+79001234567"),
        ("79001234567", "79001234567"),
        ("  +7 900 123 45 67  ", "+79001234567"),
        ("+7-900-123-45-67", "+79001234567"),
        ("+7 (900) 123-45-67", "+79001234567"),
        ("8 (900) 123.45.67", "89001234567"),  # trunk prefix kept: the provider's auto-correction's job
        ("+1 (212) 555-1234", "+12125551234"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+7\t900\u00a0123 45 67", "+79001234567"),  # tab and no-break space from spreadsheets
        ("9001234567", "9001234567"),  # 10 digits: the shortest accepted
        ("+123456789012345", "+123456789012345"),  # 15 digits: the longest (E.164)
    ],
)
def test_normalize_phone_drops_separators_and_keeps_a_leading_plus(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty number"),
        ("   ", "empty number"),
        ("+", "0 digits; a number needs 10 to 15"),
        ("+7 900 123", "7 digits; a number needs 10 to 15"),
        ("900123456", "9 digits; a number needs 10 to 15"),
        ("+1234567890123456", "16 digits; a number needs 10 to 15"),
        ("++79001234567", "'+' is allowed once, at the start only"),
        ("7900+1234567", "'+' is allowed once, at the start only"),
        ("+7 900 CALL NOW", "unexpected character 'C'"),
        ("79001234567x", "unexpected character 'x'"),
        ("7900123456/7", "unexpected character '/'"),
        ("7900123456#7", "unexpected character '#'"),
        ("\u0667\u0669\u0660\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667", "unexpected character"),
        ("79001234567\u00b2", "unexpected character '\u00b2'"),  # isdigit() is true for '²'
    ],
)
def test_normalize_phone_refuses_with_a_one_line_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone) as info:
        normalize_phone(raw)
    assert reason in info.value.reason
    assert str(info.value) == info.value.reason
    assert "\n" not in info.value.reason


def _digits_formatted(draw: st.DrawFn) -> tuple[str, str]:
    digits = draw(st.text(alphabet="0123456789", min_size=10, max_size=15))
    seps = st.sampled_from(["", "", "", " ", "-", ".", "(", ")", "\t", "\u00a0"])
    raw = "".join(d + draw(seps) for d in digits)
    return digits, raw


@st.composite
def formatted_numbers(draw: st.DrawFn) -> tuple[str, str, bool]:
    digits, raw = _digits_formatted(draw)
    plus = draw(st.booleans())
    pad = draw(st.sampled_from(["", " ", "\t", "  "]))
    return digits, pad + ("+" if plus else "") + raw + pad, plus


@given(formatted_numbers())
def test_any_formatting_of_a_number_normalizes_to_its_digits(case: tuple[str, str, bool]) -> None:
    digits, raw, plus = case
    assert normalize_phone(raw) == ("+" if plus else "") + digits
    assert phone_key(raw) == digits
    assert phone_key(normalize_phone(raw)) == digits


@given(st.text(max_size=30))
def test_normalize_phone_either_returns_plus_and_digits_or_raises_invalid_phone(raw: str) -> None:
    try:
        out = normalize_phone(raw)
    except InvalidPhone as exc:
        assert exc.reason and "\n" not in exc.reason
        return
    body = out.removeprefix("+")
    assert body.isascii() and body.isdigit() and 10 <= len(body) <= 15


# --- phone_key -------------------------------------------------------------------------------------------


def test_the_same_number_written_two_ways_has_one_dedup_key() -> None:
    assert phone_key("+7 900 123-45-67") == phone_key("79001234567") == "79001234567"
    assert phone_key(normalize_phone("+7 (900) 123-45-67")) == phone_key(normalize_phone("79001234567"))


def test_a_trunk_prefix_is_not_rewritten_so_8_and_7_are_two_keys() -> None:
    assert phone_key("89001234567") != phone_key("79001234567")


def test_phone_key_refuses_what_is_not_a_number() -> None:
    with pytest.raises(InvalidPhone):
        phone_key("+7 900 abc")


# --- iter_phones_file ---------------------------------------------------------------------------------


def _write(tmp_path: Path, data: bytes, name: str = "phones.txt") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_file_streaming_skips_blanks_and_comments_and_keeps_line_numbers(tmp_path: Path) -> None:
    text = (
        "\ufeff# recipients of the autumn campaign\r\n"  # BOM + a comment on line 1
        "+7 900 123-45-67\r\n"
        "\r\n"
        "   \n"
        "  # an indented comment\n"
        "79001234568   # inline comment\n"
        "+79001234569\t#tab comment\n"
        "+7 900 123-45-70, Ivan, 42\n"  # CSV: the first field
        '"+7 (900) 123-45-71";Petr\n'  # ';' separated, quoted first field
        "not a number\n"
        "7900123456#7\n"  # a '#' glued to a number is no comment: it reaches the normalizer
        "+79001234572"  # no final newline
    )
    got = list(iter_phones_file(_write(tmp_path, text.encode("utf-8"))))
    assert got == [
        (2, "+7 900 123-45-67"),
        (6, "79001234568"),
        (7, "+79001234569"),
        (8, "+7 900 123-45-70"),
        (9, "+7 (900) 123-45-71"),
        (10, "not a number"),
        (11, "7900123456#7"),
        (12, "+79001234572"),
    ]


def test_a_bom_on_the_first_number_line_is_dropped(tmp_path: Path) -> None:
    p = _write(tmp_path, b"\xef\xbb\xbf+79001234567\n")
    assert list(iter_phones_file(p)) == [(1, "+79001234567")]
    assert list(iter_phones_file(str(p))) == [(1, "+79001234567")]


def test_a_csv_header_is_yielded_and_then_visibly_rejected(tmp_path: Path) -> None:
    p = _write(tmp_path, b"phone,name\n+79001234567,Ivan\n")
    first, second = iter_recipients(iter_phones_file(p))
    assert isinstance(first, Rejected) and (first.line_no, first.raw) == (1, "phone")
    assert second == (2, "+79001234567")


def test_undecodable_bytes_stop_the_intake_with_the_line_number(tmp_path: Path) -> None:
    p = _write(tmp_path, b"+79001234567\n+79001234568\n+7900\xff1234569\n+79001234570\n")
    seen = []
    with pytest.raises(IntakeError) as info:
        for item in iter_phones_file(p):
            seen.append(item)
    msg = str(info.value)
    assert seen == [(1, "+79001234567"), (2, "+79001234568")]  # the good lines before it came through
    assert "line 3" in msg and "0xff" in msg and "UTF-8" in msg
    assert "\n" not in msg and "1234569" not in msg  # one line, and never the content


def test_a_utf16_file_is_refused_at_line_one(tmp_path: Path) -> None:
    p = _write(tmp_path, "+79001234567\n".encode("utf-16"))
    with pytest.raises(IntakeError, match="line 1: byte 0xff"):
        list(iter_phones_file(p))


def test_a_missing_file_is_an_intake_error(tmp_path: Path) -> None:
    with pytest.raises(IntakeError, match="cannot open"):
        list(iter_phones_file(tmp_path / "nope.txt"))


def test_a_runaway_line_is_refused_instead_of_read_whole(tmp_path: Path) -> None:
    p = _write(tmp_path, b"+79001234567\n" + b"7" * (intake.MAX_LINE_BYTES + 10))
    with pytest.raises(IntakeError, match="line 2: longer than"):
        list(iter_phones_file(p))


def test_dash_reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbf# list\n+79001234567\n\n79001234568\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", fake)
    assert list(iter_phones_file("-")) == [(2, "+79001234567"), (4, "79001234568")]


def test_memory_stays_flat_for_a_large_file(tmp_path: Path) -> None:
    n = 200_000
    p = tmp_path / "big.txt"
    with p.open("w") as f:
        for i in range(n):
            f.write(f"+7 900 {i:07d}\n")
    tracemalloc.start()
    try:
        count = sum(1 for item in iter_recipients(iter_phones_file(p)) if not isinstance(item, Rejected))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < 512 * 1024  # bytes: a few lines' worth, not 200,000 of them (~15 MB)


# --- iter_recipients ----------------------------------------------------------------------------------


def test_iter_recipients_yields_phones_and_rejections_in_order() -> None:
    lines = [(1, "+7 900 123-45-67"), (3, "12345"), (4, "79001234567"), (7, "+7 900 abc")]
    assert list(iter_recipients(lines)) == [
        (1, "+79001234567"),
        Rejected(3, "12345", "5 digits; a number needs 10 to 15"),
        (4, "79001234567"),
        Rejected(7, "+7 900 abc", "unexpected character 'a'; expected digits, one leading '+' and separators"),
    ]


def test_iter_recipients_does_not_deduplicate() -> None:
    lines = [(1, "+79001234567"), (2, "+7 900 123 45 67")]
    assert list(iter_recipients(lines)) == [(1, "+79001234567"), (2, "+79001234567")]


def test_iter_recipients_takes_whole_numbers_and_rejects_other_types_by_name() -> None:
    lines = [(1, 79060000001), (2, "+79060000002"), (3, 7.906e10), (4, None), (5, True), (6, -79060000001)]
    got = list(iter_recipients(lines))
    assert got[:2] == [(1, "79060000001"), (2, "+79060000002")]
    assert [(r.line_no, r.reason) for r in got[2:]] == [  # type: ignore[union-attr]
        (3, "expected a phone number as text or a whole number, not float"),
        (4, "expected a phone number as text or a whole number, not NoneType"),
        (5, "expected a phone number as text or a whole number, not bool"),
        (6, "a negative number"),
    ]


# --- tel: URIs (RFC 3966) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("tel:+7-900-123-45-67", "+79001234567"),
        ("TEL:+79001234567", "+79001234567"),
        ("tel:+1-212-555-1234;phone-context=example.com", "+12125551234"),
        (" tel:79001234567 ", "79001234567"),
    ],
)
def test_a_tel_uri_is_a_number(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


def test_a_tel_uri_with_an_extension_is_refused_by_name() -> None:
    with pytest.raises(InvalidPhone, match="extension"):
        normalize_phone("tel:+79001234567;ext=12")


# --- a default region: one subscriber, one spelling --------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["8 900 123-45-67", "+7 900 123-45-67", "7 (900) 123-45-67", "79001234567", "89001234567", "900 123 45 67",
     "tel:+7-900-123-45-67", "tel:8-900-123-45-67", "+79001234567"],
)
def test_with_region_ru_every_spelling_of_one_subscriber_is_one_e164_number(raw: str) -> None:
    assert normalize_phone(raw, "RU") == "+79001234567"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8 495 123-45-67", "+74951234567"),  # Moscow landline, national (84... is also Vietnam's code)
        ("8 800 555-35-35", "+78005553535"),  # toll free
        ("12125551234", "+12125551234"),  # another country's number, '+' left out
        ("380501234567", "+380501234567"),
        ("8 10 1 212 555 1234", "+12125551234"),  # RU's international prefix 810
        ("+8 900 123 45 67", "+89001234567"),  # written with '+': taken as written
    ],
)
def test_with_region_ru_national_and_foreign_numbers_are_read_as_the_provider_would(raw: str, expected: str) -> None:
    assert normalize_phone(raw, "RU") == expected


def test_with_a_region_a_number_valid_in_no_reading_is_refused_with_the_remedy() -> None:
    with pytest.raises(InvalidPhone) as info:
        normalize_phone("70000000000", "RU")
    assert info.value.reason == (
        "not a valid number in region RU, nor with a country code; write it with '+' and the country code")
    assert normalize_phone("+70000000000", "RU") == "+70000000000"


def test_with_a_region_national_numbers_shorter_than_ten_digits_are_accepted() -> None:
    # Berlin: 030 1234567 is +49 30 1234567 (11 digits with its country code).
    assert normalize_phone("030 12345678", "DE") == "+493012345678"


def test_with_a_region_the_dedup_key_of_every_spelling_is_one() -> None:
    spellings = ["8 900 123-45-67", "+7 900 123-45-67", "79001234567", "9001234567"]
    assert {phone_key(normalize_phone(x, "RU")) for x in spellings} == {"79001234567"}
    lines = list(enumerate(spellings, start=1))
    assert {p for _, p in iter_recipients(lines, region="RU")} == {"+79001234567"}  # type: ignore[misc]


def test_without_a_region_national_spellings_stay_as_written() -> None:
    # Today's behaviour: the provider may auto-correct a number without '+', so 8... and +7... are two.
    assert normalize_phone("8 900 123-45-67") == "89001234567"
    assert phone_key(normalize_phone("8 900 123-45-67")) != phone_key(normalize_phone("+7 900 123-45-67"))


def test_region_error_names_an_unknown_region() -> None:
    assert intake.region_error("RU") == ""
    assert "unknown region 'XX'" in intake.region_error("XX")


_REGIONS = ["RU", "KZ", "BY", "UA", "US", "CA", "DE", "GB", "FR", "IT", "IN", "CN", "AR", "BR", "MX", "IL", "VN"]


def _valid_numbers(region: str, rng: random.Random, per_type: int = 40) -> list[phonenumbers.PhoneNumber]:
    out = []
    for t in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
              phonenumbers.PhoneNumberType.TOLL_FREE):
        ex = phonenumbers.example_number_for_type(region, t)
        if ex is None:
            continue
        base = str(ex.national_number)
        for _ in range(per_type * 3):
            nsn = base[:-4] + "".join(rng.choice("0123456789") for _ in range(4))
            num = phonenumbers.parse(f"+{ex.country_code}{nsn}")
            if phonenumbers.is_valid_number(num):
                out.append(num)
            if len(out) >= per_type:
                break
    return out


@pytest.mark.parametrize("region", _REGIONS)
def test_the_national_spelling_of_a_valid_number_is_its_e164_in_every_region(region: str) -> None:
    rng = random.Random(region)
    for num in _valid_numbers(region, rng):
        e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        national = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
        if phonenumbers.region_code_for_number(num) == region:
            assert normalize_phone(national, region) == e164, national
        assert normalize_phone(e164, region) == e164


@given(st.sampled_from(_REGIONS), st.text(alphabet="0123456789", min_size=6, max_size=15))
def test_the_fast_reading_of_a_region_is_phonenumbers_reading(region: str, digits: str) -> None:
    r = intake._region(region)
    assert r.e164(digits) == r._parse(digits)


def test_a_file_digest_is_the_bytes_read(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf# list\r\n+79001234567\n\n79001234568"
    h = hashlib.sha256()
    assert len(list(iter_phones_file(_write(tmp_path, data), digest=h))) == 2
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_folder_is_not_a_file_of_numbers(tmp_path: Path) -> None:
    with pytest.raises(IntakeError, match="cannot open: it is a folder"):
        list(iter_phones_file(tmp_path))
    with pytest.raises(IntakeError, match="cannot open: no such file"):
        list(iter_phones_file(tmp_path / "nope.txt"))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(["+79001234567", "79001234567", "89001234567", "+7900123456789012", "7900123456", "+790012345",
                     "", "+", "++79001234567", "7+9001234567", "7900,1234567", " 79001234567", "7 900 123-45-67",
                     "tel:+79001234567", "٧٩٠٠١٢٣٤٥٦٧", "+1234567890123456"]),
    st.text(alphabet="0123456789+, -", max_size=18)), max_size=30))
def test_phone_keys_are_phone_key_of_each(phones: list[str]) -> None:
    try:
        want: list[str] | type[InvalidPhone] = [phone_key(p) for p in phones]
    except InvalidPhone:
        want = InvalidPhone
    try:
        got: list[str] | type[InvalidPhone] = phone_keys(phones)
    except InvalidPhone:
        got = InvalidPhone
    assert got == want
