"""Instants and time zones of a plan: units, the provider's ``tz``, the start (``--at``), a recipient's zone.

Pure: no Redis, no clock reading. Every instant is an ``int`` of epoch milliseconds (UTC) and the
current time is always an argument (``now_ms``), so a test can step time.

* Time zones are the provider's: ``tz`` is hours relative to Moscow (UTC+3), so the UTC offset is
  ``3 + tz`` hours (:func:`tz_utc_offset_min`).
* The start (:func:`parse_start`) is read in the provider's ``time`` forms and ISO 8601; a time in
  the past is "now", as the provider reads it, or refused (``max_past_ms``).
* A recipient's own zone (:func:`recipient_utc_offset_min`) comes from ``phonenumbers``; the offset is
  taken at one instant (the campaign's start) and kept for the whole campaign: a DST change in the
  middle of a campaign shifts its window by an hour, no more.
* An instant is shown in a zone by :func:`format_local` and the zone named by :func:`zone_label`.

Errors (re-exported by :mod:`scheduler.spreading`, which draws the tree)::

    ValueError
    └── PlanError   the options cannot make a plan (bad period/freq/tz/--at/window): one-line reason
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "MINUTE_MS",
    "MOSCOW_UTC_OFFSET_H",
    "PAST_GRACE_MS",
    "PlanError",
    "format_local",
    "parse_start",
    "recipient_utc_offset_min",
    "tz_utc_offset_min",
    "zone_label",
]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MOSCOW_UTC_OFFSET_H = 3
"""The provider's ``tz`` is relative to Moscow, which has been UTC+3 all year since 2014."""
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
