"""Times as the state store keeps them: aware UTC datetimes in, ISO 8601 strings with their offset out."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime | None) -> datetime | None:
    """Return *value* as an aware UTC datetime; a naive one (SQLite gives them back) is read as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_utc(value: datetime | None) -> str | None:
    """Return *value* in UTC as ISO 8601 to the second (``2026-11-28T03:00:00+00:00``), or None."""
    value = as_utc(value)
    return value.isoformat(timespec="seconds") if value else None
