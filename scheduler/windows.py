"""Sending windows: the hours of the day when sending is allowed, and time counted only while open.

Pure: no Redis, no clock reading; every instant is epoch milliseconds (UTC), read in the zone of a
UTC offset in minutes (:mod:`scheduler.times`).

A window ``h1-h2`` is open from ``h1:00`` to ``h2:00`` local time: ``9-22`` is ``[09:00, 22:00)`` of
each day, ``22-9`` is overnight, ``[22:00, 09:00)`` of the next morning (``0-24`` is the whole day).
Inside a window minutes are counted in *open* time only (:func:`open_time_add`): a step that crosses
the close goes on at the next opening. One *opening* of an overnight window spans two calendar
days; what counts is the opening (the latest ``h1:00``), not the date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scheduler.times import DAY_MS, HOUR_MS, MINUTE_MS, PlanError

__all__ = ["Window", "open_time_add", "parse_window", "window_next_open"]


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
