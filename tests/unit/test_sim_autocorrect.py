"""Numbers written without "+" corrected as the provider corrects them, and everything that follows from it."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.unit.sim_helpers import Clock, send, status, stepped_sim
from worker.sim import Simulator
from worker.sim.rules import provider_phone


@pytest.fixture
def sim(clock: Clock) -> Simulator:
    return stepped_sim(clock, autocorrect=True)


@pytest.mark.parametrize(("written", "recorded"), [
    ("89001234567", "79001234567"),  # national trunk prefix 8 -> country code 7
    ("8 (900) 123-45-67", "79001234567"),
    ("9001234567", "79001234567"),  # ten digits from 9: the country code is added
    ("+89001234567", "89001234567"),  # with "+" the provider takes the number as written
    ("+9001234567", "9001234567"),
    ("79001234567", "79001234567"),
    ("380501234567", "380501234567"),  # other countries are left alone
    ("8900123456", "8900123456"),  # ten digits from 8: not a Russian national spelling
    ("123", None),
])
def test_provider_phone_corrects_only_what_the_provider_corrects(written: str, recorded: str | None) -> None:
    assert provider_phone(written, autocorrect=True) == recorded
    assert provider_phone(written, autocorrect=False) == (None if recorded is None else
                                                          written.translate(str.maketrans("", "", " ()-+")))


def test_corrected_numbers_are_recorded_and_echoed_corrected_in_op1(sim: Simulator, client: httpx.Client) -> None:
    body = send(client, phones="89001234567,9001234568,+79001234569", mes="hi", id=1, fmt=1, op=1)
    assert body.splitlines() == ["1,3", "79001234567,25001,1.50,0,0", "79001234568,25001,1.50,0,0",
                                 "79001234569,25001,1.50,0,0"]
    obj = json.loads(send(client, phones="8 900 123-45-70", mes="hi", id=2, fmt=3, op=1))
    assert [p["phone"] for p in obj["phones"]] == ["79001234570"]
    assert sorted(sim.phones()) == ["79001234567", "79001234568", "79001234569", "79001234570"]
    assert [m["phone"] for m in sim.record()][:2] == ["79001234567", "79001234568"]


def test_status_finds_a_corrected_message_only_by_the_corrected_spelling(client: httpx.Client) -> None:
    send(client, phones="89001234567", mes="hi", id=1)
    assert status(client, "89001234567", "1") == "-3,0,0"  # the spelling that was sent: unknown
    assert status(client, "79001234567", "1").startswith("1,")
    assert status(client, "+79001234567", "1").startswith("1,")
    listed = json.loads(status(client, "89001234567,+79001234567", "1,1", fmt=3))
    assert [(m["phone"], m["status"]) for m in listed] == [("89001234567", -3), ("79001234567", 1)]


def test_two_spellings_of_one_subscriber_are_one_subscriber_at_the_provider(sim: Simulator,
                                                                          client: httpx.Client) -> None:
    send(client, phones="89001234567", mes="same text", id=1)
    send(client, phones="+79001234567", mes="same text", id=2)
    summary = sim.summary()
    assert sim.phones() == {"79001234567": 2}
    assert summary["messages"] == 2 and summary["duplicates"] == 1


def test_the_flood_chain_counts_every_spelling_of_one_subscriber(sim: Simulator, client: httpx.Client) -> None:
    spellings = ["89001234567", "+79001234567", "9001234567"]
    for n in range(51):
        send(client, phones=spellings[n % 3], mes=f"n{n}", id=n + 1)
    assert sim.summary()["breaches"]["flood"] == 1


def test_undeliverable_prefixes_apply_to_the_corrected_number(sim: Simulator, client: httpx.Client) -> None:
    sim.configure(undeliverable_prefixes=["7900"])
    assert send(client, phones="89001234567", mes="x", id=3, fmt=1) == "3,-8"


def test_without_autocorrect_the_number_is_kept_as_written(sim: Simulator, client: httpx.Client) -> None:
    sim.configure(autocorrect=False)
    assert send(client, phones="89001234567", mes="x", id=4, fmt=1, op=1).splitlines()[1].startswith("89001234567,")
    assert sim.phones() == {"89001234567": 1}
    assert status(client, "89001234567", "4").startswith("1,")
