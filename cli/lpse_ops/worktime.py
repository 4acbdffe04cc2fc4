"""The helpdesk's working time (clause 7.3): working days and hours, in a site's own zone, without holidays.

Clause 7.3 says the LKPP and LPSE helpdesks work "setiap hari kerja selama jam kerja" (every working
day, during working hours), so the response and resolution targets of the priority table (clause 7.6)
run only then. :class:`WorkingTime` does the arithmetic: :meth:`WorkingTime.add` (the instant at which
a target of so much working time is reached) and :meth:`WorkingTime.between` (how much working time
lies between two instants). Both take the site's zone: the same UTC instant is 14.30 in Jakarta (WIB)
and 16.30 in Jayapura (WIT), inside the working day in one and after it in the other.

Holidays come from a maintained calendar, the ``holidays`` package (Indonesia: fixed, Islamic,
Chinese, Balinese and Christian holidays, and with the ``government`` category the *cuti bersama*
days), plus optional extra dates. Pure: no I/O, no clock; all arithmetic is done on UTC instants
(no wall-clock subtraction), so it holds in any zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays as holiday_data

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names as the configuration writes them, Monday first (``date.weekday()`` order)."""

MAX_DAYS = 3660
"""How many calendar days :meth:`WorkingTime.add` looks ahead before giving up (ten years)."""


class WorkingTimeError(ValueError):
    """The working time cannot answer: a naive datetime, a bad calendar, no working day in reach."""


@dataclass
class HolidayCalendar:
    """Public holidays of *country* (``holidays`` package, *categories*, names in *language*) plus *extra* dates.

    *extra* maps a date to its name (e.g. a cuti bersama the package does not know yet).
    """

    country: str = "ID"
    categories: tuple[str, ...] = ("public",)
    language: str | None = "id"
    extra: Mapping[date, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self._data = holiday_data.country_holidays(self.country, categories=self.categories,
                                                       language=self.language)
        except NotImplementedError as error:
            raise WorkingTimeError(f"the holidays package has no calendar for {self.country!r} "
                                   "(use an ISO 3166 country code such as ID)") from error
        except ValueError as error:
            raise WorkingTimeError(f"holiday calendar {self.country!r}: {error}") from error

    def name(self, day: date) -> str | None:
        """Return the name of the holiday on *day*, or None when it is not one."""
        if day in self.extra:
            return self.extra[day]
        return self._data.get(day)

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.name(day) is not None

    def between(self, first: date, last: date) -> dict[date, str]:
        """Return every holiday from *first* to *last* (inclusive), by date."""
        found: dict[date, str] = {}
        day = first
        while day <= last:
            name = self.name(day)
            if name:
                found[day] = name
            day += timedelta(days=1)
        return found


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise WorkingTimeError("an aware datetime is needed (with a time zone or offset), not a naive one")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class WorkingTime:
    """Working days (weekday numbers, Monday 0), working hours [*start*, *end*) and the holiday *calendar*."""

    days: frozenset[int] = frozenset(range(5))
    start: time = time(8, 0)
    end: time = time(16, 0)
    calendar: HolidayCalendar | None = None

    def __post_init__(self) -> None:
        if not self.days or not self.days <= set(range(7)):
            raise WorkingTimeError("working days must be a non-empty set of weekdays (0 = Monday ... 6 = Sunday)")
        if self.start >= self.end:
            raise WorkingTimeError(f"working hours must start before they end ({self.start:%H:%M} - {self.end:%H:%M})")

    @classmethod
    def from_names(cls, days: Iterable[str], start: time, end: time,
                   calendar: HolidayCalendar | None = None) -> WorkingTime:
        """Build from day names (``mon`` ... ``sun``); raise WorkingTimeError on an unknown name."""
        numbers = set()
        for name in days:
            if name not in WEEKDAYS:
                raise WorkingTimeError(f"{name!r} is not a day: use {', '.join(WEEKDAYS)}")
            numbers.add(WEEKDAYS.index(name))
        return cls(frozenset(numbers), start, end, calendar)

    @property
    def hours_per_day(self) -> timedelta:
        """The length of one working day."""
        return datetime.combine(date.min, self.end) - datetime.combine(date.min, self.start)

    def holiday(self, day: date) -> str | None:
        """Return the name of the holiday on *day* (None when it is none, or there is no calendar)."""
        return self.calendar.name(day) if self.calendar else None

    def is_working_day(self, day: date) -> bool:
        """True when *day* (a local date) is a working weekday and not a holiday."""
        return day.weekday() in self.days and self.holiday(day) is None

    def window(self, day: date, zone: ZoneInfo) -> tuple[datetime, datetime] | None:
        """Return the working hours of local *day* in *zone* as UTC instants, or None on a day off."""
        if not self.is_working_day(day):
            return None
        return (datetime.combine(day, self.start, tzinfo=zone).astimezone(UTC),
                datetime.combine(day, self.end, tzinfo=zone).astimezone(UTC))

    def add(self, moment: datetime, duration: timedelta, zone: ZoneInfo) -> datetime:
        """Return the instant, in *zone*, at which *duration* of working time has passed since *moment*.

        Outside working time the clock waits: a target set on Friday evening starts counting on the
        next working morning. A duration of zero returns *moment*. Raises WorkingTimeError for a naive
        *moment* or when no working time lies within :data:`MAX_DAYS`.
        """
        current = _aware(moment)
        remaining = duration
        if remaining <= timedelta(0):
            return current.astimezone(zone)
        day = current.astimezone(zone).date()
        for _ in range(MAX_DAYS):
            hours = self.window(day, zone)
            if hours:
                begin = max(hours[0], current)
                if begin < hours[1]:
                    available = hours[1] - begin
                    if remaining <= available:
                        return (begin + remaining).astimezone(zone)
                    remaining -= available
            day += timedelta(days=1)
        raise WorkingTimeError(f"no {duration} of working time within {MAX_DAYS} days of {moment.isoformat()}")

    def between(self, first: datetime, last: datetime, zone: ZoneInfo) -> timedelta:
        """Return the working time between *first* and *last* in *zone* (zero when *last* is not after *first*)."""
        begin, finish = _aware(first), _aware(last)
        total = timedelta(0)
        if finish <= begin:
            return total
        day = begin.astimezone(zone).date()
        last_day = finish.astimezone(zone).date()
        while day <= last_day:
            hours = self.window(day, zone)
            if hours:
                overlap = min(hours[1], finish) - max(hours[0], begin)
                if overlap > timedelta(0):
                    total += overlap
            day += timedelta(days=1)
        return total

    def next_start(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """Return *moment* itself when it is working time, else the start of the next working period (in *zone*)."""
        current = _aware(moment)
        day = current.astimezone(zone).date()
        for _ in range(MAX_DAYS):
            hours = self.window(day, zone)
            if hours and current < hours[1]:
                return max(hours[0], current).astimezone(zone)
            day += timedelta(days=1)
        raise WorkingTimeError(f"no working day within {MAX_DAYS} days of {moment.isoformat()}")
