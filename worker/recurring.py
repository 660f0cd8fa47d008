"""Recurring campaigns from a beat schedule: one campaign per scheduled run, however many beats send it.

    from celery.schedules import crontab
    from worker.app import app
    from worker.recurring import recurring_entry

    app.conf.beat_schedule = {
        "vip-morning": recurring_entry("vip", crontab(hour=9, minute=0), audience="list:vip",
                                       message="Good morning! -20% for you today", sender="MyShop"),
        "orders": recurring_entry("orders", crontab(minute="*/15"), audience="file:/data/orders.csv",
                                  template="{{ name }}, your order {{ order }} ships today"),
    }

The task ``smsc.recurring`` carries names and references only — the schedule's name, the audience
(``file:<path>`` the workers can read: a phones file with ``message``, a CSV/.xlsx with ``template``; or
``list:<name>``, a list saved in Redis, :mod:`scheduler.audiences`), the text or template, the plan and
options — never a recipient or a secret.

**One run, one campaign.** A run's campaign id is ``<schedule>.<stamp>``: the stamp names the run's
nominal instant on a grid of the schedule's period (:class:`Cadence`), so every message for one run — a
second beat's, a beat's restarted after a crash (the default scheduler saves its state every few minutes
and sends again what it had not saved), a message delivered twice — maps to the same id, and the enqueue's
claim on an id (:mod:`scheduler.enqueue`: one campaign per id, whoever asks at once) makes one campaign of
them. A second message for a run that has its campaign answers it without reading the audience again.

**Which run a message is.** Beat passes no scheduled time in the message; ``expires`` and the ETA are not
it either. So the time a message was published is stamped in a header (``smsc_beat_ms``, by the
``before_task_publish`` hook below, in the beat's process: the beat's own clock, the one that decided the
run is due), else — a message sent by an app that does not import this module — the Redis server's time
when it runs. The run is then the grid point that time belongs to:

- a crontab (``crontab(hour=9, minute=0)``, ``crontab(minute="*/15")``...) gives its period and the
  run's place in it: the run is the grid point *nearest* the time, so a beat late or early by up to half
  the period (a restart, clocks apart) still names the same run;
- an interval (``timedelta(minutes=5)``, a number of seconds) runs wherever the beat started it, so the
  run is the period-long slot of the clock (from the epoch, UTC) the time falls in. Beat's sends of an
  interval drift later by a few milliseconds a run; when a beat's phase crosses a slot's edge, one slot
  gets two of its sends and the next none: one run in many thousands is lost. Use a crontab where that
  matters; under redbeat (one active beat, its phase kept in Redis) or with two beats the loss is rarer
  still, a second beat's send filling the slot.

The stamp is ``YYMMDD`` for a period of whole days, ``YYMMDDThhmm`` for whole minutes, ``YYMMDDThhmmss``
otherwise (UTC; the ``T`` keeps it from reading as a phone number, which log lines mask), so a schedule's
name has at most 17, 12 or 10 characters (``A-Za-z0-9_``): ``vip.261201``, ``orders.261201T0915``.

``recurring_entry`` gives the message an ``expires`` of one period (at least 60 s): a run queued while
no worker ran is dropped once the next one is due, rather than sent late with the others piled up.

The app must know the task: ``worker.recurring`` is in the app's ``include`` list (the beat process imports
it too, for the header); run beat with ``celery -A <your module> beat``, or with redbeat
(``beat_scheduler = "redbeat.RedBeatScheduler"``: the schedule in Redis, one beat holding its lock).
See docs/recurring.md.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from celery.schedules import crontab
from celery.schedules import schedule as interval
from celery.signals import before_task_publish

from scheduler.audiences import Audiences, ListDigest, check_name
from scheduler.campaigns import CampaignError
from scheduler.ledger import server_time_ms
from worker.app import app
from worker.runtime import Runtime, get_runtime

__all__ = [
    "HEADER",
    "OPTIONS",
    "TASK",
    "Cadence",
    "Reference",
    "cadence_of",
    "recurring",
    "recurring_entry",
    "run",
]

log = logging.getLogger(__name__)

TASK = "smsc.recurring"
#: The header that carries the time a message was published (ms since the epoch, the publisher's clock).
HEADER = "smsc_beat_ms"
#: What a run may ask beyond its audience and text: the plan, the table's columns, the campaign's options.
OPTIONS = frozenset({
    "sender", "period_h", "freq_min", "window", "recipient_time", "tz_h", "batch_size",
    "phone_column", "sender_column", "tz_column",
    "priority", "weight", "account", "max_cost", "allow_partial", "auto_stop",
    "translit", "tinyurl", "flash", "valid", "maxsms", "webhook",
})
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
_DAY_S = 86_400
#: A run's message expires after one period, never sooner than this (a worker busy for a moment).
_MIN_EXPIRES_S = 60


# ------------------------------------------------------------------------------------------ cadence

@dataclass(frozen=True)
class Cadence:
    """The grid of a schedule's runs: every ``every_s`` seconds (from the epoch, UTC), at ``at_s`` into
    the period when the schedule says where its run is (a crontab), else anywhere in it (an interval)."""

    every_s: int
    at_s: int | None = None

    def __post_init__(self) -> None:
        if self.every_s < 1:
            raise ValueError(f"every_s {self.every_s}: give a whole number of seconds, 1 or more")
        if self.at_s is not None and not 0 <= self.at_s < self.every_s:
            raise ValueError(f"at_s {self.at_s}: give the run's place in the period, 0 to {self.every_s - 1} s")

    def run_ms(self, t_ms: int) -> int:
        """The nominal instant of the run that a message published at ``t_ms`` is: the nearest grid point
        of a crontab, the start of the slot of an interval."""
        p = self.every_s * 1000
        if self.at_s is None:
            return t_ms // p * p
        off = self.at_s * 1000
        return (t_ms - off + p // 2) // p * p + off

    @property
    def stamp_format(self) -> str:
        if self.every_s % _DAY_S == 0:
            return "%y%m%d"
        if self.every_s % 60 == 0:
            return "%y%m%dT%H%M"
        return "%y%m%dT%H%M%S"

    @property
    def stamp_pattern(self) -> str:
        """The stamp as a user reads it: ``YYMMDD``, ``YYMMDDThhmm`` or ``YYMMDDThhmmss``."""
        f = self.stamp_format
        for code, shown in (("%y", "YY"), ("%m", "MM"), ("%d", "DD"), ("%H", "hh"), ("%M", "mm"), ("%S", "ss")):
            f = f.replace(code, shown)
        return f

    @property
    def max_name(self) -> int:
        """The longest schedule name whose campaign ids fit in 24 characters."""
        return 24 - 1 - len(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).strftime(self.stamp_format))

    def campaign_id(self, schedule: str, run_ms: int) -> str:
        stamp = dt.datetime.fromtimestamp(run_ms / 1000, tz=dt.UTC).strftime(self.stamp_format)
        return f"{schedule}.{stamp}"

    def check_name(self, schedule: str) -> str:
        if not _NAME_RE.match(schedule) or len(schedule) > self.max_name:
            raise ValueError(f"schedule name {schedule!r}: use 1-{self.max_name} characters of A-Za-z0-9_ "
                             f"(its campaign ids are <name>.{self.stamp_pattern})")
        return schedule


def cadence_of(schedule: Any) -> Cadence:
    """The grid of a beat schedule: a number of seconds, a ``timedelta``, Celery's ``schedule`` (an
    interval: anywhere in its period) or a ``crontab`` whose runs are evenly spaced (a time of day, every
    n minutes or hours; days of the week or month do not matter: a day is the period). ``ValueError``
    (one line) for any other: give ``every_s`` (and ``at_s``) yourself."""
    if isinstance(schedule, crontab):
        return _crontab_cadence(schedule)
    if isinstance(schedule, interval):
        seconds = schedule.run_every.total_seconds()
    elif isinstance(schedule, dt.timedelta):
        seconds = schedule.total_seconds()
    elif isinstance(schedule, int | float) and not isinstance(schedule, bool):
        seconds = float(schedule)
    else:
        raise ValueError(f"cannot tell the period of {schedule!r}: give every_s= (and at_s=)")
    if seconds < 1 or seconds != int(seconds):
        raise ValueError(f"a recurring schedule runs every whole number of seconds, not every {seconds:g} s")
    return Cadence(int(seconds))


def _even(values: set[int], span: int) -> int | None:
    """The step of ``values`` when they are evenly spaced around ``span`` (0..span-1), else None."""
    ordered = sorted(values)
    step = span // len(ordered)
    if step * len(ordered) != span or any(b - a != step for a, b in itertools.pairwise(ordered)):
        return None
    return step


def _crontab_cadence(c: crontab) -> Cadence:
    minutes, hours = set(c.minute), set(c.hour)
    if len(minutes) == 1 and len(hours) == 1:
        every, at = _DAY_S, next(iter(hours)) * 3600 + next(iter(minutes)) * 60
    elif len(hours) == 24 and (step := _even(minutes, 60)) is not None:
        every, at = step * 60, min(minutes) * 60
    elif len(minutes) == 1 and (step := _even(hours, 24)) is not None:
        every, at = step * 3600, min(hours) * 3600 + next(iter(minutes)) * 60
    else:
        raise ValueError(f"cannot tell the period of {c!r} (its runs are not evenly spaced): give every_s= "
                         "(the shortest gap between two runs, in seconds) and at_s=")
    # The crontab's hours are in the app's time zone; the grid is UTC (its offset now: a daylight-saving
    # hour moves a daily run well within half its period).
    offset_s = int((dt.datetime.now(c.tz).utcoffset() or dt.timedelta()).total_seconds())
    return Cadence(every, (at - offset_s) % every)


# ------------------------------------------------------------------------------------------ references

@dataclass(frozen=True)
class Reference:
    """An audience by reference: ``file:<path>`` or ``list:<name>``."""

    kind: str
    target: str

    @classmethod
    def parse(cls, audience: str) -> Reference:
        kind, _, target = audience.partition(":")
        if kind == "file" and target:
            return cls(kind, target)
        if kind == "list" and target:
            check_name(target)
            return cls(kind, target)
        raise ValueError(f"audience {audience!r}: give file:<path the workers can read> or list:<saved list name>")

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"


def _check(schedule: str, audience: str, message: str | None, template: str | None,
           options: Mapping[str, Any], cadence: Cadence) -> Reference:
    cadence.check_name(schedule)
    ref = Reference.parse(audience)
    if (message is None) == (template is None):
        raise ValueError("give message= (one text for everyone) or template= (a text per row), not both")
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; known: {', '.join(sorted(OPTIONS))}")
    if ref.kind == "file" and template is None and any(c in options for c in ("sender_column", "tz_column")):
        raise ValueError("sender_column and tz_column need a table and a template")
    return ref


def recurring_entry(schedule: str, when: Any, *, audience: str, message: str | None = None,
                    template: str | None = None, every_s: int | None = None, at_s: int | None = None,
                    expires_s: float | None = -1, **options: Any) -> dict[str, Any]:
    """A ``beat_schedule`` entry that makes a campaign of ``audience`` at each run of ``when``.

    ``when``: a crontab, a ``timedelta`` or a number of seconds (any beat schedule with ``every_s``).
    ``every_s``/``at_s`` override the grid read from ``when`` (see :class:`Cadence`). ``expires_s``: the
    message's ``expires`` (default one period, at least 60 s; None: never). ``options``: see
    :data:`OPTIONS` — the plan (``window``, ``period_h``...), the table's columns, the campaign's options.
    ``ValueError`` (one line) for a bad name, audience, text or option: beat does not start with it."""
    cadence = Cadence(int(every_s), at_s) if every_s is not None else cadence_of(when)
    ref = _check(schedule, audience, message, template, options, cadence)
    kwargs: dict[str, Any] = {"schedule": schedule, "audience": str(ref), "every_s": cadence.every_s}
    if cadence.at_s is not None:
        kwargs["at_s"] = cadence.at_s
    kwargs.update({"message": message} if message is not None else {"template": template})
    kwargs.update(options)
    entry: dict[str, Any] = {"task": TASK, "schedule": when, "kwargs": kwargs}
    if expires_s == -1:
        expires_s = max(cadence.every_s, _MIN_EXPIRES_S)
    if expires_s is not None:
        entry["options"] = {"expires": expires_s}
    return entry


# ------------------------------------------------------------------------------------------ one run

def run(rt: Runtime, *, schedule: str, audience: str, every_s: int, at_s: int | None = None,
        message: str | None = None, template: str | None = None, published_ms: int | None = None,
        **options: Any) -> dict[str, Any]:
    """Make (or find) the campaign of the run a message published at ``published_ms`` is (None: now, on
    the Redis server's clock). Returns ``campaign_id``, ``run`` (the nominal instant, ms), ``existing``,
    ``total``... or ``error`` (one line) when the run makes no campaign: the audience is empty, missing or
    unreadable, the text is refused. Nothing is raised for those (a beat would only send them again)."""
    cadence = Cadence(int(every_s), None if at_s is None else int(at_s))
    ref = _check(schedule, audience, message, template, options, cadence)
    t_ms = published_ms if published_ms is not None else server_time_ms(rt.redis)
    run_ms = cadence.run_ms(t_ms)
    cid = cadence.campaign_id(schedule, run_ms)
    out: dict[str, Any] = {"campaign_id": cid, "schedule": schedule, "run_ms": run_ms}
    try:
        state = rt.campaigns.fields(cid).get("state", "")
    except CampaignError:
        state = ""
    if state and state != "planning":
        log.info("recurring %s: run %s has its campaign %s already (%s)", schedule, _utc(run_ms), cid, state)
        return {**out, "existing": True, "state": state}
    try:
        receipt = _enqueue(rt, ref, cid, message, template, options)
    except CampaignError as exc:
        if "is taken by a campaign with" in str(exc) and rt.campaigns.exists(cid):
            # The run's campaign exists, made from what the audience held a moment ago (a list edited, a
            # file rewritten between two beats' messages): it is the run's campaign all the same.
            log.warning("recurring %s: run %s has its campaign %s already, made from another content of %s",
                        schedule, _utc(run_ms), cid, ref)
            return {**out, "existing": True}
        return _failed(out, schedule, run_ms, exc)
    except ValueError as exc:  # IntakeError, a template error, a bad plan or option: one line
        return _failed(out, schedule, run_ms, exc)
    log.info("recurring %s: run %s -> campaign %s (%s, %d recipients%s)", schedule, _utc(run_ms), cid,
             "existing" if receipt.existing else "new", receipt.total,
             f", {receipt.suppressed} on the stop list" if receipt.suppressed else "")
    return {**out, **receipt.as_dict(), "campaign_id": cid}


def _failed(out: dict[str, Any], schedule: str, run_ms: int, exc: Exception) -> dict[str, Any]:
    reason = " ".join(str(exc).split())[:300]
    log.error("recurring %s: run %s made no campaign: %s", schedule, _utc(run_ms), reason)
    return {**out, "error": reason}


def _enqueue(rt: Runtime, ref: Reference, cid: str, message: str | None, template: str | None,
             options: Mapping[str, Any]) -> Any:
    from worker.api import CampaignOptions, enqueue_campaign, enqueue_file, enqueue_table
    from worker.smsc.requests import SendOptions

    o = dict(options)
    send = SendOptions.parse(**{k: o.pop(k) for k in ("translit", "tinyurl", "flash", "valid", "maxsms") if k in o})
    max_cost = o.pop("max_cost", None)
    try:
        budget = None if max_cost is None else Decimal(str(max_cost))
    except InvalidOperation:
        raise ValueError(f"max_cost {max_cost!r}: give an amount such as 1500 or 99.50") from None
    opts = CampaignOptions(send=send, max_cost=budget, allow_partial=bool(o.pop("allow_partial", False)),
                           auto_stop=bool(o.pop("auto_stop", False)), priority=str(o.pop("priority", "normal")),
                           weight=int(o.pop("weight", 1)), account=o.pop("account", None))
    columns = {k: o.pop(k) for k in ("phone_column", "sender_column", "tz_column") if k in o}
    common: dict[str, Any] = {**o, "campaign_id": cid, "settings": rt.settings, "redis_conn": rt.redis,
                              "options": opts, "on_warning": lambda w: log.warning("recurring %s: %s", cid, w)}
    if ref.kind == "file":
        if template is not None:
            return enqueue_table(ref.target, template, **columns, **common)
        assert message is not None
        return enqueue_file(ref.target, message, **common)
    lists = Audiences(rt.redis, rt.keys, region=rt.settings.smsc_default_region)
    names = lists.columns(ref.target) if lists.exists(ref.target) else None
    if names is None:
        raise ValueError(f"no saved list {ref.target!r} (smsc-mailer audience list shows them)")
    columns.pop("phone_column", None)  # a list's members carry their number as "phone"
    digest = ListDigest()
    if template is not None:
        rows: Iterator[Any] = (m.row(names) for m in lists.scan(ref.target, digest=digest))
        return enqueue_campaign(rows, template=template, recipients_digest=lambda: "list:" + digest.hexdigest(),
                                **columns, **common)
    assert message is not None
    phones = (m.phone for m in lists.scan(ref.target, digest=digest))
    return enqueue_campaign(phones, message, recipients_digest=lambda: "list:" + digest.hexdigest(), **common)


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ------------------------------------------------------------------------------------------ the task

def _stamp_published(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    """In the publishing process (beat): the time the message leaves, on that process's clock."""
    if sender == TASK and headers is not None and HEADER not in headers:
        headers[HEADER] = math.floor(time.time() * 1000)


before_task_publish.connect(_stamp_published)


@app.task(name=TASK, bind=True, ignore_result=True)  # type: ignore[untyped-decorator]  # Celery: no hints
def recurring(self: Any, schedule: str, audience: str, every_s: int, at_s: int | None = None,
              message: str | None = None, template: str | None = None, **options: Any) -> dict[str, Any]:
    """One run of a recurring campaign (see the module docstring); only names and references travel."""
    published = getattr(self.request, HEADER, None) or (self.request.headers or {}).get(HEADER)
    return run(get_runtime(), schedule=schedule, audience=audience, every_s=every_s, at_s=at_s, message=message,
               template=template, published_ms=int(published) if published is not None else None, **options)
