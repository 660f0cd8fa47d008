"""SendReport.match: the fast way (numbers of digits only, echoed as sent) answers what the full echo index
answers, for any batch and any echo — the provider's corrections (8… → 7…, 9… → 79…) and a '+' included."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.smsc.phones import echo_index
from worker.smsc.reports import PhoneReport, SendReport

_NUMBERS = st.sampled_from(["79001234567", "89001234567", "9001234567", "+79001234567", "79001234568",
                            "89001234568", "7 900 123-45-67", "380501234567", "1"])


def _slow(report: SendReport, phones: list[str]) -> dict[str, PhoneReport]:
    index = echo_index(phones)
    out: dict[str, PhoneReport] = {}
    for r in report.phones:
        ours = index.get(r.phone.lstrip("+"))
        if ours is not None:
            out.setdefault(ours, r)
    return out


@settings(max_examples=2000)
@given(st.lists(_NUMBERS, max_size=6), st.lists(_NUMBERS, max_size=6))
def test_match_answers_what_the_echo_index_answers(phones: list[str], echoes: list[str]) -> None:
    report = SendReport(id="1", cnt=len(echoes), cost=None, balance=None,
                        phones=tuple(PhoneReport(e.replace(" ", "").replace("-", ""), "", Decimal(0), 0, i)
                                     for i, e in enumerate(echoes)))
    assert report.match(phones) == _slow(report, phones)


def test_a_corrected_echo_finds_the_number_as_we_wrote_it() -> None:
    taken, refused = PhoneReport("79001234567", "", Decimal(1), 0, 0), PhoneReport("79001234568", "", Decimal(0), 0, 7)
    report = SendReport(id="1", cnt=2, cost=None, balance=None, phones=(taken, refused))
    matched = report.match(["89001234567", "79001234568"])
    assert matched == {"89001234567": taken, "79001234568": refused}
