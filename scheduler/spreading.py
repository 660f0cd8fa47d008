"""The plan's arithmetic: groups of period/freq, the start time, time windows, recipients' time zones.

Pure: no Redis, no clock reading. Every instant is an ``int`` of epoch milliseconds (UTC) and the
current time is always an argument (``now_ms``), so a test can step time.

How a campaign is spread (the provider's ``period``/``freq``, ``shared/smsc-http-api.md``):

* ``period_h`` (0.1..720 h) and ``freq_min`` (1..1440 min) give ``ceil(period*60/freq)`` groups; group
  ``k`` is due ``k*freq`` minutes after the start. ``freq`` without ``period`` is ignored, as the
  provider does (with a warning); ``period`` without ``freq`` is an error.
* Recipients are split into groups whose sizes differ by at most one, the larger first. With fewer
  recipients than groups there are ``total`` groups of one: the campaign ends early rather than
  sending empty groups.
* A window ``h1-h2`` is open from ``h1:00`` to ``h2:00`` local time: ``9-22`` is ``[09:00, 22:00)`` of
  each day, ``22-9`` is overnight, ``[22:00, 09:00)`` of the next morning (``0-24`` is the whole day).
  Inside a window the ``k*freq`` minutes are counted in *open* time only (:func:`open_time_add`): a
  step that crosses the close goes on at the next opening, so groups keep their order and spacing and
  never bunch up at the opening.
* Time zones are the provider's: ``tz`` is hours relative to Moscow (UTC+3), so the UTC offset is
  ``3 + tz`` hours. A recipient's own zone (:func:`recipient_utc_offset_min`) comes from
  ``phonenumbers``; the offset is taken at one instant (the campaign's start) and kept for the whole
  campaign: a DST change in the middle of a campaign shifts its window by an hour, no more.

Errors::

    ValueError
    └── PlanError   the options cannot make a plan (bad period/freq/tz/--at/window): one-line reason
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cached_property, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

__all__ = [
    "DAY_MS",
    "FREQ_MAX_MIN",
    "FREQ_MIN_MIN",
    "HOUR_MS",
    "MINUTE_MS",
    "MOSCOW_UTC_OFFSET_H",
    "PAST_GRACE_MS",
    "PERIOD_MAX_H",
    "PERIOD_MIN_H",
    "Plan",
    "PlanError",
    "PlanOptions",
    "Window",
    "due_ms_for_group",
    "effective_group_count",
    "format_local",
    "group_count",
    "group_of",
    "group_sizes",
    "group_start",
    "open_time_add",
    "parse_start",
    "parse_window",
    "recipient_utc_offset_min",
    "tz_utc_offset_min",
    "window_next_open",
    "zone_label",
]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MOSCOW_UTC_OFFSET_H = 3
"""The provider's ``tz`` is relative to Moscow, which has been UTC+3 all year since 2014."""
PERIOD_MIN_H = 0.1
PERIOD_MAX_H = 720.0
FREQ_MIN_MIN = 1
FREQ_MAX_MIN = 1440
# tz relative to Moscow such that the UTC offset stays within the world's -12..+14 hours.
_TZ_MIN_H = -15.0
_TZ_MAX_H = 11.0
# Unix seconds of 9999-12-31T23:59:59Z: beyond it a timestamp is a typo, and datetime cannot show it.
_MAX_TS_S = 253_402_300_799
PAST_GRACE_MS = 60_000
"""How far in the past a start may be and still mean "now" when the past is refused (``max_past_ms``):
the forms have minute precision, so a start in the current minute, typed a few seconds ago, is now."""


class PlanError(ValueError):
    """Raised when options cannot make a plan; the message is one line naming the option."""


# --- groups ---------------------------------------------------------------------------------------


def _check_period(period_h: float) -> None:
    if isinstance(period_h, bool) or not isinstance(period_h, int | float):
        raise PlanError(f"--period: {period_h!r} is not a number of hours")
    if not PERIOD_MIN_H <= period_h <= PERIOD_MAX_H:  # also refuses NaN
        raise PlanError(f"--period: {period_h} h is out of range {PERIOD_MIN_H} to {PERIOD_MAX_H:g} h")


