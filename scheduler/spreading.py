"""The plan: which recipient is due when — groups of period/freq, in windows, in the recipients' zones.

Pure: no Redis, no clock reading. Every instant is an ``int`` of epoch milliseconds (UTC) and the
current time is always an argument (``now_ms``), so a test can step time. The plan's vocabulary lives
in two modules of its own and is re-exported here: :mod:`scheduler.times` (units, the provider's
``tz``, the start ``--at``, a recipient's zone) and :mod:`scheduler.windows` (``h1-h2`` windows and
open time).

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

Errors (:class:`PlanError` is defined in :mod:`scheduler.times`)::

    ValueError
    └── PlanError   the options cannot make a plan (bad period/freq/tz/--at/window): one-line reason
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

from scheduler.times import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    MOSCOW_UTC_OFFSET_H,
    PAST_GRACE_MS,
    PlanError,
    format_local,
    parse_start,
    recipient_utc_offset_min,
    tz_utc_offset_min,
    zone_label,
)
from scheduler.windows import Window, open_time_add, parse_window, window_next_open

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

PERIOD_MIN_H = 0.1
PERIOD_MAX_H = 720.0
FREQ_MIN_MIN = 1
FREQ_MAX_MIN = 1440


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
