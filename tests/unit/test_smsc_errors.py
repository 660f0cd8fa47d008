"""The error model (worker.smsc.errors): one class per meaning, classified once, nothing secret."""

from __future__ import annotations

import inspect
import pickle

import pytest

from worker.smsc import errors
from worker.smsc.errors import (
    SmscAccountBlocked,
    SmscAuthError,
    SmscBatchRejected,
    SmscConnectError,
    SmscError,
    SmscHttpError,
    SmscInsufficientFunds,
    SmscNumbersRejected,
    SmscTooManyRequests,
    SmscTransportError,
    SmscUnknownOutcome,
    classify,
)

CLASSES = [
    SmscError,
    SmscTransportError,
    SmscConnectError,
    SmscUnknownOutcome,
    SmscHttpError,
    SmscTooManyRequests,
    SmscAccountBlocked,
    SmscBatchRejected,
    SmscNumbersRejected,
    SmscInsufficientFunds,
    SmscAuthError,
]


def test_errors_public_surface_is_pinned() -> None:
    assert sorted(errors.__all__) == sorted(
        [
            "BLOCKED_RETRY_AFTER_S",
            "DUPLICATE_RETRY_AFTER_S",
            "ERROR_DESCRIPTIONS",
            "HTTP_4XX_RETRY_AFTER_S",
            "HTTP_5XX_RETRY_AFTER_S",
            "SmscAccountBlocked",
            "SmscAuthError",
            "SmscBatchRejected",
            "SmscConnectError",
            "SmscError",
            "SmscHttpError",
            "SmscInsufficientFunds",
            "SmscNumbersRejected",
            "SmscTooManyRequests",
            "SmscTransportError",
            "SmscUnknownOutcome",
            "classify",
            "describe",
        ]
    )
    assert all(hasattr(errors, name) for name in errors.__all__)
    assert "SmscRetryable" not in errors.__all__ and "SmscAccountBackoff" not in errors.__all__


def test_the_tree_is_the_one_drawn_in_the_docstring() -> None:
    parents = {cls.__name__: cls.__mro__[1].__name__ for cls in CLASSES[1:]}
    assert parents == {
        "SmscTransportError": "SmscError",
        "SmscConnectError": "SmscTransportError",
        "SmscUnknownOutcome": "SmscTransportError",
        "SmscHttpError": "SmscError",
        "SmscTooManyRequests": "SmscError",
        "SmscAccountBlocked": "SmscError",
        "SmscBatchRejected": "SmscError",
        "SmscNumbersRejected": "SmscError",
        "SmscInsufficientFunds": "SmscError",
        "SmscAuthError": "SmscError",
    }
    doc = inspect.getdoc(errors) or ""
    for cls in CLASSES:
        assert cls.__name__ in doc
        assert (cls.__doc__ or "").startswith("Raised when"), cls.__name__
    # The module's exported classes are exactly these (no leftover class of the old model).
    exported = {n for n in errors.__all__ if isinstance(getattr(errors, n), type)}
    assert exported == {cls.__name__ for cls in CLASSES}


@pytest.mark.parametrize(
    ("code", "cls", "retry_after_s"),
    [
        (1, SmscBatchRejected, None),
        (2, SmscAuthError, None),
        (3, SmscInsufficientFunds, None),
        (4, SmscAccountBlocked, 60.0),
        (5, SmscBatchRejected, None),
        (6, SmscBatchRejected, None),
        (7, SmscNumbersRejected, None),
        (8, SmscNumbersRejected, None),
        (9, SmscTooManyRequests, 60.0),
        (42, SmscBatchRejected, None),  # unknown code: the provider answered, so nothing was taken
    ],
)
def test_classify_maps_each_provider_code_to_what_the_batch_must_do(
    code: int, cls: type[SmscError], retry_after_s: float | None
) -> None:
    err = classify(code, "text")
    assert type(err) is cls
    assert (err.code, err.reason, err.retry_after_s) == (code, "text", retry_after_s)


def test_error_9_and_error_4_are_not_http_errors_and_http_errors_are_neither() -> None:
    # The runtime must tell these apart by class: 9 waits out the minute, 4 backs off the account,
    # an HTTP answer is settled through status.php.
    nine, four, http = classify(9, "x"), classify(4, "x"), classify(None, "HTTP 502", http_status=502)
    assert not isinstance(nine, SmscHttpError | SmscAccountBlocked)
    assert not isinstance(four, SmscHttpError | SmscTooManyRequests)
    assert not isinstance(http, SmscTooManyRequests | SmscAccountBlocked | SmscTransportError)


@pytest.mark.parametrize(
    ("status", "retry_after_s"),
    [(500, 5.0), (502, 5.0), (503, 5.0), (504, 5.0), (408, 5.0), (429, 60.0), (403, 60.0), (404, 60.0),
     (302, 60.0), (400, 60.0)],
)
def test_every_non_200_answer_is_an_http_error_with_its_status(status: int, retry_after_s: float) -> None:
    err = classify(None, f"HTTP {status}", http_status=status)
    assert type(err) is SmscHttpError
    assert (err.http_status, err.code, err.reason, err.retry_after_s) == (
        status,
        None,
        f"HTTP {status}",
        retry_after_s,
    )


def test_an_http_status_wins_over_a_provider_code() -> None:
    err = classify(2, "HTTP 403", http_status=403)
    assert type(err) is SmscHttpError and err.code is None


@pytest.mark.parametrize(("header", "expected"), [("120", 120.0), ("0", 1.0), ("86400", 600.0),
                                                  ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0), ("soon", 60.0)])
def test_retry_after_header_in_seconds_is_honoured_within_bounds(header: str, expected: float) -> None:
    assert classify(None, "HTTP 429", http_status=429, retry_after=header).retry_after_s == expected


def test_error_text_is_one_readable_line() -> None:
    err = classify(9, "duplicate request, wait a minute")
    assert str(err) == "error 9: duplicate request, wait a minute; retry after 60 s"
    assert repr(err) == "SmscTooManyRequests(reason='duplicate request, wait a minute', code=9, retry_after_s=60.0)"
    http = classify(None, "HTTP 502", http_status=502)
    assert str(http) == "HTTP 502; retry after 5 s"
    assert repr(http) == "SmscHttpError(reason='HTTP 502', http_status=502, code=None, retry_after_s=5.0)"


@pytest.mark.parametrize(
    "err",
    [
        classify(3, "no money", message_id="b-1"),
        classify(9, "dup"),
        classify(None, "HTTP 429", http_status=429, retry_after="30"),
        SmscUnknownOutcome("/sys/send.php: ReadTimeout: no complete answer"),
    ],
)
def test_errors_survive_pickling_with_their_attributes(err: SmscError) -> None:
    clone = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object
    assert type(clone) is type(err)
    assert vars(clone) == vars(err)
    assert str(clone) == str(err)