def _check_freq(freq_min: int) -> None:
    if isinstance(freq_min, bool) or not isinstance(freq_min, int):
        raise PlanError(f"--freq: {freq_min!r} is not a whole number of minutes")
    if not FREQ_MIN_MIN <= freq_min <= FREQ_MAX_MIN:
        raise PlanError(f"--freq: {freq_min} min is out of range {FREQ_MIN_MIN} to {FREQ_MAX_MIN} min")


def group_count(period_h: float, freq_min: int) -> int:
    """``ceil(period_h*60/freq_min)``, computed in decimal so that 0.1 h every 2 min is 3, not 4."""
    _check_period(period_h)
    _check_freq(freq_min)
    # repr() is the shortest decimal that round-trips: Decimal("0.1"), not 0.1000000000000000055...
    return max(1, math.ceil(Decimal(repr(float(period_h))) * 60 / freq_min))


def _split(total: int, groups: int) -> tuple[int, int, int]:
    """(effective groups, base size, how many groups get one more)."""
    if total < 0:
        raise ValueError(f"total must be >= 0, not {total}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, not {groups}")
    g = min(groups, total)
    if g == 0:
        return 0, 0, 0
    q, r = divmod(total, g)
    return g, q, r


def effective_group_count(total: int, groups: int) -> int:
    """How many non-empty groups ``total`` recipients make: ``min(total, groups)``."""
    return _split(total, groups)[0]


def group_sizes(total: int, groups: int) -> list[int]:
    """Sizes of the groups: they differ by at most one, the larger first, and sum to ``total``.

    With ``groups > total`` there are ``total`` groups of one (no empty groups); ``total == 0`` → ``[]``.
    """
    g, q, r = _split(total, groups)
    return [q + 1] * r + [q] * (g - r)


def group_of(index: int, total: int, groups: int) -> int:
    """The group of the recipient at ``index`` (0-based, in intake order), in O(1)."""
    _, q, r = _split(total, groups)
    if not 0 <= index < total:
        raise IndexError(f"index {index} out of range for {total} recipients")
    big = r * (q + 1)
    if index < big:
        return index // (q + 1)
    return r + (index - big) // q


def group_start(k: int, total: int, groups: int) -> int:
    """Index of the first recipient of group ``k``, in O(1); ``group_start(g) == total`` for the end."""
    g, q, r = _split(total, groups)
    if not 0 <= k <= g:
        raise IndexError(f"group {k} out of range for {g} groups")
    return k * q + min(k, r)


# --- time zones and the start -----------------------------------------------------------------------


def tz_utc_offset_min(tz_h: float) -> int:
    """UTC offset in minutes of the provider's ``tz`` (hours relative to Moscow): ``(3 + tz)*60``."""
    if isinstance(tz_h, bool) or not isinstance(tz_h, int | float) or not _TZ_MIN_H <= tz_h <= _TZ_MAX_H:
        raise PlanError(
            f"--tz: {tz_h!r} is out of range; it is hours relative to Moscow (UTC+3), "
            f"{_TZ_MIN_H:g} to {_TZ_MAX_H:g}"
        )
    return round((MOSCOW_UTC_OFFSET_H + tz_h) * 60)


