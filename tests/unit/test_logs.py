"""Log lines: JSON or text, phones masked, secrets out, the batch's ids as fields (worker.logs)."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

import worker.logs
from worker.logs import bind, bind_batch, bound, clear_context, configure_logging, json_line, redact
from worker.settings import Settings

PASSWORD = "Pa55-w0rd-never-logged"
PHONE = "79001234567"


def _settings(fmt: str) -> Settings:
    return Settings(_env_file=None, smsc_log_format=fmt, smsc_login="shop",  # type: ignore[call-arg]
                    smsc_password=SecretStr(PASSWORD), smsc_webhook_secret=SecretStr("s"))


@pytest.fixture
def lines(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own with one handler on a buffer, configured like every process's."""
    buf = io.StringIO()
    logger = logging.getLogger(f"test.logs.{request.node.name}")
    logger.handlers, logger.propagate = [logging.StreamHandler(buf)], False
    logger.setLevel(logging.DEBUG)
    clear_context()
    yield logger, buf
    clear_context()
    logger.handlers = []


def _json(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_a_json_line_holds_level_logger_message_and_the_batch_it_belongs_to(lines) -> None:
    logger, buf = lines
    configure_logging(_settings("json"), logger=logger)
    logger.info("outside any batch")
    bind_batch("3f9a0c21b7:12")
    logger.warning("batch %s: deferred %d ms", "3f9a0c21b7:12", 1500)
    first, second = _json(buf)
    assert first["message"] == "outside any batch" and "campaign" not in first and "batch" not in first
    assert {k: second[k] for k in ("level", "logger", "message", "campaign", "batch")} == {
        "level": "warning", "logger": logger.name, "message": "batch 3f9a0c21b7:12: deferred 1500 ms",
        "campaign": "3f9a0c21b7", "batch": "3f9a0c21b7:12"}
    assert second["timestamp"].endswith("Z")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_phone_number_is_masked_in_the_message_its_arguments_and_the_traceback(lines, fmt: str) -> None:
    logger, buf = lines
    configure_logging(_settings(fmt), logger=logger)
    logger.info("sent to +%s and %s, not to 8 900", PHONE, "79001112233")
    try:
        raise ValueError(f"the provider refused {PHONE}")
    except ValueError:
        logger.exception("batch failed for 380501234567")
    out = buf.getvalue()
    for number in (PHONE, "79001112233", "380501234567"):
        assert number not in out
    assert "****4567" in out and "****2233" in out and "the provider refused ****4567" in out
    if fmt == "json":
        info, error = _json(buf)
        assert info["message"] == "sent to ****4567 and ****2233, not to 8 900"
        assert error["level"] == "error" and "ValueError: the provider refused ****4567" in error["exception"]


def test_the_text_format_ends_with_the_batch_fields(lines) -> None:
    logger, buf = lines
    configure_logging(_settings("text"), logger=logger)
    with bound(campaign="3f9a0c21b7", batch="3f9a0c21b7:0"):
        logger.info("sending to %s", PHONE)
    logger.info("after")
    inside, after = buf.getvalue().splitlines()
    assert inside.endswith("sending to ****4567 [campaign=3f9a0c21b7 batch=3f9a0c21b7:0]")
    assert after.endswith(f"{logger.name}: after")


def test_secrets_never_reach_a_line(lines) -> None:
    logger, buf = lines
    configure_logging(_settings("json"), logger=logger)
    logger.error("login failed with %s", PASSWORD)
    logger.error("broker redis://user:hunter22@10.0.0.1:6379/0 and /sys/send.php?login=shop&psw=abc123&phones=x")
    out = buf.getvalue()
    assert PASSWORD not in out and "hunter22" not in out and "abc123" not in out
    first, second = _json(buf)
    assert first["message"] == "login failed with ***"
    assert second["message"] == "broker redis://user:***@10.0.0.1:6379/0 and /sys/send.php?login=shop&psw=***&phones=x"
    # a one-letter secret is not blanked out of every word
    assert "login" in second["message"]


def test_ids_are_not_mistaken_for_numbers(lines) -> None:
    logger, buf = lines
    configure_logging(_settings("json"), logger=logger)
    bind_batch("3019402117:4")  # a campaign id that happens to be all digits
    logger.info("campaign 3019402117 batch 3019402117:4 task 3b2c1f00-1234-5678-9abc-123456789012 "
                "id t3f1234567890abcdef12")
    (line,) = _json(buf)
    assert line["message"] == ("campaign 3019402117 batch 3019402117:4 task 3b2c1f00-1234-5678-9abc-123456789012 "
                               "id t3f1234567890abcdef12")


def test_each_thread_carries_its_own_batch(lines) -> None:
    logger, buf = lines
    configure_logging(_settings("json"), logger=logger)

    def work(ref: str) -> None:
        bind_batch(ref, task="smsc.send_batch")
        for _ in range(20):
            logger.info("in %s", ref)

    threads = [threading.Thread(target=work, args=(f"c{i}:0",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = _json(buf)
    assert len(records) == 80
    assert all(r["message"] == f"in {r['batch']}" and r["campaign"] == r["batch"][:2] for r in records)


def test_structlog_loggers_end_in_the_same_masked_json_lines(lines) -> None:
    logger, buf = lines
    configure_logging(_settings("json"), logger=logger)
    bind(campaign="abc")
    structlog.get_logger(logger.name).info("retry", phone=PHONE, attempt=2)
    (line,) = _json(buf)
    assert {k: line[k] for k in ("level", "logger", "message", "campaign", "phone", "attempt")} == {
        "level": "info", "logger": logger.name, "message": "retry", "campaign": "abc", "phone": "****4567",
        "attempt": 2}


def test_a_root_logger_without_handlers_gets_one_on_the_stream_given() -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    buf = io.StringIO()
    try:
        configure_logging(_settings("json"), level="WARNING", stream=buf)
        logging.getLogger("test.logs.cli").warning("could not reach %s", PHONE)
        logging.getLogger("test.logs.cli").info("not at this level")
    finally:
        root.handlers, root.level = saved, level
    (line,) = _json(buf)
    assert line["message"] == "could not reach ****4567"


def test_a_line_written_without_logging_is_shaped_and_masked_the_same_way() -> None:
    with bound(campaign="c1"):
        line = json_line(f"worker: Warm shutdown for {PHONE}", level="warning", logger="celery.apps.worker")
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert (record["level"], record["logger"], record["message"], record["campaign"]) == (
        "warning", "celery.apps.worker", "worker: Warm shutdown for ****4567", "c1")
    assert redact(f"+{PHONE}") == "****4567"


def test_the_public_surface() -> None:
    assert sorted(worker.logs.__all__) == ["CONTEXT_FIELDS", "bind", "bind_batch", "bound", "clear_context",
                                            "configure_logging", "json_line", "redact"]
