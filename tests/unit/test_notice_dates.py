"""Indonesian dates, times, zones and durations, independent of the machine's locale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lpse_ops.reports import dates

MONTHS = ["Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus", "September", "Oktober",
          "November", "Desember"]


@pytest.mark.parametrize("month", range(1, 13))
def test_format_date_each_month_named_in_indonesian(month):
    moment = datetime(2026, month, 15, 3, 0, tzinfo=UTC)  # 10.00 WIB, same day

    assert dates.format_date(moment, "Asia/Jakarta").endswith(f", 15 {MONTHS[month - 1]} 2026")


@pytest.mark.parametrize("day, name", [(23, "Senin"), (24, "Selasa"), (25, "Rabu"), (26, "Kamis"), (27, "Jumat"),
                                       (28, "Sabtu"), (29, "Minggu")])
def test_format_date_each_weekday_named_in_indonesian(day, name):
    moment = datetime(2026, 11, day, 5, 0, tzinfo=UTC)

    assert dates.format_date(moment, "Asia/Jakarta") == f"{name}, {day} November 2026"


@pytest.mark.parametrize("zone, expected", [
    ("Asia/Jakarta", "Sabtu, 28 November 2026 pukul 22.00 WIB"),
    ("Asia/Pontianak", "Sabtu, 28 November 2026 pukul 22.00 WIB"),
    ("Asia/Makassar", "Sabtu, 28 November 2026 pukul 23.00 WITA"),
    ("Asia/Jayapura", "Minggu, 29 November 2026 pukul 00.00 WIT"),
])
def test_format_datetime_same_instant_each_zone_local_time(zone, expected):
    assert dates.format_datetime(datetime(2026, 11, 28, 15, 0, tzinfo=UTC), zone) == expected


def test_format_datetime_year_end_in_wit_changes_year():
    assert dates.format_datetime(datetime(2026, 12, 31, 15, 5, tzinfo=UTC), "Asia/Jayapura") == \
        "Jumat, 1 Januari 2027 pukul 00.05 WIT"


def test_format_datetime_ignores_the_machine_locale(monkeypatch):
    import locale

    monkeypatch.setenv("LC_ALL", "C")
    try:
        locale.setlocale(locale.LC_TIME, "C")
    except locale.Error:
        pytest.skip("no C locale")
    assert dates.format_datetime(datetime(2026, 8, 17, 3, 0, tzinfo=UTC), "Asia/Jakarta") == \
        "Senin, 17 Agustus 2026 pukul 10.00 WIB"


def test_format_datetime_naive_datetime_refused():
    with pytest.raises(ValueError, match="aware"):
        dates.format_datetime(datetime(2026, 11, 28, 22, 0), "Asia/Jakarta")


def test_zone_not_indonesian_names_the_allowed_zones():
    with pytest.raises(dates.UnknownZoneError, match="Asia/Jayapura"):
        dates.zone_abbreviation("Europe/Amsterdam")


def test_format_until_same_day_time_only_next_day_full():
    start = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)

    assert dates.format_until(start, start + timedelta(minutes=30), "Asia/Jakarta") == "22.30 WIB"
    assert dates.format_until(start, start + timedelta(hours=3), "Asia/Jakarta") == \
        "Minggu, 29 November 2026 pukul 01.00 WIB"


@pytest.mark.parametrize("duration, expected", [
    (timedelta(seconds=20), "kurang dari 1 menit"), (timedelta(minutes=30), "30 menit"),
    (timedelta(hours=2), "2 jam"), (timedelta(minutes=90), "1 jam 30 menit"),
    (timedelta(days=1, hours=3), "1 hari 3 jam"),
])
def test_format_duration_words_in_indonesian(duration, expected):
    assert dates.format_duration(duration) == expected
