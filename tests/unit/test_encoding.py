"""What a text costs and which texts and senders the provider accepts (worker.smsc.encoding)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.smsc import encoding
from worker.smsc.encoding import (
    GSM_BASIC,
    GSM_EXTENDED,
    Segments,
    count_segments,
    validate_message,
    validate_sender,
)

GSM_TEXT = st.text(alphabet=sorted(GSM_BASIC | GSM_EXTENDED), max_size=1000)
CYRILLIC = "Привет мир, это тест"


def test_public_surface_is_pinned() -> None:
    assert sorted(encoding.__all__) == sorted(
        [
            "GSM_BASIC",
            "GSM_EXTENDED",
            "MAX_MESSAGE_CHARS",
            "Segments",
            "count_segments",
            "validate_message",
            "validate_sender",
        ]
    )
    for name in encoding.__all__:
        assert hasattr(encoding, name)


def test_gsm_tables_have_the_standard_sizes() -> None:
    # 128 codes in the basic table minus ESC; the extension table's 10 printable entries incl. form feed.
    assert len(GSM_BASIC) == 127
    assert GSM_EXTENDED == frozenset("\f^{}\\[~]|€")
    assert not GSM_BASIC & GSM_EXTENDED


@pytest.mark.parametrize("ch", list("^{}\\[~]|€\f"))
def test_every_extension_character_costs_two_septets(ch: str) -> None:
    seg = count_segments("a" + ch)
    assert seg == Segments("gsm7", chars=2, units=3, parts=1)


def test_latin_text_fits_160_per_sms_then_153_per_part() -> None:
    assert count_segments("a" * 160).parts == 1
    assert count_segments("a" * 161).parts == 2
    assert count_segments("a" * 306).parts == 2
    assert count_segments("a" * 307).parts == 3
    assert count_segments("a" * 459).parts == 3
    assert count_segments("a" * 460).parts == 4


def test_extension_characters_push_a_text_into_a_second_part() -> None:
    # 159 plain + one '€' = 161 septets: two SMS although it is only 160 characters.
    seg = count_segments("a" * 159 + "€")
    assert (seg.encoding, seg.chars, seg.units, seg.parts) == ("gsm7", 160, 161, 2)
    assert count_segments("{" * 80).parts == 1
    assert count_segments("{" * 81).parts == 2


def test_cyrillic_fits_70_per_sms_then_67_per_part() -> None:
    assert count_segments("я" * 70) == Segments("ucs2", 70, 70, 1)
    assert count_segments("я" * 71).parts == 2
    assert count_segments("я" * 134).parts == 2
    assert count_segments("я" * 135).parts == 3


def test_one_non_gsm_character_switches_the_whole_text_to_ucs2() -> None:
    seg = count_segments("a" * 100 + "ж")
    assert seg.encoding == "ucs2"
    assert seg.parts == 2  # 101 UCS-2 units: over 70


def test_emoji_outside_the_bmp_count_two_units() -> None:
    assert count_segments("😀") == Segments("ucs2", chars=1, units=2, parts=1)
    assert count_segments("😀" * 35).parts == 1
    assert count_segments("😀" * 35 + "a").parts == 2


def test_gsm_accented_letters_stay_gsm7_but_others_do_not() -> None:
    assert count_segments("èéùìòÇØøÅåÆæßÉÄÖÑÜäöñüà¿¡§£¥").encoding == "gsm7"
    assert count_segments("ç").encoding == "ucs2"  # only capital Ç is in the GSM table
    assert count_segments("á").encoding == "ucs2"


def test_empty_text_has_no_parts() -> None:
    assert count_segments("") == Segments("gsm7", 0, 0, 0)


@given(GSM_TEXT)
def test_gsm_parts_follow_the_160_153_rule(text: str) -> None:
    seg = count_segments(text)
    assert seg.encoding == "gsm7"
    assert seg.units == len(text) + sum(ch in GSM_EXTENDED for ch in text)
    if seg.units == 0:
        assert seg.parts == 0
    elif seg.units <= 160:
        assert seg.parts == 1
    else:
        assert seg.parts == math.ceil(seg.units / 153)


@given(st.text(min_size=1, max_size=1000).filter(lambda t: any(c not in GSM_BASIC | GSM_EXTENDED for c in t)))
def test_ucs2_parts_follow_the_70_67_rule(text: str) -> None:
    seg = count_segments(text)
    assert seg.encoding == "ucs2"
    assert seg.units == len(text.encode("utf-16-le")) // 2
    expected = 1 if seg.units <= 70 else math.ceil(seg.units / 67)
    assert seg.parts == expected


def test_validate_message_returns_the_segments() -> None:
    assert validate_message(CYRILLIC) == count_segments(CYRILLIC)


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_messages_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"^message is empty$"):
        validate_message(text)


def test_the_1000_character_limit() -> None:
    assert validate_message("x" * 1000).parts == math.ceil(1000 / 153)
    with pytest.raises(ValueError) as info:
        validate_message("x" * 1001)
    assert str(info.value) == "message is 1001 characters; the provider accepts at most 1000"


def test_the_limit_counts_characters_not_units() -> None:
    # 1000 emoji are 2000 UTF-16 units but still 1000 characters.
    assert validate_message("😀" * 1000).units == 2000
    with pytest.raises(ValueError, match="1001 characters"):
        validate_message("😀" * 1001)


@pytest.mark.parametrize(
    "name", ["ACME", "A", "Shop & Co", "my.shop-1_x", "ABCDEFGHIJK", "123456789012345", "7", "Bank 24"]
)
def test_valid_senders_are_returned_unchanged(name: str) -> None:
    assert validate_sender(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("    ", "empty"),
        ("ABCDEFGHIJKL", "12 characters"),
        ("1234567890123456", "16 digits"),
        ("Магазин", "'М'"),
        ("shop@home", "'@'"),
        ("a\nb", "'\\n'"),
        ("１２３", "'１'"),
    ],
)
def test_invalid_senders_are_refused_with_a_one_line_reason(name: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_sender(name)
    message = str(info.value)
    assert why in message
    assert "\n" not in message
