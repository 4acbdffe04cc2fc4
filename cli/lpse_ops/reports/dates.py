"""Dates, times and durations written the Indonesian way, independent of the machine's locale.

"Sabtu, 28 November 2026 pukul 22.00 WIB": day and month names are mapped here (``strftime`` would
follow the control machine's locale), hours and minutes are separated by a dot, and the zone is
named by its Indonesian abbreviation (WIB, WITA, WIT), as in official letters.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("Senin", "Selasa", "Rabu", "Kamis", "Jumat", "Sabtu", "Minggu")
"""Day names, Monday first (``datetime.weekday()`` order)."""

MONTHS = ("Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus", "September", "Oktober",
          "November", "Desember")

ZONE_NAMES = {
    "Asia/Jakarta": "WIB",
    "Asia/Pontianak": "WIB",
    "Asia/Makassar": "WITA",
    "Asia/Jayapura": "WIT",
}
"""Indonesia's IANA zones and their official abbreviations (Waktu Indonesia Barat, Tengah, Timur)."""


class UnknownZoneError(ValueError):
    """A zone that is not one of Indonesia's (WIB, WITA, WIT); the message names the allowed ones."""


def zone(name: str) -> ZoneInfo:
    """Return the ZoneInfo for an Indonesian zone *name* (e.g. ``Asia/Jayapura``); raise UnknownZoneError."""
    if name not in ZONE_NAMES:
        raise UnknownZoneError(f"time zone {name!r} is not an Indonesian zone: use one of "
                               f"{', '.join(sorted(ZONE_NAMES))}")
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError as error:  # pragma: no cover - tzdata missing on the machine
        raise UnknownZoneError(f"time zone {name!r} is not installed: apt-get install tzdata") from error


def zone_abbreviation(name: str) -> str:
    """Return WIB, WITA or WIT for an Indonesian zone *name*."""
    zone(name)
    return ZONE_NAMES[name]


def _local(moment: datetime, zone_name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is needed (with a time zone or offset), not a naive one")
    return moment.astimezone(zone(zone_name))


def format_date(moment: datetime, zone_name: str) -> str:
    """Return *moment*'s date in *zone_name*, e.g. "Sabtu, 28 November 2026"."""
    local = _local(moment, zone_name)
    return f"{DAYS[local.weekday()]}, {local.day} {MONTHS[local.month - 1]} {local.year}"


def format_time(moment: datetime, zone_name: str) -> str:
    """Return *moment*'s clock time in *zone_name*, e.g. "22.00 WIB"."""
    local = _local(moment, zone_name)
    return f"{local.hour:02d}.{local.minute:02d} {ZONE_NAMES[zone_name]}"


def format_datetime(moment: datetime, zone_name: str) -> str:
    """Return e.g. "Sabtu, 28 November 2026 pukul 22.00 WIB" for *moment* seen in *zone_name*."""
    return f"{format_date(moment, zone_name)} pukul {format_time(moment, zone_name)}"


def format_until(start: datetime, end: datetime, zone_name: str) -> str:
    """Return the end of a window that began at *start*: "22.30 WIB" on the same local day, else the full form."""
    same_day = _local(start, zone_name).date() == _local(end, zone_name).date()
    return format_time(end, zone_name) if same_day else format_datetime(end, zone_name)


def format_duration(duration: timedelta) -> str:
    """Return *duration* in words, e.g. "1 jam 30 menit", "45 menit", "2 hari 3 jam"
    (under a minute: "kurang dari 1 menit")."""
    minutes = int(duration.total_seconds() // 60)
    if minutes < 1:
        return "kurang dari 1 menit"
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{value} {unit}" for value, unit in ((days, "hari"), (hours, "jam"), (minutes, "menit")) if value]
    return " ".join(parts)
