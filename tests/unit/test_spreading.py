"""The plan's arithmetic: groups, start times, windows, open-time spreading, recipients' zones.

The clock is always an argument: every test fixes ``now_ms`` and reads instants in Moscow time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from scheduler import spreading
from scheduler.spreading import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    PlanError,
    PlanOptions,
    Window,
    due_ms_for_group,
    effective_group_count,
    group_count,
    group_of,
    group_sizes,
    group_start,
    open_time_add,
    parse_start,
    parse_window,
    recipient_utc_offset_min,
    tz_utc_offset_min,
    window_next_open,
)

MSK = timezone(timedelta(hours=3))
MSK_OFF = 180


def at(tzinfo: timezone, y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=tzinfo).timestamp()) * 1000


def msk(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return at(MSK, y, mo, d, h, mi, s)


NOW = msk(2026, 11, 25, 12, 0)  # the controllable clock of these tests: 25 Nov 2026, 12:00 Moscow


def test_public_surface_is_pinned() -> None:
    assert sorted(spreading.__all__) == sorted(
        [
            "DAY_MS",
            "FREQ_MAX_MIN",
            "FREQ_MIN_MIN",
            "HOUR_MS",
            "MINUTE_MS",
            "MOSCOW_UTC_OFFSET_H",
            "PERIOD_MAX_H",
            "PERIOD_MIN_H",
            "PAST_GRACE_MS",
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
    )
    assert issubclass(PlanError, ValueError)


# --- group_count -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period_h", "freq_min", "groups"),
    [
        (0.1, 2, 3),  # 6 min / 2: 0.1*60/2 is 3.0000000000000004 in binary floating point
        (0.7, 1, 42),  # 0.7*60 is 42.00000000000001 in floats: a naive ceil says 43
        (0.1, 1440, 1),
        (1, 60, 1),
        (1, 7, 9),
        (1.5, 7, 13),
        (24, 60, 24),
        (720, 1, 43_200),
        (720, 1440, 30),
    ],
)
def test_group_count_is_the_exact_ceiling_of_period_over_freq(period_h: float, freq_min: int, groups: int) -> None:
    assert group_count(period_h, freq_min) == groups


@pytest.mark.parametrize(
    ("period_h", "freq_min", "message"),
    [
        (0.05, 1, "--period: 0.05 h is out of range 0.1 to 720 h"),
        (720.5, 1, "--period: 720.5 h is out of range"),
        (float("nan"), 1, "--period: nan h is out of range"),
        (1, 0, "--freq: 0 min is out of range 1 to 1440 min"),
        (1, 1441, "--freq: 1441 min is out of range"),
        (1, 2.5, "--freq: 2.5 is not a whole number of minutes"),
    ],
)
def test_group_count_refuses_out_of_range_options(period_h: float, freq_min: int, message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        group_count(period_h, freq_min)


# --- group sizes -------------------------------------------------------------------------------------------


def test_group_sizes_examples() -> None:
    assert group_sizes(10, 3) == [4, 3, 3]
    assert group_sizes(9, 3) == [3, 3, 3]
    assert group_sizes(11, 3) == [4, 4, 3]
    assert group_sizes(2, 5) == [1, 1]  # more groups than recipients: `total` groups of one
    assert group_sizes(0, 5) == []
    assert effective_group_count(2, 5) == 2
    assert [group_of(i, 10, 3) for i in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [group_start(k, 10, 3) for k in range(4)] == [0, 4, 7, 10]


def test_group_helpers_refuse_out_of_range_arguments() -> None:
    with pytest.raises(ValueError):
        group_sizes(-1, 3)
    with pytest.raises(ValueError):
        group_sizes(10, 0)
    with pytest.raises(IndexError):
        group_of(10, 10, 3)
    with pytest.raises(IndexError):
        group_start(4, 10, 3)


@given(st.integers(0, 2_000_000), st.integers(1, 43_200))
def test_group_sizes_sum_to_total_differ_by_at_most_one_larger_first(total: int, groups: int) -> None:
    sizes = group_sizes(total, groups)
    assert sum(sizes) == total
    assert len(sizes) == min(total, groups) == effective_group_count(total, groups)
    assert all(s >= 1 for s in sizes)
    if sizes:
        assert max(sizes) - min(sizes) <= 1
        assert sizes == sorted(sizes, reverse=True)


@given(st.data(), st.integers(1, 1_000_000), st.integers(1, 43_200))
def test_group_of_is_consistent_with_group_start(data: st.DataObject, total: int, groups: int) -> None:
    g = effective_group_count(total, groups)
    k = data.draw(st.integers(0, g - 1))
    start, end = group_start(k, total, groups), group_start(k + 1, total, groups)
    assert end - start == group_sizes(total, groups)[k]
    for index in {start, end - 1, (start + end - 1) // 2}:
        assert group_of(index, total, groups) == k
    index = data.draw(st.integers(0, total - 1))
    k2 = group_of(index, total, groups)
    assert group_start(k2, total, groups) <= index < group_start(k2 + 1, total, groups)


# --- time zones and --at ---------------------------------------------------------------------------------


def test_tz_is_hours_relative_to_moscow() -> None:
    assert tz_utc_offset_min(0) == 180
    assert tz_utc_offset_min(-3) == 0
    assert tz_utc_offset_min(4) == 420  # Novosibirsk
    assert tz_utc_offset_min(-8) == -300  # New York in winter
    assert tz_utc_offset_min(2.5) == 330  # India
    with pytest.raises(PlanError, match="--tz"):
        tz_utc_offset_min(12)


@pytest.mark.parametrize(
    ("when", "tz_h", "expected"),
    [
        ("0", None, NOW),
        ("+0", None, NOW),
        ("+90", None, NOW + 90 * MINUTE_MS),
        (" +5 ", 0, NOW + 5 * MINUTE_MS),
        ("2611261430", None, msk(2026, 11, 26, 14, 30)),  # DDMMYYhhmm
        ("2611261430", 0, msk(2026, 11, 26, 14, 30)),
        ("2611261430", 4, at(timezone(timedelta(hours=7)), 2026, 11, 26, 14, 30)),  # tz=4: UTC+7
        ("2611261430", -3, at(UTC, 2026, 11, 26, 14, 30)),
        ("0101270000", None, msk(2027, 1, 1)),  # 10 digits starting with 0: a date, not a timestamp
        ("26.11.26 14:30", None, msk(2026, 11, 26, 14, 30)),
        ("26.11.26  14:30", -1, at(timezone(timedelta(hours=2)), 2026, 11, 26, 14, 30)),
        ("01800000000", None, 1_800_000_000_000),  # 0ts
        ("2026-11-26T14:30", None, msk(2026, 11, 26, 14, 30)),  # ISO without offset: the tz rule
        ("2026-11-26T14:30", 1, at(timezone(timedelta(hours=4)), 2026, 11, 26, 14, 30)),
        ("2026-11-26 14:30:15", None, msk(2026, 11, 26, 14, 30, 15)),
        ("2026-11-26T14:30+05:00", 7, at(timezone(timedelta(hours=5)), 2026, 11, 26, 14, 30)),  # offset wins
        ("2026-11-26T14:30Z", None, at(UTC, 2026, 11, 26, 14, 30)),
        ("2026-11-27", None, msk(2026, 11, 27)),
    ],
)
def test_parse_start_reads_every_form(when: str, tz_h: float | None, expected: int) -> None:
    assert parse_start(when, tz_h=tz_h, now_ms=NOW) == expected


@pytest.mark.parametrize(
    "when",
    ["2411261430", "24.11.26 14:30", "01700000000", "00", "2026-11-25T11:59", "2025-01-01T00:00+00:00"],
)
def test_a_past_start_is_now(when: str) -> None:
    assert parse_start(when, tz_h=None, now_ms=NOW) == NOW


@pytest.mark.parametrize(
    "when",
    ["", "tomorrow", "+", "+-5", "+1.5", "3211261430", "2613261430", "2611262460", "261126143",
     "26.11.2026 14:30", "26.11.26", "1800000000000", "09999999999999", "2026-13-01T00:00", "-5"],
)
def test_an_unreadable_start_is_a_plan_error_naming_the_forms(when: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_start(when, tz_h=None, now_ms=NOW)
    assert str(info.value) == (
        f"--at: cannot read {when!r}: expected DDMMYYhhmm, DD.MM.YY hh:mm, +m, 0ts or ISO 8601"
    )


def test_a_start_in_the_past_can_be_refused_naming_the_time_in_its_zone() -> None:
    with pytest.raises(PlanError) as info:
        parse_start("24.11.26 14:30", tz_h=None, now_ms=NOW, max_past_ms=spreading.PAST_GRACE_MS)
    assert str(info.value) == (
        "--at: '24.11.26 14:30' is 21 h 30 min in the past (2026-11-24 14:30, now 2026-11-25 12:00 "
        "UTC+3 (Moscow)); give a later time, or 0 to start now"
    )
    with pytest.raises(PlanError, match=r"is 1 d 2 h in the past \(2026-11-24 14:00, now 2026-11-25 16:00 UTC\+7\)"):
        parse_start("2411261400", tz_h=4, now_ms=NOW, max_past_ms=0)
    # Now, and this very minute (typed a few seconds ago), are not the past.
    for when in ("0", "+0", "2511261200", "2026-11-25T11:59:30"):
        assert parse_start(when, tz_h=None, now_ms=NOW + 20_000, max_past_ms=spreading.PAST_GRACE_MS) == NOW + 20_000


def test_times_are_shown_in_the_zone_of_the_options() -> None:
    assert spreading.format_local(msk(2026, 11, 25, 21, 30), MSK_OFF) == "2026-11-25 21:30"
    assert spreading.format_local(msk(2026, 11, 25, 21, 30), 0) == "2026-11-25 18:30"
    assert [spreading.zone_label(o) for o in (180, 0, 420, -300, 330)] == [
        "UTC+3 (Moscow)", "UTC", "UTC+7", "UTC-5", "UTC+5:30"]


# --- windows ----------------------------------------------------------------------------------------------


def test_parse_window() -> None:
    assert parse_window("9-22") == Window(9, 22)
    assert parse_window(" 09 - 22 ") == Window(9, 22)
    assert parse_window("0-24") == Window(0, 24)
    assert parse_window("22-9") == Window(22, 9)  # overnight: from 22:00 until 09:00 the next morning
    assert parse_window("23-0") == Window(23, 0)
    assert str(Window(9, 22)) == "9-22" and str(Window(22, 9)) == "22-9"
    for bad in ["9-25", "24-3", "9", "9-22-23", "a-b", "-1-5", ""]:
        with pytest.raises(PlanError, match="--window: cannot read"):
            parse_window(bad)
    with pytest.raises(PlanError, match=r"--window: '9-9' is never open"):
        parse_window("9-9")
    with pytest.raises(PlanError, match="differ"):
        Window(10, 10)
    with pytest.raises(PlanError, match="0 <= h1 <= 23"):
        Window(24, 3)


def test_an_overnight_window_is_open_from_h1_until_h2_the_next_morning() -> None:
    w = Window(22, 9)
    assert (w.overnight, w.open_ms) == (True, 11 * HOUR_MS)
    assert not w.is_open(msk(2026, 11, 25, 21, 59), MSK_OFF)
    assert w.is_open(msk(2026, 11, 25, 22), MSK_OFF)
    assert w.is_open(msk(2026, 11, 26, 0), MSK_OFF)  # midnight
    assert w.is_open(msk(2026, 11, 26, 8, 59), MSK_OFF)
    assert not w.is_open(msk(2026, 11, 26, 9), MSK_OFF)
    assert window_next_open(msk(2026, 11, 25, 12), w, MSK_OFF) == msk(2026, 11, 25, 22)
    assert window_next_open(msk(2026, 11, 26, 3), w, MSK_OFF) == msk(2026, 11, 26, 3)  # after midnight: open
    assert window_next_open(msk(2026, 11, 26, 9), w, MSK_OFF) == msk(2026, 11, 26, 22)


def test_overnight_spreading_crosses_midnight_and_the_morning_close() -> None:
    w = Window(22, 9)
    start = msk(2026, 11, 25, 23, 30)
    assert open_time_add(start, 30, w, MSK_OFF) == msk(2026, 11, 26, 0, 0)  # across midnight, no gap
    assert open_time_add(start, 60 * 9 + 29, w, MSK_OFF) == msk(2026, 11, 26, 8, 59)
    assert open_time_add(start, 60 * 9 + 30, w, MSK_OFF) == msk(2026, 11, 26, 22)  # never at 09:00
    # A campaign from 21:00 every 2 h, 8 groups, in a 22-9 window: 22, 0, 2, 4, 6, 8, then 21:00 the
    # next evening is closed, so 22:00 + the 1 h left of the step = 23:00, and 01:00.
    opts = plan(period_h=16, freq_min=120, start_ms=msk(2026, 11, 25, 21), window=w)
    dues = [due_ms_for_group(k, opts, MSK_OFF) for k in range(opts.groups)]
    assert dues == [msk(2026, 11, 25, 22), msk(2026, 11, 26, 0), msk(2026, 11, 26, 2), msk(2026, 11, 26, 4),
                    msk(2026, 11, 26, 6), msk(2026, 11, 26, 8), msk(2026, 11, 26, 23), msk(2026, 11, 27, 1)]
    assert all(w.is_open(d, MSK_OFF) for d in dues)


def test_an_overnight_window_in_each_recipients_zone() -> None:
    # 20:00 Moscow. New York (UTC-5 in November) is at 12:00: its 22:00 is 06:00 Moscow the next day.
    # Vladivostok (UTC+10) is at 03:00: inside its night window, so now.
    start = msk(2026, 11, 25, 20)
    opts = plan(start_ms=start, window=Window(22, 9), recipient_time=True)
    ny = recipient_utc_offset_min("+12125551234", at_ms=start, default_min=opts.utc_offset_min)
    assert ny == -300
    assert due_ms_for_group(0, opts, ny) == msk(2026, 11, 26, 6)
    assert due_ms_for_group(0, opts, 600) == start
    assert due_ms_for_group(0, opts, MSK_OFF) == msk(2026, 11, 25, 22)


def test_a_window_outside_9_22_warns_that_the_provider_holds_bulk_messages_at_night() -> None:
    assert plan(window=Window(9, 22)).warnings == ()
    assert plan(window=Window(10, 20)).warnings == ()
    for w in (Window(22, 9), Window(8, 20), Window(0, 24)):
        (warning,) = plan(window=w).warnings
        assert f"--window {w} is open outside 09:00-22:00" in warning and "holds" in warning


def test_window_next_open_follows_the_providers_rule() -> None:
    w = Window(9, 22)
    assert window_next_open(msk(2026, 11, 25, 8, 59), w, MSK_OFF) == msk(2026, 11, 25, 9)  # before h1
    assert window_next_open(msk(2026, 11, 25, 9), w, MSK_OFF) == msk(2026, 11, 25, 9)  # opening: open
    assert window_next_open(msk(2026, 11, 25, 21, 59), w, MSK_OFF) == msk(2026, 11, 25, 21, 59)
    assert window_next_open(msk(2026, 11, 25, 22), w, MSK_OFF) == msk(2026, 11, 26, 9)  # at h2: closed
    assert window_next_open(msk(2026, 11, 25, 23, 30), w, MSK_OFF) == msk(2026, 11, 26, 9)
    # The same instant in another zone: 23:30 Moscow is 20:30 UTC, inside a UTC window.
    assert window_next_open(msk(2026, 11, 25, 23, 30), w, 0) == msk(2026, 11, 25, 23, 30)


def test_open_time_add_crosses_the_close_into_the_next_opening() -> None:
    w = Window(9, 22)
    start = msk(2026, 11, 25, 21, 30)
    assert open_time_add(start, 0, w, MSK_OFF) == start
    assert open_time_add(start, 29, w, MSK_OFF) == msk(2026, 11, 25, 21, 59)
    assert open_time_add(start, 30, w, MSK_OFF) == msk(2026, 11, 26, 9)  # never at 22:00
    assert open_time_add(start, 60, w, MSK_OFF) == msk(2026, 11, 26, 9, 30)
    assert open_time_add(start, 30 + 13 * 60 * 2 + 5, w, MSK_OFF) == msk(2026, 11, 28, 9, 5)  # whole days
    assert open_time_add(msk(2026, 11, 25, 3), 5, w, MSK_OFF) == msk(2026, 11, 25, 9, 5)
    assert open_time_add(start, 600, Window(0, 24), MSK_OFF) == start + 600 * MINUTE_MS


windows = st.tuples(st.integers(0, 23), st.integers(0, 24)).filter(lambda w: w[0] != w[1]).map(lambda w: Window(*w))
offsets = st.integers(-12 * 60, 14 * 60)
instants = st.integers(msk(2020, 1, 1), msk(2035, 1, 1))


def _open_by_hour(ts_ms: int, w: Window, off: int) -> bool:
    """The window's definition by the local hour, independent of the module's arithmetic."""
    hour = (ts_ms + off * MINUTE_MS) % DAY_MS // HOUR_MS
    return w.h1 <= hour < w.h2 if w.h1 < w.h2 else (hour >= w.h1 or hour < w.h2)


@given(instants, windows, offsets)
def test_is_open_and_next_open_follow_the_local_hour(ts: int, w: Window, off: int) -> None:
    assert w.is_open(ts, off) == _open_by_hour(ts, w, off)
    nxt = window_next_open(ts, w, off)
    assert nxt >= ts and w.is_open(nxt, off)
    if nxt > ts:  # closed until then: the opening is a whole local hour, h1:00
        assert (nxt + off * MINUTE_MS) % DAY_MS == w.h1 * HOUR_MS
        assert not w.is_open(nxt - 1, off)


def _reference_open_time_add(start_ms: int, minutes: int, window: Window, off: int) -> int:
    """Minute by minute on a minute-aligned start: the slow, obviously right definition."""
    t = start_ms
    while not _open_by_hour(t, window, off):
        t += MINUTE_MS
    for _ in range(minutes):
        t += MINUTE_MS
        while not _open_by_hour(t, window, off):
            t += MINUTE_MS
    return t


@settings(max_examples=60)
@given(instants.map(lambda t: t - t % MINUTE_MS), st.integers(0, 3000), windows, offsets)
def test_open_time_add_matches_the_minute_by_minute_definition(start: int, minutes: int, w: Window, off: int) -> None:
    assert open_time_add(start, minutes, w, off) == _reference_open_time_add(start, minutes, w, off)


@given(instants, st.integers(0, 200_000), st.integers(0, 200_000), windows, offsets)
# The case that once failed: 0 min is 00:53 (the last minutes of the opening of 02:00 the day before),
# 1000 min is 18:33 of the same date in the next opening. The code was right; the property compared
# calendar dates, which an overnight window's opening does not respect.
@example(start=msk(2026, 11, 25, 0, 53), m1=0, m2=1000, w=Window(2, 1), off=MSK_OFF)
def test_open_time_spreading_stays_inside_the_window_and_keeps_order(
    start: int, m1: int, m2: int, w: Window, off: int
) -> None:
    a, b = sorted((m1, m2))
    ta, tb = open_time_add(start, a, w, off), open_time_add(start, b, w, off)
    assert w.is_open(ta, off) and w.is_open(tb, off)
    assert start <= ta <= tb
    assert (ta < tb) == (a < b)
    opening = lambda t: (t + off * MINUTE_MS - w.h1 * HOUR_MS) // DAY_MS  # noqa: E731 - which day's opening
    if opening(ta) == opening(tb):  # within one opening (an overnight one spans two calendar days)
        assert tb - ta == (b - a) * MINUTE_MS  # the spacing is kept


# --- the plan: controllable clock -----------------------------------------------------------------------


def plan(**kw: object) -> PlanOptions:
    base: dict[str, object] = {
        "period_h": None, "freq_min": None, "start_ms": NOW, "window": None, "tz_h": 0.0, "recipient_time": False,
    }
    base.update(kw)
    return PlanOptions(**base)  # type: ignore[arg-type]


def test_period_0_1_h_every_2_min_is_3_groups_at_0_120_240_s() -> None:
    opts = plan(period_h=0.1, freq_min=2, start_ms=parse_start("0", tz_h=None, now_ms=NOW))
    assert opts.groups == 3
    assert group_sizes(10, opts.groups) == [4, 3, 3]
    assert [due_ms_for_group(k, opts, opts.utc_offset_min) - NOW for k in range(3)] == [0, 120_000, 240_000]
    with pytest.raises(IndexError):
        due_ms_for_group(3, opts, opts.utc_offset_min)


def test_window_9_22_from_21_30_moscow_every_60_min_puts_the_second_group_at_09_30_next_day() -> None:
    start = parse_start("25.11.26 21:30", tz_h=0, now_ms=msk(2026, 11, 25, 20))
    opts = plan(period_h=3, freq_min=60, start_ms=start, window=parse_window("9-22"))
    dues = [due_ms_for_group(k, opts, opts.utc_offset_min) for k in range(opts.groups)]
    assert dues == [msk(2026, 11, 25, 21, 30), msk(2026, 11, 26, 9, 30), msk(2026, 11, 26, 10, 30)]


def test_groups_are_not_bunched_at_the_opening() -> None:
    opts = plan(period_h=1, freq_min=10, start_ms=msk(2026, 11, 25, 21, 45), window=Window(9, 22))
    dues = [due_ms_for_group(k, opts, MSK_OFF) for k in range(opts.groups)]
    assert dues == [
        msk(2026, 11, 25, 21, 45), msk(2026, 11, 25, 21, 55), msk(2026, 11, 26, 9, 5),
        msk(2026, 11, 26, 9, 15), msk(2026, 11, 26, 9, 25), msk(2026, 11, 26, 9, 35),
    ]


def test_a_start_before_the_window_waits_for_the_opening_in_the_campaign_zone() -> None:
    # --at 07:00 with tz=4 (UTC+7, Novosibirsk) and a 9-22 window there: first group at 09:00 UTC+7.
    nsk = timezone(timedelta(hours=7))
    start = parse_start("2611260700", tz_h=4, now_ms=NOW)
    opts = plan(period_h=0.5, freq_min=15, start_ms=start, window=Window(9, 22), tz_h=4)
    assert opts.utc_offset_min == 420
    assert [due_ms_for_group(k, opts, opts.utc_offset_min) for k in range(opts.groups)] == [
        at(nsk, 2026, 11, 26, 9), at(nsk, 2026, 11, 26, 9, 15),
    ]


def test_recipient_time_shifts_each_recipient_into_its_own_window() -> None:
    start = msk(2026, 11, 25, 21, 30)  # 21:30 in Moscow is 13:30 in New York: open there
    opts = plan(period_h=0.1, freq_min=2, start_ms=start, window=Window(9, 22), recipient_time=True)
    ny = recipient_utc_offset_min("+12125551234", at_ms=start, default_min=opts.utc_offset_min)
    assert due_ms_for_group(0, opts, ny) == start
    vladivostok = 600  # UTC+10: 04:30 there, closed until 09:00 local = 02:00 Moscow
    assert due_ms_for_group(0, opts, vladivostok) == msk(2026, 11, 26, 2)


def test_plan_options_validate_like_the_provider() -> None:
    with pytest.raises(PlanError, match=r"^--period needs --freq$"):
        plan(period_h=1)
    opts = plan(freq_min=5)
    assert opts.groups == 1 and due_ms_for_group(0, opts, MSK_OFF) == NOW
    assert opts.warnings == ("--freq 5 is ignored without --period (as the provider does)",)
    assert plan(recipient_time=True).warnings == ("recipients' time zones change nothing without a --window",)
    assert plan(period_h=1, freq_min=5).warnings == ()
    with pytest.raises(PlanError, match="--period"):
        plan(period_h=1000, freq_min=5)
    with pytest.raises(PlanError, match="--freq"):
        plan(period_h=1, freq_min=0)
    with pytest.raises(PlanError, match="--tz"):
        plan(tz_h=20)
    with pytest.raises(PlanError, match="start"):
        plan(start_ms=-1)


@given(
    st.floats(0.1, 720), st.integers(1, 1440), instants, st.none() | windows,
    st.sampled_from([-1.0, 0.0, 4.0, 7.0]), offsets,
)
def test_due_times_are_monotonic_and_inside_the_window(
    period_h: float, freq_min: int, start: int, w: Window | None, tz_h: float, off: int
) -> None:
    opts = plan(period_h=period_h, freq_min=freq_min, start_ms=start, window=w, tz_h=tz_h)
    n = opts.groups
    ks = sorted({0, 1 % n, n // 2, max(n - 2, 0), n - 1})
    dues = [due_ms_for_group(k, opts, off) for k in ks]
    assert dues == sorted(dues) and len(set(dues)) == len(dues)
    assert dues[0] >= start
    if w is None:
        assert dues[-1] - start == (n - 1) * freq_min * MINUTE_MS < period_h * HOUR_MS + 1
    else:
        assert all(w.is_open(d, off) for d in dues)


# --- recipients' time zones ------------------------------------------------------------------------------------

WINTER = msk(2026, 1, 15, 12)
SUMMER = msk(2026, 7, 15, 12)


@pytest.mark.parametrize(
    ("phone", "at_ms", "offset_min"),
    [
        ("+74951234567", WINTER, 180),  # Moscow, no DST
        ("+74951234567", SUMMER, 180),
        ("+73832123456", WINTER, 420),  # Novosibirsk landline
        ("83832123456", WINTER, 420),  # no '+' and a Russian trunk 8: +7 383 (+83 is no country code)
        ("+12125551234", WINTER, -300),  # New York
        ("+12125551234", SUMMER, -240),  # ... in summer time
        ("+442079460958", WINTER, 0),  # London
        ("+442079460958", SUMMER, 60),
        ("+447911123456", WINTER, 0),  # UK mobile: 4 zones that agree (London, Jersey, Guernsey, Man)
        ("+4915123456789", SUMMER, 120),  # German mobile: Berlin
    ],
)
def test_recipient_utc_offset_comes_from_the_number(phone: str, at_ms: int, offset_min: int) -> None:
    assert recipient_utc_offset_min(phone, at_ms=at_ms, default_min=-999) == offset_min


@pytest.mark.parametrize(
    "phone",
    [
        "+79001234567",  # Russian mobile: anywhere in Russia's zones, so the default
        "+18005551234",  # US toll-free: the whole NANP
        "+99912345678",  # no such country code
        "+70000000000",  # not a valid number
        "+7900abc",  # not even digits
        "84951234567",  # no '+': Moscow (8 495, trunk prefix) or Vietnam (+84 95...): ambiguous
    ],
)
def test_recipient_utc_offset_is_the_default_when_the_number_does_not_tell(phone: str) -> None:
    assert recipient_utc_offset_min(phone, at_ms=WINTER, default_min=-999) == -999


@given(st.integers(10**9, 10**15 - 1), instants)
def test_recipient_utc_offset_never_fails(n: int, at_ms: int) -> None:
    assume(len(str(n)) >= 10)
    off = recipient_utc_offset_min("+" + str(n), at_ms=at_ms, default_min=-999)
    assert off == -999 or -12 * 60 <= off <= 14 * 60


# --- the planner (the enqueue and its dry run) ------------------------------------------------------------


def test_the_planner_gives_one_due_time_per_batch_and_cuts_where_it_changes() -> None:
    opts = plan(period_h=0.1, freq_min=2)  # 3 groups at +0, +2, +4 min
    p = spreading.Plan(opts, 10, NOW)  # groups of 4, 3, 3
    assert p.groups == 3 and not p.per_recipient
    assert p.uniform_due(0, 4) == NOW
    assert p.uniform_due(4, 3) == NOW + 2 * MINUTE_MS
    assert p.uniform_due(3, 2) is None  # spans groups 0 and 1
    pieces = p.split(3, [MSK_OFF] * 5)
    assert pieces == [(NOW, 0, [0]), (NOW + 2 * MINUTE_MS, 1, [1, 2, 3]), (NOW + 4 * MINUTE_MS, 2, [4])]
    assert spreading.Plan(None, 5, NOW).uniform_due(0, 5) == NOW


def test_the_planner_reads_the_window_in_each_recipients_zone_and_merges_equal_due_times() -> None:
    start = msk(2026, 11, 25, 21, 30)  # open in Moscow and New York, closed in Vladivostok
    p = spreading.Plan(plan(start_ms=start, window=Window(9, 22), recipient_time=True), 3, start)
    assert p.per_recipient and p.uniform_due(0, 3) is None
    offs = [p.offset_of(x) for x in ("+74951234567", "+12125551234", "+74232123456")]
    assert offs == [180, -300, 600]
    assert p.split(0, offs) == [(start, 0, [0, 1]), (msk(2026, 11, 26, 2), 0, [2])]
