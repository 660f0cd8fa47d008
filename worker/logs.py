"""Log lines of every process (worker, beat, CLI): text, or one JSON object a line (``SMSC_LOG_FORMAT``).

Either way, on every line:

- **no full phone number**: each run of 10–15 digits (an optional ``+`` before it) in the message, the
  exception text and the stack becomes :func:`~worker.smsc.phones.mask_phone`'s ``****4567``. A run
  glued to letters or digits (inside a hex id) and the last group of a UUID are left alone; the ids of
  the line's own campaign, batch and task too. Side effect: a 13-digit millisecond timestamp in a
  message is masked like a number — log times as ISO or seconds;
- **no secret**: the settings' password, API key, push token and webhook secret (6 characters and
  longer) are ``***``, and so are the password of a URL (``redis://:***@host``) and the value of a
  ``psw=``/``password=``/``apikey=``/``token=``/``secret=`` pair;
- **the batch's ids as fields** (``campaign``, ``batch``, and ``task``/``task_id`` inside a task) —
  bound with :func:`bind_batch` / :func:`bound` (:mod:`structlog.contextvars`, so a thread or a pool
  process carries its own).

JSON lines hold ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``process``, ``message``, the
fields above when set, and ``exception`` (the masked traceback) when there is one.

Why structlog's :class:`~structlog.stdlib.ProcessorFormatter` and not python-json-logger: structlog is a
pinned dependency already, and one formatter renders both the stdlib records (Celery's, every module's
``logging.getLogger``) and structlog's own loggers (configured here to end in the same handler), with
contextvars merged in — python-json-logger would be a second package that does only the first part.

Masking is a :class:`logging.Filter` on each handler, not on loggers: a logger's filter never sees the
records its children propagate; a handler's sees them all.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import multiprocessing
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars, get_contextvars
from structlog.typing import EventDict

from worker.settings import Settings
from worker.smsc.phones import mask_phone

__all__ = ["CONTEXT_FIELDS", "bind", "bind_batch", "bound", "clear_context", "configure_logging", "json_line",
           "redact"]

#: The fields a line carries when they are bound (in this order).
CONTEXT_FIELDS = ("campaign", "batch", "task", "task_id")

TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"

# 10–15 digits, with an optional +: what E.164 allows and more (a national 10-digit spelling). Not inside
# a word or a longer digit run (hex ids, 16+ digit ids), not the 12-hex-digit last group of a UUID.
_PHONE = re.compile(r"(?<![0-9A-Za-z])(?<![0-9a-fA-F]{4}-)\+?\d{10,15}(?![0-9A-Za-z])")
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):[^@/\s]+@")
_SECRET_PAIR = re.compile(r"(?i)\b(psw|password|passwd|apikey|api_key|token|secret)=([^&\s'\",;]+)")
_MIN_SECRET = 6  # a shorter "secret" (a test's "s") would blank out every such letter of every line
_PLAIN_FORMATTER = logging.Formatter()


class _Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # the longest first: a secret that contains another is replaced whole
        self.secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def __call__(self, text: str, keep: Iterable[str] = ()) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        text = _URL_PASSWORD.sub(r"\1:***@", text)
        text = _SECRET_PAIR.sub(r"\1=***", text)
        kept = {k for k in keep if k}
        if not kept:
            return _PHONE.sub(_mask, text)
        return _PHONE.sub(lambda m: m.group(0) if m.group(0) in kept else _mask(m), text)


def _mask(m: re.Match[str]) -> str:
    return mask_phone(m.group(0))


_redactor = _Redactor()


def redact(text: str) -> str:
    """``text`` with phone numbers masked and the configured secrets, URL passwords and secret pairs
    replaced by ``***`` (what every log line goes through)."""
    return _redactor(text)


def _ids(fields: Mapping[str, Any]) -> list[str]:
    """The ids a line may show in full: its campaign's, its batch's (``cid:n`` and ``cid``), its task's."""
    out = [str(fields.get(k) or "") for k in CONTEXT_FIELDS]
    return out + [x.rpartition(":")[0] for x in out if ":" in x]


class _Scrub(logging.Filter):
    """Copies the bound fields onto the record, then masks its message, exception and stack in place
    (idempotent: the second handler of a record finds it done)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = get_contextvars()
        for name in CONTEXT_FIELDS:
            if name in ctx and getattr(record, name, None) is None:
                setattr(record, name, ctx[name])
        if getattr(record, "_smsc_scrubbed", False):
            return True
        keep = _ids({k: getattr(record, k, None) for k in CONTEXT_FIELDS})
        if not isinstance(record.msg, dict):  # a dict is structlog's own event: its processor masks it
            try:
                message = record.getMessage()
            except Exception:  # a broken %-format must not raise into the caller (nor hide the line)
                message = f"{record.msg!r} % {record.args!r}"
            record.msg, record.args = _redactor(message, keep), None
        if record.exc_info:
            # rendered and masked now, the exception object dropped: no formatter can print it unmasked
            record.exc_text = record.exc_text or _PLAIN_FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = _redactor(record.exc_text, keep)
        if record.stack_info:
            record.stack_info = _redactor(record.stack_info, keep)
        setattr(record, "_smsc_scrubbed", True)  # noqa: B010 - LogRecord takes any attribute
        return True


class TextFormatter(logging.Formatter):
    """Celery's line with the logger's name, and the bound fields at the end: ``[campaign=… batch=…]``."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{k}={v}" for k in CONTEXT_FIELDS if (v := getattr(record, k, None)))
        return f"{line} [{fields}]" if fields else line


