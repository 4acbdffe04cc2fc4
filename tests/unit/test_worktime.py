"""Working-time arithmetic (clause 7.3): weekends, Indonesian holidays from the maintained calendar, the end of
the working day, and the site's own zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest

from lpse_ops.worktime import HolidayCalendar, WorkingTime, WorkingTimeError

WIB = ZoneInfo("Asia/Jakarta")
WITA = ZoneInfo("Asia/Makassar")
WIT = ZoneInfo("Asia/Jayapura")
PLAIN = WorkingTime()  # Mon-Fri 08:00-16:00, no holidays
PUBLIC = WorkingTime(calendar=HolidayCalendar(categories=("public",)))
WITH_CUTI = WorkingTime(calendar=HolidayCalendar(categories=("public", "government")))


def _holiday(year: int, english_name: str, weekday_only: bool = False) -> date:
    """The date the holidays package gives for *english_name* in *year* (never typed by hand)."""
    found = sorted(day for day, name in holidays.country_holidays("ID", years=year, language="en_US").items()
                   if name == english_name and (not weekday_only or day.weekday() < 5))
    assert found, f"the holidays package has no {english_name} in {year}"
    return found[0]


def _previous_working_day(calendar: WorkingTime, day: date) -> date:
    day -= timedelta(days=1)
    while not calendar.is_working_day(day):
        day -= timedelta(days=1)
    return day


def test_worktime_across_weekend_counts_monday_morning() -> None:
    friday = datetime(2026, 11, 27, 15, 0, tzinfo=WIB)
    due = PLAIN.add(friday, timedelta(hours=2), WIB)
    assert due == datetime(2026, 11, 30, 9, 0, tzinfo=WIB)
    assert due.weekday() == 0
    assert PLAIN.between(friday, due, WIB) == timedelta(hours=2)
    # the whole weekend is not working time: Friday 16:00 to Monday 08:00 counts zero
    assert PLAIN.between(datetime(2026, 11, 27, 16, 0, tzinfo=WIB), datetime(2026, 11, 30, 8, 0, tzinfo=WIB),
                         WIB) == timedelta(0)


def test_worktime_across_end_of_working_day_continues_next_morning() -> None:
    tuesday = datetime(2026, 12, 1, 15, 30, tzinfo=WIB)
    assert PLAIN.add(tuesday, timedelta(hours=1), WIB) == datetime(2026, 12, 2, 8, 30, tzinfo=WIB)
    # exactly the rest of the day ends at closing time, not the next morning
    assert PLAIN.add(tuesday, timedelta(minutes=30), WIB) == datetime(2026, 12, 1, 16, 0, tzinfo=WIB)
    # opened in the evening: the clock starts at the next opening
    evening = datetime(2026, 12, 1, 19, 0, tzinfo=WIB)
    assert PLAIN.add(evening, timedelta(minutes=30), WIB) == datetime(2026, 12, 2, 8, 30, tzinfo=WIB)
    assert PLAIN.next_start(evening, WIB) == datetime(2026, 12, 2, 8, 0, tzinfo=WIB)


def test_worktime_across_weekday_public_holiday_skips_it() -> None:
    idul_adha = _holiday(2026, "Eid al-Adha", weekday_only=True)
    assert idul_adha.weekday() < 5
    before = _previous_working_day(PUBLIC, idul_adha)
    opened = datetime.combine(before, time(15, 0), tzinfo=WIB)
    due = PUBLIC.add(opened, timedelta(hours=2), WIB)
    # without the calendar the target would fall on the holiday itself
    assert PLAIN.add(opened, timedelta(hours=2), WIB).date() == idul_adha
    assert due.date() > idul_adha
    assert due.time() == time(9, 0)
    assert PUBLIC.is_working_day(due.date())
    assert PUBLIC.holiday(idul_adha) == "Hari Raya Idul Adha"


def test_worktime_across_idul_fitri_2026_skips_the_holidays_and_cuti_bersama() -> None:
    idul_fitri = _holiday(2026, "Eid al-Fitr")  # from the package: 2026's falls on a weekend
    # the last working day before the Lebaran break, as the calendar (public + cuti bersama) sees it
    last_before = _previous_working_day(WITH_CUTI, idul_fitri)
    opened = datetime.combine(last_before, time(15, 0), tzinfo=WIB)
    due = WITH_CUTI.add(opened, timedelta(hours=2), WIB)
    assert due.date() > idul_fitri
    assert due.time() == time(9, 0)
    skipped = WITH_CUTI.calendar.between(last_before + timedelta(days=1), due.date() - timedelta(days=1))
    # every weekday between the two is a holiday or a cuti bersama day of the maintained calendar
    weekdays = [last_before + timedelta(days=n) for n in range(1, (due.date() - last_before).days)]
    assert all(day in skipped for day in weekdays if day.weekday() < 5)
    assert any("Idul Fitri" in name for name in skipped.values())
    assert any(name.startswith("Cuti Bersama") for name in skipped.values())
    # the plain calendar answers much earlier: the holidays are what moved the target
    assert PLAIN.add(opened, timedelta(hours=2), WIB) < due
    assert WITH_CUTI.between(opened, due, WIB) == timedelta(hours=2)


def test_worktime_same_utc_instant_in_wib_and_wit_differs() -> None:
    instant = datetime(2026, 12, 1, 7, 30, tzinfo=UTC)  # 14.30 WIB, 16.30 WIT (a Tuesday)
    in_jakarta = PLAIN.add(instant, timedelta(hours=1), WIB)
    in_jayapura = PLAIN.add(instant, timedelta(hours=1), WIT)
    assert in_jakarta == datetime(2026, 12, 1, 15, 30, tzinfo=WIB)
    assert in_jayapura == datetime(2026, 12, 2, 9, 0, tzinfo=WIT)
    assert in_jakarta.astimezone(UTC) != in_jayapura.astimezone(UTC)
    assert PLAIN.between(instant, instant + timedelta(hours=3), WIB) == timedelta(hours=1, minutes=30)
    assert PLAIN.between(instant, instant + timedelta(hours=3), WIT) == timedelta(0)
    assert PLAIN.between(instant, instant + timedelta(hours=3), WITA) == timedelta(minutes=30)


def test_worktime_extra_dates_are_days_off() -> None:
    monday = date(2026, 12, 7)
    calendar = WorkingTime(calendar=HolidayCalendar(extra={monday: "Libur daerah"}))
    friday = datetime(2026, 12, 4, 15, 0, tzinfo=WIB)
    assert calendar.add(friday, timedelta(hours=2), WIB) == datetime(2026, 12, 8, 9, 0, tzinfo=WIB)
    assert calendar.holiday(monday) == "Libur daerah"


def test_worktime_refuses_naive_datetime_and_empty_week() -> None:
    with pytest.raises(WorkingTimeError, match="aware datetime"):
        PLAIN.add(datetime(2026, 12, 1, 9, 0), timedelta(hours=1), WIB)
    with pytest.raises(WorkingTimeError, match="non-empty set of weekdays"):
        WorkingTime(days=frozenset())
    with pytest.raises(WorkingTimeError, match="start before they end"):
        WorkingTime(start=time(16), end=time(8))
    with pytest.raises(WorkingTimeError, match="not a day"):
        WorkingTime.from_names(["mon", "funday"], time(8), time(16))