_DOTTED = re.compile(r"(\d\d)\.(\d\d)\.(\d\d)\s+(\d\d):(\d\d)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def _local_ms(year: int, month: int, day: int, hour: int, minute: int, offset_min: int) -> int:
    local = datetime(year, month, day, hour, minute, tzinfo=UTC)  # ValueError on 31.02 or 25:00
    return (local - _EPOCH) // _ONE_MS - offset_min * MINUTE_MS


def _parse_when(s: str, offset_min: int, now_ms: int) -> int:
    """Epoch ms of ``s`` (any of the forms of :func:`parse_start`); ValueError when unreadable."""
    if s == "0":
        return now_ms
    if s[:1] == "+":
        minutes = s[1:]
        if minutes.isascii() and minutes.isdigit():
            return now_ms + int(minutes) * MINUTE_MS
        raise ValueError(s)
    if s.isascii() and s.isdigit():
        # DDMMYYhhmm is 10 digits and may start with 0 (the provider's own example: 0101120000), so
        # exactly 10 digits is a date; any other length starting with 0 is "0" + Unix seconds (a
        # timestamp after 2001 has 10 digits, so "0ts" is 11 characters for any time to come).
        if len(s) == 10:
            d, mo, y, h, mi = (int(s[i : i + 2]) for i in range(0, 10, 2))
            return _local_ms(2000 + y, mo, d, h, mi, offset_min)
        if s[0] == "0" and int(s) <= _MAX_TS_S:
            return int(s) * 1000
        raise ValueError(s)
    m = _DOTTED.fullmatch(s)
    if m:
        d, mo, y, h, mi = (int(g) for g in m.groups())
        return _local_ms(2000 + y, mo, d, h, mi, offset_min)
    dt = datetime.fromisoformat(s)  # ValueError when not ISO 8601
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    return (dt - _EPOCH) // _ONE_MS


def parse_start(when: str, *, tz_h: float | None, now_ms: int, max_past_ms: int | None = None) -> int:
    """Epoch ms of the start ``when``; a time in the past (and ``0``) is ``now_ms``.

    Forms (the provider's ``time``, plus ISO 8601):

    * ``DDMMYYhhmm`` and ``DD.MM.YY hh:mm`` — local time of ``tz_h`` (years 2000-2099);
    * ``+m`` — ``m`` whole minutes from now; ``0`` — now;
    * ``0ts`` — ``0`` then Unix seconds, e.g. ``01700000000`` (exactly 10 digits is DDMMYYhhmm);
    * ISO 8601, e.g. ``2026-11-25T10:00`` or ``2026-11-25T10:00+05:00``; without an offset it is the
      local time of ``tz_h``.

    ``tz_h`` is hours relative to Moscow; ``None`` (the provider: "the account's setting") is read as
    Moscow, the provider's default.

    The provider reads a past time as "now". With ``max_past_ms`` a start more than that far in the
    past is refused instead (PlanError naming the time, in the zone of ``tz_h``): a date in the past is
    usually a typo (a wrong day, month or zone), and sending at once is not what was asked for.
    """
    offset_min = tz_utc_offset_min(0.0 if tz_h is None else tz_h)
    try:
        ts_ms = _parse_when(when.strip(), offset_min, now_ms)
    except (ValueError, OverflowError) as exc:
        raise PlanError(
            f"--at: cannot read {when!r}: expected DDMMYYhhmm, DD.MM.YY hh:mm, +m, 0ts or ISO 8601"
        ) from exc
    if max_past_ms is not None and ts_ms < now_ms - max_past_ms:
        raise PlanError(
            f"--at: {when.strip()!r} is {_duration(now_ms - ts_ms)} in the past "
            f"({format_local(ts_ms, offset_min)}, now {format_local(now_ms, offset_min)} {zone_label(offset_min)}); "
            "give a later time, or 0 to start now"
        )
    return max(ts_ms, now_ms)


def _duration(ms: int) -> str:
    minutes = ms // MINUTE_MS
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{max(mins, 1)} min"


def format_local(ts_ms: int, utc_offset_min: int, *, seconds: bool = False) -> str:
    """``ts_ms`` as ``YYYY-MM-DD hh:mm`` (``:ss`` with ``seconds``) in the zone of ``utc_offset_min``
    (no zone name: see :func:`zone_label`)."""
    local = _EPOCH + timedelta(milliseconds=ts_ms + utc_offset_min * MINUTE_MS)
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def zone_label(utc_offset_min: int) -> str:
    """``UTC+3 (Moscow)``, ``UTC+5:30``, ``UTC``: the name of a zone by its offset."""
    if utc_offset_min == 0:
        return "UTC"
    h, m = divmod(abs(utc_offset_min), 60)
    label = f"UTC{'+' if utc_offset_min > 0 else '-'}{h}" + (f":{m:02d}" if m else "")
    return label + " (Moscow)" if utc_offset_min == MOSCOW_UTC_OFFSET_H * 60 else label


# --- windows ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Hours of the day when sending is allowed, local time: open from ``h1:00`` until ``h2:00``.

    ``h1 < h2`` is a window of one day (``9-22`` is ``[09:00, 22:00)``); ``h1 > h2`` is overnight
    (``22-9`` is open from 22:00 until 09:00 the next morning); ``0-24`` is the whole day.
    """

    h1: int
    h2: int

    def __post_init__(self) -> None:
        ok = all(isinstance(h, int) and not isinstance(h, bool) for h in (self.h1, self.h2))
        if not ok or not (0 <= self.h1 <= 23 and 0 <= self.h2 <= 24) or self.h1 == self.h2:
            raise PlanError(
                f"window {self.h1}-{self.h2}: the hours must be 0 <= h1 <= 23, 0 <= h2 <= 24 and differ "
                "(h1 > h2 is overnight)"
            )

    def __str__(self) -> str:
        return f"{self.h1}-{self.h2}"

    @property
    def overnight(self) -> bool:
        """Whether the window spans midnight (``22-9``)."""
        return self.h1 > self.h2

    @property
    def open_ms(self) -> int:
        """How long the window is open each day, in ms."""
        return ((self.h2 - self.h1) % 24 or 24) * HOUR_MS

    def is_open(self, ts_ms: int, utc_offset_min: int) -> bool:
        """Whether ``ts_ms`` falls inside the window, in the zone of ``utc_offset_min``."""
        return _since_opening(ts_ms + utc_offset_min * MINUTE_MS, self) < self.open_ms


def _since_opening(local_ms: int, window: Window) -> int:
    """ms since the latest opening (``h1:00``) at or before the local instant ``local_ms``."""
    return (local_ms - window.h1 * HOUR_MS) % DAY_MS


_WINDOW = re.compile(r"\s*(\d{1,2})\s*-\s*(\d{1,2})\s*")


def parse_window(text: str) -> Window:
    """``"9-22"`` → ``Window(9, 22)``, ``"22-9"`` → the overnight ``Window(22, 9)``; PlanError when unreadable."""
    m = _WINDOW.fullmatch(text)
    if m:
        h1, h2 = int(m.group(1)), int(m.group(2))
        if h1 == h2 and h1 <= 24:
            raise PlanError(f"--window: {text.strip()!r} is never open: H1 and H2 must differ (0-24 is all day)")
        if h1 <= 23 and h2 <= 24:
            return Window(h1, h2)
    raise PlanError(
        f"--window: cannot read {text!r}: expected H1-H2, hours 0 to 24, e.g. 9-22 (or 22-9 overnight)"
    )


def window_next_open(ts_ms: int, window: Window, utc_offset_min: int) -> int:
    """The first instant at or after ``ts_ms`` when the window is open (the provider's ``h1-h2`` rule).

    Inside the window: ``ts_ms`` itself; otherwise the next ``h1:00`` (today's or tomorrow's).
    """
    since = _since_opening(ts_ms + utc_offset_min * MINUTE_MS, window)
    if since < window.open_ms:
        return ts_ms
    return ts_ms + DAY_MS - since


def open_time_add(start_ms: int, minutes: int, window: Window, utc_offset_min: int) -> int:
    """``minutes`` after ``window_next_open(start_ms)``, counting only time when the window is open.

    A step that reaches the close goes on at the next opening (a result is never at h2 or outside the
    window). O(1): whole open days are skipped by division.
    """
    if minutes < 0:
        raise ValueError(f"minutes must be >= 0, not {minutes}")
    off_ms = utc_offset_min * MINUTE_MS
    local = window_next_open(start_ms, window, utc_offset_min) + off_ms
    opening = local - _since_opening(local, window)  # the opening of the window that local is in
    days, into = divmod(local - opening + minutes * MINUTE_MS, window.open_ms)
    return opening + days * DAY_MS + into - off_ms


# --- recipients' time zones -----------------------------------------------------------------------------


@lru_cache(maxsize=16_384)
def _zones_of(digits: str, plus: bool) -> tuple[str, ...]:
    """phonenumbers' zones of one number; () when it knows none. Cached per exact number.

    Not per prefix: phonenumbers answers from the number's *type*, which needs all its digits (its
    prefix table maps "+79" to Europe/Moscow, yet a +7 9xx mobile may be anywhere in Russia, and
    phonenumbers rightly answers Russia's 16 zones for it), so only the exact number is a safe key.
    """
    candidates = ["+" + digits]
    if not plus and len(digits) == 11 and digits[0] == "8":
        # Without '+' the provider may auto-correct a Russian trunk prefix (8 495... = +7 495...), yet
        # 84... is also Vietnam's country code: keep the zones of every reading that is a valid number,
        # so that readings which disagree end in the default rather than in a guess.
        candidates.append("+7" + digits[1:])
    found: set[str] = set()
    for text in candidates:
        try:
            num = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            continue
        zones = pn_timezone.time_zones_for_number(num)
        if zones and tuple(zones) != (pn_timezone.UNKNOWN_TIMEZONE,):
            found.update(zones)
    return tuple(sorted(found))


@lru_cache(maxsize=4_096)
def _zones_offset_min(zones: tuple[str, ...], at_ms: int) -> int | None:
    """The UTC offset (minutes) shared by all ``zones`` at ``at_ms``; None when they differ."""
    at = _EPOCH + timedelta(milliseconds=at_ms)
    offsets = set()
    for name in zones:
        try:
            delta = at.astimezone(ZoneInfo(name)).utcoffset()
        except (ZoneInfoNotFoundError, ValueError):
            return None
        if delta is None:  # pragma: no cover - a ZoneInfo always has an offset
            return None
        offsets.add(delta // timedelta(minutes=1))
    return offsets.pop() if len(offsets) == 1 else None


def recipient_utc_offset_min(phone: str, *, at_ms: int, default_min: int) -> int:
    """UTC offset in minutes of the recipient's local time at ``at_ms``, from the number.

    From ``phonenumbers.timezone.time_zones_for_number`` and ``zoneinfo``. When the number maps to no
    zone, or to several zones whose offsets differ at ``at_ms`` (e.g. a Russian mobile: the 16 zones of
    +7), the answer is ``default_min``. Several zones that agree (``+44 7…``: London, Jersey,
    Guernsey, Isle of Man) give their common offset. ``phone`` is a normalized number (with or
    without ``+``); without ``+``, an 11-digit ``8…`` is read both as international and as Russian
    (``+7…``, the provider's auto-correction of the trunk prefix), and the zones of both valid readings
    count: ``84951234567`` is Moscow and also a valid Vietnamese number, so it gets the default.
    """
    plus = phone[:1] == "+"
    digits = phone[1:] if plus else phone
    if not (digits.isascii() and digits.isdigit()):
        return default_min
    zones = _zones_of(digits, plus)
    if not zones:
        return default_min
    offset = _zones_offset_min(zones, at_ms)
    return default_min if offset is None else offset


# --- the plan -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanOptions:
    """How a campaign is spread; validated on construction (PlanError), warnings kept in ``warnings``.

    ``start_ms`` is the parsed ``--at`` (see :func:`parse_start`), ``tz_h`` the campaign's zone
    (hours relative to Moscow) used for ``--at`` and for the window unless ``recipient_time`` asks
    for each recipient's own zone (:func:`recipient_utc_offset_min`).
    """

    period_h: float | None
    freq_min: int | None
    start_ms: int
    window: Window | None
    tz_h: float
    recipient_time: bool
    warnings: tuple[str, ...] = field(default=(), init=False, compare=False)

    def __post_init__(self) -> None:
        warnings: list[str] = []
        if self.period_h is not None:
            if self.freq_min is None:
                raise PlanError("--period needs --freq")
            group_count(self.period_h, self.freq_min)  # validates both
        elif self.freq_min is not None:
            warnings.append(f"--freq {self.freq_min} is ignored without --period (as the provider does)")
        if isinstance(self.start_ms, bool) or not isinstance(self.start_ms, int) or self.start_ms < 0:
            raise PlanError(f"start: {self.start_ms!r} is not epoch milliseconds")
        tz_utc_offset_min(self.tz_h)  # validates
        if self.recipient_time and self.window is None:
            warnings.append("recipients' time zones change nothing without a --window")
        w = self.window
        if w is not None and not (9 <= w.h1 < w.h2 <= 22):
            warnings.append(
                f"--window {w} is open outside 09:00-22:00, when the provider holds bulk and advertising "
                "messages until 09:00 in the recipient's time"
            )
        object.__setattr__(self, "warnings", tuple(warnings))

    @cached_property  # computed once: due_ms_for_group reads it for every group
    def groups(self) -> int:
        """Planned groups: ``group_count(period, freq)``, or 1 without a period."""
        if self.period_h is None or self.freq_min is None:
            return 1
        return group_count(self.period_h, self.freq_min)

    @property
    def utc_offset_min(self) -> int:
        """The campaign zone's UTC offset (``3 + tz_h`` hours), the default for recipients."""
        return tz_utc_offset_min(self.tz_h)


def due_ms_for_group(k: int, opts: PlanOptions, utc_offset_min: int) -> int:
    """When group ``k`` (0-based, ``k < opts.groups``) is due, in the zone of ``utc_offset_min``.

    Without a window: ``start + k*freq`` minutes. With one: ``k*freq`` minutes of open time after
    the first opening at or after the start (:func:`open_time_add`). ``utc_offset_min`` is the
    campaign's (``opts.utc_offset_min``) or, with ``recipient_time``, the recipient's.
    """
    if not 0 <= k < opts.groups:
        raise IndexError(f"group {k} out of range for {opts.groups} groups")
    minutes = k * opts.freq_min if opts.period_h is not None and opts.freq_min is not None else 0
    if opts.window is None:
        return opts.start_ms + minutes * MINUTE_MS
    return open_time_add(opts.start_ms, minutes, opts.window, utc_offset_min)


@dataclass(frozen=True)
class Plan:
    """Which recipient is due when: the one planner behind the enqueue and its dry run.

    ``total`` deduplicated recipients, in intake order (index 0 first), are split into groups
    (:func:`group_of`); a recipient's due time is its group's (:func:`due_ms_for_group`) in the
    campaign's zone, or — with a window and ``recipient_time`` — in its own zone
    (:func:`recipient_utc_offset_min`). Without options everything is due at ``now_ms``.
    """

    opts: PlanOptions | None
    total: int
    now_ms: int

    @cached_property
    def groups(self) -> int:
        """Groups that hold recipients: ``min(planned groups, total)``, at least 1."""
        if self.opts is None or self.total == 0:
            return 1
        return effective_group_count(self.total, self.opts.groups)

    @property
    def per_recipient(self) -> bool:
        """Whether a recipient's due time depends on its number (a window in each recipient's zone)."""
        return self.opts is not None and self.opts.recipient_time and self.opts.window is not None

    @property
    def utc_offset_min(self) -> int:
        """The campaign's zone (Moscow without options)."""
        return self.opts.utc_offset_min if self.opts is not None else MOSCOW_UTC_OFFSET_H * 60

    def offset_of(self, phone: str) -> int:
        """The UTC offset the window is read in for this recipient."""
        if not self.per_recipient:
            return self.utc_offset_min
        assert self.opts is not None
        return recipient_utc_offset_min(phone, at_ms=self.opts.start_ms, default_min=self.utc_offset_min)

    def due_ms(self, group: int, utc_offset_min: int) -> int:
        if self.opts is None:
            return self.now_ms
        return due_ms_for_group(group, self.opts, utc_offset_min)

    def uniform_due(self, start: int, size: int) -> int | None:
        """The due time of every recipient at ``start .. start+size-1`` when they share one, else None."""
        if self.per_recipient:
            return None
        g_first = group_of(start, self.total, self.groups)
        if g_first != group_of(start + size - 1, self.total, self.groups):
            return None
        return self.due_ms(g_first, self.utc_offset_min)

    def split(self, start: int, offsets: Sequence[int]) -> list[tuple[int, int, list[int]]]:
        """Cut the recipients at ``start, start+1, ...`` (their UTC offsets in ``offsets``) by due time.

        Returns ``(due_ms, group, positions)`` pieces, positions into ``offsets`` in intake order, the
        pieces ordered by due time (then group). A batch is one request, so it holds one due time.
        """
        pieces: dict[tuple[int, int], list[int]] = {}
        groups, total = self.groups, self.total
        for i, off in enumerate(offsets):
            g = group_of(start + i, total, groups)
            pieces.setdefault((g, off), []).append(i)
        merged: dict[tuple[int, int], list[int]] = {}
        for (g, off), members in pieces.items():
            merged.setdefault((self.due_ms(g, off), g), []).extend(members)
        return [(due, g, sorted(members)) for (due, g), members in sorted(merged.items())]