# -- JSON: structlog processors

def _from_record(_: Any, __: str, ed: EventDict) -> EventDict:
    """A stdlib record's fields (set by :class:`_Scrub`), its process, its masked exception and stack."""
    record: logging.LogRecord = ed["_record"]
    ed["process"] = record.processName
    for name in CONTEXT_FIELDS:
        if (value := getattr(record, name, None)) is not None:
            ed[name] = value
    ed.pop("exc_info", None)
    ed.pop("stack_info", None)
    if record.exc_text:
        ed["exception"] = record.exc_text
    if record.stack_info:
        ed["stack"] = record.stack_info
    return ed


_ORDER = ("timestamp", "level", "logger", "process", "message", *CONTEXT_FIELDS)


def _shape(_: Any, __: str, ed: EventDict) -> EventDict:
    """The keys in a fixed order, every value masked (structlog's own loggers take any keyword)."""
    keep = _ids(ed)
    out = {k: ed.pop(k) for k in _ORDER if k in ed}
    out.update(ed)
    for key, value in out.items():
        if isinstance(value, str):
            out[key] = value if key in CONTEXT_FIELDS else _redactor(value, keep)
        elif not (isinstance(value, int | float | bool) or value is None):
            out[key] = _redactor(repr(value), keep)
    return out


def _json_formatter() -> logging.Formatter:
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper,
                           _from_record],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.EventRenamer("message"),
                    structlog.processors.format_exc_info,  # structlog's own loggers' exc_info=True
                    _shape,
                    structlog.processors.JSONRenderer(ensure_ascii=False)],
    )


def json_line(message: str, *, level: str = "info", logger: str = "") -> str:
    """One JSON line (with its newline) as a record of ``logger`` would be: for what is written without
    logging (Celery's notices from its signal handlers), masked the same way."""
    ed: dict[str, Any] = {"timestamp": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
                          "level": level, "logger": logger, "process": multiprocessing.current_process().name,
                          "message": message, **{k: v for k, v in get_contextvars().items() if k in CONTEXT_FIELDS}}
    return json.dumps(_shape(None, level, ed), ensure_ascii=False) + "\n"


def _formatter(settings: Settings) -> logging.Formatter:
    return _json_formatter() if settings.smsc_log_format == "json" else TextFormatter()


def _secrets(settings: Settings) -> list[str]:
    values = (settings.smsc_password, settings.smsc_apikey, settings.smsc_push_token, settings.smsc_webhook_secret)
    return [v.get_secret_value() for v in values if v is not None]


def _configure_structlog(settings: Settings) -> None:
    """structlog's own loggers (``structlog.get_logger()``) end in the same stdlib handlers."""
    shared: list[Any] = [structlog.contextvars.merge_contextvars, structlog.stdlib.add_log_level,
                         structlog.stdlib.add_logger_name,
                         structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")]
    structlog.configure(processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
                        logger_factory=structlog.stdlib.LoggerFactory(),
                        wrapper_class=structlog.stdlib.BoundLogger, cache_logger_on_first_use=True)


#: Libraries that log every HTTP request at INFO: the client's own line (DEBUG) and the batch's (INFO)
#: say it once, without the cost of a third line per request.
_CHATTY = ("httpx", "httpcore")


def configure_logging(settings: Settings, *, logger: logging.Logger | None = None, level: int | str | None = None,
                      stream: IO[str] | None = None) -> None:
    """Give every handler of ``logger`` (default: the root logger) the format of ``SMSC_LOG_FORMAT`` and
    the masking filter. A root logger without handlers gets one on ``stream`` (default: stderr) — the CLI's
    case; Celery's worker and beat call this from their ``after_setup_*logger`` signals, on the handlers
    Celery made (its ``--loglevel`` and ``--logfile`` stay in force). ``level``: set the logger's level."""
    global _redactor
    _redactor = _Redactor(_secrets(settings))
    target = logger if logger is not None else logging.getLogger()
    if not target.handlers and target is logging.getLogger():
        target.addHandler(logging.StreamHandler(stream if stream is not None else sys.stderr))
    for handler in target.handlers:
        handler.setFormatter(_formatter(settings))
        for old in [f for f in handler.filters if isinstance(f, _Scrub)]:
            handler.removeFilter(old)
        handler.addFilter(_Scrub())
    if level is not None:
        target.setLevel(level)
    for name in _CHATTY:
        if logging.getLogger(name).level == logging.NOTSET:  # unless set on purpose
            logging.getLogger(name).setLevel(logging.WARNING)
    _configure_structlog(settings)


# -- the fields of a line

def bind(**fields: Any) -> None:
    """Every line of this context (thread, task) carries ``fields`` from now on."""
    bind_contextvars(**fields)


def bind_batch(ref: str, **more: Any) -> None:
    """Every line of this context (thread, task) carries ``campaign`` and ``batch`` (``ref``: ``cid:n``)."""
    bind_contextvars(campaign=ref.rpartition(":")[0] or ref, batch=ref, **more)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Lines inside the block carry ``fields`` (``campaign=…``); the previous values come back after."""
    with bound_contextvars(**fields):
        yield


def clear_context() -> None:
    """Forget every bound field (a pool process starts each task clean)."""
    clear_contextvars()
