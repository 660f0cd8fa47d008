"""How the provider spells a number (worker.smsc.phones): its auto-correction, and matching its echoes."""

from __future__ import annotations

import pytest

from worker.smsc import phones
from worker.smsc.phones import echo_index, mask_phone, provider_spelling, same_subscriber, status_phone


def test_phones_public_surface_is_pinned() -> None:
    assert sorted(phones.__all__) == [
        "echo_index",
        "mask_phone",
        "provider_spelling",
        "same_subscriber",
        "status_phone",
    ]


@pytest.mark.parametrize(
    ("ours", "spelled"),
    [
        ("89001234567", "79001234567"),  # Russian trunk prefix 8 -> country code 7
        ("9001234567", "79001234567"),  # ten digits starting with 9 -> 7 added
        ("79001234567", "79001234567"),  # already international
        ("+79001234567", "79001234567"),
        ("+89001234567", "89001234567"),  # written with "+": never corrected
        ("+9001234567", "9001234567"),
        ("8 (900) 123-45-67", "79001234567"),  # separators, as the provider ignores them
        ("380501234567", "380501234567"),  # other countries: as written
        ("8900123456", "8900123456"),  # ten digits starting with 8: no rule
        ("890012345678", "890012345678"),  # twelve digits: no rule
    ],
)
def test_provider_spelling_is_the_number_the_provider_stores_and_echoes(ours: str, spelled: str) -> None:
    assert provider_spelling(ours) == spelled


@pytest.mark.parametrize(
    ("ours", "asked"),
    [("89001234567", "79001234567"), ("9001234567", "79001234567"), ("+89001234567", "+89001234567"),
     ("+79001234567", "+79001234567"), ("79001234567", "79001234567")],
)
def test_a_status_request_asks_by_the_stored_spelling_and_keeps_a_plus(ours: str, asked: str) -> None:
    assert status_phone(ours) == asked


@pytest.mark.parametrize(
    ("ours", "echoed", "same"),
    [
        ("89001234567", "79001234567", True),  # the provider corrected it
        ("89001234567", "89001234567", True),  # a provider that did not
        ("9001234567", "79001234567", True),
        ("+79001234567", "79001234567", True),  # echoes come without "+"
        ("+89001234567", "89001234567", True),
        ("+89001234567", "79001234567", False),  # "+" is never corrected: another subscriber
        ("79001234567", "79001234568", False),
        ("89001234567", "+79001234567", True),
    ],
)
def test_same_subscriber_matches_the_echo_to_ours(ours: str, echoed: str, same: bool) -> None:
    assert same_subscriber(ours, echoed) is same


def test_echo_index_finds_each_of_ours_from_its_echo() -> None:
    ours = ["89001234567", "+79001234568", "9001234569", "380501234567"]
    index = echo_index(ours)
    assert index["79001234567"] == "89001234567"
    assert index["89001234567"] == "89001234567"
    assert index["79001234568"] == "+79001234568"
    assert index["79001234569"] == "9001234569"
    assert index["380501234567"] == "380501234567"
    assert "79001234560" not in index


def test_echo_index_prefers_the_number_written_exactly_as_echoed() -> None:
    # One subscriber written two ways in one batch: the echo "79001234567" is the exact one's.
    assert echo_index(["89001234567", "79001234567"])["79001234567"] == "79001234567"
    assert echo_index(["79001234567", "89001234567"])["79001234567"] == "79001234567"
    assert echo_index(["79001234567", "79001234567"]) == {"79001234567": "79001234567"}


def test_mask_phone_keeps_only_the_last_four_digits() -> None:
    assert mask_phone("+79991234567") == "****4567"
    assert mask_phone("123") == "****"
