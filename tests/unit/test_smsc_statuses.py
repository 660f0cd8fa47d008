"""What status.php's codes mean (worker.smsc.statuses): taken or not, sent or failed, in words."""

from __future__ import annotations

import pytest

from worker.smsc import statuses
from worker.smsc.statuses import (
    DELIVERY_ERRORS,
    STATUS_DESCRIPTIONS,
    describe_delivery_error,
    describe_status,
    outcome_of,
)


def test_statuses_public_surface_is_pinned() -> None:
    assert sorted(statuses.__all__) == sorted(
        [
            "DELIVERY_ERRORS",
            "FAILED_STATUSES",
            "SENT_STATUSES",
            "STATUS_DESCRIPTIONS",
            "STATUS_NOT_FOUND",
            "Outcome",
            "describe_delivery_error",
            "describe_status",
            "outcome_of",
        ]
    )
    assert all(hasattr(statuses, name) for name in statuses.__all__)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(-3, "not-found"), (-2, "failed"), (-1, "sent"), (0, "sent"), (1, "sent"), (2, "sent"), (3, "sent"),
     (4, "sent"), (20, "failed"), (22, "failed"), (23, "failed"), (24, "failed"), (25, "failed")],
)
def test_every_documented_status_has_its_outcome(status: int, outcome: str) -> None:
    assert outcome_of(status) == outcome


def test_an_unknown_status_is_taken_and_never_sent_again() -> None:
    # The provider has the message; nothing says it failed, and sending it again could duplicate it.
    assert outcome_of(21) == "sent"
    assert outcome_of(99) == "sent"


@pytest.mark.parametrize(
    ("status", "words"),
    [(20, "cannot be delivered"), (22, "invalid number"), (23, "prohibited"), (24, "insufficient funds"),
     (25, "unreachable number"), (-2, "stopped"), (-3, "message not found"), (1, "delivered"), (77, "status 77")],
)
def test_statuses_in_words(status: int, words: str) -> None:
    assert describe_status(status) == words


def test_the_documented_status_and_delivery_error_tables_are_complete() -> None:
    assert sorted(STATUS_DESCRIPTIONS) == [-3, -2, -1, 0, 1, 2, 3, 4, 20, 22, 23, 24, 25]
    assert sorted(DELIVERY_ERRORS) == [0, 1, 6, 11, 12, 13, 21, 200, 219, 220, *range(237, 256)]
    assert all(words and words == words.strip() for words in DELIVERY_ERRORS.values())


@pytest.mark.parametrize(
    ("err", "words"),
    [(0, "no error"), (1, "subscriber does not exist"), (6, "subscriber not in the network"),
     (249, "wrong number format"), (253, "spam filter"), (255, "rejected by the operator"),
     (300, "delivery error 300")],
)
def test_delivery_errors_in_words(err: int, words: str) -> None:
    assert describe_delivery_error(err) == words
