"""What a text costs and which texts and senders the provider accepts (worker.smsc.encoding)."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.smsc import encoding
from worker.smsc.encoding import (
    EXPLAIN_MAX_CHARS,
    GSM_BASIC,
    GSM_EXTENDED,
    SHORT_LINK_PREFIX,
    Segments,
    Ucs2Explain,
    check_message,
    count_parts,
    count_segments,
    delivered_text,
    explain_ucs2,
    shorten_links,
    text_parts,
    transliterate,
    truncate_to_parts,
    validate_message,
    validate_sender,
)

GSM_TEXT = st.text(alphabet=sorted(GSM_BASIC | GSM_EXTENDED), max_size=1000)
CYRILLIC = "Привет мир, это тест"


def test_public_surface_is_pinned() -> None:
    assert sorted(encoding.__all__) == sorted(
        [
            "EXPLAIN_MAX_CHARS",
            "GSM_BASIC",
            "GSM_EXTENDED",
            "MAX_MESSAGE_CHARS",
            "SHORT_LINK_PREFIX",
            "Segments",
            "Ucs2Explain",
            "check_message",
            "count_parts",
            "count_segments",
            "delivered_text",
            "explain_ucs2",
            "not_utf8",
            "shorten_links",
            "text_parts",
            "transliterate",
            "truncate_to_parts",
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


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=1100))
def test_the_uncached_count_and_the_bare_check_say_what_validate_message_says(text: str) -> None:
    """``cached=False`` (an intake's texts, seen once) and :func:`check_message` (the intake's child reader:
    refuses without counting) agree with the cached path on every text: same segments, same refusal."""
    try:
        want: object = validate_message(text)
    except ValueError as exc:
        want = str(exc)
    for how in (lambda: validate_message(text, cached=False), lambda: (check_message(text), count_segments(text))[1]):
        try:
            got: object = how()
        except ValueError as exc:
            got = str(exc)
        assert got == want
        assert type(got) is type(want)
    old_empty = not text.strip()
    assert (want == "message is empty") == old_empty


def _parts_by_the_rules(text: str) -> int:
    """The parts of ``text`` worked out from the GSM 03.38 and UCS-2 rules, character by character."""
    if all(c in GSM_BASIC or c in GSM_EXTENDED for c in text):
        units, single, multi = sum(2 if c in GSM_EXTENDED else 1 for c in text), 160, 153
    else:
        units, single, multi = sum(2 if ord(c) > 0xFFFF else 1 for c in text), 70, 67
    return 0 if units == 0 else 1 if units <= single else math.ceil(units / multi)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZ9 @£€^{}[]|~\\\n\rЖё😀𝄞é"), max_size=400) | st.text(max_size=400))
def test_text_parts_counts_what_the_rules_count(text: str) -> None:
    """:func:`text_parts` (an intake's personal texts, uncached) bills what ``count_segments`` bills."""
    assert text_parts(text) == count_segments(text).parts == _parts_by_the_rules(text)


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


# -- what the provider bills with the options: translit, tinyurl, maxsms --------------------------------

RUSSIAN = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"


def test_translit_reproduces_the_providers_two_examples() -> None:
    # seed/smsc-send-api.txt: 1 - "translit", 2 - "mpaHc/Ium" (both of the word "транслит").
    assert transliterate("транслит", 1) == "translit"
    assert transliterate("транслит", 2) == "mpaHc/Ium"
    assert transliterate("транслит", 0) == "транслит"


@pytest.mark.parametrize("mode", [1, 2])
def test_every_cyrillic_letter_becomes_gsm7(mode: int) -> None:
    letters = RUSSIAN + RUSSIAN.upper() + "іїєґўІЇЄҐЎ"
    for ch in letters:
        out = transliterate(ch, mode)
        assert out and count_segments(out).encoding == "gsm7", (ch, out)


def test_translit_1_capitals_follow_the_word() -> None:
    assert transliterate("Жук ЖУК Щи ЩИ Юля", 1) == "Zhuk ZHUK Shhi SHHI Yulya"
    assert transliterate("Съешь же ещё этих", 1) == "S''esh' zhe eshhyo e'tix"


def test_translit_leaves_everything_but_cyrillic_letters() -> None:
    text = "Hi 😀 «quotes» — №5 {x}"
    assert transliterate(text, 1) == transliterate(text, 2) == text
    assert transliterate("Привет 😀", 1) == "Privet 😀"
    assert count_segments(transliterate("Привет 😀", 1)).encoding == "ucs2"  # the emoji keeps UCS-2


def test_an_unknown_translit_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^translit 3: give 0"):
        transliterate("x", 3)


def test_a_hundred_cyrillic_characters_are_two_parts_and_one_after_translit() -> None:
    text = ("Привет мир, это тест сообщения для проверки длины в сто символов. "
            "Ещё немного текста тут!!! ок, да!")[:99] + "!"
    assert len(text) == 100
    assert count_parts(text) == count_segments(text).parts == 2
    assert count_parts(text, translit=1) == 1
    assert count_parts(text, translit=2) == 1


def test_maxsms_caps_the_billed_parts_and_cuts_the_delivered_text() -> None:
    assert count_parts("я" * 300) == 5
    assert count_parts("я" * 300, maxsms=2) == 2
    assert count_parts("я" * 300, maxsms=9) == 5
    assert delivered_text("я" * 300, maxsms=2) == "я" * 134
    assert truncate_to_parts("a" * 400, 1) == "a" * 160
    assert truncate_to_parts("a" * 400, 2) == "a" * 306
    assert truncate_to_parts("short", 1) == "short"
    # An extension character (2 septets) or an emoji (2 units) is never split at the limit.
    assert truncate_to_parts("a" * 159 + "€" * 5, 1) == "a" * 159
    assert truncate_to_parts("я" * 69 + "😀" * 5, 1) == "я" * 69
    with pytest.raises(ValueError, match="maxsms 0"):
        count_parts("x", maxsms=0)


@given(st.text(min_size=1, max_size=1000), st.integers(min_value=1, max_value=4))
def test_a_cut_text_is_a_prefix_that_fits_maxsms(text: str, maxsms: int) -> None:
    cut = truncate_to_parts(text, maxsms)
    assert text.startswith(cut)
    assert count_parts(text, maxsms=maxsms) == min(count_segments(text).parts, maxsms)
    if cut != text:
        gsm = count_segments(text).encoding == "gsm7"
        single, multi = (160, 153) if gsm else (70, 67)
        room = single if maxsms == 1 else multi * maxsms
        units = sum((2 if (c in GSM_EXTENDED if gsm else ord(c) > 0xFFFF) else 1) for c in cut)
        assert room - 1 <= units <= room  # full up to a 2-unit character that did not fit


def test_tinyurl_replaces_every_link_with_one_of_fixed_length() -> None:
    text = "Order: https://shop.example.com/orders/123456789?utm=sms, or http://x.ru."
    short = shorten_links(text)
    links = [w.rstrip(".,") for w in short.split() if w.startswith(SHORT_LINK_PREFIX)]
    assert len(links) == 2 and all(len(link) == len(SHORT_LINK_PREFIX) + 6 for link in links)
    assert short.startswith("Order: " + SHORT_LINK_PREFIX) and short.endswith(".")
    assert short.count(",") == 1  # the comma after the first link stays in the sentence
    assert shorten_links(text) == short  # the same link always gets the same code
    assert shorten_links("no links here") == "no links here"
    long_link = "See https://example.com/" + "a" * 200
    assert count_parts(long_link) == 2 and count_parts(long_link, tinyurl=True) == 1


def test_explain_ucs2_is_none_for_a_gsm_text() -> None:
    assert explain_ucs2("Hello {world} €5") is None


def test_explain_ucs2_names_the_one_emoji_that_forced_ucs2() -> None:
    text = "Your code is 123456. Thank you for shopping with us, see you soon! 😀 " + "x" * 60
    e = explain_ucs2(text)
    # 129 characters, 130 UTF-16 units: 2 UCS-2 parts; 1 GSM-7 part without the emoji; translit cannot help.
    assert e == Ucs2Explain(chars=("😀",), more=0, parts=2, parts_without=1, parts_translit1=2, parts_translit2=2)


def test_explain_ucs2_names_a_lone_cyrillic_letter_and_what_translit_saves() -> None:
    text = "Delivery tomorrow between 10:00 and 14:00, courier Иван will call you first. " * 2
    e = explain_ucs2(text)
    assert e is not None
    assert e.chars == ("И", "в", "а", "н")
    assert (e.parts, e.parts_without, e.parts_translit1, e.parts_translit2) == (3, 1, 1, 1)


def test_explain_ucs2_names_at_most_twenty_characters_and_counts_the_rest() -> None:
    e = explain_ucs2(RUSSIAN)
    assert e is not None
    assert e.chars == tuple(RUSSIAN[:EXPLAIN_MAX_CHARS]) and e.more == len(RUSSIAN) - EXPLAIN_MAX_CHARS
    assert e.parts_without == 0


@pytest.mark.parametrize(("text", "where"), [("a\ud800b", "U+D800 at character 2"), ("\udc7f", "U+DC7F at character 1"),
                                             ("ok 😀 then \ude00", "U+DE00 at character 11")])
def test_a_lone_surrogate_is_refused_in_one_line_and_a_pair_is_an_emoji(text: str, where: str) -> None:
    with pytest.raises(ValueError, match=r"^message holds a lone surrogate \(" + re.escape(where) + r"\), ") as info:
        validate_message(text)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="lone surrogate"):
        check_message(text)
    assert validate_message("ok 😀").encoding == "ucs2"


def test_a_byte_that_was_not_utf8_is_named_as_such() -> None:
    # What Python makes of "café" typed in Latin-1 on a command line (surrogateescape).
    text = b"caf\xe9".decode("utf-8", "surrogateescape")
    with pytest.raises(ValueError, match=r"^message holds the byte 0xE9 \(at character 4\), which is not UTF-8: "):
        validate_message(text)
